"""The generated suite through PgBouncer in transaction mode, as a team whose CI has one runs it."""

import contextlib
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.generated_runs import check_run, finish, run_suite, start_suite
from tests.pgbouncer import PgBouncer, pgbouncer_for_the_run

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

RESTARTED_TEST = '''
import asyncio
import contextlib
import dataclasses
import os
import uuid
from pathlib import Path

import pytest

from harness.live import serve_instance

PUBLISHERS = 3
FAULTS = Path(os.environ["PGBOUNCER_FAULTS"])
EVENTS, OVER = FAULTS / "events", FAULTS / "over"
# The template's test restarts PgBouncer three times, each once this instance publishes.
RUN_TIMEOUT_S = 200


def record(event: str) -> None:
    """Tell the template's test what a publish got: its cue to restart PgBouncer, and that
    the service recovered."""
    with EVENTS.open("a", encoding="utf-8") as events:
        events.write(event + "\\n")


@pytest.mark.timeout(RUN_TIMEOUT_S + 30)
async def test_pgbouncer_restarts_under_publish_load_lose_no_acked_message(settings, make_user):
    instance = dataclasses.replace(
        settings,
        # Short, so a request that meets PgBouncer down is answered soon.
        database_timeout_s=0.5,
        instance_id=f"restart-{uuid.uuid4().hex[:8]}",
        publish_limit=1_000_000,
        request_rate=1_000_000.0,
    )
    channel = f"room:restart-{uuid.uuid4().hex[:8]}"
    reader, resumer = await make_user("reader"), await make_user("resumer")
    writers = [await make_user(f"writer{n}") for n in range(PUBLISHERS)]

    async def publish(ws):
        replies = []
        while not OVER.exists():
            reply = await ws.request("publish", channel=channel, data=len(replies))
            if reply["type"] != "ack":
                assert (reply["type"], reply["code"]) == ("error", "unavailable"), reply
            replies.append(reply)
            record(reply["type"])
        return replies

    async with asyncio.timeout(RUN_TIMEOUT_S), serve_instance(instance) as live:
        async with live.websocket_session(user=reader) as subscriber:
            start = (await subscriber.subscribe(channel))["position"]
            async with contextlib.AsyncExitStack() as sessions:
                publishers = [
                    await sessions.enter_async_context(live.websocket_session(user=writer))
                    for writer in writers
                ]
                # A session closed by an outage would raise here: each request must be answered.
                replied = await asyncio.gather(*(publish(ws) for ws in publishers))
            outcomes = [reply for replies in replied for reply in replies]
            acked = sorted(reply["offset"] for reply in outcomes if reply["type"] == "ack")
            refused = sum(reply["type"] == "error" for reply in outcomes)
            assert refused > 0, "the restarts met no publish"
            # Every publisher was served again after the last restart, on the same instance.
            assert all(replies[-1]["type"] == "ack" for replies in replied)
            delivered = [(await subscriber.next_message(channel))["offset"]]
            while delivered[-1] < acked[-1]:
                delivered.append((await subscriber.next_message(channel))["offset"])
        # Each offset once, in order, every acked one among them; a refused publish whose commit
        # went through before PgBouncer went away is delivered too, never lost halfway.
        assert delivered == list(range(1, acked[-1] + 1))
        assert set(acked) <= set(delivered)
        assert len(delivered) - len(acked) <= refused
        async with live.websocket_session(user=resumer) as resumed:
            ack = await resumed.subscribe(channel, since=start)
            assert ack["recovered"] is True, ack
            replayed = [m["offset"] for m in await resumed.messages(len(delivered), channel)]
        assert replayed == delivered
'''
# Acks the service must give between the restarts: it publishes, then publishes again.
ACKS_BETWEEN_RESTARTS = 30
# Three restarts and the recoveries between them, on a loaded machine.
FAULT_TIMEOUT_S = 60.0


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
    reconnecting = bake_with_test(bake(), tmp_path, RECONNECTING_TEST)
    result = run_suite(
        reconnecting.parent.parent,
        *("-p", "no:xdist", str(reconnecting)),
        report=tmp_path / "report.json",
        PGBOUNCER_ADMIN_URL=pgbouncer.admin_url,
        **pgbouncer.harness_environment(),
    )
    assert_one_passed(result)


def bake_with_test(baked: Path, tmp_path: Path, test: str) -> Path:
    """A copy of the bake `baked` in `tmp_path`, with `test` as one more test file, last in file
    order; that file."""
    project = tmp_path / "project"
    shutil.copytree(baked, project)
    path = project / "tests" / "test_zz_pgbouncer.py"
    path.write_text(test, encoding="utf-8")
    return path


def assert_one_passed(result: subprocess.CompletedProcess[str]) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "1 passed" in result.stdout.splitlines()[-1], output[-2000:]


class SuiteEnded(Exception):
    """The suite stopped before the restarts were over."""


@pytest.fixture
def own_pgbouncer() -> Iterator[PgBouncer]:
    """A PgBouncer of the test's own, which it stops and starts: never the session's."""
    with pgbouncer_for_the_run() as bouncer:
        yield bouncer


def test_pgbouncer_restarts_under_publish_load_lose_no_acked_message(
    bake: Callable[..., Path], own_pgbouncer: PgBouncer, tmp_path: Path
):
    restarted = bake_with_test(bake(), tmp_path, RESTARTED_TEST)
    faults = tmp_path / "faults"
    faults.mkdir()
    events = faults / "events"
    suite = start_suite(
        restarted.parent.parent,
        *("-p", "no:xdist", str(restarted)),
        report=tmp_path / "report.json",
        PGBOUNCER_FAULTS=str(faults),
        **own_pgbouncer.harness_environment(),
    )

    def count(event: str) -> int:
        try:
            return events.read_text(encoding="utf-8").split().count(event)
        except FileNotFoundError:
            return 0

    def until(event: str, at_least: int, what: str) -> None:
        """Wait until the suite has recorded `at_least` publishes answered `event`."""
        deadline = time.monotonic() + FAULT_TIMEOUT_S
        while count(event) < at_least:
            if suite.poll() is not None:
                raise SuiteEnded(what)
            assert time.monotonic() < deadline, f"{what}: not within {FAULT_TIMEOUT_S:g} s"
            time.sleep(0.05)

    try:
        # Its output, asserted below, says why it ended early.
        with contextlib.suppress(SuiteEnded):
            until("ack", ACKS_BETWEEN_RESTARTS, "publishing starts")
            # An immediate shutdown, a safe one (PAUSE, then SHUTDOWN), and a crash.
            for how in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
                with own_pgbouncer.outage(how):
                    until("error", count("error") + 1, f"a publish refused after {how.name}")
                resumed = count("ack") + ACKS_BETWEEN_RESTARTS
                until("ack", resumed, f"publishing resumes after {how.name}")
    finally:
        (faults / "over").touch()
        result = finish(suite)
    assert_one_passed(result)
