"""The AsyncAPI 3.0 document of the WebSocket protocol, built from protocol.py so the two agree.

The app serves it at `/asyncapi.json`; client teams generate docs and code from it, and the test
suite holds the server to it: every frame a test client sends or receives must match its schemas.
It describes the service as the application: it receives requests and sends their replies, the
welcome and the channels' messages. AsyncAPI has no field for close codes: they are listed in
the socket channel's description and, for programs, in its `x-close-codes` extension.

Every object is open, as the document's rule for clients says: the server ignores request fields
it does not know, and clients ignore frame fields they do not know, so a later release may add
some. The suite holds the server to more: its harness (tests/harness/contract.py) checks every
frame the server sends against the frame's schema closed to the documented fields, so a field the
server starts sending must be documented here first.

Each message and its payload have a `title`, the name code generators give its model: the
message's name capitalised (`Subscribe`, `Welcome`, `PublishAck`, `RecoveredAck`), except the
error reply's, `ErrorReply`, since a model named `Error` would shadow JavaScript's own. Every
`const` has its `type` beside it, which generators need to type the field.

The five acks share `"type": "ack"`; their `ack`, a `const` in each, says what was acknowledged.
The schema `Ack` is their union with `ack` as its `discriminator` (in AsyncAPI, the property's
name): `make client-ts` writes it as the TypeScript union `SubscribeAck | ... | PublishAck`, which
a switch on `ack` narrows, and datamodel-code-generator makes it a Pydantic union that picks the
model by `ack`.
`Ack` has only `oneOf` and the discriminator: declaring `ack` there too, as the specification
asks of a parent schema, makes both tools add an enum and a subclass per ack. Its values are the
wire's (`subscribed`), not the schema names the specification names as values; both tools go by
each member's `const`.
"""

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from .protocol import (
    BEARER_PREFIX,
    CHANNEL_NAME,
    MAX_EPOCH_LENGTH,
    PROTOCOL,
    UNBORN_EPOCH,
    Acknowledged,
    CloseCode,
    ErrorCode,
    RecoveryFailure,
)

Schema = dict[str, Any]

ASYNCAPI_VERSION = "3.0.0"
CHANNEL = "socket"
"""The one AsyncAPI channel: the WebSocket at /ws, which carries every frame."""

ERROR_MEANINGS: dict[ErrorCode, str] = {
    ErrorCode.MALFORMED_JSON: "the frame is not JSON",
    ErrorCode.INVALID_MESSAGE: "not a JSON object, or a bad `id` or `since`",
    ErrorCode.INVALID_UNICODE: 'a string holds a lone surrogate such as "\\ud800"',
    ErrorCode.UNKNOWN_TYPE: "`type` names no request",
    ErrorCode.MISSING_FIELD: "a required field is absent",
    ErrorCode.INVALID_CHANNEL: "the channel name breaks the naming rule",
    ErrorCode.INVALID_DATA: "`data` cannot be stored (usually a NUL character, \\u0000)",
    ErrorCode.FORBIDDEN: "not your channel, or your account was deleted",
    ErrorCode.TOO_MANY_CHANNELS: "the connection already holds MAX_CHANNELS subscriptions",
    ErrorCode.RATE_LIMITED: "PUBLISH_LIMIT or the connection's REQUEST_RATE; the message says "
    "when to retry",
    ErrorCode.UNAVAILABLE: "Postgres or Redis could not serve the request (down, restarting, "
    "read-only); the message says when to retry, and the connection stays usable",
}

RECOVERY_MEANINGS: dict[RecoveryFailure, str] = {
    RecoveryFailure.EPOCH_CHANGED: "history was deleted since that position was handed out",
    RecoveryFailure.UNKNOWN_OFFSET: "the offset is beyond the channel's newest message in that "
    "epoch",
    RecoveryFailure.HISTORY_LIMIT: "more than HISTORY_LIMIT messages were missed",
}

