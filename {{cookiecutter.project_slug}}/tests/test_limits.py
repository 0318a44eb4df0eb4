"""Limits: channels per connection, publish rate per user, and slow consumers."""

from {{ cookiecutter.package_name }}.protocol import CloseCode

from harness.live import AppFactory
from harness.scrape import closes
from harness.stalled import StalledClient
from harness.users import UserFactory

FLOOD_FRAME_BYTES = 60_000


async def test_channels_per_connection_are_capped(
    another_app: AppFactory, make_user: UserFactory
) -> None:
    user = await make_user()
    async with (
        another_app(max_channels=2) as live,
        live.websocket_session(user=user) as ws,
    ):
        await ws.subscribe("room:1")
        await ws.subscribe("room:2")
        reply = await ws.request("subscribe", channel="room:3")
        assert (reply["type"], reply["code"]) == ("error", "too_many_channels")
        await ws.subscribe("room:2")
        await ws.unsubscribe("room:1")
        await ws.subscribe("room:3")


async def test_publish_rate_is_limited_per_user_across_reconnects(
    another_app: AppFactory, make_user: UserFactory
) -> None:
    flooder, bystander = await make_user("flooder"), await make_user("bystander")
    async with another_app(publish_limit=3, publish_window_s=60) as live:
        async with live.websocket_session(user=flooder) as ws:
            for n in range(3):
                await ws.publish("room:rate", n)
            reply = await ws.request("publish", channel="room:rate", data="one too many")
            assert (reply["type"], reply["code"]) == ("error", "rate_limited")
            assert "retry in" in reply["message"]
        async with live.websocket_session(user=flooder) as again:
            reply = await again.request("publish", channel="room:rate", data="after reconnect")
            assert reply["code"] == "rate_limited", "the count must survive a reconnect"
        async with live.websocket_session(user=bystander) as other:
            await other.publish("room:rate", "unaffected")


async def test_slow_consumer_is_closed_and_nobody_else_is_hurt(
    another_app: AppFactory, make_user: UserFactory
) -> None:
    writer, slow, fast = [await make_user(name) for name in ("writer", "slow", "fast")]
    async with another_app(send_queue_size=4, publish_limit=10_000) as live:
        registry = live.service.registry
        stalled = StalledClient(live.url, slow.token)
        await stalled.open()
        await stalled.send({"type": "subscribe", "id": 1, "channel": "room:flood"})
        assert (await stalled.next_frame())["type"] == "ack"
        slow_session = next(iter(registry.sessions_of(slow.id)))
        async with (
            live.websocket_session(user=fast) as fast_ws,
            live.websocket_session(user=writer) as writer_ws,
        ):
            await fast_ws.subscribe("room:flood")
            sent = 0
            while CloseCode.SLOW_CONSUMER not in closes(live.service.metrics):
                await writer_ws.publish("room:flood", "x" * FLOOD_FRAME_BYTES)
                sent += 1
                assert sent < 200, "the slow consumer was never closed"
            # Reading again at once, within the server's close timeout, lets the close through.
            assert await stalled.close_code() == CloseCode.SLOW_CONSUMER
            received = [await fast_ws.next_message("room:flood") for _ in range(sent)]
            assert len(received) == sent
        await live.wait_drained(slow_session.id)
        assert closes(live.service.metrics)[CloseCode.SLOW_CONSUMER] == 1
        assert live.service.metrics.value("ws_frames_dropped_total") > 0
        assert not registry.sessions_of(slow.id)
