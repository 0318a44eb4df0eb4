"""Which Postgres and Redis a run uses, decided once by the controller.

In order: TEST_DATABASE_URL / TEST_REDIS_URL when set; else the local defaults when they answer;
else throwaway servers started for this run (embedded mode, see embedded.py). Setting
HARNESS_SERVICES=embedded skips straight to embedded mode.
"""

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg
import redis

from .embedded import embedded_postgres, embedded_redis

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
CONNECT_TIMEOUT_S = 3


class ServiceUnreachable(RuntimeError):
    """A configured service does not answer; the message names its URL."""


@dataclass(frozen=True, slots=True)
class Services:
    """The URLs every worker of the run uses, and where each came from."""

    database_url: str
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
    return Services(database_url, redis_url, origin)


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
