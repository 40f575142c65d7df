"""What the numbers say: per-tensor statistics and the difference of two checkpoints, in bounded memory.

Every figure is computed chunk by chunk over a tensor's flat values (a memory-mapped view is sliced, never copied
whole), so a tensor of any size is summarised with a few chunks' worth of memory. Values are widened to float64 a
piece at a time; the mean and standard deviation are combined across chunks with Chan's parallel formulas, so the
figures equal numpy's own (``np.nanmean`` and friends on the whole array) to summation rounding.

Floating-point chunks take the fused path of ``weightscope.blocks``: a block of them in cache at a time, every
figure taken of it in turn; the figures of a difference too, after a byte compare that finds equal tensors (and
blocks) equal at the speed of memory.

Statistics (``TensorStats``), NaNs left out of every figure but their count: ``count`` (elements), ``min``, ``max``,
``mean``, ``std`` (population, like ``np.std``), ``l2`` (the Euclidean norm), ``zeros``, ``nans``, ``infs``.
Integers and booleans get the same figures but NaN and infinity counts are 0 (a boolean's mean is the fraction
true); complex tensors get ``l2``, ``zeros``, ``nans`` and ``infs`` (of either part) only, and string tensors only
``count``. A figure that does not apply, or has no values (an empty tensor, all NaN), is ``None``.

A difference (``TensorDiff``) between two tensors of the same shape: ``max_abs`` (the largest ``|a - b|``),
``relative_l2`` (``||a - b|| / ||a||``; ``None`` when ``||a|| = 0`` and they differ), ``cosine``
(``a·b / (||a|| ||b||)``; ``None`` if either norm is 0), and ``equal``: whether every element satisfies
``|a - b| <= atol + rtol * |b|`` (NaNs equal only NaNs, in the same places; infinities only the same infinity).
"""

from __future__ import annotations

import functools
import itertools
import math
import os
from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from itertools import repeat
from typing import TYPE_CHECKING, Any

import numpy as np

from weightscope.blocks import (
    CHUNK_ELEMENTS,
    aligned_chunks,
    any_nonzero,
    chunks,
    dot,
    float_figures,
    fused_float,
    fused_real,
    identical,
    in_step,
    pair_figures,
    run_chunks,
    total,
    widened,
)
from weightscope.checkpoint import Checkpoint
from weightscope.conventions import LAYOUT_PERMUTATIONS
from weightscope.dtypes import numeric_kind
from weightscope.errors import WeightscopeError, kept
from weightscope.notebook import diff_html, stats_html
from weightscope.output import finite_figures

if TYPE_CHECKING:
    from weightscope.convert import PlannedTensor
    from weightscope.histograms import Histogram


@dataclass(frozen=True)
class TensorStats:
    name: str
    dtype: str
    shape: tuple[int, ...]
    count: int
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    l2: float | None = None
    zeros: int | None = None
    nans: int | None = None
    infs: int | None = None
    histogram: Histogram | None = field(default=None, compare=False, repr=False)  # ``histograms.stats_with_histogram``
    _repr_html_ = stats_html

    def to_json(self) -> dict[str, Any]:
        document = finite_figures(asdict(self))
        del document["histogram"]  # a picture's counts, no figure: a notebook draws it
        document["shape"] = list(self.shape)
        return document


@dataclass
class StatsPartial:
    """The figures of some of a tensor's values, to be merged with the rest's."""

    count: int = 0  # values other than NaN
    total: float = 0.0  # their sum (what the mean is when infinities make deviations meaningless)
    mean: float = 0.0
    m2: float = 0.0  # sum of squared deviations from the mean
    low: float | None = None
    high: float | None = None
    squares: float = 0.0
    zeros: int = 0
    nans: int = 0
    infs: int = 0

    def repeated(self, times: int) -> StatsPartial:
        """The figures of these values each repeated ``times`` times: mean, extremes and deviation unchanged."""
        scaled = ("count", "total", "m2", "squares", "zeros", "nans", "infs")
        return replace(self, **{field: getattr(self, field) * times for field in scaled})

    def merge(self, other: StatsPartial) -> StatsPartial:
        total = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * other.count / total if total else 0.0
        m2 = self.m2 + other.m2 + (delta * delta * self.count * other.count / total if total else 0.0)
        lows = [value for value in (self.low, other.low) if value is not None]
        highs = [value for value in (self.high, other.high) if value is not None]
        sums = {key: getattr(self, key) + getattr(other, key) for key in ("total", "squares", "zeros", "nans", "infs")}
        low, high = min(lows) if lows else None, max(highs) if highs else None
        return StatsPartial(total, mean=mean, m2=m2, low=low, high=high, **sums)


