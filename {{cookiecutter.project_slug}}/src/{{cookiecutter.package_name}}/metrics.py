"""What one app measures, served at /metrics in the Prometheus text format.

Each app has a registry of its own rather than prometheus_client's global one, so apps sharing a
process (tests run several on one worker) never mix their figures. The process collectors (CPU,
memory, file descriptors, GC) come along in every registry.
"""

from collections.abc import Callable, Iterator
from typing import Literal

import psycopg
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from redis import exceptions as redis_errors

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Latencies on loopback are a few milliseconds; a slow backend stretches them to seconds.
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
REPLAY_BUCKETS = (0, 1, 10, 100, 1_000, 10_000, 100_000)
QUEUE_BUCKETS = (0, 1, 4, 16, 64, 256, 1_024)

Backend = Literal["postgres", "redis"]


class Metrics:
    """One app's metrics, each updated where the event happens."""

    def __init__(
        self, open_sessions: Callable[[], int], stream_read_failures: Callable[[], int]
    ) -> None:
        self.registry = registry = CollectorRegistry()
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=registry)
        registry.register(
            _CountedElsewhere(
                "ws_stream_read_failures",
                "Reads of the Redis stream that failed and were retried by this process.",
                stream_read_failures,
            )
        )
        Gauge("ws_connections", "Open WebSocket sessions.", registry=registry).set_function(
            open_sessions
        )
        self.sockets = Gauge(
            "ws_sockets",
            "WebSocket sockets open, closing ones included, until the kernel lets go.",
            registry=registry,
        )
        self.accepted = Counter(
            "ws_connections_accepted", "WebSocket handshakes accepted.", registry=registry
        )
        self.refused = Counter(
            "ws_handshakes_refused",
            "WebSocket handshakes refused, by reason.",
            ["reason"],
            registry=registry,
        )
        self.handshake_seconds = Histogram(
            "ws_handshake_seconds",
            "From the upgrade request to the accept or the refusal.",
            ["outcome"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.received = Counter(
            "ws_messages_received", "Frames received from clients.", registry=registry
        )
        self.frames_sent = 0
        """Counted once per frame of every fan-out, so a plain integer: a Counter's lock would
        cost more than the rest of the bookkeeping of a delivery."""
        registry.register(
            _CountedElsewhere("ws_messages_sent", "Frames sent to clients.", self._frames_sent)
        )
        self.dropped = Counter(
            "ws_frames_dropped",
            "Queued frames discarded when a slow consumer was closed.",
            registry=registry,
        )
        self.closes = Counter(
            "ws_closes",
            "WebSocket connections closed, by close code (whichever side closed).",
            ["code"],
            registry=registry,
        )
        self.publish_seconds = Histogram(
            "ws_publish_seconds",
            "From a publish request to its ack: stored in Postgres and added to the stream.",
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.fanout_lag_seconds = Histogram(
            "ws_fanout_lag_seconds",
            "From a message entering the stream to this app starting to write it to subscribers.",
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.replayed = Histogram(
            "ws_replay_messages",
            "Messages replayed to a subscriber resuming from a position.",
            buckets=REPLAY_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Histogram(
            "ws_send_queue_frames",
            "Frames waiting behind each frame the sender writes from a session's queue (a frame"
            " written at once, with nothing queued, is not counted).",
            buckets=QUEUE_BUCKETS,
            registry=registry,
        )
        self.backend_errors = Counter(
            "ws_backend_errors",
            "Failed Postgres or Redis operations, by backend and what the service was doing.",
            ["backend", "operation"],
            registry=registry,
        )

    def _frames_sent(self) -> int:
        return self.frames_sent

    def close(self, code: int) -> None:
        self.closes.labels(code=str(code)).inc()

    def backend_error(self, backend: Backend, operation: str) -> None:
        self.backend_errors.labels(backend=backend, operation=operation).inc()

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 if it was never recorded), by its exposed name."""
        return self.registry.get_sample_value(name, labels) or 0.0

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)


def backend_of(error: BaseException) -> Backend | None:
    """Which backend an exception came from, if it came from one."""
    if isinstance(error, psycopg.Error):
        return "postgres"
    if isinstance(error, redis_errors.RedisError):
        return "redis"
    return None


# Errors that say a backend cannot serve for now (down, restarting, failing over, read-only, out
# of connections or memory), not that a request or the code is wrong: retrying later may work.
# psycopg's OperationalError covers the pool's PoolTimeout and server errors such as
# AdminShutdown, CannotConnectNow, QueryCanceled and the rollbacks of deadlocks and
# serialization failures; redis-py's ConnectionError covers BusyLoadingError (LOADING).
OUTAGES: dict[Backend, tuple[type[Exception], ...]] = {
    "postgres": (psycopg.OperationalError, psycopg.InterfaceError),
    "redis": (
        redis_errors.ConnectionError,
        redis_errors.TimeoutError,
        redis_errors.ReadOnlyError,
        redis_errors.ClusterError,
        redis_errors.TryAgainError,
        redis_errors.OutOfMemoryError,
    ),
}


def unavailable_backend(error: BaseException) -> Backend | None:
    """The backend an exception says is unavailable for now, if it says so; any other error of
    a backend (a constraint, a wrong type, bad SQL) is a bug or a bad request, not an outage."""
    return next((backend for backend, kinds in OUTAGES.items() if isinstance(error, kinds)), None)


class _CountedElsewhere(Collector):
    """A counter kept as a plain integer elsewhere, read at each scrape."""

    def __init__(self, name: str, documentation: str, count: Callable[[], int]) -> None:
        self._name = name
        self._documentation = documentation
        self._count = count

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self._name, self._documentation, value=self._count())
