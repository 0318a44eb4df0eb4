"""The AsyncAPI document: served by the app, complete, and in agreement with `parse_request`.

The harness holds every frame of the suite to the document (harness/contract.py). These tests
hold the document to protocol.py and the README, and the contract to what it must refuse.
"""

import json
import re
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest

from {{ cookiecutter.package_name }}.asyncapi import close_codes, document
from {{ cookiecutter.package_name }}.protocol import (
    REPLY_TYPES,
    SURROGATE_ESCAPE,
    Acknowledged,
    CloseCode,
    ErrorCode,
    ProtocolError,
    RecoveryFailure,
    Request,
    encode,
    parse_request,
)

from harness.contract import ContractBroken, contract
from harness.corpus import malformed_frames
from harness.live import LiveApp
from harness.users import User
from harness.wsclient import WsClient

README = Path(__file__).resolve().parent.parent / "README.md"
DOCUMENT = document()
MESSAGES: dict[str, Any] = DOCUMENT["components"]["messages"]
REQUEST_TYPES = {request.__name__.lower() for request in get_args(Request)}
POSITION = {"offset": 4, "epoch": "9f2c0e1a7b3d5c68"}
USER = "6f1c2b0e-4a7d-4c7e-9a53-2f0d8c1b9e44"
MESSAGE = {
    "type": "message",
    "channel": "room:a",
    "offset": 5,
    "epoch": "9f2c0e1a7b3d5c68",
    "sender": USER,
    "data": None,
    "sent_at": "2026-01-01T12:00:00+00:00",
}
EDGE_REQUESTS = [
    '{"type": "ping"}',
    '{"type": "ping", "id": null}',
    '{"type": "ping", "id": -7, "unknown": ["ignored"]}',
    '{"type": "ping", "id": 1.0}',
    '{"type": "subscribe", "channel": "' + "a" * 128 + '"}',
    '{"type": "subscribe", "channel": "' + "a" * 129 + '"}',
    '{"type": "subscribe", "channel": "a", "since": null}',
    '{"type": "subscribe", "channel": "a", "since": {"offset": 0, "epoch": "' + "e" * 64 + '"}}',
    '{"type": "subscribe", "channel": "a", "since": {"offset": 0, "epoch": "' + "e" * 65 + '"}}',
    '{"type": "subscribe", "channel": "a", "since": {"offset": 0, "epoch": ""}}',
    '{"type": "subscribe", "channel": "a", "since": {"offset": 1.0, "epoch": "e"}}',
    '{"type": "publish", "channel": "a", "data": null}',
    '{"type": "unsubscribe", "channel": "a", "data": 1}',
]
"""Requests at the edges of each rule, beside the corpus of malformed ones."""


async def test_the_app_serves_the_document_naming_itself_as_the_server(shared_app: LiveApp) -> None:
    base_url = shared_app.http_url
    async with httpx.AsyncClient(base_url=base_url) as client:
        response = await client.get("/asyncapi.json")
    assert response.status_code == 200
    assert response.json() == document(base_url.removeprefix("http://"), "ws")


def test_the_document_lists_every_request_type_error_code_and_recovery_failure() -> None:
    schemas = DOCUMENT["components"]["schemas"]
    assert set(contract().requests) == REQUEST_TYPES
    assert schemas["ErrorCode"]["enum"] == [code.value for code in ErrorCode]
    assert schemas["RecoveryFailure"]["enum"] == [failure.value for failure in RecoveryFailure]


def test_the_document_and_the_readme_list_the_same_close_codes() -> None:
    documented = [close["code"] for close in DOCUMENT["channels"]["socket"]["x-close-codes"]]
    assert documented == [close["code"] for close in close_codes()]
    assert set(CloseCode) <= set(documented)
    section = README.read_text("utf-8").split("## Close codes", 1)[1].split("\n## ", 1)[0]
    in_readme = {int(code) for code in re.findall(r"^\| (\d{4}) \|", section, re.MULTILINE)}
    assert in_readme == set(documented)


