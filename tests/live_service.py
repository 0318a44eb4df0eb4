"""A baked service running as a real process (`python -m <package> serve`) on a free port, with its
own Postgres schema and Redis prefix, for the template tests that talk to it as a client would."""

import json
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
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
    """A baked service, with the demo page on, and the commands that set it up."""

    def __init__(self, project: Path, workdir: Path) -> None:
        self.project = project
        self.package = next((project / "src").iterdir()).name
        self.port = free_port()
        self.schema = f"demo_{secrets.token_hex(4)}"
        self.prefix = f"test:demo{secrets.token_hex(4)}:"
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
            "SERVE_DEMO": "1",
            "ALLOWED_ORIGINS": f"http://127.0.0.1:{self.port}",
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


@contextmanager
def serving(project: Path, workdir: Path) -> Iterator[Service]:
    """`project` migrated into a schema of its own and serving until the block ends; then the
    schema and the Redis keys it made are removed."""
    running = Service(project, workdir)
    running.command("migrate")
    process = subprocess.Popen(
        [sys.executable, "-m", running.package, "serve"],
        env=clean_environment(**running.env),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if "Uvicorn running on" in json.loads(line)["message"]:
                break
        else:
            pytest.fail("the service exited before serving")
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
