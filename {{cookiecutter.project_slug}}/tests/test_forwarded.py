"""Client addresses behind a balancer: the per-IP cap and the logs take the client's address
from X-Forwarded-For only where the socket's peer is named in FORWARDED_ALLOW_IPS.

Every client here is on loopback: the balancer's sockets come from BALANCER, a client that
connects directly from DIRECT (127.0.0.1, the address uvicorn trusts unless told otherwise)."""

import contextlib
import ipaddress
import logging

import pytest

from harness.live import AppFactory, LiveApp, offer, refused_status
from harness.users import User

BALANCER = "127.0.0.2"
DIRECT = "127.0.0.1"
TRUSTED = frozenset({ipaddress.ip_network(BALANCER)})


def forwarded(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


async def refused_from(live: LiveApp, user: User, client: str, peer: str) -> int:
    """The HTTP status of a handshake from `peer` whose X-Forwarded-For names `client`."""
    return await refused_status(
        live,
        subprotocols=offer(user.token),
        additional_headers=forwarded(client),
        local_addr=(peer, 0),
    )


async def test_behind_a_trusted_balancer_the_cap_counts_each_forwarded_address(
    another_app: AppFactory, test_user: User, caplog: pytest.LogCaptureFixture
) -> None:
    clients = ["203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.1"]
    async with (
        another_app(max_connections_per_ip=2, forwarded_allow_ips=TRUSTED) as live,
        contextlib.AsyncExitStack() as held,
    ):
        for client in clients:
            session = live.websocket_session(test_user, forwarded(client), BALANCER)
            await held.enter_async_context(session)
        registry = live.service.registry
        assert [registry.count_from(client) for client in clients[:3]] == [2, 1, 1]
        assert registry.count_from(BALANCER) == 0
        with caplog.at_level(logging.INFO):
            status = await refused_from(live, test_user, "203.0.113.1", BALANCER)
    assert status == 429
    assert "203.0.113.1 has too many connections" in caplog.text


@pytest.mark.parametrize("trusted", [frozenset(), TRUSTED], ids=["none-trusted", "other-trusted"])
async def test_a_forged_x_forwarded_for_from_an_untrusted_peer_changes_nothing(
    another_app: AppFactory, test_user: User, trusted: frozenset[ipaddress.IPv4Network]
) -> None:
    async with (
        another_app(max_connections_per_ip=2, forwarded_allow_ips=trusted) as live,
        live.websocket_session(test_user, forwarded("203.0.113.1"), DIRECT),
        live.websocket_session(test_user, forwarded("203.0.113.2"), DIRECT),
    ):
        assert live.service.registry.count_from(DIRECT) == 2
        status = await refused_from(live, test_user, "203.0.113.3", DIRECT)
    assert status == 429


async def test_a_client_fault_is_logged_under_its_forwarded_address(
    another_app: AppFactory, test_user: User, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        another_app(forwarded_allow_ips=TRUSTED) as live,
        live.websocket_session(test_user, forwarded("203.0.113.7"), BALANCER) as ws,
    ):
        with caplog.at_level(logging.INFO):
            # Bytes sent as a text frame, unchecked: invalid UTF-8 on the wire.
            await ws.connection.send(b'{"type": "ping", "id": "\xff"}', text=True)
            assert await ws.closed_with() == 1007
    assert "203.0.113.7 sent invalid UTF-8" in caplog.text
