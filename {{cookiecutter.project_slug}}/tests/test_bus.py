"""Messages fan out through the Redis stream to every app and every instance."""

import asyncio
import dataclasses
import json
import uuid
from collections import Counter

import pytest
from redis.asyncio import RedisCluster
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.bus import GROUP_PREFIX, READ_BATCH, Bus
from {{ cookiecutter.package_name }}.keys import RedisKeys
from {{ cookiecutter.package_name }}.redisclient import RedisClient, open_redis
from {{ cookiecutter.package_name }}.resources import Resources
from {{ cookiecutter.package_name }}.settings import Settings

from harness.live import AppFactory, LiveApp
from harness.users import User
from harness.wsclient import WsClient

DELIVERY_TIMEOUT_S = 5.0


class Collector:
    """A bus listener that keeps the frames of one channel, and how many it had each time the
    bus asked whether they were delivered."""

    def __init__(self, channel: str, expected: int) -> None:
        self.channel = channel
        self.expected = expected
        self.received: list[str] = []
        self.when_asked: list[int] = []
        self.all_received = asyncio.Event()
        self.all_asked = asyncio.Event()

    def receive(self, channel: str, offset: int, frame: str, streamed_at: float) -> None:
        if channel == self.channel:
            self.received.append(frame)
            if len(self.received) == self.expected:
                self.all_received.set()

    async def delivered(self) -> None:
        self.when_asked.append(len(self.received))
        if len(self.received) == self.expected:
            self.all_asked.set()


def another_instance(settings: Settings) -> Settings:
    """The same deployment (schema, prefix) as another process would run it."""
    return dataclasses.replace(settings, instance_id=f"other-{uuid.uuid4().hex[:8]}")


async def test_two_apps_on_shared_resources_both_deliver(
    shared_app: LiveApp, another_app: AppFactory, test_user: User
) -> None:
    async with another_app() as second:
        async with (
            shared_app.websocket_session(user=test_user) as on_first,
            second.websocket_session(user=test_user) as on_second,
        ):
            await on_first.subscribe("room:apps")
            await on_second.subscribe("room:apps")
            await on_first.publish("room:apps", "from first")
            await on_second.publish("room:apps", "from second")
            for client in (on_first, on_second):
                texts = {(await client.next_message())["data"] for _ in range(2)}
                assert texts == {"from first", "from second"}
        assert len(second.service.registry) == 0


def test_channels_spread_over_partitions_each_in_a_slot_of_its_own(
    shared_resources: Resources,
) -> None:
    bus = shared_resources.bus
    slots = [key_slot(stream.encode()) for stream in bus.streams]
    assert len(bus.streams) > 1
    assert sorted(set(slots)) == slots, "one slot per partition, spaced in partition order"
    channels = [f"room:{n}" for n in range(1000)]
    assert set(map(bus.stream_of, channels)) == set(bus.streams)
    # A channel's partition depends on the channel alone: every instance agrees.
    other = Bus(shared_resources.redis, shared_resources.keys, "elsewhere", len(bus.streams))
    assert list(map(other.stream_of, channels)) == list(map(bus.stream_of, channels))


def slot_ranges(masters: int) -> list[range]:
    """The slots of each master as `redis-cli --cluster create` shares them out."""
    share, first, ranges = REDIS_CLUSTER_HASH_SLOTS / masters, 0, []
    for n in range(masters):
        last = REDIS_CLUSTER_HASH_SLOTS - 1 if n == masters - 1 else round((n + 1) * share - 1)
        ranges.append(range(first, last + 1))
        first = last + 1
    return ranges


