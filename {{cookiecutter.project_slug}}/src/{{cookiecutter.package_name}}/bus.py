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
# Well under redis-py's socket timeout (5 s by default), which would otherwise cut a blocking
# read on an idle stream short.
READ_BLOCK_MS = 1_000
READ_BATCH = 100
RETRY_DELAY_S = 0.5


def new_instance_id() -> str:
    """Names this process's instance: host, pid and a random part, readable in CLIENT LIST."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Bus:
    """This instance's consumer group on the message stream, and the local listeners."""

    def __init__(self, redis: Redis, keys: RedisKeys, instance: str) -> None:
        self._redis = redis
        self.stream = keys.stream("messages")
        self.group = f"instance:{instance}"
        self._listeners: set[Listener] = set()
        self._reader: asyncio.Task[None] | None = None
        self._reading = False

    async def start(self) -> None:
        """Register this instance's group at the stream's end and start reading."""
        await self._create_group()
        self._reading = True
        self._reader = asyncio.create_task(self._read_forever(), name=f"bus {self.group}")

    async def stop(self) -> None:
        """Stop reading and remove this instance's group."""
        if self._reader is not None:
            # redis-py may turn a cancellation that lands while it connects into a ConnectionError,
            # which the reader survives by design: the flag ends its loop all the same.
            self._reading = False
            self._reader.cancel()
            await asyncio.wait({self._reader})
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
        # Whatever goes wrong, the reader logs it and carries on: a dead reader would silently
        # stop every delivery of this instance.
        group_missing = False
        while self._reading:
            try:
                if group_missing:
                    await self._create_group()
                    group_missing = False
                await self._read_batch()
                continue
            except redis_errors.ResponseError as error:
                if "NOGROUP" in str(error):
                    log.warning("bus group %s vanished (stream deleted); recreating", self.group)
                    group_missing = True
                    continue
                log.exception("bus read refused")
            except redis_errors.RedisError as error:
                log.warning("bus lost Redis (%s); reconnecting", error)
            except Exception:
                log.exception("bus reader failed")
            await asyncio.sleep(RETRY_DELAY_S)

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
