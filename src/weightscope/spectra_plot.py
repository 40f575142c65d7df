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
from weightscope.spectra import Skipped, Spectrum, checkpoint_spectra, esd_density, power_law_density

_MARGINS = (70, 20, 46, 58)  # left, right, top, bottom, in pixels
BINS = 60


def spectrum_figure(result: Spectrum, file: str, *, size: tuple[int, int] = DEFAULT_SIZE) -> tuple[Any, list[str]]:
    """The figure of one matrix's ESD and power-law fit, and the notes under it."""
    edges, density, count = esd_density(result.singular_values, BINS)
    fit = "no power-law fit" if result.alpha is None else f"alpha {result.alpha:.4g} from xmin {result.xmin:.4g}"
    notes = [f"{count} eigenvalues; {fit}; {result.mp_spikes} MP spikes; {result.method} SVD"]
    title = [safe_text(file), f"{safe_text(result.name)} · eigenvalue spectrum (log-log)"]
    layout = _layout(size, _MARGINS, title, notes)
    axes = layout.axes
    axes.stairs(density, edges, fill=True, color="tab:blue", alpha=0.6, label="ESD")
    x = np.geomspace(result.xmin, result.spectral_norm**2, 100) if result.xmin is not None else np.empty(0)
    law = power_law_density(result, x)
    if law is not None:
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
        if result.spectral_norm == 0:
            raise UsageError(f"'{safe_text(result.name)}' has no spectrum to draw: a matrix of zeros")
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
