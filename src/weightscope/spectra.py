"""Spectral metrics of weight matrices, as weightwatcher computes them, from the files alone.

For each weight matrix ``W`` (a dense layer's 2-D weight; a 4-D convolution kernel taken, as weightwatcher does,
as one matrix per spatial position, their singular values pooled) the singular values ``s`` and the empirical
spectral density (ESD: the eigenvalues ``s**2`` of ``W^T W``) give:

- ``spectral_norm`` (``s_max``), ``frobenius_norm`` (``sqrt(sum s**2)``), ``stable_rank``
  (``||W||_F**2 / s_max**2``; weightwatcher's ``stable_rank``; its ``spectral_norm`` and ``norm`` are the squares
  ``s_max**2`` and ``||W||_F**2``);
- ``entropy``: weightwatcher's ``matrix_entropy``, the Shannon entropy of ``p = s**2 / sum s**2`` over
  ``log(rank)``, 0 for one direction, 1 for all equal; ``effective_rank``: ``exp`` of the Shannon entropy of
  ``s / sum s`` (Roy and Vetterli's), a number of directions;
- ``alpha``, ``xmin``, ``ks_distance`` (``D``), ``alpha_error`` (``sigma``), ``tail``: the power-law fit
  ``p(x) ~ x**-alpha`` of the ESD's eigenvalues above 1e-5 by weightwatcher's own method (its default
  ``pl_package="ww"``, which replaced the ``powerlaw`` package's ``Fit``): for every candidate ``xmin`` among
  the eigenvalues, the maximum-likelihood ``alpha = 1 + n / sum log(x / xmin)`` over the ``n`` eigenvalues
  ``>= xmin``, and the ``xmin`` whose Kolmogorov-Smirnov distance between the fitted and the empirical tail is
  least; with fewer than 20 eigenvalues, its small-N variant (bias-corrected ``alpha = 1 + (n - 1) / ...``,
  tails of at least 8 values);
- ``mp_spikes``: weightwatcher's Marchenko-Pastur count (``analyze(mp_fit=True)``'s ``num_spikes``): the ESD
  scaled to mean 1, a linear-kernel density (bandwidth 0.1) fitted by the MP law's ``sigma`` on weightwatcher's
  grid and polished by Nelder-Mead, and the eigenvalues above the bulk edge plus its Tracy-Widom margin counted.

Convolutions: weightwatcher multiplies each kernel slice by ``1/sqrt(2)`` first (its ``conv2d_norm``, with
``conv2d_count`` 1), so its ``spectral_norm``, ``norm`` and ``xmin`` of a Conv2D are half the true figures given
here; ``alpha``, ``stable_rank``, ``entropy`` and the MP count do not change with a scale.

Singular values are exact (``numpy.linalg.svd`` in float64) unless ``top`` asks for only the largest ``k``: then
a randomized range finder (Halko, Martinsson and Tropp, with power iterations) gives them, each within
``error_bound`` of the true value, a bound computed, not assumed: ``||W - Q Q^T W||_F`` for the basis ``Q`` found
(Weyl: ``s_i(QQ^T W) <= s_i(W) <= s_i(QQ^T W) + ||(I - QQ^T) W||_2``). The power-law fit and MP count then see
only those ``k`` eigenvalues, and so do the entropy and effective rank (the MP count is not given); the norms
and stable rank stay exact.

A fused attention projection (``qkv``, ``c_attn``, ``query_key_value`` in its name) is split into its query,
key and value matrices, each with its own spectrum, as the model's forward splits its output (checked against
transformers' models): with a model folder's config.json (``Checkpoint.metadata``'s ``config.<key>``), by its
``model_type`` and head counts: GPT-NeoX, Bloom and Persimmon hold each head's q, k, v side by side; Falcon a
block per key/value head (its new decoder), per head, or q then one k and v (multi-query); GPT-BigCode q then one
k and v (multi-query) or per head; CodeGen 4 shards of q, v, k; any other ``qkv`` or ``c_attn`` (Phi-3's
grouped-query ``qkv_proj``, GPT-2's Conv1D ``c_attn`` along its second axis) q, k, v one after the other, of
``H * head_dim``, ``KV * head_dim`` and ``KV * head_dim`` rows. Without a config, a ``qkv`` or ``c_attn`` of one
side three times the other is cut in thirds (equal heads). Left whole, with a note saying why: a
``query_key_value`` of another model type or without a config (its layout differs between models), unequal
parts without a config, and a config whose heads do not give the stored rows.

Vectors (biases, norms' scales), embeddings (rows are lookups, not a map), tensors of other ranks and matrices
with fewer than 8 singular values, a conv kernel's pooled (weightwatcher's ``min_evals``), are skipped, each
with its reason, and so are matrices holding NaN or infinities (no SVD of them means anything). A matrix of
zeros has no power-law fit and an effective rank of 0.
"""

