"""Redis Cluster: the client the server calls for, and names that keep each command in one slot.

These run on whatever Redis the suite was given; with TEST_REDIS_URL naming a node of a cluster,
the whole suite (the template's tests run it so) goes through the cluster client.
"""

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis, RedisCluster
from redis.crc import key_slot
from websockets.exceptions import ConnectionClosed

from {{ cookiecutter.package_name }}.keys import RedisKeys
from {{ cookiecutter.package_name }}.redisclient import (
    cluster_enabled,
    open_redis,
)
from {{ cookiecutter.package_name }}.resources import Resources
from {{ cookiecutter.package_name }}.settings import ConfigError, Settings

from harness.embedded import embedded_cluster, embedded_redis
from harness.live import AppFactory, LiveApp
from harness.users import User, UserFactory

OUTAGE_S = 2.0
PUBLISHES_AROUND_OUTAGE = 10


async def test_the_client_is_the_kind_the_server_calls_for(
    shared_resources: Resources, settings: Settings
) -> None:
    async with Redis.from_url(settings.redis_url) as node:
        clustered = cluster_enabled(await node.info("cluster"))
    assert isinstance(shared_resources.redis, RedisCluster) == clustered
    plain = await open_redis(settings.redis_url, "no")
    try:
        assert not isinstance(plain, RedisCluster)
    finally:
        await plain.aclose()


async def test_redis_cluster_yes_refuses_a_server_that_is_not_a_cluster(
    settings: Settings, tmp_path: Path
) -> None:
    with embedded_redis(tmp_path) as plain_url:
        insisting = dataclasses.replace(settings, redis_url=plain_url, redis_cluster="yes")
        with pytest.raises(ConfigError, match=r"REDIS_CLUSTER=yes, .* not a Redis Cluster node"):
            await Resources.open(insisting)


def test_keys_carry_a_hash_tag_after_the_prefix() -> None:
    keys = RedisKeys("app:")
    publish, subscribe = (keys.key("ratelimit", "user-1", action) for action in ("pub", "sub"))
    assert publish == "app:ratelimit:{user-1}:pub"
    # One user's counters share a slot, and the prefix (a test worker's) moves none of them.
    assert key_slot(publish.encode()) == key_slot(subscribe.encode())
    elsewhere = RedisKeys("test:run:gw0:").key("ratelimit", "user-1", "pub")
    assert key_slot(publish.encode()) == key_slot(elsewhere.encode())
    assert keys.key("instance", "a") != keys.key("instance", "b")


async def test_the_prefix_scan_finds_every_key_on_every_master(
    shared_resources: Resources, worker_redis_prefix: str
) -> None:
    """Keys of many tags land in slots all over the cluster; one SCAN of the prefix (walking
    every master) still finds each, as the harness's cleanup needs."""
    keys = shared_resources.keys
    names = [keys.key("scan", f"tag-{n}") for n in range(30)]
    redis = shared_resources.redis
    try:
        for name in names:
            await redis.set(name, "1")
        pattern = keys.match(keys.prefix + "scan:")
        found = {key async for key in redis.scan_iter(match=pattern, count=1000)}
        assert set(names) <= found
        assert all(name.startswith(worker_redis_prefix) for name in names)
    finally:
        await redis.unlink(*names)


@dataclasses.dataclass
class Writer:
    """A publisher of the outage test, and what it saw."""

    user: User
    acked: list[int] = dataclasses.field(default_factory=list)
    failures: list[str] = dataclasses.field(default_factory=list)

    async def publish_until(self, live: LiveApp, channel: str, done: Callable[[], bool]) -> None:
        """Publish one message at a time until `done()`; after a close, reconnect (as a client
        does) and go on."""
        while not done():
            async with live.websocket_session(user=self.user) as ws:
                while not done():
                    try:
                        reply = await ws.request("publish", channel=channel, data=self.user.id)
                    except ConnectionClosed:
                        self.failures.append(f"close {ws.connection.close_code}")
                        break
                    if reply["type"] == "ack":
                        self.acked.append(reply["offset"])
                    else:
                        self.failures.append(f"error {reply['code']}")

    async def publish(self, live: LiveApp, channel: str, count: int) -> None:
        """`count` more acked publishes (through publish_until)."""
        wanted = len(self.acked) + count
        await self.publish_until(live, channel, lambda: len(self.acked) >= wanted)


