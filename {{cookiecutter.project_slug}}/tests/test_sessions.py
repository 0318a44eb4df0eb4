"""The server-side session registry: what it records, and that a disconnect drains it."""

from {{ cookiecutter.package_name }}.protocol import CloseCode
from {{ cookiecutter.package_name }}.sessions import SessionRegistry

from harness.server import LiveApp, User


async def test_disconnect_drains_session(shared_app: LiveApp, test_user: User):
    registry = shared_app.service.registry
    async with shared_app.websocket_session(user=test_user) as ws:
        await ws.subscribe("trip:42")
        assert len(registry.sessions_of(test_user.id)) == 1
        assert len(registry.subscribers("trip:42")) == 1
        await ws.connection.close()
    assert not registry.sessions_of(test_user.id)
    assert not registry.subscribers("trip:42")


async def test_abrupt_disconnect_drains_session(shared_app: LiveApp, test_user: User):
    registry = shared_app.service.registry
    async with shared_app.websocket_session(user=test_user) as ws:
        await ws.subscribe("trip:abrupt")
        session = next(iter(registry.sessions_of(test_user.id)))
        ws.connection.transport.abort()
        await shared_app.wait_drained(session.id)
    assert not registry.sessions_of(test_user.id)
    assert not registry.subscribers("trip:abrupt")


async def test_registry_counts_each_live_session(shared_app: LiveApp, test_user: User):
    registry = shared_app.service.registry
    async with shared_app.websocket_session(user=test_user):
        async with shared_app.websocket_session(user=test_user):
            assert len(registry.sessions_of(test_user.id)) == 2
        assert len(registry.sessions_of(test_user.id)) == 1


def test_drain_forgets_every_subscription():
    registry = SessionRegistry()
    session = registry.open("u1", queue_size=4)
    for channel in ("a", "b", "c"):
        registry.subscribe(session, channel)
    registry.drain(session)
    assert len(registry) == 0
    assert all(not registry.subscribers(channel) for channel in ("a", "b", "c"))
    assert session.drained.is_set()


def test_full_queue_drops_its_frames_and_flags_a_slow_consumer():
    registry = SessionRegistry()
    session = registry.open("u1", queue_size=2)
    registry.subscribe(session, "news")
    for n in range(3):
        registry.deliver("news", n, f"frame {n}")
    assert session.overflowed.is_set()
    assert session.outgoing.empty()
    assert session.dropped == 2


def test_close_comes_after_the_frames_already_queued():
    session = SessionRegistry().open("u1", queue_size=4)
    session.send("pending")
    session.close(CloseCode.SERVICE_RESTART)
    queued = [session.outgoing.get_nowait() for _ in range(session.outgoing.qsize())]
    assert queued == ["pending", CloseCode.SERVICE_RESTART]
    assert not session.overflowed.is_set()


def test_held_back_messages_wait_for_the_replay_to_finish():
    session = SessionRegistry().open("u1", queue_size=4)
    session.held_back["news"] = []
    session.deliver(7, "news", "live frame")
    assert session.outgoing.empty()
    assert session.held_back["news"] == [(7, "live frame")]
