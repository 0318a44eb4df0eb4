"""Fairness under a flood: healthy clients' round trips while one client floods the service.

Runs the service as a process of its own, on a schema and Redis prefix of its own, then times
the ping round trips of HEALTHY clients, each pinging every INTERVAL_S: first alone, then while
a flooder (another process) sends pings as fast as its socket lets it, reading every reply, and
reconnects whenever it is closed. Both phases run with the default request budget and again with
the budget out of the way (only the reader's yield left), so the table shows what each lever buys.
Prints p50/p99/max per phase and writes loadtest/results/flood.json. The schema, the keys and
the processes are gone at the end, whatever happens.

    make loadtest-flood                        (or: python -m loadtest.flood --seconds 5)
"""

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from {{ cookiecutter.package_name }}.auth import SigningKey
from {{ cookiecutter.package_name }}.protocol import BEARER_PREFIX, PROTOCOL

from harness.embedded import free_port
from harness.namespaces import redis_prefix, schema_name, unlink_prefix, worker_schema
from harness.services import resolve

HEALTHY = 20
INTERVAL_S = 0.02
RESULTS = Path(__file__).parent / "results" / "flood.json"
START_TIMEOUT_S = 20.0
# With the budget out of the way: a burst no flood reaches within the measurement.
NO_BUDGET = {"REQUEST_RATE": "1000000", "REQUEST_BURST": "100000000"}


def offer(token: str) -> list[Subprotocol]:
    return [Subprotocol(PROTOCOL), Subprotocol(BEARER_PREFIX + token)]


def create_users(database_url: str, schema: str, count: int) -> list[str]:
    with psycopg.connect(database_url, options=f"-c search_path={schema}") as conn:
        rows = conn.execute(
            "INSERT INTO users (name) SELECT 'load ' || n FROM generate_series(1, %s) AS n"
            " RETURNING id",
            [count],
        ).fetchall()
    return [str(row[0]) for row in rows]


@contextlib.asynccontextmanager
async def service(environment: dict[str, str]) -> AsyncIterator[str]:
    """The service as its own process; yields its WebSocket URL once it listens."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "{{ cookiecutter.package_name }}",
        "serve",
        env={**os.environ, **environment, "PORT": str(port)},
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    draining: asyncio.Task[bytes] | None = None
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            while b"Uvicorn running on" not in await process.stderr.readline():
                if process.stderr.at_eof():
                    raise RuntimeError("the service exited before it listened")
        # Keep reading its log, or the pipe fills up and the service blocks writing to it.
        draining = asyncio.create_task(process.stderr.read())
        yield f"ws://127.0.0.1:{port}/ws"
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            process.send_signal(signal.SIGINT)  # a second signal: stop now, no drain
            await process.wait()
        if draining is not None:
            draining.cancel()


async def healthy_client(url: str, token: str, seconds: float) -> list[float]:
    """Ping every INTERVAL_S for `seconds`; return the round trips in milliseconds."""
    round_trips = []
    async with connect(url, subprotocols=offer(token)) as ws:
        await ws.recv()  # the welcome
        deadline = time.monotonic() + seconds
        n = 0
        while time.monotonic() < deadline:
            started = time.perf_counter()
            await ws.send(json.dumps({"type": "ping", "id": n}))
            while json.loads(await ws.recv()).get("id") != n:
                pass
            round_trips.append((time.perf_counter() - started) * 1000)
            n += 1
            await asyncio.sleep(INTERVAL_S)
    return round_trips


async def flood(url: str, token: str, seconds: float) -> None:
    """Send pings as fast as the socket takes them, reading every reply; reconnect when closed."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(ConnectionClosed, OSError):
            async with connect(url, subprotocols=offer(token)) as ws:

                async def read() -> None:
                    async for _ in ws:
                        pass

                reading = asyncio.create_task(read())
                try:
                    while time.monotonic() < deadline:
                        await ws.send('{"type": "ping"}')
                finally:
                    reading.cancel()


def summary(round_trips: list[float]) -> dict[str, float]:
    ordered = sorted(round_trips)
    return {
        "pings": len(ordered),
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[int(len(ordered) * 0.99)], 2),
        "max_ms": round(ordered[-1], 2),
    }


async def phase(url: str, tokens: list[str], flooder: str | None, seconds: float) -> dict[str, Any]:
    flooding = None
    if flooder is not None:
        flooding = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "loadtest.flood", "--flood", url, flooder, str(seconds + 1)
        )
    try:
        results = await asyncio.gather(*(healthy_client(url, t, seconds) for t in tokens))
    finally:
        if flooding is not None:
            flooding.kill()
            await flooding.wait()
    return summary([rtt for client in results for rtt in client])


@contextlib.contextmanager
def namespace(run_id: str) -> Iterator[tuple[str, str, str, str]]:
    """(database URL, Redis URL, schema, prefix): migrated, and removed at the end."""
    with contextlib.ExitStack() as stack:
        services = resolve(stack)
        prefix = redis_prefix(run_id, "flood")
        schema = stack.enter_context(
            worker_schema(services.database_url, schema_name(run_id, "flood"), prefix)
        )
        stack.callback(unlink_prefix, services.redis_url, prefix)
        yield services.database_url, services.redis_url, schema, prefix


async def measure(seconds: float) -> dict[str, Any]:
    key = SigningKey.generate("loadtest")
    # Named like a test run's, so the test harness's reaper also clears what a crash left.
    run_id = f"loadtest{secrets.token_hex(3)}"
    with namespace(run_id) as (database_url, redis_url, schema, prefix):
        users = create_users(database_url, schema, HEALTHY + 1)
        tokens = [key.issue(user) for user in users]
        environment = {
            "DATABASE_URL": database_url,
            "DATABASE_SCHEMA": schema,
            "REDIS_URL": redis_url,
            "REDIS_PREFIX": prefix,
            "AUTH_KEYS": json.dumps(key.jwks()),
        }
        results: dict[str, Any] = {
            "run_id": run_id,
            "healthy_clients": HEALTHY,
            "ping_every_ms": INTERVAL_S * 1000,
        }
        for budget, changes in (("default budget", {}), ("no budget", NO_BUDGET)):
            async with service({**environment, **changes}) as url:
                for name, flooder in (("quiet", None), ("flood", tokens[-1])):
                    print(f"{budget}, {name}: {HEALTHY} clients for {seconds:.0f}s ...", flush=True)
                    results[f"{budget}, {name}"] = await phase(url, tokens[:-1], flooder, seconds)
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each phase")
    parser.add_argument(
        "--flood", nargs=3, metavar=("URL", "TOKEN", "SECONDS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.flood:
        url, token, seconds = args.flood
        asyncio.run(flood(url, token, float(seconds)))
        return
    results = asyncio.run(measure(args.seconds))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    columns = ("pings", "p50_ms", "p99_ms", "max_ms")
    print(f"\n{'phase':<26}" + "".join(f"{column:>9}" for column in columns))
    for name, row in results.items():
        if isinstance(row, dict):
            print(f"{name:<26}" + "".join(f"{row[column]:>9}" for column in columns))
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
