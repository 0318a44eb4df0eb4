"""A backend outage costs the requests it meets, never the session.

Each such request is answered `unavailable` and leaves nothing half done (a publish is stored
and streamed, or neither), and once the backend is back the same session serves on; a Postgres
restart that is over costs nothing at all. Every server stopped here is one this module started
for itself: never the run's, which every worker shares.
"""

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import psycopg.errors
import pytest
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from redis import exceptions as redis_errors

from {{ cookiecutter.package_name }} import handlers, logs, store
from {{ cookiecutter.package_name }}.auth import SigningKey
from {{ cookiecutter.package_name }}.metrics import (
    Backend,
    Metrics,
    unavailable_backend,
)
from {{ cookiecutter.package_name }}.migrations import migrate
from {{ cookiecutter.package_name }}.protocol import CloseCode
from {{ cookiecutter.package_name }}.resources import Resources
from {{ cookiecutter.package_name }}.settings import Settings

from harness.embedded import PostgresServer, postgres_server, redis_server
from harness.live import serve_instance
from harness.scrape import closes
from harness.users import User, UserFactory
from harness.wsclient import Frame, WsClient

SCHEMA = "service"
# Short, so that each request of an outage is answered soon; ample for a checkout otherwise.
OUTAGE_WAIT_S = 0.5
# The pool reconnects with a backoff of 1, 2, 4 s... from the outage's start.
RECOVERY_TIMEOUT_S = 30.0
RETRY_PAUSE_S = 0.2


@pytest.fixture(scope="module")
def throwaway_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A Postgres of this module's own, migrated, which its tests stop and restart."""
    with postgres_server(tmp_path_factory.mktemp("postgres")) as server:
        with psycopg.connect(server.url, autocommit=True) as conn:
            migrate(conn, SCHEMA)
        yield server


def on_postgres(settings: Settings, server: PostgresServer, **changes: Any) -> Settings:
    """The worker's settings for an instance of its own on `server`'s database."""
    return dataclasses.replace(
        settings,
        database_url=server.url,
        database_schema=SCHEMA,
        instance_id=f"outage-{uuid.uuid4().hex[:8]}",
        **changes,
    )


def fresh_channel() -> str:
    return f"room:outage-{uuid.uuid4().hex[:8]}"


def assert_unavailable(reply: Frame) -> None:
    assert (reply["type"], reply["code"]) == ("error", "unavailable"), reply
    assert "retry in" in reply["message"], reply


async def publish_when_back(ws: WsClient, channel: str, data: Any) -> Frame:
    """Publish as a client told `unavailable` would, until the ack; bounded."""
    async with asyncio.timeout(RECOVERY_TIMEOUT_S):
        while True:
            reply = await ws.request("publish", channel=channel, data=data)
            if reply["type"] == "ack":
                return reply
            assert_unavailable(reply)
            await asyncio.sleep(RETRY_PAUSE_S)


async def warm(pool: AsyncConnectionPool, size: int) -> None:
    """Grow the pool to `size` connections, all idle after."""
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(size):
            await stack.enter_async_context(pool.connection())
    assert pool.get_stats()["pool_size"] == size


def request_failures(metrics: Metrics, backend: Backend) -> float:
    """How many requests met an outage of `backend`."""
    return metrics.value("ws_backend_errors_total", backend=backend, operation="request")


