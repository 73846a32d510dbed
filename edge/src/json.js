// Parsing a feed body as the proxy (orjson) reads it, and knowing when re-serializing
// would change a value.
//
// JSON.parse is fast but reads every number as a double. Three things need the number's
// source text, which a reviver gets (JSON.parse source text access): an integer that a
// double would round (above 2^53; the proxy's limit is 64 bits, so the edge skips more),
// a number too large for a double (orjson refuses it: bad-json), and an id written as a
// float literal (1.0: orjson keeps a float, which is not an id). The slow reviver runs
// only when a cheap scan of the text finds a candidate.

import { Skip } from "./skip.js";

export const I64_MIN = -(2n ** 63n);
export const U64_MAX = 2n ** 64n - 1n;
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const INTEGER = /^-?[0-9]+$/;

function escapeRegex(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** A function text -> bool: could this body hold a number JSON.parse would misread? */
export function candidateScan(idKey) {
  const parts = ["[0-9]{16}", "[eE][+-]?[0-9]{3}"];
  if (idKey) parts.push(`"${escapeRegex(idKey)}"\\s*:\\s*-?[0-9]+[.eE]`);
  const pattern = new RegExp(parts.join("|"));
  return (text) => pattern.test(text);
}

export class ParseResult {
  constructor(doc, floatIds, unsafe) {
    this.doc = doc;
    this.floatIds = floatIds; // WeakSet of objects whose id is a float literal, or null
    this.unsafe = unsafe; // an integer re-serializing would change: reason unsafe-number
  }
}

/** Parse UTF-8 bytes; throws Skip("bad-json") when the proxy could not parse them. */
export function parseFeed(bytes, idKey, scan) {
  let text;
  try {
    text = decoder.decode(bytes);
  } catch {
    throw new Skip("bad-json");
  }
  if (!scan(text)) {
    try {
      return new ParseResult(JSON.parse(text), null, false);
    } catch {
      throw new Skip("bad-json");
    }
  }
  const floatIds = new WeakSet();
  let unsafe = false;
  let infinite = false;
  let doc;
  try {
    doc = JSON.parse(text, function (key, value, context) {
      if (typeof value !== "number") return value;
      if (!Number.isFinite(value)) {
        infinite = true;
        return value;
      }
      const source = context?.source;
      if (source === undefined) return value;
      if (INTEGER.test(source)) {
        const exact = BigInt(source);
        if (exact < I64_MIN || exact > U64_MAX || exact !== BigInt(value)) unsafe = true;
      } else if (key === idKey) {
        floatIds.add(this);
      }
      return value;
    });
  } catch {
    throw new Skip("bad-json");
  }
  if (infinite) throw new Skip("bad-json");
  return new ParseResult(doc, floatIds, unsafe);
}
