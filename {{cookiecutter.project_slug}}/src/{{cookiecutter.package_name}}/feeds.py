"""Each channel's live messages, handed to this app's subscribers in offset order, and the
recovery that joins a resuming subscriber to them with no gap and no duplicate.

Ordering. Postgres numbers a channel's messages, but the Redis stream carries them in the order
their XADDs landed, which concurrent publishers (on any instance) can swap. So a channel's feed
hands out offset k+1 only after k: an early message waits, and a gap still open after
GAP_FILL_DELAY_S is filled from Postgres. Offsets Postgres no longer has were deleted and are
skipped. Every POSITION_CHECK_S the feeds also compare themselves with their channels' newest
offsets in Postgres and fill what the stream never brought (Redis flushed, an XADD that failed),
so even the last message before a stream loss is delivered.

Delivery. A message handed out goes to the subscribers of that moment, a slice of FANOUT_SLICE
at a time, yielding to the event loop between slices: a thousand subscribers are milliseconds of
writes, in which a publisher's round trips to Postgres and Redis would otherwise wait, and with
them the next message. One task per channel delivers its messages in the order handed out; those
handed out meanwhile to the same subscribers go out together, up to FANOUT_BATCH of them in one
write to each socket, so a channel that publishes faster than one message's fan-out takes pays
for a write per subscriber per batch, not per message.

Recovery. A subscribe with `since` reads the missed messages from Postgres a page at a time, each
frame waiting for room in the session's queue, until it reaches the offset the feed has handed
out; then, with no await in between, the session joins the feed. However far behind the client
is, one page is all that is held in memory.
"""

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import NamedTuple

import psycopg

from . import store
from .metrics import Metrics
from .pool import SchemaPool
from .protocol import Position, RecoveryFailure, encode, message_frame
from .sessions import Session

log = logging.getLogger(__name__)

GAP_FILL_DELAY_S = 0.05
PAGE_SIZE = 500
# A few hundred microseconds of writes: small enough that a publisher's replies are read between
# two slices, large enough that yielding costs a small share of the fan-out (make loadtest).
FANOUT_SLICE = 64
# Messages of a channel written to a socket at once: a few kilobytes, which a socket that keeps
# up takes whole.
FANOUT_BATCH = 8


@dataclass(frozen=True, slots=True)
class Subscription:
    """What a subscribe achieved: where the session joined the channel, and how a replay went."""

    position: Position
    replayed: int = 0
    failure: RecoveryFailure | None = None


class HandedOut(NamedTuple):
    """A message a feed has handed out, waiting to go to `audience`, the subscribers of the
    moment; `stored_at` is when it was stored or streamed."""

    offset: int
    frame: str
    stored_at: float
    audience: list[Session]


