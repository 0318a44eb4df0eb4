"""Running a baked project's suite as a subprocess, and inspecting what a run left behind."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
import redis

DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SUITE_TIMEOUT_S = 600
MIN_GENERATED_TESTS = 40


# Under `make test`, these would make a baked project's make a sub-make, which then prints
# "Entering directory" lines around the output the tests read.
OUTER_MAKE_VARIABLES = frozenset({"MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES"})


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without the pytest, xdist, harness and make variables of the
    outer run, plus `extra`."""
    inherited = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTEST_", "HARNESS_")) and key not in OUTER_MAKE_VARIABLES
    }
    return {**inherited, **extra}


def installed_copy(project: Path, destination: Path, tools: tuple[str, ...]) -> Path:
    """A copy of the bake `project` at `destination` (bakes are shared: tests only read them)
    whose .venv and .tools hold this environment's `tools` and uv, installed as far as its
    Makefile can tell. The project is not installed: run its code with PYTHONPATH=src."""
    shutil.copytree(project, destination)
    bin_dir = destination / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for tool in tools:
        (bin_dir / tool).symlink_to(Path(sys.executable).parent / tool)
    (destination / ".venv" / ".installed").touch()
    # uv where the Makefile would install it: make wants it even with .venv up to date, and
    # installing it (test_generated_suite does that) would cost every run seconds.
    tools_dir = destination / ".tools" / "bin"
    tools_dir.mkdir(parents=True)
    (tools_dir / "uv").symlink_to(Path(sys.executable).parent / "uv")
    return destination


def suite_command(*args: str) -> list[str]:
    """The command that runs a baked suite with this environment's Python, uninstalled."""
    return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]


def collected_ids(project: Path, *args: str) -> list[str]:
    """The ids of the tests the baked suite collects with `args`, in the order it would run them."""
    result = subprocess.run(
        suite_command("--collect-only", *args),
        cwd=project,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=SUITE_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return [line for line in result.stdout.splitlines() if "::" in line]


def start_suite(project: Path, *args: str, report: Path, **env: str) -> subprocess.Popen[str]:
    """Start the baked project's suite; its JSON report goes to `report`."""
    return subprocess.Popen(
        suite_command(*args),
        cwd=project,
        env=clean_environment(HARNESS_REPORT=str(report), **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    """Wait for a started suite to end; what it printed."""
    try:
        stdout, stderr = process.communicate(timeout=SUITE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def run_suite(
    project: Path, *args: str, report: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run the baked project's suite to completion; its JSON report goes to `report`."""
    return finish(start_suite(project, *args, report=report, **env))


def run_make(
    project: Path, *args: str, timeout: float = SUITE_TIMEOUT_S, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run the baked project's own make, as a top-level make, to completion; `env` on top of
    this process's environment."""
    return subprocess.run(
        ["make", *args],
        cwd=project,
        env=clean_environment(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def make_pytest_arguments(project: Path, *make_args: str) -> list[str]:
    """The arguments the project's make (`make_args`: a target and variables) would hand pytest."""
    result = run_make(project, "-n", *make_args)
    assert result.returncode == 0, result.stderr
    program, *arguments = shlex.split(result.stdout.splitlines()[-1])
    assert (program, *arguments[:2]) == (".venv/bin/python", "-m", "pytest"), result.stdout
    return arguments[2:]


def coverage_total(output: str) -> int:
    """The total percentage on the TOTAL line of coverage's terminal report."""
    match = re.search(r"^TOTAL\s.*\s(\d+)%$", output, re.MULTILINE)
    assert match, f"no coverage total in: {output[-2000:]}"
    return int(match[1])


def passed_count(output: str) -> int:
    """The number of passed tests on pytest's closing line."""
    match = re.search(r"(\d+) passed", output.strip().splitlines()[-1])
    assert match, f"no pass count in: {output[-2000:]}"
    return int(match[1])


def leftovers(run_id: str, redis_urls: Sequence[str] = (REDIS_URL,)) -> dict[str, list[str]]:
    """Schemas and Redis keys a run with this id left behind; the keys of each server in
    `redis_urls` (every node of a cluster), each asked on its own."""
    with psycopg.connect(DATABASE_URL) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", [f"test\\_{run_id}\\_%"]
        ).fetchall()
    keys: list[str] = []
    for url in redis_urls:
        client = redis.Redis.from_url(url, decode_responses=True)
        try:
            keys += client.scan_iter(match=f"test:{run_id}:*", count=1000)
        finally:
            client.close()
    return {"schemas": [row[0] for row in rows], "keys": keys}


def check_run(
    result: subprocess.CompletedProcess[str],
    report_path: Path,
    redis_urls: Sequence[str] = (REDIS_URL,),
) -> dict[str, Any]:
    """Assert the run passed every test and left nothing behind (on each of `redis_urls`);
    return its report."""
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    report = json.loads(report_path.read_text(encoding="utf-8"))
    passed = passed_count(result.stdout)
    assert passed >= MIN_GENERATED_TESTS
    assert sum(worker["passed"] for worker in report["workers"].values()) == passed
    assert all(worker["failed"] == 0 for worker in report["workers"].values())
    assert leftovers(report["run_id"], redis_urls) == {"schemas": [], "keys": []}
    return report
