"""A run's drift drawn: each layer's weights, relative to the first checkpoint and to the one before, over steps.

Computed by ``weightscope.runs.run_stats``; drawn here with matplotlib (``weightscope[plot]``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from weightscope.runs import RunStats, RunTensorStats


def plot_drift(stats: RunStats, out: str | os.PathLike[str], *, size: tuple[int, int] = (1000, 720)) -> Path:
    """A PNG of each layer's relative change from the first checkpoint (top) and from the previous one.

    A line per layer, drawn from the layer's largest tensor (its kernel or weight, not
    the bias); steps on the x axis (checkpoint positions when the names carry no steps).
    Needs matplotlib (``weightscope[plot]``); drawn on a ``Figure`` with the Agg canvas,
    never pyplot.
    """
    from weightscope.layers import split_name
    from weightscope.plot import _matplotlib, check_size, save_png

    check_size(size)
    _, figure_class, canvas_class = _matplotlib()
    steps_known = all(entry.step is not None for entry in stats.checkpoints)
    position = {str(entry.path): index for index, entry in enumerate(stats.checkpoints)}
    layers: dict[str, list[RunTensorStats]] = {}
    largest: dict[str, int] = {}
    for name, rows in stats.by_name().items():
        layer = split_name(name)[0] or name
        count = rows[0].stats.count
        if count > largest.get(layer, -1):
            largest[layer], layers[layer] = count, rows
    width, height = size
    figure = figure_class(figsize=(width / 100, height / 100), dpi=100, facecolor="white")
    canvas_class(figure)
    axes_first, axes_previous = figure.subplots(2, 1, sharex=True)
    for layer, rows in sorted(layers.items()):
        xs = [row.step if steps_known else position[row.checkpoint] for row in rows]
        axes_first.plot(xs, [_plotted(row.change_first) for row in rows], marker=".", label=layer)
        axes_previous.plot(xs, [_plotted(row.change_previous) for row in rows], marker=".", label=layer)
    axes_first.set_ylabel("change from first")
    axes_previous.set_ylabel("change from previous")
    axes_previous.set_xlabel("step" if steps_known else "checkpoint")
    axes_first.set_title(f"weight drift per layer over {len(stats.checkpoints)} checkpoints", fontsize=10)
    if len(layers) <= 20:
        axes_first.legend(fontsize=7, loc="upper left")
    for axes in (axes_first, axes_previous):
        axes.grid(True, color="0.9")
    figure.subplots_adjust(left=0.09, right=0.98, top=0.94, bottom=0.08, hspace=0.12)
    return save_png(figure, out)


def _plotted(value: float | None) -> float:
    return math.nan if value is None else value
