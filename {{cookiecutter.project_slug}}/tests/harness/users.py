"""Test users: a row in the worker's schema with a token, and their removal after the test."""

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol

from {{ cookiecutter.package_name }} import store
from {{ cookiecutter.package_name }}.resources import Resources


@dataclass(frozen=True, slots=True)
class User:
    """A user row in the worker's schema, with a valid token for it."""

    id: str
    token: str


class UserFactory(Protocol):
    """Makes a user (named, or "test user") for the current test; see the `make_user` fixture."""

    def __call__(self, name: str = ...) -> Awaitable[User]: ...


async def forget_user(resources: Resources, user_id: str) -> None:
    """Delete a user, the messages it sent (by cascade), and its rate-limit counters: the two
    stores at once."""
    await asyncio.gather(
        store.delete_user(resources.db, user_id), _forget_counters(resources, user_id)
    )


async def _forget_counters(resources: Resources, user_id: str) -> None:
    pattern = resources.keys.match("ratelimit", user_id, "")
    stale = [key async for key in resources.redis.scan_iter(match=pattern, count=1000)]
    if stale:
        await resources.redis.unlink(*stale)
