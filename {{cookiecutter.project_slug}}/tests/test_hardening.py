"""Hardening: nothing a client sends raises a 500, leaks internals, floods the log, stalls the
others or lingers; every refusal and close is documented, counted once and logged briefly."""

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from {{ cookiecutter.package_name }} import logs, ratelimit, store
from {{ cookiecutter.package_name }}.auth import SigningKey
from {{ cookiecutter.package_name }}.pool import SchemaPool
from {{ cookiecutter.package_name }}.protocol import (
    CloseCode,
)
from {{ cookiecutter.package_name }}.resources import Resources

from harness.live import AppFactory, LiveApp, offer
from harness.scrape import closes
from harness.stalled import StalledClient
from harness.users import User, UserFactory
from harness.wsclient import WsClient


async def refusal(live: LiveApp, token: str) -> tuple[int, str]:
    """Try a handshake that must fail; return the HTTP status and body it was refused with."""
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"{live.url}/ws", subprotocols=offer(token), open_timeout=5):
            pass
    response = refused.value.response
    return response.status_code, response.body.decode()


def assert_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR], [
        r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR
    ]


KEY = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="
# Upgrade requests websockets refuses before the app sees them (400), and one the app refuses.
REFUSED_UPGRADES = {
    "no key": (["Sec-WebSocket-Version: 13"], 400),
    "version 12": ([KEY, "Sec-WebSocket-Version: 12"], 400),
    "short key": (["Sec-WebSocket-Key: abc", "Sec-WebSocket-Version: 13"], 400),
    "two keys": ([KEY, KEY, "Sec-WebSocket-Version: 13"], 400),
    "no token": ([KEY, "Sec-WebSocket-Version: 13"], 403),
}


