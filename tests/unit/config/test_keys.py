"""Key templates and hash-tag buckets (proxy/config/keys.py)."""

from __future__ import annotations

import zlib

import pytest
from redis.crc import key_slot

from proxy.config.keys import KeyTemplate, bucket_of, check_template, hash_tag
from proxy.config.settings import Embeddings

BUCKETED = "emb:item:{b{bucket}}:{id}"


def test_bucket_is_the_documented_crc32() -> None:
    # The value the module docstring promises other writers (any language's CRC-32).
    assert bucket_of("42", 16) == 8
    assert KeyTemplate(BUCKETED, 16).key("42") == "emb:item:{b8}:42"
    for ident in ("0", "item-7", "ünï", "{x}", ""):
        assert bucket_of(ident, 16) == zlib.crc32(ident.encode()) % 16


def test_encoded_keys_and_slots_match_redis() -> None:
    template = KeyTemplate(BUCKETED, 16)
    ids = [f"m{k}" for k in range(200)] + ["with{braces}", "ünï"]
    keys, slots = template.encoded(ids)
    assert slots is not None
    assert [k.decode() for k in keys] == [template.key(i) for i in ids]
    assert slots == [key_slot(k) for k in keys]  # what the cluster computes
    assert len(set(slots)) == 16  # every bucket used, no more


def test_plain_template_has_no_slots() -> None:
    template = KeyTemplate("emb:item:{id}", 16)
    assert template.buckets == 1
    assert template.encoded(["a", "b{c}"]) == ([b"emb:item:a", b"emb:item:b{c}"], None)
    assert template.key("x") == "emb:item:x"


def test_one_bucket_is_one_slot() -> None:
    keys, slots = KeyTemplate(BUCKETED, 1).encoded(["a", "b"])
    assert keys == [b"emb:item:{b0}:a", b"emb:item:{b0}:b"]
    assert slots == [key_slot(b"b0")] * 2


@pytest.mark.parametrize(
    ("template", "words"),
    [
        ("emb:item", "exactly once"),
        ("emb:{id}:{id}", "exactly once"),
        ("emb:{bucket}:{id}", "hash tag"),  # no tag: the bucket would not group slots
        ("emb:{{id}}:{bucket}", "hash tag"),  # the id inside the tag: one slot per item
        ("emb:{b{bucket}}:{bucket}:{id}", "at most once"),
    ],
)
def test_bad_templates(template: str, words: str) -> None:
    assert words in check_template(template, buckets_allowed=True)
    with pytest.raises(ValueError, match=words):
        KeyTemplate(template)


def test_user_key_takes_no_bucket() -> None:
    assert "item_key only" in check_template("u:{b{bucket}}:{id}", buckets_allowed=False)
    with pytest.raises(ValueError, match=r"embeddings.user_key|item_key only"):
        Embeddings(user_key="u:{b{bucket}}:{id}")
    assert Embeddings(item_key=BUCKETED, item_buckets=4).item_buckets == 4


def test_hash_tag() -> None:
    assert hash_tag("a{b7}c") == "b7"
    assert hash_tag("a{}c{d}") is None  # an empty first tag: the whole key is hashed
    assert hash_tag("plain") is None
