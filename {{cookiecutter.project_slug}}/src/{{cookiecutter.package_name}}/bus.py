"""Fan-out of published messages between service instances, through Redis streams.

The channels are spread over STREAM_PARTITIONS streams, each in a cluster slot of its own (see
keys.py), so that a Redis Cluster shares the stream load among its masters. A channel always
goes to the same partition, whose entries one reader hands on in stream order: the feeds (see
feeds.py) put each channel's messages in offset order from there.

Consumer groups share out entries among their consumers; they do not copy them. So every
instance registers a group of its own (`instance:<INSTANCE_ID>`) on every partition and reads
them all, then hands each entry to the apps listening in this process. On a cluster, one reader
task per partition (a command reading several streams there must keep them in one slot); on a
single server, one reader for all of them, in one XREADGROUP, so the partitions cost one
connection and one round trip, as one stream did.

An instance refreshes a heartbeat key while it lives. At start, groups whose instance has no
heartbeat are destroyed, so dead instances do not pin the stream forever. An instance that
restarts under the same INSTANCE_ID first re-reads what it had received but not acknowledged.
"""

import asyncio
import logging
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Protocol

from redis import exceptions as redis_errors
from redis.asyncio import RedisCluster
from redis.typing import EncodableT, FieldT, KeyT, StreamIdT

from .keys import RedisKeys
from .redisclient import RedisClient
{%- if cookiecutter.tracing == "otel" %}
from .tracing import trace_fields, traced_delivery, traced_stream
{%- endif %}

log = logging.getLogger(__name__)


class Listener(Protocol):
    """What the bus hands each message it reads to."""

    def receive(self, channel: str, offset: int, frame: str, streamed_at: float) -> None:
        """Called for every message read from the stream; `streamed_at` is when Redis added
        the entry (Unix seconds, from the entry's id)."""

    async def delivered(self) -> None:
        """Return once the messages received so far have been delivered: the reader reads no
        more until then, so a backlog waits in the stream, not in this process."""


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
        self._reads = (
            [[stream] for stream in self.streams]
            if isinstance(redis, RedisCluster)
            else [self.streams]
        )
        """The streams each reader reads."""
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
        await self._destroy_dead_groups()
        await self._create_groups(self.streams)
        self._reading = True
        self._readers = [
            asyncio.create_task(self._read_forever(streams), name=f"bus {self.group} {streams[0]}")
            for streams in self._reads
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
            async with self._redis.pipeline(transaction=False) as pipe:
                for stream in self.streams:
                    pipe.xgroup_destroy(stream, self.group)
                await pipe.execute()
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

    async def _destroy_dead_groups(self) -> None:
        """Destroy the groups of instances whose heartbeat expired, on every stream: pipelined,
        so as many round trips for twelve partitions as for one."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for stream in self.streams:
                pipe.xinfo_groups(stream)
            # A stream not made yet answers with an error: it has no groups either.
            replies = await pipe.execute(raise_on_error=False)
        others = [
            (stream, group["name"])
            for stream, reply in zip(self.streams, replies, strict=True)
            if not isinstance(reply, Exception)
            for group in reply
            if group["name"] != self.group
        ]
        instances = sorted({name.removeprefix(GROUP_PREFIX) for _, name in others})
        if not instances:
            return
        # GET, not EXISTS: a cluster pipeline runs EXISTS (split by slot) apart, unpipelined.
        async with self._redis.pipeline(transaction=False) as pipe:
            for instance in instances:
                pipe.get(self._heartbeat_key(instance))
            beats = dict(zip(instances, await pipe.execute(), strict=True))
        dead = [(s, name) for s, name in others if beats[name.removeprefix(GROUP_PREFIX)] is None]
        if dead:
            log.info("bus removes the groups of dead instances: %s", sorted({n for _, n in dead}))
            async with self._redis.pipeline(transaction=False) as pipe:
                for stream, name in dead:
                    pipe.xgroup_destroy(stream, name)
                await pipe.execute()

    async def _create_groups(self, streams: list[str]) -> None:
        """Register this instance's group at the end of each of `streams` (made if need be)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.xgroup_create(stream, self.group, id="$", mkstream=True)
            replies = await pipe.execute(raise_on_error=False)
        for reply in replies:
            if isinstance(reply, Exception) and "BUSYGROUP" not in str(reply):
                raise reply

    async def _read_forever(self, streams: list[str]) -> None:
        # Whatever goes wrong, the reader logs it and carries on: a dead reader would silently
        # stop every delivery of this instance from its partitions.
        group_missing = False
        # "0" first: entries this group received before a restart but never acknowledged.
        positions: dict[KeyT, StreamIdT] = {stream: "0" for stream in streams}
        # Delivered but not yet acknowledged: the next read acknowledges them (XACK is
        # idempotent, so a read that failed leaves them here to acknowledge again).
        delivered: dict[str, list[str]] = {stream: [] for stream in streams}
        while self._reading:
            try:
                if group_missing:
                    await self._create_groups(streams)
                    group_missing = False
                if time.monotonic() >= self._next_heartbeat:
                    await self._beat()
                read = await self._read_batch(positions, delivered)
                for listener in list(self._listeners):
                    await listener.delivered()
                for stream in streams:
                    if not read.get(stream):
                        positions[stream] = ">"
                continue
            except redis_errors.ResponseError as error:
                if "NOGROUP" in str(error):
                    log.warning("bus group %s vanished (%s gone); recreating", self.group, error)
                    group_missing = True
                    continue
                log.exception("bus read refused")
            except redis_errors.RedisError as error:
                log.warning("bus lost Redis (%s); reconnecting", error)
            except Exception:
                log.exception("bus reader failed")
            self.read_failures += 1
            await asyncio.sleep(RETRY_DELAY_S)

    async def _read_batch(
        self, positions: dict[KeyT, StreamIdT], delivered: dict[str, list[str]]
    ) -> dict[str, int]:
        """Acknowledge the last batch (`delivered`, by stream) and read the next from the streams
        at `positions`, in one round trip; deliver it, leaving its ids in `delivered`; return how
        many entries it held of each stream."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for stream, ids in delivered.items():
                if ids:
                    pipe.xack(stream, self.group, *ids)
            pipe.xreadgroup(self.group, "reader", positions, count=READ_BATCH, block=READ_BLOCK_MS)
            *_, batches = await pipe.execute()
        for ids in delivered.values():
            ids.clear()
        # In RESP2, redis-py's default protocol, the reply is a list of [stream, entries] pairs.
        assert isinstance(batches, list)
        read: dict[str, int] = {}
        for stream, entries in batches:
            for entry_id, fields in entries:
                # A pending entry that was trimmed away since comes back without fields.
                if fields:
                    self._dispatch(entry_id, fields)
            delivered[stream] += [entry_id for entry_id, _ in entries]
            read[stream] = len(entries)
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
                listener.receive(channel, offset, frame, streamed_at)
            except Exception:
                log.exception("a bus listener failed on message %s of %s", offset, channel)
