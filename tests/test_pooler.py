"""The generated suite through PgBouncer in transaction mode, as a team whose CI has one runs it."""

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.generated_runs import check_run, run_suite
from tests.pgbouncer import PgBouncer

pytestmark = pytest.mark.xdist_group("generated-suite")

STARTUP_OPTIONS_ONLY = "a transaction pooler takes no startup options"


def test_the_generated_suite_passes_through_pgbouncer_in_transaction_mode(
    bake: Callable[..., Path], pgbouncer: PgBouncer, tmp_path: Path
):
    before = pgbouncer.stats("postgres")
    report_path = tmp_path / "report.json"
    result = run_suite(
        bake(), "-n", "2", "-rs", report=report_path, **pgbouncer.harness_environment()
    )
    # Every test passed, and nothing of the run is left on Postgres or Redis.
    report = check_run(result, report_path)
    assert report["database_pooler"] == "transaction"
    workers = report["workers"]
    assert sorted(workers) == ["gw0", "gw1"]
    assert len({worker["schema"] for worker in workers.values()}) == 2
    # Skipped: only the tests of what a direct connection alone allows.
    skipped = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    assert all(STARTUP_OPTIONS_ONLY in line for line in skipped), skipped
    # And it all went through PgBouncer: thousands of transactions, schemas made and dropped.
    after = pgbouncer.stats("postgres")
    assert after["total_xact_count"] - before["total_xact_count"] > 1000


def test_a_pooled_run_without_a_direct_url_stops_naming_both(
    bake: Callable[..., Path], pgbouncer: PgBouncer, tmp_path: Path
):
    environment = pgbouncer.harness_environment()
    del environment["TEST_DATABASE_DIRECT_URL"]
    result = run_suite(bake(), "-n", "2", report=tmp_path / "report.json", **environment)
    output = result.stdout + result.stderr
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, output[-2000:]
    assert "TEST_DATABASE_POOLER=transaction needs TEST_DATABASE_DIRECT_URL" in output, output[
        -2000:
    ]
