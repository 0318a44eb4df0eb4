"""The generated suite through PgBouncer in transaction mode, as a team whose CI has one runs it."""

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.generated_runs import check_run, run_suite
from tests.pgbouncer import PgBouncer

pytestmark = pytest.mark.xdist_group("generated-suite")

STARTUP_OPTIONS_ONLY = "a transaction pooler takes no startup options"

RECONNECTING_TEST = '''
import asyncio
import os

import psycopg

PUBLISHERS, EACH = 3, 30
CHANNEL = "room:reconnect"


def reconnect() -> None:
    """PgBouncer's RECONNECT: every server connection is closed once its transaction ends."""
    with psycopg.connect(os.environ["PGBOUNCER_ADMIN_URL"], autocommit=True) as admin:
        admin.execute("RECONNECT", prepare=False)


async def test_pgbouncer_reconnect_loses_no_acked_message(shared_app, make_user):
    reader, resumer = await make_user("reader"), await make_user("resumer")
    writers = [await make_user(f"writer{n}") for n in range(PUBLISHERS)]
    acked = []

    async def publish(writer, reconnect_at):
        async with shared_app.websocket_session(user=writer) as ws:
            for n in range(EACH):
                if n == reconnect_at:
                    await asyncio.to_thread(reconnect)
                acked.append((await ws.publish(CHANNEL, n))["offset"])

    async with shared_app.websocket_session(user=reader) as live:
        start = (await live.subscribe(CHANNEL))["position"]
        await asyncio.gather(*(publish(w, 10 + 5 * i) for i, w in enumerate(writers)))
        delivered = [m["offset"] for m in await live.messages(PUBLISHERS * EACH, CHANNEL)]
    assert delivered == list(range(1, PUBLISHERS * EACH + 1))
    assert sorted(acked) == delivered
    async with shared_app.websocket_session(user=resumer) as resumed:
        ack = await resumed.subscribe(CHANNEL, since=start)
        assert (ack["recovered"], ack["replayed"]) == (True, PUBLISHERS * EACH)
'''


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


def test_pgbouncer_reconnect_under_publish_load_loses_no_acked_message(
    bake: Callable[..., Path], pgbouncer: PgBouncer, tmp_path: Path
):
    project = tmp_path / "project"
    shutil.copytree(bake(), project)
    reconnecting = project / "tests" / "test_zz_reconnect.py"
    reconnecting.write_text(RECONNECTING_TEST, encoding="utf-8")
    result = run_suite(
        project,
        *("-p", "no:xdist", str(reconnecting)),
        report=tmp_path / "report.json",
        PGBOUNCER_ADMIN_URL=pgbouncer.admin_url,
        **pgbouncer.harness_environment(),
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "1 passed" in result.stdout.splitlines()[-1], output[-2000:]
