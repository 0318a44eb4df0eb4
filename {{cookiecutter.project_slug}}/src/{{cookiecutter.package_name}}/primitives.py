"""asyncio's Event and Queue as a connection uses them, in a fraction of their memory.

An asyncio.Event allocates a deque for its waiters up front, and an asyncio.Queue four (its items,
its getters, its putters, and the Event it joins on): about 760 bytes each, some 5 KB of every
idle connection's 37 (uvicorn's receive queue and writable flag, the session's drained flag). A
connection's flags and inbox almost never have a waiter, and never more than a few items, so
these keep a plain list, and only once something waits.
"""

import asyncio
from typing import Any

Event = dict[str, Any]
"""An ASGI event, what uvicorn's protocol queues for the app."""


class Flag:
    """asyncio.Event's set, clear, is_set and wait."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        """Return True once the flag is set (at once if it is)."""
        if self._set:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            # Cancelled before a set: leave nothing behind.
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
        return True


class Inbox:
    """asyncio.Queue's put_nowait, get and empty, unbounded, of ASGI events."""

    __slots__ = ("_arrived", "_items")

    def __init__(self) -> None:
        self._items: list[Event] = []
        self._arrived = Flag()

    def put_nowait(self, item: Event) -> None:
        self._items.append(item)
        self._arrived.set()

    def empty(self) -> bool:
        return not self._items

    async def get(self) -> Event:
        """The oldest item, once there is one."""
        while not self._items:
            self._arrived.clear()
            await self._arrived.wait()
        return self._items.pop(0)
