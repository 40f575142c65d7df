"""``weightscope plot --kind spectrum``: a matrix's empirical spectral density on log-log axes, with its fit.

The histogram is of the eigenvalues ``s**2`` (weightscope.spectra) on logarithmic bins, as a density; the
power law weightscope fitted (as weightwatcher does) is drawn over its tail from ``xmin``, scaled to the tail's
share of the eigenvalues, and ``xmin`` is marked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from weightscope.checkpoint import Checkpoint
from weightscope.errors import UsageError
from weightscope.output import safe_text
from weightscope.plot import DEFAULT_SIZE, Plot, _layout, _matplotlib, check_size, output_paths, save_png
from weightscope.spectra import Skipped, Spectrum, checkpoint_spectra

_MARGINS = (70, 20, 46, 58)  # left, right, top, bottom, in pixels
BINS = 60


def spectrum_figure(result: Spectrum, file: str, *, size: tuple[int, int] = DEFAULT_SIZE) -> tuple[Any, list[str]]:
    """The figure of one matrix's ESD and power-law fit, and the notes under it."""
    evals = np.sort(result.singular_values**2)
    evals = evals[evals > 0]
    fit = "no power-law fit" if result.alpha is None else f"alpha {result.alpha:.4g} from xmin {result.xmin:.4g}"
    notes = [f"{len(evals)} eigenvalues; {fit}; {result.mp_spikes} MP spikes; {result.method} SVD"]
    title = [safe_text(file), f"{safe_text(result.name)} · eigenvalue spectrum (log-log)"]
    layout = _layout(size, _MARGINS, title, notes)
    axes = layout.axes
    low, high = float(evals[0]), float(evals[-1])
    edges = np.geomspace(low, high * (1 + 1e-9), BINS + 1) if high > low else np.array([low * 0.9, low * 1.1])
    counts, _ = np.histogram(evals, edges)
    density = counts / (len(evals) * np.diff(edges))
    axes.stairs(density, edges, fill=True, color="tab:blue", alpha=0.6, label="ESD")
    if result.alpha is not None and result.xmin is not None and result.tail:
        x = np.geomspace(result.xmin, high, 100)
        share = result.tail / len(evals)
        law = share * (result.alpha - 1) / result.xmin * (x / result.xmin) ** -result.alpha
        axes.plot(x, law, color="tab:red", label=f"power law, alpha {result.alpha:.3g}")
        axes.axvline(result.xmin, color="tab:red", linestyle=":", label="xmin")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("eigenvalue of W^T W")
    axes.set_ylabel("density")
    axes.legend(loc="lower left", fontsize=8)
    return layout.figure, notes


def plot_spectra(
    ckpt: Checkpoint,
    names: Sequence[str],
    out: str | Path,
    *,
    size: tuple[int, int] = DEFAULT_SIZE,
    progress: Callable[[int, int], None] | None = None,
) -> list[Plot]:
    """One PNG per named matrix (``output_paths``' naming); a tensor without a spectrum is a usage error.
    ``progress(done, total)`` is told as each spectrum is computed."""
    if not names:
        raise UsageError("name at least one tensor to plot")
    check_size(size)
    results = checkpoint_spectra(ckpt, [ckpt.resolve(name) for name in dict.fromkeys(names)], progress=progress)
    for result in results:
        if isinstance(result, Skipped):
            raise UsageError(f"'{safe_text(result.name)}' has no spectrum: {result.reason}")
    paths = output_paths(out, [result.name for result in results])
    _matplotlib()
    plots = []
    for result, path in zip(results, paths, strict=True):
        assert isinstance(result, Spectrum)
        figure, notes = spectrum_figure(result, str(ckpt.path), size=size)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_png(figure, path)
        plots.append(Plot(result.name, path, "spectrum", None, notes))
    return plots
