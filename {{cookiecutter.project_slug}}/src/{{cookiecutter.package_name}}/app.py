"""The Starlette app: the WebSocket endpoint, its AsyncAPI document, probes, metrics and the
optional demo page."""

from importlib.resources import files

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from . import health, metrics
from .asyncapi import serve_document
from .connection import Connection
from .resources import Resources
from .service import Service
from .settings import Settings


class WebSocketEndpoint:
    """The WebSocket route's endpoint, as an ASGI app rather than a function: Starlette wraps a
    function in two more coroutines and a second exception handler (ExceptionMiddleware already
    has one), and every suspended coroutine is memory an idle connection holds, about 1.6 KB of
    these three."""

    def __init__(self, service: Service) -> None:
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await Connection(WebSocket(scope, receive, send), self.service).serve()


def create_app(settings: Settings, resources: Resources | None = None) -> Starlette:
    """Build the app; with `resources` given, it runs on them and never closes them."""
    service = Service(settings, resources)

    async def readiness(request: Request) -> JSONResponse:
        return await health.readiness(service)

    async def exposition(request: Request) -> Response:
        return Response(service.metrics.render(), media_type=metrics.CONTENT_TYPE)

    routes = [
        WebSocketRoute("/ws", WebSocketEndpoint(service)),
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
