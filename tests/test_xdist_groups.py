"""The template's make test keeps the tests of one xdist group on one worker (--dist loadgroup).

The tests that run a generated suite each take both cores for tens of seconds; they share the
group "generated-suite" so that they run one after another while the other worker takes the
light tests. Should an upgrade break the grouping, they would run side by side, slower and with
their time limits at risk, and nothing else would say so.
"""

import subprocess
from pathlib import Path

from tests.generated_runs import clean_environment, suite_command

# As the Makefile's test target runs pytest.
MAKE_TEST_OPTIONS = ("-n", "2", "--dist", "loadgroup")

GROUPED_TESTS = """
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.xdist_group("together")


@pytest.mark.parametrize("n", range(6))
def test_records_its_worker(n):
    with Path(os.environ["WORKERS_FILE"]).open("a") as record:
        record.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")


@pytest.mark.parametrize("n", range(6))
def test_ungrouped(n):
    pass
"""


def test_a_group_runs_on_one_worker_under_make_tests_options(tmp_path: Path) -> None:
    (tmp_path / "test_grouped.py").write_text(GROUPED_TESTS, encoding="utf-8")
    workers = tmp_path / "workers"
    result = subprocess.run(
        suite_command(*MAKE_TEST_OPTIONS, "-p", "no:randomly", "--rootdir", str(tmp_path)),
        cwd=tmp_path,
        env=clean_environment(WORKERS_FILE=str(workers)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    recorded = workers.read_text().split()
    assert len(recorded) == 6
    assert len(set(recorded)) == 1, recorded
