"""The server-side session registry: what it records, and that a disconnect drains it."""

import asyncio

import pytest

from {{ cookiecutter.package_name }}.protocol import CloseCode
from {{ cookiecutter.package_name }}.sessions import (
    Session,
    SessionRegistry,
    SlowConsumer,
)

from harness.live import LiveApp
from harness.sockets import Socket
from harness.users import User

# Past websockets' default limit of unread frames (16), where its client stops reading.
UNREAD_FRAMES = 40


async def test_disconnect_drains_session(shared_app: LiveApp, test_user: User) -> None:
    registry = shared_app.service.registry
    async with shared_app.websocket_session(user=test_user) as ws:
        await ws.subscribe("trip:42")
        assert len(registry.sessions_of(test_user.id)) == 1
        assert "trip:42" in shared_app.service.feeds
        await ws.connection.close()
    assert not registry.sessions_of(test_user.id)
    assert "trip:42" not in shared_app.service.feeds, "a channel nobody here follows has no feed"


async def test_abrupt_disconnect_drains_session(shared_app: LiveApp, test_user: User) -> None:
    registry = shared_app.service.registry
    async with shared_app.websocket_session(user=test_user) as ws:
        await ws.subscribe("trip:abrupt")
        session = next(iter(registry.sessions_of(test_user.id)))
        ws.connection.transport.abort()
        await shared_app.wait_drained(session.id)
    assert not registry.sessions_of(test_user.id)
    assert "trip:abrupt" not in shared_app.service.feeds


async def test_a_client_that_left_messages_unread_still_closes_cleanly(
    shared_app: LiveApp, test_user: User
) -> None:
    """A test may stop reading mid-stream: the harness's client keeps reading while it closes,
    so the server's close frame arrives (1000) instead of a close timeout and an abort (1006)."""
    async with (
        shared_app.websocket_session(user=test_user) as writer,
        shared_app.websocket_session(user=test_user) as idle,
    ):
        await idle.subscribe("trip:unread")
        await writer.subscribe("trip:unread")
        for n in range(UNREAD_FRAMES):
            await writer.publish("trip:unread", n)
        await writer.messages(UNREAD_FRAMES)
    assert idle.connection.close_code == 1000


async def test_registry_counts_each_live_session(shared_app: LiveApp, test_user: User) -> None:
    registry = shared_app.service.registry
    async with shared_app.websocket_session(user=test_user):
        async with shared_app.websocket_session(user=test_user):
            assert len(registry.sessions_of(test_user.id)) == 2
        assert len(registry.sessions_of(test_user.id)) == 1


def test_drain_forgets_the_session() -> None:
    registry = SessionRegistry()
    session = registry.open("u1", "127.0.0.1", queue_size=4, send_timeout_s=1.0)
    registry.drain(session)
    assert len(registry) == 0
    assert not registry.sessions_of("u1")
    assert session.drained.is_set()


def subscribed_session(queue_size: int, *channels: str) -> Session:
    session = Session("u1", "127.0.0.1", queue_size, send_timeout_s=1.0)
    session.positions.update(dict.fromkeys(channels, 0))
    return session


def queued(session: Session) -> list[object]:
    return list(session.outgoing)


def test_full_queue_drops_its_frames_and_flags_a_slow_consumer() -> None:
    session = subscribed_session(2, "news")
    for offset in range(1, 4):
        session.deliver("news", (offset,), (f"frame {offset}",))
    assert session.overflowed
    assert not session.outgoing
    assert session.dropped == 2


def test_close_comes_after_the_frames_already_queued() -> None:
    session = subscribed_session(4)
    session.send("pending")
    session.close(CloseCode.SERVICE_RESTART)
    assert queued(session) == ["pending", CloseCode.SERVICE_RESTART]
    assert not session.overflowed


def test_a_message_is_queued_once_and_only_on_subscribed_channels() -> None:
    session = subscribed_session(8, "news")
    for channel, offset in [("news", 1), ("news", 1), ("news", 2), ("other", 3), ("news", 2)]:
        session.deliver(channel, (offset,), (f"{channel} {offset}",))
    assert queued(session) == ["news 1", "news 2"]
    assert session.positions == {"news": 2}


