"""Fan-out of published messages between service instances, through Redis streams.

The channels are spread over STREAM_PARTITIONS streams, each in a cluster slot of its own (see
keys.py), so that a Redis Cluster shares the stream load among its masters. A channel always
goes to the same partition, whose entries one reader hands on in stream order: the feeds (see
feeds.py) put each channel's messages in offset order from there.

Consumer groups share out entries among their consumers; they do not copy them. So every
instance registers a group of its own (`instance:<INSTANCE_ID>`) on every partition and reads
them all, one reader task per partition (a command reading several streams would span slots),
then hands each entry to the apps listening in this process.

An instance refreshes a heartbeat key while it lives. At start, groups whose instance has no
heartbeat are destroyed, so dead instances do not pin the stream forever. An instance that
restarts under the same INSTANCE_ID first re-reads what it had received but not acknowledged.
"""

import asyncio
import logging
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

from redis import exceptions as redis_errors
from redis.typing import EncodableT, FieldT

from .keys import RedisKeys
from .redisclient import RedisClient
{%- if cookiecutter.tracing == "otel" %}
from .tracing import trace_fields, traced_delivery, traced_stream
{%- endif %}

log = logging.getLogger(__name__)

Listener = Callable[[str, int, str, float], None]
"""Called with (channel, offset, frame, streamed_at) for every message read from the stream;
`streamed_at` is when Redis added the entry (Unix seconds, from the entry's id)."""

GROUP_PREFIX = "instance:"
STREAM_MAX_LENGTH = 10_000
# Well under redis-py's socket timeout (5 s by default), which would otherwise cut a blocking
# read on an idle stream short.
READ_BLOCK_MS = 1_000
READ_BATCH = 100
RETRY_DELAY_S = 0.5
HEARTBEAT_TTL_S = 30
HEARTBEAT_EVERY_S = 10


