"""The bench itself: a tiny run produces valid results and a chart; the figures derive right."""

import json
import sysconfig
from pathlib import Path

import pytest

from bench import profiling
from bench.configs import configurations
from bench.results import CORE_CONFIGS, Run, summarize, table
from bench.run import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RATE = profiling.RATE_HZ


# Runs generated suites, whose reaper must not race other tests' deliberate leftovers.
@pytest.mark.xdist_group("generated-suite")
def test_a_tiny_bench_writes_its_results_and_chart(tmp_path: Path):
    output = tmp_path / "tiny"
    assert main(["--tests", "3", "--rounds", "1", "--output", str(output), "--profile"]) == 0
    results = json.loads(output.with_suffix(".json").read_text(encoding="utf-8"))
    assert (results["tests"], results["rounds"]) == (3, 1)
    assert all(results[f"{name}_s"] > 0 for name in CORE_CONFIGS)
    assert results["workers"] == 2
    assert results["worker_startup_ms"] > 0
    # The ratio is rounded to two decimals, its inputs to three: on a loaded machine it can be
    # near 0.4, where a relative tolerance is tighter than that rounding.
    assert results["speedup_total"] == pytest.approx(
        results["naive_s"] / results["shared_xdist_s"], abs=0.006
    )
    # The limit ran (above: limit_s), and the per-test cost is set against it.
    limit_cost = results["limit_s"] - results["floor_s"]
    if limit_cost > 0:
        assert results["per_test_vs_limit"] == pytest.approx(
            (results["shared_s"] - results["floor_s"]) / limit_cost, rel=0.05, abs=0.02
        )
    else:
        assert results["per_test_vs_limit"] is None
    assert results["per_test_vs_limit_cpu"] is None or results["per_test_vs_limit_cpu"] > 0
    assert {run["config"] for run in results["runs"]} == set(results["configs"])
    assert all(run["report"]["tests"] == 3 and run["cpu_s"] > 0 for run in results["runs"])
    # Where the CPU went: the controller only under xdist, the workers always, and the servers
    # (local here) each doing some work for the WebSocket suite.
    by_process = {name: config["cpu_s_by_process"] for name, config in results["configs"].items()}
    assert by_process["shared"]["controller"] is None
    assert by_process["shared_xdist"]["controller"] > 0
    assert all(cpu["workers"] > 0 for cpu in by_process.values())
    # A few tests may cost a server under a millisecond in one configuration, not in them all.
    for server in ("postgres", "redis"):
        assert all(cpu[server] >= 0 for cpu in by_process.values())
        assert sum(cpu[server] for cpu in by_process.values()) > 0
    assert output.with_suffix(".png").read_bytes().startswith(PNG_SIGNATURE)
    # The sampled runs: some CPU in each, and the WebSocket suite's above the floor's by library
    # (with 3 tests, mostly imports; the figures mean something at make bench's N).
    sampled = results["profile"]
    assert all(ms > 0 for ms in sampled["cpu_ms_per_test"].values())
    # py-spy's own frames, classified: pytest's start-up alone is hundreds of samples.
    for name, libraries in sampled["cpu_ms_per_test_by_library"].items():
        assert max(libraries, key=libraries.__getitem__) != "other", (name, libraries)
        assert libraries.get("pytest", 0) > 0, (name, libraries)
    # Against the floor, and against the limit: what the harness and service add to the I/O.
    for baseline in ("floor", "limit"):
        extra = sampled[f"above_{baseline}_ms_per_test"]
        assert "other" in extra
        assert sum(extra.values()) == pytest.approx(
            sampled["cpu_ms_per_test"]["shared"] - sampled["cpu_ms_per_test"][baseline], abs=0.1
        )


def _run(
    config: str, round_number: int, seconds: float, workers: int = 1, postgres: float | None = 1.0
) -> Run:
    phases = {"schema_and_migrations": 10.0, "resources": 5.0, "server": 5.0, "total": 20.0}
    report = {
        "workers": workers,
        "worker_startup_ms": phases,
        "test_setup_ms": {"median": 1.0, "p95": 2.0},
        "test_teardown_ms": {"median": 0.5, "p95": 1.0},
    }
    cpu = {"controller": None, "workers": seconds, "postgres": postgres, "redis": 0.5}
    return Run(round_number, config, seconds, seconds, 0.0, report, cpu)


