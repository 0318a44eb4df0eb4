"""Test users: a row in the worker's schema with a token, and their removal after the test."""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from {{ cookiecutter.package_name }} import store
from {{ cookiecutter.package_name }}.auth import SigningKey
from {{ cookiecutter.package_name }}.resources import Resources


@dataclass(frozen=True, slots=True)
class User:
    """A user row in the worker's schema, with a valid token for it."""

    id: str
    token: str


class UserFactory:
    """Makes users with tokens for one test, each tracked by the leak guard; `forget_all`
    deletes them afterwards. The `make_user` fixture hands one to a test, `test_user` uses one."""

    def __init__(
        self, resources: Resources, signing_key: SigningKey, track: Callable[[str], None]
    ) -> None:
        self.resources = resources
        self.signing_key = signing_key
        self.track = track
        self.created: list[str] = []

    async def __call__(self, name: str = "test user") -> User:
        user_id = await store.create_user(self.resources.db, name)
        self.created.append(user_id)
        self.track(user_id)
        return User(user_id, self.signing_key.issue(user_id))

    async def forget_all(self) -> None:
        """Delete every user made here, and what each owns."""
        for user_id in self.created:
            await forget_user(self.resources, user_id)


async def forget_user(resources: Resources, user_id: str) -> None:
    """Delete a user, the messages it sent (by cascade), and its rate-limit counters: the two
    stores at once."""
    await asyncio.gather(
        store.delete_user(resources.db, user_id), _forget_counters(resources, user_id)
    )


async def _forget_counters(resources: Resources, user_id: str) -> None:
    pattern = resources.keys.match(resources.keys.key("ratelimit", user_id, ""))
    stale = [key async for key in resources.redis.scan_iter(match=pattern, count=1000)]
    if stale:
        await resources.redis.unlink(*stale)
