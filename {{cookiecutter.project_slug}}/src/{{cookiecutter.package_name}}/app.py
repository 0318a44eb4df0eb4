"""The Starlette app: the WebSocket endpoint, its AsyncAPI document, probes, metrics and the
optional demo page."""

from importlib.resources import files

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from . import health, metrics
from .asyncapi import serve_document
from .connection import Connection
from .resources import Resources
from .service import Service
from .settings import Settings


def create_app(settings: Settings, resources: Resources | None = None) -> Starlette:
    """Build the app; with `resources` given, it runs on them and never closes them."""
    service = Service(settings, resources)

    async def websocket(websocket: WebSocket) -> None:
        await Connection(websocket, service).serve()

    async def readiness(request: Request) -> JSONResponse:
        return await health.readiness(service)

    async def exposition(request: Request) -> Response:
        return Response(service.metrics.render(), media_type=metrics.CONTENT_TYPE)

    routes = [
        WebSocketRoute("/ws", websocket),
        Route("/healthz", health.liveness),
        Route("/readyz", readiness),
        Route("/asyncapi.json", serve_document),
        Route("/metrics", exposition),
    ]
    if settings.serve_demo:
        page = files(__package__).joinpath("static", "demo.html").read_text("utf-8")

        async def demo(request: Request) -> HTMLResponse:
            return HTMLResponse(page)

        routes.append(Route("/demo", demo))
    app = Starlette(routes=routes, lifespan=service.lifespan)
    app.state.service = service
    return app
