"""A baked service behind a real HAProxy in HTTP mode, adding `X-Forwarded-For` (`option
forwardfor`). With HAProxy named in FORWARDED_ALLOW_IPS the per-IP cap counts its clients, not
HAProxy; without, it counts HAProxy. Either way a client that connects directly cannot pass for
another address by sending the header itself. Each client binds a loopback source address of
its own (127.0.0.2, 127.0.0.3, ...), so the addresses differ as they would across hosts."""

import contextlib
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from tests.served import START_TIMEOUT_S, Service, free_port, serving, wait_listening

CAP = 2
HAPROXY_SOURCE = "127.0.0.1"
"""Where HAProxy's connections to the service come from: the peer the service sees."""
OPEN_TIMEOUT_S = 10.0

HAPROXY_CONFIG = """\
global
    pidfile {pidfile}
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout tunnel 30s
frontend clients
    bind 127.0.0.1:{port}
    default_backend service
backend service
    option forwardfor
    server service 127.0.0.1:{service_port}
"""


@pytest.fixture(scope="module")
def haproxy_executable() -> str:
    found = shutil.which("haproxy")
    if found is None:
        pytest.skip("no HAProxy here: apt-get install haproxy (.ci/run does)")
    return found


@contextlib.contextmanager
def haproxy(executable: str, service_port: int, workdir: Path) -> Iterator[int]:
    """HAProxy in front of 127.0.0.1:`service_port`, its config, pid file and log in `workdir`;
    yields the port it listens on, and stops it on exit."""
    port = free_port()
    config = workdir / "haproxy.cfg"
    config.write_text(
        HAPROXY_CONFIG.format(pidfile=workdir / "haproxy.pid", port=port, service_port=service_port)
    )
    log = workdir / "haproxy.log"
    with log.open("w") as output:
        # -db: in the foreground, so it is this process's child to stop.
        process = subprocess.Popen(
            [executable, "-db", "-f", str(config)], stdout=output, stderr=output, text=True
        )
    try:
        wait_listening(port, process, log, "HAProxy")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=START_TIMEOUT_S)


@dataclass(frozen=True)
class Balanced:
    """The service, HAProxy in front of it (at `balancer_port`), and a token to connect with."""

    service: Service
    balancer_port: int
    token: str

    @contextlib.contextmanager
    def session(
        self, source: str, port: int, forwarded_for: str | None = None
    ) -> Iterator[ClientConnection]:
        """A session to `port` from the loopback address `source`, once the service has welcomed
        it (and so counted it); InvalidStatus where the handshake is refused."""
        headers = {} if forwarded_for is None else {"X-Forwarded-For": forwarded_for}
        with connect(
            f"ws://127.0.0.1:{port}/ws",
            subprotocols=[Subprotocol("json.v1"), Subprotocol(f"bearer.{self.token}")],
            additional_headers=headers,
            source_address=(source, 0),
            proxy=None,
            open_timeout=OPEN_TIMEOUT_S,
        ) as connection:
            assert '"welcome"' in str(connection.recv(timeout=OPEN_TIMEOUT_S))
            yield connection

    def refused_status(self, source: str, port: int, forwarded_for: str | None = None) -> int:
        with pytest.raises(InvalidStatus) as refused, self.session(source, port, forwarded_for):
            pass
        return refused.value.response.status_code


@pytest.fixture
def balanced(
    request: pytest.FixtureRequest,
    haproxy_executable: str,
    bake: Callable[..., Path],
    tmp_path: Path,
) -> Iterator[Balanced]:
    """The default bake with MAX_CONNECTIONS_PER_IP=CAP behind HAProxy, which the service
    trusts (FORWARDED_ALLOW_IPS names HAPROXY_SOURCE) or not (FORWARDED_ALLOW_IPS unset), as
    the test's parameter says."""
    env = {"MAX_CONNECTIONS_PER_IP": str(CAP)}
    if request.param == "trusted":
        env["FORWARDED_ALLOW_IPS"] = HAPROXY_SOURCE
    with (
        serving(bake(), tmp_path, **env) as service,
        haproxy(haproxy_executable, service.port, tmp_path) as port,
    ):
        yield Balanced(service, port, service.token_for_new_user("balanced"))


@pytest.mark.parametrize("balanced", ["trusted"], indirect=True)
def test_behind_a_trusted_haproxy_the_cap_counts_each_client(balanced: Balanced):
    clients = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    through = balanced.balancer_port
    with contextlib.ExitStack() as held:
        # CAP sessions from each client: three times what HAProxy's one address could hold.
        for client in clients * CAP:
            held.enter_context(balanced.session(client, through))
        assert balanced.refused_status(clients[0], through) == 429
        # HAProxy adds its own X-Forwarded-For after the client's: the service takes the last
        # address it does not trust, so the client's own entry is no way past the cap.
        assert balanced.refused_status(clients[1], through, forwarded_for="198.51.100.1") == 429


@pytest.mark.parametrize("balanced", ["untrusted"], indirect=True)
def test_behind_an_untrusted_haproxy_the_cap_counts_haproxy(balanced: Balanced):
    through = balanced.balancer_port
    with contextlib.ExitStack() as held:
        for client in ["127.0.0.2", "127.0.0.3"]:
            held.enter_context(balanced.session(client, through))
        assert balanced.refused_status("127.0.0.4", through) == 429


@pytest.mark.parametrize(
    ("balanced", "client"),
    # Untrusted, the client connects from 127.0.0.1, which uvicorn trusts unless told otherwise.
    [("trusted", "127.0.0.2"), ("untrusted", HAPROXY_SOURCE)],
    indirect=["balanced"],
)
def test_a_forged_x_forwarded_for_sent_directly_changes_nothing(balanced: Balanced, client: str):
    direct = balanced.service.port
    with contextlib.ExitStack() as held:
        for forged in ["198.51.100.1", "198.51.100.2"]:
            held.enter_context(balanced.session(client, direct, forwarded_for=forged))
        assert balanced.refused_status(client, direct, forwarded_for="198.51.100.3") == 429
