"""The harness's run-level hooks, apart from the fixtures a team reads and extends.

The xdist controller (or the lone process without xdist) decides the run's services, id and
signing key once and hands them to each worker (`pytest_configure_node`); it cleans up after a
worker that crashed (`pytest_testnodedown`) and gathers the workers' reports into the "fixture
stack" summary. Without xdist, a stand-in provides xdist's `worker_id` fixture ("master").
"""

import os
from collections.abc import Generator

import pytest

from . import report, run


class WithoutXdist:
    """What pytest-xdist would provide, for runs with `-p no:xdist`."""

    @pytest.fixture(scope="session")
    @classmethod
    def worker_id(cls) -> str:
        """The name xdist gives a run without workers."""
        return "master"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--app-scope",
        choices=("session", "function"),
        default=os.environ.get("HARNESS_APP_SCOPE", "session"),
        help="build Resources and the app once per worker (session) or per test (function)",
    )


def pytest_configure(config: pytest.Config) -> None:
    run.start(config)
    config.pluginmanager.register(report.FixtureTimer(), "harness-fixture-timer")
    if not config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(WithoutXdist(), "harness-without-xdist")


def pytest_unconfigure(config: pytest.Config) -> None:
    run.stop(config)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: object) -> None:
    run.hand_to_worker(node)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    report.collect(node)
    if error is not None:
        run.clean_up_crashed_worker(node)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    test_report = yield
    report.count(item.config, test_report)
    return test_report


def pytest_sessionfinish(session: pytest.Session) -> None:
    report.finish(session.config, run.summary(session.config))


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    lines = report.summary_lines(config, run.summary(config))
    if lines:
        terminalreporter.section("fixture stack")
        for line in lines:
            terminalreporter.write_line(line)
