"""The generated harness when things go wrong: crashes, leaks, dead services."""

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.generated_runs import (
    REDIS_URL,
    SUITE_TIMEOUT_S,
    check_run,
    clean_environment,
    leftovers,
    passed_count,
    run_suite,
    suite_command,
)

# Enough of the suite for the runs that need some of it, not all: over 40 tests (check_run's
# minimum), each using the app and the worker's schema and prefix.
A_FEW_FILES = ("tests/test_isolation.py", "tests/test_channels.py", "tests/test_protocol.py")

# Runs of generated suites share this xdist group, so one test's reaper never races another
# test's deliberately leaked namespaces.
pytestmark = pytest.mark.xdist_group("generated-suite")

CRASHING_TEST = '''
import os
import signal
from pathlib import Path


async def test_worker_dies_mid_run(ws_session, worker_id):
    """SIGKILLs the worker running it, once, after it has a schema, a server and keys."""
    await ws_session.publish("room:crash", "before the crash")
    marker = Path(os.environ["CRASH_MARKER"])
    if not marker.exists():
        marker.write_text(worker_id)
        os.kill(os.getpid(), signal.SIGKILL)
'''

RUN_KILLING_TEST = '''
import json
import os
import signal
from pathlib import Path

from harness.namespaces import redis_client_of


async def test_whole_run_dies(ws_session, run_id, run_context):
    """SIGKILLs the whole run (controller and workers) once namespaces exist, having written
    down what they are: from then on any run's reaper may take them."""
    await ws_session.publish("room:doomed", "left behind")
    with run_context.postgres.connect() as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", [f"test\\\\_{run_id}\\\\_%"]
        ).fetchall()
    client = redis_client_of(run_context.redis_url)
    keys = sum(1 for _ in client.scan_iter(match=f"test:{run_id}:*"))
    left = {"run_id": run_id, "schemas": [row[0] for row in rows], "keys": keys}
    Path(os.environ["RUN_LEFT_FILE"]).write_text(json.dumps(left))
    os.killpg(os.getpgid(0), signal.SIGKILL)
'''

LEAKING_TEST = '''
from websockets.asyncio.client import connect

from harness.wsclient import WsClient

PROTOCOLS = ["json.v1"]


async def test_leaves_a_session_open(shared_app, test_user):
    """Opens a WebSocket and never closes it: the leak guard must fail this test."""
    connection = await connect(
        f"{shared_app.url}/ws", subprotocols=[*PROTOCOLS, "bearer." + test_user.token]
    )
    await WsClient(connection).next_of_type("welcome")
'''


@pytest.fixture
def project(bake: Callable[..., Path], tmp_path: Path) -> Path:
    """A private copy of the default bake, which a test may add files to."""
    copy = tmp_path / "project"
    shutil.copytree(bake(), copy)
    return copy


