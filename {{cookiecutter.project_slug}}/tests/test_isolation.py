"""Each worker works in its own Postgres schema and under its own Redis prefix, and dead
workers' namespaces are reaped."""

import asyncio
import contextlib
import dataclasses
import json
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from websockets.asyncio.client import connect

from {{ cookiecutter.package_name }}.keys import RedisKeys
from {{ cookiecutter.package_name }}.protocol import CloseCode
from {{ cookiecutter.package_name }}.resources import (
    Resources,
    open_database_pool,
)
from {{ cookiecutter.package_name }}.settings import Settings

from harness import namespaces
from harness.embedded import embedded_redis
from harness.leaks import LeakGuard
from harness.live import LiveApp, offer
from harness.namespaces import (
    MARKER,
    Postgres,
    RedisClient,
    alive_lock_key,
    owner_comment,
    reap_orphans,
    reap_worker,
    redis_client_of,
    redis_prefix,
    run_claim,
    run_lock_key,
    schema_name,
    unlink_prefix,
    worker_schema,
)
from harness.run import RunContext
from harness.users import UserFactory
from harness.wsclient import WsClient


def schema_exists(postgres: Postgres, schema: str) -> bool:
    with postgres.connect() as conn:
        found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [schema])
        return found.fetchone() is not None


@pytest.fixture
def redis_client(run_context: RunContext) -> Iterator[RedisClient]:
    """A client of the run's Redis (the cluster client on a cluster)."""
    client = redis_client_of(run_context.redis_url)
    yield client
    client.close()


def test_schema_name_carries_run_and_worker(
    run_id: str, worker_id: str, worker_db_schema: str
) -> None:
    assert worker_db_schema.startswith(f"test_{run_id}_{worker_id}_")
    assert len(worker_db_schema.encode()) <= 63


def test_schema_names_are_valid_for_any_worker_name() -> None:
    name = schema_name("RUN-id" * 20, "gw12")
    assert len(name) <= 63
    assert name == name.lower()
    assert name.replace("_", "").isalnum()


def test_prefix_carries_run_and_worker(
    run_id: str, worker_id: str, worker_redis_prefix: str
) -> None:
    assert worker_redis_prefix == redis_prefix(run_id, worker_id) == f"test:{run_id}:{worker_id}:"


async def test_published_messages_stay_under_the_worker_prefix(
    ws_session: WsClient, shared_resources: Resources, worker_redis_prefix: str
) -> None:
    await ws_session.publish("room:prefixed", {"n": 1})
    assert all(stream.startswith(worker_redis_prefix) for stream in shared_resources.bus.streams)
    assert await shared_resources.redis.exists(shared_resources.bus.stream_of("room:prefixed"))


def test_scan_pattern_escapes_glob_characters() -> None:
    keys = RedisKeys("test:[a]*?\\:")
    assert keys.match() == "test:\\[a\\]\\*\\?\\\\:*"


def test_cleanup_unlinks_only_its_own_prefix(
    run_context: RunContext, worker_redis_prefix: str, redis_client: RedisClient
) -> None:
    mine, neighbour = f"{worker_redis_prefix}clean:", f"{worker_redis_prefix}clean*:"
    try:
        redis_client.set(f"{mine}k1", "1")
        redis_client.xadd(f"{mine}stream", {"f": "v"})
        redis_client.set(f"{neighbour}k1", "1")
        assert unlink_prefix(run_context.redis_url, mine) == 2
        assert redis_client.exists(f"{mine}k1", f"{mine}stream") == 0
        assert redis_client.exists(f"{neighbour}k1") == 1
    finally:
        unlink_prefix(run_context.redis_url, neighbour)


def test_live_worker_schema_is_marked_and_locked(
    run_context: RunContext, worker_db_schema: str
) -> None:
    with run_context.postgres.connect() as conn:
        comment = conn.execute(
            "SELECT obj_description(%s::regnamespace, 'pg_namespace')", [worker_db_schema]
        ).fetchone()
    # Asked on a session of its own, where the worker holds the lock.
    with run_context.postgres.connect_direct() as conn:
        taken = conn.execute(
            "SELECT pg_try_advisory_lock(%s)", [alive_lock_key(worker_db_schema)]
        ).fetchone()
    assert comment is not None
    assert json.loads(comment[0])["made_by"] == MARKER
    assert taken == (False,), "the worker must hold its schema's liveness lock"


@pytest.fixture
def claimed_run(run_context: RunContext) -> Iterator[str]:
    """A made-up run's id, claimed for the test as a live run's controller claims its own: no
    other reaper, not even this run's other workers', touches the namespaces a test leaves dead
    under it, which the test reaps itself."""
    run = secrets.token_hex(4)
    with run_claim(run_context.postgres, run):
        yield run


