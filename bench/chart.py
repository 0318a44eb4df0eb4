"""The bench's bar chart: each configuration's median wall time, whiskers from min to max."""

from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from bench.results import SHARING

matplotlib.use("Agg")  # files only: no display needed, the same output on every machine

COLORS = {
    "floor": "#9e9e9e",
    "floor_xdist": "#cfcfcf",
    "limit": "#f0ad4e",
    "naive": "#d9534f",
    "shared": "#337ab7",
    "shared_xdist": "#5cb85c",
    "shared_xdist_4": "#43a047",
    "shared_xdist_auto": "#2e7d32",
}


def draw(results: dict[str, Any], path: Path) -> None:
    """Write the chart of `results` (see results.summarize) as a PNG."""
    configs = results["configs"]
    names = list(configs)
    medians = [configs[name]["median_s"] for name in names]
    whiskers = [
        [configs[name]["median_s"] - configs[name]["min_s"] for name in names],
        [configs[name]["max_s"] - configs[name]["median_s"] for name in names],
    ]
    # Wide enough for every configuration's label side by side.
    figure, axes = plt.subplots(figsize=(max(8, 1.6 * len(names)), 4.5), dpi=110)
    bars = axes.bar(
        [configs[name]["label"] for name in names],
        medians,
        yerr=whiskers,
        capsize=6,
        color=[COLORS.get(name, "#777777") for name in names],
    )
    # Speed-ups are over naive; a run without it (the scaling run) compares with one process.
    baseline = next((name for name in ("naive", "shared") if name in configs), None)
    labels = [
        f"{median:.2f} s"
        + (
            f"\n{configs[baseline]['median_s'] / median:.1f}x"
            if baseline and name in SHARING and name != baseline
            else ""
        )
        for name, median in zip(names, medians, strict=True)
    ]
    axes.bar_label(bars, labels, padding=4, fontsize=9)
    # Log scale: naive runs two orders of magnitude longer than the rest, whose whiskers
    # would vanish on a linear axis.
    axes.set_yscale("log")
    axes.set_ylim(
        min(configs[name]["min_s"] for name in names) / 3,
        max(configs[name]["max_s"] for name in names) * 4,
    )
    axes.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.yaxis.set_minor_formatter(NullFormatter())
    axes.set_ylabel("wall time, s (log scale; median, whiskers min-max)")
    tests, cores, rounds = results["tests"], results["cores"], results["rounds"]
    title = f"{tests} WebSocket tests, {cores} cores, {rounds} round(s)"
    if baseline:
        title += f"; Nx = speed-up over {baseline}"
    axes.set_title(title)
    axes.spines[["top", "right"]].set_visible(False)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
