"""The run report: what each worker used and ran, as JSON at the path in HARNESS_REPORT.

Workers send their record to the xdist controller through `workeroutput`; the controller (or the
single process of a run without xdist) writes one file for the whole run.
"""

import json
import os
from pathlib import Path
from typing import Any

import pytest

REPORT_ENV = "HARNESS_REPORT"
WORKER_OUTPUT_KEY = "harness"

Record = dict[str, Any]
_this_worker = pytest.StashKey[Record]()
_all_workers = pytest.StashKey[dict[str, Record]]()


def _own(config: pytest.Config) -> Record:
    return config.stash.setdefault(_this_worker, {"passed": 0, "failed": 0})


def record(config: pytest.Config, **fields: Any) -> None:
    """Add facts about this worker (its schema, prefix, ...) to its record."""
    _own(config).update(fields)


def count(config: pytest.Config, report: pytest.TestReport) -> None:
    """Count a test's outcome once: at its call, or at a setup that failed."""
    if report.when == "call" or (report.when == "setup" and report.failed):
        counts = _own(config)
        if report.passed:
            counts["passed"] += 1
        elif report.failed:
            counts["failed"] += 1


def collect(node: Any) -> None:
    """On the controller: keep the record a worker sent when it finished."""
    sent = getattr(node, "workeroutput", {}).get(WORKER_OUTPUT_KEY)
    if sent is not None:
        workers = node.config.stash.setdefault(_all_workers, {})
        workers[node.workerinput["workerid"]] = sent


def finish(config: pytest.Config, run_id: str) -> None:
    """Hand the record to the controller, or write the report if this process is the run."""
    own = config.stash.get(_this_worker, None)
    if hasattr(config, "workeroutput"):
        if own is not None:
            config.workeroutput[WORKER_OUTPUT_KEY] = own
        return
    path = os.environ.get(REPORT_ENV)
    if not path:
        return
    workers = config.stash.get(_all_workers, {})
    if own is not None:
        workers = {**workers, own.get("worker", "master"): own}
    report = {"run_id": run_id, "workers": workers}
    Path(path).write_text(json.dumps(report, indent=2, sort_keys=True), encoding="utf-8")