class ChannelFeed:
    """One channel's live messages on this app, handed to its subscribers in offset order."""

    def __init__(
        self,
        channel: str,
        db: SchemaPool,
        metrics: Metrics,
        deliveries: set[asyncio.Task[None]],
    ) -> None:
        self.channel = channel
        self.subscribers: set[Session] = set()
        self.joining = 0
        self.offset: int | None = None
        """The last offset handed out; None until the first subscriber read where to start."""
        self._db = db
        self._metrics = metrics
        self._early: dict[int, tuple[str, float]] = {}
        """Frames that came before their turn, with when they were stored or streamed."""
        self._newest = 0
        self._filling: asyncio.Task[None] | None = None
        self._outgoing: collections.deque[HandedOut] = collections.deque()
        """Messages handed out and not yet delivered."""
        self._audience: list[Session] | None = None
        """The subscribers as the messages handed out since they last changed go to them: one
        list for all those messages, which is how the delivery knows they can go together."""
        self._delivering: asyncio.Task[None] | None = None
        self._deliveries = deliveries
        """The delivering tasks of every feed of the app, this one's among them while it runs."""

    @property
    def in_use(self) -> bool:
        return bool(self.subscribers) or self.joining > 0

    def add(self, session: Session) -> None:
        self.subscribers.add(session)
        self._audience = None

    def discard(self, session: Session) -> None:
        self.subscribers.discard(session)
        self._audience = None

    def start(self, offset: int) -> None:
        """Hand out what comes after `offset`, the newest stored when a subscriber looked."""
        if self.offset is None:
            self.offset = offset
            self._early = {k: early for k, early in self._early.items() if k > offset}
            self._advance()

    def receive(self, offset: int, frame: str, streamed_at: float) -> None:
        """A message from the stream, in whatever order the stream brought it."""
        if self.offset is None or offset > self.offset:
            self._early[offset] = (frame, streamed_at)
            self.expect(offset)

    def expect(self, newest: int) -> None:
        """The channel holds messages up to `newest`: hand them out, or fill the gap to it."""
        self._newest = max(self._newest, newest)
        self._advance()

    def stop(self) -> None:
        for task in (self._filling, self._delivering):
            if task is not None:
                task.cancel()

    def _advance(self) -> None:
        if self.offset is None:
            return
        while (early := self._early.pop(self.offset + 1, None)) is not None:
            self._hand_out(self.offset + 1, *early)
        if self._newest > self.offset and self._filling is None:
            self._filling = asyncio.create_task(self._fill_gap(), name=f"fill {self.channel}")

    def _hand_out(self, offset: int, frame: str, stored_at: float) -> None:
        self.offset = offset
        # To those subscribed now: one who joins later has joined after this offset.
        if self._audience is None:
            self._audience = list(self.subscribers)
        self._outgoing.append(HandedOut(offset, frame, stored_at, self._audience))
        if self._delivering is None:
            self._delivering = asyncio.create_task(self._deliver(), name=f"deliver {self.channel}")
            self._deliveries.add(self._delivering)
            self._delivering.add_done_callback(self._deliveries.discard)

    async def _deliver(self) -> None:
        try:
            while self._outgoing:
                offsets, frames, audience = self._next_batch()
                for start in range(0, len(audience), FANOUT_SLICE):
                    if start:
                        await asyncio.sleep(0)
                    for session in audience[start : start + FANOUT_SLICE]:
                        # A no-op for a session that has left the channel since.
                        session.deliver(self.channel, offsets, frames)
        finally:
            self._delivering = None

    def _next_batch(self) -> tuple[tuple[int, ...], tuple[str, ...], list[Session]]:
        """The oldest undelivered messages that go to the same subscribers, up to FANOUT_BATCH:
        their offsets, their frames, and those subscribers. Each one's lag ends here, as it
        starts going out."""
        now, audience = time.time(), self._outgoing[0].audience
        offsets: list[int] = []
        frames: list[str] = []
        while self._outgoing and self._outgoing[0].audience is audience:
            message = self._outgoing.popleft()
            # Clocks of different hosts may disagree by a little: a lag is never negative.
            self._metrics.fanout_lag_seconds.observe(max(0.0, now - message.stored_at))
            offsets.append(message.offset)
            frames.append(message.frame)
            if len(offsets) == FANOUT_BATCH:
                break
        return tuple(offsets), tuple(frames), audience

    async def _fill_gap(self) -> None:
        try:
            # The missing entry is most likely still on its way through the stream.
            await asyncio.sleep(GAP_FILL_DELAY_S)
            while self.offset is not None and self._newest > self.offset:
                upto = min(self._newest, self.offset + PAGE_SIZE)
                stored = await store.messages_between(
                    self._db, self.channel, self.offset, upto, PAGE_SIZE
                )
                for message in stored:
                    if message.offset > self.offset:
                        self._early.setdefault(
                            message.offset,
                            (encode(message_frame(message)), message.sent_at.timestamp()),
                        )
                while self.offset < upto:
                    early = self._early.pop(self.offset + 1, None)
                    if early is None:
                        self.offset += 1  # deleted since it was stored: nothing to hand out
                    else:
                        self._hand_out(self.offset + 1, *early)
                self._advance()
        except psycopg.Error as error:
            self._metrics.backend_error("postgres", "gap_fill")
            log.warning(
                "filling %s from Postgres failed (%s); the position check retries",
                self.channel,
                error,
            )
        finally:
            self._filling = None


