"""Malformed or unexpected frames get an error reply and the connection stays usable."""

import json

import pytest

from {{ cookiecutter.package_name }}.protocol import CloseCode
from {{ cookiecutter.package_name }}.settings import Settings

from harness.wsclient import WsClient


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{not json", "malformed_json"),
        ("[1, 2, 3]", "invalid_message"),
        ('"just a string"', "invalid_message"),
        ('{"id": 1}', "missing_field"),
        ('{"type": "dance", "id": 1}', "unknown_type"),
        ('{"type": "subscribe", "id": 1}', "missing_field"),
        ('{"type": "publish", "id": 1, "channel": "room:a"}', "missing_field"),
        ('{"type": "subscribe", "id": 1, "channel": "spaces are bad"}', "invalid_channel"),
        ('{"type": "subscribe", "id": 1, "channel": 42}', "invalid_channel"),
        ('{"type": "ping", "id": [1]}', "invalid_message"),
        ('{"type": "ping", "id": true}', "invalid_message"),
        ("[" * 50_000, "malformed_json"),
    ],
)
async def test_bad_frame_gets_an_error_and_the_connection_survives(
    ws_session: WsClient, raw: str, code: str
) -> None:
    await ws_session.send_raw(raw)
    error = await ws_session.next_of_type("error")
    assert error["code"] == code
    assert error["message"]
    pong = await ws_session.request("ping")
    assert pong["type"] == "pong"


async def test_error_carries_the_request_id(ws_session: WsClient) -> None:
    bad_channel = {"type": "subscribe", "id": "req-7", "channel": "no spaces allowed"}
    await ws_session.send_raw(json.dumps(bad_channel))
    error = await ws_session.next_of_type("error")
    assert error["id"] == "req-7"


async def test_ping_answers_with_the_same_id(ws_session: WsClient) -> None:
    await ws_session.send({"type": "ping", "id": "abc"})
    assert await ws_session.next_of_type("pong") == {"type": "pong", "id": "abc"}


async def test_data_postgres_cannot_store_is_an_error_not_a_crash(ws_session: WsClient) -> None:
    reply = await ws_session.request("publish", channel="room:nul", data={"text": "a\u0000b"})
    assert reply["type"] == "error"
    assert reply["code"] == "invalid_data"
    await ws_session.assert_silent()


async def test_binary_frame_closes_with_unsupported_data(ws_session: WsClient) -> None:
    await ws_session.send_raw(b"\x00\x01binary")
    assert await ws_session.closed_with() == CloseCode.UNSUPPORTED_DATA


async def test_oversized_frame_closes_with_message_too_big(
    ws_session: WsClient, settings: Settings
) -> None:
    huge = "x" * (settings.max_message_bytes + 1)
    await ws_session.send({"type": "publish", "channel": "room:big", "data": huge})
    assert await ws_session.closed_with() == CloseCode.MESSAGE_TOO_BIG
