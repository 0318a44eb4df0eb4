"""`make loadtest`: the service's fan-out, latency and memory, against a bare broadcast server.

Each scenario runs twice in one go, on the service (its own `serve` processes, on a schema and
Redis prefix of their own) and on the reference server (reference.py), with the same clients on
the same machine. Each figure is reported with its ratio to the reference's: the limit the
service is held against. Loopback only; every scenario is bounded in count and time.

    fanout      1 publisher -> SUBSCRIBERS subscribers, MESSAGES messages, as fast as acked
    publishers  20 publishers -> 10 subscribers, 50 messages each
    latency     1 publisher -> SUBSCRIBERS subscribers at 2 Hz for SECONDS: p50, p99, max
    held        CONNECTIONS idle connections on one instance: resident memory per connection,
                how many were held (failures: those that could not be opened), how long they
                took to open
    instances   fanout with the subscribers split over two service instances sharing Redis
    capacity    held with CAPACITY connections (50,000): not run unless named in --scenarios

Then the service alone on two Redis topologies, each with STREAM_PARTITIONS 1 and 12: the run's
Redis (one node) and a 3-master Redis Cluster the load test starts on loopback ports:

    channels    PUBLISHERS publishers, each on a channel of its own, MESSAGES messages each as
                fast as acked, to SUBSCRIBERS subscribers spread over those channels and over
                two instances: the fan-out of many channels, which partitions spread

Writes loadtest/results/latest.json and latest.png, and prints the tables. The load test raises
its open-file limit to the hard limit, for itself and every process it starts, and says how to
raise the hard limit where that is too low for the connections asked for.

    make loadtest        (or: python -m loadtest.run --subscribers 1000 --connections 10000)
    make loadtest LOADTEST_ARGS="--scenarios capacity --no-topologies"
"""

import argparse
import asyncio
import contextlib
import dataclasses
import json
import secrets
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import redis

from . import clients
from .clients import Received, percentiles
from .processes import (
    Server,
    deadline,
    namespace,
    raise_file_limit,
    reference,
    rss_bytes,
    service,
    users,
)
from harness.embedded import embedded_cluster

RESULTS = Path(__file__).parent / "results"
CHANNEL = "room:load"
PROCESSES = 2
HELD_PROCESSES = 4
PUBLISHERS, PUBLISHER_SUBSCRIBERS, PUBLISHER_MESSAGES = 20, 10, 50
CLUSTER_MASTERS = 3
PARTITIONS = (1, 12)
READY_TIMEOUT_S = 120.0
WARM = 100
# The server's own files beyond its connections: pools, pipes, logs, the listening socket.
FILE_HEADROOM = 1_000
# A subscriber process reports every latency it measured on one line.
RESULT_LINE_BYTES = 64 * 1024 * 1024
# Out of the load test's way: the limits, and the keepalive pings, meant for real clients.
UNLIMITED = {
    "MAX_CONNECTIONS_PER_USER": "1000000",
    "MAX_CONNECTIONS_PER_IP": "1000000",
    "PUBLISH_LIMIT": "1000000",
    "PING_INTERVAL_S": "600",
}

Collect = Callable[[], Awaitable[Received]]