class Feeds:
    """This app's channel feeds: fed by the bus, checked against Postgres, joined by sessions."""

    def __init__(self, history_limit: int, position_check_s: float, metrics: Metrics) -> None:
        self.history_limit = history_limit
        self.position_check_s = position_check_s
        self._metrics = metrics
        self._feeds: dict[str, ChannelFeed] = {}
        self._db: SchemaPool | None = None
        # The feeds' delivering tasks, so that waiting for them costs nothing per idle feed.
        self._deliveries: set[asyncio.Task[None]] = set()

    @asynccontextmanager
    async def running(self, db: SchemaPool) -> AsyncIterator[None]:
        """Serve feeds from `db`, checking their positions, until the block ends."""
        self._db = db
        checker = asyncio.create_task(self._check_positions(), name="feed position check")
        try:
            yield
        finally:
            checker.cancel()
            await asyncio.wait({checker})
            for feed in self._feeds.values():
                feed.stop()
            self._feeds.clear()

    def __contains__(self, channel: str) -> bool:
        return channel in self._feeds

    def receive(self, channel: str, offset: int, frame: str, streamed_at: float) -> None:
        """A message for a channel someone here subscribed to goes to its feed."""
        feed = self._feeds.get(channel)
        if feed is not None:
            feed.receive(offset, frame, streamed_at)

    async def delivered(self) -> None:
        """Return once every feed has delivered what it was handed."""
        if self._deliveries:
            await asyncio.wait(set(self._deliveries))

    async def subscribe(
        self, session: Session, channel: str, since: Position | None
    ) -> Subscription:
        """Join `session` to the channel's live messages, first replaying those after `since`."""
        if since is not None:
            self.unsubscribe(session, channel)  # asked to replay: the replay decides what it has
        feed = self._feed(channel)
        feed.joining += 1
        try:
            current = await store.channel_position(self._pool(), channel)
            feed.start(current.offset)
            assert feed.offset is not None
            if channel in session.positions:
                return Subscription(Position(session.positions[channel], current.epoch))
            failure = None if since is None else self._recovery_failure(since, current)
            if since is None or failure is not None:
                return self._join(feed, session, feed.offset, current.epoch, failure=failure)
            replayed, failure = await self._replay(feed, session, since.offset)
            # Caught up with the feed, or (after a failed replay) live from where the feed is.
            joined_at = max(since.offset + replayed, feed.offset)
            return self._join(feed, session, joined_at, current.epoch, replayed, failure)
        finally:
            feed.joining -= 1
            self._forget_if_unused(feed)

    def unsubscribe(self, session: Session, channel: str) -> None:
        if session.positions.pop(channel, None) is None:
            return
        feed = self._feeds.get(channel)
        if feed is not None:
            feed.discard(session)
            self._forget_if_unused(feed)

    def unsubscribe_all(self, session: Session) -> None:
        for channel in list(session.positions):
            self.unsubscribe(session, channel)

    def _pool(self) -> SchemaPool:
        if self._db is None:
            raise RuntimeError("the feeds are not running: the app's lifespan starts them")
        return self._db

    def _feed(self, channel: str) -> ChannelFeed:
        feed = self._feeds.get(channel)
        if feed is None:
            feed = ChannelFeed(channel, self._pool(), self._metrics, self._deliveries)
            self._feeds[channel] = feed
        return feed

    def _forget_if_unused(self, feed: ChannelFeed) -> None:
        if not feed.in_use and self._feeds.get(feed.channel) is feed:
            del self._feeds[feed.channel]
            feed.stop()

    def _recovery_failure(self, since: Position, current: Position) -> RecoveryFailure | None:
        # From offset 0 the replay itself proves the history whole: it must start at 1.
        if since.offset > 0 and since.epoch != current.epoch:
            return RecoveryFailure.EPOCH_CHANGED
        if since.offset > current.offset:
            return RecoveryFailure.UNKNOWN_OFFSET
        if current.offset - since.offset > self.history_limit:
            return RecoveryFailure.HISTORY_LIMIT
        return None

    async def _replay(
        self, feed: ChannelFeed, session: Session, after: int
    ) -> tuple[int, RecoveryFailure | None]:
        """Queue the stored messages after `after` up to the feed's offset, as room frees up;
        return how many, and why the replay stopped short if it did."""
        cursor = after
        while feed.offset is not None and cursor < feed.offset:
            upto = feed.offset
            page = await store.messages_between(self._pool(), feed.channel, cursor, upto, PAGE_SIZE)
            if not page:
                return cursor - after, RecoveryFailure.EPOCH_CHANGED
            for message in page:
                if message.offset != cursor + 1:
                    # Deleted since the position was read, which also renewed the epoch.
                    return cursor - after, RecoveryFailure.EPOCH_CHANGED
                await session.send_paced(encode(message_frame(message)))
                cursor = message.offset
        return cursor - after, None

    def _join(
        self,
        feed: ChannelFeed,
        session: Session,
        offset: int,
        epoch: str,
        replayed: int = 0,
        failure: RecoveryFailure | None = None,
    ) -> Subscription:
        session.positions[feed.channel] = offset
        feed.add(session)
        return Subscription(Position(offset, epoch), replayed, failure)

    async def _check_positions(self) -> None:
        while True:
            await asyncio.sleep(self.position_check_s)
            started = [name for name, feed in self._feeds.items() if feed.offset is not None]
            if not started:
                continue
            try:
                newest = await store.channel_offsets(self._pool(), started)
            except psycopg.Error as error:
                self._metrics.backend_error("postgres", "position_check")
                log.warning("feed position check failed: %s", error)
                continue
            for channel, offset in newest.items():
                feed = self._feeds.get(channel)
                if feed is not None:
                    feed.expect(offset)
