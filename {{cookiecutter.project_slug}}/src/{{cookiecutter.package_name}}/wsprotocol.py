"""uvicorn's sans-I/O WebSocket protocol, adjusted for peers that misbehave.

- A close the peer never completes ends in an abort after `close_timeout_s`. uvicorn waits for
  room in the send buffer before it even writes the close frame, then closes the transport
  gracefully, which waits for that buffer to drain: a peer that stopped reading allows neither,
  and each such socket would hold megabytes of kernel memory for as long as the peer likes.
- A refused handshake (a denial response) completes the handshake; uvicorn would log an error
  and try to send a 500 after it.
- What a client gets wrong is its fault, not ours: one line at INFO (rate-limited per peer), not
  an ERROR with a traceback, nor lines of uvicorn's and websockets' own for every try, that anyone
  could repeat to flood the log. That holds for invalid UTF-8, for an upgrade request websockets
  refuses before the app sees it (no valid key or version: 400), and for the app's refusals.
- The sockets are counted from accept until the transport is really gone.
- Each read from a socket takes at most READ_BYTES. asyncio reads up to 256 KiB at once, and
  uvicorn parses all of it before anything else runs: a client pipelining tiny frames would
  hold the event loop for tens of milliseconds per read, stalling every other connection.
- The app gets a synchronous text write, the ASGI extension DIRECT_WRITE in its scope: a frame
  written while the socket takes it skips the ASGI send chain and the task switch to the
  connection's sender, which is most of what a delivery costs when fanning out.
- An idle connection keeps what it needs and no more: its receive queue and writable flag are
  the small ones of primitives.py, and the parsed upgrade request's headers and the response
  built for it are let go once the handshake is answered (make loadtest's `held` counts what is
  left).
"""

import functools
import logging
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from . import logs
from .metrics import Metrics
from .primitives import Flag, Inbox

READ_BYTES = 4096
FRAMES_CACHED = 16
DIRECT_WRITE = "ws.write_now"
"""The scope extension, a dict as ASGI's extensions are: {"write_now": write_now(texts) -> bool},
False where the socket cannot take the frames now."""


@functools.lru_cache(maxsize=FRAMES_CACHED)
def _text_frames(texts: tuple[str, ...]) -> bytes:
    """Text frames as a server writes them (unmasked, no extension): the same bytes for every
    socket a message or a batch of them fans out to, so they are built once, not per socket."""
    return b"".join(Frame(Opcode.TEXT, text.encode()).serialize(mask=False) for text in texts)


# What uvicorn and websockets log, unthrottled, for every refused handshake: the app logs its
# refusals (connection.py), and handle_connect those of websockets, once and rate-limited.
_REFUSAL_LINES = frozenset(
    {'%s - "WebSocket %s" %d', '%s - "WebSocket %s" 403', "connection rejected (%d %s)"}
)


class _ClientFaultLog(logging.LoggerAdapter[logging.Logger]):
    """uvicorn's logger (websockets' too), with its complaint about a client's invalid UTF-8
    turned into one line, and its lines about a refused handshake left to the app's."""

    def __init__(self, logger: logging.Logger, protocol: "WebSocketProtocol") -> None:
        super().__init__(logger)
        self.protocol = protocol

    @property
    def level(self) -> int:
        return self.logger.level

    def exception(self, msg: object, *args: Any, **kwargs: Any) -> None:
        if str(msg).startswith("Invalid UTF-8"):
            peer = self.protocol.peer()
            if logs.allowed(peer):
                self.info("%s sent invalid UTF-8: closing with 1007", peer)
            return
        super().exception(msg, *args, **kwargs)

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        if msg not in _REFUSAL_LINES:
            super().info(msg, *args, **kwargs)


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """One WebSocket connection's I/O; see the module docstring for what differs from uvicorn."""

    def __init__(self, *args: Any, close_timeout_s: float, metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.close_timeout = close_timeout_s
        self._metrics = metrics
        # uvicorn reads both through the methods these have: see the module docstring.
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Flag()  # type: ignore[assignment]
        self.writable.set()

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        if hasattr(transport, "max_size"):  # asyncio's selector transports; uvloop has none
            transport.max_size = READ_BYTES
        self._metrics.sockets.inc()
        # uvicorn declares a Logger: the adapter answers every call it makes of one, `level` too.
        self.logger = _ClientFaultLog(self.logger, self)  # type: ignore[assignment]
        self.conn.logger = self.logger

    def peer(self) -> str:
        """The client's address as the app sees it: the scope's once there is one, where
        uvicorn's proxy middleware puts what a trusted balancer forwarded; else the socket's (an
        upgrade refused before it had a scope)."""
        scope = getattr(self, "scope", None)
        client = scope["client"] if scope is not None else self.client
        return client[0] if client else "unknown"

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        # The scope has copies of its headers. uvicorn keeps the request, and so does the parser
        # of websockets (a local of its generator), and neither reads it again.
        del self.request
        event.headers.clear()
        if self.response.status_code != 101:
            # websockets refused the upgrade itself (a missing or malformed key, an unknown
            # version): uvicorn has sent that response and closed, with no scope and no app.
            peer = self.peer()
            if logs.allowed(peer):
                self.logger.info(
                    "%s sent a malformed upgrade, refused with %d: %s",
                    peer,
                    self.response.status_code,
                    self.conn.handshake_exc,
                )
            return
        # The app's task starts on the next loop iteration, so it sees the extension.
        self.scope["extensions"][DIRECT_WRITE] = {"write_now": self.write_now}

    def write_now(self, texts: tuple[str, ...]) -> bool:
        """Write text frames at once, in one write, as uvicorn's send would write each, if that
        needs no waiting; count them among the frames sent."""
        if (
            not self.handshake_complete
            or self.initial_response is not None
            or self.close_sent
            or self.disconnected
            or not self.writable.is_set()
            or self.transport.is_closing()
            or self.conn.state is not State.OPEN
        ):
            return False
        if self.conn.extensions:  # compression: each connection's own deflate state
            for text in texts:
                self.conn.send_text(text.encode())
            self.transport.write(b"".join(self.conn.data_to_send()))
        else:
            self.transport.write(_text_frames(texts))
        self._metrics.frames_sent += len(texts)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._metrics.sockets.dec()
        super().connection_lost(exc)

    async def send(self, message: Any) -> None:
        stuck = None
        if message["type"] == "websocket.close" and not self.writable.is_set():
            stuck = self.loop.call_later(self.close_timeout, self.transport.abort)
        await super().send(message)
        # Only once the close frame is written: if the app gives up waiting (cancelling this
        # send), the abort still comes.
        if stuck is not None:
            stuck.cancel()
        if message["type"] == "websocket.accept" and self.handshake_complete:
            del self.response  # sent; uvicorn reads it only to answer the handshake
        if message["type"] == "websocket.close" and self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = self.loop.call_later(self.close_timeout, self.transport.abort)
        elif message["type"] == "websocket.http.response.body" and not message.get("more_body"):
            self.handshake_complete = True
