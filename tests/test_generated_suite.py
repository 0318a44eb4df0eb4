"""The generated suite, run for real under xdist against Postgres and Redis, and proven isolated."""

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from packaging.requirements import Requirement

DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SUITE_TIMEOUT_S = 600
MAKE_TEST_TIMEOUT_S = 900
MIN_GENERATED_TESTS = 40


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without the pytest and xdist variables of the outer run."""
    inherited = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTEST_", "HARNESS_"))
    }
    return {**inherited, **extra}


def run_suite(project: Path, *args: str, report: Path) -> subprocess.CompletedProcess[str]:
    """Run the baked project's suite with this environment's Python, without installing it."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=project,
        env=clean_environment(HARNESS_REPORT=str(report)),
        capture_output=True,
        text=True,
        timeout=SUITE_TIMEOUT_S,
        check=False,
    )


def passed_count(output: str) -> int:
    """The number of passed tests on pytest's closing line."""
    match = re.search(r"(\d+) passed", output.strip().splitlines()[-1])
    assert match, f"no pass count in: {output[-2000:]}"
    return int(match[1])


def leftovers(run_id: str) -> dict[str, list[str]]:
    """Schemas and Redis keys a run with this id left behind."""
    with psycopg.connect(DATABASE_URL) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", [f"test\\_{run_id}\\_%"]
        ).fetchall()
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        keys = list(client.scan_iter(match=f"test:{run_id}:*", count=1000))
    finally:
        client.close()
    return {"schemas": [row[0] for row in rows], "keys": keys}


@pytest.fixture(scope="module")
def project(bake: Callable[..., Path]) -> Path:
    """The default bake, shared read-only by this module's tests."""
    return bake()


def check_run(result: subprocess.CompletedProcess[str], report_path: Path) -> dict[str, Any]:
    """Assert the run passed and left nothing behind; return its report."""
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    report = json.loads(report_path.read_text(encoding="utf-8"))
    passed = passed_count(result.stdout)
    assert passed >= MIN_GENERATED_TESTS
    assert sum(worker["passed"] for worker in report["workers"].values()) == passed
    assert all(worker["failed"] == 0 for worker in report["workers"].values())
    assert leftovers(report["run_id"]) == {"schemas": [], "keys": []}
    return report


def test_generated_suite_runs_under_xdist_with_a_namespace_per_worker(
    project: Path, tmp_path: Path
):
    report_path = tmp_path / "report.json"
    report = check_run(run_suite(project, "-n", "2", report=report_path), report_path)
    workers = report["workers"]
    run_id = report["run_id"]
    assert sorted(workers) == ["gw0", "gw1"]
    assert all(worker["passed"] > 0 for worker in workers.values()), workers
    schemas = {worker["schema"] for worker in workers.values()}
    prefixes = {worker["prefix"] for worker in workers.values()}
    assert len(schemas) == len(prefixes) == 2
    for name, worker in workers.items():
        assert worker["schema"].startswith(f"test_{run_id}_{name}_")
        assert worker["prefix"] == f"test:{run_id}:{name}:"


def test_generated_suite_runs_without_xdist(project: Path, tmp_path: Path):
    report_path = tmp_path / "report.json"
    report = check_run(run_suite(project, "-p", "no:xdist", report=report_path), report_path)
    assert list(report["workers"]) == ["master"]


def test_template_environment_holds_every_generated_dependency(project: Path):
    pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    wanted = [
        *pyproject["project"]["dependencies"],
        *pyproject["project"]["optional-dependencies"]["test"],
    ]
    unmet = []
    for line in wanted:
        requirement = Requirement(line)
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed is None or installed not in requirement.specifier:
            unmet.append(f"{line} (installed: {installed})")
    assert not unmet, "add these to requirements.txt: " + ", ".join(unmet)


def test_generated_make_test_bootstraps_its_own_environment(
    bake: Callable[..., Path], tmp_path: Path
):
    # The Makefile calls python<python_version>: bake for the interpreter this machine runs.
    this_python = f"{sys.version_info.major}.{sys.version_info.minor}"
    project = bake(python_version=this_python)
    fresh = tmp_path / project.name
    shutil.copytree(project, fresh)
    result = subprocess.run(
        ["make", "test", "WORKERS=2"],
        cwd=fresh,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=MAKE_TEST_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "Creating the virtualenv" in result.stdout
    assert passed_count(result.stdout) >= MIN_GENERATED_TESTS
