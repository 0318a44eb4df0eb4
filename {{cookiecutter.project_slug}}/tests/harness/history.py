"""A channel's history written straight into Postgres, as that many publishes would leave it.

Tests of large recoveries need thousands of stored messages; publishing them one by one would
cost seconds per test, so they are inserted in one statement at the channel's next offsets.
"""

from {{ cookiecutter.package_name }}.pool import SchemaPool
from {{ cookiecutter.package_name }}.protocol import Position


async def store_history(db: SchemaPool, channel: str, sender_id: str, count: int) -> Position:
    """Append `count` messages {"n": 1..count} to the channel; return its new position."""
    async with db.connection() as conn:
        cursor = await conn.execute(
            db.query(
                "WITH position AS ("
                " INSERT INTO {channels} (name, last_offset) VALUES (%(channel)s, %(count)s)"
                " ON CONFLICT (name) DO UPDATE SET last_offset = {channels}.last_offset + %(count)s"
                " RETURNING epoch, last_offset),"
                " stored AS (INSERT INTO {messages} (channel, channel_offset, sender_id, data)"
                " SELECT %(channel)s, last_offset - %(count)s + n, %(sender)s,"
                " jsonb_build_object('n', n)"
                " FROM position, generate_series(1, %(count)s) AS n)"
                " SELECT epoch, last_offset FROM position"
            ),
            {"channel": channel, "sender": sender_id, "count": count},
        )
        row = await cursor.fetchone()
    assert row is not None
    return Position(offset=row[1], epoch=row[0])
