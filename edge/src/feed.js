// The feed path (proxy/feed/stages.py): a response a route names leaves re-ordered for its
// user. Every reason not to re-rank serves the origin's status, headers and bytes as
// they came, with `X-Rerank: skipped; reason=REASON`. The reasons the edge can meet are
// the proxy's, except that Workers KV stands where Redis does: a KV failure is
// `kv-error` (the proxy's redis-unavailable / redis-error).

import { chooseArm } from "./arms.js";
import * as codec from "./codec.js";
import { appendTokens, isJson, privateCacheControl, serverTiming } from "./headers.js";
import { parseFeed } from "./json.js";
import { fetchOrigin, originError } from "./origin.js";
import { arrange, dig, ItemsNotFound, itemIds } from "./ranking.js";
import { RequestView, resolveUser } from "./request.js";
import { applyRules } from "./rules.js";
import { Skip } from "./skip.js";

// A per-user body is built from a full answer, not a 304 for a cached version.
const CONDITIONAL = ["If-None-Match", "If-Modified-Since", "If-Match", "If-Range"];
const encoder = new TextEncoder();
const now = () => performance.now();

// workerd's clock stands still while a Worker runs and moves with I/O, in whole
// milliseconds: a timer shorter than that races the I/O it should bound, and may lose.
const TICK_MS = 1;

/** The promise's value if it settles by `deadline`, else Skip("budget"). With less than
 * a tick left, the budget is spent unless the value is already there. */
function within(promise, deadline, plugin = null) {
  if (deadline - now() < TICK_MS) {
    const spent = Promise.resolve().then(() => {
      throw new Skip("budget", plugin);
    });
    return Promise.race([promise, spent]);
  }
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Skip("budget", plugin)), Math.max(0, deadline - now()));
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

class FeedRequest {
  constructor(runtime, route, request, url, env) {
    this.runtime = runtime;
    this.route = route;
    this.request = request;
    this.url = url;
    this.env = env;
    this.started = now();
    this.timings = {};
    this.record = {
      event: "feed",
      route: route.name,
      outcome: null,
      reason: null,
      plugin: null,
      model: null,
      arm: null,
      items: 0,
      scored: 0,
      status: 0,
    };
  }

  add(stage, started) {
    this.timings[stage] = (this.timings[stage] ?? 0) + now() - started;
  }

  async handle() {
    const { route, request, runtime } = this;
    const view = new RequestView(request, this.url);
    const userId = resolveUser(route.user, view);
    const arm = await chooseArm(route, view, userId);
    Object.assign(this.record, { model: arm.model, arm: arm.arm });
    this.arm = arm;
    const model = runtime.sessions.get(arm.model) ?? null; // "none": a control arm

    let skip = null;
    if (request.method === "HEAD") skip = "method";
    else if (model === null) skip = "control";
    else if (userId === null) skip = "no-user";

    let user = null;
    let session = null;
    if (skip === null) {
      // On their way before the origin request, so they overlap it.
      const started = now();
      user = runtime.store.user(userId).finally(() => this.add("kv", started));
      user.catch(() => {});
      session = model.ready(now);
      session.catch(() => {});
    }
    const started = now();
    let upstream;
    try {
      const drop = user !== null ? CONDITIONAL : [];
      upstream = await fetchOrigin(request, this.url, this.env, { drop, raw: true });
    } catch (error) {
      this.record.outcome = "origin-error";
      return originError(error);
    } finally {
      this.timings.origin = now() - started;
    }
    return this.respond(upstream, model, user, session, skip);
  }

