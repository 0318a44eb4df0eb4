"""Structured logs: one JSON object per line, carrying the session, user and channel served.

The formatter is the standard library's, not python-json-logger's or structlog's: it is a few
lines, and keeps everything they would here (`extra=` fields, exceptions, stack traces, values
JSON cannot hold written as text); the tests in test_observability.py pin each of those.
"""

import contextvars
import json
import logging
import time
from datetime import UTC, datetime
from typing import TextIO

session_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("session_id", default=None)
user_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("user_id", default=None)
channel: contextvars.ContextVar[str | None] = contextvars.ContextVar("channel", default=None)

CONTEXT = {"session_id": session_id, "user_id": user_id, "channel": channel}
# What every LogRecord has, so that anything else on one came from `extra=`. uvicorn's
# `color_message` repeats the message with terminal colours.
_STANDARD_ATTRIBUTES = frozenset(
    [*vars(logging.LogRecord("", 0, "", 0, "", None, None)), "message", "asctime", "color_message"]
)


class ContextFilter(logging.Filter):
    """Stamps every record with the session, user and channel of the task that logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, variable in CONTEXT.items():
            if getattr(record, name, None) is None:
                setattr(record, name, variable.get())
        return True


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(
            (name, value)
            for name, value in vars(record).items()
            if name not in _STANDARD_ATTRIBUTES and name not in entry and value is not None
        )
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Send every log record, uvicorn's included, to `stream` (stderr) as JSON lines."""
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


CLIENT_FAULT_LINES = 5
CLIENT_FAULT_WINDOW_S = 60.0
_PEERS_TRACKED = 10_000
_client_faults: dict[str, tuple[float, int]] = {}


def allowed(peer: str) -> bool:
    """Whether one more line about a client's fault may be logged: at most CLIENT_FAULT_LINES a
    peer per CLIENT_FAULT_WINDOW_S, so nobody can flood the log by misbehaving. A backend's name
    as `peer` bounds the lines about its outage the same way."""
    now = time.monotonic()
    started, lines = _client_faults.get(peer, (now, 0))
    if now - started >= CLIENT_FAULT_WINDOW_S:
        started, lines = now, 0
    if len(_client_faults) >= _PEERS_TRACKED and peer not in _client_faults:
        _client_faults.clear()  # a crude bound on memory; forgetting only lets a few more lines out
    _client_faults[peer] = (started, lines + 1)
    return lines < CLIENT_FAULT_LINES
