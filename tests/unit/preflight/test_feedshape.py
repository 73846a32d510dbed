"""Finding the item arrays and the id fields of a feed body."""

from __future__ import annotations

from proxy.preflight.feedshape import (
    MANY_ITEMS,
    ArrayCandidate,
    IdCandidate,
    choose_array,
    choose_id,
    feed_like,
    find_arrays,
    find_ids,
    items_at,
)


def test_arrays_of_objects_by_dotted_path() -> None:
    doc = {
        "data": {
            "posts": [{"pid": 1, "tags": [{"t": "x"}]}, {"pid": 2, "tags": []}],
            "ids": [1, 2, 3],  # not objects: not a feed
        },
        "meta": {"links": [{"rel": "next"}]},
        "a.b": [{"id": 1}],  # a key with a dot has no dotted path
    }
    assert find_arrays(doc) == [
        ArrayCandidate("data.posts", 2, 2),  # the biggest first
        ArrayCandidate("meta.links", 1, 1),
    ]  # and never an item's own list (data.posts.0.tags)


def test_the_body_itself_and_mostly_objects() -> None:
    assert find_arrays([{"id": 1}, {"id": 2}, None]) == [ArrayCandidate("", 3, 2)]
    assert find_arrays({"x": [{"id": 1}, 2, 3]}) == []  # mostly not objects
    assert find_arrays({"x": []}) == []


def test_ids_unique_and_id_like_first() -> None:
    items = [
        {"pid": 10, "author_id": 7, "title": "a", "node": {"id": "n1"}, "flag": True},
        {"pid": 11, "author_id": 7, "title": "b", "node": {"id": "n2"}, "flag": False},
    ]
    found = {c.path: c for c in find_ids(items)}
    assert set(found) == {"pid", "author_id", "title", "node.id"}  # booleans are no ids
    assert found["pid"] == IdCandidate("pid", 2, 2, 2)
    assert found["author_id"].distinct == 1 and not found["author_id"].unique
    assert [c.path for c in find_ids(items)][:2] == ["pid", "node.id"]


def test_choose_id() -> None:
    def cands(*specs: tuple[str, int, int]) -> list[IdCandidate]:
        return [IdCandidate(p, present, distinct, 10) for p, present, distinct in specs]

    chosen, _ = choose_id(cands(("pid", 10, 10), ("title", 10, 10), ("author_id", 10, 3)))
    assert chosen is not None and chosen.path == "pid"
    chosen, shown = choose_id(cands(("pid", 10, 10), ("post_id", 10, 10)))
    assert chosen is None and [c.path for c in shown] == ["pid", "post_id"]
    chosen, _ = choose_id(cands(("id", 10, 10), ("uuid", 10, 10)))  # plain `id` wins
    assert chosen is not None and chosen.path == "id"
    chosen, _ = choose_id(cands(("pid", 10, 10), ("ad_id", 2, 2)))  # present in every item
    assert chosen is not None and chosen.path == "pid"
    chosen, shown = choose_id(cands(("title", 10, 10)))  # nothing id-like: offer the rest
    assert chosen is None and [c.path for c in shown] == ["title"]


def test_items_at() -> None:
    doc = {"data": {"posts": [{"id": 1}], "n": 3}}
    assert items_at(doc, "data.posts") == [{"id": 1}]
    assert items_at(doc, "data.n") is None
    assert items_at(doc, "data.nope") is None
    assert items_at([1], "") == [1]


def test_choose_array_takes_the_only_feed_like_one() -> None:
    cards = [{"id": k} for k in range(MANY_ITEMS)]
    doc = {"cards": cards, "nav": [{"id": "home"}], "rows": [{"t": 1}] * 9}
    arrays = find_arrays(doc)
    assert [feed_like(doc, a) for a in arrays] == [False, True, False]  # rows, cards, nav
    assert choose_array(doc, arrays) == ArrayCandidate("cards", MANY_ITEMS, MANY_ITEMS)
    few = {"cards": cards[:-1], "nav": [{"id": "home"}]}  # under MANY_ITEMS: no feed-like
    assert choose_array(few, find_arrays(few)) is None
    repeated = {"cards": cards, "more": [{"id": 1}] * MANY_ITEMS}  # ids not distinct
    assert choose_array(repeated, find_arrays(repeated)).path == "cards"  # type: ignore[union-attr]
    both = {"cards": cards, "posts": cards}
    assert choose_array(both, find_arrays(both)) is None
