"""A WebSocket client for tests: JSON frames, request/reply matching, a timeout on every wait.

A hung server fails the test within seconds, with the last frames seen, instead of hanging the run.
Every frame sent and received is held to the service's AsyncAPI document (see contract.py);
`send_raw` and `bad_request` send, unchecked, the malformed frames a test means to send.
"""

import asyncio
import itertools
import json
from collections.abc import Iterable
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from {{ cookiecutter.package_name }}.protocol import REPLY_TYPES

from .contract import contract

RECEIVE_TIMEOUT_S = 5.0

Frame = dict[str, Any]


class WsClient:
    """Wraps a `websockets` connection; frames that arrive out of turn wait in a backlog."""

    def __init__(self, connection: ClientConnection, timeout: float = RECEIVE_TIMEOUT_S) -> None:
        self.connection = connection
        self.timeout = timeout
        self.seen: list[Frame] = []
        self._backlog: list[Frame] = []
        self._ids = itertools.count(1)
        self.contract = contract()

    async def send(self, frame: Frame) -> None:
        """Send a request the AsyncAPI document allows."""
        self.contract.check_request(frame)
        await self.connection.send(json.dumps(frame))

    async def send_raw(self, data: str | bytes | Iterable[str]) -> None:
        """Send a frame as it is, unchecked: for the malformed ones a test sends on purpose."""
        await self.connection.send(data)

    async def request(self, kind: str, **fields: Any) -> Frame:
        """Send a request with a fresh id; return its reply (ack, error or pong)."""
        request_id = next(self._ids)
        await self.send({"type": kind, "id": request_id, **fields})
        reply = await self._reply_to(request_id)
        self.contract.check_reply(kind, reply)
        return reply

    async def bad_request(self, kind: str, **fields: Any) -> Frame:
        """Send a request the document does not allow, unchecked, with a fresh id; return its
        reply (an error, when the server refuses it as it should)."""
        request_id = next(self._ids)
        await self.send_raw(json.dumps({"type": kind, "id": request_id, **fields}))
        return await self._reply_to(request_id)

    async def _reply_to(self, request_id: int) -> Frame:
        return await self.expect(lambda f: f["type"] in REPLY_TYPES and f.get("id") == request_id)

    async def subscribe(self, channel: str, since: Frame | None = None) -> Frame:
        """Subscribe, replaying what came after `since` (a position) when given."""
        fields = {} if since is None else {"since": since}
        return _acked(await self.request("subscribe", channel=channel, **fields))

    async def unsubscribe(self, channel: str) -> Frame:
        return _acked(await self.request("unsubscribe", channel=channel))

    async def publish(self, channel: str, data: Any) -> Frame:
        return _acked(await self.request("publish", channel=channel, data=data))

    async def next_message(self, channel: str | None = None) -> Frame:
        """The next published message delivered to this client (on `channel` if given)."""
        return await self.expect(
            lambda f: f["type"] == "message" and channel in (None, f["channel"])
        )

    async def messages(self, count: int, channel: str | None = None) -> list[Frame]:
        """The next `count` messages delivered to this client (on `channel` if given)."""
        return [await self.next_message(channel) for _ in range(count)]

    async def next_of_type(self, kind: str) -> Frame:
        return await self.expect(lambda f: f["type"] == kind)

    async def expect(self, wanted: Any) -> Frame:
        """The first frame, from the backlog or the wire, for which `wanted(frame)` is true."""
        for index, frame in enumerate(self._backlog):
            if wanted(frame):
                return self._backlog.pop(index)
        while True:
            frame = await self.receive()
            if wanted(frame):
                return frame
            self._backlog.append(frame)

    async def receive(self) -> Frame:
        """The next frame off the wire."""
        # asyncio.timeout, not wait_for, which on Python 3.11 wraps each receive in a task.
        try:
            async with asyncio.timeout(self.timeout):
                raw = await self.connection.recv()
        except TimeoutError:
            raise AssertionError(
                f"no frame within {self.timeout}s; last frames seen: {self.seen[-5:]}"
            ) from None
        return self._take(raw)

    async def assert_silent(self) -> None:
        """Nothing is waiting: a ping round-trip brings back only its pong."""
        pong = await self.request("ping")
        assert pong["type"] == "pong"
        assert not self._backlog, f"unexpected frames: {self._backlog}"

    async def closed_with(self) -> int | None:
        """Wait until the server closes the connection; return the close code."""
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    self._take(await self.connection.recv())
        except ConnectionClosed:
            return self.connection.close_code
        except TimeoutError:
            raise AssertionError(
                f"connection still open after {self.timeout}s; last frames: {self.seen[-5:]}"
            ) from None

    def _take(self, raw: str | bytes) -> Frame:
        """Decode a frame off the wire, remember it, and hold it to the contract."""
        assert isinstance(raw, str), f"the server sent a binary frame: {raw[:100]!r}"
        frame: Frame = json.loads(raw)
        self.seen.append(frame)
        self.contract.check_server_frame(frame)
        return frame


def _acked(reply: Frame) -> Frame:
    assert reply["type"] == "ack", f"expected an ack, got {reply}"
    return reply


async def converse(me: WsClient, channel: str, mine: str, theirs: str, count: int) -> list[str]:
    """Publish `count` messages "<mine> <n>" on `channel`, then collect the other side's
    "<theirs> <n>" (arriving meanwhile, in order): what a healthy client does during an attack."""
    for n in range(count):
        await me.publish(channel, f"{mine} {n}")
    heard: list[str] = []
    while len(heard) < count:
        message = await me.next_message(channel)
        if str(message["data"]).startswith(theirs):
            heard.append(message["data"])
    return heard
