"""`python -m bench`: bake, add the bench suites, time every configuration round by round."""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import bench
from bench import chart, profiling, suite
from bench.configs import Configuration, configurations
from bench.results import Run, summarize, table
from bench.services_cpu import postgres_cpu_s, redis_cpu_s
from tests.generated_runs import clean_environment, passed_count, suite_command

TEMPLATE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = TEMPLATE_DIR / "bench" / "results" / "latest"


class BenchFailed(RuntimeError):
    """A configuration did not pass all its tests: its timing would mean nothing."""


def parse_args(argv: Sequence[str] | None, known: dict[str, Configuration]) -> argparse.Namespace:
    """The command line; --configs becomes the list of Configurations to run."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=bench.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--tests", type=int, default=475, help="N, tests per suite (475)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each configuration (3)")
    parser.add_argument(
        "--configs", default=",".join(known), help=f"comma-separated subset of: {', '.join(known)}"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help="results path without suffix, gets .json and .png (bench/results/latest)",
    )
    parser.add_argument(
        "--template", type=Path, default=TEMPLATE_DIR, help="template to bake (this checkout)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the baked project, to profile")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="then run floor, limit and shared once more under py-spy: CPU per test by library",
    )
    args = parser.parse_args(argv)
    names = args.configs.split(",")
    unknown = sorted(set(names) - set(known))
    if unknown:
        parser.error(f"unknown configuration(s): {', '.join(unknown)}")
    if args.tests < 1 or args.rounds < 1:
        parser.error("--tests and --rounds must be at least 1")
    args.configs = [known[name] for name in names]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bench; write the results and the chart; print the table."""
    cores = os.cpu_count() or 1
    known = configurations(cores)
    args = parse_args(argv, known)
    workdir = Path(tempfile.mkdtemp(prefix="ws-bench-"))
    try:
        project = suite.bake(args.template, workdir)
        suite.add_bench_tests(project, args.tests)
        print(f"baked {project}, added {args.tests} WebSocket tests and {args.tests} empty ones")
        runs = measure(project, args.configs, args.tests, args.rounds, workdir / "pycache")
        sampled = (
            profiling.profile(
                project,
                {name: config_command(known[name]) for name in profiling.PROFILED},
                environment(workdir / "pycache"),
                args.tests,
            )
            if args.profile
            else None
        )
    except (BenchFailed, profiling.ProfileFailed) as failure:
        print(f"bench: {failure}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    configs = {config.name: config for config in args.configs}
    results = {
        "template": template_version(args.template),
        **summarize(runs, configs, tests=args.tests, rounds=args.rounds, cores=cores),
    }
    if sampled is not None:
        results["profile"] = sampled
    json_path, png_path = args.output.with_suffix(".json"), args.output.with_suffix(".png")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    # Written beside, then renamed: a reader never sees half a file (*.tmp is git-ignored).
    partial = json_path.with_suffix(".json.tmp")
    partial.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    partial.replace(json_path)
    chart.draw(results, png_path)
    print("\n".join(["", *table(results), "", f"wrote {json_path} and {png_path}"]))
    return 0


def measure(
    project: Path, configs: list[Configuration], tests: int, rounds: int, pycache: Path
) -> list[Run]:
    """Every configuration once per round, in an order rotated each round against drift."""
    print("warm-up: collecting the suites once, compiling their bytecode", flush=True)
    warm_up = suite_command("--collect-only", suite.WS_DIR, suite.FLOOR_DIR, suite.LIMIT_DIR)
    collected = _pytest(project, warm_up, environment(pycache), timeout=120)
    if collected.returncode != 0:
        raise BenchFailed(f"the suites do not collect:\n{_tail(collected)}")
    runs = []
    for round_number in range(1, rounds + 1):
        shift = (round_number - 1) % len(configs)
        for config in configs[shift:] + configs[:shift]:
            print(f"round {round_number}/{rounds}: {config.name} ...", end=" ", flush=True)
            run = time_run(project, config, tests, round_number, pycache)
            print(f"{run.seconds:.2f} s", flush=True)
            runs.append(run)
    return runs


def time_run(
    project: Path, config: Configuration, tests: int, round_number: int, pycache: Path
) -> Run:
    """Run one configuration as a subprocess: its wall time and its fixture-stack report."""
    report_path = project / f"report-{config.name}-{round_number}.json"
    command = config_command(config)
    env = environment(pycache, HARNESS_REPORT=str(report_path))
    load = os.getloadavg()[0]
    used_before = _children_cpu_s()
    servers_before = postgres_cpu_s(), redis_cpu_s()
    started = time.perf_counter()
    # Generous: even the naive mode takes well under a second per test.
    result = _pytest(project, command, env, timeout=120 + tests)
    seconds = time.perf_counter() - started
    cpu = _children_cpu_s() - used_before
    servers_after = postgres_cpu_s(), redis_cpu_s()
    if result.returncode != 0 or passed_count(result.stdout) != tests:
        raise BenchFailed(f"{config.name} did not pass all {tests} tests:\n{_tail(result)}")
    report = json.loads(report_path.read_text(encoding="utf-8"))
    postgres, redis = (
        None if before is None or after is None else round(after - before, 3)
        for before, after in zip(servers_before, servers_after, strict=True)
    )
    # .get: a --template older than the CPU figures has none (read as unknown).
    cpu_by_process = {
        "controller": report.get("controller_cpu_s"),
        "workers": report["summary"].get("workers_cpu_s"),
        "postgres": postgres,
        "redis": redis,
    }
    return Run(
        round_number,
        config.name,
        round(seconds, 4),
        round(cpu, 2),
        load,
        report["summary"],
        cpu_by_process,
    )


def config_command(config: Configuration) -> list[str]:
    """The pytest command that runs one configuration (in a fixed order: no pytest-randomly)."""
    return suite_command("-p", "no:randomly", *config.args, config.suite)


def _pytest(
    project: Path, command: list[str], env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            command,
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BenchFailed(f"{' '.join(command)} took over {timeout:.0f} s") from None


def _tail(result: subprocess.CompletedProcess[str]) -> str:
    return (result.stdout + result.stderr)[-3000:]


def _children_cpu_s() -> float:
    # xdist workers are waited for by their controller, so their CPU time is counted too.
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def environment(pycache: Path, **extra: str) -> dict[str, str]:
    """The suite's environment: without the outer run's pytest and harness variables, and with
    bytecode cached in the workdir as on a developer's machine, even where PYTHONDONTWRITEBYTECODE
    is set; else every run would recompile every module and rewrite every test's asserts."""
    env = clean_environment(PYTHONPYCACHEPREFIX=str(pycache), **extra)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def template_version(template: Path) -> str | None:
    """The template's commit, with "+changes" when its files (bench/ aside) differ from it."""
    git = ["git", "-C", str(template)]
    head = subprocess.run(
        [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    if head.returncode != 0:
        return None
    status = [*git, "status", "--porcelain", "--", ".", ":(exclude)bench"]
    changed = subprocess.run(status, capture_output=True, text=True, check=False).stdout.strip()
    return head.stdout.strip() + ("+changes" if changed else "")