def test_a_runs_claim_is_free_the_moment_it_ends(run_context: RunContext) -> None:
    run = secrets.token_hex(4)
    key = run_lock_key(run)
    with run_context.postgres.connect_direct(autocommit=True) as reaper:
        # Closing a connection frees its locks only once its backend has exited, which now and
        # then comes after the next query elsewhere: a few claims in a row catch that.
        for _ in range(50):
            with run_claim(run_context.postgres, run):
                pass
            taken = reaper.execute("SELECT pg_try_advisory_lock(%s)", [key]).fetchone()
            assert taken == (True,), "a reaper straight after a run must find it ended"
            reaper.execute("SELECT pg_advisory_unlock(%s)", [key])


def leave_dead_namespaces(
    postgres: Postgres, redis_url: str, client: RedisClient | None, schema: str, prefix: str
) -> str:
    """Claim a schema as a worker on the Redis at `redis_url` does, with a key under its prefix
    (through `client`, if given), then "die": the connection closes and its lock goes. Return
    the key, made first: a reaper that finds the schema finds the key too."""
    if client is not None:
        client.set(f"{prefix}leftover", "1")
    with postgres.connect() as conn, conn.transaction():
        # One transaction, like the harness: a run killed here leaves no unmarked schema.
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        owner = owner_comment(redis_url, prefix)
        conn.execute(
            sql.SQL("COMMENT ON SCHEMA {} IS {}").format(sql.Identifier(schema), sql.Literal(owner))
        )
    return f"{prefix}leftover"


def keys_when_dropped(
    monkeypatch: pytest.MonkeyPatch, client: RedisClient, keys: dict[str, str]
) -> dict[str, int]:
    """For each schema in `keys` (schema: one of its keys) that the harness drops from now on,
    whether that key still existed at that moment: it must not, or a process killed right after
    the drop would leave keys no schema names."""
    seen: dict[str, int] = {}
    drop_schema = namespaces.drop_schema

    def spied(conn: psycopg.Connection, schema: str) -> None:
        if schema in keys:
            seen[schema] = client.exists(keys[schema])
        drop_schema(conn, schema)

    monkeypatch.setattr(namespaces, "drop_schema", spied)
    return seen


def test_reaper_drops_dead_namespaces_and_spares_live_and_foreign_ones(
    run_context: RunContext,
    claimed_run: str,
    worker_id: str,
    redis_client: RedisClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    postgres, redis_url = run_context.postgres, run_context.redis_url
    dead = schema_name(claimed_run, f"{worker_id}dead")
    dead_prefix = redis_prefix(claimed_run, f"{worker_id}dead")
    foreign = f"test_not_ours_{secrets.token_hex(4)}"
    claimed, release = threading.Event(), threading.Event()

    def live_worker(schema: str) -> None:
        prefix = redis_prefix(claimed_run, f"{worker_id}live")
        with worker_schema(postgres, redis_url, schema, prefix):
            claimed.set()
            release.wait(10)

    live = schema_name(claimed_run, f"{worker_id}live")
    holder = threading.Thread(target=live_worker, args=(live,))
    try:
        with postgres.connect(autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(foreign)))
        leftover = leave_dead_namespaces(postgres, redis_url, redis_client, dead, dead_prefix)
        holder.start()
        assert claimed.wait(10)
        keys_then = keys_when_dropped(monkeypatch, redis_client, {dead: leftover})
        reap_orphans(postgres, redis_url, claimed_run)
        assert not schema_exists(postgres, dead)
        assert redis_client.exists(leftover) == 0
        assert keys_then == {dead: 0}
        assert schema_exists(postgres, live)
        assert schema_exists(postgres, foreign)
    finally:
        release.set()
        if holder.ident is not None:
            holder.join()
        with postgres.connect(autocommit=True) as conn:
            for schema in (dead, foreign):
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {}").format(sql.Identifier(schema)))
    assert not schema_exists(postgres, live)


