"""The leak guard: after a test's teardown, no session and nothing of its users may survive.

A leak fails the test that caused it, naming what leaked, and is then cleared, so that no later
test fails or turns flaky for it.

What a user owns is read from the schema itself: the `users` row, and every row of any table
with a foreign key to `users`. A new migration adding such a table needs no change here.
"""

import asyncio
import weakref

from psycopg import AsyncConnection, sql

from {{ cookiecutter.package_name }}.pool import SchemaPool
from {{ cookiecutter.package_name }}.protocol import CloseCode
from {{ cookiecutter.package_name }}.resources import Resources
from {{ cookiecutter.package_name }}.sessions import Session, SessionRegistry

from .live import DRAIN_TIMEOUT_S
from .users import forget_user

REFERENCES_TO_USERS = """
SELECT referencing.relname, attribute.attname
FROM pg_constraint AS fk
JOIN pg_class AS referencing ON referencing.oid = fk.conrelid
JOIN pg_attribute AS attribute
    ON attribute.attrelid = fk.conrelid AND attribute.attnum = fk.conkey[1]
WHERE fk.contype = 'f' AND fk.confrelid = %s::regclass AND cardinality(fk.conkey) = 1
ORDER BY 1, 2
"""

# The query per pool (so per schema): a worker's schema does not change during its run.
_owned_rows_queries: weakref.WeakKeyDictionary[SchemaPool, sql.Composed] = (
    weakref.WeakKeyDictionary()
)


class LeakGuard:
    """The users one test made, and the check that the test left nothing behind."""

    def __init__(self, resources: Resources | None, registry: SessionRegistry | None) -> None:
        self.resources = resources
        self.registry = registry
        self.user_ids: list[str] = []

    def track(self, user_id: str) -> None:
        self.user_ids.append(user_id)

    def _sessions(self) -> list[Session]:
        """The sessions the app still holds, if the test used the app."""
        return self.registry.all() if self.registry is not None else []

    async def leaks(self) -> list[str]:
        """What is left: any live session, and anything the tracked users still own."""
        found = [
            f"session {session.id} of user {session.user_id} is still registered"
            for session in self._sessions()
        ]
        resources = self.resources
        if resources is None or not self.user_ids:
            return found
        # The two stores at once: one round trip each, side by side.
        rows, keys = await asyncio.gather(
            _rows_of(resources, self.user_ids), _redis_keys_of(resources, self.user_ids)
        )
        found += [f"{what} of user {user_id}" for what, user_id in rows]
        found += [f"Redis key {key!r} of user {user_id}" for user_id, key in keys]
        return found

    async def clear(self) -> None:
        """Undo what leaked, so that the tests after this one start clean: close the sessions
        still registered, waiting a bounded time for the server to drain them (one that does not
        shows in the next test's check), and forget the tracked users again."""
        sessions = self._sessions()
        for session in sessions:
            session.close(CloseCode.SERVICE_RESTART)
        if sessions:
            drains = [asyncio.ensure_future(session.drained.wait()) for session in sessions]
            _, stuck = await asyncio.wait(drains, timeout=DRAIN_TIMEOUT_S)
            for drain in stuck:
                drain.cancel()
        if self.resources is not None:
            resources = self.resources
            await asyncio.gather(*(forget_user(resources, user_id) for user_id in self.user_ids))


async def _rows_of(resources: Resources, user_ids: list[str]) -> list[tuple[str, str]]:
    """("<table> row", user id) for every row the users own: one query."""
    async with resources.db.connection() as conn:
        if resources.db not in _owned_rows_queries:
            _owned_rows_queries[resources.db] = await _owned_rows_query(conn, resources.db.schema)
        cursor = await conn.execute(_owned_rows_queries[resources.db], {"ids": user_ids})
        return await cursor.fetchall()


async def _owned_rows_query(conn: AsyncConnection, schema: str) -> sql.Composed:
    """One query listing ("<table> row", user id) for every row the given users own: those
    of `schema`'s users table and of the tables referencing it."""
    users = sql.Identifier(schema, "users").as_string(conn)
    references = await (await conn.execute(REFERENCES_TO_USERS, [users])).fetchall()
    return sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT {} || ' row', {}::text FROM {} WHERE {} = ANY(%(ids)s::uuid[])").format(
            sql.Literal(table),
            sql.Identifier(column),
            sql.Identifier(schema, table),
            sql.Identifier(column),
        )
        for table, column in [("users", "id"), *references]
    )


async def _redis_keys_of(resources: Resources, user_ids: list[str]) -> list[tuple[str, str]]:
    """(user id, key) for every key under the prefix naming one of the users: one SCAN of the
    prefix for all of them (of every master, on a cluster)."""
    found: list[tuple[str, str]] = []
    async for key in resources.redis.scan_iter(match=resources.keys.match(), count=1000):
        found += [(user_id, key) for user_id in user_ids if user_id in key]
    return found
