"""How a record names what was served, so that a click can be checked against it.

Both sides use these: the exposure and event records as rankgate writes them
(proxy/experiments/), and the readout that joins them (proxy/readout/join.py).

- ``stored_id``: an item id or a unit longer than ``MAX_STORED_ID`` characters is stored
  as ``"sha256:" + the first 32 hex digits of its SHA-256`` (ids are often URLs; a
  record stays small and a long id still joins, since an event's item is stored the
  same way).
- ``item_hashes``: every served id beyond the first ``exposures.max_items`` (which the
  record lists in full) as the CRC-32 of its stored form (UTF-8; zlib's, as an unsigned
  32-bit integer, 4 bytes big-endian), concatenated and base64-encoded (standard
  alphabet, padded). Any reader can compute it (the same CRC-32 as the item buckets of
  proxy/config/keys.py), and it is cheap: ~0.13 ms for 950 ids, where SHA-256 took four
  times that on the event loop. A click on an item never served passes with odds of
  n / 2**32 for a list of n items (one in 40,000 for 100,000 items); an id made to
  collide on purpose gains nothing that clicking a served item would not.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import sys
import zlib
from array import array
from collections.abc import Iterable

__all__ = [
    "HASH_BYTES",
    "MAX_STORED_ID",
    "item_crcs",
    "item_hash",
    "pack_hashes",
    "stored_id",
    "stored_ids",
    "unpack",
]

MAX_STORED_ID = 128
HASH_BYTES = 4
_PREFIX = "sha256:"


def stored_id(value: str) -> str:
    """``value`` itself, or its hashed form when it is longer than MAX_STORED_ID."""
    if len(value) <= MAX_STORED_ID:
        return value
    return _PREFIX + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def stored_ids(values: list[str]) -> list[str]:
    """``stored_id`` of each, without a Python call per id when none is long (the usual
    case: a record lists up to thousands of them)."""
    if not values or max(map(len, values)) <= MAX_STORED_ID:
        return values
    return [stored_id(v) for v in values]


def item_hash(stored: str) -> bytes:
    return zlib.crc32(stored.encode("utf-8", "surrogatepass")).to_bytes(HASH_BYTES, "big")


def item_crcs(stored: Iterable[str]) -> array[int]:
    """The CRC-32 of each stored id (``item_hash`` as integers)."""
    values = list(stored)
    try:  # map() over C functions: no Python frame per id
        return array("I", map(zlib.crc32, map(str.encode, values)))
    except UnicodeEncodeError:  # a lone surrogate (JSON can escape one)
        return array("I", [zlib.crc32(v.encode("utf-8", "surrogatepass")) for v in values])


def pack_hashes(stored: Iterable[str]) -> str:
    crcs = item_crcs(stored)
    if sys.byteorder == "little":
        crcs.byteswap()  # big-endian, whatever the machine
    return base64.b64encode(crcs.tobytes()).decode("ascii")


def unpack(text: str) -> frozenset[bytes] | None:
    """The hashes of an ``item_hashes`` field, or None when it is not one."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) % HASH_BYTES:
        return None
    return frozenset(raw[k : k + HASH_BYTES] for k in range(0, len(raw), HASH_BYTES))
