"""Where an idle connection's memory goes: allocations, objects and tasks, per connection.

Runs the service as a process of its own, holds WARM idle connections (so what the first ones
set up once is not counted), then asks the server to count its objects and start tracemalloc,
opens CONNECTIONS more, and asks it again: what those connections allocated and still hold, per
connection, by source file and line; the objects of each type per connection (gc); the asyncio
tasks per connection. tracemalloc makes the server bigger, so the resident memory per
connection is `make loadtest`'s `held`, not this.
Writes loadtest/results/memory.json and prints the tables.

    make loadtest-memory                      (or: python -m loadtest.memory --connections 2000)
"""

import argparse
import asyncio
import collections
import gc
import json
import os
import pickle
import secrets
import signal
import sys
import tempfile
import tracemalloc
from pathlib import Path
from types import FrameType
from typing import Any

from .processes import namespace, process, users
from .run import UNLIMITED, WARM, Side

RESULTS = Path(__file__).parent / "results" / "memory.json"
TOP = 25
DUMP_TIMEOUT_S = 120.0


def dump(directory: Path, name: str) -> None:
    """In the server: its objects by type, then (`warm`) start tracing allocations or (`held`)
    what the traced allocations still hold, in `directory`."""
    gc.collect()
    types = collections.Counter(
        f"{getattr(type(each), '__module__', '?')}.{type(each).__qualname__}"
        for each in gc.get_objects()
    )
    (directory / f"{name}.types").write_bytes(pickle.dumps(types))
    if name == "warm":
        tracemalloc.start()
    else:
        tracemalloc.take_snapshot().dump(str(directory / "held.snapshot"))
        tracemalloc.stop()
    os.kill(os.getppid(), signal.SIGUSR2)  # done: the load test waits for it


def serve_traced(directory: Path) -> None:
    """The service's `serve`, dumping at each SIGUSR1 (first `warm`, then `held`)."""
    names = iter(("warm", "held"))

    def on_signal(signum: int, frame: FrameType | None) -> None:
        dump(directory, next(names))

    signal.signal(signal.SIGUSR1, on_signal)
    from {{ cookiecutter.package_name }}.__main__ import main

    main(["serve"])


async def dumped(pid: int) -> None:
    """Have the server at `pid` dump (see `dump`), and wait until it has."""
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR2, done.set)
    try:
        os.kill(pid, signal.SIGUSR1)
        async with asyncio.timeout(DUMP_TIMEOUT_S):
            await done.wait()
    finally:
        loop.remove_signal_handler(signal.SIGUSR2)


async def measure(connections: int, directory: Path) -> dict[str, Any]:
    run_id = f"loadtest{secrets.token_hex(3)}"
    with namespace(run_id) as environment:
        environment, tokens = users({**environment, **UNLIMITED}, 1)
        command = ["-m", "loadtest.memory", "--serve", str(directory)]
        async with process(command, environment, b"Uvicorn running on") as server:
            side = Side("service", [server], tokens)
            async with side.subscribers(WARM, 0, 0, processes=1) as warm:
                print(f"{WARM} connections open: counting ...", flush=True)
                await dumped(server.pid)
                async with side.subscribers(connections, 0, 0) as held:
                    print(f"{WARM + connections} connections open: counting ...", flush=True)
                    await dumped(server.pid)
                    await held()
                await warm()
    return {"run_id": run_id, "connections": connections, **breakdown(directory, connections)}


def breakdown(directory: Path, connections: int) -> dict[str, Any]:
    """What the `held` dump has more of than the `warm` one, per connection."""
    lines = tracemalloc.Snapshot.load(str(directory / "held.snapshot")).statistics("lineno")
    by_file: collections.Counter[str] = collections.Counter()
    for line in lines:
        by_file[short(line.traceback[0].filename)] += line.size
    types_before = pickle.loads((directory / "warm.types").read_bytes())
    types_after = pickle.loads((directory / "held.types").read_bytes())
    types = {name: count - types_before.get(name, 0) for name, count in types_after.items()}

    def each(value: float) -> float:
        return round(value / connections, 2)

    return {
        "bytes": round(sum(line.size for line in lines) / connections),
        "objects": each(sum(types.values())),
        "tasks": each(types.get("_asyncio.Task", 0) + types.get("asyncio.tasks.Task", 0)),
        "bytes_by_file": {
            name: round(size / connections) for name, size in by_file.most_common(TOP)
        },
        "bytes_by_line": {
            f"{short(line.traceback[0].filename)}:{line.traceback[0].lineno}": round(
                line.size / connections
            )
            for line in lines[:TOP]
        },
        "objects_by_type": {
            name: each(count)
            for name, count in sorted(types.items(), key=lambda item: -item[1])[:TOP]
        },
    }


def short(filename: str) -> str:
    """A source file's name from its package on: site-packages, the standard library, src."""
    for marker in ("site-packages/", "/src/", "/lib/python3."):
        if marker in filename:
            tail = filename.rsplit(marker, 1)[1]
            return tail.split("/", 1)[1] if marker == "/lib/python3." else tail
    return filename


def table(results: dict[str, Any]) -> str:
    lines = [
        f"per idle connection: {results['bytes']} bytes allocated (tracemalloc),"
        f" {results['objects']} objects, {results['tasks']} tasks",
        "",
        f"{'bytes':>7}  source file",
    ]
    lines += [f"{size:>7}  {name}" for name, size in results["bytes_by_file"].items()]
    lines += ["", f"{'objects':>7}  type"]
    lines += [f"{count:>7}  {name}" for name, count in results["objects_by_type"].items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=2000, help="counted, beyond WARM")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)  # the server's own mode
    args = parser.parse_args()
    if args.serve is not None:
        serve_traced(args.serve)
        return
    with tempfile.TemporaryDirectory(prefix="loadtest-memory-") as directory:
        results = asyncio.run(measure(args.connections, Path(directory)))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print("\n" + table(results))
    print(f"\nwrote {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
