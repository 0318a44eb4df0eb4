"""One WebSocket connection, from handshake to drain: the transport under the handlers.

The handshake is refused (HTTP 403) for a disallowed Origin, a missing or bad token, or while
the service drains. Once accepted, the connection runs two loops: this task reads requests and
hands them to `handlers`, a sender task writes the session's queued frames. The reader reads
only while the send queue has room, so a client that sends faster than it reads is slowed down
by TCP rather than closed. Whatever ends the connection, the session leaves its channels and is
drained from the registry before the handler returns.
"""

import asyncio
import logging
import time
from dataclasses import dataclass

from starlette.websockets import WebSocket

from . import logs, store
from .auth import AuthError, Identity
from .handlers import handle
from .protocol import (
    BEARER_PREFIX,
    PROTOCOL,
    CloseCode,
    ProtocolError,
    encode,
    error_frame,
    parse_request,
)
from .service import Service
from .sessions import Session, SlowConsumer

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 1.0


class HandshakeRefused(Exception):
    """The connection must not be accepted; the message says why (logged, not sent)."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the client presented at the handshake."""

    token: str
    subprotocol: str | None


def credentials(websocket: WebSocket) -> Credentials:
    """The token from `Sec-WebSocket-Protocol` (browsers) or `Authorization` (other clients)."""
    offered: list[str] = websocket.scope.get("subprotocols", [])
    subprotocol = PROTOCOL if PROTOCOL in offered else None
    for value in offered:
        if value.startswith(BEARER_PREFIX):
            if subprotocol is None:
                # A browser fails the connection unless we echo one of its offers, and the
                # token itself must never be echoed: so the protocol must be offered too.
                raise HandshakeRefused(f"a bearer subprotocol needs {PROTOCOL!r} offered beside it")
            return Credentials(value.removeprefix(BEARER_PREFIX), subprotocol)
    scheme, _, token = websocket.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return Credentials(token.strip(), subprotocol)
    raise HandshakeRefused("no token offered")


class Connection:
    """Serves one accepted-or-refused WebSocket for one app."""

    def __init__(self, websocket: WebSocket, service: Service) -> None:
        self.websocket = websocket
        self.service = service
        self.settings = service.settings
        self.resources = service.resources
        self.registry = service.registry
        self.metrics = service.metrics

    async def serve(self) -> None:
        """Handshake, then serve until the client or the server closes."""
        try:
            identity, subprotocol = await self._authenticate()
        except HandshakeRefused as refusal:
            log.info("handshake refused: %s", refusal)
            self.metrics.handshakes_refused += 1
            await self.websocket.close()
            return
        await self.websocket.accept(subprotocol=subprotocol)
        self.metrics.connections_accepted += 1
        session = self.registry.open(
            identity.user_id, self.settings.send_queue_size, self.settings.send_timeout_s
        )
        logs.session_id.set(session.id)
        logs.user_id.set(session.user_id)
        log.info("session opened")
        session.send(encode({"type": "welcome", "session": session.id, "user": session.user_id}))
        sender = asyncio.create_task(self._send_loop(session), name=f"send {session.id}")
        receiver = asyncio.create_task(self._receive_loop(session), name=f"recv {session.id}")
        overflow = asyncio.create_task(session.overflowed.wait())
        expiry = asyncio.get_running_loop().call_later(
            max(0.0, identity.expires_at - time.time()), session.close, CloseCode.TOKEN_EXPIRED
        )
        try:
            done, _ = await asyncio.wait(
                {sender, receiver, overflow}, return_when=asyncio.FIRST_COMPLETED
            )
            if session.overflowed.is_set():
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
            for task in (sender, receiver, overflow):
                task.cancel()
            await asyncio.wait({sender, receiver, overflow})
            self.metrics.frames_dropped += session.dropped
            self.service.feeds.unsubscribe_all(session)
            self.registry.drain(session)
            log.info("session closed")

    async def _authenticate(self) -> tuple[Identity, str | None]:
        if self.service.draining:
            raise HandshakeRefused("the service is draining")
        origin = self.websocket.headers.get("origin")
        if origin is not None and origin not in self.settings.allowed_origins:
            raise HandshakeRefused(f"origin {origin!r} is not allowed")
        presented = credentials(self.websocket)
        try:
            identity = self.resources.keyring.verify(presented.token)
        except AuthError as error:
            raise HandshakeRefused(str(error)) from None
        if not await store.is_active_user(self.resources.db, identity.user_id):
            raise HandshakeRefused(f"user {identity.user_id!r} is unknown or disabled")
        return identity, presented.subprotocol

    async def _receive_loop(self, session: Session) -> bool:
        """Handle requests until the client disconnects (True) or handling fails (False)."""
        try:
            while True:
                await session.wait_for_room()
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    self.metrics.closes[message.get("code", 1005)] += 1
                    return True
                self.metrics.messages_received += 1
                text = message.get("text")
                if text is None:
                    session.close(CloseCode.UNSUPPORTED_DATA)
                    continue
                try:
                    reply = await handle(self.service, session, parse_request(text))
                except ProtocolError as error:
                    reply = error_frame(error)
                session.reply(encode(reply))
        except SlowConsumer:
            return True  # the session overflowed: serve() closes it with 4008
        except Exception:
            log.exception("session failed")
            session.close(CloseCode.INTERNAL_ERROR)
            return False

    async def _send_loop(self, session: Session) -> None:
        while True:
            item = await session.next_outgoing()
            if isinstance(item, CloseCode):
                await self._close(item)
                return
            await self.websocket.send_text(item)
            self.metrics.messages_sent += 1

    async def _close(self, code: CloseCode) -> None:
        """Send a close frame, unless the client is too stuck to take even that in time."""
        self.metrics.closes[code] += 1
        closing = asyncio.create_task(self.websocket.close(code))
        done, _ = await asyncio.wait({closing}, timeout=CLOSE_TIMEOUT_S)
        if not done:
            closing.cancel()
