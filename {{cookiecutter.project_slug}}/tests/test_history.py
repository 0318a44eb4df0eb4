"""Recovery: a subscribe with `since` replays what the client missed, then goes live, with no
gap and no duplicate."""

import asyncio

from harness.server import AppFactory, LiveApp, UserFactory
from harness.wsclient import WsClient


async def publish_all(client: WsClient, channel: str, count: int) -> list[int]:
    return [(await client.publish(channel, {"n": n}))["message_id"] for n in range(count)]


async def test_subscribe_since_replays_the_missed_messages_then_live_ones(
    shared_app: LiveApp, make_user: UserFactory
):
    writer, reader = await make_user("writer"), await make_user("reader")
    async with shared_app.websocket_session(user=writer) as writer_ws:
        ids = await publish_all(writer_ws, "room:history", 5)
        async with shared_app.websocket_session(user=reader) as reader_ws:
            ack = await reader_ws.request("subscribe", channel="room:history", since=ids[1])
            assert (ack["type"], ack["replayed"], ack["complete"]) == ("ack", 3, True)
            replayed = [(await reader_ws.next_message())["id"] for _ in range(3)]
            assert replayed == ids[2:]
            live = await writer_ws.publish("room:history", "live")
            assert (await reader_ws.next_message())["id"] == live["message_id"]
            await reader_ws.assert_silent()


async def test_replay_racing_live_publishing_has_no_gap_and_no_duplicate(
    shared_app: LiveApp, make_user: UserFactory
):
    writer, reader = await make_user("writer"), await make_user("reader")
    async with (
        shared_app.websocket_session(user=writer) as writer_ws,
        shared_app.websocket_session(user=reader) as reader_ws,
    ):
        first = (await writer_ws.publish("room:race", "before"))["message_id"]
        publishing = asyncio.create_task(publish_all(writer_ws, "room:race", 30))
        ack = await reader_ws.request("subscribe", channel="room:race", since=first - 1)
        assert ack["type"] == "ack"
        published = [first, *await publishing]
        received = [(await reader_ws.next_message())["id"] for _ in published]
        assert sorted(received) == published, "every message exactly once"
        await reader_ws.assert_silent()


async def test_replay_beyond_the_history_limit_says_it_is_incomplete(
    another_app: AppFactory, make_user: UserFactory
):
    user = await make_user()
    async with (
        another_app(history_limit=3) as live,
        live.websocket_session(user=user) as ws,
    ):
        ids = await publish_all(ws, "room:long", 5)
        ack = await ws.request("subscribe", channel="room:long", since=0)
        assert (ack["replayed"], ack["complete"]) == (3, False)
        assert [(await ws.next_message())["id"] for _ in range(3)] == ids[-3:]


async def test_since_must_be_a_message_id(ws_session: WsClient):
    for since in (-1, "17", 1.5, True):
        reply = await ws_session.request("subscribe", channel="room:x", since=since)
        assert (reply["type"], reply["code"]) == ("error", "invalid_message"), since


async def test_history_is_not_replayed_into_someone_elses_personal_channel(
    ws_session: WsClient, make_user: UserFactory
):
    other = await make_user("other")
    reply = await ws_session.request("subscribe", channel=f"user:{other.id}", since=0)
    assert (reply["type"], reply["code"]) == ("error", "forbidden")
