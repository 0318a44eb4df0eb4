"""Metrics as Prometheus scrapes them, and structured JSON logs."""

import contextvars
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from {{ cookiecutter.package_name }} import logs
from {{ cookiecutter.package_name }}.resources import Resources

from harness.live import AppFactory, LiveApp
from harness.scrape import Sample, sample, scrape
from harness.users import User
from harness.wsclient import WsClient

ACCEPTED = sample("ws_handshake_seconds_count", outcome="accepted")
REFUSED = sample("ws_handshake_seconds_count", outcome="refused")
PUBLISHED = sample("ws_publish_seconds_count")
HANDED_OUT = sample("ws_fanout_lag_seconds_count")


def grew(before: dict[Sample, float], after: dict[Sample, float], key: Sample) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


async def test_metrics_follow_a_session_from_handshake_to_close(
    shared_app: LiveApp, test_user: User
) -> None:
    before = await scrape(shared_app)
    async with shared_app.websocket_session(user=test_user) as ws:
        during = await scrape(shared_app)
        await ws.subscribe("room:metrics")
        await ws.publish("room:metrics", "counted")
        await ws.next_message()
    after = await scrape(shared_app)
    assert grew(before, during, sample("ws_connections")) == 1
    assert grew(before, after, sample("ws_connections")) == 0
    assert grew(before, after, sample("ws_connections_accepted_total")) == 1
    assert grew(before, after, ACCEPTED) == 1
    assert grew(before, after, sample("ws_messages_received_total")) == 2
    # Welcome, two acks and the message, each written once.
    assert grew(before, after, sample("ws_messages_sent_total")) == 4
    assert grew(before, after, PUBLISHED) == 1
    assert grew(before, after, HANDED_OUT) == 1
    assert grew(before, after, sample("ws_closes_total", code="1000")) == 1


async def test_latencies_land_in_buckets_that_add_up(
    shared_app: LiveApp, ws_session: WsClient
) -> None:
    await ws_session.subscribe("room:buckets")
    for n in range(3):
        await ws_session.publish("room:buckets", n)
    await ws_session.messages(3)
    samples = await scrape(shared_app)
    for name in ("ws_publish_seconds", "ws_fanout_lag_seconds"):
        count = samples[sample(f"{name}_count")]
        assert samples[sample(f"{name}_bucket", le="+Inf")] == count >= 3
        # A few milliseconds each on loopback: all within the 5 s bucket, none negative.
        assert samples[sample(f"{name}_bucket", le="5.0")] == count
        assert 0 <= samples[sample(f"{name}_sum")] < 5 * count


async def test_a_replay_is_measured_by_its_size(
    shared_app: LiveApp, ws_session: WsClient, test_user: User
) -> None:
    start = await ws_session.subscribe("room:replayed")
    for n in range(3):
        await ws_session.publish("room:replayed", n)
    before = await scrape(shared_app)
    async with shared_app.websocket_session(user=test_user) as resumed:
        ack = await resumed.subscribe("room:replayed", since=start["position"])
        assert ack["replayed"] == 3
    after = await scrape(shared_app)
    assert grew(before, after, sample("ws_replay_messages_count")) == 1
    assert grew(before, after, sample("ws_replay_messages_sum")) == 3
    assert grew(before, after, sample("ws_replay_messages_bucket", le="10.0")) == 1
    assert grew(before, after, sample("ws_replay_messages_bucket", le="1.0")) == 0


async def test_refused_handshakes_are_counted_by_reason(
    shared_app: LiveApp, ws_session: WsClient
) -> None:
    before = await scrape(shared_app)
    async with httpx.AsyncClient() as client:
        # A WebSocket upgrade without a token is refused.
        headers = {
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        }
        response = await client.get(shared_app.http_url + "/ws", headers=headers)
    assert (response.status_code, response.text) == (403, "no_token")
    after = await scrape(shared_app)
    assert grew(before, after, sample("ws_handshakes_refused_total", reason="no_token")) == 1
    assert grew(before, after, REFUSED) == 1
    assert grew(before, after, ACCEPTED) == 0


async def test_each_app_counts_only_its_own_connections(
    shared_app: LiveApp, another_app: AppFactory, test_user: User
) -> None:
    before = await scrape(shared_app)
    async with another_app() as live:
        async with live.websocket_session(user=test_user):
            pass
        mine = await scrape(live)
    after = await scrape(shared_app)
    assert mine[sample("ws_connections_accepted_total")] == 1
    assert grew(before, after, sample("ws_connections_accepted_total")) == 0


