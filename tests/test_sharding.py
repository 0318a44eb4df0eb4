"""The generated suite split across machines: pytest-split shards, each under xdist, at once on
one Postgres and one Redis."""

import json
import re
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.generated_runs import (
    collected_ids,
    leftovers,
    run_suite,
)

SPLITS = 2
# What CI passes to every shard: the pipeline's id, the same for all of them.
SHARED_SEED = "20240611"
pytestmark = pytest.mark.xdist_group("generated-suite")


@pytest.fixture(scope="module")
def project(bake: Callable[..., Path]) -> Path:
    """The default bake, shared read-only by this module's tests."""
    return bake()


@pytest.fixture(scope="module")
def suite(project: Path) -> set[str]:
    """The id of every test the whole suite holds."""
    return set(collected_ids(project, "-p", "no:randomly"))


def passed(output: str) -> list[str]:
    """The ids of the passed tests in `-rA`'s short summary, repeats kept."""
    return re.findall(r"^PASSED (.+)$", output, flags=re.MULTILINE)


def run_shard(project: Path, group: int, report: Path) -> subprocess.CompletedProcess[str]:
    """Run one shard of the suite, as a CI job does, under xdist with two workers."""
    return run_suite(
        project,
        *("-n", "2", "-rA", f"--randomly-seed={SHARED_SEED}"),
        *("--splits", str(SPLITS), "--group", str(group)),
        report=report,
    )


def test_shards_at_once_on_shared_services_run_every_test_exactly_once(
    project: Path, suite: set[str], tmp_path: Path
) -> None:
    groups = range(1, SPLITS + 1)
    reports = {group: tmp_path / f"shard{group}.json" for group in groups}
    with ThreadPoolExecutor(max_workers=SPLITS) as pool:
        results = dict(
            zip(groups, pool.map(lambda g: run_shard(project, g, reports[g]), groups), strict=True)
        )
    ran: list[str] = []
    run_ids = set()
    for group, result in results.items():
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
        report = json.loads(reports[group].read_text(encoding="utf-8"))
        run_id, workers = report["run_id"], report["workers"]
        # The shard is in the run id, and so in every schema and Redis key of the shard.
        assert re.fullmatch(rf"s{group}of{SPLITS}[0-9a-f]{{8}}", run_id)
        assert sorted(workers) == ["gw0", "gw1"]
        for name, worker in workers.items():
            assert worker["schema"].startswith(f"test_{run_id}_{name}_")
            assert worker["prefix"] == f"test:{run_id}:{name}:"
            assert worker["failed"] == 0
        shard_passed = passed(result.stdout)
        assert shard_passed, result.stdout[-2000:]
        assert sum(worker["passed"] for worker in workers.values()) == len(shard_passed)
        assert leftovers(run_id) == {"schemas": [], "keys": []}
        ran += shard_passed
        run_ids.add(run_id)
    assert len(run_ids) == SPLITS
    assert sorted(ran) == sorted(suite)


def test_shard_without_a_shared_seed_is_refused_before_running(
    project: Path, tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    result = run_suite(project, "-n", "2", "--splits", "2", "--group", "1", report=report)
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    assert "needs the same --randomly-seed=<integer> on every shard" in result.stderr
    assert not report.exists()


def test_stored_durations_time_most_of_the_suite(project: Path, suite: set[str]) -> None:
    # pytest-split gives a test it has no time for the average; a few are fine, many unbalance
    # the shards. After changing the generated tests, `make durations` at the template's root
    # refreshes the file.
    durations = json.loads((project / ".test_durations").read_text(encoding="utf-8"))
    assert all(isinstance(seconds, float) and seconds >= 0 for seconds in durations.values())
    untimed = sorted(suite - set(durations))
    assert len(untimed) <= len(suite) // 10, untimed
