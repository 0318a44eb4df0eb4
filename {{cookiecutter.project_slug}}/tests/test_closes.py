"""Every close code the service uses, triggered for real, and counted exactly once.

Each case runs on an app of its own, so its metrics hold nothing but that one connection.
"""

from collections.abc import Awaitable, Callable

import pytest

from {{ cookiecutter.package_name }}.protocol import CloseCode
from {{ cookiecutter.package_name }}.resources import Resources

from harness.live import AppFactory, LiveApp
from harness.scrape import closes
from harness.stalled import StalledClient
from harness.users import User
from harness.wsclient import WsClient

Trigger = Callable[[LiveApp, WsClient, Resources, User], Awaitable[None]]


async def client_closes(live: LiveApp, ws: WsClient, resources: Resources, user: User) -> None:
    await ws.connection.close()


async def binary_frame(live: LiveApp, ws: WsClient, resources: Resources, user: User) -> None:
    await ws.send_raw(b"\x00\x01")


async def oversized_frame(live: LiveApp, ws: WsClient, resources: Resources, user: User) -> None:
    await ws.send_raw("x" * (live.service.settings.max_message_bytes + 1))


async def flood(live: LiveApp, ws: WsClient, resources: Resources, user: User) -> None:
    for n in range(3 * live.service.settings.request_burst):
        await ws.send({"type": "ping", "id": n})


async def disabled_user(live: LiveApp, ws: WsClient, resources: Resources, user: User) -> None:
    async with resources.db.connection() as conn:
        await conn.execute(
            resources.db.query("UPDATE {users} SET disabled = true WHERE id = %s"), [user.id]
        )


CASES: list[tuple[CloseCode | int, dict[str, object], Trigger]] = [
    (1000, {}, client_closes),
    (CloseCode.UNSUPPORTED_DATA, {}, binary_frame),
    (CloseCode.MESSAGE_TOO_BIG, {"max_message_bytes": 1024}, oversized_frame),
    (CloseCode.TOO_MANY_REQUESTS, {"request_rate": 0.001, "request_burst": 3}, flood),
    (CloseCode.ACCOUNT_REVOKED, {"user_check_s": 0.05}, disabled_user),
]


@pytest.mark.parametrize(
    ("code", "changes", "trigger"), CASES, ids=[str(int(code)) for code, _, _ in CASES]
)
async def test_each_close_is_counted_once_with_its_code(
    another_app: AppFactory,
    shared_resources: Resources,
    test_user: User,
    code: int,
    changes: dict[str, object],
    trigger: Trigger,
) -> None:
    async with another_app(**changes) as live:
        async with live.websocket_session(user=test_user) as ws:
            await trigger(live, ws, shared_resources, test_user)
            assert await ws.closed_with() == code
        assert closes(live.service.metrics) == {code: 1}


async def test_an_unexpected_failure_counts_one_1011(
    another_app: AppFactory, shared_resources: Resources, test_user: User
) -> None:
    # A bug's stand-in: Redis answers, but the user's publish counter is not the sorted set the
    # rate limit's script expects (WRONGTYPE), which no outage explains.
    counter = shared_resources.keys.key("ratelimit", test_user.id, "publish")
    await shared_resources.redis.set(counter, "not a sorted set")
    async with another_app() as live:
        async with live.websocket_session(user=test_user) as ws:
            await ws.send({"type": "publish", "id": 1, "channel": "room:fail", "data": 1})
            assert await ws.closed_with() == CloseCode.INTERNAL_ERROR
        assert closes(live.service.metrics) == {CloseCode.INTERNAL_ERROR: 1}
        failed = {"backend": "redis", "operation": "request"}
        assert live.service.metrics.value("ws_backend_errors_total", **failed) == 1


async def test_shutdown_counts_one_1012_per_session(
    another_app: AppFactory, test_user: User
) -> None:
    async with another_app() as live:
        client = StalledClient(live.url, test_user.token)
        await client.open()
    assert await client.close_code() == CloseCode.SERVICE_RESTART
    assert closes(live.service.metrics) == {CloseCode.SERVICE_RESTART: 1}


async def test_invalid_utf8_counts_one_1007(another_app: AppFactory, test_user: User) -> None:
    async with another_app() as live:
        client = StalledClient(live.url, test_user.token)
        await client.open()
        await client.send_text(b'{"type": "ping", "id": "\xc3\x28"}')
        assert await client.close_code() == 1007
        session_ids = [session.id for session in live.service.registry.all()]
        for session_id in session_ids:
            await live.wait_drained(session_id)
        assert closes(live.service.metrics) == {1007: 1}
