"""Content-Encoding for feed bodies: decode to re-rank, then encode the same way."""

from __future__ import annotations

import gzip
import zlib

import brotli

SUPPORTED = frozenset({"", "identity", "gzip", "x-gzip", "deflate", "br"})


class CodecError(Exception):
    pass


def normalize(header: str | None) -> str:
    return (header or "").strip().lower()


def decode(body: bytes, encoding: str, limit: int) -> bytes:
    """Decode; refuse more than ``limit`` bytes of output (a decompression bomb)."""
    try:
        if encoding in ("", "identity"):
            return body
        if encoding in ("gzip", "x-gzip"):
            out = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            # RFC 9110 deflate is zlib-wrapped; some servers send raw deflate.
            out = zlib.decompressobj(zlib.MAX_WBITS if body[:1] == b"\x78" else -zlib.MAX_WBITS)
        elif encoding == "br":
            data = brotli.decompress(body)
            if len(data) > limit:
                raise CodecError("decoded body over the size limit")
            return data
        else:
            raise CodecError(f"unsupported content-encoding {encoding!r}")
        data = out.decompress(body, limit + 1)
        if len(data) > limit:
            raise CodecError("decoded body over the size limit")
        if not out.eof:
            raise CodecError("truncated compressed body")
        return data
    except (zlib.error, brotli.error) as exc:
        raise CodecError(f"cannot decode {encoding}: {exc}") from None


def encode(body: bytes, encoding: str) -> bytes:
    # Level 1: the body is small and per user; latency matters more than a few bytes.
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip"):
        return gzip.compress(body, compresslevel=1, mtime=0)
    if encoding == "deflate":
        return zlib.compress(body, 1)
    if encoding == "br":
        return brotli.compress(body, quality=1)
    raise CodecError(f"unsupported content-encoding {encoding!r}")
