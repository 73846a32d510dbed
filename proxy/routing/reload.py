"""Keeping the routes snapshot in step with the files on disk.

What can change what a reload would read: ``routes.yaml``, every model file it names,
and every symlink met on the way to those files (a Kubernetes ConfigMap swaps the
``..data`` symlink of its mount; an editor renames a temp file over the original). The
watcher listens for file events (watchfiles: inotify, FSEvents, ...) in the directories
that hold those paths, keeps only events on those paths, waits for 200 ms of quiet and
then hashes the files. Only when a sha256 differs from what it last saw does it ask the
store to reload, so a ``touch`` or an unrelated file in the directory costs nothing.

Every ~1 s, events or not, a cheap check stats the files and hashes ``routes.yaml``
(models are re-hashed only when their inode, size or times moved). It catches what
events miss (network filesystems, a directory that appeared after the watch began), and
when watchfiles cannot run at all it is the whole watcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from proxy.config import yamlload
from proxy.routing import limits
from proxy.routing.current import SnapshotStore
from proxy.routing.snapshot import Fingerprint

log = logging.getLogger("rankgate.reload")

DEBOUNCE_S = 0.2
POLL_INTERVAL_S = 1.0
_MISSING = "missing"  # the "sha256" of a file that cannot be read
_MAX_LINKS = 40  # like the kernel's ELOOP limit


def _key(path: str) -> str:
    """One spelling per directory entry: the real directory plus the entry's own name
    (the entry itself may be a symlink, and that link is what we watch)."""
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def symlink_chain(path: str) -> set[str]:
    """``path``, every symlink met while resolving it, and the file it ends at."""
    out = {path}
    pending, hops = path, 0
    while hops < _MAX_LINKS:
        parts = pending.split(os.sep)
        for i in range(1, len(parts) + 1):
            prefix = os.sep.join(parts[:i]) or os.sep
            if parts[i - 1] in ("", ".", "..") or not os.path.islink(prefix):
                continue
            try:
                target = os.readlink(prefix)
            except OSError:
                return out
            out.add(prefix)
            rest = parts[i:]
            pending = os.path.normpath(os.path.join(os.path.dirname(prefix), target, *rest))
            out.add(pending)
            hops += 1
            break
        else:
            break
    out.add(os.path.realpath(path))
    return out


def _existing_dir(path: str) -> str:
    """The real directory to watch for ``path``: its parent, or the nearest ancestor that
    exists (a directory created later shows up there as an event)."""
    parent = os.path.dirname(path)
    while parent and not os.path.isdir(parent):
        up = os.path.dirname(parent)
        if up == parent:
            break
        parent = up
    return os.path.realpath(parent or os.sep)


def _model_refs(raw: bytes, max_models: int) -> dict[str, str]:
    """name -> path as written in routes.yaml; a broken (or too long) file names nothing."""
    try:
        doc: Any = yaml.load(raw, Loader=yamlload.SAFE_LOADER)
    except yaml.YAMLError:
        return {}
    models = doc.get("models") if isinstance(doc, dict) else None
    if not isinstance(models, dict) or len(models) > max_models:
        return {}
    return {
        str(name): ref["path"]
        for name, ref in models.items()
        if isinstance(ref, dict) and isinstance(ref.get("path"), str)
    }


@dataclass(frozen=True)
class DiskState:
    fingerprint: Fingerprint
    relevant: frozenset[str]  # _key()s of every path whose change matters
    dirs: tuple[str, ...]  # real directories to watch, sorted


@dataclass(frozen=True)
class _Stat:
    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int


def _stat(path: str) -> _Stat | None:
    try:
        st = os.stat(path)  # follows symlinks: the file a reload would read
    except OSError:
        return None
    return _Stat(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class DiskReader:
    """Reads what a reload would read, as a Fingerprint comparable with a Snapshot's.
    Blocking (hashes files): call it off the event loop."""

    def __init__(
        self, routes_path: str, policy: limits.RoutesPolicy = limits.DEFAULT_POLICY
    ) -> None:
        self.routes_path = routes_path
        self.policy = policy
        self._models: dict[str, tuple[_Stat, str]] = {}  # path -> (stat, sha256)
        self._parsed: tuple[str, dict[str, str]] = ("", {})  # routes sha -> model refs

    def read(self, rehash_models: bool) -> DiskState:
        try:
            # Bounded like a reload's own read: the reload then says what is wrong.
            raw = limits.read_routes_file(Path(self.routes_path), self.policy)
            routes_sha = hashlib.sha256(raw).hexdigest()
        except yamlload.ConfigError as exc:
            st = _stat(self.routes_path)
            raw, routes_sha = b"", _MISSING if st is None else f"refused:{st}:{exc}"
        if self._parsed[0] != routes_sha:
            self._parsed = (routes_sha, _model_refs(raw, self.policy.max_models))
        base = os.path.dirname(self.routes_path)
        paths = {name: os.path.join(base, ref) for name, ref in self._parsed[1].items()}

        models: set[tuple[str, str]] = set()
        seen: dict[str, tuple[_Stat, str]] = {}
        for name, path in paths.items():
            st = _stat(path)
            cached = self._models.get(path)
            if st is None:
                digest = _MISSING
            elif cached is not None and cached[0] == st and not rehash_models:
                digest = cached[1]
            else:
                digest = limits.model_digest(Path(path), self.policy.max_model_bytes, str(st))
            if st is not None and digest != _MISSING:
                seen[path] = (st, digest)
            models.add((name, digest))
        self._models = seen

        chain: set[str] = set()
        for path in (self.routes_path, *paths.values()):
            chain |= symlink_chain(path)
        return DiskState(
            fingerprint=Fingerprint(routes_sha, frozenset(models)),
            relevant=frozenset(_key(p) for p in chain),
            dirs=tuple(sorted({_existing_dir(p) for p in chain})),
        )


class RoutesWatcher:
    """Reloads ``store`` when routes.yaml or a model file it names changes content."""

    def __init__(
        self,
        store: SnapshotStore,
        *,
        use_events: bool = True,
        debounce_s: float = DEBOUNCE_S,
        poll_interval_s: float = POLL_INTERVAL_S,
    ) -> None:
        self.store = store
        self.use_events = use_events
        self.debounce_s = debounce_s
        self.poll_interval_s = poll_interval_s
        # Set once changes are being seen (file events in place, or polling running).
        self.live = asyncio.Event()
        self._reader = DiskReader(str(store.path), store.policy)
        self._seen: Fingerprint | None = None
        self._state: DiskState | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def mode(self) -> str:
        return self.store.watch_mode

    async def start(self, ready_within_s: float = 5.0) -> None:
        """Start watching; returns once a change made from now on will be seen."""
        if self._task is not None:
            return
        self._stop.clear()
        self.live.clear()
        # What is served is the baseline: a change made while the initial load ran is
        # caught by the first check.
        self._seen = self.store.current.fingerprint
        self._state = await asyncio.to_thread(self._reader.read, False)
        self._task = asyncio.create_task(self._run(), name="rankgate-routes-watcher")
        live = asyncio.ensure_future(self.live.wait())
        await asyncio.wait(
            {live, self._task}, timeout=ready_within_s, return_when=asyncio.FIRST_COMPLETED
        )
        live.cancel()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stop.set()
        try:
            # A reload in progress may be loading a model; give it a moment, then cancel.
            await asyncio.wait_for(asyncio.shield(task), timeout=5.0)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.live.clear()
        self.store.watch_mode = "off"

    async def _run(self) -> None:
        if self.use_events:
            try:
                await self._watch_events()
            except Exception as exc:  # no inotify, watch limit reached, broken install
                log.warning(
                    "file events unavailable (%s: %s); polling %s every %.1f s",
                    type(exc).__name__,
                    exc,
                    self.store.path,
                    self.poll_interval_s,
                )
        if not self._stop.is_set():
            await self._poll()

    async def _watch_events(self) -> None:
        import watchfiles  # here, so that a broken install falls back to polling

        while not self._stop.is_set():
            assert self._state is not None
            dirs = self._state.dirs
            log.debug("watching %s", dirs)
            changes_iter = watchfiles.awatch(
                *dirs,
                watch_filter=self._relevant,
                recursive=False,
                step=int(self.debounce_s * 1000),  # quiet this long, then report
                debounce=max(1600, int(self.debounce_s * 4000)),  # at most this long
                rust_timeout=int(self.poll_interval_s * 1000),
                yield_on_timeout=True,  # the periodic check rides on the timeout
                stop_event=self._stop,
                ignore_permission_denied=True,
            )
            pending = asyncio.ensure_future(anext(changes_iter))
            try:
                # awatch adds its watches before its first await: one turn of the loop
                # and they are in place (a setup error, e.g. no inotify, is raised here).
                await asyncio.sleep(0)
                if pending.done():
                    pending.result()
                self.store.watch_mode = "events"
                self.live.set()
                # What changed while no watch was in place (start-up, a restart).
                await self._guarded("watch", False)
                while True:
                    try:
                        changes = await pending
                    except StopAsyncIteration:
                        return  # stopped
                    if changes:
                        await self._guarded("watch", True)
                    else:
                        await self._guarded("poll", False)
                    if self._state.dirs != dirs:
                        break  # a symlink now leads elsewhere: watch the new directories
                    pending = asyncio.ensure_future(anext(changes_iter))
            finally:
                if pending.done():
                    await changes_iter.aclose()
                else:
                    # Only when this task is cancelled (stop() ran out of patience); awatch
                    # then stops its thread.
                    pending.cancel()

    async def _poll(self) -> None:
        self.store.watch_mode = "poll"
        self.live.set()
        await self._guarded("poll", False)
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.poll_interval_s)
            if not self._stop.is_set():
                await self._guarded("poll", False)

    async def _guarded(self, trigger: str, rehash_models: bool) -> None:
        try:
            await self._check(trigger, rehash_models)
        except asyncio.CancelledError:
            raise
        except Exception:  # the watcher must outlive any one bad check
            log.exception("routes watcher check failed")

    async def _check(self, trigger: str, rehash_models: bool) -> None:
        state = await asyncio.to_thread(self._reader.read, rehash_models)
        if state.fingerprint != self._seen and trigger == "poll":
            # Seen by polling, maybe mid-write: reload once two reads agree.
            for _ in range(10):
                await asyncio.sleep(self.debounce_s)
                again = await asyncio.to_thread(self._reader.read, True)
                settled = again.fingerprint == state.fingerprint
                state = again
                if settled:
                    break
        self._state = state
        if state.fingerprint == self._seen or self._stop.is_set():
            return
        # Remembered before reloading: a file that fails is not retried until it changes.
        self._seen = state.fingerprint
        await self.store.reload_outcome(trigger, if_changed=True)

    def _relevant(self, change: object, path: str) -> bool:
        state = self._state
        if state is None:
            return True
        key = _key(path)
        if key in state.relevant:
            return True
        # A directory on the way to a watched file appeared, vanished or was renamed.
        prefix = key + os.sep
        return any(r.startswith(prefix) for r in state.relevant)
