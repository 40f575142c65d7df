"""The anatomy of a fine-tune: what changed between a base checkpoint and a tuned one, layer by layer.

For every weight both hold by name (parameters only), with W the base's and ΔW = tuned − base, in float64:

- ``relative_change``: ‖ΔW‖_F / ‖W‖_F (``None`` when W is all zeros).
- ``cosine``: ⟨ΔW, W⟩ / (‖ΔW‖_F ‖W‖_F), the share of the change along the base itself (a rescaling is ±1).
- For a matrix (2-D; a tensor of more axes is flattened to ``shape[0] × rest``, PyTorch's layout of a kernel):
  ``rank``: the numerical rank of ΔW, its singular values above the float rounding of the stored weights,
  ``tolerance = ε · (‖W‖_F + ‖W'‖_F)`` with ε the machine epsilon of the less precise of the two dtypes (no
  less than 64 float64 epsilons). Rounding W + BA to the stored type moves each element by at most ε/2 of
  itself, so the rounding's every singular value is below ε/2 ‖W'‖_F: a LoRA of rank r merged in float32 has
  ``rank`` r exactly. ``rank_90`` and ``rank_99``: the fewest singular directions of ΔW holding 90% and 99% of
  its energy (Σσ²): "this could have been a rank-8 LoRA".
- ``intruders``: of the tuned matrix's ``INTRUDER_TOP`` largest left singular vectors, those whose largest
  |cosine| with every left singular vector of the base is below ``INTRUDER_SIMILARITY`` — new directions,
  not the base's, as Shuttleworth et al. (2024, "LoRA vs Full Fine-tuning: an Illusion of Equivalence")
  define intruder dimensions; ``similarity`` lists that largest |cosine| for each of the top vectors.
- ``sign_agreement`` (with a second fine-tune of the same base): of the elements both changes move, the
  fraction both move the same way (0.5 is chance).

Matrices are held whole in float64, several at once on a few threads (a matrix of n × m values needs about
5 · 8nm bytes). A change of low rank is found on a randomized range, with its rank certified exact
(``change_spectrum``); any other by ``numpy.linalg.svd``, as are the singular vectors intruders compare
(``top=0`` skips them: for a 4096 × 4096 matrix they take seconds to a minute).
"""

from __future__ import annotations

import contextlib
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from weightscope.dtypes import numeric_kind
from weightscope.output import finite_figures

if TYPE_CHECKING:
    from weightscope.checkpoint import Checkpoint

INTRUDER_TOP = 10
INTRUDER_SIMILARITY = 0.5
ENERGIES = (0.9, 0.99)


@dataclass(frozen=True)
class LayerAnatomy:
    """What changed in one weight (see the module's docstring for each figure's definition)."""

    name: str
    shape: tuple[int, ...]
    status: str  # "changed", "equal", or nothing else measured: "shape" (the two differ in shape), "not real"
    # (complex, strings: no figure defined), "not finite" (NaN or infinity in either)
    relative_change: float | None = None
    cosine: float | None = None
    rank: int | None = None
    rank_90: int | None = None
    rank_99: int | None = None
    tolerance: float | None = None
    intruders: int | None = None
    similarity: list[float] = field(default_factory=list)
    sign_agreement: float | None = None
    singular_values: list[float] = field(default_factory=list, repr=False)  # of ΔW, the largest first

    def to_json(self) -> dict[str, Any]:
        document = {key: value for key, value in self.__dict__.items() if key != "singular_values"}
        return finite_figures({**document, "shape": list(self.shape)})


@dataclass(frozen=True)
class Anatomy:
    base: str
    tuned: str
    second: str | None
    layers: list[LayerAnatomy]
    only_base: list[str]
    only_tuned: list[str]

    @property
    def changed(self) -> list[LayerAnatomy]:
        return [layer for layer in self.layers if layer.status == "changed"]

    def lora_rank(self) -> int | None:
        """The largest numerical rank of a changed matrix: the rank a LoRA needs to hold every change exactly."""
        ranks = [layer.rank for layer in self.changed if layer.rank is not None]
        return max(ranks) if ranks else None

    def to_json(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "tuned": self.tuned,
            "second": self.second,
            "lora_rank": self.lora_rank(),
            "layers": [layer.to_json() for layer in self.layers],
            "only_base": self.only_base,
            "only_tuned": self.only_tuned,
        }