async def test_process_and_runtime_metrics_are_exported(shared_app: LiveApp) -> None:
    samples = await scrape(shared_app)
    names = {name for name, _ in samples}
    assert {"process_resident_memory_bytes", "process_open_fds", "python_info"} <= names
    assert samples[sample("process_resident_memory_bytes")] > 0


async def test_stream_read_failures_are_the_shared_bus_own_count(
    shared_app: LiveApp, shared_resources: Resources
) -> None:
    # Other tests on this worker break the bus's Redis connection on purpose: count on from there.
    before = shared_resources.bus.read_failures
    shared_resources.bus.read_failures += 2
    try:
        samples = await scrape(shared_app)
    finally:
        shared_resources.bus.read_failures -= 2
    assert samples[sample("ws_stream_read_failures_total")] == before + 2


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """Logging configured as `serve` does, into a buffer; the test process's handlers come back
    afterwards."""
    loggers = [
        logging.getLogger(name) for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access")
    ]
    saved = [(logger.handlers[:], logger.level, logger.propagate) for logger in loggers]
    output = io.StringIO()
    logs.configure(logging.INFO, output)
    yield output
    for logger, (handlers, level, propagate) in zip(loggers, saved, strict=True):
        logger.handlers[:], logger.level, logger.propagate = handlers, level, propagate


def lines(output: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.getvalue().splitlines()]


def test_log_lines_are_json_with_the_session_user_and_channel(log_output: io.StringIO) -> None:
    def log_inside_a_request() -> None:
        logs.session_id.set("s-1")
        logs.user_id.set("u-1")
        logs.channel.set("room:1")
        logging.getLogger("svc").info("hello %s", "you")

    contextvars.copy_context().run(log_inside_a_request)
    logging.getLogger("svc").warning("idle")
    inside, outside = lines(log_output)
    assert inside["message"] == "hello you"
    assert (inside["session_id"], inside["user_id"], inside["channel"]) == ("s-1", "u-1", "room:1")
    assert inside["level"] == "info" and inside["logger"] == "svc"
    assert outside["level"] == "warning"
    assert not {"session_id", "user_id", "channel"} & outside.keys()


def test_extra_fields_exceptions_and_odd_values_are_kept(log_output: io.StringIO) -> None:
    log = logging.getLogger("svc")
    log.info("with extras", extra={"attempt": 3, "peer": ("127.0.0.1", 5), "when": object()})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed", extra={"channel": "room:given"})
    extras, failure = lines(log_output)
    assert extras["attempt"] == 3 and extras["peer"] == ["127.0.0.1", 5]
    assert extras["when"].startswith("<object object")
    assert failure["channel"] == "room:given"
    assert "ValueError: boom" in failure["exception"]


def test_uvicorns_logs_come_out_as_json_without_colour_codes(log_output: io.StringIO) -> None:
    access = logging.getLogger("uvicorn.access")
    access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/healthz", "1.1", 200)
    logging.getLogger("uvicorn.error").info(
        "Started server", extra={"color_message": "\x1b[1mStarted server\x1b[0m"}
    )
    request, started = lines(log_output)
    assert request["logger"] == "uvicorn.access"
    assert request["message"] == '127.0.0.1:5000 - "GET /healthz HTTP/1.1" 200'
    assert started["message"] == "Started server" and "color_message" not in started


async def test_a_requests_log_lines_name_its_session_user_and_channel(
    ws_session: WsClient,
    test_user: User,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Other tests from this same peer may have spent its share of client-fault lines.
    monkeypatch.setattr(logs, "CLIENT_FAULT_LINES", 1_000_000)
    caplog.handler.addFilter(logs.ContextFilter())
    with caplog.at_level(logging.INFO):
        reply = await ws_session.request("publish", channel="room:logged", data="nul \u0000")
    assert reply["code"] == "invalid_data"
    [record] = [r for r in caplog.records if r.getMessage().startswith("publish refused")]
    # ContextFilter stamps these as attributes LogRecord does not declare.
    fields = vars(record)
    assert (fields["user_id"], fields["channel"]) == (test_user.id, "room:logged")
    assert fields["session_id"] is not None
