"""The load: subscriber processes holding many connections each, and publishers.

A subscriber process opens COUNT connections (on the service, subscribing each to one of the
comma-separated CHANNELS, in turn),
prints `ready` (with as many connections as could be opened: each one that could not counts as
a failure), then counts the messages each connection receives until every one has EXPECT or
the deadline passes, and prints one JSON line: deliveries, when the first and last arrived, and
each delivery's latency from the publisher's clock (same machine). With EXPECT 0 it only holds
its connections until its stdin closes.

    python -m loadtest.clients URL COUNT EXPECT SECONDS [TOKEN CHANNELS]
"""

import asyncio
import ipaddress
import json
import statistics
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from .processes import deadline, offer

HANDSHAKES_AT_ONCE = 50
SOURCE_ADDRESSES = 8
"""Loopback connections come from this many source addresses (127.0.0.2, 127.0.0.3, ...): the
kernel has about 28,000 ephemeral ports for each source address to one server port
(net.ipv4.ip_local_port_range), and the `capacity` scenario holds more connections than that."""
REPLY_TIMEOUT_S = 60.0
"""How long a publisher waits for its acks beyond the time its pacing takes."""
PAD = "x" * 100
"""Filler, so each message is about the size of a small chat message."""


@dataclass
class Received:
    """What one subscriber process saw."""

    deliveries: int = 0
    first: float = float("inf")
    last: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    failures: int = 0


def message(n: int) -> dict[str, Any]:
    """A message's data: numbered, stamped with when it was sent."""
    return {"n": n, "t": time.time(), "pad": PAD}


class Subscriber(asyncio.Protocol):
    """One subscriber connection on websockets' sans-I/O protocol. Frames are handled as they
    arrive, with no task, queue or future per frame: the load generator shares the machine's
    cores with the servers, and should spend as little of them as it can."""

    def __init__(
        self, url: str, token: str | None, channel: str | None, expect: int, received: Received
    ) -> None:
        self.ws = ClientProtocol(
            parse_uri(url),
            subprotocols=None if token is None else offer(token),
            # As browsers do; the server's COMPRESSION decides.
            extensions=[ClientPerMessageDeflateFactory()],
            max_size=None,
        )
        self.channel = channel
        self.expect = expect
        self.received = received
        self.got = 0
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()
        """Done once connected (and, on the service, subscribed)."""
        self.done: asyncio.Future[None] = loop.create_future()
        """Done once `expect` messages arrived."""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.ws.send_request(self.ws.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Response):
                self._handshake_done()
            elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                self._text(json.loads(bytes(event.data)))
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(RuntimeError(f"connection lost: {exc}"))

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.ws.send_close(1000)
            self._flush()
            self.transport.close()

    def _handshake_done(self) -> None:
        refused = self.ws.handshake_exc
        if isinstance(refused, InvalidStatus):
            response = refused.response
            failure = RuntimeError(f"refused: {response.status_code} {response.body!r}")
            self.ready.set_exception(failure)
        elif refused is not None:
            self.ready.set_exception(refused)
        elif self.channel is None:
            self.ready.set_result(None)

    def _text(self, frame: dict[str, Any]) -> None:
        match frame.get("type"):
            case "welcome":
                subscribe = {"type": "subscribe", "id": 1, "channel": self.channel}
                self.ws.send_text(json.dumps(subscribe).encode())
            case "ack":
                self.ready.set_result(None)
            case "error" if not self.ready.done():
                self.ready.set_exception(RuntimeError(f"subscribe refused: {frame}"))
            case "message":
                now = time.time()
                self.got += 1
                received = self.received
                received.deliveries += 1
                received.first = min(received.first, now)
                received.last = now
                received.latencies_ms.append(round((now - frame["data"]["t"]) * 1000, 3))
                if self.got == self.expect:
                    self.done.set_result(None)

    def _flush(self) -> None:
        assert self.transport is not None
        for data in self.ws.data_to_send():
            if data:
                self.transport.write(data)


def source_address(host: str, n: int) -> tuple[str, int] | None:
    """Where the n-th connection to `host` comes from: spread over SOURCE_ADDRESSES loopback
    addresses for a loopback server, the kernel's choice otherwise."""
    try:
        loopback = ipaddress.ip_address(host) in ipaddress.ip_network("127.0.0.0/8")
    except ValueError:  # a name
        loopback = False
    return (f"127.0.0.{2 + n % SOURCE_ADDRESSES}", 0) if loopback else None


