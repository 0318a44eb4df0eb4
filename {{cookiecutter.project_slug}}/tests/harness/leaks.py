"""The leak guard: after a test's teardown, no session and nothing of its users may survive.

A leak fails the test that caused it, naming what leaked, instead of making a later test flaky.
"""

from {{ cookiecutter.package_name }}.resources import Resources
from {{ cookiecutter.package_name }}.sessions import SessionRegistry


class LeakGuard:
    """The users one test made, and the check that the test left nothing behind."""

    def __init__(self, resources: Resources | None, registry: SessionRegistry | None) -> None:
        self.resources = resources
        self.registry = registry
        self.user_ids: list[str] = []

    def track(self, user_id: str) -> None:
        self.user_ids.append(user_id)

    async def leaks(self) -> list[str]:
        """What is left: any live session, and anything the tracked users still own."""
        found = [
            f"session {session.id} of user {session.user_id} is still registered"
            for session in (self.registry.all() if self.registry is not None else [])
        ]
        resources = self.resources
        if resources is None or not self.user_ids:
            return found
        async with resources.db.connection() as conn:
            cursor = await conn.execute(
                "SELECT 'user row', id::text FROM users WHERE id = ANY(%(ids)s::uuid[])"
                " UNION ALL SELECT 'message row ' || id, sender_id::text FROM messages"
                " WHERE sender_id = ANY(%(ids)s::uuid[])",
                {"ids": self.user_ids},
            )
            found += [f"{what} of user {user_id}" for what, user_id in await cursor.fetchall()]
        for user_id in self.user_ids:
            pattern = resources.keys.match() + user_id + "*"
            async for key in resources.redis.scan_iter(match=pattern, count=1000):
                found.append(f"Redis key {key!r} of user {user_id}")
        return found
