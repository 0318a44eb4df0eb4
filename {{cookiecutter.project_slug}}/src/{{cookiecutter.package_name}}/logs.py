"""Structured logs: one JSON object per line, carrying the session and user being served."""

import contextvars
import json
import logging
import time
from datetime import UTC, datetime

session_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("session_id", default=None)
user_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("user_id", default=None)


class ContextFilter(logging.Filter):
    """Stamps every record with the session and user of the task that logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.session_id = session_id.get()
        record.user_id = user_id.get()
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
        for name in ("session_id", "user_id"):
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: int = logging.INFO) -> None:
    """Send every log record, uvicorn's included, to stderr as JSON lines."""
    handler = logging.StreamHandler()
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
    peer per CLIENT_FAULT_WINDOW_S, so nobody can flood the log by misbehaving."""
    now = time.monotonic()
    started, lines = _client_faults.get(peer, (now, 0))
    if now - started >= CLIENT_FAULT_WINDOW_S:
        started, lines = now, 0
    if len(_client_faults) >= _PEERS_TRACKED and peer not in _client_faults:
        _client_faults.clear()  # a crude bound on memory; forgetting only lets a few more lines out
    _client_faults[peer] = (started, lines + 1)
    return lines < CLIENT_FAULT_LINES
