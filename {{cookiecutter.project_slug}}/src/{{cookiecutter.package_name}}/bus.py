"""Fan-out of published messages between service instances, through one Redis stream.

Consumer groups share out entries among their consumers; they do not copy them. So every
instance (every Resources) registers a group of its own and reads the whole stream, then hands
each entry to the apps listening in this process.
"""

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from .keys import RedisKeys

log = logging.getLogger(__name__)

Listener = Callable[[str, str], None]
"""Called with (channel, frame) for every message read from the stream."""

STREAM_MAX_LENGTH = 10_000
READ_BLOCK_MS = 5_000
READ_BATCH = 100
RECONNECT_DELAY_S = 0.5


class Bus:
    """This instance's consumer group on the message stream, and the local listeners."""

    def __init__(self, redis: Redis, keys: RedisKeys) -> None:
        self._redis = redis
        self.stream = keys.stream("messages")
        self.group = f"instance:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._listeners: set[Listener] = set()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Register this instance's group at the stream's end and start reading."""
        await self._create_group()
        self._reader = asyncio.create_task(self._read_forever(), name=f"bus {self.group}")

    async def stop(self) -> None:
        """Stop reading and remove this instance's group."""
        if self._reader is not None:
            self._reader.cancel()
            with suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        with suppress(redis_errors.RedisError):
            await self._redis.xgroup_destroy(self.stream, self.group)

    async def publish(self, channel: str, frame: str) -> None:
        """Append a message frame to the stream, for every instance to deliver."""
        await self._redis.xadd(
            self.stream,
            {"channel": channel, "frame": frame},
            maxlen=STREAM_MAX_LENGTH,
            approximate=True,
        )

    @contextmanager
    def listening(self, listener: Listener) -> Iterator[None]:
        """Deliver stream messages to `listener` while inside the block."""
        self._listeners.add(listener)
        try:
            yield
        finally:
            self._listeners.discard(listener)

    async def _create_group(self) -> None:
        try:
            await self._redis.xgroup_create(self.stream, self.group, id="$", mkstream=True)
        except redis_errors.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    async def _read_forever(self) -> None:
        while True:
            try:
                await self._read_batch()
            except redis_errors.ConnectionError as error:
                log.warning("bus lost Redis (%s); reconnecting in %.1fs", error, RECONNECT_DELAY_S)
                await asyncio.sleep(RECONNECT_DELAY_S)
            except redis_errors.ResponseError as error:
                if "NOGROUP" not in str(error):
                    raise
                log.warning("bus group %s vanished (stream deleted); recreating it", self.group)
                await self._create_group()

    async def _read_batch(self) -> None:
        batches = await self._redis.xreadgroup(
            self.group, "reader", {self.stream: ">"}, count=READ_BATCH, block=READ_BLOCK_MS
        )
        for _stream, entries in batches:
            for _entry_id, fields in entries:
                self._dispatch(fields["channel"], fields["frame"])
            await self._redis.xack(self.stream, self.group, *(entry_id for entry_id, _ in entries))

    def _dispatch(self, channel: str, frame: str) -> None:
        for listener in list(self._listeners):
            try:
                listener(channel, frame)
            except Exception:
                log.exception("a bus listener failed on a message for %s", channel)