from __future__ import annotations

import functools
import json
import math
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from weightscope.checkpoint import Checkpoint
from weightscope.conventions import CONV1D_MODELS, EMBEDDING
from weightscope.dtypes import numeric_kind
from weightscope.formats import open_checkpoint
from weightscope.notebook import spectrum_html
from weightscope.output import json_float

MIN_EVALS = 8  # weightwatcher's min_evals: fewer singular values than this and a layer is skipped
EVALS_THRESHOLD = 1e-5  # weightwatcher's EVALS_THRESH: eigenvalues at or below are left out of the power-law fit
SMALL_N = 20  # weightwatcher's SMALL_N_CUTOFF: fewer eigenvalues than this and its small-N fit is used
EPSILON = 1e-10  # weightwatcher's EPSILON in matrix_entropy


@dataclass(frozen=True)
class Spectrum:
    """The spectral figures of one weight matrix (or a convolution's matrices, pooled); see the module."""

    name: str
    shape: tuple[int, ...]
    n: int  # the larger side of each matrix
    m: int  # the smaller
    matrices: int  # 1, or a convolution's spatial positions
    method: str  # "exact" or "randomized"
    error_bound: float  # every singular value is within this of the true one (0 for exact)
    singular_values: np.ndarray = field(repr=False)  # descending, all matrices' pooled
    spectral_norm: float
    frobenius_norm: float
    stable_rank: float
    entropy: float
    effective_rank: float
    alpha: float | None
    xmin: float | None
    ks_distance: float | None
    alpha_error: float | None
    tail: int | None  # eigenvalues >= xmin (weightwatcher's num_pl_spikes)
    mp_spikes: int | None
    mp_sigma: float | None
    note: str | None = None  # why a fused attention projection is not split into q, k, v
    _repr_html_ = spectrum_html

    def to_json(self, values: bool = False) -> dict[str, Any]:
        document: dict[str, Any] = {"name": self.name, "shape": list(self.shape)}
        for key in self.__dataclass_fields__:
            if key not in ("name", "shape", "singular_values"):
                value = getattr(self, key)
                document[key] = json_float(value) if isinstance(value, float) else value
        if values:
            document["singular_values"] = [float(value) for value in self.singular_values]
        return document


@dataclass(frozen=True)
class Skipped:
    name: str
    shape: tuple[int, ...]
    reason: str

    def to_json(self, values: bool = False) -> dict[str, Any]:
        """As ``Spectrum.to_json``'s (``values`` has none to add)."""
        return {"name": self.name, "shape": list(self.shape), "skipped": self.reason}


def skip_reason(name: str, shape: tuple[int, ...], kind: str | None) -> str | None:
    """Why a tensor gets no spectrum, or None if it does."""
    if kind == "i":
        return "integers (quantised weights? --dequantize gives their values)"
    if kind != "f":
        return "not a real floating-point tensor"
    if len(shape) not in (2, 4):
        return (
            "a vector (bias, norm scale)" if len(shape) < 2 else f"{len(shape)}-D: neither a matrix nor a conv kernel"
        )
    parent = name.rsplit(".", 1)[0] if "." in name else name
    if EMBEDDING.search(parent):
        return "an embedding: its rows are looked up, not a linear map"
    if _singular_value_count(shape) < MIN_EVALS:
        return f"fewer than {MIN_EVALS} singular values (weightwatcher's min_evals)"
    return None


def _singular_value_count(shape: tuple[int, ...]) -> int:
    """How many singular values a weight has: a conv kernel's slices' pooled (weightwatcher's M * rf)."""
    if len(shape) == 2:
        return min(shape)
    channels, spatial = (shape[:2], shape[2:]) if shape[0] + shape[1] >= shape[2] + shape[3] else (shape[2:], shape[:2])
    return min(channels) * spatial[0] * spatial[1]


