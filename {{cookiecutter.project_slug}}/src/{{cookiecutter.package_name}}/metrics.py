"""Counters of one app, served at /metrics in the Prometheus text format."""

from collections import Counter
from dataclasses import dataclass, field

from .sessions import SessionRegistry


@dataclass
class Metrics:
    """What an app counts; plain integers, since every update happens on the event loop."""

    connections_accepted: int = 0
    handshakes_refused: int = 0
    messages_received: int = 0
    messages_sent: int = 0
    frames_dropped: int = 0
    closes: Counter[int] = field(default_factory=Counter)

    def render(self, registry: SessionRegistry) -> str:
        """The exposition text, including the live connection count."""
        lines = [
            *_metric("ws_connections", "gauge", "Open WebSocket sessions.", len(registry)),
            *_metric(
                "ws_connections_accepted_total",
                "counter",
                "WebSocket handshakes accepted.",
                self.connections_accepted,
            ),
            *_metric(
                "ws_handshakes_refused_total",
                "counter",
                "WebSocket handshakes refused (origin, token or user).",
                self.handshakes_refused,
            ),
            *_metric(
                "ws_messages_received_total",
                "counter",
                "Frames received from clients.",
                self.messages_received,
            ),
            *_metric(
                "ws_messages_sent_total", "counter", "Frames sent to clients.", self.messages_sent
            ),
            *_metric(
                "ws_frames_dropped_total",
                "counter",
                "Queued frames discarded when a slow consumer was closed.",
                self.frames_dropped,
            ),
            "# HELP ws_closes_total WebSocket connections closed, by close code.",
            "# TYPE ws_closes_total counter",
            *(
                f"{_labelled('ws_closes_total', 'code', code)} {n}"
                for code, n in sorted(self.closes.items())
            ),
        ]
        return "\n".join(lines) + "\n"


def _metric(name: str, kind: str, help_text: str, value: int) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"]


def _labelled(name: str, label: str, value: object) -> str:
    # Built by concatenation: the braces of an f-string would read as template syntax here.
    return name + "{" + f'{label}="{value}"' + "}"
