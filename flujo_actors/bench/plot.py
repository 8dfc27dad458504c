"""A PNG of the scaling report (needs matplotlib: the ``bench`` extra)."""

from __future__ import annotations

import importlib.util
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from .report import ScalingRow

__all__ = ["matplotlib_available", "plot_scaling"]


def matplotlib_available() -> bool:
    """True when matplotlib can be imported (without importing it)."""
    return importlib.util.find_spec("matplotlib") is not None


def plot_scaling(rows: Sequence[ScalingRow], path: Path) -> str:
    """Draw time per call against input size (log-log), one panel per scenario.

    The raw-trio baseline is drawn beside the figure when it was measured, and a
    dashed line through the smallest size shows linear growth for comparison.
    Returns a sentence for the person running the CLI: where the file went, or why
    there is none.
    """
    if not matplotlib_available():
        return f"--plot {path}: matplotlib is not installed (pip install 'flujo-actors[bench]'); no plot written."
    if not rows:
        return f"--plot {path}: no scenario ran at two sizes or more; nothing to plot."
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window
    import matplotlib.pyplot as plt

    columns = min(3, len(rows))
    lines = math.ceil(len(rows) / columns)
    figure, axes = plt.subplots(lines, columns, figsize=(4.5 * columns, 3.6 * lines), squeeze=False)
    for ax in axes.flat[len(rows) :]:
        ax.set_visible(False)
    for ax, row in zip(axes.flat, rows, strict=False):
        sizes = [p.size for p in row.points]
        times = [p.seconds_per_call * 1e3 for p in row.points]
        ax.loglog(sizes, times, "o-", label="flujo_actors")
        raw = [p.baseline_seconds_per_call for p in row.points]
        if all(raw):
            ax.loglog(
                sizes, [(t or 0) * 1e3 for t in raw], "s:", color="tab:orange", label="raw trio"
            )
        ax.loglog(
            sizes, [times[0] * s / sizes[0] for s in sizes], "--", color="grey", label="linear"
        )
        ax.set_title(f"{row.scenario}: {row.verdict}", fontsize=10)
        ax.set_xlabel("input size")
        ax.set_ylabel("ms per call")
        ax.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return f"wrote the scaling plot to {path}"