@pytest.mark.parametrize("masters", [1, 2, 3, 4, 6])
def test_the_default_partitions_share_out_evenly_over_the_masters(
    settings: Settings, masters: int
) -> None:
    partitions = settings.stream_partitions
    keys = RedisKeys("any:")
    slots = [key_slot(keys.stream(n, partitions).encode()) for n in range(partitions)]
    ranges = slot_ranges(masters)
    per_master = Counter(next(i for i, held in enumerate(ranges) if slot in held) for slot in slots)
    assert sorted(per_master.values()) == [partitions // masters] * masters


async def test_channels_of_every_partition_reach_every_instance_in_order(
    shared_app: LiveApp, other_instance: LiveApp, test_user: User
) -> None:
    bus = shared_app.service.resources.bus
    channels = {bus.stream_of(f"room:spread-{n}"): f"room:spread-{n}" for n in range(200)}
    assert len(channels) == len(bus.streams), "a channel on every partition"
    async with (
        shared_app.websocket_session(user=test_user) as here,
        other_instance.websocket_session(user=test_user) as there,
    ):
        for channel in channels.values():
            await here.subscribe(channel)
            await there.subscribe(channel)
        for n in range(3):
            for channel in channels.values():
                await (here if n % 2 else there).publish(channel, n)
        for client in (here, there):
            for channel in channels.values():
                assert [m["data"] for m in await client.messages(3, channel)] == [0, 1, 2]


async def test_two_instances_deliver_to_each_other(
    shared_app: LiveApp, other_instance: LiveApp, test_user: User
) -> None:
    other_bus = other_instance.service.resources.bus
    assert other_bus.group != shared_app.service.resources.bus.group
    async with (
        shared_app.websocket_session(user=test_user) as here,
        other_instance.websocket_session(user=test_user) as there,
    ):
        await here.subscribe("room:instances")
        await there.subscribe("room:instances")
        await here.publish("room:instances", "here to there")
        assert (await there.next_message())["data"] == "here to there"
        await there.publish("room:instances", "there to here")
        received = [(await here.next_message())["data"] for _ in range(2)]
        assert received == ["here to there", "there to here"]


async def groups_of(resources: Resources, group: str) -> list[str]:
    """The streams on which `group` exists."""
    return [
        stream
        for stream in resources.bus.streams
        if group in {found["name"] for found in await resources.redis.xinfo_groups(stream)}
    ]


async def test_a_stopped_instance_removes_its_groups(
    shared_resources: Resources, settings: Settings
) -> None:
    stopping = await Resources.open(another_instance(settings))
    assert await groups_of(shared_resources, stopping.bus.group) == stopping.bus.streams
    await stopping.close()
    assert await groups_of(shared_resources, stopping.bus.group) == []


async def test_groups_of_dead_instances_are_removed(
    shared_resources: Resources, settings: Settings
) -> None:
    dead_group = f"{GROUP_PREFIX}crashed-{uuid.uuid4().hex[:8]}"
    for stream in shared_resources.bus.streams:
        await shared_resources.redis.xgroup_create(stream, dead_group, id="$", mkstream=True)
    starting = await Resources.open(another_instance(settings))
    await starting.close()
    assert await groups_of(shared_resources, dead_group) == []
    live = shared_resources.bus
    assert await groups_of(shared_resources, live.group) == live.streams, "a live group must stay"


async def test_restarted_instance_first_delivers_what_it_never_acknowledged(
    shared_resources: Resources,
) -> None:
    redis, stream = shared_resources.redis, shared_resources.bus.stream_of("room:pending")
    instance = f"restarting-{uuid.uuid4().hex[:8]}"
    await redis.xgroup_create(stream, GROUP_PREFIX + instance, id="$", mkstream=True)
    frames = [json.dumps({"n": n}) for n in range(3)]
    for n, frame in enumerate(frames):
        await redis.xadd(stream, {"channel": "room:pending", "offset": n, "frame": frame})
    # The instance read them, then died before acknowledging.
    await redis.xreadgroup(GROUP_PREFIX + instance, "reader", {stream: ">"})

    listener = Collector("room:pending", len(frames))
    restarted = Bus(redis, shared_resources.keys, instance, len(shared_resources.bus.streams))
    with restarted.listening(listener):
        await restarted.start()
        try:
            await asyncio.wait_for(listener.all_received.wait(), DELIVERY_TIMEOUT_S)
        finally:
            await restarted.stop()
    assert listener.received == frames


async def test_the_reader_reads_on_once_its_listener_has_delivered_a_batch(
    shared_resources: Resources,
) -> None:
    redis, stream = shared_resources.redis, shared_resources.bus.stream_of("room:batches")
    listener = Collector("room:batches", READ_BATCH + 50)
    instance = f"batches-{uuid.uuid4().hex[:8]}"
    bus = Bus(redis, shared_resources.keys, instance, len(shared_resources.bus.streams))
    with bus.listening(listener):
        await bus.start()
        try:
            # In one transaction, so the reader, blocked on the stream, finds them all at once.
            async with redis.pipeline(transaction=True) as pipe:
                for n in range(listener.expected):
                    pipe.xadd(stream, {"channel": "room:batches", "offset": n, "frame": str(n)})
                await pipe.execute()
            await asyncio.wait_for(listener.all_asked.wait(), DELIVERY_TIMEOUT_S)
        finally:
            await bus.stop()
    # Asked after each read, with all it had read: a full batch, then the rest.
    assert [n for n in dict.fromkeys(listener.when_asked) if n] == [READ_BATCH, READ_BATCH + 50]


async def test_each_read_acknowledges_what_the_last_one_delivered(
    ws_session: WsClient, shared_resources: Resources
) -> None:
    """The reader acknowledges a batch in the round trip that reads the next one: once a later
    message arrived, the earlier one is no longer pending, so a restart does not repeat it."""
    redis, bus = shared_resources.redis, shared_resources.bus
    await ws_session.subscribe("room:acked")
    for text in ("earlier", "later"):
        await ws_session.publish("room:acked", text)
        await ws_session.next_message("room:acked")
    stream = bus.stream_of("room:acked")
    latest = await redis.xrevrange(stream, count=10)
    assert latest is not None
    earlier = [
        entry_id
        for entry_id, fields in latest
        if fields and json.loads(fields["frame"]).get("data") == "earlier"
    ]
    pending = await redis.xpending_range(stream, bus.group, min="-", max="+", count=100)
    assert len(earlier) == 1
    assert earlier[0] not in {entry["message_id"] for entry in pending}


async def own_connections(redis: RedisClient, command: str | None = None) -> set[tuple[str, str]]:
    """(server, id) of the Redis connections this client's pools hold, on every master of a
    cluster, or of those whose last command was `command`."""
    name = await redis.client_getname()
    if isinstance(redis, RedisCluster):
        servers = [(node.name, node) for node in redis.get_primaries()]
        lists = [(server, await redis.client_list(target_nodes=node)) for server, node in servers]
    else:
        lists = [("", await redis.client_list())]
    return {
        (server, client["id"])
        for server, clients in lists
        for client in clients
        if client["name"] == name and command in (None, client["cmd"])
    }


async def drop_connections(settings: Settings, connections: set[tuple[str, str]]) -> None:
    """Have Redis close these connections (from own_connections), as a restart would; through a
    client of its own, so that no connection closes itself."""
    admin = await open_redis(settings.redis_url, settings.redis_cluster)
    try:
        for server, connection in connections:
            if isinstance(admin, RedisCluster):
                node = admin.get_node(node_name=server)
                await admin.client_kill_filter(_id=connection, target_nodes=node)
            else:
                await admin.client_kill_filter(_id=connection)
    finally:
        await admin.aclose()


async def test_bus_reconnects_when_redis_drops_its_connection(
    ws_session: WsClient, shared_resources: Resources, settings: Settings
) -> None:
    await ws_session.subscribe("room:reconnect")
    redis = shared_resources.redis
    readers = await own_connections(redis, "xreadgroup")
    assert readers, "the bus reader should be blocked in XREADGROUP"
    await drop_connections(settings, readers)
    await ws_session.publish("room:reconnect", "after the drop")
    assert (await ws_session.next_message())["data"] == "after the drop"
    assert not readers & await own_connections(redis)


async def test_requests_survive_the_pooled_connections_redis_dropped(
    ws_session: WsClient, shared_resources: Resources, settings: Settings
) -> None:
    """Each request that meets a connection Redis closed while it idled in the pool (a restart,
    a failover) runs again on a fresh one: no 1011, no lost message."""
    redis = shared_resources.redis
    await asyncio.gather(*(redis.ping() for _ in range(8)))
    await drop_connections(settings, await own_connections(redis))
    await ws_session.subscribe("room:dropped")
    for text in ("first", "second", "third"):
        await ws_session.publish("room:dropped", text)
        assert (await ws_session.next_message("room:dropped"))["data"] == text


async def test_app_that_owns_no_resources_opens_and_closes_its_own(settings: Settings) -> None:
    app = create_app(another_instance(settings))
    async with app.router.lifespan_context(app):
        resources = app.state.service.resources
        assert await resources.redis.ping()
    assert resources.db.closed
