"""The generated suite, run for real under xdist against Postgres and Redis, and proven isolated."""

import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from packaging.requirements import Requirement

from tests.generated_runs import (
    MIN_GENERATED_TESTS,
    check_run,
    clean_environment,
    collected_ids,
    coverage_total,
    finish,
    leftovers,
    make_pytest_arguments,
    passed_count,
    run_make,
    start_suite,
)

MAKE_TEST_TIMEOUT_S = 900
# pytest-randomly's seeds for the two orders the suite is run in.
SEEDS = (1, 2)
pytestmark = pytest.mark.xdist_group("generated-suite")


@pytest.fixture(scope="module")
def project(bake: Callable[..., Path]) -> Path:
    """The default bake, shared read-only by this module's tests."""
    return bake()


@dataclass(frozen=True)
class SuiteRun:
    """A finished run of the generated suite: the project, its output and report."""

    project: Path
    output: str
    report: dict[str, Any]


@dataclass(frozen=True)
class RunsAtOnce:
    """Two runs of an otel bake's suite, started at once and each checked to pass and leave
    nothing: xdist_run as its make cov runs it, on two workers, in the first random order;
    lone_run without xdist, building its app per test (--app-scope=function), in the second."""

    xdist_run: SuiteRun
    lone_run: SuiteRun