@dataclasses.dataclass(frozen=True, slots=True)
class Side:
    """One server under load: the service (with tokens) or the reference (without)."""

    name: str
    servers: list[Server]
    tokens: list[str]

    async def publish(
        self, count: int, every_s: float = 0.0, publisher: int = 0, channel: str = CHANNEL
    ) -> list[float]:
        """Publish through the first server; the ack latencies (the reference sends none)."""
        url = self.servers[0].url
        if not self.tokens:
            await clients.broadcast(url, channel, count, every_s)
            return []
        return await clients.publish(url, self.tokens[publisher], channel, count, every_s)

    @contextlib.asynccontextmanager
    async def subscribers(
        self,
        count: int,
        expect: int,
        seconds: float,
        processes: int = PROCESSES,
        channels: Sequence[str] = (CHANNEL,),
    ) -> AsyncIterator[Collect]:
        """`count` connections over `processes` processes and this side's servers, all ready,
        spread over `channels`; yields what collects their results."""
        shares = [count // processes + (i < count % processes) for i in range(processes)]
        auth = [self.tokens[-1], ",".join(channels)] if self.tokens else []
        children = []
        try:
            for i, share in enumerate(shares):
                url = self.servers[i % len(self.servers)].url
                children.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-m",
                        "loadtest.clients",
                        url,
                        str(share),
                        str(expect),
                        str(seconds),
                        *auth,
                        stdin=asyncio.subprocess.PIPE,
                        stdout=asyncio.subprocess.PIPE,
                        limit=RESULT_LINE_BYTES,
                    )
                )
            async with asyncio.timeout(READY_TIMEOUT_S):
                for child in children:
                    assert child.stdout is not None
                    if await child.stdout.readline() != b"ready\n":
                        raise RuntimeError(f"{self.name}: a subscriber process could not connect")

            async def collect() -> Received:
                merged = Received()
                for child in children:
                    assert child.stdin is not None and child.stdout is not None
                    child.stdin.close()
                    part = Received(**json.loads(await child.stdout.readline()))
                    merged.deliveries += part.deliveries
                    merged.first = min(merged.first, part.first)
                    merged.last = max(merged.last, part.last)
                    merged.latencies_ms += part.latencies_ms
                    merged.failures += part.failures
                return merged

            yield collect
        finally:
            for child in children:
                if child.returncode is None:
                    child.kill()
                await child.wait()


def delivery_figures(
    got: Received, started: float, expected: int, acks: list[list[float]] | None = None
) -> dict[str, Any]:
    """A delivery scenario's figures: rate since `started`, how many of `expected` arrived, the
    latency percentiles, and those of the publishers' acks where there are any."""
    figures = {
        "deliveries_per_s": round(got.deliveries / max(got.last - started, 1e-9)),
        "delivered": f"{got.deliveries}/{expected}",
        **percentiles(got.latencies_ms),
    }
    if acks is not None:
        figures |= {f"ack_{k}": v for k, v in percentiles([ms for p in acks for ms in p]).items()}
    return figures


async def fanout(side: Side, subscribers: int, messages: int, seconds: float) -> dict[str, Any]:
    async with side.subscribers(subscribers, messages, seconds) as collect:
        started = time.time()
        await side.publish(messages)
        got = await collect()
    return delivery_figures(got, started, subscribers * messages)


async def publishers(side: Side, seconds: float) -> dict[str, Any]:
    expect = PUBLISHERS * PUBLISHER_MESSAGES
    async with side.subscribers(PUBLISHER_SUBSCRIBERS, expect, seconds, processes=1) as collect:
        started = time.time()
        acks = await asyncio.gather(
            *(side.publish(PUBLISHER_MESSAGES, publisher=n) for n in range(PUBLISHERS))
        )
        got = await collect()
    return delivery_figures(got, started, PUBLISHER_SUBSCRIBERS * expect, acks)


async def many_channels(
    side: Side, subscribers: int, messages: int, seconds: float
) -> dict[str, Any]:
    """PUBLISHERS publishers, each on its own channel, to subscribers spread over the channels."""
    channels = [f"{CHANNEL}-{n}" for n in range(PUBLISHERS)]
    async with side.subscribers(subscribers, messages, seconds, channels=channels) as collect:
        started = time.time()
        acks = await asyncio.gather(
            *(side.publish(messages, publisher=n, channel=channels[n]) for n in range(PUBLISHERS))
        )
        got = await collect()
    return delivery_figures(got, started, subscribers * messages, acks)


async def fixed_rate(side: Side, subscribers: int, seconds: float) -> dict[str, Any]:
    messages = int(seconds * 2)
    async with side.subscribers(subscribers, messages, seconds + 30) as collect:
        await side.publish(messages, every_s=0.5)
        got = await collect()
    return {
        "delivered": f"{got.deliveries}/{subscribers * messages}",
        **percentiles(got.latencies_ms),
    }


async def held(side: Side, connections: int) -> dict[str, Any]:
    """`connections` idle connections on one server: how many it held, and its resident memory
    per connection, measured between WARM connections and WARM more than `connections`, so what
    the first connections set up once is not counted."""
    pid = side.servers[0].pid
    async with side.subscribers(WARM, 0, 0, processes=1) as warm:
        before = rss_bytes(pid)
        started = time.perf_counter()
        async with side.subscribers(connections, 0, 0, processes=HELD_PROCESSES) as collect:
            opened_s = time.perf_counter() - started
            during = rss_bytes(pid)
            failures = (await collect()).failures
        await warm()
    held = connections - failures
    return {
        "held": held,
        "failures": failures,
        "rss_per_connection_kb": round((during - before) / max(held, 1) / 1024, 1),
        "open_s": round(opened_s, 1),
    }


