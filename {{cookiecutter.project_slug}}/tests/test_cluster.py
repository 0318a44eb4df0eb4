"""Redis Cluster: the client the server calls for, and names that keep each command in one slot.

These run on whatever Redis the suite was given; with TEST_REDIS_URL naming a node of a cluster,
the whole suite (the template's tests run it so) goes through the cluster client.
"""

import dataclasses
from pathlib import Path

import pytest
from redis.asyncio import Redis, RedisCluster
from redis.crc import key_slot

from {{ cookiecutter.package_name }}.keys import RedisKeys
from {{ cookiecutter.package_name }}.redisclient import cluster_enabled, open_redis
from {{ cookiecutter.package_name }}.resources import Resources
from {{ cookiecutter.package_name }}.settings import ConfigError, Settings

from harness.embedded import embedded_redis


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
