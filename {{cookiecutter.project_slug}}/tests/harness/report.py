"""The fixture-stack report: where the suite's time goes, and what each worker used.

Workers measure their startup (schema + migrations, Resources, server), every test's setup and
teardown, every fixture's setup and the CPU time they used; they send it to the controller
through `workeroutput`. The controller (or the lone process of a run without xdist) prints a
summary and, when HARNESS_REPORT names a file, writes everything there as JSON, with its own
CPU time apart from the workers'.
"""

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

REPORT_ENV = "HARNESS_REPORT"
WORKER_OUTPUT_KEY = "harness_report"
# Worker startup, phase by phase, is the setup time of these fixtures.
STARTUP_FIXTURES = {
    "schema_and_migrations": "worker_db_schema",
    "resources": "shared_resources",
    "server": "shared_app",
}
SLOWEST_FIXTURES = 5

Record = dict[str, Any]
_this_worker = pytest.StashKey[Record]()
_all_workers = pytest.StashKey[dict[str, Record]]()


def _own(config: pytest.Config) -> Record:
    return config.stash.setdefault(
        _this_worker,
        {
            "passed": 0,
            "failed": 0,
            "setup_ms": [],
            "teardown_ms": [],
            "fixtures_ms": {},
        },
    )


def record(config: pytest.Config, **facts: Any) -> None:
    """Note facts about this worker: its name, schema, prefix."""
    _own(config).update(facts)


class FixtureTimer:
    """Times every fixture's setup. A plugin rather than a conftest hook, because conftest
    hooks only see the fixtures of their own directory, not the session-scoped ones."""

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(
        self, fixturedef: pytest.FixtureDef[object], request: pytest.FixtureRequest
    ) -> object:
        started = time.perf_counter()
        try:
            return (yield)
        finally:
            timings = _own(request.config)["fixtures_ms"]
            timings.setdefault(fixturedef.argname, []).append(_ms_since(started))


def count(config: pytest.Config, report: pytest.TestReport) -> None:
    """Record a test phase: its duration, and the outcome once per test."""
    own = _own(config)
    if report.when in ("setup", "teardown"):
        own[f"{report.when}_ms"].append(report.duration * 1000)
    if report.when == "call" or (report.when == "setup" and report.failed):
        if report.passed:
            own["passed"] += 1
        elif report.failed:
            own["failed"] += 1


def collect(node: Any) -> None:
    """On the controller: keep the record a finished worker sent."""
    sent = getattr(node, "workeroutput", {}).get(WORKER_OUTPUT_KEY)
    if sent is not None:
        node.config.stash.setdefault(_all_workers, {})[node.workerinput["workerid"]] = sent


def finish(config: pytest.Config, run: dict[str, Any]) -> None:
    """Send this worker's record to the controller, or write the run's report."""
    own = config.stash.get(_this_worker, None)
    if own is not None:
        own["cpu_s"] = round(time.process_time(), 3)
    if hasattr(config, "workeroutput"):
        if own is not None:
            config.workeroutput[WORKER_OUTPUT_KEY] = own
        return
    path = os.environ.get(REPORT_ENV)
    if path:
        records = workers(config)
        # Under xdist this process is only the controller; without, it is the lone worker.
        controller = round(time.process_time(), 3) if _all_workers in config.stash else None
        report = {
            **run,
            "workers": records,
            "summary": summarize(records),
            "controller_cpu_s": controller,
        }
        Path(path).write_text(json.dumps(report, indent=2, sort_keys=True), encoding="utf-8")


def workers(config: pytest.Config) -> dict[str, Record]:
    """Every worker's record: those sent to the controller, or this process's own."""
    sent = config.stash.get(_all_workers, {})
    own = config.stash.get(_this_worker, None)
    if own is not None and not sent:
        return {own.get("worker", "master"): own}
    return dict(sent)


def summarize(records: dict[str, Record]) -> dict[str, Any]:
    """Medians and 95th percentiles over the run."""
    setups = [ms for record in records.values() for ms in record["setup_ms"]]
    teardowns = [ms for record in records.values() for ms in record["teardown_ms"]]
    startup = {
        phase: _median([sum(r["fixtures_ms"].get(fixture, [])) for r in records.values()])
        for phase, fixture in STARTUP_FIXTURES.items()
    }
    fixtures: dict[str, list[float]] = {}
    for record in records.values():
        for name, timings in record["fixtures_ms"].items():
            fixtures.setdefault(name, []).extend(timings)
    slowest = sorted(fixtures.items(), key=lambda item: sum(item[1]), reverse=True)
    return {
        "workers": len(records),
        "tests": sum(record["passed"] + record["failed"] for record in records.values()),
        "worker_startup_ms": {**startup, "total": sum(startup.values())},
        "test_setup_ms": _spread(setups),
        "test_teardown_ms": _spread(teardowns),
        "workers_cpu_s": round(sum(record.get("cpu_s", 0.0) for record in records.values()), 3),
        "slowest_fixtures": [
            {"fixture": name, "total_ms": round(sum(t), 1), "calls": len(t)}
            for name, t in slowest[:SLOWEST_FIXTURES]
        ],
    }


def summary_lines(config: pytest.Config, run: dict[str, Any]) -> list[str]:
    """The terminal summary: one screenful saying where the time went."""
    records = workers(config)
    if not records:
        return []
    summary = summarize(records)
    startup = summary["worker_startup_ms"]
    setup, teardown = summary["test_setup_ms"], summary["test_teardown_ms"]
    origin = ", ".join(f"{name} {where}" for name, where in run["origin"].items())
    return [
        f"run {run['run_id']}: {summary['workers']} worker(s), {summary['tests']} tests;"
        f" services: {origin}; app scope: {run['app_scope']}",
        f"worker startup (median per worker): {startup['total']:.0f} ms ="
        f" schema + migrations {startup['schema_and_migrations']:.0f}"
        f" + Resources {startup['resources']:.0f} + server {startup['server']:.0f}",
        f"per test: setup median {setup['median']:.1f} ms, p95 {setup['p95']:.1f};"
        f" teardown median {teardown['median']:.1f} ms, p95 {teardown['p95']:.1f}",
        "slowest fixtures: "
        + ", ".join(
            f"{f['fixture']} {f['total_ms']:.0f} ms/{f['calls']}x"
            for f in summary["slowest_fixtures"]
        ),
    ]


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def _spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {"median": 0.0, "p95": 0.0}
    ordered = sorted(values)
    return {
        "median": round(statistics.median(ordered), 2),
        "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2),
    }
