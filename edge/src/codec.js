// Content-Encoding of feed bodies (proxy/http/codec.py): decode to re-rank, then encode
// the same way. The origin's response is fetched with encodeResponseBody: "manual", so
// the Worker holds the bytes the origin sent: a body it cannot decode is served as sent.

import zlib from "node:zlib";
import { Skip } from "./skip.js";

export const SUPPORTED = new Set(["", "identity", "gzip", "x-gzip", "deflate", "br"]);

export function normalize(header) {
  return (header ?? "").trim().toLowerCase();
}

/** Decoded bytes; throws Skip("encoding") when broken, or larger than `limit` decoded. */
export function decode(body, encoding, limit) {
  if (encoding === "" || encoding === "identity") return body;
  const options = { maxOutputLength: limit + 1 }; // a decompression bomb stops here
  let out;
  try {
    if (encoding === "gzip" || encoding === "x-gzip") {
      out = zlib.gunzipSync(body, options);
    } else if (encoding === "deflate") {
      // RFC 9110 deflate is zlib-wrapped; some servers send raw deflate.
      out = body[0] === 0x78 ? zlib.inflateSync(body, options) : zlib.inflateRawSync(body, options);
    } else if (encoding === "br") {
      out = zlib.brotliDecompressSync(body, options);
    } else {
      throw new Error(`unsupported content-encoding ${encoding}`);
    }
  } catch {
    throw new Skip("encoding");
  }
  if (out.length > limit) throw new Skip("encoding");
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

/** Level 1: the body is small and per user; latency matters more than a few bytes. */
export function encode(body, encoding) {
  if (encoding === "" || encoding === "identity") return body;
  if (encoding === "gzip" || encoding === "x-gzip") return zlib.gzipSync(body, { level: 1 });
  if (encoding === "deflate") return zlib.deflateSync(body, { level: 1 });
  if (encoding === "br") {
    return zlib.brotliCompressSync(body, {
      params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 1 },
    });
  }
  throw new Error(`unsupported content-encoding ${encoding}`);
}
