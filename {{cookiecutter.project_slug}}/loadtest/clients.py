"""The load: subscriber processes holding many connections each, and publishers.

A subscriber process opens COUNT connections (subscribing each to CHANNEL on the service),
prints `ready`, then counts the messages each connection receives until every one has EXPECT or
the deadline passes, and prints one JSON line: deliveries, when the first and last arrived, and
each delivery's latency from the publisher's clock (same machine). With EXPECT 0 it only holds
its connections until its stdin closes.

    python -m loadtest.clients URL COUNT EXPECT SECONDS [TOKEN CHANNEL]
"""

import asyncio
import json
import statistics
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from .processes import offer

HANDSHAKES_AT_ONCE = 50
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


async def open_connection(url: str, token: str | None, channel: str | None) -> ClientConnection:
    """A connection, subscribed to `channel` when talking to the service."""
    try:
        ws = await connect(
            url,
            subprotocols=None if token is None else offer(token),
            max_size=None,
            ping_interval=None,
        )
    except InvalidStatus as refusal:
        response = refusal.response
        raise RuntimeError(f"refused: {response.status_code} {response.body!r}") from None
    if token is None:
        return ws
    await ws.recv()  # the welcome
    await ws.send(json.dumps({"type": "subscribe", "id": 1, "channel": channel}))
    reply = json.loads(await ws.recv())
    if reply["type"] != "ack":
        raise RuntimeError(f"subscribe refused: {reply}")
    return ws


async def open_many(
    url: str, count: int, token: str | None, channel: str | None
) -> list[ClientConnection]:
    """`count` connections, at most HANDSHAKES_AT_ONCE handshaking at a time."""
    gate = asyncio.Semaphore(HANDSHAKES_AT_ONCE)

    async def one() -> ClientConnection:
        async with gate:
            return await open_connection(url, token, channel)

    return await asyncio.gather(*(one() for _ in range(count)))


async def receive(ws: ClientConnection, expect: int, received: Received) -> None:
    got = 0
    while got < expect:
        frame = json.loads(await ws.recv())
        if frame.get("type") != "message":
            continue
        now = time.time()
        got += 1
        received.deliveries += 1
        received.first = min(received.first, now)
        received.last = now
        received.latencies_ms.append(round((now - frame["data"]["t"]) * 1000, 3))


async def subscriber(
    url: str, count: int, expect: int, seconds: float, token: str | None, channel: str | None
) -> Received:
    connections = await open_many(url, count, token, channel)
    print("ready", flush=True)
    received = Received()
    try:
        if expect:
            tasks = [asyncio.create_task(receive(ws, expect, received)) for ws in connections]
            _, late = await asyncio.wait(tasks, timeout=seconds)
            received.failures = len(late)
            for task in late:
                task.cancel()
        else:
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    finally:
        await asyncio.gather(*(ws.close() for ws in connections), return_exceptions=True)
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
    async with connect(url, subprotocols=offer(token), ping_interval=None) as ws:
        await ws.recv()  # the welcome

        async def acks() -> None:
            while len(latencies) < count:
                reply = json.loads(await ws.recv())
                if reply.get("type") != "ack":
                    raise RuntimeError(f"publish refused: {reply}")
                latencies.append((time.perf_counter() - sent.pop(reply["id"])) * 1000)
                window.release()

        reading = asyncio.create_task(acks())
        async for n in paced(count, every_s):
            await window.acquire()
            sent[n] = time.perf_counter()
            frame = {"type": "publish", "id": n, "channel": channel, "data": message(n)}
            await ws.send(json.dumps(frame))
        await reading
    return latencies


async def broadcast(url: str, channel: str, count: int, every_s: float = 0.0) -> None:
    """Send `count` messages through the reference server, as `publish` does to the service."""
    async with connect(url, ping_interval=None) as ws:
        async for n in paced(count, every_s):
            await ws.send(json.dumps({"type": "message", "channel": channel, "data": message(n)}))


def main() -> None:
    url, count, expect, seconds, *auth = sys.argv[1:]
    token, channel = auth if auth else (None, None)
    received = asyncio.run(subscriber(url, int(count), int(expect), float(seconds), token, channel))
    print(json.dumps(vars(received)), flush=True)


if __name__ == "__main__":
    main()
