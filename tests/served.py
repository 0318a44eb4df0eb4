"""A baked service's `serve`, run as a real process on a free port, with its own schema and Redis
prefix, removed again afterwards."""

import contextlib
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from psycopg import sql

from tests.generated_runs import DATABASE_URL, REDIS_URL, clean_environment

START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    """A baked service's environment, and its commands."""

    def __init__(self, project: Path, workdir: Path, port: int, **env: str) -> None:
        self.project = project
        self.package = next((project / "src").iterdir()).name
        self.port = port
        self.schema = f"served_{secrets.token_hex(4)}"
        self.prefix = f"test:served{secrets.token_hex(4)}:"
        self.key = workdir / "signing-key.json"
        self.env = {"PYTHONPATH": str(project / "src")}
        jwks = self.command("keygen", "--private-key", str(self.key))
        self.env |= {
            "DATABASE_URL": DATABASE_URL,
            "DATABASE_SCHEMA": self.schema,
            "REDIS_URL": REDIS_URL,
            "REDIS_PREFIX": self.prefix,
            "AUTH_KEYS": jwks,
            "PORT": str(self.port),
            **env,
        }

    def command(self, *args: str) -> str:
        """Run `python -m <package> ARGS` and return what it printed."""
        return subprocess.run(
            [sys.executable, "-m", self.package, *args],
            env=clean_environment(**self.env),
            capture_output=True,
            text=True,
            check=True,
            timeout=START_TIMEOUT_S,
        ).stdout.strip()

    def token_for_new_user(self, name: str) -> str:
        user_id = self.command("add-user", name)
        return self.command("token", user_id, "--private-key", str(self.key))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def wait_listening(port: int, process: subprocess.Popen[str], log: Path, what: str) -> None:
    """Return once `process` accepts connections on 127.0.0.1:`port`; fail if it exits first or
    START_TIMEOUT_S passes."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while process.poll() is None and time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    state = "exited" if process.poll() is not None else f"did not listen in {START_TIMEOUT_S}s"
    pytest.fail(f"{what} {state}:\n{log.read_text(errors='replace')[-4000:]}")


@contextlib.contextmanager
def serving(project: Path, workdir: Path, port: int | None = None, **env: str) -> Iterator[Service]:
    """The project migrated into a schema of its own and serving on `port` (a free one unless
    given), with `env` added to its environment; on exit, stopped, its schema dropped and its
    keys removed."""
    running = Service(project, workdir, port or free_port(), **env)
    running.command("migrate")
    log = workdir / "serve.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", running.package, "serve"],
            env=clean_environment(**running.env),
            stderr=stderr,
            text=True,
        )
    try:
        wait_listening(running.port, process, log, "the service")
        yield running
    finally:
        process.terminate()
        process.wait(timeout=START_TIMEOUT_S)
        with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(running.schema)))
        client = redis.Redis.from_url(REDIS_URL)
        stale = list(client.scan_iter(match=f"{running.prefix}*"))
        if stale:
            client.unlink(*stale)
        client.close()