def node_port(resources: Resources, key: str) -> int:
    """The port of the cluster node that holds `key`."""
    assert isinstance(resources.redis, RedisCluster)
    node = resources.redis.get_node_from_key(key)
    assert node is not None
    return int(node.port)


async def writer_whose_counter(
    make_user: UserFactory, resources: Resources, on_victim: bool, victim_port: int
) -> Writer:
    """A new user whose rate-limit counter lives on the victim node, or on another one."""
    for n in range(60):
        user = await make_user(f"writer {n}")
        counter = resources.keys.key("ratelimit", user.id, "publish")
        if (node_port(resources, counter) == victim_port) == on_victim:
            return Writer(user)
    raise AssertionError("60 users and none whose counter is where it was wanted")


async def test_a_master_down_for_seconds_loses_no_acked_message(
    settings: Settings, another_app: AppFactory, make_user: UserFactory, tmp_path: Path
) -> None:
    """The master holding a channel's stream, in a cluster of the test's own with no replica,
    is killed for OUTAGE_S while two writers publish, then started again, empty. The writer
    whose rate-limit counter was on it gets a documented failure (close 1011, or `unavailable`)
    for each publish; the other one's publishes are stored and acked, and reach the subscriber
    from Postgres. The live subscriber gets every stored offset once, in order, with no gap."""
    reader = await make_user("reader")
    with embedded_cluster(tmp_path) as cluster:
        own = dataclasses.replace(settings, redis_url=cluster.urls[0], instance_id="outage")
        resources = await Resources.open(own)
        try:
            assert isinstance(resources.redis, RedisCluster)
            # Not the node REDIS_URL names: redis-py's cluster client refreshes its map of the
            # cluster from that one, and fails every command while it is down (README).
            channel, holder = next(
                (channel, port)
                for channel in (f"room:outage-{uuid.uuid4().hex[:8]}" for _ in range(100))
                if (port := node_port(resources, resources.bus.stream_of(channel)))
                != cluster.nodes[0].port
            )
            victim = next(n for n, node in enumerate(cluster.nodes) if node.port == holder)
            cut_off = await writer_whose_counter(make_user, resources, True, holder)
            spared = await writer_whose_counter(make_user, resources, False, holder)
            async with (
                another_app(resources) as live,
                live.websocket_session(user=reader) as subscriber,
            ):
                await subscriber.subscribe(channel)
                for writer in (cut_off, spared):
                    await writer.publish(live, channel, PUBLISHES_AROUND_OUTAGE)
                with contextlib.ExitStack() as outage:
                    await asyncio.to_thread(outage.enter_context, cluster.outage(victim))
                    ends = time.monotonic() + OUTAGE_S
                    before_outage = len(spared.acked)
                    await asyncio.gather(
                        *(
                            writer.publish_until(live, channel, lambda: time.monotonic() > ends)
                            for writer in (cut_off, spared)
                        )
                    )
                    acked_in_outage = len(spared.acked) - before_outage
                    await asyncio.to_thread(outage.close)
                for writer in (cut_off, spared):
                    await writer.publish(live, channel, PUBLISHES_AROUND_OUTAGE)
                acked = sorted(cut_off.acked + spared.acked)
                received = [(await subscriber.next_message(channel))["offset"]]
                while received[-1] < acked[-1]:
                    received.append((await subscriber.next_message(channel))["offset"])
                await subscriber.assert_silent()
            assert resources.bus.read_failures > 0, "the outage should have cut a reader off"
        finally:
            await resources.close()
    failures = cut_off.failures + spared.failures
    assert received == list(range(1, len(received) + 1)), "every offset once, in order"
    assert set(acked) <= set(received)
    # Only a publish whose connection closed may have been stored without an ack.
    assert len(received) - len(acked) <= failures.count("close 1011")
    assert cut_off.failures, "the writer whose counter was on the dead node was told"
    assert set(failures) <= {"close 1011", "error unavailable"}, failures
    assert acked_in_outage > 0, "the other writer published on, from Postgres to the subscriber"
