"""The JSON message protocol spoken over the WebSocket, and the close codes the server uses.

Client -> server (every request may carry an `id`, echoed in the reply):
    {"type": "subscribe", "id": 1, "channel": "room:lobby"}
    {"type": "subscribe", "id": 1, "channel": "room:lobby",
     "since": {"offset": 41, "epoch": "9f2c..."}}                 replay offsets > 41 first
    {"type": "unsubscribe", "id": 2, "channel": "room:lobby"}
    {"type": "publish", "id": 3, "channel": "room:lobby", "data": {...any JSON...}}
    {"type": "ping", "id": 4}
Server -> client:
    {"type": "welcome", "session": "...", "user": "..."}          first frame after accept
    {"type": "ack", "ack": "subscribed", "id": 1, "position": {"offset": 44, "epoch": "9f2c..."}}
    {"type": "ack", "ack": "recovered", "id": 1, "position": {...}, "recovered": true,
     "replayed": 3}                                                 after a replay
    {"type": "ack", "ack": "recovery_failed", "id": 1, "position": {...}, "recovered": false,
     "replayed": 0, "reason": "epoch_changed"}                      the client must reload
    {"type": "ack", "ack": "unsubscribed", "id": 2}
    {"type": "ack", "ack": "published", "id": 3, "offset": 45, "epoch": "9f2c..."}
                                                                   stored and sent out
    {"type": "pong", "id": 4}
    {"type": "message", "channel": "...", "offset": 45, "epoch": "9f2c...", "sender": "...",
     "data": ..., "sent_at": "..."}
    {"type": "error", "id": 3, "code": "forbidden", "message": "..."}   the connection stays open
Every ack's `ack` names what it acknowledges, one value per kind (Acknowledged): `type` alone
does not tell them apart.
"""

import json
import re
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum, StrEnum
from typing import Any

PROTOCOL = "json.v1"
"""The subprotocol clients offer, and the server echoes, in Sec-WebSocket-Protocol."""

BEARER_PREFIX = "bearer."
"""Browsers cannot set headers on a WebSocket, so they offer the token as `bearer.<jwt>`."""

CHANNEL_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
# JSON escapes are the only way a lone surrogate gets into a decoded frame.
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
MAX_EPOCH_LENGTH = 64

UNBORN_EPOCH = "0"
"""The epoch of a channel that has no message yet (real epochs are 16 hex digits)."""

RequestId = str | int | None
Frame = dict[str, Any]

REPLY_TYPES = frozenset({"ack", "pong", "error"})
"""The types of the frames that answer a request, echoing its `id`; all others come unasked."""


class CloseCode(IntEnum):
    """Close codes the server sends, as documented in the README."""

    UNSUPPORTED_DATA = 1003
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TOKEN_EXPIRED = 4001
    ACCOUNT_REVOKED = 4003
    SLOW_CONSUMER = 4008
    TOO_MANY_REQUESTS = 4029


class ErrorCode(StrEnum):
    """Codes of recoverable errors: the server replies and keeps the connection open."""

    MALFORMED_JSON = "malformed_json"
    INVALID_MESSAGE = "invalid_message"
    INVALID_UNICODE = "invalid_unicode"
    UNKNOWN_TYPE = "unknown_type"
    MISSING_FIELD = "missing_field"
    INVALID_CHANNEL = "invalid_channel"
    INVALID_DATA = "invalid_data"
    FORBIDDEN = "forbidden"
    TOO_MANY_CHANNELS = "too_many_channels"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"


class Acknowledged(StrEnum):
    """What an ack acknowledges: its `ack` field, the one that tells the five kinds apart."""

    SUBSCRIBED = "subscribed"
    RECOVERED = "recovered"
    """Subscribed with `since`, after replaying every message missed."""
    RECOVERY_FAILED = "recovery_failed"
    """Subscribed with `since`, but the missed messages could not all be replayed."""
    UNSUBSCRIBED = "unsubscribed"
    PUBLISHED = "published"


class RecoveryFailure(StrEnum):
    """Why a subscribe with `since` could not replay everything the client missed."""

    EPOCH_CHANGED = "epoch_changed"
    """The channel's history was cut (messages deleted) since that position was handed out.
    Offset 0 asks for the whole history, which any epoch can answer while it has no hole."""
    UNKNOWN_OFFSET = "unknown_offset"
    """The offset lies beyond the newest message of the channel in that epoch."""
    HISTORY_LIMIT = "history_limit"
    """More than HISTORY_LIMIT messages were missed."""


class ProtocolError(Exception):
    """A request the server cannot carry out; becomes an `error` reply."""

    def __init__(self, code: ErrorCode, message: str, request_id: RequestId = None) -> None:
        super().__init__(message)
        self.code = code
        self.request_id = request_id


@dataclass(frozen=True, slots=True)
class Position:
    """A place in a channel's history: an offset (0 before the first message) in an epoch."""

    offset: int
    epoch: str


