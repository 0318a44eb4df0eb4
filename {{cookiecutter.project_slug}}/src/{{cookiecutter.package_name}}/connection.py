"""One WebSocket connection, from handshake to drain: the transport under the handlers.

A handshake that `handshake.admit` refuses gets an HTTP error response. Once accepted, this task
reads requests and hands them to `handlers`. Most frames go straight to the socket (see
sessions.py); a sender task, started the first time one has to wait, writes those queued in
order, and an overflow starts a task that closes the connection with 4008. An idle connection
thus holds one task, the server's, and no sender or closer until it needs one: each task is a
kilobyte or two of every idle connection. The reader reads only while the send queue has room,
so a client that sends faster than it reads is slowed down by TCP rather than closed; it spends
one unit of the connection's request budget per request, and yields to the event loop after
each, so no client can starve the others. Whatever ends the connection, the session leaves its
channels and is drained from the registry before the handler returns.
"""

import asyncio
import contextvars
import logging
import time
from typing import Any, cast

from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocket

from . import logs
from .handlers import handle
from .handshake import HandshakeRefused, admit, peer_of
from .metrics import backend_of
from .protocol import (
    CloseCode,
    ErrorCode,
    ProtocolError,
    encode,
    error_frame,
    parse_request,
    request_id,
)
from .ratelimit import RequestBudget
from .service import Service
from .sessions import Session, SlowConsumer, WriteNow
from .wsprotocol import DIRECT_WRITE

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 1.0


