"""What ``rankgate init`` finds before it writes: the item array and id field of a body
(or the candidates and the flag that picks one), and the model with its dimension and
pin. tests/unit/preflight/test_init.py runs the command against a real origin."""

from __future__ import annotations

import hashlib
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from proxy.preflight.initprobe import (
    Found,
    InitError,
    choose_model,
    find_feed,
    reference_model,
    safe_name,
)
from tests.support.common import dot_model

ROOT = Path(__file__).resolve().parents[3]
POSTS = [{"pid": 100 + k, "title": f"post {k}", "author_id": 7} for k in range(12)]


def test_reference_model_is_package_data() -> None:
    # Found through the `models` package, so a wheel install finds it in site-packages.
    path = reference_model()
    assert path.read_bytes() == (ROOT / "models" / "ranker_v1.onnx").read_bytes()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"*" = ["*.onnx"' in pyproject and '"models*"' in pyproject


def test_one_array_and_one_id_like_field_are_found() -> None:
    doc = {"data": {"posts": POSTS}, "meta": {"next": None}}
    assert find_feed(doc, None, None) == Found("data.posts", "pid", 12, 12)
    # The body itself is the array; an item without the id still counts as an item.
    assert find_feed([{"id": 1}, {"id": 2}, {"x": 3}], None, None) == Found("", "id", 3, 2)
    nested = {"edges": [{"node": {"id": f"n{k}"}} for k in range(3)]}
    assert find_feed(nested, None, None) == Found("edges", "node.id", 3, 3)


def message(doc: object, items: str | None = None, item_id: str | None = None) -> str:
    with pytest.raises(InitError) as info:
        find_feed(doc, items, item_id)
    return str(info.value)


def test_the_one_feed_like_array_is_picked_and_the_others_named() -> None:
    # What a newcomer's origin sent: 50 cards with ids beside one section.
    cards = [{"id": f"c{k}", "title": "t"} for k in range(50)]
    doc = {"result": {"cards": cards, "sections": [{"id": "s1", "title": "Top"}]}}
    found = find_feed(doc, None, None)
    assert (found.items, found.item_id, found.count) == ("result.cards", "id", 50)
    assert [a.path for a in found.others] == ["result.sections"]
    assert found.picked() == (
        "picked: the one array of 3+ objects with an id-like field; also in the body: "
        "result.sections (1 objects) (--items PATH takes another)"
    )
    # Many objects without an id-like field do not compete with the feed.
    rows = [{"title": f"r{k}"} for k in range(20)]
    assert find_feed({"cards": cards, "rows": rows}, None, None).items == "cards"
    # --items still picks another, and then nothing is said about a choice.
    given = find_feed(doc, "result.sections", None)
    assert (given.items, given.others, given.picked()) == ("result.sections", (), "")
    alone = find_feed({"items": cards}, None, None)
    assert alone.others == () and alone.picked() == ""


def test_a_choice_left_open_lists_the_candidates_and_the_flag() -> None:
    two_arrays = {"data": {"posts": POSTS, "ads": [{"id": k} for k in range(4)]}}
    assert message(two_arrays).splitlines() == [
        "2 arrays of objects in the body; pick one with --items PATH:",
        "  --items data.posts   12 objects",
        "  --items data.ads     4 objects",
    ]
    assert find_feed(two_arrays, "data.ads", None) == Found("data.ads", "id", 4, 4)
    none_like = {"a": [{"x": 1}] * 5, "b": [{"y": 2}] * 4}  # no array looks like a feed
    assert message(none_like).startswith("2 arrays of objects in the body; pick one")
    two_ids = {"posts": [{**p, "post_id": f"p{p['pid']}"} for p in POSTS]}
    assert message(two_ids).splitlines() == [
        "2 id-like fields in the 12 items at posts; pick one with --item-id PATH:",
        "  --item-id pid       12 of 12 items, 12 distinct",
        "  --item-id post_id   12 of 12 items, 12 distinct",
    ]
    assert find_feed(two_ids, None, "post_id") == Found("posts", "post_id", 12, 12)
    no_id_like = {"rows": [{"title": "a", "n": 1}, {"title": "b", "n": 2}]}
    assert message(no_id_like).splitlines()[0] == (
        "no id-like field (a name ending in 'id') in the 2 items at rows; "
        "pick one with --item-id PATH:"
    )


def test_what_cannot_be_a_feed_says_why() -> None:
    assert message({"a": [1, 2], "b": {"c": 3}}).startswith(
        "no array of objects in the body: rankgate re-orders an array of objects"
    )
    assert message({"data": {"posts": POSTS}}, items="nope") == (
        "--items nope: no array there (arrays of objects in the body: data.posts (12))"
    )
    assert message({"items": []}, items="items") == (
        "the array at items is empty: no id field to find (give --item-id PATH)"
    )
    # Both flags given: an empty feed is accepted as it is.
    assert find_feed({"items": []}, "items", "id") == Found("items", "id", 0, 0)
    assert message([{"x": [1]}, {"x": {}}]) == (
        "no field with a string or integer value in the 2 items at (the body)"
    )
    lines = message({"posts": POSTS}, item_id="nope").splitlines()
    assert lines[0] == "--item-id nope: none of the 12 items has a string or integer there"
    assert lines[1] == "fields; pick one with --item-id PATH:"
    assert any(line.startswith("  --item-id pid ") for line in lines)


def test_safe_name() -> None:
    assert safe_name("ranker_v1", "d") == "ranker_v1"
    assert safe_name("my model (2)", "d") == "my-model-2"
    assert safe_name(".hidden", "d") == "hidden"
    for bad in ("", "--", "_x", "()"):
        assert safe_name(bad, "d") == "d", bad


def test_the_reference_model_is_copied_beside_the_config(tmp_path: Path) -> None:
    choice = choose_model(None, None, tmp_path)
    shipped = reference_model()
    assert (choice.name, choice.dim, choice.reference) == ("ranker_v1", 32, True)
    assert (choice.source, choice.target) == (shipped, tmp_path / "ranker_v1.onnx")
    assert choice.sha256 == hashlib.sha256(shipped.read_bytes()).hexdigest()
    with pytest.raises(InitError, match="embedding dim is 32, not the 8 that --dim asks for"):
        choose_model(None, 8, tmp_path)


def test_a_given_model_stays_where_it_is(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    model = dot_model(tmp_path / "models" / "my model.onnx", dim=8)
    choice = choose_model(str(model), None, tmp_path / "conf")
    assert (choice.name, choice.dim, choice.reference) == ("my-model", 8, False)
    assert choice.target == model.resolve()
    # Relative to a directory whose tree holds it, else absolute.
    assert choice.path_from(tmp_path) == "models/my model.onnx"
    assert choice.path_from(tmp_path / "conf") == model.resolve().as_posix()


def open_dim_model(path: Path) -> Path:
    """A model whose embedding dimension is symbolic: the config must name it."""
    user = helper.make_tensor_value_info("user_embedding", TensorProto.FLOAT, ["N", "D"])
    item = helper.make_tensor_value_info("item_embedding", TensorProto.FLOAT, ["N", "D"])
    score = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    nodes = [
        helper.make_node("Mul", ["user_embedding", "item_embedding"], ["prod"]),
        helper.make_node("ReduceSum", ["prod", "axes"], ["score"], keepdims=1),
    ]
    graph = helper.make_graph(nodes, "dot", [user, item], [score], initializer=[axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_a_model_that_cannot_serve_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "missing.onnx"
    with pytest.raises(InitError, match=f"--model {missing}: cannot read: No such file"):
        choose_model(str(missing), None, tmp_path)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(InitError, match=f"--model {junk}: not a loadable ONNX model"):
        choose_model(str(junk), None, tmp_path)
    open_dim = open_dim_model(tmp_path / "open.onnx")
    with pytest.raises(InitError, match="leaves the embedding dimension open; give --dim D"):
        choose_model(str(open_dim), None, tmp_path)
    assert choose_model(str(open_dim), 12, tmp_path).dim == 12
