"""The WebSocket handshake: who may connect, decided before the connection is accepted.

A refusal is an HTTP response (the WebSocket Denial Response extension), so a client never sees
a connection accepted and then closed: 403 for a bad Origin or token or an unknown user, 429 for
a user or address over its connection cap, 503 while the service drains or cannot reach
Postgres. The body is the refusal's reason code; the details go to the log only.
"""

import uuid
from dataclasses import dataclass, replace
from enum import IntEnum

import psycopg
from starlette.websockets import WebSocket

from .auth import AuthError, Identity
from .protocol import BEARER_PREFIX, PROTOCOL
from .service import Service
{%- if cookiecutter.tracing == "otel" %}
from .tracing import traced_handshake
{%- endif %}

"""A handshake waits this long for Postgres before it is refused with 503."""


class Status(IntEnum):
    FORBIDDEN = 403
    TOO_MANY = 429
    UNAVAILABLE = 503


class HandshakeRefused(Exception):
    """The connection must not be accepted: an HTTP status, a reason code (the response body,
    and a metrics label) and a message for the log."""

    def __init__(self, status: Status, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the client presented at the handshake."""

    token: str
    subprotocol: str | None


@dataclass(frozen=True, slots=True)
class Admitted:
    """A client allowed in: who it is, the subprotocol to answer with, where it connects from."""

    identity: Identity
    subprotocol: str | None
    peer: str


def credentials(websocket: WebSocket) -> Credentials:
    """The token from `Sec-WebSocket-Protocol` (browsers) or `Authorization` (other clients)."""
    offered: list[str] = websocket.scope.get("subprotocols", [])
    subprotocol = PROTOCOL if PROTOCOL in offered else None
    for value in offered:
        if value.startswith(BEARER_PREFIX):
            if subprotocol is None:
                # A browser fails the connection unless we echo one of its offers, and the
                # token itself must never be echoed: so the protocol must be offered too.
                raise HandshakeRefused(
                    Status.FORBIDDEN,
                    "bad_subprotocol",
                    f"a bearer subprotocol needs {PROTOCOL!r} offered beside it",
                )
            return Credentials(value.removeprefix(BEARER_PREFIX), subprotocol)
    scheme, _, token = websocket.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return Credentials(token.strip(), subprotocol)
    raise HandshakeRefused(Status.FORBIDDEN, "no_token", "no token offered")


def peer_of(websocket: WebSocket) -> str:
    """The client's address: the socket's peer, or what a trusted balancer in front of us says
    in `X-Forwarded-For` (FORWARDED_ALLOW_IPS; uvicorn's middleware puts it in the scope)."""
    return websocket.client.host if websocket.client is not None else "unknown"

{% if cookiecutter.tracing == "otel" %}
@traced_handshake
{%- endif %}
async def admit(websocket: WebSocket, service: Service) -> Admitted:
    """Check everything a handshake must pass, cheapest first; raise HandshakeRefused."""
    settings, registry = service.settings, service.registry
    if service.draining:
        raise HandshakeRefused(Status.UNAVAILABLE, "draining", "the service is draining")
    peer = peer_of(websocket)
    if registry.count_from(peer) >= settings.max_connections_per_ip:
        raise HandshakeRefused(
            Status.TOO_MANY, "too_many_connections", f"{peer} has too many connections"
        )
    origin = websocket.headers.get("origin")
    if origin is not None and origin not in settings.allowed_origins:
        raise HandshakeRefused(Status.FORBIDDEN, "origin", f"origin {origin!r} is not allowed")
    presented = credentials(websocket)
    try:
        identity = service.resources.keyring.verify(presented.token, settings.max_token_ttl_s)
    except AuthError as error:
        raise HandshakeRefused(Status.FORBIDDEN, error.reason, str(error)) from None
    try:
        # One spelling per user, so every index of sessions by user agrees with Postgres.
        identity = replace(identity, user_id=str(uuid.UUID(identity.user_id)))
    except ValueError:
        raise HandshakeRefused(
            Status.FORBIDDEN, "unknown_user", f"`sub` {identity.user_id!r} is not a user id"
        ) from None
    if len(registry.sessions_of(identity.user_id)) >= settings.max_connections_per_user:
        raise HandshakeRefused(
            Status.TOO_MANY,
            "too_many_connections",
            f"user {identity.user_id} has too many connections",
        )
    try:
        active = await service.user_checks.is_active(service.resources.db, identity.user_id)
    except (TimeoutError, psycopg.Error) as error:
        service.metrics.backend_error("postgres", "handshake")
        raise HandshakeRefused(
            Status.UNAVAILABLE, "unavailable", f"Postgres did not answer: {error!r}"
        ) from None
    if not active:
        raise HandshakeRefused(
            Status.FORBIDDEN, "unknown_user", f"user {identity.user_id!r} is unknown or disabled"
        )
    return Admitted(identity, presented.subprotocol, peer)