def test_the_replies_are_the_frames_that_echo_a_request_id() -> None:
    reply_types = set().union(*contract().replies.values())
    assert reply_types == REPLY_TYPES
    for by_type in contract().replies.values():
        for messages in by_type.values():
            assert all("id" in message.required for message in messages)
    assert set(contract().server_frames) - REPLY_TYPES == {"welcome", "message"}


def test_every_payload_is_titled_for_generators_and_every_const_has_its_type() -> None:
    titles = [message["payload"].get("title") for message in MESSAGES.values()]
    assert titles == [message.get("title") for message in MESSAGES.values()]
    assert all(title and title.isidentifier() and title[0].isupper() for title in titles)
    assert len(set(titles)) == len(titles)
    assert not set(titles) & {"Error", "Object", "String", "Number", "Boolean"}
    untyped = [
        path for path, schema in _schemas(DOCUMENT) if "const" in schema and "type" not in schema
    ]
    assert not untyped


def test_the_published_objects_are_open_as_clients_are_told_to_ignore_new_fields() -> None:
    assert "ignore fields they do not know" in DOCUMENT["info"]["description"]
    closed = [path for path, schema in _schemas(DOCUMENT) if "additionalProperties" in schema]
    assert not closed


def test_the_replies_to_each_request_are_told_apart_by_a_field_each_pins() -> None:
    for operation in DOCUMENT["operations"].values():
        if operation["action"] != "receive":
            continue
        names = [
            reference["$ref"].rsplit("/", 1)[-1] for reference in operation["reply"]["messages"]
        ]
        payloads = [_inlined(MESSAGES[name]["payload"]) for name in names]
        for first, (name, payload) in enumerate(zip(names, payloads, strict=True)):
            for other, other_payload in zip(names[first + 1 :], payloads[first + 1 :], strict=True):
                assert _told_apart(payload, other_payload), f"{name} and {other}"


def test_the_acks_are_told_apart_by_ack_the_discriminator_of_their_union() -> None:
    acks = {
        name: message["payload"]
        for name, message in MESSAGES.items()
        if message["payload"]["properties"]["type"]["const"] == "ack"
    }
    union = DOCUMENT["components"]["schemas"]["Ack"]
    assert union["discriminator"] == "ack"
    assert union["oneOf"] == [{"$ref": f"#/components/messages/{name}/payload"} for name in acks]
    assert all("ack" in payload["required"] for payload in acks.values())
    values = [payload["properties"]["ack"]["const"] for payload in acks.values()]
    assert sorted(values) == sorted(Acknowledged)


@pytest.mark.parametrize("name", list(MESSAGES))
def test_each_example_is_a_frame_of_its_own_message(name: str) -> None:
    for example in MESSAGES[name]["examples"]:
        frame = example["payload"]
        if frame["type"] in REQUEST_TYPES:
            assert contract().check_request(frame) == name
            assert type(parse_request(json.dumps(frame))).__name__.lower() == frame["type"]
        else:
            assert contract().check_server_frame(frame) == name


def test_the_request_schemas_refuse_what_parse_request_refuses() -> None:
    examples = [
        json.dumps(example["payload"])
        for message in MESSAGES.values()
        for example in message["examples"]
        if example["payload"]["type"] in REQUEST_TYPES
    ]
    disagreements = []
    for text in [*malformed_frames(), *EDGE_REQUESTS, *examples]:
        parsed, allowed = _parses(text), _allowed(text)
        if parsed != allowed and not (allowed and _beyond_json_schema(text)):
            disagreements.append(f"parse_request {parsed}, schema {allowed}: {text[:100]}")
    assert not disagreements


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "pong", "id": 1, "undocumented": True},
        {"type": "ack", "ack": "subscribed", "id": 1, "position": {**POSITION, "undocumented": 1}},
        {"type": "ack", "ack": "subscribed", "id": 1, "position": {"offset": -1, "epoch": "0"}},
        {"type": "ack", "id": 1, "position": POSITION},
        {"type": "ack", "ack": "published", "id": 1, "position": POSITION},
        {"type": "ack", "ack": "teleported", "id": 1},
        {
            "type": "ack",
            "ack": "recovered",
            "id": 1,
            "position": POSITION,
            "recovered": True,
            "replayed": 1,
            "reason": "epoch_changed",
        },
        {
            "type": "ack",
            "ack": "recovery_failed",
            "id": 1,
            "position": POSITION,
            "recovered": False,
            "replayed": 0,
        },
        {"type": "error", "id": 1, "code": "no_such_code", "message": "?"},
        {"type": "error", "code": "forbidden", "message": "the id is missing"},
        {"type": "welcome", "session": "s"},
        {**MESSAGE, "sender": "not a user id"},
        {**MESSAGE, "sent_at": "2026-01-01T12:00:00"},
        {**MESSAGE, "channel": "room:a\n"},
        {**MESSAGE, "offset": 0},
        {"type": "surprise"},
        ["not", "an", "object"],
    ],
)
def test_the_contract_refuses_server_frames_the_document_does_not_allow(frame: Any) -> None:
    with pytest.raises(ContractBroken):
        contract().check_server_frame(frame)


