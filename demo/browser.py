"""Headless Chromium over the Chrome DevTools Protocol, on aiohttp's websocket client.

Enough for the demo's browser test and README screenshot: open a page, run JavaScript,
click like a mouse, record the requests the page makes, take a screenshot. No extra
dependency and no browser download: it drives the system's ``chromium``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import re
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# No sandbox: CI and containers run as root. Nothing in the background may reach the
# network (updates, sync, field trials), so a run is the same offline as online.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
    "--force-color-profile=srgb",
    "--remote-debugging-port=0",
)
_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


class BrowserError(Exception):
    pass


def find_chromium() -> str | None:
    """The Chromium to drive: $CHROMIUM, else the first of CANDIDATES on PATH."""
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit if shutil.which(explicit) else None
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Connection:
    """One websocket to the browser; commands by id, events to whoever listens."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._listeners: list[tuple[str | None, asyncio.Queue[dict[str, Any]]]] = []
        self._reader = asyncio.create_task(self._read())

    async def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        ident = next(self._ids)
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        await self.ws.send_json(message)
        reply = await future
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error'].get('message', reply['error'])}")
        return dict(reply.get("result", {}))

    def listen(self, session: str | None) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._listeners.append((session, queue))
        return queue

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = msg.json()
                if "id" in data:
                    future = self._pending.pop(data["id"], None)
                    if future is not None and not future.done():
                        future.set_result(data)
                    continue
                for session, queue in self._listeners:
                    if session == data.get("sessionId"):
                        queue.put_nowait(data)
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(BrowserError("the browser closed the connection"))

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self.ws.close()


