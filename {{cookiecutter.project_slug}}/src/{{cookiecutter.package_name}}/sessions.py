"""Live WebSocket sessions of one app instance: who is connected, and to which channels.

This is per-app state, never shared between apps: two apps over the same Resources each keep
their own registry. A session's outgoing frames go through a bounded queue, so a client that
stops reading costs at most `queue_size` frames of memory before it is closed.
"""

import asyncio
import uuid
from collections import defaultdict

from .protocol import CloseCode

Outgoing = str | CloseCode
"""A text frame to send, or the code to close the connection with."""


class Session:
    """One connected client."""

    def __init__(self, user_id: str, queue_size: int) -> None:
        self.id = uuid.uuid4().hex
        self.user_id = user_id
        self.channels: set[str] = set()
        self.outgoing: asyncio.Queue[Outgoing] = asyncio.Queue(queue_size)
        self.drained = asyncio.Event()
        self.overflowed = asyncio.Event()
        self.dropped = 0
        # Channels being replayed from history: live messages wait here meanwhile.
        self.held_back: dict[str, list[tuple[int, str]]] = {}

    def send(self, frame: str) -> None:
        """Queue a frame; a full queue means a slow consumer, which is cut off."""
        try:
            self.outgoing.put_nowait(frame)
        except asyncio.QueueFull:
            self._overflow()

    def close(self, code: CloseCode) -> None:
        """Ask the sender to close the connection once the frames queued before are sent."""
        try:
            self.outgoing.put_nowait(code)
        except asyncio.QueueFull:
            self._overflow()

    def _overflow(self) -> None:
        # The client stopped reading: drop what waits for it, and let the connection close it.
        while not self.outgoing.empty():
            self.outgoing.get_nowait()
            self.dropped += 1
        self.overflowed.set()

    def deliver(self, message_id: int, channel: str, frame: str) -> None:
        """Send a live message, or hold it back while its channel's history is replayed."""
        held = self.held_back.get(channel)
        if held is None:
            self.send(frame)
        else:
            held.append((message_id, frame))


class SessionRegistry:
    """Sessions by id, by user and by channel."""

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}
        self._by_user: defaultdict[str, set[Session]] = defaultdict(set)
        self._by_channel: defaultdict[str, set[Session]] = defaultdict(set)

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, user_id: str, queue_size: int) -> Session:
        """Register a new session for `user_id`."""
        session = Session(user_id, queue_size)
        self._sessions[session.id] = session
        self._by_user[user_id].add(session)
        return session

    def subscribe(self, session: Session, channel: str) -> None:
        session.channels.add(channel)
        self._by_channel[channel].add(session)

    def unsubscribe(self, session: Session, channel: str) -> None:
        session.channels.discard(channel)
        _discard(self._by_channel, channel, session)

    def drain(self, session: Session) -> None:
        """Forget a closed session: its subscriptions, then the session itself."""
        for channel in list(session.channels):
            self.unsubscribe(session, channel)
        self._sessions.pop(session.id, None)
        _discard(self._by_user, session.user_id, session)
        session.drained.set()

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def sessions_of(self, user_id: str) -> frozenset[Session]:
        return frozenset(self._by_user.get(user_id, ()))

    def subscribers(self, channel: str) -> frozenset[Session]:
        return frozenset(self._by_channel.get(channel, ()))

    def all(self) -> list[Session]:
        return list(self._sessions.values())

    def deliver(self, channel: str, message_id: int, frame: str) -> None:
        """Hand a message to every session subscribed to `channel`."""
        for session in self._by_channel.get(channel, ()):
            session.deliver(message_id, channel, frame)


def _discard(index: defaultdict[str, set[Session]], key: str, session: Session) -> None:
    members = index.get(key)
    if members is not None:
        members.discard(session)
        if not members:
            del index[key]
