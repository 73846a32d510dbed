"""Where the guardrails' live counts and trips are kept: Redis, so that every process of
a fleet adds to one set of counts, sees a trip within a poll, and finds it again after a
restart; or this process's memory (``MemoryGuardStore``: tests, and what one process
alone would need).

Keys (a route's under one hash tag, so a cluster keeps them on one slot)::

    rankgate:guardrails                      hash "ROUTE ARM" -> the trip (JSON)
    rankgate:guardrails:epochs               hash "ROUTE ARM" -> the test's number
    rankgate:guard:{ROUTE}:ARM:EPOCH:s       hash of the arm's counts (guardtest.ArmCounts)
    rankgate:guard:{ROUTE}:ARM:EPOCH:u       hash n:USER, x:USER (each user's exposures
                                             and clicked exposures)
    rankgate:guard:{ROUTE}:r:REQUEST_ID      "ARM:EPOCH\\nUSER" until its first click

One Lua call per route and flush adds a process's batch: the counts, each exposure's
user (the moments n^2, x^2, n x change by what the user had before; past the cap of
exposures per user, none is counted), each click (the
first per exposure only: its key is taken with GETDEL). A click whose exposure has not
arrived yet (another process's batch) comes back unmatched and is offered again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

__all__ = ["Batch", "GuardStore", "MemoryGuardStore", "RedisGuardStore", "field_of"]

TRIPS = "rankgate:guardrails"
EPOCHS = "rankgate:guardrails:epochs"
BANDITS = "rankgate:bandits"  # hash "ROUTE ARM" -> a bandit's weights (JSON)
COUNTS_TTL_S = 14 * 86400  # counts of an experiment nobody serves any more fade away


def field_of(route: str, arm: str) -> str:
    return f"{route} {arm}"


def prefix(route: str) -> str:
    return f"rankgate:guard:{{{route}}}"


@dataclass
class Batch:
    """One route's deltas from one process since its last flush."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # ARM:EPOCH -> deltas
    # (request id, ARM:EPOCH, user, the most exposures a user counts with)
    exposures: list[tuple[str, str, str, int]] = field(default_factory=list)
    clicks: list[str] = field(default_factory=list)  # request ids

    def add(self, arm_key: str, name: str, by: int = 1) -> None:
        into = self.counts.setdefault(arm_key, {})
        into[name] = into.get(name, 0) + by

    def __bool__(self) -> bool:
        return bool(self.counts or self.exposures or self.clicks)


class GuardStore(Protocol):
    async def add(self, route: str, batch: Batch, ttl_s: int) -> list[str]:
        """Add a batch; returns the clicks whose exposure is not known (yet)."""

    async def counts(self, route: str, arm_key: str) -> dict[str, int]: ...

    async def state(self) -> tuple[dict[str, Any], dict[str, int]]:
        """(trips by "ROUTE ARM", test numbers by "ROUTE ARM")."""

    async def trip(self, route: str, arm: str, info: dict[str, Any]) -> bool:
        """Record a trip unless one is there; True when this call recorded it."""

    async def resume(self, route: str, arm: str) -> tuple[bool, int]:
        """Clear a trip and start a new test: (whether it was tripped, the new epoch)."""

    async def bandits(self) -> dict[str, Any]:
        """Every bandit's weights by "ROUTE ARM"."""

    async def put_bandit(self, key: str, period: int, state: dict[str, Any]) -> bool:
        """Store a period's weights unless another process did: True when this one did."""

    async def close(self) -> None: ...


