// User and item vectors from Workers KV, under the keys the proxy reads from Redis
// (embeddings.user_key / item_key). A value is the vector's little-endian float32 bytes,
// base64-encoded: KV's bulk read (100 keys in one operation, and a Worker may make 1,000
// operations per request) returns text only. As in the proxy, an item value of the wrong
// length or holding NaN/inf counts as missing, and such a user value is reason bad-vector
// (not unknown-user: it is there, the dim is wrong). Item vectors are cached in the isolate.

import { Skip } from "./skip.js";

export const BULK_KEYS = 100; // KV's most keys per bulk get

function key(template, id) {
  return template.replace("{id}", () => id); // a function: ids may hold "$&"
}

/** Float32Array of `dim` values, or null when the value is absent or invalid. */
export function decodeVector(text, dim) {
  if (typeof text !== "string" || text.length !== 4 * Math.ceil((dim * 4) / 3)) return null;
  let binary;
  try {
    binary = atob(text);
  } catch {
    return null;
  }
  if (binary.length !== dim * 4) return null;
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  const view = new DataView(bytes.buffer);
  const out = new Float32Array(dim);
  for (let i = 0; i < dim; i++) {
    const value = view.getFloat32(i * 4, true);
    if (!Number.isFinite(value)) return null;
    out[i] = value;
  }
  return out;
}

/**
 * Item vectors by id, kept for ttl_s (absent ones for missing_ttl_s), at most max_items;
 * the oldest entry goes first (a hit does not refresh it: no Map writes on the hot path).
 */
export class ItemCache {
  constructor({ max_items, ttl_s, missing_ttl_s }) {
    this.max = max_items;
    this.ttl = ttl_s * 1000;
    this.missingTtl = missing_ttl_s * 1000;
    this.entries = new Map(); // id -> [vector | null, expires]; Map order = age
  }

  get(id, now) {
    const entry = this.entries.get(id);
    if (entry === undefined) return undefined;
    if (entry[1] <= now) {
      this.entries.delete(id);
      return undefined;
    }
    return entry[0];
  }

  put(id, vector, now) {
    if (this.max <= 0) return;
    const ttl = vector === null ? this.missingTtl : this.ttl;
    if (ttl <= 0) return;
    this.entries.delete(id);
    this.entries.set(id, [vector, now + ttl]);
    while (this.entries.size > this.max) this.entries.delete(this.entries.keys().next().value);
  }
}

export class VectorStore {
  constructor(kv, embeddings) {
    this.kv = kv;
    this.dim = embeddings.dim;
    this.userKey = embeddings.user_key;
    this.itemKey = embeddings.item_key;
    this.cache = new ItemCache(embeddings.item_cache);
  }

  async _get(keys) {
    try {
      return await this.kv.get(keys, "text");
    } catch (error) {
      console.error(JSON.stringify({ event: "kv-error", error: String(error) }));
      throw new Skip("kv-error");
    }
  }

  /** The user's vector, or null when absent; Skip("bad-vector") when invalid. */
  async user(userId) {
    const text = await this._get(key(this.userKey, userId));
    if (text === null) return null;
    const vector = decodeVector(text, this.dim);
    if (vector === null) throw new Skip("bad-vector");
    return vector;
  }

  /**
   * Vectors for `ids` (no nulls): {have: indices into ids that have one, matrix:
   * Float32Array(have.length * dim)}. Cache misses are read in bulk gets, in parallel.
   */
  async items(ids) {
    const now = Date.now();
    const found = new Array(ids.length);
    const missed = new Map(); // id -> KV key
    for (let k = 0; k < ids.length; k++) {
      const cached = this.cache.get(ids[k], now);
      if (cached === undefined) missed.set(ids[k], key(this.itemKey, ids[k]));
      else found[k] = cached;
    }
    if (missed.size) {
      const keys = [...missed.values()];
      const chunks = [];
      for (let i = 0; i < keys.length; i += BULK_KEYS) chunks.push(keys.slice(i, i + BULK_KEYS));
      const answers = await Promise.all(chunks.map((chunk) => this._get(chunk)));
      const byKey = new Map();
      for (const answer of answers) for (const [k, v] of answer) byKey.set(k, v);
      const fresh = new Map();
      for (const [id, kvKey] of missed) {
        const vector = decodeVector(byKey.get(kvKey) ?? null, this.dim);
        fresh.set(id, vector);
        this.cache.put(id, vector, now);
      }
      for (let k = 0; k < ids.length; k++) if (found[k] === undefined) found[k] = fresh.get(ids[k]);
    }
    const have = [];
    for (let k = 0; k < ids.length; k++) if (found[k] !== null) have.push(k);
    const matrix = new Float32Array(have.length * this.dim);
    have.forEach((k, row) => matrix.set(found[k], row * this.dim));
    return { have, matrix };
  }
}
