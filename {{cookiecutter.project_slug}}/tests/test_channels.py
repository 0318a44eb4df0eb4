"""Subscribe, publish, deliver: messages reach every subscriber and are stored in Postgres."""

from {{ cookiecutter.package_name }}.channels import personal_channel
from {{ cookiecutter.package_name }}.resources import Resources

from harness.live import LiveApp
from harness.users import User, UserFactory
from harness.wsclient import WsClient


async def test_subscribe_is_acked_with_the_request_id_and_the_channel_position(
    ws_session: WsClient,
) -> None:
    await ws_session.send({"type": "subscribe", "id": "s-1", "channel": "room:lobby"})
    ack = await ws_session.next_of_type("ack")
    assert (ack["id"], sorted(ack["position"])) == ("s-1", ["epoch", "offset"])


async def test_publish_reaches_the_subscribed_publisher(
    ws_session: WsClient, test_user: User
) -> None:
    await ws_session.subscribe("room:echo")
    ack = await ws_session.publish("room:echo", {"text": "hello"})
    message = await ws_session.next_message("room:echo")
    assert (message["offset"], message["epoch"]) == (ack["offset"], ack["epoch"])
    assert message["sender"] == test_user.id
    assert message["data"] == {"text": "hello"}


async def test_two_users_exchange_messages_on_a_shared_channel(
    shared_app: LiveApp, make_user: UserFactory
) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    async with (
        shared_app.websocket_session(user=alice) as alice_ws,
        shared_app.websocket_session(user=bob) as bob_ws,
    ):
        await alice_ws.subscribe("room:shared")
        await bob_ws.subscribe("room:shared")
        await alice_ws.publish("room:shared", {"text": "hi bob"})
        received = await bob_ws.next_message("room:shared")
        assert (received["sender"], received["data"]) == (alice.id, {"text": "hi bob"})
        await bob_ws.publish("room:shared", {"text": "hi alice"})
        replies = [await alice_ws.next_message("room:shared") for _ in range(2)]
        assert [reply["data"]["text"] for reply in replies] == ["hi bob", "hi alice"]


async def test_publisher_not_subscribed_gets_only_the_ack(ws_session: WsClient) -> None:
    ack = await ws_session.publish("room:quiet", {"n": 1})
    assert ack["offset"] > 0
    await ws_session.assert_silent()


async def test_unsubscribed_client_stops_receiving(
    shared_app: LiveApp, make_user: UserFactory
) -> None:
    reader, writer = await make_user("reader"), await make_user("writer")
    async with (
        shared_app.websocket_session(user=reader) as reader_ws,
        shared_app.websocket_session(user=writer) as writer_ws,
    ):
        await reader_ws.subscribe("room:leave")
        await reader_ws.unsubscribe("room:leave")
        await writer_ws.publish("room:leave", {"n": 1})
        await reader_ws.assert_silent()


async def test_messages_arrive_in_publication_order(ws_session: WsClient) -> None:
    await ws_session.subscribe("room:order")
    for n in range(20):
        await ws_session.publish("room:order", {"n": n})
    received = [(await ws_session.next_message("room:order"))["data"]["n"] for _ in range(20)]
    assert received == list(range(20))


async def test_message_goes_only_to_its_channel(ws_session: WsClient) -> None:
    await ws_session.subscribe("room:one")
    await ws_session.subscribe("room:two")
    await ws_session.publish("room:two", {"to": "two"})
    message = await ws_session.next_message()
    assert message["channel"] == "room:two"
    await ws_session.assert_silent()


async def test_every_session_of_a_user_receives(shared_app: LiveApp, test_user: User) -> None:
    async with (
        shared_app.websocket_session(user=test_user) as first,
        shared_app.websocket_session(user=test_user) as second,
    ):
        await first.subscribe(personal_channel(test_user.id))
        await second.subscribe(personal_channel(test_user.id))
        await first.publish(personal_channel(test_user.id), {"note": "to self"})
        assert (await second.next_message())["data"] == {"note": "to self"}
        assert (await first.next_message())["data"] == {"note": "to self"}


async def test_subscribing_twice_delivers_once(ws_session: WsClient) -> None:
    await ws_session.subscribe("room:twice")
    await ws_session.subscribe("room:twice")
    await ws_session.publish("room:twice", "once")
    assert (await ws_session.next_message())["data"] == "once"
    await ws_session.assert_silent()


async def test_own_personal_channel_is_allowed(ws_session: WsClient, test_user: User) -> None:
    await ws_session.subscribe(personal_channel(test_user.id))


async def test_someone_elses_personal_channel_is_forbidden(
    ws_session: WsClient, make_user: UserFactory
) -> None:
    other = await make_user("other")
    for kind, fields in [("subscribe", {}), ("publish", {"data": "psst"})]:
        reply = await ws_session.request(kind, channel=personal_channel(other.id), **fields)
        assert (reply["type"], reply["code"]) == ("error", "forbidden")


async def test_published_message_is_stored(
    ws_session: WsClient, test_user: User, shared_resources: Resources
) -> None:
    ack = await ws_session.publish("room:stored", {"kept": True})
    async with shared_resources.db.connection() as conn:
        cursor = await conn.execute(
            shared_resources.db.query(
                "SELECT channel, sender_id::text, data FROM {messages}"
                " WHERE channel = %s AND channel_offset = %s"
            ),
            ["room:stored", ack["offset"]],
        )
        assert await cursor.fetchone() == ("room:stored", test_user.id, {"kept": True})


async def test_any_json_value_round_trips(ws_session: WsClient) -> None:
    await ws_session.subscribe("room:json")
    payloads = [None, 0, -1.5, "ünïcødé ✓", [1, [2, [3]]], {"nested": {"a": [True, False]}}]
    for payload in payloads:
        await ws_session.publish("room:json", payload)
    assert [(await ws_session.next_message())["data"] for _ in payloads] == payloads