def test_the_reaper_leaves_a_live_runs_dead_workers_to_that_run(
    run_context: RunContext, run_id: str, redis_client: RedisClient
) -> None:
    postgres, redis_url = run_context.postgres, run_context.redis_url
    other_run = secrets.token_hex(4)
    dead, prefix = schema_name(other_run, "gw0"), redis_prefix(other_run, "gw0")
    try:
        with run_claim(postgres, other_run):
            leftover = leave_dead_namespaces(postgres, redis_url, redis_client, dead, prefix)
            reap_orphans(postgres, redis_url, run_id)
            assert schema_exists(postgres, dead), "its run lives: the dead worker is its own"
            assert redis_client.exists(leftover) == 1
        reap_orphans(postgres, redis_url, run_id)
        # The outcome, not who reaped: once the run has ended, any run's reaper may be first,
        # and holds the run's lock until it is done; taking it waits that reaper out.
        with run_claim(postgres, other_run):
            assert not schema_exists(postgres, dead)
            assert redis_client.exists(leftover) == 0
    finally:
        with postgres.connect(autocommit=True) as conn:
            namespaces.drop_namespaces(conn, redis_url, dead, prefix)


def test_the_reaper_cleans_each_dead_worker_on_the_redis_that_worker_used(
    run_context: RunContext, claimed_run: str, worker_id: str, tmp_path: Path
) -> None:
    postgres = run_context.postgres
    workers = {name: f"{worker_id}{name}" for name in ("elsewhere", "gone", "locked")}
    schemas = {name: schema_name(claimed_run, worker) for name, worker in workers.items()}
    prefixes = {name: redis_prefix(claimed_run, worker) for name, worker in workers.items()}
    try:
        with (
            embedded_redis(tmp_path / "elsewhere") as elsewhere,
            embedded_redis(tmp_path / "locked") as locked,
        ):
            with contextlib.closing(redis_client_of(locked)) as admin:
                admin.config_set("requirepass", "secret")
            other = redis_client_of(elsewhere)
            try:
                leftover = leave_dead_namespaces(
                    postgres, elsewhere, other, schemas["elsewhere"], prefixes["elsewhere"]
                )
                # A Redis gone since, with what it held: nobody listens on port 1.
                gone = "redis://127.0.0.1:1/0"
                leave_dead_namespaces(postgres, gone, None, schemas["gone"], prefixes["gone"])
                # The comment keeps no password, and the reaping run knows none for it.
                with_password = locked.replace("redis://", "redis://:secret@", 1)
                leave_dead_namespaces(
                    postgres, with_password, None, schemas["locked"], prefixes["locked"]
                )
                reap_orphans(postgres, run_context.redis_url, claimed_run)
                assert other.exists(leftover) == 0, "unlinked where its worker had it"
                # Asked while its Redis runs: once it has gone, any reaper may drop the schema.
                assert schema_exists(postgres, schemas["locked"]), "left for a run that may"
                with postgres.connect() as conn:
                    comment = conn.execute(
                        "SELECT obj_description(%s::regnamespace, 'pg_namespace')",
                        [schemas["locked"]],
                    ).fetchone()
                assert comment is not None and "secret" not in comment[0]
                assert json.loads(comment[0])["redis"] == locked
            finally:
                other.close()
        assert not schema_exists(postgres, schemas["elsewhere"])
        assert not schema_exists(postgres, schemas["gone"])
    finally:
        with postgres.connect(autocommit=True) as conn:
            for schema in schemas.values():
                namespaces.drop_schema(conn, schema)


@pytest.fixture
def spare_worker(
    run_context: RunContext, claimed_run: str, worker_id: str
) -> Iterator[tuple[str, str, str]]:
    """A made-up worker of the claimed run: its name, schema and prefix, for a test that plays
    its life and death; whatever of them is left is removed after."""
    worker = f"{worker_id}spare"
    schema, prefix = schema_name(claimed_run, worker), redis_prefix(claimed_run, worker)
    yield worker, schema, prefix
    with run_context.postgres.connect(autocommit=True) as conn:
        namespaces.drop_namespaces(conn, run_context.redis_url, schema, prefix)


