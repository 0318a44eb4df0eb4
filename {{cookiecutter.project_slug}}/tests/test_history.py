"""Recovery: a subscribe with `since` replays exactly what the client missed, then goes live,
with no gap and no duplicate at the seam; when it cannot, the ack says so and why."""

import asyncio
import uuid

from {{ cookiecutter.package_name }}.protocol import Position
from {{ cookiecutter.package_name }}.resources import Resources

from harness.history import store_history
from harness.live import AppFactory, LiveApp
from harness.users import User, UserFactory, forget_user
from harness.wsclient import Frame, WsClient


def fresh_channel(name: str) -> str:
    """A channel no other test on this worker has used, so its offsets start at 1."""
    return f"room:{name}-{uuid.uuid4().hex[:8]}"


async def publish_all(client: WsClient, channel: str, count: int) -> list[Frame]:
    return [await client.publish(channel, {"n": n}) for n in range(count)]


def position_of(frame: Frame) -> Frame:
    """The position of a publish ack or a message, as a `since`."""
    return {"offset": frame["offset"], "epoch": frame["epoch"]}


def as_since(position: Position) -> Frame:
    return {"offset": position.offset, "epoch": position.epoch}


async def test_subscribe_since_replays_the_missed_messages_then_live_ones(
    shared_app: LiveApp, make_user: UserFactory
) -> None:
    channel = fresh_channel("history")
    writer, reader = await make_user("writer"), await make_user("reader")
    async with shared_app.websocket_session(user=writer) as writer_ws:
        acks = await publish_all(writer_ws, channel, 5)
        assert [ack["offset"] for ack in acks] == [1, 2, 3, 4, 5]
        async with shared_app.websocket_session(user=reader) as reader_ws:
            ack = await reader_ws.subscribe(channel, since=position_of(acks[1]))
            assert (ack["recovered"], ack["replayed"]) == (True, 3)
            assert ack["position"] == position_of(acks[4])
            replayed = await reader_ws.messages(3)
            assert [message["offset"] for message in replayed] == [3, 4, 5]
            assert [message["data"] for message in replayed] == [{"n": 2}, {"n": 3}, {"n": 4}]
            live = await writer_ws.publish(channel, "live")
            assert (await reader_ws.next_message())["offset"] == live["offset"] == 6
            await reader_ws.assert_silent()


async def test_replay_racing_live_publishing_has_no_gap_no_duplicate_and_keeps_order(
    shared_app: LiveApp, make_user: UserFactory
) -> None:
    channel = fresh_channel("race")
    writer, reader = await make_user("writer"), await make_user("reader")
    async with (
        shared_app.websocket_session(user=writer) as writer_ws,
        shared_app.websocket_session(user=reader) as reader_ws,
    ):
        first = await writer_ws.publish(channel, "before")
        publishing = asyncio.create_task(publish_all(writer_ws, channel, 30))
        ack = await reader_ws.subscribe(channel, since={"offset": 0, "epoch": first["epoch"]})
        assert ack["recovered"] is True
        await publishing
        received = [message["offset"] for message in await reader_ws.messages(31)]
        assert received == list(range(1, 32)), "every message once, in offset order"
        await reader_ws.assert_silent()


async def test_resume_after_ten_thousand_missed_messages_is_complete_and_in_order(
    ws_session: WsClient, test_user: User, shared_resources: Resources
) -> None:
    channel = fresh_channel("far-behind")
    seen = await store_history(shared_resources.db, channel, test_user.id, 1)
    newest = await store_history(shared_resources.db, channel, test_user.id, 10_000)
    # The replay streams through a send queue of 256 frames: it waits for room, never overflows.
    ack = await ws_session.subscribe(channel, since=as_since(seen))
    assert (ack["recovered"], ack["replayed"]) == (True, 10_000)
    assert ack["position"] == as_since(newest)
    replayed = await ws_session.messages(10_000)
    assert [message["offset"] for message in replayed] == list(range(2, 10_002))
    assert replayed[-1]["data"] == {"n": 10_000}
    await ws_session.assert_silent()


