"""One WebSocket connection, from handshake to drain: the transport under the handlers.

A handshake that `handshake.admit` refuses gets an HTTP error response. Once accepted, the
connection runs two loops: this task reads requests and hands them to `handlers`, a sender task
writes the session's queued frames. The reader reads only while the send queue has room, so a
client that sends faster than it reads is slowed down by TCP rather than closed; it spends one
unit of the connection's request budget per request, and yields to the event loop after each,
so no client can starve the others. Whatever ends the connection, the session leaves its
channels and is drained from the registry before the handler returns.
"""

import asyncio
import logging
import time
from typing import Any

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
        self._handshake_took(started, "accepted")
        self.metrics.accepted.inc()
        session = self.registry.open(
            identity.user_id,
            admitted.peer,
            self.settings.send_queue_size,
            self.settings.send_timeout_s,
            self._direct_writer(),
        )
        logs.session_id.set(session.id)
        logs.user_id.set(session.user_id)
        log.info("session opened")
        session.send(encode({"type": "welcome", "session": session.id, "user": session.user_id}))
        sender = asyncio.create_task(self._send_loop(session), name=f"send {session.id}")
        receiver = asyncio.create_task(self._receive_loop(session), name=f"recv {session.id}")
        overflow = session.overflow_signal()
        expiry = asyncio.get_running_loop().call_later(
            max(0.0, identity.expires_at - time.time()), session.close, CloseCode.TOKEN_EXPIRED
        )
        try:
            watched: set[asyncio.Future[Any]] = {sender, receiver, overflow}
            done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            if session.overflowed:
                # The sender may be stuck writing to a client that stopped reading.
                sender.cancel()
                await self._close(CloseCode.SLOW_CONSUMER)
            elif receiver in done and not receiver.result():
                # The receiver failed and queued a close: let the sender deliver it.
                await asyncio.wait({sender}, timeout=CLOSE_TIMEOUT_S)
            elif receiver not in done:
                # The server closed: give the client a moment to answer the close frame.
                await asyncio.wait({receiver}, timeout=CLOSE_TIMEOUT_S)
        finally:
            expiry.cancel()
            for task in (sender, receiver):
                task.cancel()
            await asyncio.wait({sender, receiver})
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

    async def _send_loop(self, session: Session) -> None:
        while True:
            item = await session.next_outgoing()
            if isinstance(item, CloseCode):
                await self._close(item)
                return
            self.metrics.queue_depth.observe(len(session.outgoing) - 1)
            await self.websocket.send_text(item)
            session.sent()
            self.metrics.frames_sent += 1

    def _direct_writer(self) -> WriteNow | None:
        """The server's synchronous write (see wsprotocol.py), counted; None under a server
        without one, where every frame goes through the sender."""
        extension = self.websocket.scope.get("extensions", {}).get(DIRECT_WRITE, {})
        write_text = extension.get("write_now")
        if write_text is None:
            return None
        metrics = self.metrics

        def write_now(frame: str) -> bool:
            if not write_text(frame):
                return False
            metrics.frames_sent += 1
            return True

        return write_now

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