def report_of(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_crashed_worker_is_cleaned_up_by_the_controller(project: Path, tmp_path: Path):
    crasher = project / "tests" / "test_zz_crash.py"
    crasher.write_text(CRASHING_TEST, encoding="utf-8")
    report = tmp_path / "report.json"
    marker = tmp_path / "crashed-worker"
    # The crasher among a few files, in random order: both workers have namespaces by the time
    # it runs, and the worker xdist starts in place of the dead one usually has tests left.
    result = run_suite(
        project, "-n", "2", *A_FEW_FILES, str(crasher), report=report, CRASH_MARKER=str(marker)
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    crashed = marker.read_text()
    assert f"worker {crashed} crashed; dropped test_" in result.stderr, output[-3000:]
    assert "1 failed" in result.stdout.splitlines()[-1], output[-3000:]
    assert leftovers(report_of(report)["run_id"]) == {"schemas": [], "keys": []}


def kill_a_run(project: Path, tmp_path: Path, **env: str) -> dict[str, Any]:
    """Run a suite (`env` on top of this process's environment) that SIGKILLs itself, controller
    and workers, once both workers may have made their namespaces; the dead run's id, schemas
    and number of keys, as the run saw them just before it died."""
    killer = project / "tests" / "test_zz_kill_run.py"
    killer.write_text(RUN_KILLING_TEST, encoding="utf-8")
    left_file = tmp_path / "run-left.json"
    killed = subprocess.run(
        # The killer and one file more, in file order: the killer comes last, so no other test is
        # cut off halfway, and both workers may have made their namespaces by then.
        suite_command("-n", "2", "-p", "no:randomly", "tests/test_health.py", str(killer)),
        cwd=project,
        env=clean_environment(RUN_LEFT_FILE=str(left_file), **env),
        capture_output=True,
        text=True,
        timeout=SUITE_TIMEOUT_S,
        start_new_session=True,
        check=False,
    )
    assert killed.returncode < 0, killed.stdout[-2000:]
    killer.unlink()
    left = json.loads(left_file.read_text(encoding="utf-8"))
    assert left["schemas"] and left["keys"], "the killed run should have left its namespaces"
    return left


@pytest.mark.parametrize("topology", ["direct", "pgbouncer"])
def test_killed_run_is_reaped_by_the_next_run(
    project: Path, tmp_path: Path, topology: str, request: pytest.FixtureRequest
):
    # Through PgBouncer the liveness locks are held on direct connections, everything else
    # goes through it: both runs, the killed one and the one that reaps it.
    through: dict[str, str] = {}
    if topology == "pgbouncer":
        through = request.getfixturevalue("pgbouncer").harness_environment()
    dead_run = kill_a_run(project, tmp_path, **through)["run_id"]

    report = tmp_path / "report.json"
    next_run = run_suite(project, "-n", "2", *A_FEW_FILES, report=report, **through)
    check_run(next_run, report)
    # The outcome, not who printed it: a run started beside this one may have reaped first.
    assert leftovers(dead_run) == {"schemas": [], "keys": []}


def test_a_run_killed_on_a_redis_cluster_is_reaped_by_a_run_on_one_node(
    project: Path, tmp_path: Path, redis_cluster: list[str]
):
    dead_run = kill_a_run(project, tmp_path, TEST_REDIS_URL=redis_cluster[0])["run_id"]

    # The next run is on the run's single Redis node: its reaper finds the dead workers' schemas
    # in the Postgres both runs share, and must unlink their keys on the cluster they used.
    next_run = run_suite(project, "-p", "no:xdist", "tests/test_health.py", report=tmp_path / "r")
    assert next_run.returncode == 0, (next_run.stdout + next_run.stderr)[-3000:]
    everywhere = [*redis_cluster, REDIS_URL]
    assert leftovers(dead_run, everywhere) == {"schemas": [], "keys": []}


def test_leak_guard_fails_the_test_that_leaks_and_no_other(project: Path, tmp_path: Path):
    leaking = project / "tests" / "test_zz_leak.py"
    leaking.write_text(LEAKING_TEST, encoding="utf-8")
    report = tmp_path / "report.json"
    # The leak first, then files whose tests use the same app and schema: the guard clears
    # what leaked, so none of them inherits it.
    result = run_suite(
        project, "-p", "no:xdist", "-p", "no:randomly", str(leaking), *A_FEW_FILES, report=report
    )
    summary = result.stdout.splitlines()[-1]
    assert result.returncode == 1
    assert "1 error" in summary and "failed" not in summary, summary
    assert "ERROR at teardown of test_leaves_a_session_open" in result.stdout
    assert "state leaked past the test's teardown: session" in result.stdout
    assert "is still registered" in result.stdout
    assert passed_count(result.stdout) >= 40


def test_unreachable_database_stops_the_run_once_with_its_url(project: Path, tmp_path: Path):
    dead_url = "postgresql://postgres@127.0.0.1:1/postgres"
    result = run_suite(project, "-n", "2", report=tmp_path / "r.json", TEST_DATABASE_URL=dead_url)
    output = result.stdout + result.stderr
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, output[-2000:]
    assert output.count(f"TEST_DATABASE_URL={dead_url} does not answer") == 1, output[-2000:]
    assert "Traceback" not in output
    assert "passed" not in output and "FAILED" not in output
