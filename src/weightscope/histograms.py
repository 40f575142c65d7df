"""Counts of a tensor's values in bins, chunk by chunk: what ``weightscope plot``, the viewer and a notebook's
statistics draw.

The bin edges span the tensor's finite minimum and maximum (``tensor_stats``), then each
chunk's values are counted with ``np.histogram`` and the counts added up; NaN and infinite
values are left out, and counted. The counts equal ``np.histogram`` of the whole array's
finite values with the same edges. Two tensors compared share one set of edges
(``bin_edges`` of both ranges).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from weightscope.analysis import CHUNK_ELEMENTS, TensorStats, chunks, numeric_kind, tensor_stats, widened
from weightscope.errors import UsageError
from weightscope.output import format_shape, safe_text

DEFAULT_BINS = 100
NOTEBOOK_BINS = 40  # a histogram as small as a notebook's statistics show it


class FiniteRange(NamedTuple):
    """The smallest and largest finite values (None if there are none), and what was left out."""

    low: float | None
    high: float | None
    nans: int
    infs: int


def finite_range(array: np.ndarray, elements: int = CHUNK_ELEMENTS) -> FiniteRange:
    """The finite minimum and maximum of a tensor, with its NaN and infinity counts."""
    return _finite_range(array, tensor_stats("", array, elements), elements)


def _finite_range(array: np.ndarray, stats: TensorStats, elements: int) -> FiniteRange:
    """``finite_range`` of ``array``, whose statistics are ``stats``."""
    nans, infs = stats.nans or 0, stats.infs or 0
    if not infs:
        return FiniteRange(stats.min, stats.max, nans, infs)
    # The statistics' minimum and maximum include the infinities: one more pass without them.
    low, high = math.inf, -math.inf
    for chunk in chunks(array, elements):
        wide = widened(chunk)
        wide = wide[np.isfinite(wide)]
        if wide.size:
            low, high = min(low, float(wide.min())), max(high, float(wide.max()))
    if low > high:
        return FiniteRange(None, None, nans, infs)
    return FiniteRange(low, high, nans, infs)


def bin_edges(ranges: Sequence[FiniteRange], bins: int) -> np.ndarray:
    """``bins + 1`` equal-width edges spanning every range (as ``np.histogram`` widens a single value)."""
    lows = [item.low for item in ranges if item.low is not None]
    highs = [item.high for item in ranges if item.high is not None]
    low, high = (min(lows), max(highs)) if lows else (0.0, 1.0)
    if low == high:
        low, high = low - 0.5, high + 0.5
    return np.linspace(low, high, bins + 1)


@dataclass(frozen=True)
class Histogram:
    """Counts of a tensor's finite values in ``len(edges) - 1`` bins (the last one closed)."""

    edges: np.ndarray
    counts: np.ndarray  # int64
    count: int  # the tensor's elements
    nans: int
    infs: int

    @property
    def left_out(self) -> int:
        return self.nans + self.infs


def histogram(
    array: np.ndarray,
    bins: int = DEFAULT_BINS,
    *,
    edges: np.ndarray | None = None,
    value_range: FiniteRange | None = None,
    elements: int = CHUNK_ELEMENTS,
) -> Histogram:
    """A histogram of the tensor's finite values, chunk by chunk.

    ``edges`` (equal-width, from ``bin_edges``) are computed from the tensor's own range
    unless given; ``value_range`` saves the pass that finds it when it is already known.
    """
    check_plottable("tensor", array.dtype, array.shape)
    if value_range is None:
        value_range = finite_range(array, elements)
    if edges is None:
        edges = bin_edges([value_range], bins)
    counts = np.zeros(len(edges) - 1, dtype=np.int64)
    for chunk in chunks(array, elements):
        wide = widened(chunk)
        if value_range.nans or value_range.infs:
            wide = wide[np.isfinite(wide)]
        # Equal-width bins: numpy's fast path, which counts exactly as the explicit edges would.
        counts += np.histogram(wide, bins=len(edges) - 1, range=(edges[0], edges[-1]))[0]
    return Histogram(edges, counts, array.size, value_range.nans, value_range.infs)


def check_plottable(name: str, dtype: np.dtype, shape: Sequence[int]) -> None:
    """Refuse to count or draw what holds no real numbers, or nothing."""
    kind = numeric_kind(dtype)
    if kind not in ("f", "i", "b"):
        what = "complex numbers" if kind == "c" else f"{'strings' if dtype.kind == 'O' else dtype} values"
        raise UsageError(f"cannot plot '{safe_text(name)}': it holds {what}, not real numbers")
    if math.prod(shape) == 0:
        raise UsageError(f"cannot plot '{safe_text(name)}': it has no elements (shape {format_shape(shape)})")


def stats_with_histogram(name: str, array: np.ndarray, bins: int = NOTEBOOK_BINS) -> TensorStats:
    """``tensor_stats(name, array)`` with the histogram of its finite values (``TensorStats.histogram``, which a
    notebook shows beside the figures) where it holds real numbers, from one more pass over them."""
    stats = tensor_stats(name, array)
    if numeric_kind(array.dtype) not in ("f", "i", "b") or not array.size:
        return stats
    counted = histogram(array, bins, value_range=_finite_range(array, stats, CHUNK_ELEMENTS))
    return dataclasses.replace(stats, histogram=counted)
