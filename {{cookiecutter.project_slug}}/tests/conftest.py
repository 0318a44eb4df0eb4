"""The fixture stack: share the expensive parts per xdist worker, isolate the stateful parts.

    worker (session scope = once per xdist worker)    test (function scope)
    worker_db_schema   its own Postgres schema        test_user   a user row + token
    worker_redis_prefix its own Redis key prefix      ws_session  a fresh WebSocket, drained after
    shared_resources   pools, bus, keyring
    shared_app         the app on a real server

Every async fixture and test runs on one event loop per worker (see pyproject.toml), so the
pools opened once are usable by every test.
"""

from collections.abc import AsyncIterator, Iterator

import pytest

from {{ cookiecutter.package_name }} import store
from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.auth import SigningKey
from {{ cookiecutter.package_name }}.resources import Resources
from {{ cookiecutter.package_name }}.settings import Settings

import run_context
import run_report
from harness import (
    LiveApp,
    User,
    UserFactory,
    current_worker,
    database_url,
    migrated_schema,
    redis_prefix,
    redis_url,
    schema_name,
    serve_in_process,
    unlink_prefix,
)
from wsclient import WsClient


@pytest.fixture(scope="session")
def run_id(pytestconfig: pytest.Config) -> str:
    """One id for the whole run, shared by its xdist workers; it names everything the run makes."""
    return run_context.run_id(pytestconfig)


@pytest.fixture(scope="session")
def worker_id() -> str:
    """This worker's name ("gw0", ...), or "master" when the run has no xdist."""
    return current_worker()


@pytest.fixture(scope="session")
def worker_db_schema(pytestconfig: pytest.Config, run_id: str, worker_id: str) -> Iterator[str]:
    """Each worker gets a fresh schema in the shared test DB, with the migrations applied."""
    with migrated_schema(database_url(), schema_name(run_id, worker_id)) as schema:
        run_report.record(pytestconfig, worker=worker_id, schema=schema)
        yield schema


@pytest.fixture(scope="session")
async def worker_redis_prefix(
    pytestconfig: pytest.Config, run_id: str, worker_id: str
) -> AsyncIterator[str]:
    """Each worker gets its own Redis key prefix; every key under it is unlinked at the end."""
    prefix = redis_prefix(run_id, worker_id)
    run_report.record(pytestconfig, worker=worker_id, prefix=prefix)
    yield prefix
    await unlink_prefix(redis_url(), prefix)


@pytest.fixture(scope="session")
def signing_key() -> SigningKey:
    """The key that signs the tests' tokens; its public half is the app's keyring."""
    return SigningKey.generate(issuer="tests")


@pytest.fixture(scope="session")
def settings(worker_db_schema: str, worker_redis_prefix: str, signing_key: SigningKey) -> Settings:
    """Settings pointing the service at this worker's schema and prefix."""
    return Settings(
        database_url=database_url(),
        redis_url=redis_url(),
        keyring=signing_key.keyring(),
        database_schema=worker_db_schema,
        redis_prefix=worker_redis_prefix,
        allowed_origins=frozenset({"https://app.example.com"}),
    )


@pytest.fixture(scope="session")
async def shared_resources(settings: Settings) -> AsyncIterator[Resources]:
    """Postgres pool, Redis client, bus and keyring: opened once per worker."""
    resources = await Resources.open(settings)
    yield resources
    await resources.close()


@pytest.fixture(scope="session")
async def shared_app(settings: Settings, shared_resources: Resources) -> AsyncIterator[LiveApp]:
    """The app, built once per worker on the shared resources and served on a real socket."""
    async with serve_in_process(create_app(settings, shared_resources), settings) as live:
        yield live


@pytest.fixture
async def make_user(
    shared_resources: Resources, signing_key: SigningKey
) -> AsyncIterator[UserFactory]:
    """Creates users with tokens for this test; deletes them, and what they sent, afterwards."""
    created: list[str] = []

    async def make(name: str = "test user") -> User:
        user_id = await store.create_user(shared_resources.db, name)
        created.append(user_id)
        return User(user_id, signing_key.issue(user_id))

    yield make
    for user_id in created:
        await store.delete_user(shared_resources.db, user_id)


@pytest.fixture
async def test_user(make_user: UserFactory) -> User:
    """A user row created in the worker's schema, and a signed token for it."""
    return await make_user("test user")


@pytest.fixture
async def ws_session(shared_app: LiveApp, test_user: User) -> AsyncIterator[WsClient]:
    """A fresh WebSocket for `test_user`; the test ends only once the server drained it."""
    async with shared_app.websocket_session(user=test_user) as ws:
        yield ws


# Run-level plumbing: the xdist controller shares the run id and gathers the workers' reports.


def pytest_configure(config: pytest.Config) -> None:
    run_context.configure(config)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: object) -> None:
    """xdist controller: hand each starting worker what the run shares."""
    run_context.configure_node(node)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    """xdist controller: keep what a finished worker reported."""
    run_report.collect(node)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    report: pytest.TestReport = yield
    run_report.count(item.config, report)
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    run_report.finish(session.config, run_context.run_id(session.config))
