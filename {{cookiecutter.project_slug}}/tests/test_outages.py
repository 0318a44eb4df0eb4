"""A backend outage costs the requests it meets, never the session.

Each such request is answered `unavailable` and leaves nothing half done (a publish is stored
and streamed, or neither), and once the backend is back the same session serves on. Every
server stopped here is one this module started for itself: never the run's, which every worker
shares.
"""

import asyncio
import dataclasses
import logging
import uuid
from pathlib import Path
from typing import Any

import pytest

from {{ cookiecutter.package_name }} import handlers, logs, store
from {{ cookiecutter.package_name }}.metrics import Backend, Metrics
from {{ cookiecutter.package_name }}.protocol import CloseCode
from {{ cookiecutter.package_name }}.resources import Resources
from {{ cookiecutter.package_name }}.settings import Settings

from harness.embedded import redis_server
from harness.live import serve_instance
from harness.scrape import closes
from harness.users import User
from harness.wsclient import Frame, WsClient

RECOVERY_TIMEOUT_S = 30.0
RETRY_PAUSE_S = 0.2


def fresh_channel() -> str:
    return f"room:outage-{uuid.uuid4().hex[:8]}"


def assert_unavailable(reply: Frame) -> None:
    assert (reply["type"], reply["code"]) == ("error", "unavailable"), reply
    assert "retry in" in reply["message"], reply


async def publish_when_back(ws: WsClient, channel: str, data: Any) -> Frame:
    """Publish as a client told `unavailable` would, until the ack; bounded."""
    async with asyncio.timeout(RECOVERY_TIMEOUT_S):
        while True:
            reply = await ws.request("publish", channel=channel, data=data)
            if reply["type"] == "ack":
                return reply
            assert_unavailable(reply)
            await asyncio.sleep(RETRY_PAUSE_S)


def request_failures(metrics: Metrics, backend: Backend) -> float:
    """How many requests met an outage of `backend`."""
    return metrics.value("ws_backend_errors_total", backend=backend, operation="request")


async def test_a_redis_outage_answers_unavailable_and_the_session_serves_on(
    settings: Settings,
    shared_resources: Resources,
    test_user: User,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    channel = fresh_channel()
    with redis_server(tmp_path / "redis") as redis:
        instance = dataclasses.replace(
            settings, redis_url=redis.url, instance_id=f"outage-{uuid.uuid4().hex[:8]}"
        )
        async with serve_instance(instance) as live, live.websocket_session(user=test_user) as ws:
            redis.stop()
            try:
                # The publish limit's counter is the first thing a publish asks Redis for.
                for _ in range(logs.CLIENT_FAULT_LINES + 1):
                    assert_unavailable(await ws.request("publish", channel=channel, data="lost"))
                await ws.assert_silent()
            finally:
                redis.start()
            position = await store.channel_position(shared_resources.db, channel)
            assert position.offset == 0, "a publish refused for Redis must not be stored"
            ack = await publish_when_back(ws, channel, "after")
            assert ack["offset"] == 1
            assert request_failures(live.service.metrics, "redis") == logs.CLIENT_FAULT_LINES + 1
            assert CloseCode.INTERNAL_ERROR not in closes(live.service.metrics)
    # No traceback, and not a line per refused request.
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
    refusals = [record for record in caplog.records if record.name == handlers.__name__]
    assert len(refusals) <= logs.CLIENT_FAULT_LINES
