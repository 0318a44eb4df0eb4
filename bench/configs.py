"""The configurations a bench compares: which suite, with which pytest arguments."""

from dataclasses import dataclass

from bench.suite import FLOOR_DIR, LIMIT_DIR, WS_DIR


@dataclass(frozen=True, slots=True)
class Configuration:
    """One way of running the generated suite."""

    name: str
    label: str
    suite: str
    args: tuple[str, ...]


def configurations(cores: int) -> dict[str, Configuration]:
    """Every configuration, by name; `shared_xdist_4` where there are 4 cores or more, and
    `shared_xdist_auto` where -n auto means neither 2 nor 4 workers."""
    one_process = ("-p", "no:xdist")
    known = [
        Configuration("floor", "floor: empty tests", FLOOR_DIR, one_process),
        # xdist's own cost: the same empty tests, spread over two workers.
        Configuration("floor_xdist", "floor: -n 2", FLOOR_DIR, ("-n", "2")),
        # The canonical test's I/O alone, raw: what `shared` would cost with no overhead at all.
        Configuration("limit", "limit: raw I/O", LIMIT_DIR, one_process),
        Configuration(
            "naive", "naive: app per test", WS_DIR, (*one_process, "--app-scope=function")
        ),
        Configuration("shared", "shared: 1 process", WS_DIR, one_process),
        Configuration("shared_xdist", "shared: -n 2", WS_DIR, ("-n", "2")),
    ]
    if cores >= 4:
        # The common CI runner's size, where the issue sets its scaling target.
        known.append(Configuration("shared_xdist_4", "shared: -n 4", WS_DIR, ("-n", "4")))
    if cores not in (1, 2, 4):
        known.append(
            Configuration("shared_xdist_auto", f"shared: -n auto ({cores})", WS_DIR, ("-n", "auto"))
        )
    return {configuration.name: configuration for configuration in known}