async def raw_upgrade(live: LiveApp, headers: list[str]) -> int:
    """Send `GET /ws` as an upgrade with `headers`, over a plain socket; return the status."""
    host, port = live.url.removeprefix("ws://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        lines = ["GET /ws HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade"]
        writer.write("\r\n".join([*lines, *headers, "", ""]).encode())
        async with asyncio.timeout(5):
            status_line = await reader.readline()
    finally:
        writer.close()
    return int(status_line.split()[1])


async def test_refused_upgrades_log_a_few_info_lines_and_no_traceback(
    shared_app: LiveApp, test_user: User, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    # Twice over: more refusals than one client's faults may take lines of the log.
    for name, (headers, status) in [*REFUSED_UPGRADES.items()] * 2:
        assert await raw_upgrade(shared_app, headers) == status, name
    assert_no_traceback(caplog)
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) <= logs.CLIENT_FAULT_LINES, lines
    async with shared_app.websocket_session(user=test_user) as ws:
        assert (await ws.request("ping"))["type"] == "pong"


async def test_a_token_with_a_list_for_issuer_is_refused_with_403_not_500(
    shared_app: LiveApp, caplog: pytest.LogCaptureFixture
) -> None:
    forged = SigningKey.generate(issuer="x")
    token = forged.issue(str(uuid.uuid4())).split(".")
    # Re-encode the payload with a list `iss`: no valid signature is needed to try this.
    token[1] = "eyJpc3MiOlsiYSJdLCJzdWIiOiJ1IiwiZXhwIjo5OTk5OTk5OTk5fQ"
    assert await refusal(shared_app, ".".join(token)) == (403, "malformed_token")
    assert_no_traceback(caplog)


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        pytest.param({"exp": 10**400}, "malformed_token", id="exp 10**400"),
        pytest.param({"exp": "9999999999"}, "malformed_token", id="exp a string"),
        pytest.param({"nbf": "0"}, "malformed_token", id="nbf a string"),
        pytest.param({"iat": "0"}, "malformed_token", id="iat a string"),
        pytest.param({"iat": True}, "malformed_token", id="iat a boolean"),
        pytest.param({"iat": 10**400}, "invalid_token", id="iat 10**400"),
    ],
)
async def test_a_trusted_token_with_odd_typed_claims_is_refused_with_403_not_500(
    shared_app: LiveApp,
    signing_key: SigningKey,
    test_user: User,
    claims: dict[str, Any],
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = signing_key.issue(test_user.id, **claims)
    assert await refusal(shared_app, token) == (403, reason)
    assert_no_traceback(caplog)


async def test_a_token_valid_for_too_long_is_refused(
    another_app: AppFactory, signing_key: SigningKey, test_user: User
) -> None:
    async with another_app(max_token_ttl_s=60) as live:
        too_long = signing_key.issue(test_user.id, ttl=3600)
        assert await refusal(live, too_long) == (403, "token_lifetime")
        short_lived = User(test_user.id, signing_key.issue(test_user.id, ttl=30))
        async with live.websocket_session(user=short_lived) as ws:
            await ws.assert_silent()


async def test_invalid_utf8_closes_with_1007_and_logs_no_traceback(
    shared_app: LiveApp, test_user: User, caplog: pytest.LogCaptureFixture
) -> None:
    client = StalledClient(shared_app.url, test_user.token)
    await client.open()
    await client.send_text(b'{"type": "ping", "id": "\xff\xfe"}')
    assert await client.close_code() == 1007
    assert_no_traceback(caplog)


async def test_lone_surrogates_are_refused_without_hurting_the_connection(
    ws_session: WsClient,
) -> None:
    await ws_session.send_raw('{"type": "ping", "id": "\\ud800"}')
    reply = await ws_session.next_of_type("error")
    assert (reply["code"], reply["id"]) == ("invalid_message", None)
    await ws_session.send_raw(
        '{"type": "publish", "id": 7, "channel": "room:u", "data": "\\udfff alone"}'
    )
    reply = await ws_session.next_of_type("error")
    assert (reply["code"], reply["id"]) == ("invalid_unicode", 7)
    paired = await ws_session.request("publish", channel="room:u", data="\U0001f600 ok")
    assert paired["type"] == "ack"
    await ws_session.assert_silent()


async def test_storage_errors_show_no_postgres_internals(ws_session: WsClient) -> None:
    reply = await ws_session.request("publish", channel="room:nul", data={"text": "a\u0000b"})
    assert (reply["type"], reply["code"]) == ("error", "invalid_data")
    for internal in ("DETAIL", "parameter", "portal", "jsonb", "$"):
        assert internal not in reply["message"]


async def test_a_flooding_connection_is_told_then_closed_and_others_carry_on(
    another_app: AppFactory, make_user: UserFactory
) -> None:
    flooder, healthy = await make_user("flooder"), await make_user("healthy")
    # A refill slow enough that no token comes back during the test, however loaded the machine.
    async with another_app(request_rate=0.001, request_burst=5) as live:
        before = closes(live.service.metrics).get(CloseCode.TOO_MANY_REQUESTS, 0)
        async with live.websocket_session(user=healthy) as healthy_ws:
            async with live.websocket_session(user=flooder) as ws:
                for n in range(5):
                    assert (await ws.request("ping"))["type"] == "pong", n
                told = await ws.request("ping")
                assert (told["code"], told["message"][:25]) == (
                    "rate_limited",
                    "too many requests; retry ",
                )
                for n in range(10):
                    await ws.send({"type": "ping", "id": f"flood {n}"})
                assert await ws.closed_with() == CloseCode.TOO_MANY_REQUESTS
            assert (await healthy_ws.request("ping"))["type"] == "pong"
        assert closes(live.service.metrics).get(CloseCode.TOO_MANY_REQUESTS, 0) == before + 1


async def test_a_client_pipelining_requests_without_reading_is_closed_with_4029(
    shared_app: LiveApp, test_user: User
) -> None:
    """The default budget, refilled 100 times a second all through the flood: being refused
    only between two refills must not be enough to be let off."""
    settings, metrics = shared_app.service.settings, shared_app.service.metrics
    before = closes(metrics).get(CloseCode.TOO_MANY_REQUESTS, 0)
    # Room in the kernel for every reply, so the client is not a slow consumer (4008) first.
    flooder = StalledClient(shared_app.url, test_user.token, receive_buffer=4 << 20)
    await flooder.open()
    session = next(iter(shared_app.service.registry.sessions_of(test_user.id)))
    try:
        flooder.pipeline({"type": "ping"}, 10 * settings.request_burst)
        await eventually(lambda: closes(metrics).get(CloseCode.TOO_MANY_REQUESTS, 0) > before, 20)
        assert await flooder.close_code() == CloseCode.TOO_MANY_REQUESTS
    finally:
        flooder.writer.close()
        await shared_app.wait_drained(session.id)


async def test_the_publish_limit_holds_in_every_window(
    shared_resources: Resources, test_user: User
) -> None:
    """Actions whose whole round trips fit inside one window must never exceed the limit:
    a fixed window lets twice the limit through across its boundary."""
    limit, window_s = 5, 0.4
    admitted: list[tuple[float, float]] = []
    # Until the window has slid twice past its limit, however slow each round trip is.
    async with asyncio.timeout(30):
        while len(admitted) < 3 * limit:
            sent = time.monotonic()
            wait = await ratelimit.check(
                shared_resources.redis, shared_resources.keys, test_user.id, "t", limit, window_s
            )
            if wait is None:
                admitted.append((sent, time.monotonic()))
            else:
                assert 0 < wait <= window_s
    for first_sent, _ in admitted:
        inside = [1 for _, received in admitted if first_sent <= received < first_sent + window_s]
        assert len(inside) <= limit


async def test_connections_per_user_and_per_address_are_capped(
    another_app: AppFactory, make_user: UserFactory, signing_key: SigningKey
) -> None:
    user, other = await make_user("user"), await make_user("other")
    async with another_app(max_connections_per_user=2, max_connections_per_ip=3) as live:
        async with (
            live.websocket_session(user=user),
            live.websocket_session(user=user),
        ):
            assert await refusal(live, user.token) == (429, "too_many_connections")
            async with live.websocket_session(user=other):
                assert await refusal(live, other.token) == (429, "too_many_connections")
        async with live.websocket_session(user=user) as again:
            await again.assert_silent()
        refused = live.service.metrics.value(
            "ws_handshakes_refused_total", reason="too_many_connections"
        )
        assert refused == 2


async def test_a_disabled_user_is_closed_with_4003_within_the_check_interval(
    another_app: AppFactory, test_user: User, shared_resources: Resources
) -> None:
    async with another_app(user_check_s=0.05) as live:
        async with live.websocket_session(user=test_user) as ws:
            async with shared_resources.db.connection() as conn:
                await conn.execute(
                    shared_resources.db.query("UPDATE {users} SET disabled = true WHERE id = %s"),
                    [test_user.id],
                )
            assert await ws.closed_with() == CloseCode.ACCOUNT_REVOKED
        assert closes(live.service.metrics) == {CloseCode.ACCOUNT_REVOKED: 1}


async def test_a_deleted_users_publish_gets_an_error_not_1011(
    ws_session: WsClient, test_user: User, shared_resources: Resources
) -> None:
    await store.delete_user(shared_resources.db, test_user.id)
    reply = await ws_session.request("publish", channel="room:ghost", data="boo")
    assert (reply["type"], reply["code"]) == ("error", "forbidden")
    await ws_session.assert_silent()


async def test_a_postgres_outage_refuses_handshakes_with_503_after_the_db_timeout(
    another_app: AppFactory, shared_resources: Resources, test_user: User
) -> None:
    unreachable = SchemaPool(
        "postgresql://postgres@127.0.0.1:1/none", "none", min_size=0, max_size=1, open=False
    )
    await unreachable.open(wait=False)
    try:
        down = dataclasses.replace(shared_resources, db=unreachable)
        async with another_app(down, handshake_db_timeout_s=0.2) as live:
            assert await refusal(live, test_user.token) == (503, "unavailable")
            failed = {"backend": "postgres", "operation": "handshake"}
            assert live.service.metrics.value("ws_backend_errors_total", **failed) == 1
    finally:
        await unreachable.close()


async def eventually(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait, polling, until `condition()` holds; fail after `timeout_s`. For state that nothing
    signals, like a gauge of sockets the kernel is tearing down."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - there is no event to wait on
            await asyncio.sleep(0.02)


async def test_a_socket_whose_peer_never_completes_the_close_is_aborted(
    another_app: AppFactory, make_user: UserFactory
) -> None:
    writer, stuck = await make_user("writer"), await make_user("stuck")
    # Longer than the second the app itself waits for a close to be written.
    changes = {"send_queue_size": 4, "close_timeout_s": 1.5, "publish_limit": 10_000}
    async with another_app(**changes) as live:
        metrics = live.service.metrics
        async with live.websocket_session(user=writer) as writer_ws:
            stalled = StalledClient(live.url, stuck.token)
            await stalled.open()
            await stalled.send({"type": "subscribe", "id": 1, "channel": "room:stuck"})
            assert (await stalled.next_frame())["type"] == "ack"
            assert metrics.value("ws_sockets") == 2
            while CloseCode.SLOW_CONSUMER not in closes(metrics):
                await writer_ws.publish("room:stuck", "x" * 60_000)
            # The stuck client reads nothing more: its socket is aborted, not left to linger.
            await eventually(lambda: metrics.value("ws_sockets") == 1)
            assert len(live.service.registry) == 1
            stalled.writer.close()