def test_a_publish_reply_comes_before_the_messages_of_its_channel() -> None:
    session = subscribed_session(8, "news", "sport")
    session.hold("news")
    session.deliver("news", (1,), ("news 1",))
    session.deliver("sport", (1,), ("sport 1",))
    session.reply("ack")
    session.deliver("news", (2,), ("news 2",))
    assert queued(session) == ["sport 1", "ack", "news 1", "news 2"]


async def test_paced_frames_wait_for_the_sender_to_make_room() -> None:
    session = subscribed_session(4)
    for n in range(2):
        await session.send_paced(f"reply {n}")
    third = asyncio.create_task(session.send_paced("reply 2"))
    done, _ = await asyncio.wait({third}, timeout=0.01)
    assert not done, "half the queue is left to live messages"
    assert await session.next_outgoing() == "reply 0"
    session.sent()
    await asyncio.wait_for(third, 1.0)
    assert queued(session) == ["reply 1", "reply 2"]


async def test_a_client_that_takes_nothing_for_the_send_timeout_is_a_slow_consumer() -> None:
    session = Session("u1", "127.0.0.1", queue_size=2, send_timeout_s=0.01)
    await session.send_paced("reply")
    with pytest.raises(SlowConsumer):
        await session.send_paced("never taken")
    assert session.overflowed


def test_frames_go_straight_to_a_socket_that_takes_them() -> None:
    socket = Socket()
    session = Session("u1", "127.0.0.1", 4, send_timeout_s=1.0, write_now=socket.write_now)
    session.positions["news"] = 0
    session.deliver("news", (1,), ("news 1",))
    session.reply("ack")
    assert (socket.written, queued(session)) == (["news 1", "ack"], [])


def test_messages_that_come_together_go_out_in_one_write_less_those_already_had() -> None:
    socket = Socket()
    session = Session("u1", "127.0.0.1", 4, send_timeout_s=1.0, write_now=socket.write_now)
    session.positions["news"] = 1  # a replay went up to offset 1
    session.deliver("news", (1, 2, 3), ("news 1", "news 2", "news 3"))
    session.deliver("news", (2, 3), ("news 2", "news 3"))
    session.hold("news")
    session.deliver("news", (4, 5), ("news 4", "news 5"))
    session.reply("ack")
    assert socket.writes == [("news 2", "news 3"), ("ack",), ("news 4", "news 5")]
    assert session.positions == {"news": 5}


async def test_nothing_overtakes_a_frame_the_socket_could_not_take() -> None:
    socket = Socket()
    session = Session("u1", "127.0.0.1", 8, send_timeout_s=1.0, write_now=socket.write_now)
    session.positions["news"] = 0
    socket.open = False
    session.deliver("news", (1,), ("news 1",))
    socket.open = True
    session.deliver("news", (2,), ("news 2",))
    assert (socket.written, queued(session)) == ([], ["news 1", "news 2"])
    # The sender writes the head, which stays queued until written.
    assert await session.next_outgoing() == "news 1"
    session.deliver("news", (3,), ("news 3",))
    session.sent()
    assert queued(session) == ["news 2", "news 3"]
    assert socket.written == []


async def test_the_sender_waits_for_a_frame_and_wakes_for_it() -> None:
    session = subscribed_session(4)
    waiting = asyncio.create_task(session.next_outgoing())
    done, _ = await asyncio.wait({waiting}, timeout=0.01)
    assert not done
    session.send("late")
    assert await asyncio.wait_for(waiting, 1.0) == "late"


def test_a_session_wakes_its_connection_to_send_and_to_close_it() -> None:
    woken: list[bool] = []
    session = Session("u1", "127.0.0.1", 1, 1.0, wake=lambda s: woken.append(s.overflowed))
    session.positions["news"] = 0
    session.deliver("news", (1,), ("kept",))
    assert woken == [False]
    session.deliver("news", (2,), ("one too many",))
    assert woken == [False, True] and session.overflowed and session.dropped == 1


async def test_nothing_waits_for_room_in_an_overflowed_session() -> None:
    session = subscribed_session(2)
    await session.send_paced("reply")
    waiting = asyncio.create_task(session.send_paced("waits for room"))
    done, _ = await asyncio.wait({waiting}, timeout=0.01)
    assert not done
    session.send("live")
    session.send("one too many")
    with pytest.raises(SlowConsumer):
        await asyncio.wait_for(waiting, 1.0)
