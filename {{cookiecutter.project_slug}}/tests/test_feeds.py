"""A channel's feed hands its messages to the subscribers of the moment, in order, and those that
came in together in one write to each."""

import asyncio
import time

from {{ cookiecutter.package_name }}.feeds import FANOUT_BATCH, ChannelFeed
from {{ cookiecutter.package_name }}.metrics import Metrics
from {{ cookiecutter.package_name }}.resources import Resources
from {{ cookiecutter.package_name }}.sessions import Session

from harness.sockets import Socket


def subscriber(feed: ChannelFeed) -> Socket:
    """A session that joins `feed` where it stands, writing to the Socket returned."""
    socket = Socket()
    session = Session("u1", "127.0.0.1", 64, send_timeout_s=1.0, write_now=socket.write_now)
    session.positions[feed.channel] = feed.offset or 0
    feed.add(session)
    return socket


def receive(feed: ChannelFeed, offsets: range) -> None:
    for offset in offsets:
        feed.receive(offset, f"message {offset}", time.time())


async def test_messages_handed_out_together_go_out_together(shared_resources: Resources) -> None:
    deliveries: set[asyncio.Task[None]] = set()
    feed = ChannelFeed("news", shared_resources.db, Metrics(lambda: 0, lambda: 0), deliveries)
    feed.start(0)
    early = subscriber(feed)
    receive(feed, range(1, FANOUT_BATCH + 3))
    # Joins after those were handed out: it gets only what comes after.
    late = subscriber(feed)
    receive(feed, range(FANOUT_BATCH + 3, FANOUT_BATCH + 5))
    await asyncio.wait(deliveries)
    messages = [f"message {offset}" for offset in range(1, FANOUT_BATCH + 5)]
    assert early.writes == [
        tuple(messages[:FANOUT_BATCH]),
        tuple(messages[FANOUT_BATCH : FANOUT_BATCH + 2]),
        tuple(messages[FANOUT_BATCH + 2 :]),
    ]
    assert late.writes == [tuple(messages[FANOUT_BATCH + 2 :])]
