"""The bad-input corpus: over 150 malformed frames and handshakes, replayed while two healthy
clients exchange messages. Nothing they send is lost, no handshake gets a 500, no request goes
unanswered, and nothing the attacker does writes an error or a traceback to the log."""

import asyncio
import base64
import json
import logging
import re
import uuid

import pytest
from websockets.typing import Origin, Subprotocol

from {{ cookiecutter.package_name }}.auth import SigningKey
from {{ cookiecutter.package_name }}.protocol import BEARER_PREFIX, PROTOCOL

from harness.corpus import malformed_frames
from harness.live import Handshake, LiveApp, offer, refused_status
from harness.stalled import StalledClient
from harness.users import User, UserFactory
from harness.wsclient import converse

EXCHANGED = 30
HEADER_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def tokens(key: SigningKey, user: User) -> list[str]:
    """Tokens a hostile client presents; every one must be refused."""

    def encoded(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    def forged(payload: object, header: object | None = None) -> str:
        head = encoded(header or {"alg": "EdDSA", "kid": key.kid})
        body = encoded(payload)
        signature = key.private_key.sign(f"{head}.{body}".encode())
        return f"{head}.{body}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"

    valid = {"iss": key.issuer, "sub": user.id, "exp": 2_000_000_000}
    return [
        "x",
        "a.b.c",
        "a.b",
        "....",
        "%C3%A9.x.y",
        user.token + "x",
        user.token[:-4],
        "Bearer " + user.token,
        encoded({"alg": "none"}) + "." + encoded(valid) + ".",
        forged(valid, {"alg": "HS256", "kid": key.kid}),
        forged(valid, {"alg": "EdDSA", "kid": "unknown"}),
        forged(valid, {"alg": "EdDSA", "kid": [key.kid]}),
        forged(valid, {"alg": "EdDSA"}),
        forged({**valid, "iss": [key.issuer]}),
        forged({**valid, "iss": {"a": 1}}),
        forged({**valid, "iss": None}),
        forged({**valid, "sub": 42}),
        forged({**valid, "sub": ""}),
        forged({**valid, "sub": "not-a-uuid"}),
        forged({**valid, "sub": str(uuid.uuid4())}),
        forged({**valid, "exp": "never"}),
        forged({**valid, "exp": 10**30}),
        forged({**valid, "exp": 1}),
        forged({**valid, "exp": None}),
        forged({**valid, "nbf": 10**10}),
        forged({**valid, "iat": "now"}),
        forged([1, 2, 3]),
        forged("just a string"),
        key.issue(user.id, ttl=10**9),
        "x" * 6_000,
    ]


async def attack_handshakes(live: LiveApp, key: SigningKey, user: User) -> list[int]:
    statuses = []
    for token in tokens(key, user):
        if HEADER_TOKEN.fullmatch(token):  # else no client can offer it as a subprotocol
            statuses.append(await refused_status(live, subprotocols=offer(token)))
        statuses.append(
            await refused_status(live, additional_headers={"Authorization": f"Bearer {token}"})
        )
    handshakes: list[Handshake] = [
        {},
        {"subprotocols": [Subprotocol(PROTOCOL)]},
        {"subprotocols": [Subprotocol(BEARER_PREFIX + user.token)]},
        {"subprotocols": offer("")},
        {"additional_headers": {"Authorization": "Basic dXNlcjpwYXNz"}},
        {"additional_headers": {"Authorization": "Bearer"}},
        {"additional_headers": {"Authorization": "Bearer ", "Origin": "null"}},
        {"subprotocols": offer(user.token), "origin": Origin("https://evil.example")},
        {"subprotocols": offer(user.token), "origin": Origin("null")},
        {
            "subprotocols": offer(user.token),
            "origin": Origin("https://app.example.com.evil.example"),
        },
    ]
    for handshake in handshakes:
        statuses.append(await refused_status(live, **handshake))
    return statuses


async def attack_frames(live: LiveApp, user: User) -> int:
    frames = malformed_frames()
    async with live.websocket_session(user=user) as attacker:
        for frame in frames:
            await attacker.send_raw(frame)
        replies = [await attacker.expect(lambda f: f["type"] != "message") for _ in frames]
        assert {reply["type"] for reply in replies} <= {"error", "ack", "pong"}
        await attacker.send({"type": "ping", "id": "still here"})
        assert (await attacker.next_of_type("pong"))["id"] == "still here"
        # Fragmented: a frame split into continuation frames is one request.
        await attacker.send_raw(iter(['{"type": "ping", ', '"id": "in pieces"}']))
        assert (await attacker.next_of_type("pong"))["id"] == "in pieces"
        for closing in (b"\x00binary", "x" * (live.service.settings.max_message_bytes + 1)):
            async with live.websocket_session(user=user) as victim:
                await victim.send_raw(closing)
                assert await victim.closed_with() in (1003, 1009)
    invalid = StalledClient(live.url, user.token)
    await invalid.open()
    await invalid.send_text(b'{"type": "ping", "id": "\xed\xa0\x80"}')
    assert await invalid.close_code() == 1007
    return len(frames) + 4


async def test_the_bad_input_corpus_hurts_nobody(
    shared_app: LiveApp,
    make_user: UserFactory,
    signing_key: SigningKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    alice, bob, mallory = [await make_user(name) for name in ("alice", "bob", "mallory")]
    async with (
        shared_app.websocket_session(user=alice) as alice_ws,
        shared_app.websocket_session(user=bob) as bob_ws,
    ):
        for ws in (alice_ws, bob_ws):
            await ws.subscribe("room:corpus")
        to_bob, to_alice, statuses, frames = await asyncio.gather(
            converse(bob_ws, "room:corpus", "bob", "alice", EXCHANGED),
            converse(alice_ws, "room:corpus", "alice", "bob", EXCHANGED),
            attack_handshakes(shared_app, signing_key, mallory),
            attack_frames(shared_app, mallory),
        )
    assert to_bob == [f"alice {n}" for n in range(EXCHANGED)]
    assert to_alice == [f"bob {n}" for n in range(EXCHANGED)]
    assert len(statuses) + frames >= 150
    assert set(statuses) <= {400, 403}, "refused as the client's fault, never a 500"
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not loud
    refusals = [r for r in caplog.records if r.getMessage().startswith("handshake refused")]
    assert len(refusals) <= 5, "client faults are logged a few lines per peer, not one each"
