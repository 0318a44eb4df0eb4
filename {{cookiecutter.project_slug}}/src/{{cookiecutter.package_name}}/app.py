"""The Starlette app: the WebSocket endpoint, probes, metrics and the optional demo page."""

from importlib.resources import files

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse
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

    routes = [
        WebSocketRoute("/ws", websocket),
        Route("/healthz", health.liveness),
        Route("/readyz", readiness),
        Route("/metrics", metrics),
    ]
    if settings.serve_demo:
        page = files(__package__).joinpath("static", "demo.html").read_text("utf-8")

        async def demo(request: Request) -> HTMLResponse:
            return HTMLResponse(page)

        routes.append(Route("/demo", demo))
    app = Starlette(routes=routes, lifespan=service.lifespan)
    app.state.service = service
    return app