@pytest.mark.parametrize(
    ("error", "backend"),
    [
        (PoolTimeout("couldn't get a connection after 3.00 sec"), "postgres"),
        (psycopg.errors.AdminShutdown("terminating connection"), "postgres"),
        (psycopg.errors.CannotConnectNow("the database system is starting up"), "postgres"),
        (psycopg.InterfaceError("the connection is closed"), "postgres"),
        (redis_errors.ConnectionError("Connection refused"), "redis"),
        (redis_errors.TimeoutError("Timeout reading from socket"), "redis"),
        (redis_errors.BusyLoadingError("Redis is loading the dataset in memory"), "redis"),
        (redis_errors.ReadOnlyError("You can't write against a read only replica."), "redis"),
        (redis_errors.MasterDownError("Link with MASTER is down"), "redis"),
        # Bugs and bad requests: they keep their own answers (1011, invalid_data, forbidden).
        (psycopg.errors.UndefinedTable('relation "users" does not exist'), None),
        (psycopg.DataError("invalid byte sequence"), None),
        (psycopg.errors.ForeignKeyViolation("violates foreign key constraint"), None),
        (redis_errors.ResponseError("WRONGTYPE Operation against a key"), None),
        (ValueError("not a backend's"), None),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
def test_which_errors_are_outages(error: Exception, backend: Backend | None) -> None:
    assert unavailable_backend(error) == backend


async def test_a_postgres_restart_under_a_warm_pool_costs_no_session(
    settings: Settings, signing_key: SigningKey, throwaway_postgres: PostgresServer
) -> None:
    instance = on_postgres(settings, throwaway_postgres)
    size, channel = instance.database_pool_size, fresh_channel()
    async with serve_instance(instance) as live:
        users = UserFactory(live.service.resources, signing_key, lambda user_id: None)
        try:
            async with contextlib.AsyncExitStack() as stack:
                sessions = [
                    await stack.enter_async_context(
                        live.websocket_session(user=await users(f"publisher {n}"))
                    )
                    for n in range(size)
                ]
                await warm(live.service.resources.db, size)
                # Every pooled connection is dead now, which none of the publishes may notice.
                throwaway_postgres.restart()
                acks = await asyncio.gather(
                    *(ws.publish(channel, n) for n, ws in enumerate(sessions))
                )
                assert sorted(ack["offset"] for ack in acks) == list(range(1, size + 1))
                for ws in sessions:
                    await ws.assert_silent()
            assert request_failures(live.service.metrics, "postgres") == 0
            assert closes(live.service.metrics) == {1000: size}
        finally:
            await users.forget_all()


async def test_a_postgres_outage_answers_unavailable_and_the_session_serves_on(
    settings: Settings, signing_key: SigningKey, throwaway_postgres: PostgresServer
) -> None:
    channel = fresh_channel()
    async with serve_instance(
        on_postgres(settings, throwaway_postgres, database_timeout_s=OUTAGE_WAIT_S)
    ) as live:
        users = UserFactory(live.service.resources, signing_key, lambda user_id: None)
        try:
            publisher, reader = await users("publisher"), await users("reader")
            async with (
                live.websocket_session(user=publisher) as ws,
                live.websocket_session(user=reader) as subscriber,
            ):
                await subscriber.subscribe(channel)
                throwaway_postgres.stop()
                try:
                    assert_unavailable(await ws.request("publish", channel=channel, data="lost"))
                    # A resume, whose replay reads Postgres.
                    since = {"offset": 0, "epoch": "0"}
                    resume = await ws.request("subscribe", channel=fresh_channel(), since=since)
                    assert_unavailable(resume)
                    await ws.assert_silent()
                finally:
                    throwaway_postgres.start()
                ack = await publish_when_back(ws, channel, "after")
                # Neither stored nor streamed: the refused publishes left no offset behind.
                assert ack["offset"] == 1
                message = await subscriber.next_message(channel)
                assert (message["offset"], message["data"]) == (1, "after")
                await subscriber.assert_silent()
            assert request_failures(live.service.metrics, "postgres") >= 2
            assert CloseCode.INTERNAL_ERROR not in closes(live.service.metrics)
        finally:
            await users.forget_all()


async def test_a_redis_outage_answers_unavailable_and_the_session_serves_on(
    settings: Settings,
    shared_resources: Resources,
    test_user: User,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    channel = fresh_channel()
    with redis_server(tmp_path / "redis") as redis:
        instance = dataclasses.replace(
            settings, redis_url=redis.url, instance_id=f"outage-{uuid.uuid4().hex[:8]}"
        )
        async with serve_instance(instance) as live, live.websocket_session(user=test_user) as ws:
            redis.stop()
            try:
                # The publish limit's counter is the first thing a publish asks Redis for.
                for _ in range(logs.CLIENT_FAULT_LINES + 1):
                    assert_unavailable(await ws.request("publish", channel=channel, data="lost"))
                await ws.assert_silent()
            finally:
                redis.start()
            position = await store.channel_position(shared_resources.db, channel)
            assert position.offset == 0, "a publish refused for Redis must not be stored"
            ack = await publish_when_back(ws, channel, "after")
            assert ack["offset"] == 1
            assert request_failures(live.service.metrics, "redis") == logs.CLIENT_FAULT_LINES + 1
            assert CloseCode.INTERNAL_ERROR not in closes(live.service.metrics)
    # No traceback, and not a line per refused request.
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
    refusals = [record for record in caplog.records if record.name == handlers.__name__]
    assert len(refusals) <= logs.CLIENT_FAULT_LINES
