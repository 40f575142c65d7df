"""A tensor's values a piece at a time, and the fused kernels that take ``stats``' and ``diff``'s figures of them.

``chunks`` cuts a tensor's flat values into pieces of ``CHUNK_ELEMENTS`` (views of a mapped
tensor, never a copy of the whole). The fused kernels cut a floating-point chunk further,
into blocks of ``BLOCK_ELEMENTS`` that stay in the core's cache while every figure is
taken of them in turn. Exact figures (min, max, zeros) are taken in the stored type
(float32 at most: narrower floats are widened to it, exactly); NaN and infinity show in
the min and max, and a block holding either is handed back for the caller's general path.
Only the sums are widened to float64, into a per-thread buffer, and added by BLAS dot
products ``DOT_ELEMENTS`` at a time (a longer one starts BLAS threads of its own, which
cost more than they add); the products of float32 values are exact in float64. The sum of
squared deviations follows as ``a · a - (a · 1)² / n`` unless the mean dominates the
spread, when the block's deviations from its mean are summed instead. Two tensors'
difference takes the same path, and blocks (and whole tensors) whose bytes are the same
are recognised by a byte compare before any arithmetic.

Where the package was built with its C kernel (``weightscope._kernels``, optional: it needs
a C compiler at install), a block's figures, of one tensor or of two, are taken by it
instead, in one pass over blocks of ``KERNEL_ELEMENTS`` with the interpreter's lock
released: the same figures (float64 sums in a fixed lane order; min, max and zeros in the
stored type; a pair's values widened to float64), at the speed of one numpy reduction,
and threads run side by side instead of taking turns at the lock between numpy's many
small calls. Its pass over a pair needs no byte compare first: equal blocks give equal
sums and no gap by themselves.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from typing import TypeVar

import numpy as np

from weightscope.dtypes import numeric_kind

T = TypeVar("T")

try:
    from weightscope import _kernels
except ImportError:  # built without a C compiler: the numpy path below
    _kernels = None  # type: ignore[assignment]

RUN_CHUNKS = 64  # the most chunks a thread takes at a time (``run_chunks``)
CHUNK_ELEMENTS = 1 << 19  # 512 Ki elements: 4 MiB once widened to float64, so a chunk stays in cache
# 32 Ki elements: a float32 block and the float64 buffers of the fused paths (two operands and their difference),
# under 1 MiB together, stay in a core's L2 cache while the block's figures are taken one after another.
BLOCK_ELEMENTS = 1 << 15
# The mean may dominate the spread this much (sum of squares / sum of squared deviations) before the deviations
# are summed from the mean rather than derived from the sum of squares: 64 costs at most 6 bits of 53.
CANCELLATION = 64.0
# OpenBLAS computes a dot product of up to 10,000 elements on the calling thread, and wakes threads of its own for
# a longer one: 8 times slower at 32 Ki elements on this 2-core machine, and worse beside this module's threads.
DOT_ELEMENTS = 8192
# 256 Ki elements (1 MiB of float32) a call of the C kernel: its cost per call a few percent of the pass.
KERNEL_ELEMENTS = 1 << 18
_FLOAT32, _FLOAT64 = np.dtype(np.float32), np.dtype(np.float64)
_ONES = np.ones(DOT_ELEMENTS)
_ONES.flags.writeable = False

# A floating-point chunk's fused figures: count, sum, mean, squared deviations, min, max, sum of squares, zeros.
FloatFigures = tuple[int, float, float, float, float, float, float, int]
# Two pieces' fused figures: max |a - b|, values outside the tolerance, a · b, a · a, b · b, (a - b) · (a - b).
PairFigures = tuple[float, int, float, float, float, float]


def chunks(array: np.ndarray, elements: int = CHUNK_ELEMENTS) -> Iterator[np.ndarray]:
    """The array's values as consecutive flat pieces of at most ``elements``, in C order.

    A contiguous array (a memory-mapped tensor) is sliced without copying; any other is
    cut along its first axis, so only one piece is ever copied at a time.
    """
    if array.ndim == 0:
        yield array.reshape(1)
        return
    if array.flags.c_contiguous:
        flat = array.reshape(-1)
        for start in range(0, flat.size, elements):
            yield flat[start : start + elements]
        return
    rows = max(1, elements // max(1, math.prod(array.shape[1:])))
    for start in range(0, array.shape[0], rows):
        yield from chunks(np.ascontiguousarray(array[start : start + rows]), elements)


def run_chunks(array: np.ndarray, elements: int, threads: int) -> int:
    """How many of the array's chunks (of ``elements``) a thread takes at a time from a pool of ``threads``: up to
    ``RUN_CHUNKS``, and at least two runs a thread (a tensor of 64 MiB still spreads over them); one where each chunk
    is a copy (a strided array's). Handed one at a time, two threads summed a mapped 2 GiB at 1.23x one thread; in
    runs of 16, 1.66x; of 64, 1.78x (numpy's own sum on two threads: 1.59x)."""
    if not array.flags.c_contiguous:
        return 1
    return max(1, min(RUN_CHUNKS, -(-array.size // elements) // (2 * threads)))


def aligned_chunks(
    first: Iterator[np.ndarray], second: Iterator[np.ndarray]
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Pieces of two flat value streams of equal length, cut at the same element positions."""
    left = right = np.empty(0)
    while True:
        if not left.size:
            left = next(first, None)  # type: ignore[arg-type]
        if not right.size:
            right = next(second, None)  # type: ignore[arg-type]
        if left is None or right is None:
            return
        length = min(left.size, right.size)
        yield left[:length], right[:length]
        left, right = left[length:], right[length:]


def in_step(steps: Sequence[Generator[None, None, T]]) -> list[T]:
    """Run the generators a step each in turn until every one has returned; what each returned, in order. Steps
    that each take the next chunk of their arrays (``analysis.stats_steps``) so work on the same positions of
    several arrays together, while those chunks are in cache; each generator still takes its own in order."""
    results: list[T | None] = [None] * len(steps)
    live = list(enumerate(steps))
    while live:
        going = []
        for number, step in live:
            try:
                next(step)
            except StopIteration as done:
                results[number] = done.value
            else:
                going.append((number, step))
        live = going
    return results  # type: ignore[return-value]  # every one has returned


def widened(chunk: np.ndarray) -> np.ndarray:
    """The chunk as float64 (or complex128): bfloat16, float8 and float16 need widening to add up."""
    if chunk.dtype.kind == "c":
        return chunk.astype(np.complex128)
    return chunk.astype(np.float64)


class _Scratch(threading.local):
    """One thread's buffers for the fused paths, a block each: two operands widened to float64, their difference,
    a block narrowed to float32, flags."""

    def __init__(self) -> None:
        self.wide = np.empty(max(BLOCK_ELEMENTS, KERNEL_ELEMENTS))
        self.other = np.empty(max(BLOCK_ELEMENTS, KERNEL_ELEMENTS))
        self.gap = np.empty(BLOCK_ELEMENTS)
        self.single = np.empty(max(BLOCK_ELEMENTS, KERNEL_ELEMENTS), np.float32)
        self.flags = np.empty(BLOCK_ELEMENTS, np.bool_)


_SCRATCH = _Scratch()


def fused_float(dtype: np.dtype) -> bool:
    """Whether values of ``dtype`` (a floating-point type) take the fused path: all but ``longdouble``."""
    return dtype.itemsize <= 4 or dtype.newbyteorder("=") == _FLOAT64


def fused_real(dtype: np.dtype) -> bool:
    """Whether values of ``dtype`` take the fused path of a difference: real numbers, but ``longdouble``."""
    return numeric_kind(dtype) in ("f", "i", "b") and dtype.itemsize <= 8


def _as_float64(block: np.ndarray, buffer: np.ndarray) -> np.ndarray:
    """The block as float64: itself if it is, else widened into ``buffer``."""
    if block.dtype == _FLOAT64:
        return block
    wide = buffer[: block.size]
    np.copyto(wide, block, casting="unsafe")
    return wide


def dot(a: np.ndarray, b: np.ndarray) -> float:
    """``a · b`` of two float64 vectors, by BLAS ``DOT_ELEMENTS`` at a time."""
    if a.size <= DOT_ELEMENTS:
        return float(np.dot(a, b))
    return sum(float(np.dot(a[start : start + DOT_ELEMENTS], b[start : start + DOT_ELEMENTS]))
               for start in range(0, a.size, DOT_ELEMENTS))  # fmt: skip


def total(a: np.ndarray) -> float:
    """The sum of a float64 vector, as dot products with ones: at BLAS speed, faster than numpy's add.reduce."""
    ones = _ONES[: min(a.size, DOT_ELEMENTS)]
    if a.size <= DOT_ELEMENTS:
        return float(np.dot(a, ones))
    return sum(float(np.dot(a[start : start + DOT_ELEMENTS], ones[: a.size - start]))
               for start in range(0, a.size, DOT_ELEMENTS))  # fmt: skip


def fused_block_elements() -> int:
    """The values a block of the fused paths holds: the C kernel's, or where it was not built, the numpy path's."""
    return BLOCK_ELEMENTS if _kernels is None else KERNEL_ELEMENTS


def float_figures(flat: np.ndarray) -> tuple[FloatFigures | None, list[np.ndarray]]:
    """A flat floating-point chunk's figures over the blocks the fused path took (None if it took none), and the
    blocks it left (holding a NaN or an infinity, or values whose squares overflow) for the general path."""
    count = zeros = 0
    sum_ = squares = 0.0
    low, high = math.inf, -math.inf
    blocks: list[tuple[int, float, float]] = []  # each fused block's size, mean and squared deviations
    left: list[np.ndarray] = []
    size = fused_block_elements()
    figures_of = _block_figures if _kernels is None else _kernel_figures
    for start in range(0, flat.size, size):
        block = flat[start : start + size]
        figures = figures_of(block)
        if figures is None:
            left.append(block)
            continue
        block_sum, block_squares, m2, block_low, block_high, block_zeros = figures
        blocks.append((block.size, block_sum / block.size, m2))
        count += block.size
        sum_ += block_sum
        squares += block_squares
        zeros += block_zeros
        low, high = min(low, block_low), max(high, block_high)
    if not count:
        return None, left
    mean = sum_ / count  # Chan's parallel formula over the blocks at once
    m2 = sum(deviations + size * (block_mean - mean) ** 2 for size, block_mean, deviations in blocks)
    return (count, sum_, mean, m2, low, high, squares, zeros), left


BlockFigures = tuple[float, float, float, float, float, int]  # sum, squares, squared deviations, min, max, zeros


def _exact(block: np.ndarray) -> np.ndarray:
    """The block as native float32 or float64, exactly: itself, or copied into this thread's buffer."""
    if block.dtype in (_FLOAT32, _FLOAT64):
        return block
    if block.dtype.itemsize <= 4:  # float16, bfloat16, float8, float32 in the other byte order: exact in float32
        exact = _SCRATCH.single[: block.size]
        np.copyto(exact, block, casting="unsafe")
        return exact
    return _as_float64(block, _SCRATCH.wide)


def _kernel_figures(block: np.ndarray) -> BlockFigures | None:
    """``_block_figures`` by the C kernel: one pass, two where the mean dominates the spread."""
    exact = _exact(block)
    figures = _kernels.block_figures(exact)
    if figures is None:
        return None
    sum_, squares, low, high, zeros = figures
    return (*_spread(sum_, squares, block.size, lambda mean: _kernels.deviations(exact, mean)), low, high, zeros)


def _block_figures(block: np.ndarray) -> BlockFigures | None:
    """A block's sum, sum of squares, sum of squared deviations, min, max and zeros, or None (see above)."""
    scratch, size = _SCRATCH, block.size
    exact = _exact(block)
    low, high = float(np.minimum.reduce(exact)), float(np.maximum.reduce(exact))  # a NaN shows in both
    if not (math.isfinite(low) and math.isfinite(high)):
        return None
    wide = _as_float64(exact, scratch.wide)
    sum_, squares = total(wide), dot(wide, wide)
    if not math.isfinite(squares):  # float64 values beyond 1e154
        return None
    flags = scratch.flags[:size]
    np.equal(exact, 0, out=flags)
    zeros = int(np.count_nonzero(flags))

    def deviations(mean: float) -> tuple[float, float]:
        gaps = scratch.wide[:size]
        np.subtract(wide, mean, out=gaps)
        return total(gaps), dot(gaps, gaps)

    return (*_spread(sum_, squares, size, deviations), low, high, zeros)


def _spread(
    sum_: float, squares: float, size: int, deviations: Callable[[float], tuple[float, float]]
) -> tuple[float, float, float]:
    """A block's sum, sum of squares and squared deviations from its mean: ``squares - sum · mean``, unless the mean
    dominates the spread, when ``deviations(mean)`` (their sum and sum of squares) sums the deviations themselves,
    lest the difference cancel."""
    mean = sum_ / size
    m2 = squares - sum_ * mean
    if m2 * CANCELLATION < squares:
        rest, gaps = deviations(mean)
        m2 = gaps - rest * rest / size
    return sum_, squares, max(0.0, m2)


def pair_figures(
    a: np.ndarray, b: np.ndarray, rtol: float, atol: float
) -> tuple[PairFigures, list[tuple[np.ndarray, np.ndarray]]]:
    """Two flat real pieces' figures over the blocks the fused path took, and the pairs of blocks it left (a NaN
    or an infinity in either, or squares overflowing) for the general path. ``rtol`` and ``atol`` >= 0."""
    sums = [0.0, 0.0, 0.0, 0.0]  # a · b, a · a, b · b, gap · gap
    max_abs, mismatched = 0.0, 0
    left: list[tuple[np.ndarray, np.ndarray]] = []
    size = fused_block_elements()
    figures_of = _block_pair if _kernels is None else _kernel_pair
    for start in range(0, a.size, size):
        pair = a[start : start + size], b[start : start + size]
        figures = figures_of(*pair, rtol, atol)
        if figures is None:
            left.append(pair)
            continue
        for index in range(4):
            sums[index] += figures[2 + index]
        max_abs, mismatched = max(max_abs, figures[0]), mismatched + figures[1]
    return (max_abs, mismatched, sums[0], sums[1], sums[2], sums[3]), left


def _kernel_pair(a: np.ndarray, b: np.ndarray, rtol: float, atol: float) -> PairFigures | None:
    """``_block_pair`` by the C kernel: one pass over both, widened to float64 first unless both are native float32
    or both float64."""
    if a.dtype != b.dtype or a.dtype not in (_FLOAT32, _FLOAT64):
        a, b = _as_float64(a, _SCRATCH.wide), _as_float64(b, _SCRATCH.other)
    return _kernels.pair_figures(a, b, rtol, atol)


def _block_pair(a: np.ndarray, b: np.ndarray, rtol: float, atol: float) -> PairFigures | None:
    scratch, size = _SCRATCH, a.size
    left = _as_float64(a, scratch.wide)
    a_squares = dot(left, left)
    if a.dtype == b.dtype and math.isfinite(a_squares) and same_bytes(a, b, scratch.flags[:size]):
        return 0.0, 0, a_squares, a_squares, a_squares, 0.0  # the same values: no gap, and the three sums are one
    right = _as_float64(b, scratch.other)
    b_squares = dot(right, right)
    if not (math.isfinite(a_squares) and math.isfinite(b_squares)):
        return None
    products = dot(left, right)
    gap = scratch.gap[:size]
    np.subtract(left, right, out=gap)
    np.abs(gap, out=gap)
    gap_squares, max_abs = dot(gap, gap), float(np.maximum.reduce(gap))
    bound: np.ndarray | float = 0.0
    if rtol or atol:  # as numpy's isclose: within atol + rtol * |b|
        bound = scratch.other[:size]
        np.abs(right, out=bound)
        np.multiply(bound, rtol, out=bound)
        np.add(bound, atol, out=bound)
    flags = scratch.flags[:size]
    np.greater(gap, bound, out=flags)  # finite values: a - b is 0 exactly when a == b
    return max_abs, int(np.count_nonzero(flags)), products, a_squares, b_squares, gap_squares


def same_bytes(a: np.ndarray, b: np.ndarray, flags: np.ndarray | None = None) -> bool:
    """Whether two flat pieces of one type hold the same bytes, compared as unsigned integers of the type's width."""
    unsigned = np.dtype(f"u{a.dtype.itemsize}")
    return not np.not_equal(a.view(unsigned), b.view(unsigned), out=flags).any()


def identical(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two arrays of one real type and shape hold the same bytes, at the speed of a memory compare: chunk
    by chunk, stopping at the first that differs."""
    return all(same_bytes(left, right) for left, right in aligned_chunks(chunks(a), chunks(b)))


def any_nonzero(pieces: Iterable[np.ndarray]) -> bool:
    """Whether real values hold a finite value other than 0, looked for a piece at a time until one is found."""
    for piece in pieces:
        wide = widened(piece)
        if np.count_nonzero(np.isfinite(wide) & (wide != 0)):
            return True
    return False
