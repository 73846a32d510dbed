// rankgate at the edge: the routes of a routes.yaml in a Cloudflare Worker.
//
// `rankgate edge build` compiles the routes and bundles this file with them and the
// models they name (the "rankgate:build" module). A request no route names goes to the
// origin and back untouched (streamed); a feed route's response is re-ranked per user
// with ONNX Runtime (WASM) and vectors from Workers KV, or served as the origin sent it
// with the reason why not.

import { config, models } from "rankgate:build";
import { handleFeed } from "./feed.js";
import { ModelSession } from "./ort.js";
import { passThrough } from "./origin.js";
import { decodedPath } from "./request.js";
import { compileRoute } from "./routes.js";
import { VectorStore } from "./vectors.js";

const now = () => performance.now();

class Runtime {
  constructor(env) {
    this.maxBodyBytes = config.feed.max_body_bytes;
    this.store = new VectorStore(env.EMBEDDINGS, config.embeddings);
    // One session per model file: names that share a file share it (as in the proxy).
    const byModule = new Map();
    this.sessions = new Map();
    for (const [name, model] of Object.entries(config.models)) {
      if (!byModule.has(model.module)) {
        byModule.set(model.module, new ModelSession(name, models[model.module], config.embeddings.dim));
      }
      this.sessions.set(name, byModule.get(model.module));
    }
    this.routes = config.routes.map(compileRoute);
    this.warming = null;
  }

  /** Every model's session, created once per isolate; the first caller starts it. */
  warmAll() {
    if (this.warming === null) {
      const sessions = [...new Set(this.sessions.values())];
      this.warming = Promise.all(
        sessions.map((session) =>
          session.ready(now).then(({ createdMs }) => {
            if (createdMs !== null) {
              console.log(JSON.stringify({ event: "session", model: session.name, ms: createdMs }));
            }
          }),
        ),
      ).catch((error) => {
        console.error(JSON.stringify({ event: "session-error", error: String(error) }));
        this.warming = null; // a later request tries again
      });
    }
    return this.warming;
  }

  match(method, path) {
    return this.routes.find((route) => route.matches(method, path)) ?? null;
  }
}

let runtime = null;

export default {
  async fetch(request, env, ctx) {
    runtime ??= new Runtime(env);
    ctx.waitUntil(runtime.warmAll()); // a feed request waits for it within its budget
    const url = new URL(request.url);
    const route = runtime.match(request.method, decodedPath(url));
    if (route === null) return passThrough(request, url, env);
    return handleFeed(runtime, route, request, url, env);
  },

  // Creates the sessions without a request. No cron trigger is configured; edge/dev.mjs
  // calls it before it reports ready, so a local run's first request is warm.
  async scheduled(controller, env) {
    runtime ??= new Runtime(env);
    await runtime.warmAll();
  },
};
