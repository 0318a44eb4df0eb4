"""Per-worker namespaces in the shared Postgres and Redis: naming, lifecycle, and reaping.

A worker's schema is `test_<run>_<worker>_<random>` and its Redis prefix `test:<run>:<worker>:`.
While the worker lives, a dedicated connection holds a session-level advisory lock keyed by its
schema; the schema's comment records who made it and which Redis prefix goes with it. A schema
whose lock anybody can take belongs to a dead worker: the reaper drops it and unlinks its keys.

The lock is held on a direct connection (Postgres.direct_url), never through a transaction
pooler, which hands each transaction to any server connection and so keeps no session for a
process. A heartbeat with a timeout would be the alternative, and it must choose between reaping
a dead worker's schema late and reaping a live worker that was slow to beat on a loaded machine;
a session dies with its process, at once and never before. A worker creates, migrates and drops
its schema through the pooler; the reapers, which take those locks, work on direct connections.
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

import psycopg
import redis
from psycopg import sql

from {{ cookiecutter.package_name }}.keys import RedisKeys
from {{ cookiecutter.package_name }}.migrations import advisory_lock_key, migrate
from {{ cookiecutter.package_name }}.redisclient import cluster_enabled
from {{ cookiecutter.package_name }}.resources import connection_kwargs

from .services import Services

SCHEMA_PATTERN = re.compile(r"test_([0-9a-z]+)_([0-9a-z]+)_[0-9a-f]{6}")
MARKER = "ws-service-test-harness"
UNLINK_BATCH = 500
CRASHED_WORKER_LOCK_TIMEOUT = "10s"

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
                        sql.Identifier(schema), sql.Literal(_owner_comment(prefix))
                    )
                )
            with postgres.connect(autocommit=True) as conn:
                migrate(conn, schema)
            yield schema
        finally:
            # A connection of its own: the pooler may have restarted since.
            with postgres.connect(autocommit=True) as conn:
                drop_namespaces(conn, redis_url, schema, prefix)


def _owner_comment(prefix: str) -> str:
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return json.dumps(
        {
            "made_by": MARKER,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": started,
            "redis_prefix": prefix,
        }
    )


def drop_namespaces(conn: psycopg.Connection, redis_url: str, schema: str, prefix: str) -> int:
    """Unlink the keys under `prefix`, then drop `schema`; return how many keys went. The schema
    goes last because it is how the reaper finds the keys: a process killed in between leaves a
    schema for the next run to reap, never keys that no schema names."""
    keys = unlink_prefix(redis_url, prefix)
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


def unlink_prefix(redis_url: str, prefix: str) -> int:
    """Unlink every key under `prefix` (SCAN + batched UNLINK, on every master of a cluster);
    return how many."""
    client = redis_client_of(redis_url)
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


def reap_orphans(postgres: Postgres, redis_url: str) -> Reaped:
    """Drop the harness schemas no live worker holds, and unlink their Redis keys."""
    schemas, keys = [], 0
    with postgres.connect_direct(autocommit=True) as conn:
        for schema, comment in _harness_schemas(conn):
            key = alive_lock_key(schema)
            taken = conn.execute("SELECT pg_try_advisory_lock(%s)", [key]).fetchone()
            if not (taken and taken[0]):
                continue
            try:
                keys += drop_namespaces(conn, redis_url, schema, comment["redis_prefix"])
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", [key])
            schemas.append(schema)
    return Reaped(schemas, keys)


def reap_worker(postgres: Postgres, redis_url: str, run_id: str, worker: str) -> Reaped:
    """Drop what a crashed worker of this run left, once Postgres has noticed it is gone: its
    keys, then its schema, as drop_namespaces does. A worker may have made keys and no schema
    yet (tests that ask for the prefix alone), so its prefix is cleared either way."""
    prefix = redis_prefix(run_id, worker)
    with postgres.connect_direct(autocommit=True) as conn:
        conn.execute(sql.SQL("SET lock_timeout = {}").format(CRASHED_WORKER_LOCK_TIMEOUT))
        schemas = [
            schema
            for schema, _comment in _harness_schemas(conn)
            if schema.startswith(f"test_{_safe(run_id)}_{_safe(worker)}_")
        ]
        for schema in schemas:
            conn.execute("SELECT pg_advisory_lock(%s)", [alive_lock_key(schema)])
        keys = unlink_prefix(redis_url, prefix)
        for schema in schemas:
            drop_schema(conn, schema)
            conn.execute("SELECT pg_advisory_unlock(%s)", [alive_lock_key(schema)])
    return Reaped(schemas, keys)


def _harness_schemas(conn: psycopg.Connection) -> list[tuple[str, dict[str, str]]]:
    """Schemas this harness made, with their owner comments; others are never touched."""
    rows = conn.execute(
        "SELECT nspname, obj_description(oid, 'pg_namespace') FROM pg_namespace"
        " WHERE nspname LIKE 'test\\_%'"
    ).fetchall()
    found = []
    for schema, comment in rows:
        if not SCHEMA_PATTERN.fullmatch(schema) or not comment:
            continue
        with contextlib.suppress(ValueError):
            owner = json.loads(comment)
            if isinstance(owner, dict) and owner.get("made_by") == MARKER:
                found.append((schema, owner))
    return found
