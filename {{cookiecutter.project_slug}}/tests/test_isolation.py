"""Each xdist worker works in its own Postgres schema and under its own Redis prefix."""

from redis.asyncio import Redis

from {{ cookiecutter.package_name }}.keys import RedisKeys
from {{ cookiecutter.package_name }}.resources import Resources

from harness import redis_prefix, redis_url, schema_name, unlink_prefix
from wsclient import WsClient


def test_schema_name_carries_run_and_worker(run_id: str, worker_id: str, worker_db_schema: str):
    assert worker_db_schema.startswith(f"test_{run_id}_{worker_id}_")
    assert len(worker_db_schema.encode()) <= 63


def test_schema_names_are_valid_for_any_worker_name():
    name = schema_name("RUN-id" * 20, "gw12")
    assert len(name) <= 63
    assert name == name.lower()
    assert name.replace("_", "").isalnum()


def test_prefix_carries_run_and_worker(run_id: str, worker_id: str, worker_redis_prefix: str):
    assert worker_redis_prefix == f"test:{run_id}:{worker_id}:"


async def test_published_messages_stay_under_the_worker_prefix(
    ws_session: WsClient, shared_resources: Resources, worker_redis_prefix: str
):
    await ws_session.publish("room:prefixed", {"n": 1})
    assert shared_resources.bus.stream.startswith(worker_redis_prefix)
    assert await shared_resources.redis.exists(shared_resources.bus.stream)


def test_scan_pattern_escapes_glob_characters():
    keys = RedisKeys("test:[a]*?\\:")
    assert keys.match_all() == "test:\\[a\\]\\*\\?\\\\:*"


async def test_cleanup_unlinks_only_its_own_prefix(run_id: str):
    redis = Redis.from_url(redis_url(), decode_responses=True)
    mine, neighbour = redis_prefix(run_id, "cleanup-a"), redis_prefix(run_id, "cleanup-a*")
    try:
        await redis.set(f"{mine}k1", "1")
        await redis.xadd(f"{mine}stream", {"f": "v"})
        await redis.set(f"{neighbour}k1", "1")
        assert await unlink_prefix(redis_url(), mine) == 2
        assert await redis.exists(f"{mine}k1", f"{mine}stream") == 0
        assert await redis.exists(f"{neighbour}k1") == 1
    finally:
        await unlink_prefix(redis_url(), neighbour)
        await redis.aclose()
