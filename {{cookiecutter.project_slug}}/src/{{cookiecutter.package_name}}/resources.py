"""The expensive, shareable parts of the service, opened once per process.

A Resources is what the test harness builds once per xdist worker and hands to every app it
creates: the Postgres pool (bound to one schema), the Redis client (bound to one key prefix), the
message bus with its consumer group, and the keyring.
"""

import os
import select
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import EqualJitterBackoff

from .auth import Keyring
from .bus import Bus
from .keys import RedisKeys
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

    db: AsyncConnectionPool
    redis: Redis
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
            settings.database_timeout_s,
        )
        redis: Redis = Redis.from_url(
            settings.redis_url,
            decode_responses=True,
            client_name=f"{settings.redis_prefix}{settings.instance_id}",
            retry=REDIS_RETRY,
        )
        keys = RedisKeys(settings.redis_prefix)
        try:
            await redis.ping()
            bus = Bus(redis, keys, settings.instance_id)
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


class DatabasePool(AsyncConnectionPool[AsyncConnection[Any]]):
    """A pool that never hands out a connection the server has closed.

    A restart of Postgres (or pg_terminate_backend, an idle timeout, a pooler's restart) leaves
    every idle pooled connection dead, and each would fail the next statement on it.
    psycopg_pool's `check=AsyncConnectionPool.check_connection` finds them with a round trip per
    checkout (141 us against 19.5 us measured on loopback), and backs off 1, 2, 4 s... after each
    one it finds: with 10 dead connections, a client asking for one at a time waited 10 s for a
    PoolTimeout, twice. A server that ends a connection sends a FATAL error and closes the
    socket, so an idle connection with anything to read is dead: one poll() (1.7 us) finds it,
    and the next is taken at once.
    """

    async def getconn(self, timeout: float | None = None) -> AsyncConnection[Any]:  # noqa: ASYNC109 - psycopg_pool's
        # Every dead one goes back closed, which the pool replaces: at most the pool's size.
        for _ in range(self.max_size):
            conn = await super().getconn(timeout)
            if not _closed_by_server(conn):
                return conn
            await conn.close()
            await self.putconn(conn)
        return await super().getconn(timeout)


def _closed_by_server(conn: AsyncConnection[Any]) -> bool:
    """Whether an idle connection has heard from its server, which only a goodbye does here (or,
    rarely, a notice: replacing that connection costs one connect)."""
    if conn.closed:
        return True
    # poll(), not select(): a process serving thousands of sockets has descriptors past 1024.
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    return bool(poller.poll(0))


async def open_database_pool(
    url: str, schema: str, max_size: int, timeout_s: float = OPEN_TIMEOUT_S
) -> AsyncConnectionPool:
    """A pool whose connections see only `schema`, opened and checked; a checkout that waits
    `timeout_s` for a connection raises PoolTimeout."""
    pool = DatabasePool(
        url,
        min_size=1,
        max_size=max_size,
        timeout=timeout_s,
        kwargs={
            # Only the service's schema: with `public` on the path, a missing table could
            # silently resolve there.
            "options": connection_options(url, f"-c search_path={schema}"),
            # Every query in store.py is a single statement: autocommit spares each one its
            # BEGIN and COMMIT round trips.
            "autocommit": True,
        },
        open=False,
    )
    await pool.open(wait=True, timeout=OPEN_TIMEOUT_S)
    return pool


def connection_options(url: str, *extra: str) -> str:
    """libpq's `options` for a connection to `url`: those it starts with already, the URL's own
    or else PGOPTIONS (as libpq reads them), then `extra`, which win. A connection given
    `options` ignores both, so a statement_timeout set in DATABASE_URL would silently go."""
    given = conninfo_to_dict(url).get("options") or os.environ.get("PGOPTIONS", "")
    return " ".join([str(given), *extra]).strip()
