"""A throwaway PgBouncer in transaction mode in front of the run's Postgres, on a free port."""

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.template_harness import harness_module

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
# Debian installs it under sbin, which is not on every user's PATH.
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])


class PgBouncer:
    """A running PgBouncer: `url` reaches the database `direct_url` names, through it. A test of
    outages may stop it, as its operator or a crash would, and start it again on its port."""

    def __init__(self, command: list[str], home: Path, url: str, direct_url: str, admin_url: str):
        self.url = url
        self.direct_url = direct_url
        self.admin_url = admin_url
        self.log = home / "pgbouncer.log"
        self._command = command
        self._home = home
        self._process: subprocess.Popen[bytes] | None = None

    def harness_environment(self) -> dict[str, str]:
        """The variables that send a generated suite's harness through this PgBouncer."""
        return {
            "TEST_DATABASE_URL": self.url,
            "TEST_DATABASE_POOLER": "transaction",
            "TEST_DATABASE_DIRECT_URL": self.direct_url,
        }

    def stats(self, database: str) -> dict[str, int]:
        """PgBouncer's counters for `database` (SHOW STATS on its admin console)."""
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            cursor = conn.cursor()
            cursor.execute("SHOW STATS", prepare=False)
            names = [column.name for column in cursor.description or []]
            rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        [row] = [row for row in rows if row["database"] == database]
        return {name: int(value) for name, value in row.items() if name.startswith("total_")}

    def start(self) -> None:
        """Start it on its port; return once it answers."""
        self._process = subprocess.Popen(
            self._command, cwd=self._home, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        self._wait_until_it_answers(self._process)

    def stop(self, how: signal.Signals = signal.SIGTERM) -> None:
        """Stop it with `how`, if it runs: SIGTERM and SIGINT are PgBouncer's immediate and
        safe shutdowns, SIGKILL a crash; return once it has exited."""
        process, self._process = self._process, None
        if process is None:
            return
        process.send_signal(how)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    @contextlib.contextmanager
    def outage(self, how: signal.Signals) -> Iterator[None]:
        """Stopped with `how` for the block, then started again on the same port."""
        self.stop(how)
        try:
            yield
        finally:
            self.start()

    def _wait_until_it_answers(self, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited with {process.returncode}: {self._tail()}")
            try:
                with psycopg.connect(self.url, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"pgbouncer did not answer: {self._tail()}") from None
            time.sleep(0.1)

    def _tail(self) -> str:
        try:
            return self.log.read_text(encoding="utf-8")[-2000:]
        except OSError:
            return "(no log)"


def find_pgbouncer() -> str | None:
    return shutil.which("pgbouncer", path=SEARCH_PATH)


@contextlib.contextmanager
def pgbouncer_for_the_run() -> Iterator[PgBouncer]:
    """A PgBouncer of its own in front of the run's Postgres (TEST_DATABASE_URL); the test
    skips where none is installed."""
    program = find_pgbouncer()
    if program is None:
        pytest.skip("no PgBouncer here: apt-get install pgbouncer (.ci/run does)")
    with pgbouncer_in_front(program, os.environ["TEST_DATABASE_URL"]) as bouncer:
        yield bouncer


@contextlib.contextmanager
def pgbouncer_in_front(program: str, direct_url: str) -> Iterator[PgBouncer]:
    """PgBouncer (pool_mode = transaction, trust auth) in front of `direct_url`'s server,
    with its config, pid file and log in a directory of its own; stopped and removed after."""
    target = conninfo_to_dict(direct_url)
    user = str(target.get("user", "postgres"))
    embedded = harness_module("embedded")
    # PgBouncer refuses to run as root, as Postgres does: it runs as embedded Postgres would.
    runner = embedded._server_user()
    home = Path(tempfile.mkdtemp(prefix="template-pgbouncer-", dir="/tmp"))
    port = embedded.free_port()
    try:
        if runner is not None:
            os.chown(home, runner.pw_uid, runner.pw_gid)
        (home / "users.txt").write_text(f'"{user}" ""\n', encoding="utf-8")
        (home / "pgbouncer.ini").write_text(_config(home, port, user, target), encoding="utf-8")
        command = [program, *(["-u", runner.pw_name] if runner else []), "pgbouncer.ini"]
        bouncer = PgBouncer(
            command,
            home,
            url=make_conninfo(direct_url, host="127.0.0.1", port=str(port)),
            direct_url=direct_url,
            admin_url=make_conninfo(
                "", host="127.0.0.1", port=str(port), user=user, dbname="pgbouncer"
            ),
        )
        try:
            bouncer.start()
            yield bouncer
        finally:
            bouncer.stop()
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _config(home: Path, port: int, user: str, target: dict[str, object]) -> str:
    server = " ".join(
        f"{key}={target[key]}" for key in ("host", "port", "dbname") if target.get(key)
    )
    return f"""[databases]
* = {server}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {home}/users.txt
admin_users = {user}
pool_mode = transaction
default_pool_size = 20
max_client_conn = 500
pidfile = {home}/pgbouncer.pid
logfile = {home}/pgbouncer.log
"""