def matrices(array: np.ndarray) -> Iterator[np.ndarray]:
    """The matrices weightwatcher takes from a weight: itself, or a conv kernel's one per spatial position.

    Channels are where weightwatcher finds them: on the two axes whose sizes add up to more (PyTorch's
    ``(out, in, kh, kw)``, or TensorFlow's ``(kh, kw, in, out)``).
    """
    if array.ndim == 2:
        yield array
        return
    if sum(array.shape[:2]) >= sum(array.shape[2:]):
        for i in range(array.shape[2]):
            for j in range(array.shape[3]):
                yield array[:, :, i, j]
    else:
        for i in range(array.shape[0]):
            for j in range(array.shape[1]):
                yield array[i, j]


def randomized_singular_values(
    matrix: np.ndarray, k: int, *, oversample: int = 10, iterations: int = 4, seed: int = 0
) -> tuple[np.ndarray, float]:
    """The ``k`` largest singular values (descending) and a bound on each one's error (see the module)."""
    generator = np.random.default_rng(seed)
    width = min(min(matrix.shape), k + oversample)
    basis, _ = np.linalg.qr(matrix @ generator.standard_normal((matrix.shape[1], width)))
    for _ in range(iterations):  # power iterations, re-orthonormalised: the basis turns to the top directions
        basis, _ = np.linalg.qr(matrix.T @ basis)
        basis, _ = np.linalg.qr(matrix @ basis)
    projected = basis.T @ matrix
    values = np.linalg.svd(projected, compute_uv=False)[:k]
    return values, float(np.linalg.norm(matrix - basis @ projected))


def _rank(values: np.ndarray, n: int) -> int:
    """weightwatcher's matrix_rank: singular values above ``max * n * eps``."""
    return int(np.count_nonzero(values > np.max(values) * n * np.finfo(np.float64).eps))


def matrix_entropy(values: np.ndarray, n: int) -> float:
    """weightwatcher's matrix_entropy of singular values ``values`` of matrices with larger side ``n``."""
    evals = values * values
    p = evals / np.sum(evals) + EPSILON
    return float(-np.sum(p * np.log(p)) / np.log(_rank(values, n) + EPSILON))


@dataclass(frozen=True)
class PowerLaw:
    alpha: float
    xmin: float
    ks_distance: float
    alpha_error: float


def fit_power_law(evals: np.ndarray) -> PowerLaw | None:
    """weightwatcher's power-law fit (its ``WWFit``, xmin and xmax unset) of eigenvalues, or None if it fails."""
    data = np.sort(np.asarray(evals, dtype=np.float64))
    count = len(data)
    if count < 2:
        return None
    logs = np.log(data)
    # sum(log x[i:]) for each i, from the end; n_i = count - i values in each tail
    tails = np.cumsum(logs[::-1])[::-1][:-1]
    sizes = count - np.arange(count - 1, dtype=np.float64)
    spread = tails - sizes * logs[:-1]
    alphas = np.zeros(count - 1)
    distances = np.ones(count - 1)
    small = count < SMALL_N
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for i in range(count - 1):
            n = count - i
            if small:
                if n < MIN_EVALS or spread[i] <= 1e-12:
                    continue
                alphas[i] = 1.0 + (n - 1.0) / spread[i]
            else:
                alphas[i] = 1.0 + n / spread[i]
            if alphas[i] > 1:
                fitted = 1 - (data[i:] / data[i]) ** (1 - alphas[i])
                distances[i] = np.max(np.abs(fitted - np.arange(n) / n))
        errors = (alphas - 1) / np.sqrt(sizes)
    # WWFit's small-N fit picks the xmin minimising D - 0.868 / sqrt(n), but its constructor then takes the
    # least D whichever fit ran: what weightwatcher reports, so what is reproduced here.
    best = int(np.argmin(distances))
    if distances[best] >= 1 or not np.isfinite(alphas[best]):
        return None  # no tail fitted (weightwatcher's small-N fallback to the whole range is not reproduced)
    return PowerLaw(float(alphas[best]), float(data[best]), float(distances[best]), float(errors[best]))


