"""The app on a real socket: uvicorn in-process on the test loop, and sessions to it."""

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import TypedDict, Unpack

import pytest
import uvicorn
from starlette.applications import Starlette
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin, Subprotocol

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.protocol import BEARER_PREFIX, PROTOCOL
from {{ cookiecutter.package_name }}.resources import Resources
from {{ cookiecutter.package_name }}.server import uvicorn_config
from {{ cookiecutter.package_name }}.service import Service
from {{ cookiecutter.package_name }}.settings import Settings

from .users import User
from .wsclient import WsClient

SERVER_START_TIMEOUT_S = 10.0
DRAIN_TIMEOUT_S = 5.0


class _InProcessServer(uvicorn.Server):
    """uvicorn, run as a task on the test loop, announcing when it listens, stopping at once."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Ask the server to stop; `serve` returns once it has."""
        self.should_exit = True
        self._stopping.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # pytest owns the signals: Ctrl-C must stop the run, not just this server.
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.listening.set()

    async def main_loop(self) -> None:
        # uvicorn looks at should_exit every 0.1 s; a test's server waits for stop() instead.
        await self.on_tick(0)
        await self._stopping.wait()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn gives the connections it asks to close 0.1 s, even when there are none, as
        # there are none here once the harness has drained every session: 0.2 s per test
        # serving an app of its own, with the polling above.
        if self.server_state.connections:
            await super().shutdown(sockets)
            return
        for server in self.servers:
            server.close()
            await server.wait_closed()


@dataclass(frozen=True, slots=True)
class LiveApp:
    """An app served on a real socket, and the way to open sessions to it."""

    app: Starlette
    url: str

    @property
    def http_url(self) -> str:
        """The same server's address for HTTP (probes, metrics, documents)."""
        return self.url.replace("ws://", "http://", 1)

    @property
    def service(self) -> Service:
        service: Service = self.app.state.service
        return service

    @contextlib.asynccontextmanager
    async def websocket_session(
        self, user: User, headers: dict[str, str] | None = None, source: str | None = None
    ) -> AsyncIterator[WsClient]:
        """A fresh connection for `user`, with more `headers` and from the loopback address
        `source` where given; on exit, closed and drained from the server."""
        # No deflate offer (the service's default is off; test_handshake_storm offers it), no
        # proxy lookup, which reads the whole environment on every connect, and no keepalive
        # task: the server pings, and the client answers without one. No limit on unread
        # frames either, as in a browser: past one, websockets stops reading the socket, and a
        # close from a test that left messages unread waited its whole close timeout (10 s)
        # for the server's close frame queued behind them. StalledClient is the client that
        # stops reading.
        async with connect(
            f"{self.url}/ws",
            subprotocols=offer(user.token),
            compression=None,
            proxy=None,
            ping_interval=None,
            max_queue=None,
            additional_headers=headers,
            local_addr=None if source is None else (source, 0),
        ) as connection:
            client = WsClient(connection)
            welcome = await client.next_of_type("welcome")
            try:
                yield client
            finally:
                await connection.close()
                await self.wait_drained(welcome["session"])

    async def wait_drained(self, session_id: str) -> None:
        """Wait until the server has forgotten a session, so no state crosses into the next test."""
        session = self.service.registry.get(session_id)
        if session is None:
            return
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT_S):
                await session.drained.wait()
        except TimeoutError:
            raise AssertionError(
                f"the server did not drain session {session_id} within {DRAIN_TIMEOUT_S}s"
            ) from None


class Handshake(TypedDict, total=False):
    """What tests vary in a handshake, as websockets' `connect` takes it."""

    subprotocols: list[Subprotocol]
    origin: Origin
    additional_headers: dict[str, str]
    local_addr: tuple[str, int]


def offer(token: str) -> list[Subprotocol]:
    """The subprotocols a browser offers: the protocol, and the token (it cannot send headers)."""
    return [Subprotocol(PROTOCOL), Subprotocol(BEARER_PREFIX + token)]


async def refused_status(live: LiveApp, **handshake: Unpack[Handshake]) -> int:
    """Try a handshake that must fail; return the HTTP status the server answered."""
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"{live.url}/ws", **handshake):
            pass
    return refused.value.response.status_code


AppFactory = Callable[..., contextlib.AbstractAsyncContextManager[LiveApp]]
"""Serves one more app for a test; see the `another_app` fixture."""


@contextlib.asynccontextmanager
async def serve_in_process(app: Starlette, settings: Settings) -> AsyncIterator[LiveApp]:
    """Run the app's lifespan and a uvicorn server on a free port of 127.0.0.1."""
    config = uvicorn_config(
        app,
        settings,
        lifespan="off",  # run below, so a startup failure raises here instead of SystemExit
        log_config=None,
        access_log=False,
    )
    async with app.router.lifespan_context(app), serve_on_loopback(config) as url:
        yield LiveApp(app, url)


@contextlib.asynccontextmanager
async def serve_on_loopback(config: uvicorn.Config) -> AsyncIterator[str]:
    """Serve `config`'s app with uvicorn, in-process on the running loop, on a free port of
    127.0.0.1; yields its ws:// URL. The bench's `limit` serves its bare endpoint so too."""
    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY only on sockets that say they are TCP,
    # and without it Nagle's algorithm meets delayed ACKs and stalls small frames for 40 ms.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = _InProcessServer(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]), name="uvicorn")
    listening = asyncio.create_task(server.listening.wait())
    await asyncio.wait(
        {serving, listening},
        timeout=SERVER_START_TIMEOUT_S,
        return_when=asyncio.FIRST_COMPLETED,
    )
    if not server.listening.is_set():
        listening.cancel()
        serving.cancel()
        raise RuntimeError(f"the test server did not start on port {port}")
    try:
        yield f"ws://127.0.0.1:{port}"
    finally:
        server.stop()
        await serving


@contextlib.asynccontextmanager
async def serve_instance(settings: Settings) -> AsyncIterator[LiveApp]:
    """An instance of the service with Resources of its own, opened from `settings`, served as
    `serve_in_process` does; its Resources are closed after."""
    resources = await Resources.open(settings)
    try:
        async with serve_in_process(create_app(settings, resources), settings) as live:
            yield live
    finally:
        await resources.close()