@dataclasses.dataclass(frozen=True, slots=True)
class Options:
    subscribers: int
    messages: int
    connections: int
    capacity: int
    seconds: float
    timeout_s: float


SCENARIOS: dict[str, Callable[[Side, Options], Awaitable[dict[str, Any]]]] = {
    "fanout": lambda side, o: fanout(side, o.subscribers, o.messages, o.seconds * 6),
    "publishers": lambda side, o: publishers(side, o.seconds * 6),
    "latency": lambda side, o: fixed_rate(side, o.subscribers, o.seconds),
    "held": lambda side, o: held(side, o.connections),
    "instances": lambda side, o: fanout(side, o.subscribers, o.messages, o.seconds * 6),
    "capacity": lambda side, o: held(side, o.capacity),
}
# `capacity` takes minutes and gigabytes: only when asked for.
DEFAULT_SCENARIOS = [name for name in SCENARIOS if name != "capacity"]
# Ratios only where the two sides did the same work: higher is better for these, lower for
# latencies and memory.
HIGHER_IS_BETTER = ("deliveries_per_s", "held")


@contextlib.asynccontextmanager
async def sides(
    scenario: str, environment: dict[str, str], tokens: list[str]
) -> AsyncIterator[list[Side]]:
    """Fresh servers for one scenario: the service (two instances for `instances`), then the
    reference."""
    instances = 2 if scenario == "instances" else 1
    async with contextlib.AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(service(environment)) for _ in range(instances)]
        bare = await stack.enter_async_context(reference())
        yield [Side("service", servers, tokens), Side("reference", [bare], [])]


def ratios(mine: dict[str, Any], theirs: dict[str, Any]) -> dict[str, float]:
    return {
        key: round(value / theirs[key], 2)
        for key, value in mine.items()
        if isinstance(value, int | float) and theirs.get(key)
    }


async def bounded(scenario: str, side: Side, options: Options) -> dict[str, Any]:
    """One scenario on one side, failing with its name if it overruns the time it was given."""
    overran = f"{scenario} on the {side.name} took over {options.timeout_s:.0f} s"
    async with deadline(options.timeout_s, lambda: overran):
        return await SCENARIOS[scenario](side, options)


async def measure(scenarios: list[str], options: Options, topologies: bool) -> dict[str, Any]:
    run_id = f"loadtest{secrets.token_hex(3)}"
    results: dict[str, Any] = {
        "run_id": run_id,
        "options": dataclasses.asdict(options),
        "scenarios": {},
        "topologies": {},
    }
    with namespace(run_id) as environment:
        environment, tokens = users({**environment, **UNLIMITED}, PUBLISHERS + 1)
        for scenario in scenarios:
            row: dict[str, Any] = {}
            async with sides(scenario, environment, tokens) as (mine, bare):
                for side in (mine, bare):
                    print(f"{scenario}: {side.name} ...", flush=True)
                    row[side.name] = await bounded(scenario, side, options)
            row["ratio"] = ratios(row["service"], row["reference"])
            results["scenarios"][scenario] = row
    if topologies:
        results["topologies"] = await on_topologies(run_id, options)
    return results


async def on_topologies(run_id: str, options: Options) -> dict[str, Any]:
    """`channels` over one Redis node (the run's) and over a CLUSTER_MASTERS-master cluster
    started here, with each count of PARTITIONS."""
    rows: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="loadtest-cluster-") as workdir,
        embedded_cluster(Path(workdir), CLUSTER_MASTERS) as cluster,
    ):
        # The run's Redis may be shared, so only the cluster's servers count their XADDs.
        for topology, redis_url, masters in (
            ("one node", None, []),
            (f"{CLUSTER_MASTERS}-master cluster", cluster.urls[0], cluster.urls),
        ):
            with namespace(run_id, redis_url) as environment:
                environment, tokens = users({**environment, **UNLIMITED}, PUBLISHERS + 1)
                for partitions in PARTITIONS:
                    name = f"{topology}, {partitions} partition{'s' if partitions > 1 else ''}"
                    partitioned = {**environment, "STREAM_PARTITIONS": str(partitions)}
                    before = stream_writes(masters)
                    rows[name] = await channels_on(name, partitioned, tokens, options)
                    after = stream_writes(masters)
                    shares = [now - then for now, then in zip(after, before, strict=True)]
                    rows[name]["xadds_per_master"] = "/".join(map(str, shares)) or "-"
    return rows


