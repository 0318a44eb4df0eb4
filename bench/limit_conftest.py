"""Written by bench/suite.py as the `limit` suite's conftest.py: the canonical test's I/O with raw
clients and no service logic.

The canonical WebSocket test (bench/suite.py's WS_TEST, with its fixtures test_user, ws_session
and leak_check) does, on a default bake, counted with Postgres's log_statement=all and Redis's
MONITOR on throwaway servers:

- Postgres, 6 statements: the user's insert, the handshake's user check, the channel's position
  (subscribe), the message's insert (publish), the user's delete, the leak check's rows.
- Redis, 6 round trips: the rate-limit script (EVALSHA), the stream append (XADD), the bus's
  acknowledgement pipelined with its next read (XACK + XREADGROUP over every partition), the
  user's counters (SCAN, UNLINK), the leak check's SCAN of the prefix.
- WebSocket: an upgrade offering the token, an EdDSA token check, the welcome, subscribe and its
  ack, publish, its ack and the message read back from the stream, the close handshake; and the
  test ends once the server's handler is done with the connection. The frames are the
  service's, field for field (its acks name what they acknowledge, as main's do since 10e3fb8).
- A token signed for the user.

`limit_run` does all of that, in the same order, on the same stack: uvicorn and Starlette on the
harness's in-process loopback server (uvicorn's own sans-I/O websockets protocol, without the
service's adjustments), the worker's migrated schema through the harness's `settings` (the same
URL and session options, autocommit as the service's pool), Redis under the worker's prefix,
under the same pytest and pytest-asyncio, beside the same autouse fixtures as the other suites.
The statements are the service's own (`store`, and the leak guard's query); what it skips is
what the service and harness add: the pool, the request budget and handlers, the session's
queue and tasks, the bus's reader task, the feeds, metrics and logs, the AsyncAPI checks, the
fixtures' setup and teardown. Periodic work (the feeds' position check, the user check, the
bus's heartbeat) is not per test and is left out too.
"""

import asyncio
import json
import time
import uuid
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import jwt
import psycopg
import pytest
import uvicorn
from chat_service import ratelimit, store
from chat_service.auth import SigningKey
from chat_service.keys import RedisKeys
from chat_service.pool import SchemaPool
from chat_service.protocol import BEARER_PREFIX, PROTOCOL, encode, message_frame
from chat_service.settings import Settings
from harness.leaks import _owned_rows_query
from harness.live import offer, serve_on_loopback
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect

GROUP = "limit"
CHANNEL = "room:bench"


class OneConnection:
    """What `store` asks of a pool, on one raw connection: the same statements, no checkout."""

    query = SchemaPool.query

    def __init__(self, conn: psycopg.AsyncConnection[Any], schema: str) -> None:
        self.conn = conn
        self.schema = schema
        self._queries: dict[str, bytes] = {}

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        yield self.conn


