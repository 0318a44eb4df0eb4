"""Serving the app under uvicorn, with a graceful shutdown.

On SIGTERM (or SIGINT) the service first drains: readiness turns 503 and new connections are
refused, for SHUTDOWN_DELAY_S, so load balancers stop routing here. Then uvicorn stops listening
and closes every live WebSocket with 1012 (service restart); sessions get SHUTDOWN_TIMEOUT_S to
drain before their tasks are cancelled, and only then do the pools close. A second signal stops
at once.
"""

import logging
import threading
from types import FrameType
from typing import Any

import uvicorn
from starlette.applications import Starlette

from .service import Service
from .settings import Settings

log = logging.getLogger(__name__)


def uvicorn_config(app: Starlette, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """The uvicorn settings the service runs with, in production and in tests alike."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "ws": "websockets-sansio",
        "ws_max_size": settings.max_message_bytes,
        "ws_ping_interval": settings.ping_interval_s,
        "ws_ping_timeout": settings.ping_timeout_s,
        "timeout_graceful_shutdown": settings.shutdown_timeout_s,
        **overrides,
    }
    return uvicorn.Config(app, **options)


class GracefulServer(uvicorn.Server):
    """uvicorn, draining the service for a while before it starts shutting down."""

    def __init__(self, config: uvicorn.Config, service: Service, delay_s: float) -> None:
        super().__init__(config)
        self.service = service
        self.delay_s = delay_s

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.service.draining:
            super().handle_exit(sig, frame)
            return
        self.service.start_draining()
        log.info("draining for %.1fs before shutting down", self.delay_s)
        # Signal handlers must return at once: the rest of the shutdown starts from a timer.
        threading.Timer(self.delay_s, super().handle_exit, (sig, frame)).start()


def serve(app: Starlette, settings: Settings) -> None:
    """Run `app` until a signal stops it."""
    service: Service = app.state.service
    # log_config=None: uvicorn's loggers go through the JSON handler logs.configure set up.
    config = uvicorn_config(app, settings, log_config=None)
    GracefulServer(config, service, settings.shutdown_delay_s).run()