CLOSE_MEANINGS: dict[CloseCode, str] = {
    CloseCode.UNSUPPORTED_DATA: "a binary frame was sent; the protocol is text only. Do not "
    "reconnect: fix the client",
    CloseCode.MESSAGE_TOO_BIG: "a frame exceeded MAX_MESSAGE_BYTES. Do not reconnect: send "
    "smaller frames",
    CloseCode.INTERNAL_ERROR: "unexpected server error, or no answer to the server's pings. "
    "Reconnect with backoff",
    CloseCode.SERVICE_RESTART: "the service is restarting. Reconnect with backoff",
    CloseCode.TOKEN_EXPIRED: "the token expired during the session. Reconnect with a fresh token",
    CloseCode.ACCOUNT_REVOKED: "the user was disabled or deleted. Do not reconnect",
    CloseCode.SLOW_CONSUMER: "the client stopped reading and frames were dropped. Reconnect and "
    "resubscribe with `since`",
    CloseCode.TOO_MANY_REQUESTS: "the client kept sending past its request budget after "
    "`rate_limited`. Reconnect after a pause, sending less",
}

WEBSOCKET_CLOSES: dict[int, tuple[str, str]] = {
    1000: ("NORMAL_CLOSURE", "the client closed; the server answers with the same code"),
    1007: ("INVALID_PAYLOAD", "a text frame was not valid UTF-8. Do not reconnect: fix the client"),
}
"""Close codes the WebSocket layer sends on the service's behalf: (name, meaning)."""

TITLES = {"error": "ErrorReply"}
"""The titles that are not the message's name capitalised."""


def document(host: str = "127.0.0.1:8000", protocol: str = "ws") -> dict[str, Any]:
    """The AsyncAPI document, for a server at `host` spoken to over `protocol` (ws or wss)."""
    messages = _messages()
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": f"{__package__} WebSocket protocol",
            "version": PROTOCOL,
            "description": (
                "JSON text frames over one WebSocket. Every request may carry an `id` (a string "
                "or an integer), echoed in its reply; requests are answered in the order they "
                "were sent, and a client may pipeline them. A reply is one of those its "
                "request's operation lists: `type` tells them apart, and for acks, `ack`, which "
                "names what was acknowledged (the schema `Ack` is their union). Clients should "
                "ignore fields they do not know: a later release of the protocol may add some."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "service": {
                "host": host,
                "protocol": protocol,
                "description": "This instance of the service.",
                "security": [
                    {"$ref": "#/components/securitySchemes/bearerSubprotocol"},
                    {"$ref": "#/components/securitySchemes/bearerHeader"},
                ],
            }
        },
        "channels": {CHANNEL: _channel(list(messages))},
        "operations": _operations(),
        "components": {
            "schemas": _schemas() | {"Ack": _ack_union(messages)},
            "messages": messages,
            "correlationIds": {
                "requestId": {
                    "description": "A reply echoes the `id` of the request it answers.",
                    "location": "$message.payload#/id",
                }
            },
            "securitySchemes": _security_schemes(),
        },
    }


async def serve_document(request: Request) -> JSONResponse:
    """GET /asyncapi.json: the document, naming the server as the client reached it."""
    protocol = "wss" if request.url.scheme == "https" else "ws"
    return JSONResponse(document(request.url.netloc, protocol))


def close_codes() -> list[dict[str, Any]]:
    """Every close code the server may send: code, name and meaning, in code order."""
    codes = {int(code): (code.name, CLOSE_MEANINGS[code]) for code in CloseCode}
    codes |= WEBSOCKET_CLOSES
    return [
        {"code": code, "name": name, "description": meaning}
        for code, (name, meaning) in sorted(codes.items())
    ]