class Limit:
    """The bare endpoint and the test's side of the canonical test's I/O."""

    def __init__(self, settings: Settings, signing_key: SigningKey, conn: Any, redis: Redis):
        self.settings = settings
        self.signing_key = signing_key
        self.public_key = signing_key.private_key.public_key()
        self.db: Any = OneConnection(conn, settings.database_schema)
        self.redis = redis
        self.keys = RedisKeys(settings.redis_prefix)
        partitions = range(settings.stream_partitions)
        self.streams = [self.keys.stream(p, settings.stream_partitions) for p in partitions]
        self.unacknowledged: dict[str, list[str]] = {}
        self.handlers_done: dict[str, asyncio.Event] = {}
        self.owned_rows: Any = None
        self.url = ""

    async def endpoint(self, websocket: WebSocket) -> None:
        """Check the token and the user, accept, and answer subscribe and publish."""
        offered = websocket.scope["subprotocols"]
        token = next(v for v in offered if v.startswith(BEARER_PREFIX)).removeprefix(BEARER_PREFIX)
        claims = jwt.decode(
            token,
            self.public_key,
            algorithms=["EdDSA"],
            issuer=self.signing_key.issuer,
            options={"require": ["exp", "sub", "iss"]},
        )
        user_id = claims["sub"]
        assert not await store.inactive_users(self.db, [user_id])
        done = self.handlers_done.setdefault(user_id, asyncio.Event())
        try:
            await websocket.accept(subprotocol=PROTOCOL)
            welcome = {"type": "welcome", "session": uuid.uuid4().hex, "user": user_id}
            await websocket.send_text(encode(welcome))
            while True:
                received = await websocket.receive()
                if received["type"] == "websocket.disconnect":
                    return
                request = json.loads(received["text"])
                for frame in await self.answer(request, user_id):
                    await websocket.send_text(frame)
        finally:
            done.set()

    async def answer(self, request: dict[str, Any], user_id: str) -> list[str]:
        if request["type"] == "subscribe":
            position = await store.channel_position(self.db, request["channel"])
            ack = {"offset": position.offset, "epoch": position.epoch}
            subscribed = {"type": "ack", "ack": "subscribed", "id": request["id"]}
            return [encode({**subscribed, "position": ack})]
        settings = self.settings
        limits = (settings.publish_limit, settings.publish_window_s)
        assert await ratelimit.check(self.redis, self.keys, user_id, "publish", *limits) is None
        message = await store.save_message(self.db, request["channel"], user_id, request["data"])
        entry = {"channel": message.channel, "offset": message.offset}
        # The channel's partition, as the bus picks it.
        stream = self.streams[zlib.crc32(message.channel.encode()) % len(self.streams)]
        frame = encode(message_frame(message))
        await self.redis.xadd(stream, {**entry, "frame": frame}, maxlen=10_000, approximate=True)
        async with self.redis.pipeline(transaction=False) as pipe:
            for acknowledged, ids in self.unacknowledged.items():
                pipe.xack(acknowledged, GROUP, *ids)
            reading = {name: ">" for name in self.streams}
            pipe.xreadgroup(GROUP, "reader", reading, count=100, block=1000)
            *_, batches = await pipe.execute()
        self.unacknowledged = {name: [entry_id for entry_id, _ in got] for name, got in batches}
        ack = {"type": "ack", "ack": "published", "id": request["id"], "offset": message.offset}
        ack["epoch"] = message.epoch
        return [encode(ack), *(fields["frame"] for _, got in batches for _, fields in got)]

    async def run(self, n: int) -> None:
        """One canonical test's I/O, from the user's insert to the leak check."""
        user_id = await store.create_user(self.db, "test user")
        token = jwt.encode(
            {"iss": self.signing_key.issuer, "sub": user_id, "exp": time.time() + 3600},
            self.signing_key.private_key,
            algorithm="EdDSA",
            headers={"kid": self.signing_key.kid},
        )
        async with connect(
            f"{self.url}/ws",
            subprotocols=offer(token),
            compression=None,
            proxy=None,
            ping_interval=None,
            max_queue=None,
        ) as ws:
            assert json.loads(await ws.recv())["type"] == "welcome"
            await ws.send(json.dumps({"type": "subscribe", "id": 1, "channel": CHANNEL}))
            assert json.loads(await ws.recv())["type"] == "ack"
            await ws.send(
                json.dumps({"type": "publish", "id": 2, "channel": CHANNEL, "data": {"n": n}})
            )
            ack, message = json.loads(await ws.recv()), json.loads(await ws.recv())
            assert (message["offset"], message["sender"]) == (ack["offset"], user_id)
        await self.handlers_done.pop(user_id).wait()
        await asyncio.gather(store.delete_user(self.db, user_id), self._forget_counters(user_id))
        rows, keys = await asyncio.gather(self._rows_of(user_id), self._keys_of(user_id))
        assert not rows and not keys, (rows, keys)

    async def _forget_counters(self, user_id: str) -> None:
        pattern = self.keys.match(self.keys.key("ratelimit", user_id, ""))
        _, stale = await self.redis.scan(0, match=pattern, count=1000)
        if stale:
            await self.redis.unlink(*stale)

    async def _rows_of(self, user_id: str) -> list[Any]:
        cursor = await self.db.conn.execute(self.owned_rows, {"ids": [user_id]})
        return await cursor.fetchall()

    async def _keys_of(self, user_id: str) -> list[str]:
        _, found = await self.redis.scan(0, match=self.keys.match(), count=1000)
        return [key for key in found if user_id in key]


@pytest.fixture(scope="session")
async def limit(settings: Settings, signing_key: SigningKey) -> AsyncIterator[Limit]:
    """The bare endpoint served on the worker's schema and prefix, with its consumer group."""
    conn = await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True)
    redis = Redis.from_url(settings.redis_url, decode_responses=True)
    bare = Limit(settings, signing_key, conn, redis)
    bare.owned_rows = await _owned_rows_query(conn, settings.database_schema)
    async with redis.pipeline(transaction=False) as pipe:
        for stream in bare.streams:
            pipe.xgroup_create(stream, GROUP, id="$", mkstream=True)
        await pipe.execute()
    app = Starlette(routes=[WebSocketRoute("/ws", bare.endpoint)])
    config = uvicorn.Config(
        app,
        ws="websockets-sansio",
        loop="asyncio",
        lifespan="off",
        log_config=None,
        access_log=False,
        ws_max_size=settings.max_message_bytes,
        ws_per_message_deflate=settings.compression,
        ws_ping_interval=settings.ping_interval_s,
        ws_ping_timeout=settings.ping_timeout_s,
    )
    try:
        async with serve_on_loopback(config) as url:
            bare.url = url
            yield bare
    finally:
        await redis.aclose()
        await conn.close()
