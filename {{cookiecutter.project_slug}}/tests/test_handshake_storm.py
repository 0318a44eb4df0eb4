"""Many handshakes at once: users checked in shared queries, compression only when asked for."""

import asyncio
import json

import pytest
from websockets.asyncio.client import connect

from {{ cookiecutter.package_name }} import store
from {{ cookiecutter.package_name }}.lookups import UserChecks
from {{ cookiecutter.package_name }}.pool import SchemaPool
from {{ cookiecutter.package_name }}.resources import Resources
from {{ cookiecutter.package_name }}.settings import Settings

from harness.live import AppFactory, LiveApp, offer
from harness.users import User, UserFactory
from harness.wsclient import Frame, WsClient

STORM = 40


async def test_checks_waiting_together_share_one_query(
    shared_resources: Resources,
    settings: Settings,
    make_user: UserFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    active, disabled = await make_user("active"), await make_user("disabled")
    async with shared_resources.db.connection() as conn:
        await conn.execute(
            shared_resources.db.query("UPDATE {users} SET disabled = true WHERE id = %s"),
            [disabled.id],
        )
    batches: list[list[str]] = []
    real_query = store.inactive_users

    async def counted(db: SchemaPool, user_ids: list[str]) -> list[str]:
        batches.append(sorted(user_ids))
        return await real_query(db, user_ids)

    monkeypatch.setattr(store, "inactive_users", counted)
    checks = UserChecks(settings.handshake_db_timeout_s)
    asked = [active.id, disabled.id, "00000000-0000-0000-0000-000000000000"] * (STORM // 3)
    answers = await asyncio.gather(*(checks.is_active(shared_resources.db, u) for u in asked))
    assert answers == [True, False, False] * (STORM // 3)
    assert batches == [sorted(set(asked))]


async def test_a_storm_of_handshakes_is_served(shared_app: LiveApp, make_user: UserFactory) -> None:
    users = [await make_user(f"storm {n}") for n in range(4)]

    async def handshake(user: User) -> Frame:
        async with shared_app.websocket_session(user=user) as ws:
            return await ws.request("ping")

    replies = await asyncio.gather(*(handshake(users[n % len(users)]) for n in range(STORM)))
    assert [reply["type"] for reply in replies] == ["pong"] * STORM


async def test_a_failed_query_fails_every_check_of_its_batch(
    shared_resources: Resources, settings: Settings
) -> None:
    checks = UserChecks(settings.handshake_db_timeout_s)
    not_a_uuid = "not-a-uuid"
    results = await asyncio.gather(
        checks.is_active(shared_resources.db, not_a_uuid),
        checks.is_active(shared_resources.db, not_a_uuid),
        return_exceptions=True,
    )
    assert all(isinstance(result, Exception) for result in results), results


@pytest.mark.parametrize(
    ("compression", "negotiated"), [(False, None), (True, "permessage-deflate")]
)
async def test_compression_is_negotiated_only_when_turned_on(
    another_app: AppFactory, test_user: User, compression: bool, negotiated: str | None
) -> None:
    async with another_app(compression=compression) as live:
        async with connect(f"{live.url}/ws", subprotocols=offer(test_user.token)) as connection:
            assert connection.response is not None
            extensions = connection.response.headers.get("Sec-WebSocket-Extensions", "")
            assert (extensions.partition(";")[0] or None) == negotiated
            session = next(iter(live.service.registry.all()))
            # Fanned-out frames are built once for all sockets, or compressed for each.
            ws = WsClient(connection)
            await ws.subscribe("room:compressed")
            await ws.publish("room:compressed", "x" * 1000)
            assert (await ws.next_message())["data"] == "x" * 1000
            # Frames that go out together, in one write: each arrives whole, in order.
            session.send_all(tuple(json.dumps({"type": "pong", "id": n}) for n in range(3)))
            assert [(await ws.next_of_type("pong"))["id"] for _ in range(3)] == [0, 1, 2]
        await live.wait_drained(session.id)
