"""Per-worker namespaces in the shared Postgres and Redis: naming, lifecycle, and reaping.

A worker's schema is `test_<run>_<worker>_<random>` and its Redis prefix `test:<run>:<worker>:`.
While the worker lives, a dedicated connection holds a session-level advisory lock keyed by its
schema; the schema's comment records who made it, which Redis prefix goes with it, and on which
Redis (its URL, less any password). A schema whose lock anybody can take belongs to a dead
worker: the reaper drops it and unlinks its keys on the Redis that worker used, which need not be
the reaping run's: runs that share a Postgres may each have a Redis of their own (a cluster, a
throwaway server), and keys unlinked on the wrong one would stay on the right one for ever, with
no schema left to name them.

The lock is held on a direct connection (Postgres.direct_url), never through a transaction
pooler, which hands each transaction to any server connection and so keeps no session for a
process. A heartbeat with a timeout would be the alternative, and it must choose between reaping
a dead worker's schema late and reaping a live worker that was slow to beat on a loaded machine;
a session dies with its process, at once and never before. A worker creates, migrates and drops
its schema through the pooler; the reapers, which take those locks, work on direct connections.

A run's controller holds a lock of the same kind for the run, and a reaper leaves the schemas of
every other live run alone: a worker that dies mid-run is its own controller's to clean
(reap_worker), and the namespaces a test leaves dead on purpose stay its own to reap, whatever
runs start beside it.
"""

import contextlib
import datetime
import json
import os
import re
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis
from psycopg import sql
from redis.backoff import NoBackoff
from redis.retry import Retry

from {{ cookiecutter.package_name }}.keys import RedisKeys
from {{ cookiecutter.package_name }}.migrations import advisory_lock_key, migrate
from {{ cookiecutter.package_name }}.redisclient import cluster_enabled
from {{ cookiecutter.package_name }}.resources import connection_kwargs

from .embedded import say
from .services import Services

SCHEMA_PATTERN = re.compile(r"test_([0-9a-z]+)_([0-9a-z]+)_[0-9a-f]{6}")
MARKER = "ws-service-test-harness"
UNLINK_BATCH = 500
CRASHED_WORKER_LOCK_TIMEOUT = "10s"
# How long the reaper waits for a dead worker's Redis, which may be long gone, before it counts
# it as gone: once, without retries.
REAPER_CONNECT_TIMEOUT_S = 2.0

RedisClient = redis.Redis | redis.RedisCluster


@dataclass(frozen=True, slots=True)
class Postgres:
    """How the harness reaches Postgres: `url` for all its work, through `pooler` (a
    DATABASE_POOLER value) if there is one; `direct_url`, the same database without a pooler,
    for the sessions it holds."""

    url: str
    direct_url: str
    pooler: str

    @classmethod
    def of(cls, services: Services) -> "Postgres":
        return cls(services.database_url, services.direct_database_url, services.database_pooler)

    def connect(self, **kwargs: Any) -> psycopg.Connection:
        """A connection through the pooler, if any."""
        return psycopg.connect(self.url, **connection_kwargs(self.pooler), **kwargs)

    def connect_direct(self, **kwargs: Any) -> psycopg.Connection:
        """A connection of its own to Postgres, whose session lasts as long as it does."""
        return psycopg.connect(self.direct_url, **kwargs)


def _safe(part: str) -> str:
    return re.sub(r"[^a-z0-9]", "", part.lower())


def schema_name(run_id: str, worker: str) -> str:
    """`test_<run>_<worker>_<random>`: lowercase, well under Postgres's 63-byte limit."""
    return f"test_{_safe(run_id)}_{_safe(worker)}_{secrets.token_hex(3)}"[:63]


def redis_prefix(run_id: str, worker: str) -> str:
    """`test:<run>:<worker>:`, the worker's slice of the shared Redis."""
    return f"test:{run_id}:{worker}:"


def alive_lock_key(schema: str) -> int:
    """The advisory-lock key a live worker holds for its schema."""
    return advisory_lock_key("alive", schema)


def run_lock_key(run_id: str) -> int:
    """The advisory-lock key a live run's controller holds for the run."""
    return advisory_lock_key("run", _safe(run_id))


