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
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from .clients import percentiles
from .processes import deadline, namespace, offer, service, users

HEALTHY = 20
INTERVAL_S = 0.02
# How long past its end a phase may run before the run fails: a reply that never comes.
GRACE_S = 60.0
RESULTS = Path(__file__).parent / "results" / "flood.json"
# With the budget out of the way: a burst no flood reaches within the measurement.
NO_BUDGET = {"REQUEST_RATE": "1000000", "REQUEST_BURST": "100000000"}


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
                        # send returns without yielding while the kernel takes the bytes (some
                        # megabytes on loopback): without this the reader never ran, and the
                        # server's close (4029, with the budget) went unseen until the end.
                        await asyncio.sleep(0)
                finally:
                    reading.cancel()


async def phase(url: str, tokens: list[str], flooder: str | None, seconds: float) -> dict[str, Any]:
    flooding = None
    if flooder is not None:
        flooding = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "loadtest.flood", "--flood", url, flooder, str(seconds + 1)
        )
    late = f"healthy clients still waited for replies {GRACE_S:.0f} s after the phase's end"
    try:
        async with deadline(seconds + GRACE_S, lambda: late):
            results = await asyncio.gather(*(healthy_client(url, t, seconds) for t in tokens))
    finally:
        if flooding is not None:
            flooding.kill()
            await flooding.wait()
    round_trips = [rtt for client in results for rtt in client]
    return {"pings": len(round_trips), **percentiles(round_trips)}


async def measure(seconds: float) -> dict[str, Any]:
    # Named like a test run's, so the test harness's reaper also clears what a crash left.
    run_id = f"loadtest{secrets.token_hex(3)}"
    with namespace(run_id) as environment:
        environment, tokens = users(environment, HEALTHY + 1)
        results: dict[str, Any] = {
            "run_id": run_id,
            "healthy_clients": HEALTHY,
            "ping_every_ms": INTERVAL_S * 1000,
        }
        for budget, changes in (("default budget", {}), ("no budget", NO_BUDGET)):
            async with service({**environment, **changes}) as server:
                for name, flooder in (("quiet", None), ("flood", tokens[-1])):
                    print(f"{budget}, {name}: {HEALTHY} clients for {seconds:.0f}s ...", flush=True)
                    results[f"{budget}, {name}"] = await phase(
                        server.url, tokens[:-1], flooder, seconds
                    )
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
