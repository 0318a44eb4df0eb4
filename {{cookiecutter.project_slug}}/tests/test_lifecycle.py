"""How connections end: token expiry, dead peers, failures, and the service shutting down."""

import asyncio
import contextlib
import json
import os
import resource
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from {{ cookiecutter.package_name }} import store
from {{ cookiecutter.package_name }}.auth import SigningKey
from {{ cookiecutter.package_name }}.protocol import (
    CloseCode,
)
from {{ cookiecutter.package_name }}.resources import Resources
from {{ cookiecutter.package_name }}.settings import Settings

from harness.embedded import free_port
from harness.live import AppFactory, LiveApp, offer
from harness.scrape import closes
from harness.stalled import StalledClient
from harness.users import User, UserFactory
from harness.wsclient import WsClient

PACKAGE = "{{ cookiecutter.package_name }}"
EXIT_TIMEOUT_S = 15.0


async def test_expiring_token_closes_the_session_with_4001(
    shared_app: LiveApp, test_user: User, signing_key: SigningKey
) -> None:
    # Long enough to survive a handshake on a loaded machine, well inside the client's timeout.
    short_lived = User(test_user.id, signing_key.issue(test_user.id, ttl=2.0))
    expired_before = closes(shared_app.service.metrics).get(CloseCode.TOKEN_EXPIRED, 0)
    async with shared_app.websocket_session(user=short_lived) as ws:
        assert await ws.closed_with() == CloseCode.TOKEN_EXPIRED
    assert closes(shared_app.service.metrics).get(CloseCode.TOKEN_EXPIRED, 0) == expired_before + 1


async def test_dead_peer_is_dropped_by_the_heartbeat(
    another_app: AppFactory, test_user: User
) -> None:
    async with another_app(ping_interval_s=0.1, ping_timeout_s=0.1) as live:
        silent = StalledClient(live.url, test_user.token)
        await silent.open()
        session = next(iter(live.service.registry.sessions_of(test_user.id)))
        # Nothing more is read, so the server's pings go unanswered.
        await live.wait_drained(session.id)
        silent.writer.close()


async def test_unexpected_failure_closes_with_1011_and_others_carry_on(
    shared_app: LiveApp, shared_resources: Resources, make_user: UserFactory
) -> None:
    victim, bystander = await make_user("victim"), await make_user("bystander")
    # A bug's stand-in: the victim's publish counter is not the sorted set the rate limit's
    # script expects (WRONGTYPE), an error no outage explains.
    counter = shared_resources.keys.key("ratelimit", victim.id, "publish")
    await shared_resources.redis.set(counter, "not a sorted set")
    async with shared_app.websocket_session(user=victim) as ws:
        await ws.send({"type": "publish", "id": 1, "channel": "room:fail", "data": 1})
        assert await ws.closed_with() == CloseCode.INTERNAL_ERROR
    async with shared_app.websocket_session(user=bystander) as healthy:
        await healthy.publish("room:fail", "still fine")


async def wait_for_log(stream: asyncio.StreamReader, fragment: str) -> list[dict[str, object]]:
    """Read JSON log lines until one's message contains `fragment`; return all read."""
    lines: list[dict[str, object]] = []
    async with asyncio.timeout(EXIT_TIMEOUT_S):
        while True:
            raw = await stream.readline()
            assert raw, f"the service exited before logging {fragment!r}: {lines}"
            entry = json.loads(raw)
            lines.append(entry)
            if fragment in str(entry["message"]):
                return lines


@contextlib.asynccontextmanager
async def serving(
    settings: Settings,
    signing_key: SigningKey,
    rootpath: Path,
    shutdown_delay_s: float,
    *,
    open_files: int | None = None,
) -> AsyncIterator[tuple[asyncio.subprocess.Process, int, list[dict[str, object]]]]:
    """`serve` as a process of its own on a free port, once it listens: (process, port, the log
    lines of its start), started under a soft limit of `open_files` where given. Killed on the
    way out if it has not exited."""
    command = ["-m", PACKAGE, "serve"]
    if open_files is not None:
        # Set in the child itself: a preexec_fn is not safe in a process with threads.
        lowered = (
            "import resource, runpy\n"
            "_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
            f"resource.setrlimit(resource.RLIMIT_NOFILE, ({open_files}, hard))\n"
            f"runpy.run_module({PACKAGE!r}, run_name='__main__', alter_sys=True)"
        )
        command = ["-c", lowered, "serve"]
    port = free_port()
    environment = {
        **os.environ,
        "PYTHONPATH": str(rootpath / "src"),
        "DATABASE_URL": settings.database_url,
        "DATABASE_POOLER": settings.database_pooler,
        "DATABASE_SCHEMA": settings.database_schema,
        "REDIS_URL": settings.redis_url,
        "REDIS_PREFIX": settings.redis_prefix,
        "AUTH_KEYS": json.dumps(signing_key.jwks()),
        "PORT": str(port),
        "INSTANCE_ID": f"shutdown-{port}",
        "SHUTDOWN_DELAY_S": str(shutdown_delay_s),
    }
    service = await asyncio.create_subprocess_exec(
        sys.executable, *command, env=environment, stderr=asyncio.subprocess.PIPE
    )
    assert service.stderr is not None
    try:
        yield service, port, await wait_for_log(service.stderr, "Uvicorn running on")
    finally:
        if service.returncode is None:
            service.kill()
            await service.wait()