def stream_writes(urls: list[str]) -> list[int]:
    """How many XADDs each of the servers at `urls` has run."""
    counts = []
    for url in urls:
        client = redis.Redis.from_url(url)
        try:
            calls = client.info("commandstats").get("cmdstat_xadd", {}).get("calls", 0)
        finally:
            client.close()
        counts.append(int(calls))
    return counts


async def channels_on(
    name: str, environment: dict[str, str], tokens: list[str], options: Options
) -> dict[str, Any]:
    """`channels` on two fresh service instances in `environment`."""
    print(f"channels: {name} ...", flush=True)
    async with contextlib.AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(service(environment)) for _ in range(2)]
        overran = f"channels on {name} took over {options.timeout_s:.0f} s"
        async with deadline(options.timeout_s, lambda: overran):
            return await many_channels(
                Side("service", servers, tokens),
                options.subscribers,
                options.messages,
                options.seconds * 6,
            )


def table(results: dict[str, Any]) -> str:
    lines = [f"{'scenario':<11} {'figure':<22} {'service':>10} {'reference':>10} {'ratio':>7}"]
    for scenario, row in results["scenarios"].items():
        for key, value in row["service"].items():
            theirs = row["reference"].get(key, "")
            ratio = row["ratio"].get(key, "")
            lines.append(f"{scenario:<11} {key:<22} {value!s:>10} {theirs!s:>10} {ratio!s:>7}")
    topologies = results["topologies"]
    if topologies:
        figures = list(next(iter(topologies.values())))
        lines += ["", f"{'channels on':<30} " + " ".join(f"{key:>16}" for key in figures)]
        for name, row in topologies.items():
            lines.append(f"{name:<30} " + " ".join(f"{row.get(key, '')!s:>16}" for key in figures))
    return "\n".join(lines)


def chart(results: dict[str, Any], path: Path) -> None:
    """Each figure as the service's share of the reference's, one bar each."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    labels, values = [], []
    for scenario, row in results["scenarios"].items():
        for key, ratio in row["ratio"].items():
            labels.append(f"{scenario}\n{key}")
            values.append(ratio)
    figure, axes = pyplot.subplots(figsize=(max(6, len(labels) * 0.9), 4))
    axes.bar(labels, values, color="#4878a8")
    axes.axhline(1.0, color="grey", linewidth=0.8)
    axes.set_ylabel("service / bare broadcast server")
    axes.set_title("make loadtest: the service against a bare websockets broadcast server")
    axes.tick_params(axis="x", labelsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=50, help="per fan-out scenario")
    parser.add_argument("--connections", type=int, default=10_000, help="held idle")
    parser.add_argument(
        "--capacity", type=int, default=50_000, help="held idle by the capacity scenario"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="of the fixed-rate scenario")
    parser.add_argument("--scenarios", nargs="*", choices=SCENARIOS, default=DEFAULT_SCENARIOS)
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds each scenario may take on each side"
    )
    parser.add_argument(
        "--topologies",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run `channels` on one Redis node and on a Redis Cluster, partitioned or not",
    )
    args = parser.parse_args()
    options = Options(
        args.subscribers,
        args.messages,
        args.connections,
        args.capacity,
        args.seconds,
        args.timeout,
    )
    most_held = args.capacity if "capacity" in args.scenarios else args.connections
    raise_file_limit(WARM + max(most_held, args.subscribers) + FILE_HEADROOM)
    results = asyncio.run(measure(args.scenarios, options, args.topologies))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    chart(results, RESULTS / "latest.png")
    print("\n" + table(results))
    print(f"\nwrote {RESULTS / 'latest.json'} and latest.png")


if __name__ == "__main__":
    main()
