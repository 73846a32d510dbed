"""Feed bodies in every Content-Encoding rankgate re-ranks: round trips, raw deflate,
and refusals (bombs over the limit, truncated or broken streams, unknown encodings)."""

from __future__ import annotations

import gzip
import zlib

import brotli
import pytest

from proxy.http.codec import SUPPORTED, CodecError, decode, encode, normalize

BODY = b'{"items": [' + b",".join(b'{"id": "%d"}' % i for i in range(200)) + b"]}"


@pytest.mark.parametrize("encoding", sorted(SUPPORTED))
def test_round_trip(encoding: str) -> None:
    assert decode(encode(BODY, encoding), encoding, len(BODY)) == BODY


def test_normalize() -> None:
    assert normalize(None) == "" and normalize(" GZip ") == "gzip"


def test_raw_deflate_from_servers_that_send_it() -> None:
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    data = raw.compress(BODY) + raw.flush()
    assert decode(data, "deflate", len(BODY)) == BODY


@pytest.mark.parametrize(
    "encoded",
    [gzip.compress(b"x" * 100_000), zlib.compress(b"x" * 100_000), brotli.compress(b"x" * 100_000)],
)
def test_a_bomb_over_the_limit_is_refused(encoded: bytes) -> None:
    encoding = {0x1F: "gzip", 0x78: "deflate"}.get(encoded[0], "br")
    with pytest.raises(CodecError, match="over the size limit"):
        decode(encoded, encoding, 10_000)


def test_truncated_and_broken_streams_are_refused() -> None:
    with pytest.raises(CodecError, match="truncated"):
        decode(gzip.compress(BODY)[:-12], "gzip", len(BODY))
    with pytest.raises(CodecError, match="cannot decode gzip"):
        decode(b"not gzip at all", "gzip", len(BODY))
    with pytest.raises(CodecError, match="cannot decode br"):
        decode(b"\xff\xff\xff", "br", len(BODY))


def test_unknown_encodings_are_refused_both_ways() -> None:
    with pytest.raises(CodecError, match="unsupported"):
        decode(BODY, "zstd", len(BODY))
    with pytest.raises(CodecError, match="unsupported"):
        encode(BODY, "compress")