  async respond(upstream, model, user, session, skip) {
    const maxBody = this.runtime.maxBodyBytes;
    const encoding = codec.normalize(upstream.headers.get("Content-Encoding"));
    const declared = upstream.headers.get("Content-Length");
    if (skip === null) {
      if (upstream.status !== 200) skip = "status";
      else if (!isJson(upstream.headers.get("Content-Type"))) skip = "not-json";
      else if (!codec.SUPPORTED.has(encoding)) skip = "encoding";
      else if (declared !== null && /^[0-9]+$/.test(declared) && Number(declared) > maxBody) {
        skip = "too-large";
      }
    }
    if (skip !== null) return this.skipped(upstream, upstream.body, skip);

    const chunks = [];
    let size = 0;
    if (upstream.body !== null) {
      const reader = upstream.body.getReader();
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          chunks.push(value);
          size += value.byteLength;
          if (size > maxBody) {
            // Too big to buffer: what we have goes first, the rest streams.
            return this.skipped(upstream, resumed(chunks, reader), "too-large");
          }
        }
      } catch (error) {
        this.record.outcome = "origin-error";
        return originError(error, "origin-error");
      }
    }
    this.timings.origin = now() - this.started;
    const body = concat(chunks, size);

    const started = now();
    const deadline = started + this.route.budgetMs; // our own work after the body is in
    let out = null;
    try {
      out = await this.rerank(body, encoding, model, user, session, deadline);
    } catch (error) {
      if (error instanceof Skip) {
        skip = error.reason;
        this.record.plugin = error.plugin;
      } else {
        console.error(
          JSON.stringify({ event: "internal-error", route: this.route.name, error: String(error) }),
        );
        skip = "internal-error";
      }
    }
    this.timings.rerank = now() - started;
    if (skip !== null) return this.skipped(upstream, body, skip);

    const headers = new Headers(upstream.headers);
    headers.delete("Content-Length");
    headers.delete("ETag");
    headers.set("Cache-Control", privateCacheControl(headers.get("Cache-Control")));
    appendTokens(headers, "Vary", this.route.vary);
    headers.set("X-Rerank", `applied; model=${this.arm.model}; arm=${this.arm.arm}`);
    Object.assign(this.record, { outcome: "applied", items: out.count, scored: out.scored });
    return this.finish(upstream, headers, out.body);
  }

  async rerank(body, encoding, model, user, session, deadline) {
    const { route, runtime } = this;
    const raw = codec.decode(body, encoding, runtime.maxBodyBytes);
    const parsed = parseFeed(raw, route.idKey, route.scan);
    let items;
    try {
      items = dig(parsed.doc, route.items);
    } catch (error) {
      if (error instanceof ItemsNotFound) throw new Skip("items-not-found");
      throw error;
    }
    if (!Array.isArray(items)) throw new Skip("items-not-found");
    if (items.length === 0) throw new Skip("no-items");
    const ids = itemIds(items, route.itemId, parsed.floatIds);
    const withIds = [];
    for (let k = 0; k < ids.length; k++) if (ids[k] !== null) withIds.push(k);
    // As the proxy: items without one id at item_id is a path to check, not Redis.
    if (withIds.length === 0) throw new Skip("no-item-ids");

    const userVector = await within(user, deadline);
    if (userVector === null) throw new Skip("unknown-user");

    let started = now();
    const lookup = runtime.store.items(withIds.map((k) => ids[k]));
    const { have, matrix } = await within(lookup, deadline);
    this.add("kv", started);
    if (have.length === 0) throw new Skip("no-item-vectors");
    const positions = have.map((k) => withIds[k]);

    let ready;
    try {
      ready = await within(session, deadline);
    } catch (error) {
      if (error instanceof Skip) throw error;
      throw modelError(model, error);
    }
    if (ready.createdMs !== null) this.timings.session = ready.createdMs;
    started = now();
    let scores;
    try {
      scores = await within(model.score(ready.session, userVector, matrix, have.length), deadline);
    } catch (error) {
      if (error instanceof Skip) throw error;
      throw modelError(model, error);
    } finally {
      this.timings.infer = now() - started;
    }
    if (!scores.every(Number.isFinite)) throw new Skip("model-error");

    const unscored = new Uint8Array(items.length).fill(1);
    for (const p of positions) unscored[p] = 0;
    let ranked;
    if (route.rules.length === 0) {
      ranked = arrange(items, positions, scores, unscored, new Uint8Array(items.length));
    } else {
      const ctx = {
        items,
        ids,
        positions,
        scores: Float64Array.from(scores),
        fixed: unscored.slice(),
        dropped: new Uint8Array(items.length),
      };
      applyRules(route.rules, ctx, deadline, now);
      const fixed = ctx.fixed.map((f, i) => f | unscored[i]);
      ranked = arrange(items, positions, ctx.scores, fixed, ctx.dropped);
    }
    if (now() > deadline) throw new Skip("budget");
    items.length = ranked.length;
    for (let i = 0; i < ranked.length; i++) items[i] = ranked[i];
    const text = JSON.stringify(parsed.doc);
    if (parsed.unsafe) throw new Skip("unsafe-number");
    const encoded = codec.encode(encoder.encode(text), encoding);
    return { body: encoded, count: ids.length, scored: positions.length };
  }

  skipped(upstream, body, reason) {
    const record = this.record;
    record.outcome = reason === "control" ? "control" : "skipped";
    record.reason = reason;
    const headers = new Headers(upstream.headers);
    if (!(body instanceof ReadableStream) && body !== null) headers.delete("Content-Length");
    // The same URL is re-ranked for other users: caches must key on what chose that.
    appendTokens(headers, "Vary", this.route.vary);
    let label = `skipped; reason=${reason}`;
    if (reason === "control") label += `; model=none; arm=${this.arm.arm}`;
    if (record.plugin !== null) label += `; plugin=${record.plugin}`;
    headers.set("X-Rerank", label);
    return this.finish(upstream, headers, body);
  }

  finish(upstream, headers, body) {
    this.timings.total = now() - this.started;
    headers.set("Server-Timing", serverTiming(this.timings, upstream.headers.get("Server-Timing")));
    this.record.status = upstream.status;
    const timings = {};
    for (const [k, v] of Object.entries(this.timings)) timings[k] = Math.round(v * 1000) / 1000;
    console.log(JSON.stringify({ ...this.record, timings_ms: timings }));
    // The bytes are final (the origin's, or encoded here): the runtime must not encode.
    return new Response(body, {
      status: upstream.status,
      statusText: upstream.statusText,
      headers,
      encodeBody: "manual",
    });
  }
}

function modelError(model, error) {
  const message = String(error?.message ?? error).split("\n", 1)[0];
  console.error(JSON.stringify({ event: "model-error", model: model.name, error: message }));
  return new Skip("model-error");
}

function concat(chunks, size) {
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out;
}

/** The chunks already read, then the rest of the reader's stream. */
function resumed(chunks, reader) {
  let k = 0;
  return new ReadableStream({
    async pull(controller) {
      if (k < chunks.length) {
        controller.enqueue(chunks[k++]);
        return;
      }
      const { done, value } = await reader.read();
      if (done) controller.close();
      else controller.enqueue(value);
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
}

export function handleFeed(runtime, route, request, url, env) {
  return new FeedRequest(runtime, route, request, url, env).handle();
}
