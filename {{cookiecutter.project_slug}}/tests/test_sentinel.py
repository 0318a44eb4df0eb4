"""Redis Sentinel: the service follows a failover under load and loses no acked message, a
primary that the failover demoted stops counting as ready, and so does a service whose primary
has crashed, until the Sentinel has promoted the replica.

Each test starts its own primary, replica and Sentinel on free loopback ports: the shared Redis
is never failed over.
"""

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from redis.asyncio.sentinel import MasterNotFoundError
from websockets.exceptions import ConnectionClosed

from {{ cookiecutter.package_name }} import health
from {{ cookiecutter.package_name }}.resources import Resources
from {{ cookiecutter.package_name }}.service import Service
from {{ cookiecutter.package_name }}.settings import Settings

from harness.embedded import RedisServer, embedded_redis, port_of, redis_server
from harness.live import AppFactory, LiveApp
from harness.users import User, UserFactory
from harness.wsclient import Frame, WsClient

MASTER = "mymaster"
# A Sentinel learns of replicas from the primary's INFO, which it asks for every 10 s at most;
# a failover it is told to make takes a few seconds more on a loaded machine.
SETTLE_TIMEOUT_S = 30.0
# From the Sentinels naming the new primary to the service publishing there.
RESUME_TIMEOUT_S = 15.0
PUBLISHERS = 3
# How soon Sentinels that all refuse fail the start (about 0.1 s when idle).
NO_PRIMARY_TIMEOUT_S = 5.0
# Stream entries a service must publish before a fault, and after it on the new primary.
SOME_PUBLISHES = 50
# The publishers' load, at most 150 a second in all: unpaced, a quick machine publishes past
# HISTORY_LIMIT (10,000) while a failover settles, and a resume that far back is rightly refused.
PUBLISH_INTERVAL_S = 0.02
# The fixture's: how long the primary may stay mute before the Sentinel fails over.
DOWN_AFTER_MS = 1000
# So long that the Sentinel cannot fail over a crashed primary before the test has seen
# readiness drop; given DOWN_AFTER_MS back then, it finds the primary down at once.
HELD_DOWN_AFTER_MS = 600_000
# One /readyz answer: each of its probes gives up after health.PROBE_TIMEOUT_S.
READYZ_TIMEOUT_S = 10.0


@dataclasses.dataclass(frozen=True, slots=True)
class Topology:
    """Clients of the three servers, their ports, and the primary's server, which a test may
    crash."""

    primary: Redis
    replica: Redis
    sentinel: Redis
    ports: tuple[int, int, int]
    primary_server: RedisServer


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float) -> None:
    """Poll `check` until it holds; fail naming `what` after `timeout_s`."""
    try:
        async with asyncio.timeout(timeout_s):
            while not await check():  # noqa: ASYNC110 - a server's state, which nothing signals
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"{what}: not within {timeout_s:g} s") from None


@pytest.fixture
async def topology(tmp_path: Path) -> AsyncIterator[Topology]:
    """One primary, one replica of it, and one Sentinel that knows both."""
    with contextlib.ExitStack() as servers:
        primary_server = servers.enter_context(redis_server(tmp_path / "primary"))
        primary_url = primary_server.url
        replica_url = servers.enter_context(
            embedded_redis(tmp_path / "replica", "--replicaof", f"127.0.0.1 {port_of(primary_url)}")
        )
        # Redis() retries a command that meets a connection closed, as the Sentinel closes
        # every client's during a failover; from_url would not.
        async with (
            Redis(port=port_of(primary_url), decode_responses=True) as primary,
            Redis(port=port_of(replica_url), decode_responses=True) as replica,
        ):

            async def replicating() -> bool:
                info = await replica.info("replication")
                return bool(info.get("master_link_status") == "up")

            # Linked before the Sentinel starts, so its first look at the primary finds the
            # replica instead of the next one, 10 s later.
            await until(replicating, "the replica links to the primary", SETTLE_TIMEOUT_S)
            config = tmp_path / "sentinel.conf"
            config.write_text(
                f"sentinel monitor {MASTER} 127.0.0.1 {port_of(primary_url)} 1\n"
                f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER} 5000\n"
            )
            sentinel_url = servers.enter_context(
                embedded_redis(tmp_path / "sentinel", str(config), "--sentinel")
            )
            async with Redis(port=port_of(sentinel_url), decode_responses=True) as sentinel:

                async def knows_the_replica() -> bool:
                    replicas = await sentinel.sentinel_slaves(MASTER)
                    return any(not r["is_disconnected"] for r in replicas)

                await until(knows_the_replica, "the Sentinel knows the replica", SETTLE_TIMEOUT_S)
                ports = (port_of(primary_url), port_of(replica_url), port_of(sentinel_url))
                yield Topology(primary, replica, sentinel, ports, primary_server)