@contextlib.contextmanager
def run_claim(postgres: Postgres, run_id: str) -> Iterator[None]:
    """Hold the run's lock, on a direct connection, while the block runs."""
    key = run_lock_key(run_id)
    with postgres.connect_direct(autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", [key])
        try:
            yield
        finally:
            # Closing the connection would release the lock only once its backend has exited,
            # after the close returns: a reaper straight after could still find the run live.
            with contextlib.suppress(psycopg.OperationalError):
                conn.execute("SELECT pg_advisory_unlock(%s)", [key])


@contextlib.contextmanager
def worker_schema(postgres: Postgres, redis_url: str, schema: str, prefix: str) -> Iterator[str]:
    """Claim `schema` for this process, migrate it, and when the block ends drop it with the keys
    under `prefix`, which its comment names."""
    with postgres.connect_direct(autocommit=True) as liveness:
        # Held on its own connection for the worker's lifetime: if the process dies, Postgres
        # drops the connection and the lock with it, and the reaper knows the schema is orphaned.
        liveness.execute("SELECT pg_advisory_lock(%s)", [alive_lock_key(schema)])
        try:
            with postgres.connect(autocommit=True) as conn, conn.transaction():
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
                conn.execute(
                    sql.SQL("COMMENT ON SCHEMA {} IS {}").format(
                        sql.Identifier(schema), sql.Literal(owner_comment(redis_url, prefix))
                    )
                )
            with postgres.connect(autocommit=True) as conn:
                migrate(conn, schema)
            yield schema
        finally:
            # A connection of its own: the pooler may have restarted since.
            with postgres.connect(autocommit=True) as conn:
                drop_namespaces(conn, redis_url, schema, prefix)


def owner_comment(redis_url: str, prefix: str) -> str:
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return json.dumps(
        {
            "made_by": MARKER,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": started,
            "redis_prefix": prefix,
            "redis": without_password(redis_url),
        }
    )


def without_password(url: str) -> str:
    """`url` less its password: a schema's comment is there for anyone who reads the catalog."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    address = parts.netloc.rpartition("@")[2]
    netloc = f"{parts.username}@{address}" if parts.username else address
    return urlunsplit(parts._replace(netloc=netloc))


def redis_of(owner: dict[str, str], redis_url: str) -> str:
    """The URL of the Redis a schema's worker used, from its owner comment: the reaping run's own
    `redis_url` (with its password) where it names the same server or says nothing (a comment
    from before the harness recorded it)."""
    recorded = owner.get("redis")
    if recorded is None or recorded == without_password(redis_url):
        return redis_url
    return recorded


def drop_namespaces(
    conn: psycopg.Connection, redis_url: str, schema: str, prefix: str, **options: Any
) -> int:
    """Unlink the keys under `prefix`, then drop `schema`; return how many keys went. The schema
    goes last because it is how the reaper finds the keys: a process killed in between leaves a
    schema for the next run to reap, never keys that no schema names. `options` go to the Redis
    client."""
    keys = unlink_prefix(redis_url, prefix, **options)
    drop_schema(conn, schema)
    return keys


def drop_schema(conn: psycopg.Connection, schema: str) -> None:
    """Drop `schema` and everything in it, if it exists."""
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def redis_client_of(url: str, **options: Any) -> RedisClient:
    """A client of the Redis at `url`, of the kind the service picks (redisclient.py): on a Redis
    Cluster the cluster client, whose SCAN walks every master and whose UNLINK reaches each key's
    node."""
    node = redis.Redis.from_url(url, **options)
    try:
        clustered = cluster_enabled(node.info("cluster"))
    except BaseException:
        node.close()
        raise
    if not clustered:
        return node
    node.close()
    return redis.RedisCluster.from_url(url, **options)


def unlink_prefix(redis_url: str, prefix: str, **options: Any) -> int:
    """Unlink every key under `prefix` (SCAN + batched UNLINK, on every master of a cluster);
    return how many. `options` go to the client."""
    client = redis_client_of(redis_url, **options)
    removed = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=RedisKeys(prefix).match(), count=1000):
            batch.append(key)
            if len(batch) >= UNLINK_BATCH:
                removed += client.unlink(*batch)
                batch.clear()
        if batch:
            removed += client.unlink(*batch)
    finally:
        client.close()
    return removed


@dataclass(frozen=True, slots=True)
class Reaped:
    """What a cleanup removed."""

    schemas: list[str]
    keys: int


def reap_orphans(postgres: Postgres, redis_url: str, run_id: str) -> Reaped:
    """Drop the harness schemas no live worker holds, of run `run_id` or of runs that have ended,
    and unlink their Redis keys on the Redis each worker used (`redis_url` is the reaping run's)."""
    schemas, keys = [], 0
    with postgres.connect_direct(autocommit=True) as conn:
        # An ended run's lock, once taken, stays with this connection until the reaping is done.
        ended = {_safe(run_id): True}
        for schema, run, owner in _harness_schemas(conn):
            if run not in ended:
                ended[run] = _try_lock(conn, run_lock_key(run))
            key = alive_lock_key(schema)
            if not (ended[run] and _try_lock(conn, key)):
                continue
            try:
                reaped = _reap(conn, redis_of(owner, redis_url), schema, owner["redis_prefix"])
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", [key])
            if reaped is not None:
                schemas.append(schema)
                keys += reaped
    return Reaped(schemas, keys)


def _try_lock(conn: psycopg.Connection, key: int) -> bool:
    taken = conn.execute("SELECT pg_try_advisory_lock(%s)", [key]).fetchone()
    return bool(taken and taken[0])


def _reap(conn: psycopg.Connection, redis_url: str, schema: str, prefix: str) -> int | None:
    """Drop a dead worker's namespaces as drop_namespaces does; the keys it unlinked, or None
    where its Redis refused the reaper (the schema stays, for a run that may)."""
    once = {"socket_connect_timeout": REAPER_CONNECT_TIMEOUT_S, "retry": Retry(NoBackoff(), 0)}
    try:
        return drop_namespaces(conn, redis_url, schema, prefix, **once)
    except redis.AuthenticationError as error:
        say(f"left {schema}: its Redis at {without_password(redis_url)} refused: {error}")
        return None
    except (redis.ConnectionError, redis.TimeoutError):
        # Nobody answers where its Redis was: a throwaway server, whose keys went with it.
        drop_schema(conn, schema)
        return 0


def reap_worker(postgres: Postgres, redis_url: str, run_id: str, worker: str) -> Reaped:
    """Drop what a crashed worker of this run left, once Postgres has noticed it is gone: its
    keys, then its schema, as drop_namespaces does. A worker may have made keys and no schema
    yet (tests that ask for the prefix alone), so its prefix is cleared either way."""
    prefix = redis_prefix(run_id, worker)
    with postgres.connect_direct(autocommit=True) as conn:
        conn.execute(sql.SQL("SET lock_timeout = {}").format(CRASHED_WORKER_LOCK_TIMEOUT))
        schemas = [
            schema
            for schema, _run, _owner in _harness_schemas(conn)
            if schema.startswith(f"test_{_safe(run_id)}_{_safe(worker)}_")
        ]
        for schema in schemas:
            conn.execute("SELECT pg_advisory_lock(%s)", [alive_lock_key(schema)])
        keys = unlink_prefix(redis_url, prefix)
        for schema in schemas:
            drop_schema(conn, schema)
            conn.execute("SELECT pg_advisory_unlock(%s)", [alive_lock_key(schema)])
    return Reaped(schemas, keys)


def _harness_schemas(conn: psycopg.Connection) -> list[tuple[str, str, dict[str, str]]]:
    """Schemas this harness made, each with the run its name gives (as _safe wrote it) and its
    owner comment; others are never touched."""
    rows = conn.execute(
        "SELECT nspname, obj_description(oid, 'pg_namespace') FROM pg_namespace"
        " WHERE nspname LIKE 'test\\_%'"
    ).fetchall()
    found = []
    for schema, comment in rows:
        named = SCHEMA_PATTERN.fullmatch(schema)
        if not named or not comment:
            continue
        with contextlib.suppress(ValueError):
            owner = json.loads(comment)
            if isinstance(owner, dict) and owner.get("made_by") == MARKER:
                found.append((schema, named.group(1), owner))
    return found