def chunk_stats(chunk: np.ndarray, kind: str) -> StatsPartial:
    """One chunk's figures; ``kind`` is what ``numeric_kind`` says of its dtype.

    Floating-point chunks go block by block through the fused path (see the module's description); the rest, and any
    block holding a NaN or an infinity, through the general one: exact figures (zeros, NaNs, min, max) on numpy's
    own types as stored, sums on float64, the deviations taken from the chunk's first value (the shifted-data
    algorithm) in place, which avoids both another temporary and the cancellation of the textbook sum-of-squares
    formula.
    """
    with np.errstate(invalid="ignore", over="ignore"):  # infinities add up to NaN or overflow, as they should
        if kind == "f" and chunk.size and fused_float(chunk.dtype):
            figures, left = float_figures(chunk.reshape(-1))
            parts = [StatsPartial(*figures)] if figures else []
            return functools.reduce(StatsPartial.merge, [_figures(block, kind) for block in left], *parts)
        return _figures(chunk, kind)


def _figures(chunk: np.ndarray, kind: str) -> StatsPartial:
    partial = StatsPartial(zeros=int(chunk.size - np.count_nonzero(chunk)))
    exact = chunk if chunk.dtype.type.__module__ == "numpy" else widened(chunk)
    wide = widened(chunk)
    if kind in "fc" and not np.isfinite(exact).all():
        missing = np.isnan(wide)
        partial.nans = int(np.count_nonzero(missing))
        partial.infs = int(np.count_nonzero(np.isinf(wide)))  # a complex NaN may be infinite too
        wide, exact = wide[~missing], wide[~missing]
    if kind == "c":
        partial.squares = float(np.vdot(wide, wide).real)
        return partial
    if wide.size:
        partial.count = wide.size
        partial.low, partial.high = float(exact.min()), float(exact.max())
        partial.squares = dot(wide, wide)
        partial.total = total(wide)
        partial.mean = partial.total / wide.size
        if not partial.infs:
            shift = float(wide[0])
            wide -= shift
            shifted_sum = total(wide)
            partial.m2 = max(0.0, dot(wide, wide) - shifted_sum * shifted_sum / wide.size)
    return partial