def through_sentinel(topology: Topology) -> dict[str, Any]:
    """The settings of a service that finds its primary through the topology's Sentinel."""
    _, _, sentinel_port = topology.ports
    return {
        # Its host is no address: the Sentinels give that.
        "redis_url": f"redis://{MASTER}/0",
        "redis_sentinels": (("127.0.0.1", sentinel_port),),
        "instance_id": f"sentinel-{uuid.uuid4().hex[:8]}",
        "publish_limit": 1_000_000,
    }


async def publish_until(live: LiveApp, user: User, channel: str, stop: asyncio.Event) -> list[int]:
    """Publish a message every PUBLISH_INTERVAL_S until `stop`; return the offsets acked. A
    connection the service closes is opened again."""
    acked: list[int] = []
    while not stop.is_set():
        with contextlib.suppress(ConnectionClosed):
            async with live.websocket_session(user=user) as ws:
                while not stop.is_set():
                    reply = await ws.request("publish", channel=channel, data=len(acked))
                    if reply["type"] == "ack":
                        acked.append(reply["offset"])
                    await asyncio.sleep(PUBLISH_INTERVAL_S)
    return acked


@contextlib.asynccontextmanager
async def publishing(
    live: LiveApp, users: list[User], channel: str
) -> AsyncIterator[list[list[int]]]:
    """Each of `users` publishing on `channel` for the block, as publish_until does; the offsets
    each got acked, filled in as the block ends."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(publish_until(live, user, channel, stop)) for user in users]
    published: list[list[int]] = []
    try:
        yield published
    finally:
        stop.set()
        published += await asyncio.gather(*tasks)


async def newest_entry(redis: Redis, stream: str) -> tuple[str, int]:
    """The id and offset of the stream's last entry; ("0-0", 0) while it has none."""
    entries = await redis.xrevrange(stream, count=1)
    if not entries:
        return "0-0", 0
    entry_id, fields = entries[0]
    assert fields is not None
    return str(entry_id), int(fields["offset"])


async def stream_offset(redis: Redis, stream: str) -> int:
    _, offset = await newest_entry(redis, stream)
    return offset


async def published_on(redis: Redis, stream: str, what: str) -> None:
    """Wait until SOME_PUBLISHES more entries than now are on `redis`'s `stream`."""
    before = await stream_offset(redis, stream)

    async def published_some() -> bool:
        return await stream_offset(redis, stream) >= before + SOME_PUBLISHES

    await until(published_some, what, RESUME_TIMEOUT_S)


async def replica_promoted(topology: Topology) -> None:
    """Wait until the Sentinel names the replica as the primary."""
    _, replica_port, _ = topology.ports

    async def switched() -> bool:
        address = await topology.sentinel.sentinel_get_master_addr_by_name(MASTER)
        return isinstance(address, tuple) and int(address[1]) == replica_port

    await until(switched, "the Sentinel names the replica primary", SETTLE_TIMEOUT_S)


async def assert_every_acked_message_delivered(
    live: LiveApp,
    subscriber: WsClient,
    reader: User,
    channel: str,
    start: Frame,
    published: list[list[int]],
) -> None:
    """`subscriber`, subscribed at `start`, sees each offset once and in order up to the last
    acked, every acked one among them; a subscriber resuming from `start` is replayed them all."""
    acked = sorted(offset for offsets in published for offset in offsets)
    assert len(acked) > 2 * SOME_PUBLISHES, acked
    seen: list[int] = []
    while not seen or seen[-1] < acked[-1]:
        seen.append((await subscriber.next_message(channel))["offset"])
    assert seen == list(range(1, acked[-1] + 1)), "each offset once, in order"
    assert set(acked) <= set(seen)
    async with live.websocket_session(user=reader) as resuming:
        ack = await resuming.subscribe(channel, since=start)
        assert ack["recovered"] is True, ack
        replayed = [m["offset"] for m in await resuming.messages(len(seen), channel)]
    assert replayed == seen, "a resuming subscriber gets every offset from history"


async def ready(service: Service) -> tuple[int, str]:
    """One readiness probe: its status and body."""
    response = await health.readiness(service)
    body = bytes(response.body).decode()
    return response.status_code, body


async def fail_over_under_load(
    topology: Topology, stream: str, direct: Service, following: Service
) -> None:
    """While the service publishes, fail over; return once it publishes on the new primary, the
    demoted primary reads as not ready to a service configured with its address, and the
    following service reads as ready."""
    await published_on(topology.primary, stream, "publishing starts")
    await topology.sentinel.sentinel_failover(MASTER)
    await replica_promoted(topology)
    await published_on(topology.replica, stream, "publishing goes on on the new primary")

    async def direct_not_ready() -> bool:
        return await ready(direct) == (
            503,
            '{"status":"unavailable","checks":{"postgres":"ok","redis":"read-only: a replica"}}',
        )

    await until(direct_not_ready, "the demoted primary is not ready", SETTLE_TIMEOUT_S)

    async def following_ready() -> bool:
        return (await ready(following))[0] == 200

    await until(following_ready, "the following service is ready", RESUME_TIMEOUT_S)