def _channel(messages: list[str]) -> dict[str, Any]:
    closes = close_codes()
    rows = "\n".join(
        f"| {close['code']} | `{close['name']}` | {close['description']} |" for close in closes
    )
    return {
        "address": "/ws",
        "title": "The WebSocket",
        "description": (
            f"Offer the `{PROTOCOL}` subprotocol. The server closes the connection with one of "
            "these codes; a client so stuck that even the close frame cannot reach it sees "
            "1006.\n\n| code | name | meaning |\n|---|---|---|\n" + rows
        ),
        "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in messages},
        "bindings": {
            "ws": {
                "method": "GET",
                "headers": {
                    "type": "object",
                    "properties": {
                        "Sec-WebSocket-Protocol": {
                            "type": "string",
                            "description": (
                                f"`{PROTOCOL}`, and for browsers `{BEARER_PREFIX}<token>` beside "
                                f"it; the server answers `{PROTOCOL}`, never the token."
                            ),
                        },
                        "Authorization": {
                            "type": "string",
                            "description": "`Bearer <token>`, for clients that can set headers.",
                        },
                    },
                },
                "bindingVersion": "0.1.0",
            }
        },
        "x-close-codes": closes,
    }


def _operations() -> dict[str, Any]:
    def receive(request: str, summary: str, replies: list[str]) -> dict[str, Any]:
        return {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{CHANNEL}"},
            "summary": summary,
            "messages": [_in_channel(request)],
            "reply": {
                "channel": {"$ref": f"#/channels/{CHANNEL}"},
                "messages": [_in_channel(reply) for reply in [*replies, "error"]],
            },
        }

    def send(message: str, summary: str) -> dict[str, Any]:
        return {
            "action": "send",
            "channel": {"$ref": f"#/channels/{CHANNEL}"},
            "summary": summary,
            "messages": [_in_channel(message)],
        }

    return {
        "subscribe": receive(
            "subscribe",
            "Join a channel's live messages; with `since`, first replay those missed (sent "
            "before the ack).",
            ["subscribeAck", "recoveredAck", "recoveryFailedAck"],
        ),
        "unsubscribe": receive("unsubscribe", "Leave a channel.", ["unsubscribeAck"]),
        "publish": receive(
            "publish",
            "Store a message at the channel's next offset and send it out.",
            ["publishAck"],
        ),
        "ping": receive("ping", "Check that the connection answers.", ["pong"]),
        "welcome": send("welcome", "The first frame after the handshake."),
        "deliver": send("message", "A message published on a channel the client subscribed to."),
    }


def _in_channel(message: str) -> dict[str, str]:
    return {"$ref": f"#/channels/{CHANNEL}/messages/{message}"}


def _schemas() -> dict[str, Schema]:
    return {
        "RequestId": {
            "type": ["string", "integer", "null"],
            "description": "Chosen by the client; strings must be well-formed Unicode.",
        },
        "Channel": {
            "type": "string",
            "pattern": f"^{CHANNEL_NAME.pattern}$",
            "description": (
                "1-128 letters, digits or `_.:-`. `user:<id>` is the personal channel of that "
                "user; every other channel is public."
            ),
        },
        "Offset": {"type": "integer", "minimum": 0},
        "Epoch": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_EPOCH_LENGTH,
            "description": (
                "Names one unbroken run of a channel's history; it changes when stored messages "
                f'are deleted. "{UNBORN_EPOCH}" for a channel nobody has published to.'
            ),
        },
        "Position": {
            "type": "object",
            "description": "A place in a channel's history: offset 0 is before its first message.",
            "required": ["offset", "epoch"],
            "properties": {"offset": _ref("Offset"), "epoch": _ref("Epoch")},
        },
        "UserId": {"type": "string", "format": "uuid"},
        "ErrorCode": _enum(
            "Why a request was refused; the connection stays open.", ErrorCode, ERROR_MEANINGS
        ),
        "RecoveryFailure": _enum(
            "Why a subscribe with `since` could not replay everything missed.",
            RecoveryFailure,
            RECOVERY_MEANINGS,
        ),
    }


def _ack_union(messages: dict[str, Any]) -> Schema:
    """Every ack's payload, told apart by `ack`."""
    acks = [
        name
        for name, message in messages.items()
        if message["payload"]["properties"]["type"]["const"] == "ack"
    ]
    return {
        "title": "Ack",
        "description": "A request carried out: `ack` names what was acknowledged.",
        "oneOf": [{"$ref": f"#/components/messages/{name}/payload"} for name in acks],
        "discriminator": "ack",
    }