def tensor_stats(
    name: str,
    array: np.ndarray,
    elements: int = CHUNK_ELEMENTS,
    pool: ThreadPoolExecutor | None = None,
    shape: tuple[int, ...] | None = None,
    advance: Callable[[int, int], None] | None = None,
) -> TensorStats:
    """The statistics of one tensor, read chunk by chunk (on ``pool``'s threads, if given, each run's bytes then told
    to ``advance(0, nbytes)``). With ``shape``, ``array`` stands for a tensor of that shape repeating each of its values
    alike (``Checkpoint.without_repeats``): the figures are the tensor's."""
    shape = tuple(array.shape) if shape is None else shape
    kind = numeric_kind(array.dtype)
    if kind is None:
        return TensorStats(name, str(array.dtype), shape, math.prod(shape))
    if pool is None:
        total = stats_partial(array, kind, elements)
    else:
        total = StatsPartial()
        # Runs of chunks in flight (views; one copy a run), each mapped on a thread, merged here in order: one thread's.
        pending: deque[tuple[Future[list[StatsPartial]], int]] = deque()
        pieces, per_run = chunks(array, elements), run_chunks(array, elements, pool._max_workers)
        for run in itertools.chain(iter(lambda: list(itertools.islice(pieces, per_run)), []), [None]):
            if run is not None:  # None: the end, every run then merged
                pending.append((pool.submit(list, map(chunk_stats, run, repeat(kind))), sum(c.nbytes for c in run)))
            while pending and (run is None or len(pending) > pool._max_workers):
                future, nbytes = pending.popleft()
                for partial in future.result():
                    total = total.merge(partial)
                if advance is not None:
                    advance(0, nbytes)
    if array.size and array.size != math.prod(shape):
        total = total.repeated(math.prod(shape) // array.size)
    return stats_from_partial(name, array.dtype, shape, kind, total)


def stats_from_partial(
    name: str, dtype: np.dtype, shape: tuple[int, ...], kind: str, total: StatsPartial
) -> TensorStats:
    """The statistics of a tensor whose chunks' figures, merged, are ``total`` (``kind``: ``numeric_kind``)."""
    figures: dict[str, Any] = {"l2": math.sqrt(total.squares), "zeros": total.zeros}
    figures.update(nans=total.nans, infs=total.infs)
    if kind != "c" and total.count:
        figures.update(min=total.low, max=total.high, mean=total.mean, std=math.sqrt(total.m2 / total.count))
        if total.infs:  # as numpy: the mean is +-inf (or NaN for both signs), the deviation undefined
            figures.update(mean=total.total / total.count, std=math.nan)
    return TensorStats(name, _type_name(dtype), shape, math.prod(shape), **figures)


@functools.lru_cache(maxsize=64)
def _type_name(dtype: np.dtype) -> str:
    """``str(dtype)``, which takes numpy 5 us: as long as a small tensor's figures."""
    return str(dtype)


def _workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def checkpoint_stats(
    ckpt: Checkpoint,
    names: Iterable[str],
    errors: dict[str, WeightscopeError] | None = None,
    advance: Callable[[int, int], None] | None = None,
) -> list[TensorStats]:
    """Statistics of the named tensors, in order, on a few threads (numpy releases the GIL).

    Small tensors are spread over the threads in batches; a large one is spread chunk by chunk. A view repeating
    stored values (a stride of 0) is summed over the values it stores, each counted as often as it repeats.
    With ``errors``, a tensor that cannot be read (a checksum that does not match, bytes missing) is left out
    and its error put in ``errors`` under its name, in order, so one damaged tensor hides no other's figures;
    without, the first such error is raised. ``advance(tensors, nbytes)`` is told of each batch and chunk done.
    """
    names = list(names)
    failed: dict[str, WeightscopeError] = {}
    done = advance or (lambda tensors, nbytes: None)
    with ThreadPoolExecutor(_workers()) as pool:
        large = {name for name in names if ckpt.info(name).size > CHUNK_ELEMENTS}
        # Small tensors go to the threads in batches of about a chunk: a task per tensor costs more than its figures.
        batches: list[list[str]] = [[]]
        elements = 0
        for name in names:
            if name not in large:
                elements += ckpt.info(name).size + 1
                batches[-1].append(name)
                if elements >= CHUNK_ELEMENTS:
                    batches.append([])
                    elements = 0
        results: dict[str, TensorStats] = {}
        for batch, figures in zip(
            batches, pool.map(functools.partial(_batch_stats, ckpt, failed), batches), strict=True
        ):
            results.update((result.name, result) for result in figures)
            done(len(batch), sum(ckpt.info(name).nbytes for name in batch))
        for name in large:
            try:
                values = ckpt.without_repeats(name)
                results[name] = tensor_stats(name, values, pool=pool, shape=ckpt.info(name).shape, advance=done)
                done(1, ckpt.info(name).nbytes - values.nbytes)  # a view's repeats: read as one
            except WeightscopeError as error:
                failed[name] = kept(error)
    in_order = [name for name in names if name in failed]
    if in_order and errors is None:
        raise failed[in_order[0]]
    if errors is not None:
        errors.update((name, failed[name]) for name in in_order)
    return [results[name] for name in names if name in results]


SMALL_ELEMENTS = 4096  # a tensor this small is summed with others of its type (segment by segment) in one pass


def _batch_stats(ckpt: Checkpoint, failed: dict[str, WeightscopeError], names: list[str]) -> list[TensorStats]:
    """Statistics of small tensors: those of one real type together, in a few numpy calls; others one by one.

    numpy spends some 30 us on each call whatever its size, a dozen calls a tensor: 30,000 one-value tensors
    (biases, step counters, a crafted file) would take seconds one by one, and take milliseconds side by side.
    """
    groups: dict[np.dtype, list[tuple[str, np.ndarray]]] = {}
    results: list[TensorStats] = []
    for name in names:
        try:
            values = ckpt.without_repeats(name)
        except WeightscopeError as error:  # a damaged tensor: named by the caller, the others still summed
            failed[name] = kept(error)
            continue
        if 0 < values.size <= SMALL_ELEMENTS and numeric_kind(values.dtype) in ("f", "i", "b"):
            groups.setdefault(values.dtype, []).append((name, values))
        else:
            results.append(tensor_stats(name, values, shape=ckpt.info(name).shape))
    for dtype, members in groups.items():
        kind = numeric_kind(dtype)
        assert kind is not None
        with np.errstate(invalid="ignore", over="ignore"):
            partials = _segment_figures([values for _, values in members], kind)
        for (name, values), partial in zip(members, partials, strict=True):
            shape = ckpt.info(name).shape
            if values.size != math.prod(shape):
                partial = partial.repeated(math.prod(shape) // values.size)
            results.append(stats_from_partial(name, dtype, shape, kind, partial))
    return results


def _segment_figures(arrays: list[np.ndarray], kind: str) -> list[StatsPartial]:
    """``chunk_stats`` of each of ``arrays`` (non-empty, one real type), computed over their values side by side."""
    sizes = np.array([array.size for array in arrays])
    starts = np.cumsum(sizes) - sizes
    exact = np.concatenate([array.reshape(-1) for array in arrays])
    if exact.dtype.type.__module__ != "numpy":
        exact = widened(exact)
    wide = widened(exact)
    zeros = np.add.reduceat(exact == 0, starts)
    missing = np.isnan(wide)
    nans = np.add.reduceat(missing, starts)
    infs = np.add.reduceat(np.isinf(wide), starts)
    counts = sizes - nans
    lows, highs = np.fmin.reduceat(exact, starts), np.fmax.reduceat(exact, starts)  # both leave NaN out
    wide[missing] = 0
    totals = np.add.reduceat(wide, starts)
    squares = np.add.reduceat(wide * wide, starts)
    means = totals / np.maximum(counts, 1)
    deviations = wide - np.repeat(means, sizes)
    deviations[missing] = 0
    m2s = np.where(infs > 0, 0.0, np.add.reduceat(deviations * deviations, starts))
    partials = []
    for index, count in enumerate(counts.tolist()):
        low, high = (float(lows[index]), float(highs[index])) if count else (None, None)
        partials.append(
            StatsPartial(
                count,
                float(totals[index]),
                float(means[index]),
                float(m2s[index]),
                low,
                high,
                float(squares[index]),
                int(zeros[index]),
                int(nans[index]),
                int(infs[index]),
            )
        )
    return partials


# -- differences ----------------------------------------------------------------------------


@dataclass
class DiffPartial:
    """The figures of a difference over some of two tensors' values, to be merged with the rest's."""

    max_abs: float = 0.0
    mismatched: int = 0
    dot: float = 0.0
    a_squares: float = 0.0
    b_squares: float = 0.0
    d_squares: float = 0.0

    def merge(self, other: DiffPartial) -> DiffPartial:
        sums = (
            getattr(self, key) + getattr(other, key)
            for key in ("mismatched", "dot", "a_squares", "b_squares", "d_squares")
        )
        return DiffPartial(max(self.max_abs, other.max_abs), *sums)

    @property
    def relative_l2(self) -> float | None:
        """||a - b|| / ||a||; 0 for two zero tensors, None when a is zero and b is not."""
        reference = math.sqrt(self.a_squares)
        if reference:
            return math.sqrt(self.d_squares) / reference
        return 0.0 if not self.d_squares else None

    @property
    def cosine(self) -> float | None:
        a_norm, b_norm = math.sqrt(self.a_squares), math.sqrt(self.b_squares)
        return self.dot / (a_norm * b_norm) if a_norm and b_norm else None


def stats_steps(array: np.ndarray, kind: str, elements: int = CHUNK_ELEMENTS) -> Generator[None, None, StatsPartial]:
    """The statistics' figures of a whole (numeric) array, a chunk a step (``blocks.in_step``), in order."""
    total: StatsPartial | None = None  # a tensor of one chunk, most of them, needs no merge
    for chunk in chunks(array, elements):
        partial = chunk_stats(chunk, kind)
        total = partial if total is None else total.merge(partial)
        yield
    return total or StatsPartial()


def stats_partial(array: np.ndarray, kind: str, elements: int = CHUNK_ELEMENTS) -> StatsPartial:
    return in_step([stats_steps(array, kind, elements)])[0]


def diff_steps(
    a: np.ndarray, b: np.ndarray, rtol: float = 0.0, atol: float = 0.0, elements: int = CHUNK_ELEMENTS
) -> Generator[None, None, DiffPartial]:
    """The difference's figures of two arrays of one shape, a pair of chunks a step (``blocks.in_step``), in order."""
    figures = DiffPartial()
    for left, right in aligned_chunks(chunks(a, elements), chunks(b, elements)):
        pair_diff(left, right, rtol, atol, figures)
        yield
    return figures


def diff_partial(
    a: np.ndarray, b: np.ndarray, rtol: float = 0.0, atol: float = 0.0, elements: int = CHUNK_ELEMENTS
) -> DiffPartial:
    return in_step([diff_steps(a, b, rtol, atol, elements)])[0]


def pair_diff(a: np.ndarray, b: np.ndarray, rtol: float, atol: float, into: DiffPartial) -> None:
    """Add the difference's figures of two pieces of one length to ``into``: real numbers block by block by the
    fused path (see the module's description), the rest (complex numbers, ``longdouble``) at once."""
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf is NaN here, and handled as such
        if rtol >= 0 and atol >= 0 and fused_real(a.dtype) and fused_real(b.dtype):
            figures, left = pair_figures(a.reshape(-1), b.reshape(-1), rtol, atol)
            fused = into.merge(DiffPartial(*figures))
            into.max_abs, into.mismatched, into.dot = fused.max_abs, fused.mismatched, fused.dot
            into.a_squares, into.b_squares, into.d_squares = fused.a_squares, fused.b_squares, fused.d_squares
            for block_a, block_b in left:
                _pair(widened(block_a), widened(block_b), rtol, atol, into)
        else:
            _pair(widened(a), widened(b), rtol, atol, into)


def _pair(a: np.ndarray, b: np.ndarray, rtol: float, atol: float, into: DiffPartial) -> None:
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    gap = np.abs(a - b)
    close = same | (gap <= atol + rtol * np.abs(b))
    into.mismatched += int(close.size - np.count_nonzero(close))
    if not same.all():
        gaps = gap[~same]
        gaps = gaps[~np.isnan(gaps)]
        if gaps.size:  # a NaN against a number counts as mismatched, but has no size
            into.max_abs = max(into.max_abs, float(gaps.max()))
    both = np.isfinite(a) & np.isfinite(b)
    if not both.all():
        a, b = a[both], b[both]
    into.dot += float(np.vdot(a, b).real)
    into.a_squares += float(np.vdot(a, a).real)
    into.b_squares += float(np.vdot(b, b).real)
    difference = a - b
    into.d_squares += float(np.vdot(difference, difference).real)


@dataclass(frozen=True)
class TensorDiff:
    """How tensor ``name`` of A compares with ``other`` of B."""

    name: str
    other: str
    status: str  # "equal", "different", "shape" or "dtype" (shapes, or types not both numbers: values not compared)
    dtype: tuple[str, str]
    shape: tuple[tuple[int, ...], tuple[int, ...]]
    max_abs: float | None = None
    relative_l2: float | None = None
    cosine: float | None = None
    mismatched: int | None = None  # elements outside the tolerance
    moved: str | None = None  # how a layout difference was undone before comparing, if there was one

    def to_json(self) -> dict[str, Any]:
        document = finite_figures(asdict(self))
        document["dtype"] = list(self.dtype)
        document["shape"] = [list(shape) for shape in self.shape]
        return document


def tensor_diff(
    name: str,
    other: str,
    a: np.ndarray,
    b: np.ndarray,
    moved: str | None = None,
    *,
    rtol: float = 0.0,
    atol: float = 0.0,
) -> TensorDiff:
    """Compare two tensors value by value, chunk by chunk.

    Numbers of two types (float32 against its float16 conversion) are compared by value in
    float64 (complex128), wider than either; ``dtype`` keeps both types, for the caller to note.
    """
    dtypes = (str(a.dtype.newbyteorder("=")), str(b.dtype.newbyteorder("=")))  # types; byte order is storage
    shapes = (tuple(a.shape), tuple(b.shape))
    if shapes[0] != shapes[1]:
        return TensorDiff(name, other, "shape", dtypes, shapes)
    kinds = (numeric_kind(a.dtype), numeric_kind(b.dtype))
    if None in kinds:
        if dtypes[0] == dtypes[1] and a.tolist() == b.tolist():  # strings, records: equal or not
            return TensorDiff(name, other, "equal", dtypes, shapes)
        return TensorDiff(name, other, "different" if dtypes[0] == dtypes[1] else "dtype", dtypes, shapes)
    if a.dtype == b.dtype and fused_real(a.dtype) and identical(a, b):
        cosine = 1.0 if any_nonzero(chunks(a)) else None  # None, as for any tensor of zeros (norm 0)
        return TensorDiff(name, other, "equal", dtypes, shapes, 0.0, 0.0, cosine, 0, moved)
    figures = diff_partial(a, b, rtol, atol)
    status = "equal" if not figures.mismatched else "different"
    measured = (figures.max_abs, figures.relative_l2, figures.cosine, figures.mismatched)
    return TensorDiff(name, other, status, dtypes, shapes, *measured, moved)


def diff_order(tensor: TensorDiff) -> tuple[int, float]:
    """Most changed first: different tensors by relative L2 change (None: from zero, first), mismatches, equal."""
    if tensor.status == "different":
        return 0, -(math.inf if tensor.relative_l2 is None else tensor.relative_l2)
    return {"shape": 1, "dtype": 2}.get(tensor.status, 3), 0.0


@dataclass
class CheckpointDiff:
    """Two checkpoints compared tensor by tensor: matched pairs, and what only one side has."""

    a: str
    b: str
    rtol: float
    atol: float
    tensors: list[TensorDiff]
    only_a: list[str]
    only_b: list[str]
    matched_by: str  # "name", or "layer model" when names were normalised across frameworks
    _repr_html_ = diff_html

    @property
    def equal(self) -> bool:
        return not self.only_a and not self.only_b and all(tensor.status == "equal" for tensor in self.tensors)

    def to_json(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "rtol": self.rtol,
            "atol": self.atol,
            "equal": self.equal,
            "matched_by": self.matched_by,
            "tensors": [tensor.to_json() for tensor in self.tensors],
            "only_a": self.only_a,
            "only_b": self.only_b,
        }


def _same_layout(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, str | None]:
    """A and B, A moved to B's layout when its shape is B's after the TensorFlow <-> PyTorch permutation.

    Same-named tensors of different shapes are one framework's layout against the
    other's when a conversion kept the names (``--layout pytorch --names keep``).
    """
    if a.shape != b.shape and a.ndim == b.ndim:
        for order in LAYOUT_PERMUTATIONS.get(a.ndim, ()):
            if tuple(a.shape[axis] for axis in order) == b.shape:
                return a.transpose(order), b, f"A permuted {list(order)}"
    return a, b, None


def _compare_by_name(a: Checkpoint, b: Checkpoint, name: str, rtol: float, atol: float) -> TensorDiff:
    left, right, moved = _same_layout(a[name], b[name])
    return tensor_diff(name, name, left, right, moved, rtol=rtol, atol=atol)


def _compare_planned(
    a: Checkpoint, b: Checkpoint, mine: PlannedTensor, theirs: PlannedTensor, rtol: float, atol: float
) -> TensorDiff:
    """Two tensors the layer model matched, both in PyTorch's layout."""
    moved = None if mine.permutation == theirs.permutation else "both in PyTorch's layout"
    left, right = mine.transform(a[mine.source]), theirs.transform(b[theirs.source])
    return tensor_diff(mine.source, theirs.source, left, right, moved, rtol=rtol, atol=atol)


def canonical_names(ckpt: Checkpoint, names: set[str]) -> dict[str, PlannedTensor]:
    """The tensors ``names`` under PyTorch-convention names, each with its move to PyTorch's layout."""
    from weightscope.convert import plan

    recorded = {name: found for name in names if (found := ckpt.framework_name(name)) is not None}
    if recorded:  # the format says which layer each tensor is of, and its layout (a TFLite model's operators)
        return {key: _recorded(ckpt, name, key, order) for name, (key, order) in recorded.items()}
    planned, _, _ = plan(ckpt, layout="pytorch", names="pytorch", include_optimizer=True)
    by_name = {tensor.name: tensor for tensor in planned if tensor.source in names}
    prefixes = {name.split(".", 1)[0] for name in by_name}
    if len(by_name) > 1 and len(prefixes) == 1 and all("." in name for name in by_name):
        prefix = prefixes.pop() + "."  # Keras's model name in front of every layer
        by_name = {name.removeprefix(prefix): tensor for name, tensor in by_name.items()}
    return by_name


def _recorded(ckpt: Checkpoint, name: str, key: str, order: tuple[int, ...] | None) -> PlannedTensor:
    """Tensor ``name`` as ``key``, its axes taken in ``order`` (None: as they are)."""
    from weightscope.convert import PlannedTensor

    info = ckpt.info(name)
    shape = info.shape if order is None else tuple(info.shape[axis] for axis in order)
    how = "recorded by the format" + ("" if order is None else f": axes {list(order)}")
    return PlannedTensor(key, name, info.dtype, shape, order, None, how)


def checkpoint_diff(
    a: Checkpoint,
    b: Checkpoint,
    rtol: float = 0.0,
    atol: float = 0.0,
    include_optimizer: bool = False,
    advance: Callable[[int, int], None] | None = None,
) -> CheckpointDiff:
    """Compare the weights (and with ``include_optimizer`` the optimizer state) of ``a`` and ``b``.

    Tensors are matched by name first; those left over on both sides (a TensorFlow
    checkpoint against its PyTorch conversion) by the layer model: both renamed to
    PyTorch's convention and laid out as PyTorch lays them out, so ``layer1/kernel``
    meets ``layer1.weight``, transposed. Bookkeeping (``global_step``) is never compared. ``advance(2, nbytes)``
    is told of each pair compared, the bytes of both.
    """
    kinds = ("parameter", "optimizer") if include_optimizer else ("parameter",)

    def compared(ckpt: Checkpoint) -> list[str]:
        return [name for name in ckpt if ckpt.role(name).kind in kinds]

    names_a, names_b = compared(a), compared(b)
    common = set(names_a) & set(names_b)
    # Each comparison reads its own pair inside its task: reading them all first would hold
    # every inflated (or downloaded) tensor of both checkpoints at once.
    jobs: list[Callable[[], TensorDiff]] = [
        functools.partial(_compare_by_name, a, b, name, rtol, atol) for name in names_a if name in common
    ]
    rest_a = {name for name in names_a if name not in common}
    rest_b = {name for name in names_b if name not in common}
    matched_by = "name"
    if rest_a and rest_b:
        canonical_a, canonical_b = canonical_names(a, rest_a), canonical_names(b, rest_b)
        for key, tensor in canonical_a.items():
            if key in canonical_b:
                other = canonical_b[key]
                jobs.append(functools.partial(_compare_planned, a, b, tensor, other, rtol, atol))
                rest_a.discard(tensor.source)
                rest_b.discard(other.source)
                matched_by = "name and layer model" if common else "layer model"

    def run(job: Callable[[], TensorDiff]) -> TensorDiff:
        tensor = job()
        if advance is not None:
            advance(2, a.info(tensor.name).nbytes + b.info(tensor.other).nbytes)
        return tensor

    with ThreadPoolExecutor(_workers()) as pool:
        tensors = list(pool.map(run, jobs))
    only_a = [name for name in names_a if name in rest_a]
    only_b = [name for name in names_b if name in rest_b]
    return CheckpointDiff(str(a.path), str(b.path), rtol, atol, tensors, only_a, only_b, matched_by)
