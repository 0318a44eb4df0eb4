"""The Starlette app: routes, and a lifespan that opens Resources only when none were given."""

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from . import health
from .connection import Connection
from .protocol import CloseCode
from .resources import Resources
from .sessions import SessionRegistry
from .settings import Settings


class Service:
    """One app instance: its own session registry, over Resources it may share with others."""

    def __init__(self, settings: Settings, resources: Resources | None = None) -> None:
        self.settings = settings
        self.registry = SessionRegistry()
        self._given_resources = resources
        self._resources = resources

    @property
    def resources(self) -> Resources:
        if self._resources is None:
            raise RuntimeError("the service has not started: its lifespan opens the Resources")
        return self._resources

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Open Resources if none were given, listen to the bus, close sessions at shutdown."""
        async with AsyncExitStack() as stack:
            if self._given_resources is None:
                self._resources = await Resources.open(self.settings)
                stack.push_async_callback(self._close_own_resources)
            stack.enter_context(self.resources.bus.listening(self.registry.deliver))
            yield
            for session in self.registry.all():
                session.close(CloseCode.GOING_AWAY)

    async def _close_own_resources(self) -> None:
        await self.resources.close()
        self._resources = None

    async def websocket(self, websocket: WebSocket) -> None:
        await Connection(websocket, self.settings, self.resources, self.registry).serve()

    async def readiness(self, request: Request) -> JSONResponse:
        return await health.readiness(self.resources)


def create_app(settings: Settings, resources: Resources | None = None) -> Starlette:
    """Build the app; with `resources` given, it runs on them and never closes them."""
    service = Service(settings, resources)
    app = Starlette(
        routes=[
            WebSocketRoute("/ws", service.websocket),
            Route("/healthz", health.liveness),
            Route("/readyz", service.readiness),
        ],
        lifespan=service.lifespan,
    )
    app.state.service = service
    return app
