"""One app instance's state: sessions, channel feeds and metrics, over Resources it may share."""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import psycopg
from starlette.applications import Starlette

from . import store
from .feeds import Feeds
from .lookups import UserChecks
from .metrics import Metrics
from .protocol import CloseCode
from .readiness import Readiness
from .resources import Resources
from .sessions import SessionRegistry
from .settings import Settings

log = logging.getLogger(__name__)


class Service:
    """Per-app state; the Resources are opened by the lifespan only when none were given."""

    def __init__(self, settings: Settings, resources: Resources | None = None) -> None:
        self.settings = settings
        self.registry = SessionRegistry()
        self.metrics = Metrics(self.registry.__len__, self._stream_read_failures)
        self.feeds = Feeds(settings.history_limit, settings.position_check_s, self.metrics)
        self.readiness = Readiness()
        self.user_checks = UserChecks(settings.handshake_db_timeout_s)
        self.draining = False
        self._given_resources = resources
        self._resources = resources

    @property
    def resources(self) -> Resources:
        if self._resources is None:
            raise RuntimeError("the service has not started: its lifespan opens the Resources")
        return self._resources

    def _stream_read_failures(self) -> int:
        return 0 if self._resources is None else self._resources.bus.read_failures

    def start_draining(self) -> None:
        """Turn readiness off and refuse new connections; live ones carry on for now."""
        self.draining = True

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Open Resources unless given, run the feeds on the bus, close sessions at shutdown."""
        async with AsyncExitStack() as stack:
            if self._given_resources is None:
                self._resources = await Resources.open(self.settings)
                stack.push_async_callback(self._close_own_resources)
            await stack.enter_async_context(self.feeds.running(self.resources.db))
            stack.enter_context(self.resources.bus.listening(self.feeds))
            revoking = asyncio.create_task(self._close_revoked_sessions(), name="revoke users")
            stack.push_async_callback(_stop, revoking)
            yield
            for session in self.registry.all():
                session.close(CloseCode.SERVICE_RESTART)

    async def _close_own_resources(self) -> None:
        await self.resources.close()
        self._resources = None

    async def _close_revoked_sessions(self) -> None:
        """Every USER_CHECK_S, close (4003) the sessions of users disabled or deleted since they
        connected: this check, on every instance, is what bounds a revoked user's time."""
        while True:
            await asyncio.sleep(self.settings.user_check_s)
            users = self.registry.users()
            if not users:
                continue
            try:
                revoked = await store.inactive_users(self.resources.db, users)
            except psycopg.Error as error:
                self.metrics.backend_error("postgres", "user_check")
                log.warning("checking for revoked users failed: %s", error)
                continue
            for user_id in revoked:
                for session in self.registry.sessions_of(user_id):
                    session.close(CloseCode.ACCOUNT_REVOKED)


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.wait({task})
