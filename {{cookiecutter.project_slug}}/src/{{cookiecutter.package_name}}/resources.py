"""The expensive, shareable parts of the service, opened once per process.

A Resources is what the test harness builds once per xdist worker and hands to every app it
creates: the Postgres pool (for one schema), the Redis client (bound to one key prefix), the
message bus with its consumer group, and the keyring.
"""

from dataclasses import dataclass
from typing import Any

from redis.asyncio.retry import Retry
from redis.backoff import EqualJitterBackoff

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
            redis = await open_redis(
                settings.redis_url,
                settings.redis_cluster,
                decode_responses=True,
                client_name=f"{settings.redis_prefix}{settings.instance_id}",
                retry=REDIS_RETRY,
            )
        except BaseException:
            await db.close()
            raise
        keys = RedisKeys(settings.redis_prefix)
        try:
            await redis.ping()
            bus = Bus(redis, keys, settings.instance_id, settings.stream_partitions)
            await bus.start()
        except BaseException:
            await redis.aclose()
            await db.close()
            raise
        return cls(db, redis, keys, bus, settings.keyring)

    async def close(self) -> None:
        """Stop the bus, then close the pools."""
        await self.bus.stop()
        await self.redis.aclose()
        await self.db.close()


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