def _enum(description: str, codes: type[StrEnum], meanings: Mapping[Any, str]) -> Schema:
    """Every member of `codes`; one without a meaning stops the build with a KeyError."""
    lines = "\n".join(f"- `{code}`: {meanings[code]}" for code in codes)
    return {
        "type": "string",
        "enum": [code.value for code in codes],
        "description": f"{description}\n\n{lines}",
    }


def _messages() -> dict[str, Any]:
    """Every message, by the name the channel and the operations refer to it by."""
    position = _ref("Position")
    epoch = "9f2c0e1a7b3d5c68"
    user = "6f1c2b0e-4a7d-4c7e-9a53-2f0d8c1b9e44"
    messages = {
        "subscribe": _request(
            "subscribe",
            "Subscribe, replaying what came after `since` when given.",
            {"channel": _ref("Channel"), "since": {"anyOf": [{"type": "null"}, position]}},
            ["channel"],
            [
                {"type": "subscribe", "id": 1, "channel": "room:lobby"},
                {
                    "type": "subscribe",
                    "id": 1,
                    "channel": "room:lobby",
                    "since": {"offset": 38, "epoch": epoch},
                },
            ],
        ),
        "unsubscribe": _request(
            "unsubscribe",
            "Unsubscribe.",
            {"channel": _ref("Channel")},
            ["channel"],
            [{"type": "unsubscribe", "id": 2, "channel": "room:lobby"}],
        ),
        "publish": _request(
            "publish",
            "Publish any JSON value on a channel.",
            {"channel": _ref("Channel"), "data": {"description": "Any JSON value."}},
            ["channel", "data"],
            [{"type": "publish", "id": 3, "channel": "room:lobby", "data": {"text": "hi"}}],
        ),
        "ping": _request("ping", "Ping.", {}, [], [{"type": "ping", "id": 4}]),
        "welcome": _frame(
            "welcome",
            "Names the session and the user the token identified.",
            {"session": {"type": "string", "minLength": 1}, "user": _ref("UserId")},
            [{"type": "welcome", "session": "5b0c3f8e9d2a4e71b6c0f4a2d8e1c935", "user": user}],
        ),
        "subscribeAck": _ack(
            Acknowledged.SUBSCRIBED,
            "Subscribed, live from `position`.",
            {"position": position},
            [
                {
                    "type": "ack",
                    "ack": "subscribed",
                    "id": 1,
                    "position": {"offset": 41, "epoch": epoch},
                }
            ],
        ),
        "recoveredAck": _ack(
            Acknowledged.RECOVERED,
            "Subscribed with `since`: the `replayed` missed messages came before this ack, and "
            "the client is live from `position`.",
            {
                "position": position,
                "recovered": _const(True),
                "replayed": {"type": "integer", "minimum": 0},
            },
            [
                {
                    "type": "ack",
                    "ack": "recovered",
                    "id": 1,
                    "position": {"offset": 41, "epoch": epoch},
                    "recovered": True,
                    "replayed": 3,
                }
            ],
        ),
        "recoveryFailedAck": _ack(
            Acknowledged.RECOVERY_FAILED,
            "Subscribed with `since`, but the missed messages could not all be replayed: the "
            "client is live from `position` and must reload its state from the source of truth.",
            {
                "position": position,
                "recovered": _const(False),
                "replayed": {"type": "integer", "minimum": 0},
                "reason": _ref("RecoveryFailure"),
            },
            [
                {
                    "type": "ack",
                    "ack": "recovery_failed",
                    "id": 1,
                    "position": {"offset": 41, "epoch": "04d1b7e9c3a25f80"},
                    "recovered": False,
                    "replayed": 0,
                    "reason": "epoch_changed",
                }
            ],
        ),
        "unsubscribeAck": _ack(
            Acknowledged.UNSUBSCRIBED,
            "Unsubscribed.",
            {},
            [{"type": "ack", "ack": "unsubscribed", "id": 2}],
        ),
        "publishAck": _ack(
            Acknowledged.PUBLISHED,
            "Stored (durable) at `offset`, and sent out to the channel's subscribers.",
            {"offset": {"type": "integer", "minimum": 1}, "epoch": _ref("Epoch")},
            [{"type": "ack", "ack": "published", "id": 3, "offset": 42, "epoch": epoch}],
        ),
        "pong": _reply("pong", "Answers a ping.", {}, [{"type": "pong", "id": 4}]),
        "error": _reply(
            "error",
            "A request was refused; the connection stays open. A frame that is not a request "
            "at all gets one too, with the `id` it carried if that was valid, else null.",
            {"code": _ref("ErrorCode"), "message": {"type": "string"}},
            [{"type": "error", "id": 3, "code": "forbidden", "message": "not allowed on 'x'"}],
        ),
        "message": _frame(
            "message",
            "A message published on a channel, at its offset; live messages arrive in offset "
            "order, once each.",
            {
                "channel": _ref("Channel"),
                "offset": {"type": "integer", "minimum": 1},
                "epoch": _ref("Epoch"),
                "sender": _ref("UserId"),
                "data": {"description": "The JSON value the sender published."},
                "sent_at": {"type": "string", "format": "date-time"},
            },
            [
                {
                    "type": "message",
                    "channel": "room:lobby",
                    "offset": 42,
                    "epoch": epoch,
                    "sender": user,
                    "data": {"text": "hi"},
                    "sent_at": "2026-01-01T12:00:00.123456+00:00",
                }
            ],
        ),
    }
    return {name: _named(name, message) for name, message in messages.items()}


