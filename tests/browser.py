"""Headless Chromium over the DevTools protocol: just enough to open pages and run scripts."""

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
# Without the background-networking flags, Chromium keeps calling home, which fails here.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
)
START_TIMEOUT_S = 30.0


def find_chromium() -> str | None:
    """The path of a Chromium-like browser on this machine, if any."""
    return next(filter(None, map(shutil.which, CANDIDATES)), None)


class Page:
    """One tab, driven through its DevTools session."""

    def __init__(self, devtools: ClientConnection, session_id: str) -> None:
        self._devtools = devtools
        self._session_id = session_id
        self._ids = itertools.count(1)
        self._events: list[dict[str, Any]] = []

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one DevTools command to this tab and return its result."""
        request_id = next(self._ids)
        message = {"id": request_id, "method": method, "params": params}
        await self._devtools.send(json.dumps({**message, "sessionId": self._session_id}))
        while True:
            reply = await self._next()
            if reply.get("id") == request_id:
                if "error" in reply:
                    raise RuntimeError(f"{method} failed: {reply['error']}")
                return dict(reply["result"])
            self._events.append(reply)

    async def navigate(self, url: str) -> None:
        """Load `url` and wait for its load event."""
        await self.call("Page.enable")
        await self.call("Page.navigate", url=url)
        while not any(event.get("method") == "Page.loadEventFired" for event in self._events):
            self._events.append(await self._next())

    async def evaluate(self, expression: str) -> Any:
        """Run JavaScript in the page, awaiting a promise it returns; the value as JSON."""
        reply = await self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in reply:
            raise AssertionError(reply["exceptionDetails"].get("exception", reply))
        return reply["result"].get("value")

    async def screenshot(self, path: Path) -> None:
        reply = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(reply["data"]))

    async def _next(self) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(
            await asyncio.wait_for(self._devtools.recv(), START_TIMEOUT_S)
        )
        return message


@contextlib.asynccontextmanager
async def open_page(executable: str, profile: Path, url: str) -> AsyncIterator[Page]:
    """Start a throwaway Chromium, open `url` in it, and stop it after."""
    browser = subprocess.Popen(
        [executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        endpoint = await asyncio.wait_for(
            asyncio.to_thread(_devtools_endpoint, browser), START_TIMEOUT_S
        )
        async with connect(endpoint, max_size=None) as devtools:
            await devtools.send(json.dumps(_command(1, "Target.createTarget", url="about:blank")))
            target = await _result(devtools, 1)
            attach = _command(2, "Target.attachToTarget", targetId=target["targetId"], flatten=True)
            await devtools.send(json.dumps(attach))
            page = Page(devtools, (await _result(devtools, 2))["sessionId"])
            await page.navigate(url)
            yield page
    finally:
        browser.kill()
        browser.wait()


def _devtools_endpoint(browser: subprocess.Popen[str]) -> str:
    stderr = browser.stderr
    assert stderr is not None
    for line in stderr:
        if line.startswith("DevTools listening on "):
            # Keep draining: a full pipe would stall the browser.
            threading.Thread(target=stderr.read, daemon=True).start()
            return line.removeprefix("DevTools listening on ").strip()
    raise RuntimeError("Chromium exited before opening its DevTools endpoint")


def _command(request_id: int, method: str, **params: Any) -> dict[str, Any]:
    return {"id": request_id, "method": method, "params": params}


async def _result(devtools: ClientConnection, request_id: int) -> dict[str, Any]:
    """The result of a browser-level command, skipping the events that come first."""
    while True:
        reply = json.loads(await asyncio.wait_for(devtools.recv(), START_TIMEOUT_S))
        if reply.get("id") == request_id:
            return dict(reply["result"])
