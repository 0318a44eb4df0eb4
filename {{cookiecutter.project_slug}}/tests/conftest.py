"""The fixture stack: share the expensive parts per xdist worker, isolate the stateful parts.

    run (xdist controller, once)   services, run id, signing key, reaping of dead runs' leftovers
    worker (session scope)         worker_db_schema     its own Postgres schema, migrated
                                   worker_redis_prefix  its own Redis key prefix
                                   shared_resources     pools, bus, keyring
                                   shared_app           the app on a real server
    test (function scope)          test_user / make_user  user rows + tokens, deleted after
                                   ws_session            a fresh WebSocket, drained after
                                   another_app           one more app with changed settings
                                   other_instance        a second instance, own Resources
                                   leak_guard/leak_check fail a test that leaves state behind

Every async fixture and test runs on one event loop per worker (see pyproject.toml), so the
pools opened once serve every test. `--app-scope=function` builds Resources and app per test
instead, to measure on this suite what sharing buys. The plumbing lives in `harness/`: the
run-level hooks (controller to workers, crash cleanup, the report) in `harness/plugin.py`, and
`worker_id` is pytest-xdist's own fixture.
"""

import dataclasses
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.auth import SigningKey
from {{ cookiecutter.package_name }}.resources import Resources
from {{ cookiecutter.package_name }}.settings import Settings

from harness import report, run
from harness.leaks import LeakGuard
from harness.live import AppFactory, LiveApp, serve_in_process, serve_instance
from harness.namespaces import redis_prefix, schema_name, unlink_prefix, worker_schema
from harness.users import User, UserFactory
from harness.wsclient import WsClient

pytest_plugins = ["harness.plugin"]

# The service's sessions do not wait for each commit to reach the disk: a committed row is visible
# to every other session at once all the same, and all a crash of Postgres could lose is a
# throwaway schema's last rows. A WebSocket test commits three times (its user, its message, the
# user's deletion), each about twice as fast so. Embedded mode's server runs so throughout.
NO_COMMIT_WAIT = "-c synchronous_commit=off"
# And no schema on the path, as through a transaction pooler: a query that does not name its
# schema fails here too, instead of only behind PgBouncer.
NO_SEARCH_PATH = "-c search_path="


def app_scope(fixture_name: str, config: pytest.Config) -> Literal["session", "function"]:
    """The scope of the app and its Resources: per worker, or per test with --app-scope."""
    return "function" if config.getoption("app_scope") == "function" else "session"


@pytest.fixture(scope="session")
def run_context(pytestconfig: pytest.Config) -> run.RunContext:
    """What the controller decided for the whole run: services, run id, signing key."""
    return run.context(pytestconfig)


@pytest.fixture(scope="session")
def run_id(run_context: run.RunContext) -> str:
    """One id for the whole run, shared by its xdist workers; it names everything the run makes."""
    return run_context.run_id


@pytest.fixture(scope="session")
def worker_redis_prefix(
    pytestconfig: pytest.Config, run_context: run.RunContext, worker_id: str
) -> Iterator[str]:
    """Each worker gets its own Redis key prefix; every key under it is unlinked at the end."""
    prefix = redis_prefix(run_context.run_id, worker_id)
    report.record(pytestconfig, worker=worker_id, prefix=prefix)
    yield prefix
    unlink_prefix(run_context.redis_url, prefix)


@pytest.fixture(scope="session")
def worker_db_schema(
    pytestconfig: pytest.Config,
    run_context: run.RunContext,
    worker_id: str,
    worker_redis_prefix: str,
) -> Iterator[str]:
    """Each worker gets a fresh schema in the shared test DB, with the migrations applied."""
    name = schema_name(run_context.run_id, worker_id)
    with worker_schema(
        run_context.postgres, run_context.redis_url, name, worker_redis_prefix
    ) as schema:
        report.record(pytestconfig, schema=schema)
        yield schema


def connection_options(url: str, *extra: str) -> str:
    """libpq's `options` for a connection to `url`: those it starts with already, the URL's own
    or else PGOPTIONS (as libpq reads them), then `extra`, which win. A connection given
    `options` ignores both, so a statement_timeout set in TEST_DATABASE_URL would silently go."""
    given = conninfo_to_dict(url).get("options") or os.environ.get("PGOPTIONS", "")
    return " ".join([str(given), *extra]).strip()


@pytest.fixture(scope="session")
def signing_key(run_context: run.RunContext) -> SigningKey:
    """The run's token-signing key, made by the controller; its public half is the keyring."""
    return run_context.signing_key