async def test_sentinels_that_name_no_primary_stop_the_start_naming_the_settings(
    settings: Settings,
) -> None:
    nowhere = dataclasses.replace(
        settings, redis_sentinels=(("127.0.0.1", 1),), redis_sentinel_master="cache"
    )
    started = time.monotonic()
    with pytest.raises(
        MasterNotFoundError, match=r"REDIS_SENTINELS .* REDIS_SENTINEL_MASTER='cache'"
    ):
        await Resources.open(nowhere)
    # Not redis-py's retries on each Sentinel inside the client's own: 15.6 s that way.
    assert time.monotonic() - started < NO_PRIMARY_TIMEOUT_S


# Three servers, a Sentinel that learns of the replica, and a failover that ends only when the
# Sentinel reconfigures the old primary (its replica check runs every 10 s): over a minute on a
# loaded machine.
@pytest.mark.timeout(120)
async def test_a_failover_under_publish_load_loses_no_acked_message(
    settings: Settings,
    shared_resources: Resources,
    another_app: AppFactory,
    make_user: UserFactory,
    topology: Topology,
) -> None:
    primary_port, _, _ = topology.ports
    changes = through_sentinel(topology)
    resources = await Resources.open(dataclasses.replace(settings, **changes))
    # A service configured with the primary's own address, as before Sentinel support.
    direct_client = Redis(port=primary_port, decode_responses=True)
    direct = Service(settings, dataclasses.replace(shared_resources, redis=direct_client))
    channel = f"room:failover-{uuid.uuid4().hex[:8]}"
    publishers = [await make_user(f"publisher {n}") for n in range(PUBLISHERS)]
    reader = await make_user("reader")
    new_primary = topology.replica
    try:
        async with (
            another_app(resources, **changes) as live,
            live.websocket_session(user=reader) as subscriber,
        ):
            start = (await subscriber.subscribe(channel))["position"]
            stream = resources.bus.stream_of(channel)
            assert (await ready(direct))[0] == 200
            async with publishing(live, publishers, channel) as published:
                await fail_over_under_load(topology, stream, direct, live.service)
            await assert_every_acked_message_delivered(
                live, subscriber, reader, channel, start, published
            )

            async def bus_reads_the_new_primary() -> bool:
                groups = await new_primary.xinfo_groups(stream)
                newest, _ = await newest_entry(new_primary, stream)
                return any(
                    g["name"] == resources.bus.group and g["last-delivered-id"] == newest
                    for g in groups
                )

            await until(
                bus_reads_the_new_primary, "the bus reads the new primary", SETTLE_TIMEOUT_S
            )
    finally:
        await direct_client.aclose()
        await resources.close()


# As the failover test: three servers, and a Sentinel that learns of the replica.
@pytest.mark.timeout(120)
async def test_a_crashed_primary_reads_not_ready_until_the_sentinel_promotes_the_replica(
    settings: Settings, another_app: AppFactory, make_user: UserFactory, topology: Topology
) -> None:
    changes = through_sentinel(topology)
    resources = await Resources.open(dataclasses.replace(settings, **changes))
    channel = f"room:crash-{uuid.uuid4().hex[:8]}"
    publishers = [await make_user(f"publisher {n}") for n in range(PUBLISHERS)]
    reader = await make_user("reader")
    try:
        async with (
            another_app(resources, **changes) as live,
            live.websocket_session(user=reader) as subscriber,
            httpx.AsyncClient(base_url=live.http_url, timeout=READYZ_TIMEOUT_S) as http,
        ):

            async def readiness_is(status: int) -> bool:
                # A probe that hung would fail the test here, with httpx's ReadTimeout.
                return (await http.get("/readyz")).status_code == status

            start = (await subscriber.subscribe(channel))["position"]
            stream = resources.bus.stream_of(channel)
            assert await readiness_is(200)
            async with publishing(live, publishers, channel) as published:
                await published_on(topology.primary, stream, "publishing starts")
                await topology.sentinel.sentinel_set(
                    MASTER, "down-after-milliseconds", HELD_DOWN_AFTER_MS
                )
                topology.primary_server.kill()
                await until(
                    lambda: readiness_is(503),
                    "readiness drops while no primary answers",
                    SETTLE_TIMEOUT_S,
                )
                # The Sentinel's own finding that the primary is down, not a FAILOVER command.
                await topology.sentinel.sentinel_set(
                    MASTER, "down-after-milliseconds", DOWN_AFTER_MS
                )
                await replica_promoted(topology)
                await until(
                    lambda: readiness_is(200),
                    "ready again on the promoted replica",
                    SETTLE_TIMEOUT_S,
                )
                await published_on(
                    topology.replica, stream, "publishing goes on on the new primary"
                )
            await assert_every_acked_message_delivered(
                live, subscriber, reader, channel, start, published
            )
    finally:
        await resources.close()