def test_a_reply_must_be_one_the_document_lists_for_its_request() -> None:
    unsubscribed = {"type": "ack", "ack": "unsubscribed", "id": 1}
    assert contract().check_reply("unsubscribe", unsubscribed) == "unsubscribeAck"
    with pytest.raises(ContractBroken, match="reply to publish"):
        contract().check_reply("publish", unsubscribed)


async def test_a_frame_that_breaks_the_contract_fails_the_test_that_receives_it(
    shared_app: LiveApp, ws_session: WsClient, test_user: User
) -> None:
    [session] = shared_app.service.registry.sessions_of(test_user.id)
    session.send(encode({"type": "pong", "id": None, "undocumented": True}))
    with pytest.raises(ContractBroken, match="undocumented"):
        await ws_session.receive()


async def test_a_request_that_breaks_the_contract_is_not_sent(ws_session: WsClient) -> None:
    with pytest.raises(ContractBroken, match="channel"):
        await ws_session.send({"type": "subscribe", "id": 1, "channel": "no spaces allowed"})
    await ws_session.assert_silent()


def _schemas(node: Any, path: str = "#") -> list[tuple[str, dict[str, Any]]]:
    """Every schema in the document's components and payloads, with its path."""
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        if isinstance(node.get("type"), str | list) or "const" in node or "$ref" in node:
            found.append((path, node))
        for key, value in node.items():
            if key not in ("examples", "bindings"):
                found += _schemas(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _schemas(value, f"{path}/{index}")
    return found


def _inlined(schema: Any) -> Any:
    if isinstance(schema, dict):
        if "$ref" in schema:
            return _inlined(DOCUMENT["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]])
        return {key: _inlined(value) for key, value in schema.items()}
    return schema


def _told_apart(payload: dict[str, Any], other: dict[str, Any]) -> bool:
    """Whether no frame fits both payloads: a field both require and pin to different
    constants. A field one requires and the other lacks does not do: the objects are open, so
    the other's frames may carry it."""
    for field, schema in payload["properties"].items():
        elsewhere = other["properties"].get(field)
        both_require = field in payload["required"] and field in other["required"]
        pinned = elsewhere is not None and "const" in schema and "const" in elsewhere
        if both_require and pinned and schema["const"] != elsewhere["const"]:
            return True
    return False


def _parses(text: str) -> bool:
    try:
        parse_request(text)
    except ProtocolError:
        return False
    return True


def _allowed(text: str) -> bool:
    try:
        contract().check_request(json.loads(text))
    except (ValueError, RecursionError, ContractBroken):
        return False
    return True


def _beyond_json_schema(text: str) -> bool:
    """Whether the frame holds what parse_request refuses and no JSON Schema can tell: a lone
    surrogate (schemas see decoded strings) or an integer written as 1.0 (an integer to JSON
    Schema, a float to Python)."""
    return bool(SURROGATE_ESCAPE.search(text)) or _integral_float(json.loads(text))


def _integral_float(value: Any) -> bool:
    if isinstance(value, float):
        return value.is_integer()
    if isinstance(value, dict):
        return any(_integral_float(item) for item in value.values())
    if isinstance(value, list):
        return any(_integral_float(item) for item in value)
    return False
