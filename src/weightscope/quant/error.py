"""What quantising cost: each quantised weight against its original, per tensor and per layer (issue 20, item 4).

``quantization_error(original, quantised)`` pairs the parameters of two checkpoints, either of which holds quantised
weights (GGUF's block types, or a scheme of ``weightscope.quant`` read through ``Dequantized``), and measures the
dequantised values ``q`` against the original ``w``, chunk by chunk in float64:

- ``rmse``: ``sqrt(mean((w - q)**2))``;
- ``max_abs``: ``max(|w - q|)``;
- ``snr_db``: ``10 * log10(sum(w**2) / sum((w - q)**2))`` (``inf`` when ``q == w``, ``-inf`` when ``w`` is zero and
  ``q`` is not);
- ``cosine``: ``sum(w * q) / sqrt(sum(w**2) * sum(q**2))`` (None when either is all zero);
- ``outlier_share``: the share of the squared error carried by the original's outliers,
  ``sum((w - q)**2 over |w| >= t) / sum((w - q)**2)`` where ``t`` is the ``k``-th largest ``|w|`` and
  ``k = ceil(0.001 * size)`` (the top 0.1% largest-magnitude original weights, ties at ``t`` included; None when
  there is no error).

Pairs where either value is NaN or infinite are left out of every figure and counted (``nonfinite``); the outliers'
threshold is taken among the original's finite values.

A layer's figures are those of its tensors' values taken together (sums of squares, products and counts added; its
outliers are each tensor's own), a layer being a name up to its block number (``model.layers.3``) or, outside
blocks, the module (``lm_head``, ``model.norm``).

Pairs are found by name, then as ``diff`` finds them (the layer model, across frameworks); a GGUF side (its metadata
has ``general.architecture``) is first named as Hugging Face names Llama-style models (``GGUF_LLAMA_NAMES`` and
``GGUF_LLAMA_BLOCK_NAMES``, from gguf-py's ``tensor_mapping.py``) and its shapes are already ``[out, in]`` (the reader
lists GGML's dimensions reversed). llama.cpp's ``convert_hf_to_gguf.py`` (``LlamaModel.permute``) reorders the rows
of ``q_proj`` and ``k_proj`` (weights and biases) for its rotary embedding,
``w.reshape(n_head, 2, rows // n_head // 2, *rest).swapaxes(1, 2).reshape(w.shape)`` with ``n_head`` the file's
``llama.attention.head_count`` for ``q`` and ``head_count_kv`` for ``k``; for ``general.architecture`` ``llama``
that is undone here from those metadata, so the user names no tensors and no head counts. (A file the converter
made from Meta- or Mistral-format weights, which it does not permute, says nothing of it: its q and k would show as
large errors; other architectures' converters that permute are not undone.) Two GGUF files (F16 against Q4_K) are
both named so and compared the same way.
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from weightscope.analysis import aligned_chunks, canonical_names, chunks, widened
from weightscope.checkpoint import Checkpoint
from weightscope.dtypes import BY_NAME, numeric_kind
from weightscope.errors import CorruptCheckpointError
from weightscope.output import json_float

if TYPE_CHECKING:
    from weightscope.convert import PlannedTensor

OUTLIER_FRACTION = 0.001  # the top 0.1% largest-magnitude original weights

# GGUF names (gguf-py's TENSOR_NAMES) -> Hugging Face's Llama-style names (gguf-py's tensor_mapping.py, llama-hf).
GGUF_LLAMA_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
GGUF_LLAMA_BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
# The architectures whose converter (LlamaModel.modify_tensors) permutes q and k, and the metadata giving the heads.
ROTARY_PERMUTED = {"llama"}
_PERMUTED_HEADS = {"attn_q": "head_count", "attn_k": "head_count_kv"}
_GGUF_NAME = re.compile(r"(?:blk\.(\d+)\.)?([a-z0-9_]+)\.(weight|bias)")
_BLOCK = re.compile(r"(.*?\.\d+)\.")


@dataclass(frozen=True)
class Aligned:
    """A GGUF tensor under its Hugging Face name, with the rotary permutation's heads to undo (0: none)."""

    source: str
    heads: int = 0

    def read(self, ckpt: Checkpoint) -> np.ndarray:
        values = ckpt[self.source]
        return values if not self.heads else unpermute(values, self.heads, f"{ckpt.path}: tensor '{self.source}'")


