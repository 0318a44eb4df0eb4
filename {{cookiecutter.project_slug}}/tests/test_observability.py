"""Metrics in the Prometheus text format, and structured JSON logs."""

import contextvars
import json
import logging

import httpx

from {{ cookiecutter.package_name }} import logs

from harness.live import LiveApp
from harness.users import User
from harness.wsclient import WsClient


async def scrape(live: LiveApp) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=live.url.replace("ws://", "http://", 1)) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for line in response.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


async def test_metrics_count_connections_messages_and_closes(shared_app: LiveApp, test_user: User):
    before = await scrape(shared_app)
    async with shared_app.websocket_session(user=test_user) as ws:
        during = await scrape(shared_app)
        await ws.subscribe("room:metrics")
        await ws.publish("room:metrics", "counted")
        await ws.next_message()
    after = await scrape(shared_app)
    assert during["ws_connections"] == before["ws_connections"] + 1
    assert after["ws_connections"] == before["ws_connections"]
    accepted = "ws_connections_accepted_total"
    assert after[accepted] == before[accepted] + 1
    assert after["ws_messages_received_total"] >= before["ws_messages_received_total"] + 2
    # Sent: welcome, two acks and the message.
    assert after["ws_messages_sent_total"] >= before["ws_messages_sent_total"] + 4
    normal = 'ws_closes_total{code="1000"}'
    assert after[normal] == before.get(normal, 0) + 1


async def test_refused_handshakes_are_counted(shared_app: LiveApp, ws_session: WsClient):
    before = await scrape(shared_app)
    async with httpx.AsyncClient() as client:
        # A plain GET is no handshake; a WebSocket upgrade without a token is refused.
        headers = {
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        }
        response = await client.get(
            shared_app.url.replace("ws://", "http://", 1) + "/ws", headers=headers
        )
    assert (response.status_code, response.text) == (403, "no_token")
    after = await scrape(shared_app)
    refused = 'ws_handshakes_refused_total{reason="no_token"}'
    assert after[refused] == before.get(refused, 0) + 1


def test_log_lines_are_json_with_the_session_and_user():
    formatter = logs.JsonFormatter()
    context_filter = logs.ContextFilter()

    def log_inside_a_session() -> str:
        logs.session_id.set("s-1")
        logs.user_id.set("u-1")
        record = logging.LogRecord("svc", logging.INFO, __file__, 1, "hello %s", ("you",), None)
        context_filter.filter(record)
        return formatter.format(record)

    entry = json.loads(contextvars.copy_context().run(log_inside_a_session))
    assert entry["message"] == "hello you"
    assert (entry["session_id"], entry["user_id"], entry["level"]) == ("s-1", "u-1", "info")


def test_log_lines_outside_a_session_carry_no_ids():
    record = logging.LogRecord("svc", logging.WARNING, __file__, 1, "idle", (), None)
    logs.ContextFilter().filter(record)
    entry = json.loads(logs.JsonFormatter().format(record))
    assert "session_id" not in entry and entry["level"] == "warning"
