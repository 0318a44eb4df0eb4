"""The delivery contract under concurrency and faults: offsets contiguous per channel, live
delivery in offset order on every instance, resumes with no gap and no duplicate, a publisher's
ack before its own message, and flow control instead of closing a client that reads."""

import asyncio
import contextlib
import random
import uuid

from {{ cookiecutter.package_name }} import store
from {{ cookiecutter.package_name }}.feeds import FANOUT_SLICE
from {{ cookiecutter.package_name }}.resources import Resources

from harness.live import AppFactory, LiveApp
from harness.users import User, UserFactory
from harness.wsclient import Frame, WsClient

# For a test that waits for the position check to deliver what the stream never carried.
FAST_POSITION_CHECK_S = 0.05


def fresh_channel(name: str) -> str:
    """A channel no other test on this worker has used, so its offsets start at 1."""
    return f"room:{name}-{uuid.uuid4().hex[:8]}"


async def publish_many(live: LiveApp, user: User, channel: str, count: int) -> list[int]:
    """Publish `count` messages one after another; return the offsets they were acked with."""
    async with live.websocket_session(user=user) as ws:
        return [
            (await ws.publish(channel, {"from": user.id, "n": n}))["offset"] for n in range(count)
        ]


async def test_concurrent_publishers_on_two_instances_are_delivered_in_offset_order(
    shared_app: LiveApp, other_instance: LiveApp, make_user: UserFactory
) -> None:
    channel = fresh_channel("order")
    publishers = [await make_user(f"publisher {n}") for n in range(20)]
    reader = await make_user("reader")
    async with (
        shared_app.websocket_session(user=reader) as here,
        other_instance.websocket_session(user=reader) as there,
    ):
        await here.subscribe(channel)
        await there.subscribe(channel)
        acked = await asyncio.gather(
            *(
                publish_many(shared_app if n % 2 else other_instance, user, channel, 10)
                for n, user in enumerate(publishers)
            )
        )
        assert sorted(offset for offsets in acked for offset in offsets) == list(range(1, 201))
        for client in (here, there):
            offsets = [message["offset"] for message in await client.messages(200)]
            assert offsets == list(range(1, 201)), "in offset order, each once"


async def test_resuming_subscribers_see_every_offset_once_in_order_despite_disconnects(
    shared_app: LiveApp, other_instance: LiveApp, make_user: UserFactory
) -> None:
    """The chaos test: 8 publishers across two instances, 3 subscribers that drop their
    connection at random points (cleanly or abruptly) and resume on a random instance."""
    channel = fresh_channel("chaos")
    instances = [shared_app, other_instance]
    publishers = [await make_user(f"publisher {n}") for n in range(8)]
    readers = [await make_user(f"reader {n}") for n in range(3)]
    per_publisher, total = 25, 8 * 25
    starts = []
    for reader in readers:
        async with shared_app.websocket_session(user=reader) as ws:
            starts.append((await ws.subscribe(channel))["position"])

    async def follow(reader: User, since: Frame) -> list[int]:
        seen: list[int] = []
        while len(seen) < total:
            async with random.choice(instances).websocket_session(user=reader) as ws:
                ack = await ws.subscribe(channel, since=since)
                assert ack["recovered"] is True, ack
                for _ in range(min(random.randint(1, 40), total - len(seen))):
                    message = await ws.next_message(channel)
                    seen.append(message["offset"])
                    since = {"offset": message["offset"], "epoch": message["epoch"]}
                if random.random() < 0.5:
                    ws.connection.transport.abort()
        return seen

    following = [asyncio.create_task(follow(r, s)) for r, s in zip(readers, starts, strict=True)]
    acked = await asyncio.gather(
        *(
            publish_many(instances[n % 2], user, channel, per_publisher)
            for n, user in enumerate(publishers)
        )
    )
    acked_offsets = sorted(offset for offsets in acked for offset in offsets)
    assert acked_offsets == list(range(1, total + 1)), "offsets are contiguous per channel"
    for seen in await asyncio.gather(*following):
        assert seen == acked_offsets, "each subscriber saw every offset once, in order"


async def test_a_channel_with_more_subscribers_than_a_slice_reaches_each_in_order(
    shared_app: LiveApp, make_user: UserFactory, test_user: User
) -> None:
    """A message goes out a slice of subscribers at a time: each of three slices gets every
    message once, in order, and one who drops and resumes meanwhile misses none."""
    channel = fresh_channel("slices")
    count = 10
    users = [await make_user(f"subscriber {n}") for n in range(2 * FANOUT_SLICE + 1)]
    async with contextlib.AsyncExitStack() as stack:
        subscribers = [
            await stack.enter_async_context(shared_app.websocket_session(user=user))
            for user in users
        ]
        for ws in subscribers:
            await ws.subscribe(channel)
        publishing = asyncio.create_task(publish_many(shared_app, test_user, channel, count))
        # The last subscriber, in the last slice, drops after three messages and resumes.
        dropping = subscribers.pop()
        first = await dropping.messages(3, channel)
        dropping.connection.transport.abort()
        async with shared_app.websocket_session(user=users[-1]) as resumed:
            since = {"offset": first[-1]["offset"], "epoch": first[-1]["epoch"]}
            assert (await resumed.subscribe(channel, since=since))["recovered"] is True
            rest = await resumed.messages(count - 3, channel)
        acked = await publishing
        assert [message["offset"] for message in first + rest] == acked
        for ws in subscribers:
            assert [message["offset"] for message in await ws.messages(count, channel)] == acked


