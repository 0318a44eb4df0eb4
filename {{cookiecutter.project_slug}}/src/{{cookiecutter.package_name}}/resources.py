"""The expensive, shareable parts of the service, opened once per process.

A Resources is what the test harness builds once per xdist worker and hands to every app it
creates: the Postgres pool (for one schema), the Redis client (bound to one key prefix), the
message bus with its consumer group, and the keyring.
"""

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool
from redis.backoff import EqualJitterBackoff, NoBackoff

from .auth import Keyring
from .bus import Bus
from .keys import RedisKeys
from .pool import SchemaPool
from .redisclient import RedisClient, open_redis
from .settings import Settings

OPEN_TIMEOUT_S = 10.0
# A command that meets a pooled connection Redis has dropped (a restart, a failover, an idle
# timeout, CLIENT KILL) runs again on a new one. Redis.from_url, unlike Redis(), retries nothing
# by default, so each stale connection would fail one request. Few tries, soon: a Redis that
# stays away is an outage for readiness to report, not something to hold requests for.
REDIS_RETRY = Retry(EqualJitterBackoff(cap=0.1, base=0.01), retries=3)
# Each Sentinel asked for the primary's address gets this long, and one try, before the next
# is asked: REDIS_RETRY already asks them all again. With redis-py's default retries on each,
# Sentinels that all refuse took 15.6 s to fail a command instead of 0.1 s.
SENTINEL_TIMEOUT_S = 1.0
SENTINEL_RETRY = Retry(NoBackoff(), retries=0)


@dataclass(frozen=True, slots=True)
class Resources:
    """Connection pools, bus and keyring that any number of apps can run on."""

    db: SchemaPool
    redis: RedisClient
    keys: RedisKeys
    bus: Bus
    keyring: Keyring

    @classmethod
    async def open(cls, settings: Settings) -> "Resources":
        """Open the pools and register the bus; fail fast if Postgres or Redis is unreachable."""
        db = await open_database_pool(
            settings.database_url,
            settings.database_schema,
            settings.database_pool_size,
            settings.database_pooler,
            settings.database_timeout_s,
        )
        try:
            redis = await redis_client(settings)
        except BaseException:
            await db.close()
            raise
        keys = RedisKeys(settings.redis_prefix)
        try:
            await _ping(redis, settings)
            bus = Bus(redis, keys, settings.instance_id, settings.stream_partitions)
            await bus.start()
        except BaseException:
            await close_redis(redis)
            await db.close()
            raise
        return cls(db, redis, keys, bus, settings.keyring)

    async def close(self) -> None:
        """Stop the bus, then close the pools."""
        await self.bus.stop()
        await close_redis(self.redis)
        await self.db.close()


async def redis_client(settings: Settings) -> RedisClient:
    """A client of REDIS_URL's server (of its cluster, where it is a cluster node) or, with
    REDIS_SENTINELS, of the primary they name, which it asks them for again on each new
    connection: so it follows a failover."""
    options: dict[str, Any] = {
        "decode_responses": True,
        "client_name": f"{settings.redis_prefix}{settings.instance_id}",
        "retry": REDIS_RETRY,
    }
    if not settings.redis_sentinels:
        return await open_redis(settings.redis_url, settings.redis_cluster, **options)
    # The Sentinels say where the primary is; the URL says how to talk to it.
    url: dict[str, Any] = dict(parse_url(settings.redis_url))
    for address in ("host", "port"):
        url.pop(address, None)
    tls = url.pop("connection_class", None) is SSLConnection
    # redis-py 8.1, which uv.lock pins, leaves Sentinel untyped; 8.2 types it.
    sentinels = Sentinel(  # type: ignore[no-untyped-call,unused-ignore]
        settings.redis_sentinels,
        sentinel_kwargs={
            "socket_connect_timeout": SENTINEL_TIMEOUT_S,
            "socket_timeout": SENTINEL_TIMEOUT_S,
            "retry": SENTINEL_RETRY,
        },
    )
    primary: Redis = sentinels.master_for(settings.redis_sentinel_master, ssl=tls, **url, **options)
    return primary


async def _ping(redis: RedisClient, settings: Settings) -> None:
    """PING Redis; where the Sentinels name no primary, say which settings to check."""
    try:
        await redis.ping()
    except MasterNotFoundError as error:
        raise MasterNotFoundError(
            f"REDIS_SENTINELS {settings.redis_sentinels} name no primary"
            f" REDIS_SENTINEL_MASTER={settings.redis_sentinel_master!r}: {error}"
        ) from error


async def close_redis(redis: RedisClient) -> None:
    """Close the client, and the connections to the Sentinels behind it if any."""
    await redis.aclose()
    if isinstance(redis, Redis) and isinstance(redis.connection_pool, SentinelConnectionPool):
        await redis.connection_pool.sentinel_manager.aclose()


async def open_database_pool(
    url: str, schema: str, max_size: int, pooler: str, timeout_s: float = OPEN_TIMEOUT_S
) -> SchemaPool:
    """A pool for the tables of `schema`, opened and checked; a checkout that waits `timeout_s`
    for a connection raises PoolTimeout. Its connections are given no options of their own: the
    URL's (or PGOPTIONS) reach Postgres as they are."""
    pool = SchemaPool(
        url,
        schema,
        min_size=1,
        max_size=max_size,
        timeout=timeout_s,
        kwargs={
            # Every query in store.py is a single statement: autocommit spares each one its
            # BEGIN and COMMIT round trips.
            "autocommit": True,
            **connection_kwargs(pooler),
        },
        open=False,
    )
    await pool.open(wait=True, timeout=OPEN_TIMEOUT_S)
    return pool


def connection_kwargs(pooler: str) -> dict[str, Any]:
    """What a psycopg connection through `pooler` (DATABASE_POOLER) needs.

    psycopg prepares a statement on its server connection after the statement's fifth run.
    Behind a transaction pooler the next run may land on another server connection, which never
    saw it prepared or holds another statement of that name: nothing is prepared there."""
    return {"prepare_threshold": None} if pooler == "transaction" else {}