def test_a_worker_unlinks_its_keys_before_it_drops_its_schema(
    run_context: RunContext,
    spare_worker: tuple[str, str, str],
    redis_client: RedisClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, schema, prefix = spare_worker
    keys_then = keys_when_dropped(monkeypatch, redis_client, {schema: f"{prefix}stream"})
    with worker_schema(run_context.postgres, run_context.redis_url, schema, prefix):
        redis_client.xadd(f"{prefix}stream", {"f": "v"})
    assert keys_then == {schema: 0}
    assert not schema_exists(run_context.postgres, schema)


def test_a_crashed_workers_keys_go_before_its_schema(
    run_context: RunContext,
    claimed_run: str,
    spare_worker: tuple[str, str, str],
    redis_client: RedisClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    postgres, redis_url = run_context.postgres, run_context.redis_url
    worker, schema, prefix = spare_worker
    leftover = leave_dead_namespaces(postgres, redis_url, redis_client, schema, prefix)
    keys_then = keys_when_dropped(monkeypatch, redis_client, {schema: leftover})
    reaped = reap_worker(postgres, redis_url, claimed_run, worker)
    assert (reaped.schemas, reaped.keys) == ([schema], 1)
    assert keys_then == {schema: 0}
    assert not schema_exists(postgres, schema)


async def test_leak_guard_names_what_a_test_still_holds(
    shared_app: LiveApp, make_user: UserFactory, leak_guard: LeakGuard
) -> None:
    user = await make_user("leaky")
    async with shared_app.websocket_session(user=user) as ws:
        await ws.publish("room:leak", "kept")
        while_connected = await leak_guard.leaks()
    after_disconnect = await leak_guard.leaks()
    assert any("is still registered" in leak for leak in while_connected)
    assert not any("is still registered" in leak for leak in after_disconnect)
    for kind in ("users row", "messages row", "Redis key"):
        assert any(leak.startswith(kind) for leak in after_disconnect), (kind, after_disconnect)
    assert all(user.id in leak for leak in after_disconnect)


async def test_leak_guard_clears_what_leaked(
    shared_app: LiveApp, make_user: UserFactory, leak_guard: LeakGuard
) -> None:
    user = await make_user("leaky")
    # A session this test never closes, and a message stored for its user.
    connection = await connect(f"{shared_app.url}/ws", subprotocols=offer(user.token))
    client = WsClient(connection)
    await client.next_of_type("welcome")
    await client.publish("room:leak", "kept")
    assert await leak_guard.leaks()
    await leak_guard.clear()
    assert await leak_guard.leaks() == []
    await asyncio.wait_for(connection.wait_closed(), 5)
    assert connection.close_code == CloseCode.SERVICE_RESTART


async def test_leak_guard_finds_rows_in_tables_it_was_never_told_about(
    shared_resources: Resources, settings: Settings, make_user: UserFactory
) -> None:
    """A table a later migration adds, with a foreign key to users, is covered as it is."""
    user = await make_user("owner")
    db = shared_resources.db
    async with db.connection() as conn:
        await conn.execute(
            db.query("CREATE TABLE {bookmarks} (user_id uuid REFERENCES {users} ON DELETE CASCADE)")
        )
    # A pool of its own: the guard reads a schema's tables once per pool.
    pool = await open_database_pool(
        settings.database_url, settings.database_schema, 2, settings.database_pooler
    )
    try:
        async with pool.connection() as conn:
            await conn.execute(pool.query("INSERT INTO {bookmarks} VALUES (%s)"), [user.id])
        guard = LeakGuard(dataclasses.replace(shared_resources, db=pool), None)
        guard.track(user.id)
        assert f"bookmarks row of user {user.id}" in await guard.leaks()
    finally:
        async with pool.connection() as conn:
            await conn.execute(pool.query("DROP TABLE {bookmarks}"))
        await pool.close()


@pytest.fixture
def direct_database(settings: Settings) -> None:
    """Skips a test of startup options where a transaction pooler, which refuses them, leads to
    Postgres."""
    if settings.database_pooler != "none":
        pytest.skip("a transaction pooler takes no startup options")


@pytest.mark.usefixtures("direct_database")
@pytest.mark.parametrize("source", ["url", "PGOPTIONS"])
async def test_the_pool_keeps_the_options_its_connections_start_with(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    """libpq options from DATABASE_URL, or else from PGOPTIONS, reach Postgres as they are: the
    pool adds none, not even a search_path."""
    given = "-c statement_timeout=4321 -c search_path=public"
    bare = conninfo_to_dict(settings.database_url)
    bare.pop("options", None)
    if source == "url":
        url = make_conninfo("", **bare, options=given)
    else:
        url = make_conninfo("", **bare)
        monkeypatch.setenv("PGOPTIONS", given)
    pool = await open_database_pool(url, settings.database_schema, 1, settings.database_pooler)
    try:
        async with pool.connection() as conn:
            cursor = await conn.execute("SHOW statement_timeout")
            assert await cursor.fetchone() == ("4321ms",)
            cursor = await conn.execute("SHOW search_path")
            assert await cursor.fetchone() == ("public",)
    finally:
        await pool.close()


@pytest.mark.usefixtures("direct_database")
async def test_the_service_under_test_does_not_wait_for_commits_to_reach_the_disk(
    shared_resources: Resources,
) -> None:
    async with shared_resources.db.connection() as conn:
        cursor = await conn.execute("SHOW synchronous_commit")
        assert await cursor.fetchone() == ("off",)
