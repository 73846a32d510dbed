// Runs a built Worker locally in workerd, through miniflare (what `wrangler dev` uses):
//
//   node edge/dev.mjs DIR [--origin URL] [--kv PATH]... [--host H] [--port N] [--cold]
//
// DIR is the output of `rankgate edge build`; its build.json lists the modules. --origin
// sets the ORIGIN variable (default: origin.url of the rankgate.yaml it was built from,
// as in wrangler.toml). Each --kv PATH, a bulk file of `rankgate edge kv` or a directory
// of them, is written into the KV namespace first. The model sessions are created
// before it prints one JSON line {"event": "ready", "url": ...}; the Worker's own log
// lines (JSON) follow on stdout (--cold: no sessions before the first request, as in a
// fresh isolate in production). SIGTERM or SIGINT stops it.

import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { Log, LogLevel, Miniflare } from "miniflare";

const PUT_CONCURRENCY = 64;
const USAGE = `usage: node edge/dev.mjs DIR [--origin URL] [--kv PATH]... [--host H] [--port N] [--cold]

Runs the Worker that \`rankgate edge build --out DIR\` wrote, in workerd (miniflare).
  --origin URL  where requests go (default: origin.url of the rankgate.yaml it was built from)
  --kv PATH     a bulk file of \`rankgate edge kv\`, or a directory of them (repeatable)
  --host H      address to listen on (default 127.0.0.1)
  --port N      port to listen on, 0 for any free one (default 8787)
  --cold        no model sessions before the first request (as a fresh isolate)
  -h, --help    this text`;

// A mistake on the command line: said in one line with the usage, no stack trace.
class UsageError extends Error {}

function parseArgs(argv) {
  const args = { dir: null, origin: null, kv: [], host: "127.0.0.1", port: 8787, cold: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--help" || arg === "-h") return null;
    else if (arg === "--origin") args.origin = argv[++i];
    else if (arg === "--kv") args.kv.push(argv[++i]);
    else if (arg === "--host") args.host = argv[++i];
    else if (arg === "--port") args.port = Number(argv[++i]);
    else if (arg === "--cold") args.cold = true;
    else if (!arg.startsWith("--") && args.dir === null) args.dir = arg;
    else throw new UsageError(`unknown argument ${arg}`);
  }
  if (args.dir === null) throw new UsageError("DIR is missing");
  if (!Number.isInteger(args.port) || args.port < 0 || args.port > 65535) {
    throw new UsageError(`--port: want 0..65535, got ${args.port}`);
  }
  return args;
}

// A --kv argument is a bulk file, or a directory of them (every *.json in it).
function kvFiles(paths) {
  return paths.flatMap((path) =>
    statSync(path).isDirectory()
      ? readdirSync(path)
          .filter((name) => name.endsWith(".json"))
          .sort()
          .map((name) => join(path, name))
      : [path],
  );
}

async function loadKv(namespace, paths) {
  let count = 0;
  for (const file of kvFiles(paths)) {
    const entries = JSON.parse(readFileSync(file, "utf8"));
    if (!Array.isArray(entries)) throw new Error(`${file}: want a JSON array of {key, value}`);
    for (let i = 0; i < entries.length; i += PUT_CONCURRENCY) {
      await Promise.all(
        entries.slice(i, i + PUT_CONCURRENCY).map(({ key, value, base64 }) =>
          namespace.put(key, base64 ? Buffer.from(value, "base64") : value),
        ),
      );
    }
    count += entries.length;
  }
  return count;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  if (args === null) {
    console.log(USAGE);
    process.exit(0);
  }
  const dir = resolve(args.dir);
  const build = JSON.parse(readFileSync(join(dir, "build.json"), "utf8"));
  const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
  const origin = args.origin ?? config.source.origin;
  const mf = new Miniflare({
    // Listed one by one: miniflare's module scan trips on ONNX Runtime's dynamic import().
    modules: build.modules.map((m) => ({ type: m.type, path: join(dir, m.path) })),
    modulesRoot: dir,
    compatibilityDate: build.compatibility_date,
    compatibilityFlags: build.compatibility_flags,
    kvNamespaces: [build.kv_binding],
    bindings: { ORIGIN: origin },
    host: args.host,
    port: args.port,
    cf: false, // no Request.cf download from Cloudflare: a fixed placeholder
    log: new Log(LogLevel.WARN),
  });
  const url = await mf.ready;
  const worker = await mf.getWorker();
  const [keys] = await Promise.all([
    loadKv(await mf.getKVNamespace(build.kv_binding), args.kv),
    args.cold ? null : worker.scheduled({ cron: "* * * * *" }), // creates the sessions
  ]);
  const stop = async () => {
    await mf.dispose();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  console.log(JSON.stringify({ event: "ready", url: url.href, origin, kv_keys: keys }));
}

main().catch((error) => {
  if (error instanceof UsageError) {
    console.error(`edge/dev.mjs: ${error.message}\n${USAGE}`);
    process.exit(2);
  }
  // A file that is not there (DIR not built yet) is a sentence, not a stack trace.
  const expected = error?.code === "ENOENT" || error instanceof SyntaxError;
  console.error(`edge/dev.mjs: ${expected ? error.message : (error.stack ?? error)}`);
  process.exit(1);
});