async def test_a_reading_client_gets_a_reply_to_every_pipelined_request(
    ws_session: WsClient,
) -> None:
    count = 1_000

    async def send_all() -> None:
        for n in range(count):
            await ws_session.send({"type": "ping", "id": n})

    sending = asyncio.create_task(send_all())
    pongs = [await ws_session.next_of_type("pong") for _ in range(count)]
    await sending
    assert [pong["id"] for pong in pongs] == list(range(count))
    await ws_session.assert_silent()


async def test_a_publisher_gets_its_ack_before_its_own_message(
    shared_app: LiveApp, make_user: UserFactory
) -> None:
    channel = fresh_channel("ack-first")
    publisher, other = await make_user("publisher"), await make_user("other")
    count = 50
    async with shared_app.websocket_session(user=publisher) as ws:
        await ws.subscribe(channel)
        competing = asyncio.create_task(publish_many(shared_app, other, channel, count))
        for n in range(count):
            await ws.send({"type": "publish", "id": n, "channel": channel, "data": n})
        frames = [await ws.receive() for _ in range(3 * count)]
        await competing
    acks = {frame["offset"]: index for index, frame in enumerate(frames) if frame["type"] == "ack"}
    messages = {
        frame["offset"]: index for index, frame in enumerate(frames) if frame["type"] == "message"
    }
    assert len(acks) == count and len(messages) == 2 * count
    assert all(acks[offset] < messages[offset] for offset in acks)
    assert sorted(messages) == list(messages), "messages in offset order"


async def test_messages_the_stream_never_carried_are_delivered_from_postgres(
    another_app: AppFactory, test_user: User, shared_resources: Resources
) -> None:
    channel = fresh_channel("unstreamed")
    async with (
        another_app(position_check_s=FAST_POSITION_CHECK_S) as live,
        live.websocket_session(user=test_user) as ws,
    ):
        await ws.subscribe(channel)
        # Stored but never added to the stream, as when Redis fails between the two steps.
        await store.save_message(shared_resources.db, channel, test_user.id, "lost 1")
        await ws.publish(channel, "streamed 2")
        await store.save_message(shared_resources.db, channel, test_user.id, "lost 3, the last")
        received = await ws.messages(3, channel)
        assert [(m["offset"], m["data"]) for m in received] == [
            (1, "lost 1"),
            (2, "streamed 2"),
            (3, "lost 3, the last"),
        ]
        await ws.assert_silent()


async def test_losing_the_redis_stream_mid_run_loses_no_message(
    shared_app: LiveApp, make_user: UserFactory, shared_resources: Resources
) -> None:
    channel = fresh_channel("flushed")
    writer, live_reader, resuming = [await make_user(n) for n in ("writer", "live", "resuming")]
    async with (
        shared_app.websocket_session(user=live_reader) as live_ws,
        shared_app.websocket_session(user=writer) as writer_ws,
    ):
        start = (await live_ws.subscribe(channel))["position"]
        for n in range(60):
            if n == 30:
                # As FLUSHDB would: the stream and every consumer group on it are gone.
                stream = shared_resources.bus.stream_of(channel)
                assert await shared_resources.redis.delete(stream) == 1
            await writer_ws.publish(channel, n)
        offsets = [message["offset"] for message in await live_ws.messages(60, channel)]
        assert offsets == list(range(1, 61))
    async with shared_app.websocket_session(user=resuming) as resumed:
        ack = await resumed.subscribe(channel, since=start)
        assert (ack["recovered"], ack["replayed"]) == (True, 60)
        assert [m["data"] for m in await resumed.messages(60, channel)] == list(range(60))


async def test_every_delivered_message_carries_its_position(ws_session: WsClient) -> None:
    channel = fresh_channel("fields")
    first = await ws_session.publish(channel, "gives the channel its epoch")
    ack = await ws_session.subscribe(channel)
    assert ack["position"] == {"offset": first["offset"], "epoch": first["epoch"]}
    published = await ws_session.publish(channel, {"x": 1})
    message = await ws_session.next_message(channel)
    assert set(message) == {"type", "channel", "offset", "epoch", "sender", "data", "sent_at"}
    assert (message["offset"], message["epoch"]) == (published["offset"], published["epoch"])
    assert message["epoch"] == first["epoch"]