def test_figures_are_medians_over_rounds_and_their_ratios():
    timings = {
        "floor": [1, 2, 9],
        "floor_xdist": [1.5, 2.5, 2.5],
        "limit": [3, 3.5, 4],
        "naive": [50, 40, 60],
        "shared": [5, 4, 6],
        "shared_xdist": [3, 2, 4],
    }
    runs = [
        _run(config, round_number, seconds, workers=2 if config == "shared_xdist" else 1)
        for config, per_round in timings.items()
        for round_number, seconds in enumerate(per_round, start=1)
    ]
    results = summarize(runs, configurations(cores=2), tests=1000, rounds=3, cores=2)
    assert [results[f"{name}_s"] for name in CORE_CONFIGS] == [2, 2.5, 3.5, 50, 5, 3]
    floor = results["configs"]["floor"]
    assert (floor["median_s"], floor["min_s"], floor["max_s"]) == (2, 1, 9)
    assert floor["per_round_s"] == [1, 2, 9]
    assert results["per_test_overhead_ms"] == 3.0
    # (shared - floor) / (limit - floor): 3 s above the floor against the limit's 1.5 s.
    assert (results["per_test_limit_ms"], results["per_test_vs_limit"]) == (1.5, 2.0)
    # The runs here used as much CPU as wall time: the same ratio from the workers' CPU.
    assert results["per_test_vs_limit_cpu"] == 2.0
    assert results["goals"]["per_test_vs_limit"] == {"goal": "<= 2.0", "met": True}
    # xdist's own cost, and the harness's per test above it on two workers.
    assert (results["xdist_overhead_s"], results["per_test_overhead_xdist_ms"]) == (0.5, 0.5)
    assert (results["speedup_sharing"], results["speedup_parallel"]) == (10.0, 1.67)
    assert results["speedup_total"] == 16.67
    assert (results["workers"], results["worker_startup_ms"]) == (2, 20.0)
    assert results["configs"]["naive"]["cpu_s_by_process"] == {
        "controller": None,
        "workers": 50,
        "postgres": 1.0,
        "redis": 0.5,
    }
    assert results["goals"]["per_test_overhead_ms"] == {"goal": "< 2.5", "met": False}
    assert results["goals"]["speedup_sharing"] == {"goal": ">= 5", "met": True}
    assert len(table(results)) > len(CORE_CONFIGS)


def test_a_subset_of_configurations_leaves_the_others_null():
    runs = [_run("shared", 1, 8.0), _run("shared_xdist", 1, 5.0, workers=2)]
    results = summarize(runs, configurations(cores=2), tests=2000, rounds=1, cores=2)
    assert (results["floor_s"], results["naive_s"]) == (None, None)
    assert results["per_test_overhead_ms"] is None
    assert (results["per_test_limit_ms"], results["per_test_vs_limit"]) == (None, None)
    assert results["per_test_vs_limit_cpu"] is None
    assert (results["xdist_overhead_s"], results["per_test_overhead_xdist_ms"]) == (None, None)
    assert (results["speedup_sharing"], results["speedup_total"]) == (None, None)
    assert results["speedup_parallel"] == 1.6
    assert set(results["goals"]) == {"worker_startup_ms", "speedup_parallel"}


def test_a_server_that_could_not_be_read_is_left_out_of_the_medians():
    runs = [_run("shared", n, 5.0, postgres=None if n == 1 else float(n)) for n in (1, 2, 3)]
    results = summarize(runs, configurations(cores=2), tests=10, rounds=3, cores=2)
    assert results["configs"]["shared"]["cpu_s_by_process"]["postgres"] == 2.5


def test_samples_are_charged_to_the_library_whose_code_ran(tmp_path: Path):
    project = tmp_path / "chat-service"
    stdlib = sysconfig.get_paths()["stdlib"]
    venv = "/v/lib/python3.12/site-packages"
    frames = {
        f"_run_once ({stdlib}/asyncio/base_events.py:1922)": "asyncio",
        f"select ({stdlib}/selectors.py:468)": "selectors",
        f"execute ({venv}/psycopg/cursor_async.py:113)": "psycopg",
        f"setup ({venv}/_pytest/fixtures.py:1005)": "pytest",
        f"handle ({project}/src/chat_service/handlers.py:49)": "service",
        f"forget_user ({project}/tests/harness/users.py:30)": "harness",
        f"test_ws ({project}/tests/bench_ws/test_bench_ws_000.py:9)": "tests",
        "_find_and_load (<frozen importlib._bootstrap>:1176)": "importlib",
        "run (/elsewhere/tool.py:3)": "other",
    }
    raw = tmp_path / "raw.txt"
    # py-spy's raw format: a line per distinct stack, outermost frame first, then its count.
    raw.write_text("".join(f"main (m.py:1);{frame} {RATE}\n" for frame in frames), "utf-8")
    by_library = profiling.cpu_ms_by_library(raw, project, tests=2)
    # RATE samples at RATE per second are one second, over two tests: 500 ms each.
    assert by_library == {library: 500.0 for library in frames.values()}


def test_above_the_floor_keeps_the_largest_and_sums_the_rest_as_other():
    floor = {"pytest": 1.0, "asyncio": 0.5}
    suite = {"pytest": 1.5, "asyncio": 4.0, "psycopg": 2.0, "jwt": 0.25, "other": 0.5}
    extra = profiling.above_floor(floor, suite)
    assert extra == {"asyncio": 3.5, "psycopg": 2.0, "pytest": 0.5, "jwt": 0.25, "other": 0.5}
    assert profiling.largest(extra, shown=2) == {"asyncio": 3.5, "psycopg": 2.0, "other": 1.25}


def test_four_cores_add_a_run_at_n_4_and_its_speed_up():
    known = configurations(cores=4)
    assert known["shared_xdist_4"].args == ("-n", "4")
    assert "shared_xdist_auto" not in known, "on 4 cores -n auto is -n 4 again"
    assert "shared_xdist_auto" in configurations(cores=16)
    assert "shared_xdist_4" not in configurations(cores=2)
    runs = [_run("shared", 1, 9.0), _run("shared_xdist_4", 1, 2.5, workers=4)]
    results = summarize(runs, known, tests=2000, rounds=1, cores=4)
    assert results["speedup_parallel_4"] == 3.6
    assert results["goals"]["speedup_parallel_4"] == {"goal": ">= 3", "met": True}