async def open_many(
    url: str, count: int, expect: int, token: str | None, channels: list[str], received: Received
) -> list[Subscriber]:
    """`count` subscribers, connected and subscribed (the n-th to the n-th of `channels`, round
    and round; to none without), at most HANDSHAKES_AT_ONCE at a time. Those that could not be
    opened are counted in `received.failures`, and the first one's error printed."""
    uri = parse_uri(url)
    gate = asyncio.Semaphore(HANDSHAKES_AT_ONCE)
    loop = asyncio.get_running_loop()

    async def one(n: int) -> Subscriber:
        channel = channels[n % len(channels)] if channels else None
        async with gate:
            _, subscriber = await loop.create_connection(
                lambda: Subscriber(url, token, channel, expect, received),
                uri.host,
                uri.port,
                local_addr=source_address(uri.host, n),
            )
            try:
                await subscriber.ready
            except BaseException:
                subscriber.close()
                raise
            return subscriber

    opened = await asyncio.gather(*(one(n) for n in range(count)), return_exceptions=True)
    subscribers = [each for each in opened if isinstance(each, Subscriber)]
    received.failures = count - len(subscribers)
    if failed := next((each for each in opened if isinstance(each, BaseException)), None):
        failures = f"{received.failures} of {count} connections failed, the first with {failed!r}"
        print(failures, file=sys.stderr, flush=True)
    return subscribers


async def subscriber(
    url: str, count: int, expect: int, seconds: float, token: str | None, channels: list[str]
) -> Received:
    received = Received()
    subscribers = await open_many(url, count, expect, token, channels, received)
    print("ready", flush=True)
    try:
        if expect:
            if subscribers:
                _, late = await asyncio.wait([s.done for s in subscribers], timeout=seconds)
                received.failures += len(late)
        else:
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    finally:
        for each in subscribers:
            each.close()
    return received


def percentiles(values_ms: list[float]) -> dict[str, float]:
    """p50, p99 and max of some latencies, in milliseconds."""
    if not values_ms:
        return {}
    ordered = sorted(values_ms)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
        "max_ms": round(ordered[-1], 2),
    }


async def paced(count: int, every_s: float) -> AsyncIterator[int]:
    """1..count, each `every_s` after the start of the one before (at once when 0)."""
    start = time.perf_counter()
    for n in range(1, count + 1):
        await asyncio.sleep(max(0.0, start + (n - 1) * every_s - time.perf_counter()))
        yield n


async def publish(
    url: str, token: str, channel: str, count: int, every_s: float = 0.0, in_flight: int = 20
) -> list[float]:
    """Publish `count` messages on the service, at most `in_flight` unacknowledged; return the
    ack latencies in milliseconds."""
    latencies: list[float] = []
    sent: dict[int, float] = {}
    window = asyncio.Semaphore(in_flight)
    deadline_s = count * every_s + REPLY_TIMEOUT_S
    async with (
        deadline(deadline_s, lambda: f"{len(latencies)} of {count} acks in {deadline_s:.0f} s"),
        connect(url, subprotocols=offer(token), ping_interval=None) as ws,
    ):
        await ws.recv()  # the welcome

        async def acks() -> None:
            while len(latencies) < count:
                reply = json.loads(await ws.recv())
                if reply.get("type") != "ack":
                    raise RuntimeError(f"publish refused: {reply}")
                latencies.append((time.perf_counter() - sent.pop(reply["id"])) * 1000)
                window.release()

        # In a group, so a refused publish also stops the sending.
        async with asyncio.TaskGroup() as group:
            group.create_task(acks())
            async for n in paced(count, every_s):
                await window.acquire()
                sent[n] = time.perf_counter()
                frame = {"type": "publish", "id": n, "channel": channel, "data": message(n)}
                await ws.send(json.dumps(frame))
    return latencies


async def broadcast(url: str, channel: str, count: int, every_s: float = 0.0) -> None:
    """Send `count` messages through the reference server, as `publish` does to the service."""
    # The reference sends each client the other publishers' messages. Read off the socket as
    # they come (no max_queue): past 16 unread, websockets stops reading, and the close then
    # waited its whole 10 s timeout for a close frame queued behind them.
    async with connect(url, ping_interval=None, max_queue=None) as ws:
        async for n in paced(count, every_s):
            await ws.send(json.dumps({"type": "message", "channel": channel, "data": message(n)}))


def main() -> None:
    url, count, expect, seconds, *auth = sys.argv[1:]
    token, channels = (auth[0], auth[1].split(",")) if auth else (None, [])
    received = asyncio.run(
        subscriber(url, int(count), int(expect), float(seconds), token, channels)
    )
    print(json.dumps(vars(received)), flush=True)


if __name__ == "__main__":
    main()