def anatomy_order(layer: LayerAnatomy) -> tuple[int, float]:
    """Changed weights by relative change, largest first (a change of an all-zero weight first of all), then those
    not measured (shapes differ, not real, not finite), then equal ones: a sort key, as ``diff_order`` is."""
    group = {"changed": 0, "equal": 2}.get(layer.status, 1)
    change = layer.relative_change
    return group, -(math.inf if change is None and group == 0 else change or 0.0)


def epsilon(*dtypes: np.dtype) -> float:
    """The machine epsilon of the least precise of ``dtypes`` (integers: exact), no less than 64 float64 ulps."""
    values = [64 * float(np.finfo(np.float64).eps)]
    for dtype in dtypes:
        if numeric_kind(dtype) == "f":
            try:
                values.append(float(np.finfo(dtype).eps))
            except ValueError:  # an ml_dtypes type numpy's finfo does not know
                import ml_dtypes

                values.append(float(ml_dtypes.finfo(dtype).eps))
    return max(values)


def as_matrix(array: np.ndarray) -> np.ndarray:
    """A tensor of 2 or more axes as a matrix: its first axis by the rest (PyTorch's layout of a kernel)."""
    return array.reshape(array.shape[0], -1)


def energy_rank(singular_values: np.ndarray, share: float) -> int:
    """The fewest of the (descending) singular values whose squares hold ``share`` of the sum of squares."""
    energy = np.cumsum(singular_values.astype(np.float64) ** 2)
    if not energy.size or energy[-1] == 0:
        return 0
    return int(np.searchsorted(energy, share * energy[-1] * (1 - 1e-12)) + 1)


def change_spectrum(delta: np.ndarray, tolerance: float, start: int = 16) -> np.ndarray:
    """ΔW's singular values above ``tolerance`` (and what is known of the others), the largest first.

    A change of low rank (a LoRA's) is found on a randomized range Q of k columns, k = ``start``, 2·start, ...,
    while 4k <= min(m, n): once ‖ΔW − QQᵀΔW‖_F = ρ <= ``tolerance`` with no singular value of QᵀΔW within ρ below
    it, Weyl's inequality puts each σ_i(ΔW) in [σ_i(QᵀΔW), σ_i(QᵀΔW) + ρ] and all the others at most ρ, so the
    count above ``tolerance`` is exact and the energies off by at most ρ² in all; those k values are returned.
    Otherwise (a full fine-tune) numpy's exact SVD gives them all.
    """
    rows, columns = delta.shape
    random = np.random.default_rng(0)
    k = start
    while 4 * k <= min(rows, columns):
        q = np.linalg.qr(delta @ random.standard_normal((columns, k)))[0]
        small = q.T @ delta
        residual = float(np.linalg.norm(delta - q @ small))
        values = np.linalg.svd(small, compute_uv=False)
        if residual <= tolerance and not np.any((values > tolerance - residual) & (values <= tolerance)):
            return values
        k *= 2
    return np.linalg.svd(delta, compute_uv=False)


def intruder_similarity(base: np.ndarray, tuned: np.ndarray, top: int = INTRUDER_TOP) -> list[float]:
    """For each of ``tuned``'s ``top`` largest left singular vectors, its largest |cosine| with any of ``base``'s."""
    if top < 1:
        return []
    base_u = np.linalg.svd(base, full_matrices=False)[0]
    tuned_u, tuned_s, _ = np.linalg.svd(tuned, full_matrices=False)
    count = min(top, int(np.count_nonzero(tuned_s > 0)))
    return [float(value) for value in np.abs(base_u.T @ tuned_u[:, :count]).max(axis=0, initial=0.0)]


