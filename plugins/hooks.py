"""The hooks a plugin may define, and the protocols they form.

A plugin is a plain class (like a mitmproxy addon): the names of its methods are the
hooks it takes part in, and every hook takes the one ``FeedContext``. Which hooks it
defines decides its kind(s):

=============  =========  =========================================================
hook           sync?      when, and what it may do
=============  =========  =========================================================
resolve_user   sync       Request start, before the origin is asked. Return the user
                          id or None (None: the next user plugin is tried; if none
                          finds one, ``skipped; reason=no-user``). Kind ``user``.
find_items     sync       The body is decoded (``ctx.doc``). Return the item arrays
                          (``list[ItemArray]``); raise ``ItemsNotFound`` when there
                          are none. At most one per route. Kind ``items``.
prefetch       async      Once per request, as soon as the items are known
                          (``ctx.found``), concurrently with the embedding lookups;
                          awaited (within the budget) before the first rerank. For
                          I/O such as Redis (``ctx.redis``). Store results in
                          ``ctx.state[self]``. Optional part of kind ``rules``.
rerank         sync       After scoring, before serializing, once per item array, in
                          the order the route lists its plugins. Change
                          ``ctx.scores``, ``ctx.fixed``, ``ctx.dropped`` or
                          ``ctx.order``. Kind ``rules``.
=============  =========  =========================================================

Rules for a plugin class, checked when routes.yaml is loaded (a violation refuses the
whole file, and the previous routes keep serving):

- every public method (no leading ``_``) must be one of the hooks above, with exactly
  one parameter after ``self`` and the sync/async kind shown;
- options come from a nested ``Options`` class (a ``PluginOptions`` subclass, which
  forbids unknown keys); ``__init__`` then takes the validated options as its one
  argument. Without ``Options``, the plugin takes no options and ``__init__`` none;
- an optional ``item_fields`` attribute (a sequence of top-level item keys): the only
  keys of ``ctx.items`` the plugin reads, and it reads nothing of ``ctx.doc``. When every
  rule of a route declares it, the route parses bodies only that far and splices the
  items' own bytes back (``proxy/routing/reads.py``); ``ctx.items`` then holds those keys;
- an optional ``vary`` attribute (a sequence of request header names) adds to the
  response's ``Vary``: headers whose values change what the plugin does.

Any exception from a hook (other than ``ItemsNotFound``) serves the origin's bytes with
``X-Rerank: skipped; reason=plugin-error; plugin=NAME``; a hook that leaves the route
over its budget gives ``reason=budget; plugin=NAME``. Hooks run on the event loop:
keep sync hooks short (numpy over the arrays, no blocking I/O).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from plugins.context import FeedContext, ItemArray


class PluginOptions(BaseModel):
    """Base of a plugin's ``Options``: unknown keys are refused, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


@dataclass(frozen=True)
class HookSpec:
    name: str
    is_async: bool
    kind: str


HOOKS: dict[str, HookSpec] = {
    spec.name: spec
    for spec in (
        HookSpec("resolve_user", False, "user"),
        HookSpec("find_items", False, "items"),
        HookSpec("prefetch", True, "rules"),
        HookSpec("rerank", False, "rules"),
    )
}


@runtime_checkable
class UserPlugin(Protocol):
    def resolve_user(self, ctx: FeedContext) -> str | None: ...


@runtime_checkable
class ItemsPlugin(Protocol):
    def find_items(self, ctx: FeedContext) -> Sequence[ItemArray]: ...


@runtime_checkable
class RulesPlugin(Protocol):
    def rerank(self, ctx: FeedContext) -> None: ...


class PrefetchingRulesPlugin(RulesPlugin, Protocol):
    async def prefetch(self, ctx: FeedContext) -> None: ...
