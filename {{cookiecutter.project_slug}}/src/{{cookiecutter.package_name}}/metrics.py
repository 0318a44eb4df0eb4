"""Counters of one app, served at /metrics in the Prometheus text format."""

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .sessions import SessionRegistry


@dataclass
class Metrics:
    """What an app counts; plain integers, since every update happens on the event loop."""

    connections_accepted: int = 0
    open_sockets: int = 0
    handshakes_refused: Counter[str] = field(default_factory=Counter)
    messages_received: int = 0
    messages_sent: int = 0
    frames_dropped: int = 0
    closes: Counter[int] = field(default_factory=Counter)

    def render(self, registry: SessionRegistry) -> str:
        """The exposition text, including the live connection count."""
        lines = [
            *_metric("ws_connections", "gauge", "Open WebSocket sessions.", len(registry)),
            *_metric(
                "ws_sockets",
                "gauge",
                "WebSocket sockets open, closing ones included, until the kernel lets go.",
                self.open_sockets,
            ),
            *_metric(
                "ws_connections_accepted_total",
                "counter",
                "WebSocket handshakes accepted.",
                self.connections_accepted,
            ),
            *_labelled_metric(
                "ws_handshakes_refused_total",
                "WebSocket handshakes refused, by reason.",
                "reason",
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
            *_labelled_metric(
                "ws_closes_total",
                "WebSocket connections closed, by close code (whichever side closed).",
                "code",
                self.closes,
            ),
        ]
        return "\n".join(lines) + "\n"


def _metric(name: str, kind: str, help_text: str, value: int) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"]


def _labelled_metric(name: str, help_text: str, label: str, counts: Counter[Any]) -> list[str]:
    # Built by concatenation: the braces of an f-string would read as template syntax here.
    samples = [name + "{" + f'{label}="{key}"' + "} " + str(n) for key, n in sorted(counts.items())]
    return [f"# HELP {name} {help_text}", f"# TYPE {name} counter", *samples]
