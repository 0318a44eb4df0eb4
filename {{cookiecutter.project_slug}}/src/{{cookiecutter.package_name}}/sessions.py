"""Live WebSocket sessions of one app instance: who is connected, and what waits to be sent.

This is per-app state, never shared between apps: two apps over the same Resources each keep
their own registry.

A frame goes straight to the socket when nothing waits before it and the socket takes it without
waiting (`write_now`, the server's synchronous write): fanning a message out to a thousand
subscribers then costs a thousand writes, not a thousand task switches, and a channel's messages
that came in together go out in one write. Otherwise a frame waits in a bounded queue, which the
connection's sender empties in order. Live messages never wait for room: a client that lets
`queue_size` frames pile up has stopped reading and is closed (4008). Everything the session's
own requests produce (replies, replays) waits for room instead, so a client that reads is never
closed for its own burst.
"""

import asyncio
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable

from .primitives import Flag
from .protocol import CloseCode

Outgoing = str | CloseCode
"""A text frame to send, or the code to close the connection with."""

WriteNow = Callable[[tuple[str, ...]], bool]
"""Writes text frames at once, in one write, and returns True, or returns False if the socket
cannot take them without waiting (its buffer is full, or it is closing)."""

Wake = Callable[["Session"], None]
"""Called when the session needs its connection: a frame or close code was queued (for the
sender), or the session overflowed (to close it with 4008)."""


class SlowConsumer(Exception):
    """The client took no frame for the send timeout while its own requests waited for room."""