_ADD = """
local pre, ttl, keep = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local batch = cjson.decode(ARGV[4])
local touched = {}
for arm, deltas in pairs(batch.counts) do
  local s = pre .. ':' .. arm .. ':s'
  for name, by in pairs(deltas) do redis.call('HINCRBY', s, name, by) end
  touched[arm] = true
end
-- The moments change per user; their sums are written once per arm at the end.
local sums = {}
local function bump(arm, user, dn, dx, cap)
  local u = pre .. ':' .. arm .. ':u'
  local old = redis.call('HMGET', u, 'n:' .. user, 'x:' .. user)
  local n0, x0 = tonumber(old[1] or '0'), tonumber(old[2] or '0')
  if n0 + dn > cap then return false end
  local n1, x1 = n0 + dn, x0 + dx
  if dn > 0 then redis.call('HSET', u, 'n:' .. user, n1) end
  if dx > 0 then redis.call('HSET', u, 'x:' .. user, x1) end
  local a = sums[arm]
  if not a then
    a = {units = 0, n = 0, x = 0, nn = 0, xx = 0, nx = 0}
    sums[arm] = a
  end
  if n0 == 0 and dn > 0 then a.units = a.units + 1 end
  a.n, a.x = a.n + dn, a.x + dx
  a.nn = a.nn + n1 * n1 - n0 * n0
  a.xx = a.xx + x1 * x1 - x0 * x0
  a.nx = a.nx + n1 * x1 - n0 * x0
  touched[arm] = true
  return true
end
for _, e in ipairs(batch.exposures) do
  if bump(e[2], e[3], 1, 0, tonumber(e[4])) then
    redis.call('SET', pre .. ':r:' .. e[1], e[2] .. '\\n' .. e[3], 'EX', ttl)
  end
end
local unmatched = {}
for _, id in ipairs(batch.clicks) do
  local v = redis.call('GETDEL', pre .. ':r:' .. id)
  if v then
    local cut = string.find(v, '\\n', 1, true)
    bump(string.sub(v, 1, cut - 1), string.sub(v, cut + 1), 0, 1, math.huge)
  else
    table.insert(unmatched, id)
  end
end
for arm, a in pairs(sums) do
  local s = pre .. ':' .. arm .. ':s'
  for name, by in pairs(a) do
    if by ~= 0 then redis.call('HINCRBY', s, name, by) end
  end
end
for arm, _ in pairs(touched) do
  redis.call('EXPIRE', pre .. ':' .. arm .. ':s', keep)
  redis.call('EXPIRE', pre .. ':' .. arm .. ':u', keep)
end
return unmatched
"""


def _batch_json(batch: Batch) -> bytes:
    return orjson.dumps(
        {
            # cjson reads an empty object as an empty array: both iterate the same.
            "counts": batch.counts,
            "exposures": [list(e) for e in batch.exposures],
            "clicks": batch.clicks,
        }
    )


