"""Bad input never hurts others: one client sends garbage while two others keep talking."""

import asyncio
import json

from {{ cookiecutter.package_name }}.protocol import CloseCode
from {{ cookiecutter.package_name }}.settings import Settings

from harness.live import LiveApp
from harness.users import UserFactory
from harness.wsclient import WsClient, converse

EXCHANGED = 20

GARBAGE = [
    ("{not json", "error"),
    ("", "error"),
    ("null", "error"),
    ("[" * 20_000, "error"),
    (json.dumps({"type": "subscribe", "channel": "../../etc/passwd"}), "error"),
    (json.dumps({"type": "subscribe", "channel": "x" * 500}), "error"),
    (json.dumps({"type": "publish", "channel": "room:chat", "data": "\u0000"}), "error"),
    (json.dumps({"type": "\u202e", "id": {"nested": True}}), "error"),
    (json.dumps({"type": "publish", "channel": "room:junk", "data": [[[[[[[[]]]]]]]]}), "ack"),
    (json.dumps({"type": "ping", "id": 10**30}), "pong"),
]
"""Frames a hostile client sends, and the reply each must get."""


async def attack(attacker: WsClient, settings: Settings) -> int | None:
    for frame, _ in GARBAGE:
        await attacker.send_raw(frame)
    replies = [await attacker.expect(lambda f: f["type"] != "welcome") for _ in GARBAGE]
    assert [reply["type"] for reply in replies] == [expected for _, expected in GARBAGE]
    await attacker.send_raw("x" * (settings.max_message_bytes + 1))
    return await attacker.closed_with()


async def test_garbage_from_one_client_loses_nothing_for_the_others(
    shared_app: LiveApp, settings: Settings, make_user: UserFactory
) -> None:
    alice, bob, mallory = [await make_user(name) for name in ("alice", "bob", "mallory")]
    async with (
        shared_app.websocket_session(user=alice) as alice_ws,
        shared_app.websocket_session(user=bob) as bob_ws,
        shared_app.websocket_session(user=mallory) as mallory_ws,
    ):
        for ws in (alice_ws, bob_ws):
            await ws.subscribe("room:chat")
        to_bob, to_alice, close_code = await asyncio.gather(
            converse(bob_ws, "room:chat", "bob", "alice", EXCHANGED),
            converse(alice_ws, "room:chat", "alice", "bob", EXCHANGED),
            attack(mallory_ws, settings),
        )
        assert to_bob == [f"alice {n}" for n in range(EXCHANGED)]
        assert to_alice == [f"bob {n}" for n in range(EXCHANGED)]
        assert close_code == CloseCode.MESSAGE_TOO_BIG
