"""What runs in the re-rank processes (``proxy.feed.offload`` sends it there): a big feed's
body read by its route's plan and kept between the feed's two trips, then joined in the
served order. The body comes in, and the response goes out, by the place's shared memory
when it fits (else by the pipe)."""

from __future__ import annotations

from collections import OrderedDict
from multiprocessing.shared_memory import SharedMemory

import msgspec
import numpy as np
from msgspec import Raw

from proxy.feed import splice
from proxy.routing.reads import BodyPlan, build

# Bodies a process keeps between trips, at most (twice its places): a feed that never came
# back (the serving process forgets it with the next first trip) cannot hold more.
HELD_MAX = 6

_PLANS: dict[tuple[tuple[str, ...], tuple[str, ...]], BodyPlan] = {}
# A feed's body and its items' bytes and bounds, from the first trip to the second.
_HELD: OrderedDict[int, tuple[bytes, list[Raw], int, int]] = OrderedDict()


def _plan(path: tuple[str, ...], id_path: tuple[str, ...]) -> BodyPlan:
    plan = _PLANS.get((path, id_path))
    if plan is None:
        plan = _PLANS[path, id_path] = build(path, id_path, ())
    return plan


_SLOTS: dict[str, SharedMemory] = {}


def _slot(name: str) -> SharedMemory:
    shm = _SLOTS.get(name)
    if shm is None:
        # Registered again with the serving process's resource tracker (a set: no-op);
        # that process made it and unlinks it.
        shm = _SLOTS[name] = SharedMemory(name)
    return shm


def ready(slots: list[str]) -> bool:
    """Up, and able to open the places' shared memory (else the pool does not start)."""
    for name in slots:
        _slot(name)
    return True


_IDS = msgspec.json.Encoder()


def find_ids(
    key: int,
    body: bytes | tuple[str, int],
    path: tuple[str, ...],
    id_path: tuple[str, ...],
    forget: list[int],
) -> tuple[bytes, int] | None:
    """The items' ids (a JSON array) and how many are null, the body kept under ``key``
    for ``join``; None: not a body the route's plan takes (nothing kept). ``body``: its
    bytes, or (a place's shared memory, its length). ``forget``: feeds that will not come
    back."""
    for old in forget:
        _HELD.pop(old, None)
    raw = body if isinstance(body, bytes) else bytes(_slot(body[0]).buf[: body[1]])
    found = splice.scan(raw, _plan(path, id_path))
    if found is None:
        return None
    _HELD[key] = (raw, found.parts, found.start, found.end)
    while len(_HELD) > HELD_MAX:
        _HELD.popitem(last=False)
    ids = found.array.ids
    # One bytes object: cheap to send and to take in, and the key to the serving
    # process's copy of a page it has had before.
    return _IDS.encode(ids), ids.count(None)


def join(key: int, source: np.ndarray, slot: str | None = None) -> bytes | int:
    """The body kept under ``key``, with its items' bytes in the order ``source`` gives;
    written to the shared memory ``slot`` when it fits (then its length is returned)."""
    held = _HELD.pop(key, None)
    if held is None:
        raise ValueError("the body is no longer held")
    raw, parts, start, end = held
    inner = b",".join([parts[i] for i in source.tolist()])
    out = b"".join((raw[:start], inner, raw[end:]))
    if slot is None:
        return out
    shm = _slot(slot)
    if len(out) > shm.size:
        return out
    shm.buf[: len(out)] = out
    return len(out)


def held() -> list[int]:
    """The keys of the bodies this process holds (for tests)."""
    return list(_HELD)
