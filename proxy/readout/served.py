"""How a record names what was served, so that a click can be checked against it.

Both sides use these: the exposure and event records as rankgate writes them
(proxy/experiments/), and the readout that joins them (proxy/readout/join.py).

- ``stored_id``: an item id or a unit longer than ``MAX_STORED_ID`` characters is stored
  as ``"sha256:" + the first 32 hex digits of its SHA-256`` (ids are often URLs; a
  record stays small and a long id still joins, since an event's item is stored the
  same way).
- ``item_hashes``: every served id beyond the first ``exposures.max_items`` (which the
  record lists in full) as the first ``HASH_BYTES`` bytes of SHA-256 of its stored
  form, concatenated and base64-encoded (standard alphabet, padded). A plain hash, so
  any reader can compute it; a 4-byte hash lets a click on an item never served pass
  with odds of n / 2**32 for a list of n items (one in 40,000 for 100,000 items).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable

__all__ = ["HASH_BYTES", "MAX_STORED_ID", "item_hash", "pack_hashes", "stored_id", "unpack"]

MAX_STORED_ID = 128
HASH_BYTES = 4
_PREFIX = "sha256:"


def stored_id(value: str) -> str:
    """``value`` itself, or its hashed form when it is longer than MAX_STORED_ID."""
    if len(value) <= MAX_STORED_ID:
        return value
    return _PREFIX + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def item_hash(stored: str) -> bytes:
    return hashlib.sha256(stored.encode("utf-8", "surrogatepass")).digest()[:HASH_BYTES]


def pack_hashes(stored_ids: Iterable[str]) -> str:
    return base64.b64encode(b"".join(item_hash(i) for i in stored_ids)).decode("ascii")


def unpack(text: str) -> frozenset[bytes] | None:
    """The hashes of an ``item_hashes`` field, or None when it is not one."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) % HASH_BYTES:
        return None
    return frozenset(raw[k : k + HASH_BYTES] for k in range(0, len(raw), HASH_BYTES))
