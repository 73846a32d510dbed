// ONNX Runtime (onnxruntime-web, WASM backend) inside a Worker.
//
// Workers forbid compiling WebAssembly from bytes at run time, so the runtime's .wasm is
// a module of the Worker (imported, compiled by the platform at deploy), and ORT is
// handed a small placeholder as `wasmBinary`: when its loader instantiates that
// placeholder, the wrapper below instantiates the imported module instead. One thread,
// no proxy worker. The wrapper depends on ORT's loader: onnxruntime-web is pinned in
// package.json (see docs/guides/edge.md).

import * as ort from "onnxruntime-web/wasm";
import wasmModule from "./ort-wasm-simd-threaded.wasm";

const PLACEHOLDER = new Uint8Array([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]);

function isPlaceholder(source) {
  let bytes = null;
  if (ArrayBuffer.isView(source)) {
    bytes = new Uint8Array(source.buffer, source.byteOffset, source.byteLength);
  } else if (source instanceof ArrayBuffer) {
    bytes = new Uint8Array(source);
  }
  return bytes !== null && bytes.length === PLACEHOLDER.length && bytes.every((b, i) => b === PLACEHOLDER[i]);
}

const instantiate = WebAssembly.instantiate.bind(WebAssembly);
WebAssembly.instantiate = async (source, imports) => {
  if (isPlaceholder(source)) {
    const instance = await instantiate(wasmModule, imports);
    return { instance, module: wasmModule };
  }
  return instantiate(source, imports);
};
ort.env.wasm.wasmBinary = PLACEHOLDER;
ort.env.wasm.numThreads = 1;
ort.env.wasm.proxy = false;
ort.env.logLevel = "error";

export const ORT_VERSION = ort.env.versions?.web ?? "unknown";

/** One model's session: created once per isolate, runs one at a time. */
export class ModelSession {
  constructor(name, bytes, dim) {
    this.name = name;
    this.bytes = bytes;
    this.dim = dim;
    this.session = null;
    this.creating = null;
    this.queue = Promise.resolve();
  }

  /** The session, created on first use; {session, createdMs} (createdMs only then). */
  async ready(now) {
    if (this.session !== null) return { session: this.session, createdMs: null };
    if (this.creating === null) {
      const started = now();
      this.creating = ort.InferenceSession.create(new Uint8Array(this.bytes), {
        executionProviders: ["wasm"],
        graphOptimizationLevel: "all",
      }).then(
        (session) => {
          this.session = session;
          return now() - started;
        },
        (error) => {
          this.creating = null; // the next request tries again
          throw error;
        },
      );
    }
    const createdMs = await this.creating;
    return { session: this.session, createdMs };
  }

  /** float scores for `count` items (rows of `items`) for one user: one batched run. */
  async score(session, user, items, count) {
    const dim = this.dim;
    const users = new Float32Array(count * dim);
    for (let k = 0; k < count; k++) users.set(user, k * dim);
    const feeds = {
      user_embedding: new ort.Tensor("float32", users, [count, dim]),
      item_embedding: new ort.Tensor("float32", items, [count, dim]),
    };
    // Runs of one session are serialized: the WASM backend keeps one run's state.
    const run = this.queue.then(() => session.run(feeds));
    this.queue = run.catch(() => {});
    const out = await run;
    // The first output, as the proxy takes it (the contract names it "score").
    const scores = out[session.outputNames[0]].data;
    if (scores.length !== count) {
      throw new Error(`model returned ${scores.length} scores for ${count} items`);
    }
    return scores;
  }
}
