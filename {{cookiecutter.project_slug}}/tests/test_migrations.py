"""The migration runner: per-schema history, idempotence, and safety when processes race."""

from concurrent.futures import ThreadPoolExecutor

import psycopg
from psycopg import sql

from {{ cookiecutter.package_name }}.migrations import load_migrations, migrate
from {{ cookiecutter.package_name }}.resources import Resources

from harness.namespaces import drop_schema
from harness.run import RunContext


def history_of(conn: psycopg.Connection, schema: str) -> list[int]:
    """The versions recorded as applied in `schema`, in order."""
    rows = conn.execute(
        sql.SQL("SELECT version FROM {} ORDER BY version").format(
            sql.Identifier(schema, "schema_migrations")
        )
    ).fetchall()
    return [row[0] for row in rows]


def test_worker_schema_holds_its_own_complete_history(
    run_context: RunContext, worker_db_schema: str
) -> None:
    with run_context.postgres.connect() as conn:
        assert history_of(conn, worker_db_schema) == [m.version for m in load_migrations()]


def test_migrating_again_applies_nothing(run_context: RunContext, worker_db_schema: str) -> None:
    with run_context.postgres.connect(autocommit=True) as conn:
        assert migrate(conn, worker_db_schema) == []


def test_racing_migrations_apply_each_file_once(
    run_context: RunContext, worker_db_schema: str
) -> None:
    schema = f"{worker_db_schema}_race"[:63]

    def run(_: int) -> int:
        with run_context.postgres.connect(autocommit=True) as conn:
            return len(migrate(conn, schema))

    try:
        with ThreadPoolExecutor(4) as pool:
            applied = list(pool.map(run, range(4)))
        with run_context.postgres.connect() as conn:
            assert history_of(conn, schema) == [m.version for m in load_migrations()]
    finally:
        with run_context.postgres.connect(autocommit=True) as conn:
            drop_schema(conn, schema)
    assert sum(applied) == len(load_migrations())


async def test_the_pool_finds_the_worker_schema_by_name_alone(
    shared_resources: Resources, worker_db_schema: str
) -> None:
    """Nothing on its connections points at the schema, as through a transaction pooler: every
    query names it."""
    async with shared_resources.db.connection() as conn:
        cursor = await conn.execute("SELECT current_schemas(false)")
        row = await cursor.fetchone()
        assert row is not None and worker_db_schema not in row[0]
        cursor = await conn.execute(shared_resources.db.query("SELECT count(*) FROM {users}"))
        assert await cursor.fetchone() is not None