class Session:
    """One connected client."""

    def __init__(
        self,
        user_id: str,
        peer: str,
        queue_size: int,
        send_timeout_s: float,
        write_now: WriteNow | None = None,
        wake: Wake | None = None,
    ) -> None:
        self.id = uuid.uuid4().hex
        self.user_id = user_id
        self.peer = peer
        # Subscribed channels, each with the offset of the last message queued for it.
        self.positions: dict[str, int] = {}
        self.outgoing: list[Outgoing] = []
        """What waits for the sender; the head stays here until written, so nothing overtakes it.
        A list, not a deque: it is empty nearly always, and an empty deque takes 760 bytes."""
        self.drained = Flag()
        self.overflowed = False
        self.dropped = 0
        self._queue_size = queue_size
        self._send_timeout_s = send_timeout_s
        self._write_now = write_now
        self._wake = wake
        # Requests' own frames wait while the queue is this full, leaving the rest to live traffic.
        self._paced_limit = max(1, queue_size // 2)
        # Created only when someone waits: most sessions never do.
        self._room: asyncio.Event | None = None
        self._frames_waiting: asyncio.Future[None] | None = None
        # The channel of the publish being handled: its messages wait for the publish's reply.
        self._holding: str | None = None
        self._held: list[str] = []

    def send(self, frame: str) -> None:
        """Write a frame now if nothing waits before it and the socket takes it, else queue it;
        a full queue means a slow consumer, which is cut off."""
        self.send_all((frame,))

    def send_all(self, frames: tuple[str, ...]) -> None:
        """Send `frames` as `send` sends one, all in one write if they go now."""
        if not self.outgoing and self._write_now is not None and self._write_now(frames):
            return
        for frame in frames:
            self._enqueue(frame)

    def close(self, code: CloseCode) -> None:
        """Ask the sender to close the connection once the frames queued before are sent."""
        self._enqueue(code)

    async def wait_for_room(self) -> None:
        """Return once the queue is below its paced limit; raise SlowConsumer if the client takes
        nothing for the send timeout, or the session has overflowed."""
        # Nearly always there is room: no timer to arm and cancel for every request.
        if len(self.outgoing) < self._paced_limit and not self.overflowed:
            return
        try:
            async with asyncio.timeout(self._send_timeout_s):
                while len(self.outgoing) >= self._paced_limit and not self.overflowed:
                    if self._room is None:
                        self._room = asyncio.Event()
                    self._room.clear()
                    await self._room.wait()
        except TimeoutError:
            self._overflow()
        if self.overflowed:
            raise SlowConsumer

    async def send_paced(self, frame: str) -> None:
        """Queue a frame once there is room for it (see `wait_for_room`)."""
        await self.wait_for_room()
        self.send(frame)

    async def next_outgoing(self) -> Outgoing:
        """The oldest frame or close code waiting, for the connection's sender; it stays queued
        until the sender calls `sent`."""
        while not self.outgoing:
            self._frames_waiting = asyncio.get_running_loop().create_future()
            await self._frames_waiting
        return self.outgoing[0]

    def sent(self) -> None:
        """The sender wrote the oldest frame (unless an overflow dropped it meanwhile)."""
        if self.outgoing:
            del self.outgoing[0]
        if self._room is not None and len(self.outgoing) < self._paced_limit:
            self._room.set()

    def _enqueue(self, item: Outgoing) -> None:
        if len(self.outgoing) >= self._queue_size:
            self._overflow()
            return
        self.outgoing.append(item)
        if self._frames_waiting is not None and not self._frames_waiting.done():
            self._frames_waiting.set_result(None)
        if self._wake is not None:
            self._wake(self)

    def _overflow(self) -> None:
        # The client stopped reading: drop what waits for it, and let the connection close it.
        self.dropped += len(self.outgoing)
        self.outgoing.clear()
        self.overflowed = True
        if self._room is not None:
            self._room.set()  # what waits for room gives up (wait_for_room)
        if self._wake is not None:
            self._wake(self)

    def deliver(self, channel: str, offsets: tuple[int, ...], frames: tuple[str, ...]) -> None:
        """Send a channel's messages (`frames`, at `offsets`, in order), less those this session
        already has (a replay went past the live feed), holding them back while this session's
        publish on the channel awaits its reply."""
        position = self.positions.get(channel)
        if position is None or offsets[-1] <= position:
            return
        if offsets[0] <= position:
            pairs = zip(offsets, frames, strict=True)
            frames = tuple(frame for offset, frame in pairs if offset > position)
        self.positions[channel] = offsets[-1]
        if channel == self._holding:
            self._held.extend(frames)
        else:
            self.send_all(frames)

    def hold(self, channel: str) -> None:
        """Keep the channel's messages back until `reply` queues the current request's reply, so a
        publisher gets its ack before its own message."""
        self._holding = channel

    def reply(self, frame: str) -> None:
        """Queue a request's reply, then any messages held back while it was handled."""
        self.send(frame)
        held, self._held, self._holding = self._held, [], None
        if held:
            self.send_all(tuple(held))


class SessionRegistry:
    """Sessions by id and by user, and how many come from each address."""

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}
        self._by_user: defaultdict[str, set[Session]] = defaultdict(set)
        self._by_peer: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._sessions)

    def open(
        self,
        user_id: str,
        peer: str,
        queue_size: int,
        send_timeout_s: float,
        write_now: WriteNow | None = None,
        wake: Wake | None = None,
    ) -> Session:
        """Register a new session for `user_id`, connected from `peer`."""
        session = Session(user_id, peer, queue_size, send_timeout_s, write_now, wake)
        self._sessions[session.id] = session
        self._by_user[user_id].add(session)
        self._by_peer[peer] += 1
        return session

    def drain(self, session: Session) -> None:
        """Forget a closed session; its subscriptions must have been dropped first."""
        if self._sessions.pop(session.id, None) is not None:
            self._by_peer[session.peer] -= 1
            if not self._by_peer[session.peer]:
                del self._by_peer[session.peer]
        members = self._by_user.get(session.user_id)
        if members is not None:
            members.discard(session)
            if not members:
                del self._by_user[session.user_id]
        session.drained.set()

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def sessions_of(self, user_id: str) -> frozenset[Session]:
        return frozenset(self._by_user.get(user_id, ()))

    def count_from(self, peer: str) -> int:
        return self._by_peer[peer]

    def users(self) -> list[str]:
        """The users with a live session here."""
        return list(self._by_user)

    def all(self) -> list[Session]:
        return list(self._sessions.values())