@dataclass(frozen=True, slots=True)
class Message:
    """A published message at its place in its channel."""

    channel: str
    offset: int
    epoch: str
    sender: str
    data: Any
    sent_at: datetime


@dataclass(frozen=True, slots=True)
class Subscribe:
    id: RequestId
    channel: str
    since: Position | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    id: RequestId
    channel: str


@dataclass(frozen=True, slots=True)
class Publish:
    id: RequestId
    channel: str
    data: Any


@dataclass(frozen=True, slots=True)
class Ping:
    id: RequestId


Request = Subscribe | Unsubscribe | Publish | Ping


def parse_request(text: str) -> Request:
    """Turn one text frame into a request, or raise ProtocolError saying what is wrong."""
    body = _json_object(text)
    request_id = _request_id(body)
    if SURROGATE_ESCAPE.search(text) and not _well_formed(body):
        raise ProtocolError(
            ErrorCode.INVALID_UNICODE,
            "strings must be well-formed Unicode (a lone surrogate is not)",
            request_id,
        )
    match body.get("type"):
        case "subscribe":
            return Subscribe(request_id, _channel(body, request_id), _since(body, request_id))
        case "unsubscribe":
            return Unsubscribe(request_id, _channel(body, request_id))
        case "publish":
            if "data" not in body:
                raise ProtocolError(ErrorCode.MISSING_FIELD, "`data` is required", request_id)
            return Publish(request_id, _channel(body, request_id), body["data"])
        case "ping":
            return Ping(request_id)
        case None:
            raise ProtocolError(ErrorCode.MISSING_FIELD, "`type` is required", request_id)
        case other:
            raise ProtocolError(
                ErrorCode.UNKNOWN_TYPE, f"unknown type {str(other)[:40]!r}", request_id
            )


def request_id(text: str) -> RequestId:
    """The frame's `id` if it has a valid one, else None: for replies to frames not parsed."""
    try:
        return _request_id(_json_object(text))
    except ProtocolError:
        return None


def _json_object(text: str) -> dict[str, Any]:
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError(ErrorCode.MALFORMED_JSON, "the frame is not valid JSON") from None
    if not isinstance(body, dict):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "a request must be a JSON object")
    return body


def _request_id(body: dict[str, Any]) -> RequestId:
    """The request's id, checked before anything else: every reply echoes it."""
    request_id = body.get("id")
    if request_id is None or (isinstance(request_id, int) and not isinstance(request_id, bool)):
        return request_id
    if isinstance(request_id, str) and _well_formed(request_id):
        return request_id
    raise ProtocolError(
        ErrorCode.INVALID_MESSAGE, "`id` must be a string of well-formed Unicode or an integer"
    )


def _well_formed(value: Any) -> bool:
    """Whether every string in a decoded JSON value can be encoded as UTF-8."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, RecursionError):
        return False
    return True


def _channel(body: dict[str, Any], request_id: RequestId) -> str:
    if "channel" not in body:
        raise ProtocolError(ErrorCode.MISSING_FIELD, "`channel` is required", request_id)
    channel = body["channel"]
    if not isinstance(channel, str) or not CHANNEL_NAME.fullmatch(channel):
        raise ProtocolError(
            ErrorCode.INVALID_CHANNEL,
            "a channel name is 1-128 letters, digits or `_.:-`",
            request_id,
        )
    return channel


def _since(body: dict[str, Any], request_id: RequestId) -> Position | None:
    since = body.get("since")
    if since is None:
        return None
    offset = since.get("offset") if isinstance(since, dict) else None
    epoch = since.get("epoch") if isinstance(since, dict) else None
    if (
        not isinstance(offset, int)
        or isinstance(offset, bool)
        or offset < 0
        or not isinstance(epoch, str)
        or not 0 < len(epoch) <= MAX_EPOCH_LENGTH
    ):
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE,
            '`since` must be a position: {"offset": integer >= 0, "epoch": string}',
            request_id,
        )
    return Position(offset, epoch)


def encode(frame: dict[str, Any]) -> str:
    """Serialise a server frame; compact, since it may be fanned out to many connections."""
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def error_frame(error: ProtocolError) -> Frame:
    return {"type": "error", "id": error.request_id, "code": error.code, "message": str(error)}


def ack_frame(request_id: RequestId, acknowledged: Acknowledged, **fields: Any) -> Frame:
    return {"type": "ack", "ack": acknowledged, "id": request_id, **fields}


def position_field(position: Position) -> dict[str, Any]:
    return {"offset": position.offset, "epoch": position.epoch}


def message_frame(message: Message) -> Frame:
    """The frame subscribers receive for a published message."""
    return {
        "type": "message",
        "channel": message.channel,
        "offset": message.offset,
        "epoch": message.epoch,
        "sender": message.sender,
        "data": message.data,
        "sent_at": message.sent_at.isoformat(),
    }