# Session-scoped: a module's fixture is torn down whenever xdist hands the worker a test of
# another module in between, which it does, and this one would run the suites again.
@pytest.fixture(scope="session")
def runs_at_once(bake: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> RunsAtOnce:
    """The two runs of RunsAtOnce; the tests below each read a different part of them."""
    # With tracing, so that its tests run too: `make test` below runs a default bake under xdist.
    baked = bake(tracing="otel")
    # xdist_run in a copy, which coverage writes into.
    copy = tmp_path_factory.mktemp("xdist-run") / baked.name
    shutil.copytree(baked, copy)
    reports = tmp_path_factory.mktemp("reports")
    cov_arguments = make_pytest_arguments(copy, "cov", "WORKERS=2")
    xdist = start_suite(
        copy, *cov_arguments, f"--randomly-seed={SEEDS[0]}", report=reports / "xdist.json"
    )
    lone = start_suite(
        baked,
        *("-p", "no:xdist", "--app-scope=function", f"--randomly-seed={SEEDS[1]}"),
        report=reports / "lone.json",
    )
    # Both are waited for, even where the first overran, before either is checked: a failing
    # one never leaves the other running into the next test.
    try:
        xdist_result = finish(xdist)
    finally:
        lone_result = finish(lone)
    return RunsAtOnce(
        xdist_run=SuiteRun(
            copy, xdist_result.stdout, check_run(xdist_result, reports / "xdist.json")
        ),
        lone_run=SuiteRun(baked, lone_result.stdout, check_run(lone_result, reports / "lone.json")),
    )


@pytest.fixture(scope="session")
def xdist_run(runs_at_once: RunsAtOnce) -> SuiteRun:
    """The run under make cov's arguments on two workers."""
    return runs_at_once.xdist_run


@pytest.fixture(scope="session")
def lone_run(runs_at_once: RunsAtOnce) -> SuiteRun:
    """The run without xdist, an app per test."""
    return runs_at_once.lone_run


def test_generated_suite_runs_under_xdist_with_a_namespace_per_worker(xdist_run: SuiteRun):
    workers = xdist_run.report["workers"]
    run_id = xdist_run.report["run_id"]
    assert sorted(workers) == ["gw0", "gw1"]
    assert all(worker["passed"] > 0 for worker in workers.values()), workers
    schemas = {worker["schema"] for worker in workers.values()}
    prefixes = {worker["prefix"] for worker in workers.values()}
    assert len(schemas) == len(prefixes) == 2
    for name, worker in workers.items():
        assert worker["schema"].startswith(f"test_{run_id}_{name}_")
        assert worker["prefix"] == f"test:{run_id}:{name}:"


def test_make_cov_meets_its_floor_and_measures_the_serve_process(xdist_run: SuiteRun):
    # The run met make cov's floor, which is no lower than the 90% the suite is held to.
    pyproject = tomllib.loads((xdist_run.project / "pyproject.toml").read_text(encoding="utf-8"))
    fail_under = pyproject["tool"]["coverage"]["report"]["fail_under"]
    assert 90 <= fail_under <= coverage_total(xdist_run.output)
    # The serve process that test_lifecycle starts is measured too: no other test runs __main__.py.
    [main] = [
        item
        for item in ElementTree.parse(xdist_run.project / "coverage.xml").iter("class")
        if item.get("name") == "__main__.py"
    ]
    assert float(main.get("line-rate", "0")) > 0


def test_the_report_says_where_the_time_goes(xdist_run: SuiteRun):
    assert "fixture stack" in xdist_run.output
    assert "worker startup (median per worker)" in xdist_run.output
    summary = xdist_run.report["summary"]
    assert summary["workers"] == 2
    startup = summary["worker_startup_ms"]
    assert all(startup[phase] > 0 for phase in ("schema_and_migrations", "resources", "server"))
    assert summary["test_setup_ms"]["p95"] >= summary["test_setup_ms"]["median"] > 0
    assert summary["slowest_fixtures"]


def test_suite_passes_in_different_random_orders(xdist_run: SuiteRun, lone_run: SuiteRun):
    """xdist_run passed in the first order, lone_run in the second (their fixtures check that):
    two different orders of the same tests."""
    orders = {
        seed: collected_ids(lone_run.project, "-p", "no:xdist", f"--randomly-seed={seed}")
        for seed in SEEDS
    }
    assert orders[SEEDS[0]] != orders[SEEDS[1]]
    assert sorted(orders[SEEDS[0]]) == sorted(orders[SEEDS[1]])


def test_generated_suite_runs_without_xdist(lone_run: SuiteRun):
    assert list(lone_run.report["workers"]) == ["master"]


def test_two_runs_at_once_never_collide(runs_at_once: RunsAtOnce):
    """Both passed and left nothing (their fixture checks that), under different ids."""
    assert runs_at_once.xdist_run.report["run_id"] != runs_at_once.lone_run.report["run_id"]


def test_app_scope_function_builds_the_app_per_test(xdist_run: SuiteRun, lone_run: SuiteRun):
    report = lone_run.report
    app_builds = sum(
        len(worker["fixtures_ms"].get("shared_app", [])) for worker in report["workers"].values()
    )
    assert app_builds > 20, "each test using the app should have built its own"
    assert report["app_scope"] == "function"
    assert xdist_run.report["app_scope"] == "session"


def run_loadtest(project: Path, tmp_path: Path, *arguments: str) -> tuple[Path, str]:
    """Run `python -m <arguments>` in a copy of the project; return the copy and the output."""
    copy = tmp_path / project.name
    shutil.copytree(project, copy)
    try:
        result = subprocess.run(
            [sys.executable, "-m", *arguments],
            cwd=copy,
            env=clean_environment(PYTHONPATH="src:tests"),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    except subprocess.TimeoutExpired as overran:
        # What it printed says which scenario it was in; the text arrives as bytes here.
        printed = b"".join(part or b"" for part in (overran.stdout, overran.stderr))
        pytest.fail(f"{arguments} overran 300 s; it printed:\n{printed.decode()[-4000:]}")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return copy, result.stdout


def test_the_flood_loadtest_reports_every_phase_and_leaves_nothing(project: Path, tmp_path: Path):
    copy, output = run_loadtest(project, tmp_path, "loadtest.flood", "--seconds", "0.5")
    results = json.loads((copy / "loadtest" / "results" / "flood.json").read_text("utf-8"))
    phases = [row for row in results.values() if isinstance(row, dict)]
    assert len(phases) == 4
    assert all(row["pings"] > 0 and row["p99_ms"] >= row["p50_ms"] for row in phases)
    assert "p99_ms" in output
    assert leftovers(results["run_id"]) == {"schemas": [], "keys": []}


def test_the_memory_loadtest_counts_what_an_idle_connection_holds(project: Path, tmp_path: Path):
    copy, output = run_loadtest(project, tmp_path, "loadtest.memory", "--connections", "40")
    results = json.loads((copy / "loadtest" / "results" / "memory.json").read_text("utf-8"))
    assert results["connections"] == 40
    # The server's own task; the sender and the 4008 closer only start when needed.
    assert round(results["tasks"]) == 1, results["objects_by_type"]
    assert results["bytes"] > 0 and results["objects"] > 0
    assert any(name.endswith("connection.py") for name in results["bytes_by_file"])
    assert "per idle connection" in output
    assert leftovers(results["run_id"]) == {"schemas": [], "keys": []}


def test_the_loadtest_holds_every_scenario_against_the_reference_and_leaves_nothing(
    project: Path, tmp_path: Path
):
    small = ["--subscribers", "20", "--messages", "5", "--connections", "50", "--seconds", "1"]
    small += ["--capacity", "60", "--timeout", "60"]
    # Every scenario, `capacity` too, which a plain `make loadtest` leaves out.
    every = ["fanout", "publishers", "latency", "held", "instances", "capacity"]
    copy, output = run_loadtest(project, tmp_path, "loadtest.run", *small, "--scenarios", *every)
    results_dir = copy / "loadtest" / "results"
    results = json.loads((results_dir / "latest.json").read_text("utf-8"))
    scenarios = results["scenarios"]
    assert list(scenarios) == every
    for name, row in scenarios.items():
        for side in ("service", "reference"):
            if "delivered" in row[side]:
                got, wanted = row[side]["delivered"].split("/")
                assert got == wanted != "0", (name, side, row[side])
    for name, count in (("held", 50), ("capacity", 60)):
        for side in ("service", "reference"):
            assert scenarios[name][side]["held"] == count, (name, side, scenarios[name][side])
            assert scenarios[name][side]["failures"] == 0
    assert scenarios["fanout"]["ratio"]["deliveries_per_s"] > 0
    # The many-channel fan-out on one node and on the cluster the load test started, each with
    # one stream and with the default 12 partitions.
    topologies = results["topologies"]
    assert list(topologies) == [
        f"{topology}, {partitions}"
        for topology in ("one node", "3-master cluster")
        for partitions in ("1 partition", "12 partitions")
    ]
    for name, row in topologies.items():
        got, wanted = row["delivered"].split("/")
        assert got == wanted != "0", (name, row)
    assert (results_dir / "latest.png").read_bytes().startswith(b"\x89PNG")
    assert "rss_per_connection_kb" in output
    assert leftovers(results["run_id"]) == {"schemas": [], "keys": []}


@pytest.mark.parametrize("answers", [{}, {"tracing": "otel"}], ids=["defaults", "otel"])
def test_template_environment_holds_every_generated_dependency(
    bake: Callable[..., Path], answers: dict[str, str]
):
    project = bake(**answers)
    pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    wanted = [
        *pyproject["project"]["dependencies"],
        *pyproject["dependency-groups"]["test"],
        *pyproject["dependency-groups"]["lint"],
    ]
    unmet = []
    for line in wanted:
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed is None or installed not in requirement.specifier:
            unmet.append(f"{line} (installed: {installed})")
    assert not unmet, "add these to requirements.txt: " + ", ".join(unmet)


def test_generated_make_test_bootstraps_its_own_environment_and_servers(
    bake: Callable[..., Path], tmp_path: Path
):
    # As on a laptop with only Python and make. No uv, and the interpreter running these tests as
    # its newest python3.X, which meets the floor of a bake for its own version. No Postgres or
    # Redis answering either: HARNESS_SERVICES=embedded ignores the ones that do here.
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / f"python{version}").symlink_to(Path(sys.base_prefix) / "bin" / f"python{version}")
    without_uv = [entry for entry in os.get_exec_path() if not (Path(entry) / "uv").exists()]
    project = bake(python_version=version)
    fresh = tmp_path / project.name
    shutil.copytree(project, fresh)
    path = os.pathsep.join([str(bin_dir), *without_uv])
    report = tmp_path / "report.json"
    result = run_make(
        fresh,
        *("test", "WORKERS=2"),
        timeout=MAKE_TEST_TIMEOUT_S,
        PATH=path,
        HARNESS_SERVICES="embedded",
        HARNESS_REPORT=str(report),
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "uv is not on PATH: installing it into .tools" in result.stdout
    assert f"Creating the virtualenv in .venv with {bin_dir}/python{version}" in result.stdout
    assert passed_count(result.stdout) >= MIN_GENERATED_TESTS
    assert json.loads(report.read_text(encoding="utf-8"))["origin"] == {
        "postgres": "embedded",
        "redis": "embedded",
    }
    assert "creating a throwaway PostgreSQL cluster" in result.stderr
    assert "starting a throwaway redis-server" in result.stderr
