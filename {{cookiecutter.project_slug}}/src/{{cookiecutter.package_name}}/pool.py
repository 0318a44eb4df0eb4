"""The Postgres connection pool the service's queries run on.

It names each query's schema, since nothing a connection was told can say which schema a
statement means behind a transaction pooler (see store.py), and it never hands out a connection
the server has closed.
"""

import select
import string
from typing import Any, LiteralString

from psycopg import AsyncConnection, sql
from psycopg_pool import AsyncConnectionPool


class SchemaPool(AsyncConnectionPool[AsyncConnection[Any]]):
    """A connection pool for the tables of one schema; `query` names them in it.

    A restart of Postgres (or pg_terminate_backend, an idle timeout, a pooler's restart) leaves
    every idle pooled connection dead, and each would fail the next statement on it.
    psycopg_pool's `check=AsyncConnectionPool.check_connection` finds them with a round trip per
    checkout (141 us against 19.5 us measured on loopback), and backs off 1, 2, 4 s... after each
    one it finds: with 10 dead connections, a client asking for one at a time waited 10 s for a
    PoolTimeout, twice. A server that ends a connection sends a FATAL error and closes the
    socket, so an idle connection with anything to read is dead: one poll() (1.7 us) finds it,
    and the next is taken at once.
    """

    def __init__(self, conninfo: str, schema: str, **kwargs: Any) -> None:
        super().__init__(conninfo, **kwargs)
        self.schema = schema
        self._queries: dict[str, bytes] = {}

    def query(self, template: LiteralString) -> bytes:
        """`template` with each `{table}` made `"<schema>"."table"`: composed once per pool,
        then sent as it is."""
        query = self._queries.get(template)
        if query is None:
            tables = {name for _, name, _, _ in string.Formatter().parse(template) if name}
            named = {table: sql.Identifier(self.schema, table) for table in tables}
            query = self._queries[template] = sql.SQL(template).format(**named).as_bytes()
        return query

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