class Connection:
    """Serves one accepted-or-refused WebSocket for one app."""

    def __init__(self, websocket: WebSocket, service: Service) -> None:
        self.websocket = websocket
        self.service = service
        self.settings = service.settings
        self.registry = service.registry
        self.metrics = service.metrics
        self._closed_by_server = False
        self._sender: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        # The session's log context, for the tasks `_wake` starts from whoever woke it.
        self._context: contextvars.Context | None = None
        self._ending = False
        # The server's task, which runs the receive loop; cut off once the server has closed.
        self._reader: asyncio.Task[Any] | None = None
        self._cut_off = False
        self._cut_off_later: asyncio.TimerHandle | None = None

    async def serve(self) -> None:
        """Handshake, then serve until the client or the server closes."""
        started = time.perf_counter()
        try:
            admitted = await admit(self.websocket, self.service)
        except HandshakeRefused as refusal:
            if logs.allowed(peer_of(self.websocket)):
                log.info("handshake refused (%s): %s", refusal.reason, refusal)
            self.metrics.refused.labels(reason=refusal.reason).inc()
            response = PlainTextResponse(refusal.reason, status_code=refusal.status)
            await self.websocket.send_denial_response(response)
            self._handshake_took(started, "refused")
            return
        identity = admitted.identity
        await self.websocket.accept(subprotocol=admitted.subprotocol)
        # Read by the handshake alone: a browser's, cookies and all, are kilobytes that an idle
        # connection would hold for as long as it lives.
        self.websocket.scope["headers"].clear()
        self._handshake_took(started, "accepted")
        self.metrics.accepted.inc()
        session = self.registry.open(
            identity.user_id,
            admitted.peer,
            self.settings.send_queue_size,
            self.settings.send_timeout_s,
            self._direct_writer(),
            self._wake,
        )
        logs.session_id.set(session.id)
        logs.user_id.set(session.user_id)
        self._context = contextvars.copy_context()
        log.info("session opened")
        session.send(encode({"type": "welcome", "session": session.id, "user": session.user_id}))
        expiry = asyncio.get_running_loop().call_later(
            max(0.0, identity.expires_at - time.time()), session.close, CloseCode.TOKEN_EXPIRED
        )
        self._reader = asyncio.current_task()
        try:
            try:
                # A close the server writes also ends this loop (uvicorn hands the app a
                # disconnect as it writes the close frame); one it cannot write, `_cut_off`.
                if not await self._receive_loop(session) and self._sender is not None:
                    # Handling failed and queued a close: let the sender deliver it.
                    await asyncio.wait({self._sender}, timeout=CLOSE_TIMEOUT_S)
                if self._closer is not None:
                    await asyncio.wait({self._closer})  # bounded by _close
            except asyncio.CancelledError:
                # Only the cut-off ends here; any other cancellation goes on.
                if not self._cut_off or self._reader is None or self._reader.uncancel():
                    raise
        finally:
            # A fan-out may still reach the session while its tasks end: it starts no new one.
            self._ending = True
            expiry.cancel()
            if self._cut_off_later is not None:
                self._cut_off_later.cancel()
            tasks = {task for task in (self._sender, self._closer) if task is not None}
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks)
            self.metrics.dropped.inc(session.dropped)
            self.service.feeds.unsubscribe_all(session)
            self.registry.drain(session)
            log.info("session closed")

    async def _receive_loop(self, session: Session) -> bool:
        """Handle requests until the client disconnects (True) or handling fails (False)."""
        budget = RequestBudget(self.settings.request_rate, self.settings.request_burst)
        try:
            while True:
                # Yield on every request, so one flooding client cannot hold the event loop.
                await asyncio.sleep(0)
                await session.wait_for_room()
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    if not self._closed_by_server:
                        self.metrics.close(message.get("code", 1005))
                    return True
                self.metrics.received.inc()
                text = message.get("text")
                if text is None:
                    session.close(CloseCode.UNSUPPORTED_DATA)
                    continue
                retry_after = budget.spend()
                if retry_after is None:
                    try:
                        reply = await handle(self.service, session, parse_request(text))
                    except ProtocolError as error:
                        reply = error_frame(error)
                elif budget.exhausted:
                    session.close(CloseCode.TOO_MANY_REQUESTS)
                    continue
                else:
                    reply = error_frame(
                        ProtocolError(
                            ErrorCode.RATE_LIMITED,
                            f"too many requests; retry in {retry_after:.2f}s",
                            request_id(text),
                        )
                    )
                session.reply(encode(reply))
        except SlowConsumer:
            return True  # the session overflowed: serve() closes it with 4008
        except Exception as error:
            if backend := backend_of(error):
                self.metrics.backend_error(backend, "request")
            log.exception("session failed")
            session.close(CloseCode.INTERNAL_ERROR)
            return False

    def _wake(self, session: Session) -> None:
        """The session queued something or overflowed: start the task that sees to it, once."""
        if self._ending:
            return
        if session.overflowed:
            if self._closer is None:
                closing = self._close_slow()
                self._closer = asyncio.create_task(closing, context=self._context)
        elif self._sender is None:
            sending = self._send_loop(session)
            self._sender = asyncio.create_task(sending, context=self._context)

    async def _close_slow(self) -> None:
        if self._sender is not None:
            self._sender.cancel()  # it may be stuck writing to a client that stopped reading
        await self._close(CloseCode.SLOW_CONSUMER)
        self._stop_reading()

    def _stop_reading(self) -> None:
        """End the receive loop, which a close the client is too stuck to take does not end."""
        if not self._ending and self._reader is not None:
            self._cut_off = True
            self._reader.cancel()

    async def _send_loop(self, session: Session) -> None:
        while True:
            item = await session.next_outgoing()
            if isinstance(item, CloseCode):
                await self._close(item)
                # Unwritten, the close leaves the receive loop waiting for the abort: not long.
                loop = asyncio.get_running_loop()
                self._cut_off_later = loop.call_later(CLOSE_TIMEOUT_S, self._stop_reading)
                return
            self.metrics.queue_depth.observe(len(session.outgoing) - 1)
            await self.websocket.send_text(item)
            session.sent()
            self.metrics.frames_sent += 1

    def _direct_writer(self) -> WriteNow | None:
        """The server's synchronous write (see wsprotocol.py), which counts what it writes; None
        under a server without one, where every frame goes through the sender."""
        extension = self.websocket.scope.get("extensions", {}).get(DIRECT_WRITE, {})
        return cast(WriteNow | None, extension.get("write_now"))

    def _handshake_took(self, started: float, outcome: str) -> None:
        elapsed = time.perf_counter() - started
        self.metrics.handshake_seconds.labels(outcome=outcome).observe(elapsed)

    async def _close(self, code: CloseCode) -> None:
        """Send a close frame, unless the client is too stuck to take even that in time."""
        self._closed_by_server = True
        self.metrics.close(code)
        closing = asyncio.create_task(self.websocket.close(code))
        # A peer that never reads makes the close fail once the socket is aborted: expected.
        closing.add_done_callback(lambda task: task.cancelled() or task.exception())
        done, _ = await asyncio.wait({closing}, timeout=CLOSE_TIMEOUT_S)
        if not done:
            closing.cancel()