def unpermute(values: np.ndarray, heads: int, what: str) -> np.ndarray:
    """The rows of ``values`` in Hugging Face's order again: the inverse of llama.cpp's ``LlamaModel.permute``."""
    rows = values.shape[0] if values.ndim else 0
    if rows % (2 * heads):
        raise CorruptCheckpointError(f"{what} has {rows} rows, which {heads} rotary heads of two halves do not divide")
    split = values.reshape(heads, rows // heads // 2, 2, *values.shape[1:])
    return split.swapaxes(1, 2).reshape(values.shape)


def gguf_llama_names(ckpt: Checkpoint, names: list[str]) -> dict[str, Aligned]:
    """``names`` of a GGUF ``ckpt`` under their Hugging Face names (those of no mapping under their own)."""
    metadata = ckpt.metadata
    architecture = metadata.get("general.architecture")
    if architecture is None:
        return {name: Aligned(name) for name in names}
    aligned: dict[str, Aligned] = {}
    taken = set(names)
    for name in names:
        match = _GGUF_NAME.fullmatch(name)
        table = GGUF_LLAMA_NAMES if match is None or match[1] is None else GGUF_LLAMA_BLOCK_NAMES
        if match is None or match[2] not in table or _hf_name(match, table) in taken:
            aligned[name] = Aligned(name)  # no mapping, or its Hugging Face name is taken by a tensor of the file
            continue
        block, tensor, _ = match.groups()
        heads = 0
        if architecture in ROTARY_PERMUTED and block is not None and tensor in _PERMUTED_HEADS:
            heads = _heads(ckpt, f"{architecture}.attention.", _PERMUTED_HEADS[tensor], int(block))
        aligned[_hf_name(match, table)] = Aligned(name, heads)
    return aligned


def _hf_name(match: re.Match[str], table: dict[str, str]) -> str:
    block, tensor, kind = match.groups()
    return ("" if block is None else f"model.layers.{block}.") + f"{table[tensor]}.{kind}"


def _heads(ckpt: Checkpoint, prefix: str, key: str, block: int) -> int:
    """The head count ``prefix + key`` gives for ``block`` (a number, or a list of one a block); kv: heads if absent."""
    text = ckpt.metadata.get(prefix + key) or ckpt.metadata.get(prefix + "head_count")
    if text is None:
        raise CorruptCheckpointError(f"{ckpt.path}: no {prefix}head_count, needed to undo the rotary permutation")
    items = text.strip("[]").split(",")
    try:
        heads = int(items[block] if len(items) > 1 else items[0])
    except (ValueError, IndexError):
        raise CorruptCheckpointError(
            f"{ckpt.path}: {prefix}{key} is {text[:60]!r}, no head count for block {block}"
        ) from None
    if heads < 1:
        raise CorruptCheckpointError(f"{ckpt.path}: {prefix}{key} is {heads}")
    return heads


def quantized_type(ckpt: Checkpoint, name: str) -> str | None:
    """The quantised type ``name`` is read from (``q4_0``, ``fp8_block``): one with no numpy dtype; else None."""
    info = ckpt.info(name)
    element = BY_NAME.get(info.type_name)
    return (
        info.type_name
        if element is not None and element.numpy_name is None and numeric_kind(info.dtype) == "f"
        else None
    )


def has_quantized(ckpt: Checkpoint) -> bool:
    return any(quantized_type(ckpt, info.name) for info in ckpt.infos())


@dataclass
class ErrorPartial:
    """Sums over some values of an original ``w`` and its dequantisation ``q``, to merge with the rest's."""

    count: int = 0
    max_abs: float = 0.0
    w_squares: float = 0.0
    q_squares: float = 0.0
    dot: float = 0.0
    d_squares: float = 0.0
    outlier_squares: float = 0.0
    nonfinite: int = 0  # pairs left out: NaN or infinite on either side

    def merge(self, other: ErrorPartial) -> ErrorPartial:
        return ErrorPartial(*(max(x, y) if key == "max_abs" else x + y for key, x, y in self._zipped(other)))

    def _zipped(self, other: ErrorPartial) -> list[tuple[str, Any, Any]]:
        return [(key, value, getattr(other, key)) for key, value in asdict(self).items()]

    def figures(self) -> dict[str, float | None]:
        d2, w2, q2 = self.d_squares, self.w_squares, self.q_squares
        snr = math.inf if not d2 else -math.inf if not w2 else 10 * math.log10(w2 / d2)
        return {
            "rmse": math.sqrt(d2 / self.count) if self.count else None,
            "max_abs": self.max_abs if self.count else None,
            "snr_db": snr,
            "cosine": self.dot / math.sqrt(w2 * q2) if w2 and q2 else None,
            "outlier_share": self.outlier_squares / d2 if d2 else None,
        }


def error_partial(original: np.ndarray, quantised: np.ndarray) -> ErrorPartial:
    """The sums of ``original`` against ``quantised`` (one shape), chunk by chunk; outliers as the module says.

    Pairs where either value is NaN or infinite are left out of every sum (and counted in ``nonfinite``), as ``diff``
    leaves them out of its norms."""
    total = ErrorPartial()
    if not original.size:
        return total
    magnitudes = np.abs(original.reshape(-1).astype(np.float64 if original.itemsize > 4 else np.float32))
    magnitudes = magnitudes[np.isfinite(magnitudes)]
    k = math.ceil(OUTLIER_FRACTION * magnitudes.size)
    if k:
        magnitudes.partition(magnitudes.size - k)  # in place: no second copy of the tensor
    threshold = float(magnitudes[magnitudes.size - k]) if k else math.inf
    del magnitudes
    for left, right in aligned_chunks(chunks(original), chunks(quantised)):
        w, q = widened(left), widened(right)
        finite = np.isfinite(w) & np.isfinite(q)
        if not finite.all():
            total.nonfinite += int(finite.size - np.count_nonzero(finite))
            w, q = w[finite], q[finite]
        if not w.size:
            continue
        d = w - q
        squares = d * d
        total.count += w.size
        total.max_abs = max(total.max_abs, float(np.abs(d).max()))
        total.w_squares += float(np.dot(w, w))
        total.q_squares += float(np.dot(q, q))
        total.dot += float(np.dot(w, q))
        total.d_squares += float(squares.sum())
        total.outlier_squares += float(squares[np.abs(w) >= threshold].sum())
    return total


@dataclass(frozen=True)
class TensorError:
    """Tensor ``name`` of the original against ``other`` of the quantised side (``status`` "shape": not compared)."""

    name: str
    other: str
    layer: str
    type: str  # the quantised side's stored type (q4_0, fp8_block, float16, ...)
    shape: tuple[tuple[int, ...], tuple[int, ...]]
    status: str  # "compared" or "shape"
    moved: str | None = None  # how the quantised side was realigned (the rotary permutation undone)
    partial: ErrorPartial = field(default_factory=ErrorPartial, repr=False)

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {key: getattr(self, key) for key in ("name", "other", "layer", "type", "status")}
        document["shape"] = [list(shape) for shape in self.shape]
        document["moved"] = self.moved
        document["count"], document["nonfinite"] = self.partial.count, self.partial.nonfinite
        return document | _finite(self.partial.figures())


def _finite(figures: dict[str, float | None]) -> dict[str, Any]:
    return {key: None if value is None else json_float(value) for key, value in figures.items()}


@dataclass
class QuantizationError:
    """Every paired tensor's error, each layer's, and what only one side has."""

    original: str
    quantised: str
    matched_by: str
    tensors: list[TensorError]
    only_original: list[str]
    only_quantised: list[str]

    @property
    def layers(self) -> dict[str, ErrorPartial]:
        layers: dict[str, ErrorPartial] = {}
        for tensor in self.tensors:
            if tensor.status == "compared":
                layers[tensor.layer] = layers.get(tensor.layer, ErrorPartial()).merge(tensor.partial)
        return dict(sorted(layers.items(), key=lambda item: _natural(item[0])))

    @property
    def equal(self) -> bool:
        exact = all(tensor.status == "compared" and not tensor.partial.d_squares for tensor in self.tensors)
        return exact and not self.only_original and not self.only_quantised

    def to_json(self) -> dict[str, Any]:
        return {
            "original": self.original,
            "quantised": self.quantised,
            "outlier_fraction": OUTLIER_FRACTION,
            "matched_by": self.matched_by,
            "tensors": [tensor.to_json() for tensor in self.tensors],
            "layers": [
                {"layer": layer, "count": partial.count, "nonfinite": partial.nonfinite} | _finite(partial.figures())
                for layer, partial in self.layers.items()
            ],
            "only_original": self.only_original,
            "only_quantised": self.only_quantised,
        }


def _natural(name: str) -> list[tuple[int, int | str]]:
    """A sort key putting ``layers.2`` before ``layers.10``."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name) if part]


def layer_of(name: str) -> str:
    """``model.layers.3`` for ``model.layers.3.mlp.up_proj.weight``; outside blocks the module (``lm_head``)."""
    block = _BLOCK.match(name)
    return block[1] if block else name.rsplit(".", 1)[0] if "." in name else name


Reader = Callable[[], np.ndarray]


def _compare(
    quantised: Checkpoint, key: str, name: str, other: str, moved: str | None, w: Reader, q: Reader
) -> TensorError:
    """``name`` of the original against ``other``, matched under ``key`` (a Hugging Face or PyTorch name)."""
    first, second = w(), q()
    kind = quantized_type(quantised, other) or quantised.info(other).type_name
    shapes = (tuple(first.shape), tuple(second.shape))
    found = (name, other, layer_of(key), kind, shapes)
    if shapes[0] != shapes[1] or None in (numeric_kind(first.dtype), numeric_kind(second.dtype)):
        return TensorError(*found, "shape", moved)
    return TensorError(*found, "compared", moved, error_partial(first, second))


def quantization_error(
    original: Checkpoint, quantised: Checkpoint, progress: Callable[[int, int], None] | None = None
) -> QuantizationError:
    """Each parameter of ``original`` against its quantised counterpart in ``quantised`` (read dequantised);
    ``progress(done, total)`` is told as each is done."""
    from weightscope.blas import on_threads

    def parameters(ckpt: Checkpoint) -> dict[str, Aligned]:
        return gguf_llama_names(ckpt, [name for name in ckpt if ckpt.role(name).kind == "parameter"])

    mine, theirs = parameters(original), parameters(quantised)
    jobs: list[Callable[[], TensorError]] = []
    for name, aligned in mine.items():
        if name in theirs:
            other = theirs[name]
            moved = f"rotary permutation undone ({other.heads} heads)" if other.heads else None
            readers: tuple[Reader, Reader] = (
                functools.partial(aligned.read, original),
                functools.partial(other.read, quantised),
            )
            jobs.append(functools.partial(_compare, quantised, name, aligned.source, other.source, moved, *readers))
    rest_mine = {aligned.source for name, aligned in mine.items() if name not in theirs}
    rest_theirs = {aligned.source for name, aligned in theirs.items() if name not in mine}
    matched_by, named = "name", bool(jobs)
    if rest_mine and rest_theirs:  # across frameworks: both in PyTorch's names and layout, as diff matches them
        canonical_mine, canonical_theirs = canonical_names(original, rest_mine), canonical_names(quantised, rest_theirs)
        for key, planned in canonical_mine.items():
            if key in canonical_theirs:
                counterpart = canonical_theirs[key]
                moved = None if planned.permutation == counterpart.permutation else "both in PyTorch's layout"
                readers = (_planned_reader(original, planned), _planned_reader(quantised, counterpart))
                job = functools.partial(_compare, quantised, key, planned.source, counterpart.source, moved, *readers)
                jobs.append(job)
                rest_mine.discard(planned.source)
                rest_theirs.discard(counterpart.source)
                matched_by = "name and layer model" if named else "layer model"
    tensors = on_threads(jobs, progress)
    return QuantizationError(
        str(original.path),
        str(quantised.path),
        matched_by,
        tensors,
        [name for name in original if name in rest_mine],
        [name for name in quantised if name in rest_theirs],
    )


def _planned_reader(ckpt: Checkpoint, planned: PlannedTensor) -> Reader:
    return lambda: planned.transform(ckpt[planned.source])


def plot_layers(result: QuantizationError, out: str | os.PathLike[str], *, size: tuple[int, int]) -> Path:
    """A PNG of each layer's RMSE (log scale) and SNR in dB, in the original's order (needs matplotlib)."""
    from weightscope.plot import _layout, save_png

    layers = {name: partial.figures() for name, partial in result.layers.items()}
    layout = _layout(size, (80, 70, 58, 120), ["quantisation error per layer", result.quantised], [])
    axes = layout.axes
    positions = list(range(len(layers)))
    rmse = [_plotted(figures["rmse"] or math.nan) for figures in layers.values()]  # 0 has no place on a log scale
    axes.plot(positions, rmse, marker="o", color="C3")
    axes.set_yscale("log")
    axes.set_ylabel("RMSE", color="C3")
    other = axes.twinx()
    other.plot(positions, [_plotted(figures["snr_db"]) for figures in layers.values()], marker=".", color="C0")
    other.set_ylabel("SNR (dB)", color="C0")
    axes.set_xticks(positions, list(layers), rotation=60, ha="right", fontsize=7)
    axes.grid(True, color="0.9")
    return save_png(layout.figure, out)


def _plotted(value: float | None) -> float:
    return math.nan if value is None or math.isinf(value) else value
