"""The generated harness when things go wrong: concurrent runs, crashes, leaks, dead services."""

import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.generated_runs import (
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
import os
import signal
from pathlib import Path


async def test_whole_run_dies(ws_session, run_id):
    """SIGKILLs the whole run (controller and workers) once namespaces exist."""
    await ws_session.publish("room:doomed", "left behind")
    Path(os.environ["RUN_ID_FILE"]).write_text(run_id)
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


@dataclass(frozen=True)
class TwoRuns:
    """Two runs of the suite started at once, both checked to pass and leave nothing: the
    harness as shipped, and one building its app per test (--app-scope=function)."""

    shared: dict[str, Any]
    per_test: dict[str, Any]


# Session-scoped, so that the two tests below read one pair of runs even where xdist hands this
# worker a test of another module in between.
@pytest.fixture(scope="session")
def two_runs(bake: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> TwoRuns:
    """Two runs at once on the default bake, each on two workers."""
    project, reports = bake(), tmp_path_factory.mktemp("two-runs")
    options = {"shared": (), "per_test": ("--app-scope=function",)}
    runs = {
        name: subprocess.Popen(
            suite_command("-n", "2", *extra),
            cwd=project,
            env=clean_environment(HARNESS_REPORT=str(reports / f"{name}.json")),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, extra in options.items()
    }
    checked = {}
    for name, process in runs.items():
        stdout, stderr = process.communicate(timeout=SUITE_TIMEOUT_S)
        finished = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        checked[name] = check_run(finished, reports / f"{name}.json")
    return TwoRuns(**checked)


def test_two_runs_at_once_never_collide(two_runs: TwoRuns):
    assert two_runs.shared["run_id"] != two_runs.per_test["run_id"]


def test_app_scope_function_builds_the_app_per_test(two_runs: TwoRuns):
    report = two_runs.per_test
    app_builds = sum(
        len(worker["fixtures_ms"].get("shared_app", [])) for worker in report["workers"].values()
    )
    assert app_builds > 20, "each test using the app should have built its own"
    assert report["app_scope"] == "function"
    assert two_runs.shared["app_scope"] == "session"


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


def test_killed_run_is_reaped_by_the_next_run(project: Path, tmp_path: Path):
    killer = project / "tests" / "test_zz_kill_run.py"
    killer.write_text(RUN_KILLING_TEST, encoding="utf-8")
    run_id_file = tmp_path / "run-id"
    killed = subprocess.run(
        # The killer and one file more, in file order: the killer comes last, so no other test is
        # cut off halfway, and both workers may have made their namespaces by then.
        suite_command("-n", "2", "-p", "no:randomly", "tests/test_health.py", str(killer)),
        cwd=project,
        env=clean_environment(RUN_ID_FILE=str(run_id_file)),
        capture_output=True,
        text=True,
        timeout=SUITE_TIMEOUT_S,
        start_new_session=True,
        check=False,
    )
    assert killed.returncode < 0, killed.stdout[-2000:]
    dead_run = run_id_file.read_text()
    left = leftovers(dead_run)
    assert left["schemas"] and left["keys"], "the killed run should have left its namespaces"

    killer.unlink()
    report = tmp_path / "report.json"
    next_run = run_suite(project, "-n", "2", *A_FEW_FILES, report=report)
    check_run(next_run, report)
    # The outcome, not who printed it: a run started beside this one may have reaped first.
    assert leftovers(dead_run) == {"schemas": [], "keys": []}


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


def test_embedded_mode_starts_its_own_servers(project: Path, tmp_path: Path):
    report = tmp_path / "report.json"
    result = run_suite(project, "-n", "2", report=report, HARNESS_SERVICES="embedded")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert report_of(report)["origin"] == {"postgres": "embedded", "redis": "embedded"}
    assert "creating a throwaway PostgreSQL cluster" in result.stderr
    assert "starting a throwaway redis-server" in result.stderr
