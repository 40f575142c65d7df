"""Outliers and health of every weight: kurtosis, super weights, dead rows and columns, NaN/Inf, flags.

``checkpoint_health(ckpt)`` gives, per floating tensor (weights only unless ``include_all``):

* ``count`` finite values, ``nans``, ``infs``; ``mean``, ``std`` (population) and the excess
  ``kurtosis`` (Fisher's, population moments: 0 for a normal distribution) of the finite values;
* ``max_abs`` and ``max_over_std`` = ``max_abs / std``;
* ``super_weights``: the ``top`` largest-magnitude finite entries, each with its coordinates in
  the tensor's shape, its value and ``ratio`` = ``|value| / std`` (ties: the first in C order first);
* for a tensor of two or more axes, seen as a matrix ``(shape[0], prod(shape[1:]))`` (a Linear
  ``(out, in)`` weight as it is; a conv kernel's columns are its ``in x kh x kw`` positions, flat):
  ``dead_rows`` and ``dead_columns``, each ``{zero, constant, indices}`` — how many rows (columns)
  are all zero, how many hold one other value throughout, and the first ``LISTED`` of their indices
  (columns: the flat index over ``shape[1:]``). A row is judged when it has two or more values, a
  column when there are two or more rows;
* ``spectral_norm``: the largest singular value of that matrix, by power iteration on ``AᵀA`` kept
  as a Krylov basis (Lanczos, fully reorthogonalised; float64, a fixed start vector) until the
  estimate moves by less than ``TOLERANCE`` relatively or after ``ITERATIONS`` passes over the
  matrix; ``power_iterations`` says how many it took. A lower bound always, to about 1e-12 once
  converged (tens of passes where plain power iteration takes hundreds: a random 4096 x 1024
  matrix, 77 against 500+; a matrix with rows of more than ``BASIS_BYTES / 8 / ITERATIONS`` values
  gets fewer passes, as many as fit its basis in ``BASIS_BYTES``). For a conv kernel this is the
  ``(out, in x kh x kw)`` matrix's norm, not the per-position figures of the spectra module's;
* ``flags``: what the ``Rules`` find: ``nan``, ``inf``, ``exploding variance`` (std x sqrt(fan-in)
  above ``Rules.variance``: He/LeCun initialisation gives about 1 to 1.4, so a unit input's output
  grows that many times more), ``near-zero spectral norm`` (below ``Rules.spectral``: the layer
  passes almost nothing on), ``super weight`` (max/std above ``Rules.super_ratio``; a normal
  tensor of 10⁹ values has about 6), ``dead rows``, ``dead columns``.

How it runs: as ``weightscope.runs``, each tensor is cut into row chunks of about 64 MiB
(``weightscope.lazy.TensorSource``: byte ranges, no open handles); a task computes one chunk's
partial figures (moments, counts, its top entries, its dead rows, which columns hold one value in it:
a bit each, and its first row in the stored precision)
and one more task per matrix its power iteration, reading the rows again on each pass. The client
merges the partials in chunk order, so results are the same bit for bit on local threads (the
default), in one thread (``scheduler="sync"``), in processes or on a ``dask.distributed`` cluster.
A remote checkpoint (``s3://``, ``https://``, ``hf://``) is read on local threads only, each tensor whole
through the open checkpoint (``lazy.OpenedSource``): a worker elsewhere cannot reopen it by path.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from weightscope.analysis import CHUNK_ELEMENTS, widened
from weightscope.dtypes import numeric_kind
from weightscope.errors import WeightscopeError
from weightscope.lazy import CHUNK_BYTES, TensorSource, tensor_source
from weightscope.notebook import health_html
from weightscope.output import json_float

if TYPE_CHECKING:
    from weightscope.checkpoint import Checkpoint

TOP = 5  # super weights reported per tensor
LISTED = 20  # dead row / column indices kept per tensor
ITERATIONS = 128  # at most: the basis holds this many vectors of a row's length
TOLERANCE = 1e-12
HELD_BYTES = 128 << 20  # a matrix up to this size as float64 is widened once for all passes
BASIS_BYTES = 64 << 20  # the Krylov basis's vectors stop there (at least 2): a lower bound for very wide matrices
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Rules:
    """The thresholds that flag a tensor (see the module's description)."""

    variance: float = 10.0
    spectral: float = 1e-4
    super_ratio: float = 50.0


@dataclass
class _Lines:
    """Dead rows (or columns): how many are zero, how many constant but not zero, the first indices of either."""

    zero: int = 0
    constant: int = 0
    indices: list[int] = field(default_factory=list)

    def add(self, zero: np.ndarray, constant: np.ndarray, offset: int) -> None:
        self.zero += int(zero.sum())
        self.constant += int(constant.sum())
        if len(self.indices) < LISTED:
            found = np.flatnonzero(zero | constant)[: LISTED - len(self.indices)]
            self.indices.extend(int(index) + offset for index in found)

    def to_json(self) -> dict[str, Any]:
        return {"zero": self.zero, "constant": self.constant, "indices": self.indices}


@dataclass
class HealthPartial:
    """Figures of some rows of a tensor; ``merge`` joins those of the rows after them."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0  # sums of the powers of the deviations from the mean
    m3: float = 0.0
    m4: float = 0.0
    nans: int = 0
    infs: int = 0
    top: list[tuple[float, int]] = field(default_factory=list)  # (value, flat index), largest |value| first
    rows: _Lines = field(default_factory=_Lines)
    column_value: np.ndarray | None = None  # the first row, as float32 where that holds the stored values
    column_constant: np.ndarray | None = None  # packed bits: the column holds column_value in every row

    def merge(self, other: HealthPartial, top: int) -> HealthPartial:
        a, b = self, other
        n = a.count + b.count
        merged = HealthPartial(nans=a.nans + b.nans, infs=a.infs + b.infs, count=n)
        if not a.count or not b.count:
            moments = b if a.count == 0 else a
            merged.mean, merged.m2, merged.m3, merged.m4 = moments.mean, moments.m2, moments.m3, moments.m4
        else:
            delta, na, nb = b.mean - a.mean, a.count, b.count
            merged.mean = a.mean + delta * nb / n
            merged.m2 = a.m2 + b.m2 + delta**2 * na * nb / n
            merged.m3 = a.m3 + b.m3 + delta**3 * na * nb * (na - nb) / n**2 + 3 * delta * (na * b.m2 - nb * a.m2) / n
            merged.m4 = (
                a.m4
                + b.m4
                + delta**4 * na * nb * (na * na - na * nb + nb * nb) / n**3
                + 6 * delta**2 * (na * na * b.m2 + nb * nb * a.m2) / n**2
                + 4 * delta * (na * b.m3 - nb * a.m3) / n
            )
        merged.top = _largest(a.top + b.top, top)
        merged.rows = _Lines(a.rows.zero + b.rows.zero, a.rows.constant + b.rows.constant, a.rows.indices[:])
        merged.rows.indices.extend(b.rows.indices[: LISTED - len(merged.rows.indices)])
        if a.column_value is None or b.column_value is None or a.column_constant is None or b.column_constant is None:
            merged.column_value = a.column_value if b.column_value is None else b.column_value
            merged.column_constant = a.column_constant if b.column_constant is None else b.column_constant
        else:
            same = np.packbits(a.column_value == b.column_value)
            merged.column_value = a.column_value
            merged.column_constant = a.column_constant & b.column_constant & same
        return merged


def _largest(entries: list[tuple[float, int]], top: int) -> list[tuple[float, int]]:
    return sorted(entries, key=lambda entry: (-abs(entry[0]), entry[1]))[:top]


def _blocks(
    source: TensorSource, start: int, stop: int, values: np.ndarray | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """Rows ``[start, stop)`` (read now unless given as ``values``) as float64 matrices of about
    ``CHUNK_ELEMENTS`` values, each with its first row's index: one widened block at a time."""
    values = source.read_rows(start, stop) if values is None else values
    width = max(1, source.row_elements) if source.shape else 1
    matrix = values.reshape(-1, width)
    step = max(1, CHUNK_ELEMENTS // width)
    for first in range(0, matrix.shape[0], step):
        yield start + first, widened(matrix[first : first + step])


def _block_partial(block: np.ndarray, first_row: int, top: int, matrix: bool, narrow: bool) -> HealthPartial:
    flat = block.reshape(-1)
    finite_mask = np.isfinite(flat)
    finite = flat[finite_mask]
    nans = int(np.isnan(flat).sum())
    partial = HealthPartial(count=int(finite.size), nans=nans, infs=int(flat.size - finite.size - nans))
    if finite.size:
        partial.mean = float(finite.mean())
        deviation = finite - partial.mean
        squared = deviation * deviation
        partial.m2 = float(squared.sum())
        partial.m3 = float((squared * deviation).sum())
        partial.m4 = float((squared * squared).sum())
        magnitude = np.where(finite_mask, np.abs(flat), -1.0)
        keep = min(top, finite.size)
        kth = np.partition(magnitude, flat.size - keep)[flat.size - keep]  # ties: the first in C order
        above = np.flatnonzero(magnitude > kth)
        chosen = np.concatenate([above, np.flatnonzero(magnitude == kth)[: keep - above.size]])
        offset = first_row * block.shape[1]
        partial.top = _largest([(float(flat[i]), int(i) + offset) for i in chosen if finite_mask[i]], top)
    if matrix:
        low, high = block.min(axis=1), block.max(axis=1)  # NaN in a row: neither zero nor constant
        if block.shape[1] >= 2:
            zero = (low == 0) & (high == 0)
            partial.rows.add(zero, (low == high) & ~zero, first_row)
        first = block[0].astype(np.float32) if narrow else block[0]  # exact: the values were no wider
        partial.column_value = first
        partial.column_constant = np.packbits((block == block[0]).all(axis=0))  # NaN: never constant
    return partial


@dataclass(frozen=True)
class _Chunk:
    """A task: the partial figures of rows ``[start, stop)`` of one tensor. Plain values only."""

    source: TensorSource
    start: int
    stop: int
    top: int


@dataclass(frozen=True)
class Failure:
    """A tensor that could not be read (damaged): the error's one line and its exit status."""

    message: str
    exit_status: int


def _guarded(task: Callable[[Any], Any], job: Any) -> Any:
    """The task's result, or the typed error of a tensor that cannot be read as plain values any process can send."""
    try:
        return task(job)
    except WeightscopeError as error:
        return Failure(str(error), int(error.exit_status))


def chunk_job(job: _Chunk) -> HealthPartial:
    matrix, narrow = len(job.source.shape) >= 2, job.source.dtype.itemsize <= 4
    total = HealthPartial()
    for first, block in _blocks(job.source, job.start, job.stop):
        total = total.merge(_block_partial(block, first, job.top, matrix, narrow), job.top)
    return total


@dataclass(frozen=True)
class _Spectral:
    """A task: the spectral norm of one matrix by power iteration, reading its chunks on every pass."""

    source: TensorSource
    chunk_bytes: int


def spectral_job(job: _Spectral) -> tuple[float, int]:
    """``(sigma, passes)``: the largest singular value of the tensor seen as a matrix ``A``, and the passes
    over ``A`` it took: Lanczos on ``AᵀA`` (power iteration keeping every direction it went through, fully
    reorthogonalised), from a fixed start vector; the largest Ritz value, a lower bound rising to it."""
    source = job.source
    bounds = source.bounds(job.chunk_bytes)
    widened_bytes = source.shape[0] * source.row_elements * 8
    held = None if source.raw else source.read_rows(0, source.shape[0])  # a reader's tensor: read once
    if widened_bytes <= HELD_BYTES:  # widened once, not on every pass
        held = widened(source.read_rows(0, source.shape[0]) if held is None else held)

    def product(vector: np.ndarray) -> np.ndarray:
        if held is not None and held.dtype == np.float64:
            matrix = held.reshape(source.shape[0], -1)
            return matrix.T @ (matrix @ vector)
        total = np.zeros_like(vector)
        for start, stop in bounds:
            for _, block in _blocks(source, start, stop, None if held is None else held[start:stop]):
                total += block.T @ (block @ vector)
        return total

    start = np.random.default_rng(0).standard_normal(source.row_elements)
    basis = [start / np.linalg.norm(start)]
    alphas: list[float] = []
    betas: list[float] = []
    sigma = 0.0
    steps = min(ITERATIONS, max(2, BASIS_BYTES // (8 * source.row_elements)))
    for passes in range(1, steps + 1):
        following = product(basis[-1])
        alphas.append(float(basis[-1] @ following))
        seen = np.array(basis)
        for _ in range(2):  # twice is enough (Kahan): the Krylov basis stays orthonormal in floating point
            following -= seen.T @ (seen @ following)
        tridiagonal = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
        if not np.isfinite(tridiagonal).all():
            return math.nan, passes
        estimate = math.sqrt(max(float(np.linalg.eigvalsh(tridiagonal)[-1]), 0.0))
        length = float(np.linalg.norm(following))
        done = length <= 1e-14 * estimate * estimate or len(basis) == source.row_elements
        if done or abs(estimate - sigma) <= TOLERANCE * estimate:
            return estimate, passes
        sigma = estimate
        betas.append(length)
        basis.append(following / length)
    return sigma, steps


@dataclass(frozen=True)
class SuperWeight:
    coordinates: tuple[int, ...]
    value: float
    ratio: float | None  # |value| / std; None when std is 0

    def to_json(self) -> dict[str, Any]:
        return {"coordinates": list(self.coordinates), "value": self.value, "ratio": self.ratio}


@dataclass(frozen=True)
class TensorHealth:
    name: str
    dtype: str
    shape: tuple[int, ...]
    count: int
    nans: int
    infs: int
    mean: float | None
    std: float | None
    kurtosis: float | None
    max_abs: float | None
    max_over_std: float | None
    super_weights: list[SuperWeight]
    dead_rows: dict[str, Any] | None
    dead_columns: dict[str, Any] | None
    spectral_norm: float | None
    power_iterations: int | None
    flags: list[str]

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            key: json_float(value) if isinstance(value, float) else value for key, value in self.__dict__.items()
        }
        document["shape"] = list(self.shape)
        document["super_weights"] = [weight.to_json() for weight in self.super_weights]
        return document


def _coordinates(index: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(index, shape))


def _result(source: TensorSource, partial: HealthPartial, spectral: tuple[float, int] | None, rules: Rules) -> Any:
    n = partial.count
    std = math.sqrt(partial.m2 / n) if n else None
    kurtosis = n * partial.m4 / partial.m2**2 - 3.0 if n and partial.m2 > 0 else None
    max_abs = abs(partial.top[0][0]) if partial.top else None
    ratio = max_abs / std if max_abs is not None and std else None
    weights = [
        SuperWeight(_coordinates(index, source.shape), value, abs(value) / std if std else None)
        for value, index in partial.top
    ]
    rows = columns = None
    if len(source.shape) >= 2:
        rows = partial.rows.to_json() if source.row_elements >= 2 else None
        if source.shape[0] >= 2 and partial.column_value is not None and partial.column_constant is not None:
            constant = np.unpackbits(partial.column_constant, count=source.row_elements).astype(bool)
            zero = constant & (partial.column_value == 0)
            lines = _Lines()
            lines.add(zero, constant & ~zero, 0)
            columns = lines.to_json()
    sigma = spectral[0] if spectral is not None else None
    flags = ["nan"] * bool(partial.nans) + ["inf"] * bool(partial.infs)
    if std is not None and len(source.shape) >= 2 and std * math.sqrt(source.row_elements) > rules.variance:
        flags.append("exploding variance")
    if sigma is not None and sigma < rules.spectral:
        flags.append("near-zero spectral norm")
    if ratio is not None and ratio > rules.super_ratio:
        flags.append("super weight")
    flags += ["dead rows"] * bool(rows and rows["zero"] + rows["constant"])
    flags += ["dead columns"] * bool(columns and columns["zero"] + columns["constant"])
    return TensorHealth(
        source.name,
        str(source.dtype),
        source.shape,
        n,
        partial.nans,
        partial.infs,
        partial.mean if n else None,
        std,
        kurtosis,
        max_abs,
        ratio,
        weights,
        rows,
        columns,
        sigma if sigma is None or math.isfinite(sigma) else None,
        spectral[1] if spectral is not None else None,
        flags,
    )


@dataclass(frozen=True)
class Health:
    tensors: list[TensorHealth]
    tasks: int
    failed: dict[str, Failure] = field(default_factory=dict)  # tensors that could not be read, by name
    _repr_html_ = health_html

    @property
    def flagged(self) -> list[TensorHealth]:
        return [tensor for tensor in self.tensors if tensor.flags]

    def to_json(self) -> dict[str, Any]:
        failed = [{"name": name, "error": failure.message} for name, failure in self.failed.items()]
        return {"tensors": [tensor.to_json() for tensor in self.tensors], "failed": failed, "tasks": self.tasks}


def checkpoint_health(
    ckpt: Checkpoint,
    names: list[str] | None = None,
    *,
    pattern: str | None = None,
    include_all: bool = False,
    top: int = TOP,
    rules: Rules = Rules(),
    scheduler: str | None = None,
    client: Any = None,
    workers: int | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    progress: Progress | None = None,
) -> Health:
    """The health of ``names`` (default: the weights matching ``pattern``, all tensors with ``include_all``)
    of ``ckpt``: local threads by default, else ``weightscope.runs.execute``'s ``scheduler`` or ``client``."""
    from weightscope.blas import on_threads
    from weightscope.runs import execute, selected_names

    chosen = selected_names(ckpt, names or (), pattern, include_all)
    in_process = scheduler is None and client is None  # threads: a remote checkpoint read through ckpt
    sources = [tensor_source(ckpt, name, in_process=in_process) for name in chosen]
    sources = [source for source in sources if source.numeric and numeric_kind(source.dtype) == "f"]
    graph: dict[Any, Any] = {}
    keys: list[Any] = []
    for number, source in enumerate(sources):
        for chunk, (start, stop) in enumerate(source.bounds(chunk_bytes)):
            keys.append(("weightscope-health", number, chunk))
            graph[keys[-1]] = (_guarded, chunk_job, _Chunk(source, start, stop, top))
        if len(source.shape) >= 2 and source.shape[0] * source.row_elements:
            keys.append(("weightscope-health-spectral", number))
            graph[keys[-1]] = (_guarded, spectral_job, _Spectral(source, chunk_bytes))
    if scheduler is None and client is None:
        results = on_threads([functools.partial(*graph[key]) for key in keys], progress, workers)
    else:
        results = execute(graph, keys, scheduler=scheduler, client=client, workers=workers, progress=progress)
    partials: dict[int, HealthPartial] = {}
    spectra: dict[int, tuple[float, int]] = {}
    failed: dict[int, Failure] = {}
    for key, value in zip(keys, results, strict=True):
        if isinstance(value, Failure):
            failed.setdefault(key[1], value)
        elif key[0] == "weightscope-health":
            partials[key[1]] = partials[key[1]].merge(value, top) if key[1] in partials else value
        else:
            spectra[key[1]] = value
    tensors = [
        _result(source, partials.get(number, HealthPartial()), spectra.get(number), rules)
        for number, source in enumerate(sources)
        if number not in failed
    ]
    return Health(tensors, len(keys), {sources[number].name: failure for number, failure in sorted(failed.items())})
