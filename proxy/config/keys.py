"""Embedding key templates, and the hash-tag buckets that keep a feed's items on few slots.

A Redis Cluster refuses one MGET over keys of different slots, and 100 item keys
``emb:item:{id}`` fall on ~100 slots. With ``item_key: "emb:item:{b{bucket}}:{id}"`` and
``item_buckets: 16`` every item key carries one of 16 hash tags (``{b0}`` .. ``{b15}``),
so any feed's items live on at most 16 slots: one MGET per slot, one pipeline per node.

The bucket is a stable hash that any writer can compute, in any language:

    bucket = CRC-32(UTF-8 bytes of the id) mod item_buckets

CRC-32 as in zlib's ``crc32``, Python's ``zlib.crc32``, Java's ``java.util.zip.CRC32``,
Go's ``hash/crc32.ChecksumIEEE``, PHP's ``crc32``, as an unsigned 32-bit integer. Item
``"42"`` with 16 buckets: ``zlib.crc32(b"42") % 16 == 8``, key ``emb:item:{b8}:42``.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from redis.crc import key_slot

ID = "{id}"
BUCKET = "{bucket}"


def bucket_of(ident: str, buckets: int) -> int:
    """The id's bucket: CRC-32 of its UTF-8 bytes, modulo ``buckets``."""
    return zlib.crc32(ident.encode()) % buckets


def hash_tag(key: str) -> str | None:
    """The part of a key that Redis Cluster hashes, when it has a hash tag (else None)."""
    start = key.find("{")
    if start < 0:
        return None
    end = key.find("}", start + 1)
    if end <= start + 1:
        return None
    return key[start + 1 : end]


def check_template(template: str, *, buckets_allowed: bool) -> str:
    """A key template's problem as a sentence, or "" when it is fine."""
    if template.count(ID) != 1:
        return f"must contain '{ID}' exactly once: {template!r}"
    count = template.count(BUCKET)
    if count and not buckets_allowed:
        return f"'{BUCKET}' is for item_key only: {template!r}"
    if count > 1:
        return f"must contain '{BUCKET}' at most once: {template!r}"
    if count:
        # The bucket only groups keys on slots when it is what Redis hashes.
        one, two = (template.replace(BUCKET, str(b)).replace(ID, "x") for b in (0, 1))
        tag = hash_tag(one)
        if tag is None or tag == hash_tag(two) or "x" in tag:
            return (
                f"'{BUCKET}' must be the hash tag's content, with the id outside it, "
                f"e.g. 'emb:item:{{b{BUCKET}}}:{ID}': {template!r}"
            )
    return ""


class KeyTemplate:
    """Renders ``{id}`` (and ``{bucket}``) by plain concatenation: ids may hold braces,
    which str.format would choke on, and this runs for every missed item."""

    __slots__ = ("buckets", "parts", "slots", "template")

    def __init__(self, template: str, buckets: int = 1) -> None:
        problem = check_template(template, buckets_allowed=True)
        if problem:
            raise ValueError(problem)
        self.template = template
        self.buckets = buckets if BUCKET in template else 1
        # (prefix, suffix) around the id, as bytes, one pair per bucket.
        self.parts: tuple[tuple[bytes, bytes], ...] = tuple(
            (pre.encode(), suf.encode())
            for pre, suf in (
                template.replace(BUCKET, str(b)).split(ID) for b in range(self.buckets)
            )
        )
        # Each bucket's cluster slot: its hash tag's, known without hashing each key.
        self.slots: tuple[int, ...] = tuple(
            key_slot((hash_tag(template.replace(BUCKET, str(b))) or "").encode())
            for b in range(self.buckets)
        )

    @property
    def bucketed(self) -> bool:
        return BUCKET in self.template

    def key(self, ident: str) -> str:
        data = ident.encode()
        prefix, suffix = self.parts[zlib.crc32(data) % self.buckets]
        return (prefix + data + suffix).decode()

    def encoded(self, ids: Iterable[str]) -> tuple[list[bytes], list[int] | None]:
        """(keys as bytes, their cluster slots) for ``ids``; the slots are None unless
        the template is bucketed (then each key's slot is its bucket's)."""
        parts = self.parts
        if self.buckets == 1 and not self.bucketed:
            prefix, suffix = parts[0]
            return [prefix + ident.encode() + suffix for ident in ids], None
        n = self.buckets
        crc = zlib.crc32
        bucket_slots = self.slots
        keys: list[bytes] = []
        slots: list[int] = []
        for ident in ids:
            data = ident.encode()
            b = crc(data) % n
            prefix, suffix = parts[b]
            keys.append(prefix + data + suffix)
            slots.append(bucket_slots[b])
        return keys, slots
