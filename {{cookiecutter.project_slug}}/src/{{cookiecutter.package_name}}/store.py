"""Queries on the service's tables. The pool's search_path decides which schema they hit."""

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A published message as persisted."""

    id: int
    channel: str
    sender_id: str
    data: Any
    sent_at: datetime


async def create_user(pool: AsyncConnectionPool, name: str) -> str:
    """Create an enabled user; return its id."""
    async with pool.connection() as conn:
        cursor = await conn.execute("INSERT INTO users (name) VALUES (%s) RETURNING id", [name])
        row = await cursor.fetchone()
    assert row is not None
    return str(row[0])


async def delete_user(pool: AsyncConnectionPool, user_id: str) -> None:
    """Delete a user and, by cascade, the messages it sent."""
    async with pool.connection() as conn:
        await conn.execute("DELETE FROM users WHERE id = %s", [user_id])


async def is_active_user(pool: AsyncConnectionPool, user_id: str) -> bool:
    """Whether `user_id` names an existing, enabled user."""
    try:
        uuid.UUID(user_id)
    except ValueError:
        return False
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT 1 FROM users WHERE id = %s AND NOT disabled", [user_id])
        return await cursor.fetchone() is not None


async def save_message(
    pool: AsyncConnectionPool, channel: str, sender_id: str, data: Any
) -> StoredMessage:
    """Persist a message; raises psycopg.DataError when `data` cannot be stored as jsonb."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "INSERT INTO messages (channel, sender_id, data) VALUES (%s, %s, %s)"
            " RETURNING id, sent_at",
            [channel, sender_id, Jsonb(data)],
        )
        row = await cursor.fetchone()
    assert row is not None
    return StoredMessage(row[0], channel, sender_id, data, row[1])


async def messages_after(
    pool: AsyncConnectionPool, channel: str, since: int, limit: int
) -> tuple[list[StoredMessage], bool]:
    """Up to `limit` messages of `channel` with ids above `since`, oldest first, and whether
    that is all of them (when not, the newest `limit` are returned)."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT id, sender_id::text, data, sent_at FROM messages"
            " WHERE channel = %s AND id > %s ORDER BY id DESC LIMIT %s",
            [channel, since, limit + 1],
        )
        rows = await cursor.fetchall()
    newest = [StoredMessage(row[0], channel, row[1], row[2], row[3]) for row in rows[:limit]]
    return newest[::-1], len(rows) <= limit
