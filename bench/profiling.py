"""`--profile`: where a WebSocket test's time goes, by library, sampled with py-spy.

After the timed rounds, `floor`, `limit` and `shared` run once more under `py-spy record` (raw
stacks, sampled without pausing the process). Each sample is charged to the library whose code was
running: the package under site-packages, the standard-library module, the service's own code
(`service`), the harness (`harness`). Idle samples (a process blocked in a system call, waiting
for Postgres or Redis) are not recorded, so the figures are CPU milliseconds per test, and the
floor's can be subtracted from the WebSocket suite's: what is left is what the harness, the
service and the libraries under them cost each test, library by library. Subtracting the
limit's instead leaves what the harness and the service add to the test's own I/O: the list of
what there is to cut.
"""

import shutil
import subprocess
import sys
import sysconfig
from collections import Counter
from pathlib import Path

RATE_HZ = 250
STDLIB = sysconfig.get_paths()["stdlib"] + "/"
# The figures keep this many libraries, largest first, and sum the rest as "other".
SHOWN = 12
PROFILED = ("floor", "limit", "shared")


class ProfileFailed(RuntimeError):
    """py-spy is missing, or could not record the run."""


def record(command: list[str], project: Path, env: dict[str, str], output: Path) -> None:
    """Run `command` in `project` under py-spy, writing its raw stacks to `output`."""
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if py_spy is None:
        raise ProfileFailed("py-spy is not installed: make install (requirements.txt) adds it")
    sampler = [py_spy, "record", "--rate", str(RATE_HZ), "--nonblocking", "--full-filenames"]
    result = subprocess.run(
        [*sampler, "--format", "raw", "--output", str(output), "--", *command],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not output.exists():
        # py-spy needs ptrace on its child: some containers allow it only with SYS_PTRACE.
        raise ProfileFailed(f"py-spy could not record:\n{(result.stdout + result.stderr)[-2000:]}")


def cpu_ms_by_library(raw: Path, project: Path, tests: int) -> dict[str, float]:
    """CPU milliseconds per test, by library, from py-spy's raw stacks ("frame;frame;... n")."""
    samples: Counter[str] = Counter()
    for line in raw.read_text(encoding="utf-8").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            samples[library_of(stack.rsplit(";", 1)[-1], project)] += int(count)
    return {library: n / RATE_HZ / tests * 1000 for library, n in samples.items()}


def library_of(frame: str, project: Path) -> str:
    """The library a py-spy frame ("function (path:line)") runs in."""
    path = frame.rpartition(" (")[2].rpartition(":")[0]
    if path.startswith("<frozen"):
        return "importlib"
    if "/site-packages/" in path:
        package = path.split("/site-packages/", 1)[1].split("/", 1)[0]
        return package.removesuffix(".py").lstrip("_")
    if path.startswith(str(project / "src")):
        return "service"
    if path.startswith(str(project / "tests" / "harness")):
        return "harness"
    if path.startswith(str(project / "tests")):
        return "tests"
    if path.startswith(STDLIB):
        return path.removeprefix(STDLIB).split("/", 1)[0].removesuffix(".py")
    return "other"


def above_floor(floor: dict[str, float], suite: dict[str, float]) -> dict[str, float]:
    """What each library costs a test above the floor's, largest first, the rest as "other"."""
    return largest(
        {
            library: suite.get(library, 0.0) - floor.get(library, 0.0)
            for library in set(floor) | set(suite)
        }
    )


def largest(by_library: dict[str, float], shown: int = SHOWN) -> dict[str, float]:
    """The `shown` largest figures, rounded, largest first, and the rest summed as "other"."""
    ranked = sorted(by_library.items(), key=lambda item: -item[1])
    kept = {library: round(ms, 2) for library, ms in ranked[:shown] if library != "other"}
    kept["other"] = round(sum(by_library.values()) - sum(kept.values()), 2)
    return kept


def profile(
    project: Path, commands: dict[str, list[str]], env: dict[str, str], tests: int
) -> dict[str, object]:
    """Sample the `floor`, `limit` and `shared` commands once each; the results file's "profile"
    entry."""
    by_library = {}
    for name in PROFILED:
        print(f"profile: {name} under py-spy ...", flush=True)
        raw = project / f"profile-{name}.txt"
        record(commands[name], project, env, raw)
        by_library[name] = cpu_ms_by_library(raw, project, tests)
    return {
        "sampler": f"py-spy record --rate {RATE_HZ} --nonblocking, idle samples left out",
        "cpu_ms_per_test": {
            name: round(sum(libraries.values()), 2) for name, libraries in by_library.items()
        },
        "cpu_ms_per_test_by_library": {
            name: largest(libraries) for name, libraries in by_library.items()
        },
        "above_floor_ms_per_test": above_floor(by_library["floor"], by_library["shared"]),
        "above_limit_ms_per_test": above_floor(by_library["limit"], by_library["shared"]),
    }
