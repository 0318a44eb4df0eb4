"""A throwaway PgBouncer in transaction mode in front of the run's Postgres, on a free port."""

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.template_harness import harness_module

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
# Debian installs it under sbin, which is not on every user's PATH.
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])


@dataclass(frozen=True, slots=True)
class PgBouncer:
    """A running PgBouncer: `url` reaches the database `direct_url` names, through it."""

    url: str
    direct_url: str
    admin_url: str
    log: Path

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


def find_pgbouncer() -> str | None:
    return shutil.which("pgbouncer", path=SEARCH_PATH)


@contextlib.contextmanager
def pgbouncer_in_front(program: str, direct_url: str) -> Iterator[PgBouncer]:
    """PgBouncer (pool_mode = transaction, trust auth) in front of `direct_url`'s server,
    with its config, pid file and log in a directory of its own; stopped and removed after."""
    target = conninfo_to_dict(direct_url)
    user, database = str(target.get("user", "postgres")), str(target.get("dbname", "postgres"))
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
        process = subprocess.Popen(
            command, cwd=home, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        try:
            bouncer = PgBouncer(
                url=make_conninfo(direct_url, host="127.0.0.1", port=str(port)),
                direct_url=direct_url,
                admin_url=make_conninfo(
                    "", host="127.0.0.1", port=str(port), user=user, dbname="pgbouncer"
                ),
                log=home / "pgbouncer.log",
            )
            _wait_until_it_answers(process, bouncer, database)
            yield bouncer
        finally:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
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


def _wait_until_it_answers(process: subprocess.Popen[bytes], bouncer: PgBouncer, db: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"pgbouncer exited with {process.returncode}: {_tail(bouncer)}")
        try:
            with psycopg.connect(bouncer.url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"pgbouncer did not answer on {db}: {_tail(bouncer)}") from None
        time.sleep(0.1)


def _tail(bouncer: PgBouncer) -> str:
    try:
        return bouncer.log.read_text(encoding="utf-8")[-2000:]
    except OSError:
        return "(no log)"
