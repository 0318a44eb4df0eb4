"""Limits: channels per connection, publish rate per user, and slow consumers."""

import asyncio
import dataclasses
import json
import socket

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.protocol import BEARER_PREFIX, PROTOCOL, CloseCode
from {{ cookiecutter.package_name }}.resources import Resources
from {{ cookiecutter.package_name }}.settings import Settings

from harness.server import UserFactory, serve_in_process

FLOOD_FRAME_BYTES = 60_000


async def test_channels_per_connection_are_capped(
    shared_resources: Resources, settings: Settings, make_user: UserFactory
):
    capped = dataclasses.replace(settings, max_channels=2)
    user = await make_user()
    async with (
        serve_in_process(create_app(capped, shared_resources), capped) as live,
        live.websocket_session(user=user) as ws,
    ):
        await ws.subscribe("room:1")
        await ws.subscribe("room:2")
        reply = await ws.request("subscribe", channel="room:3")
        assert (reply["type"], reply["code"]) == ("error", "too_many_channels")
        await ws.subscribe("room:2")
        await ws.unsubscribe("room:1")
        await ws.subscribe("room:3")


async def test_publish_rate_is_limited_per_user_across_reconnects(
    shared_resources: Resources, settings: Settings, make_user: UserFactory
):
    limited = dataclasses.replace(settings, publish_limit=3, publish_window_s=60)
    flooder, bystander = await make_user("flooder"), await make_user("bystander")
    async with serve_in_process(create_app(limited, shared_resources), limited) as live:
        async with live.websocket_session(user=flooder) as ws:
            for n in range(3):
                await ws.publish("room:rate", n)
            reply = await ws.request("publish", channel="room:rate", data="one too many")
            assert (reply["type"], reply["code"]) == ("error", "rate_limited")
            assert "retry in" in reply["message"]
        async with live.websocket_session(user=flooder) as again:
            reply = await again.request("publish", channel="room:rate", data="after reconnect")
            assert reply["code"] == "rate_limited", "the count must survive a reconnect"
        async with live.websocket_session(user=bystander) as other:
            await other.publish("room:rate", "unaffected")


class StalledClient:
    """A WebSocket client that can stop reading altogether, as a stuck browser tab does.

    Built on the sans-I/O protocol over a plain stream, so no library reads behind our back.
    """

    def __init__(self, url: str, token: str) -> None:
        self.protocol = ClientProtocol(
            parse_uri(f"{url}/ws"), subprotocols=[PROTOCOL, BEARER_PREFIX + token]
        )
        self.url = url

    async def open(self) -> None:
        host, port = self.url.removeprefix("ws://").split(":")
        sock = socket.socket()
        # A tiny receive buffer, so the server's writes back up after little data.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((host, int(port)))
        sock.setblocking(False)
        self.reader, self.writer = await asyncio.open_connection(sock=sock)
        self.protocol.send_request(self.protocol.connect())
        await self._flush()
        await self.next_frame()  # the welcome

    async def send(self, frame: dict[str, object]) -> None:
        self.protocol.send_text(json.dumps(frame).encode())
        await self._flush()

    async def next_frame(self) -> dict[str, object]:
        while True:
            for event in self.protocol.events_received():
                if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                    return json.loads(event.data)
            self.protocol.receive_data(await asyncio.wait_for(self.reader.read(65536), 5))

    async def close_code(self) -> int | None:
        """Read everything the server sent up to its close frame; return the close code."""
        async with asyncio.timeout(5):
            while self.protocol.close_rcvd is None:
                data = await self.reader.read(1 << 20)
                if not data:
                    break
                self.protocol.receive_data(data)
        await self._flush()
        self.writer.close()
        return self.protocol.close_rcvd.code if self.protocol.close_rcvd else None

    async def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            self.writer.write(data)
        await self.writer.drain()


async def test_slow_consumer_is_closed_and_nobody_else_is_hurt(
    shared_resources: Resources, settings: Settings, make_user: UserFactory
):
    small_queue = dataclasses.replace(settings, send_queue_size=4, publish_limit=10_000)
    writer, slow, fast = [await make_user(name) for name in ("writer", "slow", "fast")]
    async with serve_in_process(create_app(small_queue, shared_resources), small_queue) as live:
        registry = live.service.registry
        stalled = StalledClient(live.url, slow.token)
        await stalled.open()
        await stalled.send({"type": "subscribe", "id": 1, "channel": "room:flood"})
        assert (await stalled.next_frame())["type"] == "ack"
        slow_session = next(iter(registry.sessions_of(slow.id)))
        async with (
            live.websocket_session(user=fast) as fast_ws,
            live.websocket_session(user=writer) as writer_ws,
        ):
            await fast_ws.subscribe("room:flood")
            sent = 0
            while not live.service.metrics.closes[CloseCode.SLOW_CONSUMER]:
                await writer_ws.publish("room:flood", "x" * FLOOD_FRAME_BYTES)
                sent += 1
                assert sent < 200, "the slow consumer was never closed"
            # Reading again at once, within the server's close timeout, lets the close through.
            assert await stalled.close_code() == CloseCode.SLOW_CONSUMER
            received = [await fast_ws.next_message("room:flood") for _ in range(sent)]
            assert len(received) == sent
        await live.wait_drained(slow_session.id)
        assert live.service.metrics.frames_dropped > 0
        assert not registry.sessions_of(slow.id)