@pytest.fixture(scope="session")
def settings(
    run_context: run.RunContext,
    worker_db_schema: str,
    worker_redis_prefix: str,
    signing_key: SigningKey,
) -> Settings:
    """Settings pointing the service at this worker's schema and prefix; its direct Postgres
    sessions do not wait for commits to reach the disk, and have no search_path. Through a
    transaction pooler, which takes no options, its sessions are the pooler's."""
    url, pooler = run_context.database_url, run_context.database_pooler
    if pooler == "none":
        url = make_conninfo(url, options=connection_options(url, NO_COMMIT_WAIT, NO_SEARCH_PATH))
    return Settings(
        database_url=url,
        database_pooler=pooler,
        redis_url=run_context.redis_url,
        keyring=signing_key.keyring(),
        database_schema=worker_db_schema,
        redis_prefix=worker_redis_prefix,
        allowed_origins=frozenset({"https://app.example.com"}),
    )


@pytest.fixture(scope=app_scope)
async def shared_resources(settings: Settings) -> AsyncIterator[Resources]:
    """Postgres pool, Redis client, bus and keyring: opened once per worker."""
    resources = await Resources.open(settings)
    yield resources
    await resources.close()


@pytest.fixture(scope=app_scope)
async def shared_app(settings: Settings, shared_resources: Resources) -> AsyncIterator[LiveApp]:
    """The app, built once per worker on the shared resources and served on a real socket."""
    async with serve_in_process(create_app(settings, shared_resources), settings) as live:
        yield live


@pytest.fixture
def another_app(settings: Settings, shared_resources: Resources) -> AppFactory:
    """Serves one more app for a test, on the worker's Resources unless given others, with
    some settings changed: `async with another_app(max_channels=2) as live: ...`."""

    def serve(
        resources: Resources | None = None, **changes: Any
    ) -> AbstractAsyncContextManager[LiveApp]:
        changed = dataclasses.replace(settings, **changes)
        return serve_in_process(create_app(changed, resources or shared_resources), changed)

    return serve


@pytest.fixture
async def other_instance(settings: Settings) -> AsyncIterator[LiveApp]:
    """A second instance of the service for one test: the same schema and Redis prefix, but its
    own Resources, instance id (so its own consumer group) and server."""
    other = dataclasses.replace(settings, instance_id=f"other-{uuid.uuid4().hex[:8]}")
    async with serve_instance(other) as live:
        yield live


@pytest.fixture(autouse=True)
def leak_guard(request: pytest.FixtureRequest) -> LeakGuard:
    """Tracks what the test makes; `leak_check` fails the test if any of it outlives it."""
    # Asked for here rather than as arguments, so tests without a database need none; asking
    # during setup also makes pytest tear the guard down before them. Sync on purpose: an
    # async fixture cannot set up other async fixtures from inside the running loop.
    resources = _requested(request, "shared_resources")
    app = _requested(request, "shared_app")
    return LeakGuard(resources, app.service.registry if app is not None else None)


@pytest.fixture(autouse=True)
async def leak_check(leak_guard: LeakGuard) -> AsyncIterator[None]:
    """After the test's own teardown: no session, row or key of it may be left."""
    yield
    leaks = await leak_guard.leaks()
    if leaks:
        await leak_guard.clear()
        pytest.fail("state leaked past the test's teardown: " + "; ".join(leaks), pytrace=False)


def _requested(request: pytest.FixtureRequest, name: str) -> Any:
    return request.getfixturevalue(name) if name in request.fixturenames else None


@pytest.fixture
async def make_user(
    shared_resources: Resources, signing_key: SigningKey, leak_guard: LeakGuard
) -> AsyncIterator[UserFactory]:
    """Creates users with tokens for this test; deletes them, and what they sent, afterwards."""
    users = UserFactory(shared_resources, signing_key, leak_guard.track)
    yield users
    await users.forget_all()


@pytest.fixture
async def test_user(
    shared_resources: Resources, signing_key: SigningKey, leak_guard: LeakGuard
) -> AsyncIterator[User]:
    """A user row created in the worker's schema, and a signed token for it; deleted after."""
    # Not through make_user: one async fixture fewer for nearly every test.
    users = UserFactory(shared_resources, signing_key, leak_guard.track)
    yield await users()
    await users.forget_all()


@pytest.fixture
async def ws_session(shared_app: LiveApp, test_user: User) -> AsyncIterator[WsClient]:
    """A fresh WebSocket for `test_user`; the test ends only once the server drained it."""
    async with shared_app.websocket_session(user=test_user) as ws:
        yield ws
