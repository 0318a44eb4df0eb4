"""Which Postgres and Redis a run uses, decided once by the controller.

In order: TEST_DATABASE_URL / TEST_REDIS_URL when set; else the local defaults when they answer;
else throwaway servers started for this run (embedded mode, see embedded.py). Setting
HARNESS_SERVICES=embedded skips straight to embedded mode.

TEST_DATABASE_URL may lead through a transaction pooler (PgBouncer): TEST_DATABASE_POOLER=
transaction says so, and TEST_DATABASE_DIRECT_URL then names the same database without the
pooler, for the one thing a pooler cannot keep: each worker's liveness lock, a session-level
advisory lock held for the worker's life (namespaces.py). Everything else goes through the pooler.
"""

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import redis

from .embedded import embedded_postgres, embedded_redis

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
CONNECT_TIMEOUT_S = 3


class ServiceUnreachable(RuntimeError):
    """A configured service does not answer; the message names its URL."""


class ServiceMisconfigured(RuntimeError):
    """The TEST_* variables contradict each other; the message names them."""


@dataclass(frozen=True, slots=True)
class Services:
    """The URLs every worker of the run uses, and where each came from."""

    database_url: str
    direct_database_url: str
    database_pooler: str
    redis_url: str
    origin: dict[str, str]


def postgres_error(url: str) -> str | None:
    """Why Postgres at `url` does not answer, or None when it does."""
    try:
        with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as error:
        return str(error).strip().splitlines()[0]
    return None


def redis_error(url: str) -> str | None:
    """Why Redis at `url` does not answer, or None when it does."""
    client = redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S)
    try:
        client.ping()
    except redis.RedisError as error:
        return str(error)
    finally:
        client.close()
    return None


def resolve(stack: contextlib.ExitStack) -> Services:
    """Pick the run's services; embedded servers started here stop when `stack` closes."""
    embedded_only = os.environ.get("HARNESS_SERVICES") == "embedded"
    origin: dict[str, str] = {}
    database_url = redis_url = None
    if not embedded_only:
        database_url = _pick("postgres", "TEST_DATABASE_URL", DEFAULT_DATABASE_URL, origin)
        redis_url = _pick("redis", "TEST_REDIS_URL", DEFAULT_REDIS_URL, origin)
    if database_url is None or redis_url is None:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="harness-")))
        if database_url is None:
            database_url = stack.enter_context(embedded_postgres(workdir / "postgres"))
            origin["postgres"] = "embedded"
        if redis_url is None:
            redis_url = stack.enter_context(embedded_redis(workdir / "redis"))
            origin["redis"] = "embedded"
    if origin["postgres"] == "embedded":
        return Services(database_url, database_url, "none", redis_url, origin)
    pooler, direct_url = _pooling(database_url)
    return Services(database_url, direct_url, pooler, redis_url, origin)


def _pooling(database_url: str) -> tuple[str, str]:
    """TEST_DATABASE_POOLER (as given: run.py checks it as the service would) and the direct URL
    (TEST_DATABASE_DIRECT_URL, else `database_url` itself), checked to reach the database that
    `database_url` reaches."""
    pooler = os.environ.get("TEST_DATABASE_POOLER", "").strip() or "none"
    direct_url = os.environ.get("TEST_DATABASE_DIRECT_URL")
    if direct_url is None:
        if pooler == "transaction":
            raise ServiceMisconfigured(
                "TEST_DATABASE_POOLER=transaction needs TEST_DATABASE_DIRECT_URL: the same"
                " database without the pooler, where each worker holds its liveness lock"
            )
        return pooler, database_url
    unreachable = postgres_error(direct_url)
    if unreachable is not None:
        raise ServiceUnreachable(
            f"TEST_DATABASE_DIRECT_URL={direct_url} does not answer: {unreachable}"
        )
    if _server_of(database_url) != _server_of(direct_url):
        raise ServiceMisconfigured(
            f"TEST_DATABASE_DIRECT_URL={direct_url} reaches another server or database than"
            f" TEST_DATABASE_URL={database_url}"
        )
    return pooler, direct_url


def _server_of(url: str) -> tuple[Any, ...] | None:
    """What tells a Postgres server and database apart: its name and the server's start."""
    with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        return conn.execute("SELECT current_database(), pg_postmaster_start_time()").fetchone()


def _pick(service: str, variable: str, default: str, origin: dict[str, str]) -> str | None:
    """The URL in `variable`, which must answer; else the local default if it answers."""
    error_of = postgres_error if service == "postgres" else redis_error
    url = os.environ.get(variable)
    if url is not None:
        error = error_of(url)
        if error is not None:
            raise ServiceUnreachable(f"{variable}={url} does not answer: {error}")
        origin[service] = f"from {variable}"
        return url
    if error_of(default) is None:
        origin[service] = "local default"
        return default
    return None