def _density(samples: np.ndarray, bandwidth: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """weightwatcher's density of the samples: scikit-learn's KernelDensity(kernel="linear") on 1000 points from
    0 to max + 0.5, the points where it is above 0.01 kept. Summed a block of samples at a time (a few MiB)."""
    grid = np.linspace(0, np.max(samples) + 0.5, 1000)
    density = np.zeros_like(grid)
    for start in range(0, len(samples), 1024):
        distance = np.abs(grid[:, None] - samples[None, start : start + 1024]) / bandwidth
        density += np.sum(np.clip(1.0 - distance, 0.0, None), axis=1)
    density /= len(samples) * bandwidth
    keep = density > 0.01
    return grid[keep], density[keep]


def _mp_residual(sigma: float, x: np.ndarray, y: np.ndarray, q: float) -> float:
    """weightwatcher's resid_mp (allresid=False): squared misfit of the MP (or quarter-circle) law to the
    density ``y`` at ``x`` (the density is the same for every sigma: made once, by ``_density``)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if q == 1:
            law = np.nan_to_num(1 / (np.pi * sigma * sigma) * np.sqrt(4 - x**2))
        else:
            high = (sigma * (1 + np.sqrt(1 / q))) ** 2
            low = (sigma * (1 - np.sqrt(1 / q))) ** 2
            peak = x[np.argmax(y)]
            if high < peak or high > x[-1] or low > peak:
                return float(len(y) * 1000.0**2)
            law = np.nan_to_num(1 / (2 * np.pi * sigma * sigma * x / q) * np.sqrt((high - x) * (x - low)))
    return float(np.sum((law - y) ** 2))


def _nelder_mead(function: Callable[[float], float], start: float, tolerance: float = 1e-4) -> float:
    """scipy.optimize.fmin in one dimension with its defaults (the polish after scipy.optimize.brute)."""
    simplex = [start, 1.05 * start if start != 0 else 0.00025]
    values = [function(point) for point in simplex]
    calls, iterations = 2, 1
    order = np.argsort(values)
    simplex, values = [simplex[i] for i in order], [values[i] for i in order]
    while calls < 200 and iterations < 200:
        if abs(simplex[1] - simplex[0]) <= tolerance and abs(values[0] - values[1]) <= tolerance:
            break
        centre = simplex[0]
        reflected = 2 * centre - simplex[1]
        value = function(reflected)
        calls += 1
        if value < values[0]:
            expanded = 3 * centre - 2 * simplex[1]
            expanded_value = function(expanded)
            calls += 1
            simplex[1], values[1] = (expanded, expanded_value) if expanded_value < value else (reflected, value)
        else:  # with two points the reflection never lands between them: contract, outside or inside, or shrink
            outside = value < values[1]
            contracted = 1.5 * centre - 0.5 * simplex[1] if outside else 0.5 * centre + 0.5 * simplex[1]
            contracted_value = function(contracted)
            calls += 1
            if contracted_value <= value if outside else contracted_value < values[1]:
                simplex[1], values[1] = contracted, contracted_value
            else:
                simplex[1] = simplex[0] + 0.5 * (simplex[1] - simplex[0])
                values[1] = function(simplex[1])
                calls += 1
        iterations += 1
        order = np.argsort(values, kind="stable")
        simplex, values = [simplex[i] for i in order], [values[i] for i in order]
    return simplex[0]


def marchenko_pastur(evals: np.ndarray, n: int, m: int) -> tuple[int, float]:
    """weightwatcher's mp_fit: (eigenvalues out of the MP bulk, the fitted sigma)."""
    q = n / m
    scaled = evals * (len(evals) / np.sum(evals))
    scale = math.sqrt(np.max(scaled) / (1 + 1 / math.sqrt(q)) ** 2)
    samples = np.sqrt(scaled) if q == 1 else scaled
    grid = np.mgrid[slice(0.05 * scale, 2.0 * scale, 0.01 * scale)]
    x, y = _density(samples)
    residuals = [_mp_residual(float(sigma), x, y, q) for sigma in grid]
    sigma = _nelder_mead(lambda value: _mp_residual(value, x, y, q), float(grid[int(np.argmin(residuals))]))
    bulk_max = (sigma * (1 + 1 / math.sqrt(q))) ** 2
    tracy_widom = 1 / math.sqrt(q) * bulk_max ** (2 / 3) * m ** (-2 / 3)
    return int(np.count_nonzero(scaled > bulk_max + math.sqrt(tracy_widom))), sigma


def spectrum(name: str, array: np.ndarray, *, top: int | None = None) -> Spectrum:
    """The spectral figures of a 2-D weight or a 4-D conv kernel (see the module); ``top``: randomized, k values."""
    pieces = [piece.astype(np.float64) for piece in matrices(array)]
    n, m = max(pieces[0].shape), min(pieces[0].shape)
    bound = 0.0
    randomized = top is not None and top < m
    if top is not None and randomized:
        found = [randomized_singular_values(piece, top) for piece in pieces]
        values = np.sort(np.concatenate([piece_values for piece_values, _ in found]))[::-1]
        bound = max(piece_bound for _, piece_bound in found)
    else:
        values = np.sort(np.concatenate([np.linalg.svd(piece, compute_uv=False) for piece in pieces]))[::-1]
    evals = np.sort(values * values)
    total = float(sum(np.sum(piece * piece) for piece in pieces))  # exact, whatever the path
    largest = float(values[0])
    fit = fit_power_law(evals[evals > EVALS_THRESHOLD])
    spikes: tuple[int, float] | tuple[None, None] = (None, None)
    if not randomized and total > 0:
        spikes = marchenko_pastur(evals, n, m)
    shares = values[values > 0] / np.sum(values)
    effective = float(np.exp(-np.sum(shares * np.log(shares)))) if total > 0 else 0.0
    return Spectrum(
        name=name,
        shape=tuple(array.shape),
        n=n,
        m=m,
        matrices=len(pieces),
        method="randomized" if randomized else "exact",
        error_bound=bound,
        singular_values=values,
        spectral_norm=largest,
        frobenius_norm=math.sqrt(total),
        stable_rank=total / (largest * largest) if largest > 0 else 0.0,
        entropy=matrix_entropy(values, n) if total > 0 else 0.0,
        effective_rank=effective,
        alpha=None if fit is None else fit.alpha,
        xmin=None if fit is None else fit.xmin,
        ks_distance=None if fit is None else fit.ks_distance,
        alpha_error=None if fit is None else fit.alpha_error,
        tail=None if fit is None else int(np.count_nonzero(evals >= fit.xmin)),
        mp_spikes=spikes[0],
        mp_sigma=spikes[1],
    )


def esd_density(singular_values: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The ESD as drawn on log-log axes: the positive eigenvalues ``s**2`` counted in ``bins`` logarithmic bins from
    the least to the largest, as a density (count / (eigenvalues x bin width)). (edges, density, eigenvalues);
    no positive eigenvalue (a matrix of zeros): no bins."""
    evals = np.sort(np.asarray(singular_values, dtype=np.float64) ** 2)
    evals = evals[evals > 0]
    if not evals.size:
        return np.empty(0), np.empty(0), 0
    low, high = float(evals[0]), float(evals[-1])
    edges = np.geomspace(low, high * (1 + 1e-9), bins + 1) if high > low else np.array([low * 0.9, low * 1.1])
    counts, _ = np.histogram(evals, edges)
    return edges, counts / (len(evals) * np.diff(edges)), len(evals)


def power_law_density(result: Spectrum, x: np.ndarray) -> np.ndarray | None:
    """The fitted power law at eigenvalues ``x`` (from ``xmin``) as a density of all the positive eigenvalues, as
    ``esd_density`` counts them: the tail's share times ``(alpha - 1) / xmin * (x / xmin)**-alpha``; None unfitted."""
    if result.alpha is None or result.xmin is None or not result.tail:
        return None
    share = result.tail / int(np.count_nonzero(np.asarray(result.singular_values, dtype=np.float64) ** 2 > 0))
    return share * (result.alpha - 1) / result.xmin * (np.asarray(x, dtype=np.float64) / result.xmin) ** -result.alpha


FUSED_QKV = re.compile(r"qkv|c_attn|query_key_value", re.IGNORECASE)  # Wqkv, GPT-2's c_attn, Falcon/GPT-NeoX
PER_HEAD_NAME = re.compile(r"query_key_value", re.IGNORECASE)  # the GPT-NeoX family's: interleaved, not thirds
# Model types whose fused projection holds a head's q, k and v side by side: [heads, 3, head_dim].
PER_HEAD_MODELS = frozenset({"gpt_neox", "gpt_neox_japanese", "bloom", "persimmon"})
HEAD_KEYS = ("num_attention_heads", "n_head", "num_heads")  # config.json's names for the number of heads


@dataclass(frozen=True)
class FusedLayout:
    """How a fused projection's output axis holds its query, key and value: ``groups`` blocks one after the
    other, each the parts in ``order`` of ``sizes`` rows (Phi-3: one block (H·d, KV·d, KV·d); GPT-NeoX: a block
    per head (d, d, d); Falcon's new decoder: a block per key/value head ((H/KV)·d, d, d); CodeGen: 4 blocks in
    the order q, v, k)."""

    groups: int
    sizes: tuple[int, int, int]
    order: str = "qkv"

    @property
    def total(self) -> int:
        return self.groups * sum(self.sizes)

    def rows(self) -> dict[str, np.ndarray]:
        """The query's, key's and value's indices along the output axis, each in the order the model's forward
        takes its rows."""
        edges = np.cumsum((0, *self.sizes))
        blocks = np.arange(self.total).reshape(self.groups, -1)
        found = {part: blocks[:, edges[i] : edges[i + 1]].reshape(-1) for i, part in enumerate(self.order)}
        return {part: found[part] for part in "qkv"}


def _config_value(config: Mapping[str, str], *keys: str) -> Any:
    """The first of ``config.<key>`` the metadata holds, as config.json had it (None if absent or not JSON)."""
    for key in keys:
        if f"config.{key}" in config:
            try:
                return json.loads(config[f"config.{key}"])
            except (ValueError, RecursionError):  # a hostile file's metadata: nested past Python's stack
                return None
    return None


def _count(config: Mapping[str, str], *keys: str) -> int | None:
    value = _config_value(config, *keys)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _flag(config: Mapping[str, str], key: str, default: bool) -> bool:
    value = _config_value(config, key)
    return value if isinstance(value, bool) else default


def fused_layout(name: str, config: Mapping[str, str]) -> FusedLayout | str:
    """The layout of the fused projection ``name`` from a model folder's config.json (metadata ``config.<key>``,
    as ``Checkpoint.metadata`` has it), as transformers' modeling code splits it; or why it cannot be told."""
    model_type = config.get("config.model_type")
    if PER_HEAD_NAME.search(name) and model_type not in PER_HEAD_MODELS | {"falcon"}:
        return f"query_key_value's layout differs between models; config.json's model_type {model_type} is not known"
    heads = _count(config, *HEAD_KEYS)
    hidden = _count(config, "hidden_size", "n_embd", "d_model")
    if heads is None:
        return "config.json gives no number of attention heads"
    head_dim = _count(config, "head_dim") or (hidden // heads if hidden is not None and hidden % heads == 0 else None)
    if head_dim is None:
        return "config.json gives no head_dim, nor a hidden size its heads divide"
    if model_type in PER_HEAD_MODELS:
        return FusedLayout(heads, (head_dim,) * 3)
    if model_type == "codegen":  # the 4 model-parallel shards CodeGen was trained with, each its q, v, k
        width = heads * head_dim
        return FusedLayout(4, (width // 4,) * 3, "qvk") if width % 4 == 0 else f"CodeGen's width {width} in 4 shards"
    if model_type == "falcon":
        if _flag(config, "new_decoder_architecture", False):  # a block per key/value head: its queries, k, v
            kv_heads = _count(config, "num_kv_heads") or heads
            if heads % kv_heads:
                return f"{heads} heads in {kv_heads} key/value groups"
            return FusedLayout(kv_heads, (heads // kv_heads * head_dim, head_dim, head_dim))
        multi_query = _flag(config, "multi_query", True)  # FalconConfig's default
        return (
            FusedLayout(1, (heads * head_dim, head_dim, head_dim))
            if multi_query
            else FusedLayout(heads, (head_dim,) * 3)
        )
    if model_type == "gpt_bigcode" and not _flag(config, "multi_query", True):
        return FusedLayout(heads, (head_dim,) * 3)
    kv_heads = 1 if model_type == "gpt_bigcode" else _count(config, "num_key_value_heads") or heads
    return FusedLayout(1, (heads * head_dim, kv_heads * head_dim, kv_heads * head_dim))


def fused_parts(
    name: str, array: np.ndarray, config: Mapping[str, str] | None = None
) -> tuple[list[tuple[str, np.ndarray]], str | None]:
    """A fused attention projection (by its name) split into its query, key and value matrices, named
    ``NAME[q]``, ``NAME[k]``, ``NAME[v]``; otherwise the matrix itself. With a model folder's config.json
    (``config``: the checkpoint's metadata) as ``fused_layout`` reads it; without, only a ``qkv`` or ``c_attn``
    of one side three times the other, in thirds. The note says why a fused projection is not split."""
    whole = [(name, array)]
    if array.ndim != 2 or not FUSED_QKV.search(name):
        return whole, None
    if config is None or not {"config.model_type", *(f"config.{key}" for key in HEAD_KEYS)} & config.keys():
        if PER_HEAD_NAME.search(name):
            return whole, "query_key_value is interleaved per head (GPT-NeoX, Bloom, Falcon): needs config.json"
        rows, columns = array.shape
        if rows != 3 * columns and columns != 3 * rows:
            return whole, "unequal parts (grouped-query attention?) need config.json's head counts"
        layout: FusedLayout | str = FusedLayout(1, (min(rows, columns),) * 3)
        axes = [0 if rows == 3 * columns else 1]
    else:
        layout = fused_layout(name, config)
        conv1d = config.get("config.model_type") in CONV1D_MODELS
        axes = [1, 0] if conv1d else [0, 1]
    if isinstance(layout, str):
        return whole, layout
    axis = next((axis for axis in axes if array.shape[axis] == layout.total), None)  # rows() only then: a
    if axis is None:  # hostile config's head count never makes an index array
        return whole, f"neither side is the {layout.total} rows config.json's heads give"
    return [(f"{name}[{part}]", np.take(array, rows, axis)) for part, rows in layout.rows().items()], None


def tensor_spectra(
    ckpt: Checkpoint, name: str, top: int | None = None, config: Mapping[str, str] | None = None
) -> list[Spectrum | Skipped]:
    """The spectrum of tensor ``name`` (three for a fused QKV: see ``fused_parts``, with ``config``, by default
    ``ckpt.metadata``), or why it has none."""
    config = ckpt.metadata if config is None else config
    info = ckpt.info(name)
    reason = skip_reason(name, info.shape, numeric_kind(info.dtype))
    if reason is not None:
        return [Skipped(name, info.shape, reason)]
    array = ckpt[name]
    if not np.isfinite(array).all():
        return [Skipped(name, info.shape, "holds NaN or infinite values (see stats)")]
    parts, note = fused_parts(name, array, config)
    return [replace(spectrum(part, piece, top=top), note=note) for part, piece in parts]


def checkpoint_spectra(
    ckpt: Checkpoint,
    names: Iterable[str],
    *,
    top: int | None = None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Spectrum | Skipped]:
    """Spectra of the named tensors, in order, on a few threads (numpy's SVD releases the GIL); others skipped.
    ``progress(done, total)`` is called as each tensor is done."""
    from weightscope.blas import on_threads

    config = ckpt.metadata
    jobs = [functools.partial(tensor_spectra, ckpt, name, top, config) for name in names]
    return [result for results in on_threads(jobs, progress, workers) for result in results]


def _task(path: str, name: str, top: int | None) -> list[Spectrum | Skipped]:
    """A Dask task: one tensor's spectrum, the checkpoint opened where the task runs."""
    with open_checkpoint(path) as ckpt:
        return tensor_spectra(ckpt, name, top)


def path_spectra(
    path: str,
    names: Iterable[str],
    *,
    top: int | None = None,
    scheduler: str | None = None,
    client: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Spectrum | Skipped]:
    """``checkpoint_spectra`` of the checkpoint at ``path`` as Dask tasks, one a tensor: on a cluster's
    ``scheduler`` (``tcp://host:port``) or ``client``, or ``"threads"``, ``"processes"``, ``"sync"`` as
    ``weightscope.runs.execute`` takes them; every worker must see ``path``. The results equal the threads'."""
    from weightscope.runs import execute

    token = uuid.uuid4().hex  # a cluster keeps results by key: another call's must not be taken for this one's
    graph = {(f"weightscope-spectra-{token}", index): (_task, str(path), name, top) for index, name in enumerate(names)}
    done = execute(graph, list(graph), scheduler=scheduler, client=client, progress=progress)
    return [result for results in done for result in results]
