"""Queries on the service's tables, each naming the schema it reads and writes.

No query relies on a search_path: a transaction pooler (PgBouncer) runs each statement on
whichever server connection is free, so nothing a connection was told at its start, or by a
session `SET`, can say which schema a statement means. Naming it costs nothing per query.
"""

from typing import Any

from psycopg.types.json import Jsonb

from .pool import SchemaPool
from .protocol import UNBORN_EPOCH, Message, Position
{%- if cookiecutter.tracing == "otel" %}
from .tracing import traced_store
{%- endif %}


async def create_user(pool: SchemaPool, name: str) -> str:
    """Create an enabled user; return its id."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            pool.query("INSERT INTO {users} (name) VALUES (%s) RETURNING id"), [name]
        )
        row = await cursor.fetchone()
    assert row is not None
    return str(row[0])


async def delete_user(pool: SchemaPool, user_id: str) -> None:
    """Delete a user and, by cascade, the messages it sent."""
    async with pool.connection() as conn:
        await conn.execute(pool.query("DELETE FROM {users} WHERE id = %s"), [user_id])


async def is_active_user(pool: SchemaPool, user_id: str) -> bool:
    """Whether `user_id` (a UUID) names an existing, enabled user."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            pool.query("SELECT 1 FROM {users} WHERE id = %s AND NOT disabled"), [user_id]
        )
        return await cursor.fetchone() is not None


async def inactive_users(pool: SchemaPool, user_ids: list[str]) -> list[str]:
    """Those of `user_ids` that are disabled or no longer exist."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            pool.query(
                "SELECT wanted::text FROM unnest(%s::uuid[]) AS wanted WHERE NOT EXISTS"
                " (SELECT 1 FROM {users} WHERE id = wanted AND NOT disabled)"
            ),
            [user_ids],
        )
        return [row[0] for row in await cursor.fetchall()]

{% if cookiecutter.tracing == "otel" %}
@traced_store
{%- endif %}
async def save_message(pool: SchemaPool, channel: str, sender_id: str, data: Any) -> Message:
    """Persist a message at the channel's next offset, in one statement: the channel's row stays
    locked until it commits, so concurrent publishers get distinct, contiguous offsets. Raises
    psycopg.DataError when `data` cannot be stored as jsonb."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            pool.query(
                "WITH position AS ("
                " INSERT INTO {channels} (name, last_offset) VALUES (%(channel)s, 1)"
                " ON CONFLICT (name) DO UPDATE SET last_offset = {channels}.last_offset + 1"
                " RETURNING epoch, last_offset)"
                " INSERT INTO {messages} (channel, channel_offset, sender_id, data)"
                " SELECT %(channel)s, last_offset, %(sender)s, %(data)s FROM position"
                " RETURNING channel_offset, (SELECT epoch FROM position), sent_at"
            ),
            {"channel": channel, "sender": sender_id, "data": Jsonb(data)},
        )
        row = await cursor.fetchone()
    assert row is not None
    return Message(channel, row[0], row[1], sender_id, data, row[2])


async def channel_position(pool: SchemaPool, channel: str) -> Position:
    """The channel's current position; (0, UNBORN_EPOCH) for a channel nobody published to.

    Only a publish creates a channel's row: subscribing to any number of made-up channels
    writes nothing."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            pool.query("SELECT last_offset, epoch FROM {channels} WHERE name = %s"), [channel]
        )
        row = await cursor.fetchone()
    return Position(0, UNBORN_EPOCH) if row is None else Position(*row)


async def channel_offsets(pool: SchemaPool, channels: list[str]) -> dict[str, int]:
    """The newest offset of each of `channels` that has a row."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            pool.query("SELECT name, last_offset FROM {channels} WHERE name = ANY(%s)"), [channels]
        )
        return dict(await cursor.fetchall())


async def messages_between(
    pool: SchemaPool, channel: str, after: int, upto: int, limit: int
) -> list[Message]:
    """At most `limit` of the channel's stored messages with offsets in (after, upto], in order.
    Offsets are contiguous as stored; a hole means messages were deleted since."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            pool.query(
                "SELECT m.channel_offset, c.epoch, m.sender_id::text, m.data, m.sent_at"
                " FROM {messages} m JOIN {channels} c ON c.name = m.channel"
                " WHERE m.channel = %s AND m.channel_offset > %s AND m.channel_offset <= %s"
                " ORDER BY m.channel_offset LIMIT %s"
            ),
            [channel, after, upto, limit],
        )
        rows = await cursor.fetchall()
    return [Message(channel, *row) for row in rows]