class Bus:
    """This instance's consumer groups on the message streams, and the local listeners."""

    def __init__(self, redis: RedisClient, keys: RedisKeys, instance: str, partitions: int) -> None:
        self._redis = redis
        self._keys = keys
        self.instance = instance
        self.streams = [keys.stream(partition, partitions) for partition in range(partitions)]
        """The partitions' streams, in partition order."""
        self.group = GROUP_PREFIX + instance
        self._listeners: set[Listener] = set()
        self._readers: list[asyncio.Task[None]] = []
        self._reading = False
        self._next_heartbeat = 0.0
        self.read_failures = 0
        """Reads of the streams that failed and were retried, since the bus started."""

    def stream_of(self, channel: str) -> str:
        """The stream that carries `channel`: the same on every instance and every run (CRC-32,
        not Python's per-process hash), as long as the partition count stays."""
        return self.streams[zlib.crc32(channel.encode()) % len(self.streams)]

    async def start(self) -> None:
        """Clear dead instances' groups, register ours at each stream's end, start reading."""
        await self._beat()
        await asyncio.gather(*(self._destroy_dead_groups(stream) for stream in self.streams))
        await asyncio.gather(*(self._create_group(stream) for stream in self.streams))
        self._reading = True
        self._readers = [
            asyncio.create_task(self._read_forever(stream), name=f"bus {self.group} {stream}")
            for stream in self.streams
        ]

    async def stop(self) -> None:
        """Stop reading and remove this instance's groups and heartbeat."""
        if self._readers:
            # redis-py may turn a cancellation that lands while it connects into a ConnectionError,
            # which a reader survives by design: the flag ends its loop all the same.
            self._reading = False
            for reader in self._readers:
                reader.cancel()
            await asyncio.wait(self._readers)
            self._readers = []
        with suppress(redis_errors.RedisError):
            for stream in self.streams:
                await self._redis.xgroup_destroy(stream, self.group)
            await self._redis.unlink(self._heartbeat_key(self.instance))
{% if cookiecutter.tracing == "otel" %}
    @traced_stream
{%- endif %}
    async def publish(self, channel: str, offset: int, frame: str) -> None:
        """Append a message frame to the channel's stream, for every instance to deliver."""
        entry: dict[FieldT, EncodableT] = {"channel": channel, "offset": offset, "frame": frame}
{%- if cookiecutter.tracing == "otel" %}
        entry.update(trace_fields())
{%- endif %}
        await self._redis.xadd(
            self.stream_of(channel), entry, maxlen=STREAM_MAX_LENGTH, approximate=True
        )

    @contextmanager
    def listening(self, listener: Listener) -> Iterator[None]:
        """Deliver stream messages to `listener` while inside the block."""
        self._listeners.add(listener)
        try:
            yield
        finally:
            self._listeners.discard(listener)

    def _heartbeat_key(self, instance: str) -> str:
        return self._keys.key("instance", instance)

    async def _beat(self) -> None:
        # Whichever reader finds the heartbeat due refreshes it; the others need not.
        self._next_heartbeat = time.monotonic() + HEARTBEAT_EVERY_S
        await self._redis.set(self._heartbeat_key(self.instance), "alive", ex=HEARTBEAT_TTL_S)

    async def _destroy_dead_groups(self, stream: str) -> None:
        with suppress(redis_errors.ResponseError):  # no stream yet: no groups either
            for group in await self._redis.xinfo_groups(stream):
                name = group["name"]
                instance = name.removeprefix(GROUP_PREFIX)
                if name != self.group and not await self._redis.exists(
                    self._heartbeat_key(instance)
                ):
                    log.info("bus removes the group of dead instance %s", instance)
                    await self._redis.xgroup_destroy(stream, name)

    async def _create_group(self, stream: str) -> None:
        try:
            await self._redis.xgroup_create(stream, self.group, id="$", mkstream=True)
        except redis_errors.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    async def _read_forever(self, stream: str) -> None:
        # Whatever goes wrong, the reader logs it and carries on: a dead reader would silently
        # stop every delivery of this instance from its partition.
        group_missing = False
        # "0" first: entries this group received before a restart but never acknowledged.
        position = "0"
        # Delivered but not yet acknowledged: the next read acknowledges them (XACK is
        # idempotent, so a read that failed leaves them here to acknowledge again).
        delivered: list[str] = []
        while self._reading:
            try:
                if group_missing:
                    await self._create_group(stream)
                    group_missing = False
                if time.monotonic() >= self._next_heartbeat:
                    await self._beat()
                if not await self._read_batch(stream, position, delivered):
                    position = ">"
                continue
            except redis_errors.ResponseError as error:
                if "NOGROUP" in str(error):
                    log.warning("bus group %s vanished (%s gone); recreating", self.group, stream)
                    group_missing = True
                    continue
                log.exception("bus read refused")
            except redis_errors.RedisError as error:
                log.warning("bus lost Redis (%s); reconnecting", error)
            except Exception:
                log.exception("bus reader failed")
            self.read_failures += 1
            await asyncio.sleep(RETRY_DELAY_S)

    async def _read_batch(self, stream: str, position: str, delivered: list[str]) -> int:
        """Acknowledge the last batch (`delivered`) and read the next from `stream`, in one round
        trip; deliver it, leaving its ids in `delivered`; return how many entries it held."""
        async with self._redis.pipeline(transaction=False) as pipe:
            if delivered:
                pipe.xack(stream, self.group, *delivered)
            pipe.xreadgroup(
                self.group, "reader", {stream: position}, count=READ_BATCH, block=READ_BLOCK_MS
            )
            *_, batches = await pipe.execute()
        delivered.clear()
        # In RESP2, redis-py's default protocol, the reply is a list of [stream, entries] pairs.
        assert isinstance(batches, list)
        read = 0
        for _stream, entries in batches:
            for entry_id, fields in entries:
                # A pending entry that was trimmed away since comes back without fields.
                if fields:
                    self._dispatch(entry_id, fields)
            delivered += [entry_id for entry_id, _ in entries]
            read += len(entries)
        return read
{% if cookiecutter.tracing == "otel" %}
    @traced_delivery
{%- endif %}
    def _dispatch(self, entry_id: str, fields: dict[str, str]) -> None:
        try:
            channel, offset, frame = fields["channel"], int(fields["offset"]), fields["frame"]
        except (KeyError, ValueError):
            # Not one of ours (or from an older version): skipping it keeps the reader going.
            log.warning("bus skips malformed entry %s", entry_id)
            return
        streamed_at = int(entry_id.partition("-")[0]) / 1000
        for listener in list(self._listeners):
            try:
                listener(channel, offset, frame, streamed_at)
            except Exception:
                log.exception("a bus listener failed on message %s of %s", offset, channel)
