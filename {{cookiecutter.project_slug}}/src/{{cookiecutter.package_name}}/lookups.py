"""The handshake's user check, with concurrent checks coalesced into one query.

A reconnect storm (every client of an instance that just restarted, or a load balancer moving
thousands at once) would otherwise send one query per handshake, each waiting for one of the
pool's few connections, until handshakes time out and are refused, and the clients retry. Here,
while a query runs, the checks that arrive wait for the next one, which answers all of them.

A query that takes longer than HANDSHAKE_DB_TIMEOUT_S fails every check of its batch with
TimeoutError: Postgres is not answering. The time is the query's, not each handshake's, so a
storm that keeps the event loop busy does not make Postgres look down.
"""

import asyncio

from . import store
from .pool import SchemaPool


class UserChecks:
    """Whether users exist and are enabled, asked of Postgres one batch at a time."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._waiting: dict[str, list[asyncio.Future[bool]]] = {}
        self._querying: asyncio.Task[None] | None = None

    async def is_active(self, db: SchemaPool, user_id: str) -> bool:
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(user_id, []).append(answer)
        if self._querying is None:
            self._querying = asyncio.create_task(self._answer_all(db), name="user checks")
        return await answer

    async def _answer_all(self, db: SchemaPool) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, {}
                try:
                    async with asyncio.timeout(self.timeout_s):
                        inactive = set(await store.inactive_users(db, list(batch)))
                except Exception as error:
                    for answers in batch.values():
                        _settle(answers, error)
                else:
                    for user_id, answers in batch.items():
                        _settle(answers, user_id not in inactive)
        finally:
            self._querying = None


def _settle(answers: list[asyncio.Future[bool]], outcome: bool | Exception) -> None:
    """Answer one user's checks, but those whose handshake gave up waiting."""
    for answer in answers:
        if answer.done():
            continue
        if isinstance(outcome, Exception):
            answer.set_exception(outcome)
        else:
            answer.set_result(outcome)