async def test_resume_beyond_the_history_limit_is_refused_honestly_then_live(
    another_app: AppFactory, make_user: UserFactory
) -> None:
    channel = fresh_channel("limit")
    user = await make_user()
    async with (
        another_app(history_limit=3) as live,
        live.websocket_session(user=user) as ws,
    ):
        acks = await publish_all(ws, channel, 5)
        ack = await ws.subscribe(channel, since={"offset": 1, "epoch": acks[0]["epoch"]})
        assert (ack["recovered"], ack["reason"], ack["replayed"]) == (False, "history_limit", 0)
        assert ack["position"] == position_of(acks[-1])
        await ws.assert_silent()
        later = await ws.publish(channel, "after")
        assert (await ws.next_message())["offset"] == later["offset"]


async def test_deleted_history_changes_the_epoch_and_recovery_says_so(
    shared_app: LiveApp, make_user: UserFactory, shared_resources: Resources
) -> None:
    channel = fresh_channel("deleted")
    leaving, staying = await make_user("leaving"), await make_user("staying")
    async with shared_app.websocket_session(user=staying) as ws:
        before = await ws.publish(channel, "kept")
        async with shared_app.websocket_session(user=leaving) as leaving_ws:
            await leaving_ws.publish(channel, "deleted with its sender")
        await forget_user(shared_resources, leaving.id)
        ack = await ws.subscribe(channel, since=position_of(before))
        assert (ack["recovered"], ack["reason"]) == (False, "epoch_changed")
        assert ack["position"]["epoch"] != before["epoch"]
        assert ack["position"]["offset"] == 2
        await ws.assert_silent()


async def test_a_position_the_channel_never_reached_is_refused(ws_session: WsClient) -> None:
    channel = fresh_channel("ahead")
    ack = await ws_session.publish(channel, "only one")
    reply = await ws_session.subscribe(channel, since={"offset": 5, "epoch": ack["epoch"]})
    assert (reply["recovered"], reply["reason"]) == (False, "unknown_offset")
    assert reply["position"] == position_of(ack)


async def test_resubscribing_with_since_replays_again(ws_session: WsClient) -> None:
    channel = fresh_channel("again")
    await ws_session.subscribe(channel)
    acks = await publish_all(ws_session, channel, 3)
    assert [m["offset"] for m in await ws_session.messages(3)] == [1, 2, 3]
    ack = await ws_session.subscribe(channel, since={"offset": 1, "epoch": acks[0]["epoch"]})
    assert ack["replayed"] == 2
    assert [m["offset"] for m in await ws_session.messages(2)] == [2, 3]
    await ws_session.assert_silent()


async def test_since_must_be_a_position(ws_session: WsClient) -> None:
    bad = [
        -1,
        "17",
        1.5,
        True,
        41,
        {"offset": 1},
        {"epoch": "e"},
        {"offset": -1, "epoch": "e"},
        {"offset": True, "epoch": "e"},
        {"offset": 1, "epoch": ""},
        {"offset": 1, "epoch": 7},
        {"offset": 1, "epoch": "e" * 65},
    ]
    for since in bad:
        reply = await ws_session.bad_request("subscribe", channel="room:x", since=since)
        assert (reply["type"], reply["code"]) == ("error", "invalid_message"), since


async def test_history_is_not_replayed_into_someone_elses_personal_channel(
    ws_session: WsClient, make_user: UserFactory
) -> None:
    other = await make_user("other")
    since = {"offset": 0, "epoch": "anything"}
    reply = await ws_session.request("subscribe", channel=f"user:{other.id}", since=since)
    assert (reply["type"], reply["code"]) == ("error", "forbidden")


async def test_subscribing_stores_nothing_and_resumes_from_before_the_first_message(
    ws_session: WsClient, shared_resources: Resources
) -> None:
    made_up = [fresh_channel("made-up") for _ in range(20)]
    for channel in made_up:
        ack = await ws_session.subscribe(channel)
        assert ack["position"] == {"offset": 0, "epoch": "0"}
    async with shared_resources.db.connection() as conn:
        cursor = await conn.execute(
            shared_resources.db.query("SELECT count(*) FROM {channels} WHERE name = ANY(%s)"),
            [made_up],
        )
        assert await cursor.fetchone() == (0,)
    first = await ws_session.publish(made_up[0], "first")
    assert first["epoch"] != "0"
    await ws_session.next_message(made_up[0])
    resumed = await ws_session.subscribe(made_up[0], since={"offset": 0, "epoch": "0"})
    assert (resumed["recovered"], resumed["replayed"]) == (True, 1)
    assert (await ws_session.next_message(made_up[0]))["data"] == "first"