def layer_anatomy(
    name: str,
    base: np.ndarray,
    tuned: np.ndarray,
    second: np.ndarray | None = None,
    *,
    top: int = INTRUDER_TOP,
    threshold: float = INTRUDER_SIMILARITY,
) -> LayerAnatomy:
    """The figures of one weight: ``base`` and ``tuned`` (and ``second``, another fine-tune of ``base``)."""
    shape = tuple(base.shape)
    if base.shape != tuned.shape or (second is not None and second.shape != base.shape):
        return LayerAnatomy(name, shape, "shape")
    arrays = [base, tuned] + ([] if second is None else [second])
    if any(numeric_kind(array.dtype) not in ("f", "i", "b") for array in arrays):
        return LayerAnatomy(name, shape, "not real")
    w, t = base.astype(np.float64), tuned.astype(np.float64)
    if not (np.isfinite(w).all() and np.isfinite(t).all()):
        return LayerAnatomy(name, shape, "not finite")
    delta = t - w
    if not np.any(delta):
        return LayerAnatomy(name, shape, "equal", relative_change=0.0)
    norm_w, norm_d = float(np.linalg.norm(w)), float(np.linalg.norm(delta))
    relative = norm_d / norm_w if norm_w else None
    cosine = float(np.vdot(delta, w)) / (norm_d * norm_w) if norm_w else None
    agreement = None
    if second is not None:
        other = second.astype(np.float64) - w
        both = (delta != 0) & (other != 0)
        agreement = float(np.mean(np.sign(delta[both]) == np.sign(other[both]))) if both.any() else None
    if base.ndim < 2:
        return LayerAnatomy(name, shape, "changed", relative, cosine, sign_agreement=agreement)
    matrix = as_matrix(delta)
    tolerance = epsilon(base.dtype, tuned.dtype) * (norm_w + float(np.linalg.norm(t)))
    values = change_spectrum(matrix, tolerance)
    similarity = intruder_similarity(as_matrix(w), as_matrix(t), top)
    return LayerAnatomy(
        name,
        shape,
        "changed",
        relative,
        cosine,
        rank=int(np.count_nonzero(values > tolerance)),
        rank_90=energy_rank(values, ENERGIES[0]),
        rank_99=energy_rank(values, ENERGIES[1]),
        tolerance=tolerance,
        intruders=sum(value < threshold for value in similarity) if top > 0 else None,
        similarity=similarity,
        sign_agreement=agreement,
        singular_values=[float(value) for value in values],
    )


def parameters(ckpt: Checkpoint) -> list[str]:
    return [name for name in ckpt if ckpt.role(name).kind == "parameter"]


def anatomy(
    base: Checkpoint,
    tuned: Checkpoint,
    second: Checkpoint | None = None,
    *,
    top: int = INTRUDER_TOP,
    threshold: float = INTRUDER_SIMILARITY,
    scheduler: str | None = None,
    client: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> Anatomy:
    """What ``tuned`` (and ``second``, another fine-tune of ``base``) changed in ``base``'s weights, by name.

    On a few local threads by default; with ``scheduler`` or ``client`` (as ``weightscope.runs.execute`` takes
    them: ``"sync"``, ``"processes"``, a cluster's ``tcp://HOST:PORT``, a ``dask.distributed.Client``) a Dask task
    per weight, which opens the checkpoints by their paths (so they must be paths its workers can open) and
    gives the same figures. ``progress(done, total)`` is told as each weight is done.
    """
    names_base, names_tuned = parameters(base), parameters(tuned)
    held = set(names_tuned) & (set(parameters(second)) if second is not None else set(names_tuned))
    common = [name for name in names_base if name in held]
    paths = (str(base.path), str(tuned.path), None if second is None else str(second.path))
    if scheduler is not None or client is not None:
        from weightscope.runs import execute

        token = uuid.uuid4().hex
        graph = {
            (f"weightscope-anatomy-{token}", i): (_opened_layer_anatomy, paths, name, top, threshold)
            for i, name in enumerate(common)
        }
        layers = execute(graph, list(graph), scheduler=scheduler, client=client, progress=progress)
    else:
        from weightscope.blas import on_threads

        def job(name: str) -> Callable[[], LayerAnatomy]:
            return lambda: layer_anatomy(
                name, base[name], tuned[name], None if second is None else second[name], top=top, threshold=threshold
            )

        layers = on_threads([job(name) for name in common], progress)  # numpy's SVD releases the GIL
    only_base = [name for name in names_base if name not in held]
    only_tuned = [name for name in names_tuned if name not in set(names_base)]
    return Anatomy(*paths, layers, only_base, only_tuned)


def _opened_layer_anatomy(paths: tuple[str, str, str | None], name: str, top: int, threshold: float) -> LayerAnatomy:
    """A Dask task: ``layer_anatomy`` of ``name`` in the checkpoints at ``paths``, opened here."""
    from weightscope.formats import open_checkpoint

    with contextlib.ExitStack() as stack:
        base, tuned, *second = [stack.enter_context(open_checkpoint(path)) for path in paths if path is not None]
        other = second[0][name] if second else None
        return layer_anatomy(name, base[name], tuned[name], other, top=top, threshold=threshold)
