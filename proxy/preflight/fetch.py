"""One GET of a feed from the origin, judged as the feed path would judge it: the code is
``proxy.feed.sample`` (a serving process probes a reloaded route's ``sample:`` page with
it too); this name stays for ``rankgate init`` and ``rankgate check``."""

from __future__ import annotations

from proxy.feed.sample import MAX_BYTES, TIMEOUT_S, Sample, SampleError, fetch, join, judge

__all__ = ["MAX_BYTES", "TIMEOUT_S", "Sample", "SampleError", "fetch", "join", "judge"]
