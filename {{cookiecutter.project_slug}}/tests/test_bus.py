"""Messages fan out through the Redis stream to every app and every instance."""

import pytest

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.resources import Resources
from {{ cookiecutter.package_name }}.settings import Settings

from harness.server import LiveApp, User, serve_in_process
from harness.wsclient import WsClient


async def test_two_apps_on_shared_resources_both_deliver(
    shared_app: LiveApp, shared_resources: Resources, settings: Settings, test_user: User
):
    async with serve_in_process(create_app(settings, shared_resources), settings) as second:
        async with (
            shared_app.websocket_session(user=test_user) as on_first,
            second.websocket_session(user=test_user) as on_second,
        ):
            await on_first.subscribe("room:apps")
            await on_second.subscribe("room:apps")
            await on_first.publish("room:apps", "from first")
            await on_second.publish("room:apps", "from second")
            for client in (on_first, on_second):
                texts = {(await client.next_message())["data"] for _ in range(2)}
                assert texts == {"from first", "from second"}
        assert len(second.service.registry) == 0


async def test_another_instance_receives_everything(
    shared_app: LiveApp, settings: Settings, test_user: User
):
    other_instance = await Resources.open(settings)
    try:
        async with serve_in_process(create_app(settings, other_instance), settings) as other:
            assert other_instance.bus.group != shared_app.service.resources.bus.group
            async with (
                shared_app.websocket_session(user=test_user) as here,
                other.websocket_session(user=test_user) as there,
            ):
                await there.subscribe("room:instances")
                await here.publish("room:instances", "across")
                assert (await there.next_message())["data"] == "across"
    finally:
        await other_instance.close()
    groups = await shared_app.service.resources.redis.xinfo_groups(other_instance.bus.stream)
    assert other_instance.bus.group not in {group["name"] for group in groups}


async def test_app_that_owns_no_resources_opens_and_closes_its_own(settings: Settings):
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        resources = app.state.service.resources
        assert await resources.redis.ping()
    assert resources.db.closed


async def test_bus_reconnects_when_redis_drops_its_connection(
    ws_session: WsClient, shared_resources: Resources, caplog: pytest.LogCaptureFixture
):
    await ws_session.subscribe("room:reconnect")
    redis = shared_resources.redis
    own_name = await redis.client_getname()
    readers = [
        client
        for client in await redis.client_list()
        if client["name"] == own_name and client["cmd"] == "xreadgroup"
    ]
    assert readers, "the bus reader should be blocked in XREADGROUP"
    for reader in readers:
        await redis.client_kill_filter(_id=reader["id"])
    await ws_session.publish("room:reconnect", "after the drop")
    assert (await ws_session.next_message())["data"] == "after the drop"
    assert "bus lost Redis" in caplog.text
