"""What the server does for each request: one function per request type.

A new request type is a dataclass in protocol.py and a case in `handle`, which ends in
`assert_never`: a request type without a handler fails the type check instead of replying null.
"""

import logging
import time
from typing import assert_never

import psycopg
import psycopg.errors
from redis import exceptions as redis_errors

from . import logs, ratelimit, store
from .channels import may_use
from .metrics import Backend, unavailable_backend
from .protocol import (
    Acknowledged,
    ErrorCode,
    Frame,
    Ping,
    ProtocolError,
    Publish,
    Request,
    RequestId,
    Subscribe,
    Unsubscribe,
    ack_frame,
    encode,
    message_frame,
    position_field,
)
from .service import Service
from .sessions import Session
{%- if cookiecutter.tracing == "otel" %}
from .tracing import traced_publish
{%- endif %}

log = logging.getLogger(__name__)

UNAVAILABLE_RETRY_S = 1.0
"""The retry hint of an `unavailable` error: about what a restart or a failover takes."""


async def handle(service: Service, session: Session, request: Request) -> Frame:
    """Carry out one request; return its reply, or raise ProtocolError. A backend outage costs
    the request (`unavailable`), not the connection. What is logged meanwhile names the
    request's channel."""
    channel = logs.channel.set(None if isinstance(request, Ping) else request.channel)
    try:
        match request:
            case Subscribe():
                return await subscribe(service, session, request)
            case Unsubscribe():
                return unsubscribe(service, session, request)
            case Publish():
                return await publish(service, session, request)
            case Ping():
                return {"type": "pong", "id": request.id}
            case _:
                assert_never(request)
    except Exception as error:
        backend = unavailable_backend(error)
        if backend is None:
            raise
        raise _unavailable(service, backend, error, request.id) from None
    finally:
        logs.channel.reset(channel)


def _unavailable(
    service: Service, backend: Backend, error: Exception, request_id: RequestId
) -> ProtocolError:
    """The reply to a request that met an outage of `backend`, counted and logged."""
    service.metrics.backend_error(backend, "request")
    # A few lines per backend a minute, however many requests an outage fails.
    if logs.allowed(backend):
        log.warning("%s is unavailable; a request was refused: %r", backend, error)
    return ProtocolError(
        ErrorCode.UNAVAILABLE,
        f"storage is unavailable; retry in {UNAVAILABLE_RETRY_S:.1f}s",
        request_id,
    )


async def subscribe(service: Service, session: Session, request: Subscribe) -> Frame:
    """Join the channel's live messages, after replaying those missed since `since`."""
    _authorize(session, request.channel, request.id)
    limit = service.settings.max_channels
    if request.channel not in session.positions and len(session.positions) >= limit:
        raise ProtocolError(
            ErrorCode.TOO_MANY_CHANNELS, f"at most {limit} channels per connection", request.id
        )
    subscription = await service.feeds.subscribe(session, request.channel, request.since)
    position = position_field(subscription.position)
    if request.since is None:
        return ack_frame(request.id, Acknowledged.SUBSCRIBED, position=position)
    service.metrics.replayed.observe(subscription.replayed)
    replay = {"position": position, "replayed": subscription.replayed}
    if subscription.failure is None:
        return ack_frame(request.id, Acknowledged.RECOVERED, recovered=True, **replay)
    return ack_frame(
        request.id,
        Acknowledged.RECOVERY_FAILED,
        recovered=False,
        reason=subscription.failure,
        **replay,
    )


def unsubscribe(service: Service, session: Session, request: Unsubscribe) -> Frame:
    service.feeds.unsubscribe(session, request.channel)
    return ack_frame(request.id, Acknowledged.UNSUBSCRIBED)

{% if cookiecutter.tracing == "otel" %}
@traced_publish
{%- endif %}
async def publish(service: Service, session: Session, request: Publish) -> Frame:
    """Store the message at the channel's next offset, then stream it to every instance."""
    started = time.perf_counter()
    _authorize(session, request.channel, request.id)
    resources, settings = service.resources, service.settings
    retry_after = await ratelimit.check(
        resources.redis,
        resources.keys,
        session.user_id,
        "publish",
        settings.publish_limit,
        settings.publish_window_s,
    )
    if retry_after is not None:
        raise ProtocolError(
            ErrorCode.RATE_LIMITED, f"too many messages; retry in {retry_after:.1f}s", request.id
        )
    session.hold(request.channel)
    try:
        message = await store.save_message(
            resources.db, request.channel, session.user_id, request.data
        )
    except psycopg.DataError as error:
        if logs.allowed(session.peer):
            log.info("publish refused by Postgres: %s", error)
        raise ProtocolError(
            ErrorCode.INVALID_DATA,
            "`data` cannot be stored (a NUL character, \\u0000, is the usual cause)",
            request.id,
        ) from None
    except psycopg.errors.ForeignKeyViolation:
        # The user was deleted during the session: USER_CHECK_S closes it soon.
        raise ProtocolError(
            ErrorCode.FORBIDDEN, "your account no longer exists", request.id
        ) from None
    try:
        await resources.bus.publish(message.channel, message.offset, encode(message_frame(message)))
    except redis_errors.RedisError as error:
        # Stored all the same: the feeds' position check delivers it from Postgres.
        service.metrics.backend_error("redis", "stream")
        log.warning("message %d of %s not streamed: %s", message.offset, message.channel, error)
    service.metrics.publish_seconds.observe(time.perf_counter() - started)
    return ack_frame(request.id, Acknowledged.PUBLISHED, offset=message.offset, epoch=message.epoch)


def _authorize(session: Session, channel: str, request_id: RequestId) -> None:
    if not may_use(session.user_id, channel):
        raise ProtocolError(ErrorCode.FORBIDDEN, f"not allowed on {channel!r}", request_id)
