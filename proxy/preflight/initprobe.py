"""What ``rankgate init`` looks at before it writes anything: the sample body's item array
and item id field (``find_feed``, on ``proxy.preflight.feedshape``), and the model
(``choose_model``: the reference model shipped with rankgate unless one is given). Of
several arrays of objects, the one that alone looks like a feed (many objects with an
id-like field) is taken, and the others are named. When the body leaves a choice open
(two feed-like arrays, two id-like fields), the error lists the candidates and names the
flag that picks one.
"""

from __future__ import annotations

import importlib.resources
import os
import re
from dataclasses import dataclass
from pathlib import Path

from models.contract import ModelContractError, sha256_file
from proxy.preflight.feedshape import (
    MANY_ITEMS,
    ArrayCandidate,
    choose_array,
    choose_id,
    find_arrays,
    find_ids,
    items_at,
)

REFERENCE_MODEL = "ranker_v1.onnx"  # in the `models` package (package data)


class InitError(Exception):
    """Why init wrote nothing: one line, or a line and the candidates to pick from."""


@dataclass(frozen=True)
class Found:
    items: str
    item_id: str
    count: int  # items in the sample
    with_id: int  # of which have an id
    # The other arrays of objects, when items was picked among several (say so).
    others: tuple[ArrayCandidate, ...] = ()

    def picked(self) -> str:
        """Why this array was taken among several, with the others; "" when it was the
        only one or was given."""
        if not self.others:
            return ""
        shown = ", ".join(f"{a.shown} ({a.objects} objects)" for a in self.others)
        return (
            f"picked: the one array of {MANY_ITEMS}+ objects with an id-like field; "
            f"also in the body: {shown} (--items PATH takes another)"
        )


@dataclass(frozen=True)
class ModelChoice:
    name: str
    source: Path  # the file as given (or shipped)
    target: Path  # where routes.yaml points (the copy, for the reference model)
    dim: int
    sha256: str
    reference: bool

    def path_from(self, directory: Path) -> str:
        """The model's path as routes.yaml in ``directory`` names it: relative when the
        model is in that directory's tree, else absolute."""
        relative = os.path.relpath(self.target, directory)
        return self.target.as_posix() if relative.startswith("..") else relative


def reference_model() -> Path:
    """The reference model, wherever rankgate is installed (a checkout or a wheel)."""
    resource = importlib.resources.files("models") / REFERENCE_MODEL
    with importlib.resources.as_file(resource) as path:
        return Path(path)


# -- the items in the body ----------------------------------------------------------------


def _pick_list(what: str, flag: str, rows: list[tuple[str, str]]) -> str:
    width = max(len(p) for p, _ in rows)
    lines = [f"  {flag} {p:<{width}}   {d}" for p, d in rows]
    return f"{what}; pick one with {flag} PATH:\n" + "\n".join(lines)


def _arrays_hint(arrays: list[ArrayCandidate]) -> str:
    if not arrays:
        return "no array of objects in the body"
    shown = ", ".join(f"{a.shown} ({a.objects})" for a in arrays[:5])
    return f"arrays of objects in the body: {shown}"


def _choose_items(doc: object, arrays: list[ArrayCandidate]) -> ArrayCandidate:
    if not arrays:
        raise InitError(
            "no array of objects in the body: rankgate re-orders an array of objects, "
            "each with an id (an empty feed? give --items PATH --item-id PATH)"
        )
    chosen = choose_array(doc, arrays)
    if chosen is None:
        raise InitError(
            _pick_list(
                f"{len(arrays)} arrays of objects in the body",
                "--items",
                [(a.shown, f"{a.objects} objects") for a in arrays],
            )
        )
    return chosen


def find_feed(doc: object, items: str | None, item_id: str | None) -> Found:
    arrays = find_arrays(doc)
    others: tuple[ArrayCandidate, ...] = ()
    if items is None:
        chosen = _choose_items(doc, arrays)
        items = chosen.path
        others = tuple(a for a in arrays if a != chosen)
    found = items_at(doc, items)
    shown_items = items or '""'
    if found is None:
        raise InitError(f"--items {shown_items}: no array there ({_arrays_hint(arrays)})")
    candidates = find_ids(found)
    if item_id is None:
        if not found:
            raise InitError(
                f"the array at {shown_items} is empty: no id field to find (give --item-id PATH)"
            )
        chosen, shown = choose_id(candidates)
        if chosen is None:
            rows = [(c.path, c.describe()) for c in shown]
            where = f"the {len(found)} items at {items or '(the body)'}"
            if not rows:
                raise InitError(f"no field with a string or integer value in {where}")
            if any(c.id_like for c in shown):
                what = f"{len(shown)} id-like fields in {where}"
            else:
                what = f"no id-like field (a name ending in 'id') in {where}"
            raise InitError(_pick_list(what, "--item-id", rows))
        item_id = chosen.path
    ids = [c for c in candidates if c.path == item_id]
    with_id = ids[0].present if ids else 0
    if found and with_id == 0:
        rows = [(c.path, c.describe()) for c in candidates[:6]]
        raise InitError(
            f"--item-id {item_id}: none of the {len(found)} items has a string or integer "
            "there" + ("" if not rows else "\n" + _pick_list("fields", "--item-id", rows))
        )
    return Found(items, item_id, len(found), with_id, others)


# -- the model ----------------------------------------------------------------------------


def safe_name(text: str, default: str) -> str:
    """``text`` as a model or route name (letters, digits, ``_.-``), else ``default``."""
    name = re.sub(r"[^A-Za-z0-9_.\-]+", "-", text).strip("-.")
    return name if name and name[0].isalnum() else default


def choose_model(given: str | None, dim: int | None, out_dir: Path) -> ModelChoice:
    from models.contract import check_signature, open_session

    reference = given is None
    source = reference_model() if given is None else Path(given)
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise InitError(f"--model {source}: cannot read: {exc.strerror}") from None
    try:
        signature = check_signature(open_session(data), dim, dim_from="--dim")
    except ModelContractError as exc:
        raise InitError(f"--model {source}: {exc}") from None
    except Exception as exc:  # onnxruntime's own errors for a file that is no model
        raise InitError(f"--model {source}: not an ONNX model ({type(exc).__name__})") from None
    model_dim = signature.dim or dim
    if model_dim is None:
        raise InitError(
            f"--model {source}: the model leaves the embedding dimension open; give --dim D"
        )
    # The reference model is copied beside the config: the directory is then whole.
    target = out_dir / source.name if reference else source.resolve()
    return ModelChoice(
        name=safe_name(source.stem, "model"),
        source=source,
        target=target,
        dim=model_dim,
        sha256=sha256_file(source),
        reference=reference,
    )