class Page:
    def __init__(self, conn: Connection, session: str) -> None:
        self.conn = conn
        self.session = session
        self.events = conn.listen(session)
        self.requests: list[str] = []  # every URL the page asked for, in order
        self.console: list[str] = []  # console messages and uncaught exceptions
        self._loaded = asyncio.Event()
        self._pump = asyncio.create_task(self._watch())

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.conn.send(method, params, self.session)

    async def _watch(self) -> None:
        while True:
            event = await self.events.get()
            method, params = event.get("method"), event.get("params", {})
            if method == "Page.loadEventFired":
                self._loaded.set()
            elif method == "Network.requestWillBeSent":
                self.requests.append(params["request"]["url"])
            elif method == "Runtime.consoleAPICalled":
                args = params.get("args", [])
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in args)
                self.console.append(f"{params.get('type')}: {text}")
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                exc = details.get("exception", {}).get("description") or details.get("text")
                self.console.append(f"exception: {exc}")

    async def setup(self, width: int, height: int) -> None:
        for domain in ("Page.enable", "Runtime.enable", "Network.enable"):
            await self.send(domain)
        await self.set_viewport(width, height)

    async def set_viewport(self, width: int, height: int) -> None:
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    async def goto(self, url: str, timeout_s: float = 15) -> None:
        self._loaded.clear()
        reply = await self.send("Page.navigate", {"url": url})
        if reply.get("errorText"):
            raise BrowserError(f"cannot open {url}: {reply['errorText']}")
        async with asyncio.timeout(timeout_s):
            await self._loaded.wait()

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises are awaited)."""
        reply = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
        )
        if "exceptionDetails" in reply:
            details = reply["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"{expression[:80]!r} threw: {text}")
        return reply.get("result", {}).get("value")

    async def wait_for(self, expression: str, timeout_s: float = 10, every_s: float = 0.05) -> Any:
        """Polls until the expression is truthy; returns its value."""
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    value = await self.evaluate(expression)
                    if value:
                        return value
                    await asyncio.sleep(every_s)
        except TimeoutError:
            raise BrowserError(
                f"timed out after {timeout_s}s waiting for {expression!r}; console: "
                f"{self.console[-5:]}"
            ) from None

    async def click(self, selector: str) -> None:
        """A real left click (mouse down and up) in the middle of the element."""
        box = await self.evaluate(
            f"""(() => {{
                const el = document.querySelector({selector!r});
                if (!el) return null;
                el.scrollIntoView({{block: "center"}});
                const r = el.getBoundingClientRect();
                return {{x: r.left + r.width / 2, y: r.top + r.height / 2}};
            }})()"""
        )
        if box is None:
            raise BrowserError(f"no element matches {selector!r}")
        for kind in ("mousePressed", "mouseReleased"):
            await self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": box["x"], "y": box["y"], "button": "left", "clickCount": 1},
            )

    async def screenshot(self, path: Path | None = None, full_page: bool = True) -> bytes:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            metrics = await self.send("Page.getLayoutMetrics")
            size = metrics.get("cssContentSize") or metrics["contentSize"]
            params["clip"] = {
                "x": 0,
                "y": 0,
                "width": size["width"],
                "height": size["height"],
                "scale": 1,
            }
            params["captureBeyondViewport"] = True
        data = base64.b64decode((await self.send("Page.captureScreenshot", params))["data"])
        if path is not None:
            await asyncio.to_thread(path.write_bytes, data)
        return data

    async def close(self) -> None:
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump


class Browser:
    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        session: aiohttp.ClientSession,
        conn: Connection,
        profile: Path,
    ) -> None:
        self.proc = proc
        self.http = session
        self.conn = conn
        self.profile = profile
        self.pages: list[Page] = []

    async def new_page(self, width: int = 1280, height: int = 900) -> Page:
        target = await self.conn.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.conn.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(self.conn, attached["sessionId"])
        self.pages.append(page)
        await page.setup(width, height)
        return page


async def _devtools_url(proc: asyncio.subprocess.Process, log: list[str], timeout_s: float) -> str:
    assert proc.stderr is not None
    async with asyncio.timeout(timeout_s):
        while line := await proc.stderr.readline():
            text = line.decode(errors="replace").rstrip()
            log.append(text)
            if match := _LISTENING.search(text):
                return match.group(1)
    raise BrowserError("Chromium exited before it listened:\n" + "\n".join(log[-20:]))


async def _drain(stream: asyncio.StreamReader | None, log: list[str]) -> None:
    # Keep reading: a full stderr pipe would block the browser.
    assert stream is not None
    while line := await stream.readline():
        if len(log) < 1000:
            log.append(line.decode(errors="replace").rstrip())


@contextlib.asynccontextmanager
async def launch(executable: str | None = None, timeout_s: float = 30) -> AsyncIterator[Browser]:
    """A headless Chromium with a new empty profile; everything is gone afterwards."""
    exe = executable or find_chromium()
    if exe is None:
        raise BrowserError(f"no Chromium found (looked for {', '.join(CANDIDATES)})")
    profile = Path(tempfile.mkdtemp(prefix="rankgate-chromium-"))
    log: list[str] = []
    proc = await asyncio.create_subprocess_exec(
        exe,
        *FLAGS,
        f"--user-data-dir={profile}",
        "about:blank",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its own process group: renderers go with it
    )
    drain: asyncio.Task[None] | None = None
    session: aiohttp.ClientSession | None = None
    conn: Connection | None = None
    try:
        url = await _devtools_url(proc, log, timeout_s)
        drain = asyncio.create_task(_drain(proc.stderr, log))
        session = aiohttp.ClientSession()
        ws = await session.ws_connect(url, max_msg_size=0, autoping=True)
        conn = Connection(ws)
        browser = Browser(proc, session, conn, profile)
        yield browser
        for page in browser.pages:
            await page.close()
        with contextlib.suppress(BrowserError, asyncio.TimeoutError, ConnectionError):
            async with asyncio.timeout(5):
                await conn.send("Browser.close")
    finally:
        if conn is not None:
            await conn.close()
        if session is not None:
            await session.close()
        await _stop(proc)
        if drain is not None:
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain
        shutil.rmtree(profile, ignore_errors=True)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if proc.returncode is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)  # the group we started (start_new_session)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                await proc.wait()
    # Helpers (zygote, renderers) that outlived the browser process.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