async def test_sigterm_drains_while_sessions_carry_on_and_a_second_signal_closes_them_with_1012(
    settings: Settings, signing_key: SigningKey, test_user: User, pytestconfig: pytest.Config
) -> None:
    # A delay no loaded machine runs out before the checks inside it: the second signal ends it.
    started = serving(settings, signing_key, pytestconfig.rootpath, 60.0)
    async with started as (service, port, _):
        assert service.stderr is not None
        async with connect(f"ws://127.0.0.1:{port}/ws", subprotocols=offer(test_user.token)) as ws:
            client = WsClient(ws)
            await client.next_of_type("welcome")
            service.send_signal(signal.SIGTERM)
            await wait_for_log(service.stderr, "draining")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                readiness = await http.get("/readyz")
            assert (readiness.status_code, readiness.json()) == (503, {"status": "draining"})
            assert (await client.request("ping"))["type"] == "pong", "live sessions carry on"
            service.send_signal(signal.SIGTERM)
            assert await client.closed_with() == CloseCode.SERVICE_RESTART
        closed = (await wait_for_log(service.stderr, "session closed"))[-1]
        assert closed["user_id"] == test_user.id and closed["session_id"]
        await wait_for_log(service.stderr, "Finished server process")
        # Like uvicorn, the service re-raises the signal once it has shut down cleanly.
        assert await asyncio.wait_for(service.wait(), EXIT_TIMEOUT_S) == -signal.SIGTERM


async def test_sigterm_closes_sessions_with_1012_once_the_drain_delay_has_passed(
    settings: Settings, signing_key: SigningKey, test_user: User, pytestconfig: pytest.Config
) -> None:
    delay_s = 0.3
    started = serving(settings, signing_key, pytestconfig.rootpath, delay_s)
    async with started as (service, port, _):
        async with connect(f"ws://127.0.0.1:{port}/ws", subprotocols=offer(test_user.token)) as ws:
            client = WsClient(ws)
            await client.next_of_type("welcome")
            signalled = time.monotonic()
            service.send_signal(signal.SIGTERM)
            assert await client.closed_with() == CloseCode.SERVICE_RESTART
            # However slow the machine, never before the delay: load balancers need it.
            assert time.monotonic() - signalled >= delay_s
        assert await asyncio.wait_for(service.wait(), EXIT_TIMEOUT_S) == -signal.SIGTERM


@pytest.mark.skipif(
    resource.getrlimit(resource.RLIMIT_NOFILE)[1] in (resource.RLIM_INFINITY, 256),
    reason="needs a finite hard limit on open files above the 256 the service is started under",
)
async def test_serve_raises_its_open_file_limit_to_the_hard_limit(
    settings: Settings, signing_key: SigningKey, pytestconfig: pytest.Config
) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    started = serving(settings, signing_key, pytestconfig.rootpath, 0.0, open_files=256)
    async with started as (_service, _port, lines):
        messages = [str(line["message"]) for line in lines]
    assert f"open-file limit {hard}: at most that many connections" in messages


async def test_add_user_needs_only_the_database_settings(
    settings: Settings, shared_resources: Resources, pytestconfig: pytest.Config
) -> None:
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(Path(pytestconfig.rootpath) / "src"),
        "DATABASE_URL": settings.database_url,
        "DATABASE_POOLER": settings.database_pooler,
        "DATABASE_SCHEMA": settings.database_schema,
    }
    command = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        PACKAGE,
        "add-user",
        "from the command line",
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(command.communicate(), EXIT_TIMEOUT_S)
    assert command.returncode == 0, stderr.decode()
    user_id = stdout.decode().strip()
    try:
        assert await store.is_active_user(shared_resources.db, user_id)
    finally:
        await store.delete_user(shared_resources.db, user_id)
