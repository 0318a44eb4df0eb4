"""What every load test runs on: a namespace of its own, users, and servers as processes.

The service runs as real `serve` processes on a schema and Redis prefix of their own, named like
a test run's so the test harness's reaper also clears what a crashed load test left. The
reference server is a bare `websockets` broadcast server (reference.py). All of it is gone when
the blocks end, whatever happens.
"""

import asyncio
import contextlib
import json
import os
import resource
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import psycopg
from psycopg import sql
from websockets.typing import Subprotocol

from {{ cookiecutter.package_name }}.auth import SigningKey
from {{ cookiecutter.package_name }}.protocol import BEARER_PREFIX, PROTOCOL
from {{ cookiecutter.package_name }}.resources import connection_kwargs
from {{ cookiecutter.package_name }}.server import raise_open_file_limit

from harness.embedded import free_port
from harness.namespaces import Postgres, redis_prefix, schema_name, worker_schema
from harness.services import resolve

START_TIMEOUT_S = 30.0
# Past the service's own SHUTDOWN_TIMEOUT_S (10 s): a server still running then is a bug to see.
STOP_TIMEOUT_S = 30.0
LOG_TAIL_LINES = 30


def raise_file_limit(needed: int) -> None:
    """Raise this process's open-file limit to its hard limit, which the servers and clients it
    starts inherit; fail, saying how to raise the hard limit, if that is below `needed`."""
    limit = raise_open_file_limit()
    if limit != resource.RLIM_INFINITY and limit < needed:
        raise RuntimeError(
            f"{needed} open files are needed and the limit is {limit}: raise it for the"
            f" shell that runs the load test (as root: `ulimit -Hn {needed}`, or"
            f" `prlimit --pid $$ --nofile={needed}:{needed}`; in a container:"
            f" `docker run --ulimit nofile={needed}:{needed}`; for a login: `nofile` in"
            " /etc/security/limits.conf)"
        )


@dataclass(frozen=True, slots=True)
class Server:
    """A server process listening on `url`."""

    url: str
    pid: int


def offer(token: str) -> list[Subprotocol]:
    """The subprotocols a client offers: the protocol, and its token the way browsers pass it."""
    return [Subprotocol(PROTOCOL), Subprotocol(BEARER_PREFIX + token)]


@contextlib.asynccontextmanager
async def deadline(seconds: float, overran: Callable[[], str]) -> AsyncIterator[None]:
    """asyncio.timeout, failing with a RuntimeError that says what overran (`overran()`, asked
    then) instead of a bare TimeoutError; a TimeoutError of the block's own passes through."""
    try:
        async with asyncio.timeout(seconds) as timer:
            yield
    except TimeoutError:
        if not timer.expired():
            raise
        raise RuntimeError(overran()) from None


@contextlib.contextmanager
def namespace(run_id: str, redis_url: str | None = None) -> Iterator[dict[str, str]]:
    """A migrated schema and a Redis prefix (on `redis_url` if given, else the run's Redis),
    removed at the end; yields the service's environment for them."""
    with contextlib.ExitStack() as stack:
        services = resolve(stack)
        redis_url = redis_url or services.redis_url
        prefix = redis_prefix(run_id, "load")
        schema = stack.enter_context(
            worker_schema(Postgres.of(services), redis_url, schema_name(run_id, "load"), prefix)
        )
        yield {
            "DATABASE_URL": services.database_url,
            "DATABASE_POOLER": services.database_pooler,
            "DATABASE_SCHEMA": schema,
            "REDIS_URL": redis_url,
            "REDIS_PREFIX": prefix,
        }


def users(environment: dict[str, str], count: int) -> tuple[dict[str, str], list[str]]:
    """Create `count` users in the namespace; return the environment that trusts their tokens,
    and the tokens."""
    key = SigningKey.generate("loadtest")
    users_table = sql.Identifier(environment["DATABASE_SCHEMA"], "users")
    pooled = connection_kwargs(environment["DATABASE_POOLER"])
    with psycopg.connect(environment["DATABASE_URL"], **pooled) as conn:
        rows = conn.execute(
            sql.SQL(
                "INSERT INTO {} (name) SELECT 'load ' || n FROM generate_series(1, %s) AS n"
                " RETURNING id"
            ).format(users_table),
            [count],
        ).fetchall()
    trusting = {**environment, "AUTH_KEYS": json.dumps(key.jwks())}
    return trusting, [key.issue(str(row[0])) for row in rows]


@contextlib.asynccontextmanager
async def process(
    arguments: list[str], environment: dict[str, str], ready: bytes, path: str = "/ws"
) -> AsyncIterator[Server]:
    """Run `python <arguments>` with PORT set; yield once it printed `ready` on stderr, and stop
    it with SIGTERM at the end. A server that does not start or stop in time is killed, and the
    error quotes the end of its log."""
    port = free_port()
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        *arguments,
        env={**os.environ, **environment, "PORT": str(port)},
        stderr=asyncio.subprocess.PIPE,
    )
    log: deque[str] = deque(maxlen=LOG_TAIL_LINES)
    # Reading its log all along also keeps the pipe from filling up and blocking the server.
    listening: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    reading = asyncio.create_task(_read_log(child, log, ready, listening))
    try:
        late = f"did not listen within {START_TIMEOUT_S:.0f} s"
        async with deadline(START_TIMEOUT_S, lambda: _failure(arguments, late, log)):
            if not await listening:
                raise RuntimeError(_failure(arguments, "exited before it listened", log))
        yield Server(f"ws://127.0.0.1:{port}{path}", child.pid)
    finally:
        try:
            await _stop(child, arguments, log)
        finally:
            reading.cancel()


async def _read_log(
    child: asyncio.subprocess.Process,
    log: deque[str],
    ready: bytes,
    listening: asyncio.Future[bool],
) -> None:
    """Keep the last lines of a server's stderr; `listening` is True once `ready` shows, False
    if the server exits first."""
    assert child.stderr is not None
    async for line in child.stderr:
        log.append(line.decode(errors="replace").rstrip())
        if ready in line and not listening.done():
            listening.set_result(True)
    if not listening.done():
        listening.set_result(False)


async def _stop(child: asyncio.subprocess.Process, arguments: list[str], log: deque[str]) -> None:
    """SIGTERM, as an orchestrator stops a server; SIGKILL and an error if that takes too long."""
    if child.returncode is not None:
        return
    child.terminate()
    try:
        async with asyncio.timeout(STOP_TIMEOUT_S):
            await child.wait()
    except TimeoutError:
        child.kill()
        await child.wait()
        message = f"did not stop within {STOP_TIMEOUT_S:.0f} s of SIGTERM (killed)"
        raise RuntimeError(_failure(arguments, message, log)) from None


def _failure(arguments: list[str], what: str, log: deque[str]) -> str:
    return f"{' '.join(arguments)} {what}; its log ended:\n" + "\n".join(log)


def service(environment: dict[str, str]) -> contextlib.AbstractAsyncContextManager[Server]:
    """The service's own `serve`, as a process."""
    command = ["-m", "{{ cookiecutter.package_name }}", "serve"]
    return process(command, environment, b"Uvicorn running on")


def reference() -> contextlib.AbstractAsyncContextManager[Server]:
    """The bare broadcast server the service is held against, as a process."""
    return process(["-m", "loadtest.reference"], {}, b"listening", path="/")


def rss_bytes(pid: int) -> int:
    """A process's resident memory, from /proc."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")