class RedisGuardStore:
    def __init__(self, url: str, timeout_s: float = 2.0, cluster: bool = False) -> None:
        kind = RedisCluster if cluster else aioredis.Redis
        self.client: aioredis.Redis = kind.from_url(  # type: ignore[assignment]
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._add = self.client.register_script(_ADD)

    async def add(self, route: str, batch: Batch, ttl_s: int) -> list[str]:
        pre = prefix(route)
        keys = [f"{pre}:s"]  # names the slot for a cluster; the script stays in it
        out = await self._add(keys, [pre, ttl_s, COUNTS_TTL_S, _batch_json(batch)])
        return [v.decode() if isinstance(v, bytes) else str(v) for v in out or []]

    async def counts(self, route: str, arm_key: str) -> dict[str, int]:
        raw = await self.client.hgetall(f"{prefix(route)}:{arm_key}:s")
        return {k.decode(): int(v) for k, v in raw.items()}

    async def state(self) -> tuple[dict[str, Any], dict[str, int]]:
        trips = await self.client.hgetall(TRIPS)
        epochs = await self.client.hgetall(EPOCHS)
        return (
            {k.decode(): orjson.loads(v) for k, v in trips.items()},
            {k.decode(): int(v) for k, v in epochs.items()},
        )

    async def trip(self, route: str, arm: str, info: dict[str, Any]) -> bool:
        return bool(await self.client.hsetnx(TRIPS, field_of(route, arm), orjson.dumps(info)))

    async def resume(self, route: str, arm: str) -> tuple[bool, int]:
        key = field_of(route, arm)
        # The new test first: stopped between the two, the arm stays tripped (no harm).
        epoch = await self.client.hincrby(EPOCHS, key, 1)
        removed = await self.client.hdel(TRIPS, key)
        return bool(removed), int(epoch)

    async def bandits(self) -> dict[str, Any]:
        raw = await self.client.hgetall(BANDITS)
        return {k.decode(): orjson.loads(v) for k, v in raw.items()}

    async def put_bandit(self, key: str, period: int, state: dict[str, Any]) -> bool:
        lock = f"{BANDITS}:lock:{key}:{period}"
        if not await self.client.set(lock, b"1", nx=True, ex=86_400):
            return False
        await self.client.hset(BANDITS, key, orjson.dumps(state))
        return True

    async def close(self) -> None:
        await self.client.aclose()


class MemoryGuardStore:
    """The same contract in this process's memory."""

    def __init__(self) -> None:
        self.trips: dict[str, Any] = {}
        self.epochs: dict[str, int] = {}
        self.stats: dict[tuple[str, str], dict[str, int]] = {}
        self.users: dict[tuple[str, str], dict[str, list[int]]] = {}
        self.requests: dict[tuple[str, str], tuple[str, str]] = {}
        self.bandit_states: dict[str, Any] = {}

    async def add(self, route: str, batch: Batch, ttl_s: int) -> list[str]:
        for arm_key, deltas in batch.counts.items():
            stats = self.stats.setdefault((route, arm_key), {})
            for name, by in deltas.items():
                stats[name] = stats.get(name, 0) + by
        for request_id, arm_key, user, cap in batch.exposures:
            if self.users.get((route, arm_key), {}).get(user, [0, 0])[0] >= cap:
                continue
            self.requests[(route, request_id)] = (arm_key, user)
            self._bump(route, arm_key, user, 1, 0)
        unmatched = []
        for request_id in batch.clicks:
            found = self.requests.pop((route, request_id), None)
            if found is None:
                unmatched.append(request_id)
            else:
                self._bump(route, found[0], found[1], 0, 1)
        return unmatched

    def _bump(self, route: str, arm_key: str, user: str, dn: int, dx: int) -> None:
        stats = self.stats.setdefault((route, arm_key), {})
        n0, x0 = self.users.setdefault((route, arm_key), {}).setdefault(user, [0, 0])
        n1, x1 = n0 + dn, x0 + dx
        self.users[(route, arm_key)][user] = [n1, x1]
        deltas = {
            "units": int(n0 == 0 and dn > 0),
            "n": dn,
            "x": dx,
            "nn": n1 * n1 - n0 * n0,
            "xx": x1 * x1 - x0 * x0,
            "nx": n1 * x1 - n0 * x0,
        }
        for name, by in deltas.items():
            stats[name] = stats.get(name, 0) + by

    async def counts(self, route: str, arm_key: str) -> dict[str, int]:
        return dict(self.stats.get((route, arm_key), {}))

    async def state(self) -> tuple[dict[str, Any], dict[str, int]]:
        return dict(self.trips), dict(self.epochs)

    async def trip(self, route: str, arm: str, info: dict[str, Any]) -> bool:
        key = field_of(route, arm)
        if key in self.trips:
            return False
        self.trips[key] = info
        return True

    async def resume(self, route: str, arm: str) -> tuple[bool, int]:
        key = field_of(route, arm)
        self.epochs[key] = self.epochs.get(key, 0) + 1
        return self.trips.pop(key, None) is not None, self.epochs[key]

    async def bandits(self) -> dict[str, Any]:
        return dict(self.bandit_states)

    async def put_bandit(self, key: str, period: int, state: dict[str, Any]) -> bool:
        if self.bandit_states.get(key, {}).get("period", -1) >= period:
            return False
        self.bandit_states[key] = state
        return True

    async def close(self) -> None:
        pass