def _named(name: str, message: dict[str, Any]) -> dict[str, Any]:
    title = TITLES.get(name, name[0].upper() + name[1:])
    return {
        "name": name,
        "title": title,
        **message,
        "payload": {"title": title, **message["payload"]},
    }


def _request(
    kind: str,
    summary: str,
    fields: dict[str, Schema],
    required: list[str],
    examples: list[dict[str, Any]],
) -> dict[str, Any]:
    payload = {
        "type": "object",
        "required": ["type", *required],
        "properties": {"type": _const(kind), "id": _ref("RequestId"), **fields},
    }
    message = _message(summary, payload, examples)
    return {**message, "correlationId": {"$ref": "#/components/correlationIds/requestId"}}


def _reply(
    kind: str, summary: str, fields: dict[str, Schema], examples: list[dict[str, Any]]
) -> dict[str, Any]:
    message = _frame(kind, summary, {"id": _ref("RequestId"), **fields}, examples)
    return {**message, "correlationId": {"$ref": "#/components/correlationIds/requestId"}}


def _ack(
    acknowledged: Acknowledged,
    summary: str,
    fields: dict[str, Schema],
    examples: list[dict[str, Any]],
) -> dict[str, Any]:
    """The reply to a request carried out: `ack` says which of the five kinds it is."""
    return _reply("ack", summary, {"ack": _const(acknowledged.value), **fields}, examples)


def _frame(
    kind: str, summary: str, fields: dict[str, Schema], examples: list[dict[str, Any]]
) -> dict[str, Any]:
    """A server frame: every field present."""
    payload = {
        "type": "object",
        "required": ["type", *fields],
        "properties": {"type": _const(kind), **fields},
    }
    return _message(summary, payload, examples)


def _message(summary: str, payload: Schema, examples: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "summary": summary,
        "payload": payload,
        "examples": [{"payload": example} for example in examples],
    }


def _const(value: str | bool) -> Schema:
    return {"type": "boolean" if isinstance(value, bool) else "string", "const": value}


def _ref(schema: str) -> Schema:
    return {"$ref": f"#/components/schemas/{schema}"}


def _security_schemes() -> dict[str, Any]:
    return {
        "bearerSubprotocol": {
            "type": "httpApiKey",
            "in": "header",
            "name": "Sec-WebSocket-Protocol",
            "description": (
                f"Browsers cannot set headers on a WebSocket: they offer two subprotocols, "
                f'`{PROTOCOL}` and `{BEARER_PREFIX}<token>` (`new WebSocket(url, ["{PROTOCOL}", '
                f'"{BEARER_PREFIX}" + token])`). The token is a JWT whose `sub` is a user id.'
            ),
        },
        "bearerHeader": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "`Authorization: Bearer <token>`, for clients that can set headers.",
        },
    }
