"""Serving the app under uvicorn, with a graceful shutdown.

On SIGTERM (or SIGINT) the service first drains: readiness turns 503 and new connections are
refused, for SHUTDOWN_DELAY_S, so load balancers stop routing here. Then uvicorn stops listening
and closes every live WebSocket with 1012 (service restart); sessions get SHUTDOWN_TIMEOUT_S to
drain before their tasks are cancelled, and only then do the pools close. A second signal stops
at once. The delay is a deadline that uvicorn's own main loop checks on every tick, so nothing
runs outside the event loop.
"""

import functools
import logging
import resource
import time
from types import FrameType
from typing import Any

import uvicorn
from starlette.applications import Starlette

from .service import Service
from .settings import Settings
from .wsprotocol import WebSocketProtocol

log = logging.getLogger(__name__)


def uvicorn_config(app: Starlette, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """The uvicorn settings the service runs with, in production and in tests alike."""
    service: Service = app.state.service
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "ws": functools.partial(
            WebSocketProtocol, close_timeout_s=settings.close_timeout_s, metrics=service.metrics
        ),
        # asyncio's own loop even where uvloop is installed: only its transports let
        # WebSocketProtocol bound each read, which keeps one flooding client from stalling others.
        "loop": "asyncio",
        "ws_max_size": settings.max_message_bytes,
        "ws_per_message_deflate": settings.compression,
        "ws_ping_interval": settings.ping_interval_s,
        "ws_ping_timeout": settings.ping_timeout_s,
        "timeout_graceful_shutdown": settings.shutdown_timeout_s,
        # Both always given: left to itself, uvicorn reads proxy headers from 127.0.0.1, so
        # anything on this host could pass for any address and get past MAX_CONNECTIONS_PER_IP.
        "proxy_headers": bool(settings.forwarded_allow_ips),
        "forwarded_allow_ips": [str(network) for network in settings.forwarded_allow_ips],
        **overrides,
    }
    return uvicorn.Config(app, **options)


class GracefulServer(uvicorn.Server):
    """uvicorn, draining the service for a while before it starts shutting down."""

    def __init__(self, config: uvicorn.Config, service: Service, delay_s: float) -> None:
        super().__init__(config)
        self.service = service
        self.delay_s = delay_s
        # (deadline, signal, frame) of the exit that waits for the drain delay to pass.
        self._pending_exit: tuple[float, int, FrameType | None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.service.draining:
            super().handle_exit(sig, frame)
            return
        self.service.start_draining()
        log.info("draining for %.1fs before shutting down", self.delay_s)
        self._pending_exit = (time.monotonic() + self.delay_s, sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._pending_exit is not None and time.monotonic() >= self._pending_exit[0]:
            _, sig, frame = self._pending_exit
            self._pending_exit = None
            # Handled as uvicorn handles a signal, so it re-raises it after shutting down.
            super().handle_exit(sig, frame)
        return await super().on_tick(counter)


def raise_open_file_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit, and return the soft limit
    it runs under: every connection is an open file, and a shell or a systemd unit often starts
    a process at 1,024 where the hard limit allows many times that."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        # macOS refuses an unlimited hard limit for files: the soft one stands.
        return soft
    return hard


def serve(app: Starlette, settings: Settings) -> None:
    """Run `app` until a signal stops it."""
    service: Service = app.state.service
    log.info("open-file limit %d: at most that many connections", raise_open_file_limit())
    # log_config=None: uvicorn's loggers go through the JSON handler logs.configure set up.
    config = uvicorn_config(app, settings, log_config=None)
    GracefulServer(config, service, settings.shutdown_delay_s).run()
