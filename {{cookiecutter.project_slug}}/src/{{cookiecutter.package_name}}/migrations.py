"""Migrations: numbered plain SQL files applied in order into one schema.

The version table lives inside the target schema, so every schema (one per deployment, or one
per test worker) carries its own history. Each file runs in its own transaction under an advisory
lock keyed by the schema: two processes migrating the same schema at once apply each file once.
"""

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg import sql

FILE_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


@dataclass(frozen=True, slots=True)
class Migration:
    """One SQL file."""

    version: int
    name: str
    sql: str


def load_migrations() -> list[Migration]:
    """The migrations shipped in the package's `migrations/` folder, in version order."""
    found: dict[int, Migration] = {}
    for entry in resources.files(__package__).joinpath("migrations").iterdir():
        match = FILE_NAME.fullmatch(entry.name)
        if match is None:
            continue
        version = int(match[1])
        if version in found:
            raise RuntimeError(f"two migrations share version {version:04d}")
        found[version] = Migration(version, match[2], entry.read_text(encoding="utf-8"))
    return [found[version] for version in sorted(found)]


def advisory_lock_key(purpose: str, schema: str) -> int:
    """A stable 64-bit advisory-lock key for `purpose` ("migrations", ...) on `schema`."""
    digest = hashlib.blake2b(f"{purpose}:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def migrate(conn: psycopg.Connection, schema: str) -> list[Migration]:
    """Apply the pending migrations into `schema` (created if missing); return those applied."""
    key = advisory_lock_key("migrations", schema)
    lock = sql.SQL("SELECT pg_advisory_xact_lock({})").format(key)
    history = sql.Identifier(schema, "schema_migrations")
    with conn.transaction():
        conn.execute(lock)
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            ).format(history)
        )
    applied = []
    for migration in load_migrations():
        with conn.transaction():
            conn.execute(lock)
            done = conn.execute(
                sql.SQL("SELECT 1 FROM {} WHERE version = %s").format(history),
                [migration.version],
            ).fetchone()
            if done:
                continue
            conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
            conn.execute(migration.sql)
            conn.execute(
                sql.SQL("INSERT INTO {} (version, name) VALUES (%s, %s)").format(history),
                [migration.version, migration.name],
            )
        applied.append(migration)
    return applied
