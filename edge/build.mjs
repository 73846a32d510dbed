// Bundles the Worker for `rankgate edge build`: node edge/build.mjs --out DIR
//
// DIR already holds config.json (the compiled routes) and models/*.onnx, written by
// `rankgate edge build`. This writes DIR/worker.js (the Worker's code, ONNX Runtime's
// loader and the config, bundled by esbuild), copies ONNX Runtime's .wasm next to it,
// and writes DIR/build.json: the modules (what wrangler uploads and miniflare loads),
// the runtime settings, the pinned versions and the sizes.

import { createRequire } from "node:module";
import { copyFileSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import * as esbuild from "esbuild";

const HERE = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
// Workers runtime settings; wrangler.toml gets the same values from build.json.
export const COMPATIBILITY_DATE = "2026-07-01";
export const COMPATIBILITY_FLAGS = ["nodejs_compat"]; // node:zlib for gzip/deflate/br feeds
export const KV_BINDING = "EMBEDDINGS";
const WASM = "ort-wasm-simd-threaded.wasm";

function version(name) {
  // Not every package exports its package.json; npm puts it here either way.
  return JSON.parse(readFileSync(join(HERE, "node_modules", name, "package.json"), "utf8")).version;
}

function parseArgs(argv) {
  const args = { out: null };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--out") args.out = argv[++i];
    else throw new Error(`unknown argument ${argv[i]} (usage: node build.mjs --out DIR)`);
  }
  if (!args.out) throw new Error("usage: node build.mjs --out DIR");
  return args;
}

// The "rankgate:build" module: the config, and each model file as an imported Data
// module (an ArrayBuffer), kept out of the JavaScript.
function buildModule(config) {
  const modules = [...new Set(Object.values(config.models).map((m) => m.module))];
  const lines = modules.map((path, k) => `import m${k} from ${JSON.stringify(`./${path}`)};`);
  lines.push(`export const config = ${JSON.stringify(config)};`);
  const entries = modules.map((path, k) => `${JSON.stringify(path)}: m${k}`);
  lines.push(`export const models = {${entries.join(", ")}};`);
  return { contents: lines.join("\n"), modules };
}

function sizes(out, paths) {
  const modules = {};
  let raw = 0;
  let gzip = 0;
  for (const path of paths) {
    const data = readFileSync(join(out, path));
    const size = { raw: statSync(join(out, path)).size, gzip: gzipSync(data).length };
    modules[path] = size;
    raw += size.raw;
    gzip += size.gzip;
  }
  return { raw, gzip, modules };
}

async function main() {
  const out = resolve(parseArgs(process.argv.slice(2)).out);
  const config = JSON.parse(readFileSync(join(out, "config.json"), "utf8"));
  const generated = buildModule(config);
  await esbuild.build({
    entryPoints: [join(HERE, "src", "worker.js")],
    outfile: join(out, "worker.js"),
    bundle: true,
    format: "esm",
    platform: "neutral",
    target: "es2022",
    mainFields: ["module", "main"],
    conditions: ["workerd", "worker", "browser"],
    // Modules of the Worker, not of the bundle: the runtime's .wasm (compiled by the
    // platform: Workers cannot compile WebAssembly from bytes), the models, node:zlib.
    external: ["*.wasm", "*.onnx", "node:*"],
    logLevel: "warning",
    legalComments: "none",
    plugins: [
      {
        name: "rankgate-build",
        setup(build) {
          build.onResolve({ filter: /^rankgate:build$/ }, () => ({
            path: "rankgate:build",
            namespace: "rankgate",
          }));
          build.onLoad({ filter: /.*/, namespace: "rankgate" }, () => ({
            contents: generated.contents,
            loader: "js",
            resolveDir: out,
          }));
          // ORT's loader imports its .wasm by a bare path; it sits next to worker.js.
          build.onResolve({ filter: /\.wasm$/ }, (args) => ({
            path: `./${args.path.split("/").pop()}`,
            external: true,
          }));
        },
      },
    ],
  });
  copyFileSync(require.resolve(`onnxruntime-web/${WASM}`), join(out, WASM));
  const modules = [
    { path: "worker.js", type: "ESModule" },
    { path: WASM, type: "CompiledWasm" },
    ...generated.modules.map((path) => ({ path, type: "Data" })),
  ];
  const manifest = {
    main: "worker.js",
    modules,
    compatibility_date: COMPATIBILITY_DATE,
    compatibility_flags: COMPATIBILITY_FLAGS,
    kv_binding: KV_BINDING,
    versions: { "onnxruntime-web": version("onnxruntime-web"), esbuild: version("esbuild") },
    sizes: sizes(out, modules.map((m) => m.path)),
  };
  writeFileSync(join(out, "build.json"), `${JSON.stringify(manifest, null, 2)}\n`);
}

main().catch((error) => {
  console.error(`edge/build.mjs: ${error.message ?? error}`);
  process.exit(1);
});
