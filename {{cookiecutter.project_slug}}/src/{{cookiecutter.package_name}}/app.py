"""The Starlette app: the WebSocket endpoint, probes and metrics over one Service."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from . import health
from .connection import Connection
from .resources import Resources
from .service import Service
from .settings import Settings

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def create_app(settings: Settings, resources: Resources | None = None) -> Starlette:
    """Build the app; with `resources` given, it runs on them and never closes them."""
    service = Service(settings, resources)

    async def websocket(websocket: WebSocket) -> None:
        await Connection(websocket, service).serve()

    async def readiness(request: Request) -> JSONResponse:
        return await health.readiness(service)

    async def metrics(request: Request) -> PlainTextResponse:
        body = service.metrics.render(service.registry)
        return PlainTextResponse(body, media_type=METRICS_CONTENT_TYPE)

    app = Starlette(
        routes=[
            WebSocketRoute("/ws", websocket),
            Route("/healthz", health.liveness),
            Route("/readyz", readiness),
            Route("/metrics", metrics),
        ],
        lifespan=service.lifespan,
    )
    app.state.service = service
    return app
