"""A PEFT LoRA adapter extracted from a base checkpoint and a fine-tune of it (``weightscope extract-lora``).

For each changed Linear or Embedding weight (a 2-D ``*.weight``; an Embedding as ``weightscope.summary`` finds
it), ΔW = tuned − base in float64 is cut to its ``rank`` largest singular directions, ΔW ≈ U_r S_r V_rᵀ, stored
balanced as ``lora_B = U_r √S_r`` (out × r) and ``lora_A = √S_r V_rᵀ`` (r × in), float32, with ``lora_alpha = r``
so PEFT's scale α/r is 1: PEFT loads the adapter onto the base and its merge gives base + lora_B · lora_A. An
Embedding's change is stored as PEFT stores it, transposed (``lora_embedding_A`` r × vocabulary,
``lora_embedding_B`` width × r). Each layer's error is measured as that merge in float32 against the tuned
weight: the largest |difference| and its Frobenius norm relative to ‖ΔW‖_F. The adapter names its modules exactly
(``target_modules`` a regular expression PEFT matches whole). Other changed tensors (biases, norms, kernels) a
LoRA does not hold: they are listed as left out, with those not measured (of other shapes, not finite).

GPT-2's Conv1D (and its family's: ``conventions.conv1d_weights``, by config.json's model type or, without one, a
``c_attn`` three times as wide as tall) keeps its weight transposed, (in, out): its ΔWᵀ is factored, the factors
stored with the shapes a Linear's would have, and the adapter says ``fan_in_fan_out``, so that PEFT adds (B·A)ᵀ.
A PEFT adapter has one ``fan_in_fan_out`` for all its modules: a fine-tune changing Conv1D and Linear weights
both is refused (an Embedding's, transposed whatever the setting, goes with either).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from weightscope.anatomy import Anatomy, anatomy
from weightscope.conventions import conv1d_weights
from weightscope.errors import UsageError
from weightscope.output import finite_figures, safe_text

if TYPE_CHECKING:
    from weightscope.checkpoint import Checkpoint

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


@dataclass(frozen=True)
class ExtractedLayer:
    module: str
    shape: tuple[int, ...]
    rank: int
    max_abs: float  # max |base + B·A − tuned|, the merge computed in float32
    relative_error: float  # ‖base + B·A − tuned‖_F / ‖tuned − base‖_F

    def to_json(self) -> dict[str, Any]:
        return finite_figures({**self.__dict__, "shape": list(self.shape)})


@dataclass(frozen=True)
class Extraction:
    folder: str
    rank: int
    layers: list[ExtractedLayer]
    left_out: list[str]  # changed tensors a LoRA cannot hold

    @property
    def max_abs(self) -> float:
        return max((layer.max_abs for layer in self.layers), default=0.0)

    def to_json(self) -> dict[str, Any]:
        return {
            "folder": self.folder,
            "rank": self.rank,
            "max_abs": self.max_abs,
            "layers": [layer.to_json() for layer in self.layers],
            "left_out": self.left_out,
        }


def _embeddings(ckpt: Checkpoint) -> set[str]:
    from weightscope.summary import summarize

    return {layer.name for layer in summarize(ckpt).layers if layer.kind == "Embedding"}


def adapted_weights(ckpt: Checkpoint, result: Anatomy) -> tuple[dict[str, str], list[str]]:
    """The changed weights a LoRA holds (2-D ``*.weight``s), each with its module's kind (``"Linear"``,
    ``"Embedding"``, ``"Conv1D"``: ``conventions.conv1d_weights``), and the tensors it does not (other changed
    ones, and those not measured: of other shapes, not finite)."""
    embeddings = _embeddings(ckpt)
    conv1d = conv1d_weights({name: ckpt.info(name).shape for name in ckpt}, ckpt.metadata.get("config.model_type"))
    held: dict[str, str] = {}
    left: list[str] = []
    for layer in result.layers:
        if layer.status == "changed" and len(layer.shape) == 2 and layer.name.endswith(".weight"):
            module = layer.name.removesuffix(".weight")
            held[layer.name] = "Embedding" if module in embeddings else "Conv1D" if layer.name in conv1d else "Linear"
        elif layer.status != "equal":
            left.append(layer.name)
    return held, left


def factors(delta: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """``lora_B`` (out × r) and ``lora_A`` (r × in), float32, whose product is ΔW's best rank-r approximation."""
    u, s, vt = np.linalg.svd(delta.astype(np.float64), full_matrices=False)
    root = np.sqrt(s[:rank])
    return (u[:, :rank] * root).astype(np.float32), (root[:, None] * vt[:rank]).astype(np.float32)


def extract_lora(
    base: Checkpoint,
    tuned: Checkpoint,
    out: str | Path,
    rank: int,
    *,
    base_model: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Extraction:
    """Write to the folder ``out`` a PEFT LoRA adapter of ``rank`` holding what ``tuned`` changed in ``base``
    (``progress(done, total)`` told as each weight's change is measured)."""
    from weightscope.atomic import atomic_folder
    from weightscope.formats import save_checkpoint
    from weightscope.writing import check_folder

    if rank < 1:
        raise UsageError(f"the LoRA's rank must be at least 1, not {rank}")
    check_folder(Path(out))
    held, left_out = adapted_weights(base, anatomy(base, tuned, top=0, progress=progress))
    if not held:
        raise UsageError(f"{tuned.path} changes no Linear or Embedding weight of {base.path}: no LoRA adapter to write")
    kinds = {kind: [name.removesuffix(".weight") for name in held if held[name] == kind] for kind in set(held.values())}
    if "Conv1D" in kinds and "Linear" in kinds:
        raise UsageError(
            f"{tuned.path} changes Conv1D weights, kept (in, out) ({safe_text(kinds['Conv1D'][0])}, ...), and Linear "
            f"ones, kept (out, in) ({safe_text(kinds['Linear'][0])}, ...): a PEFT adapter has one fan_in_fan_out for "
            "all its modules"
        )
    tensors: dict[str, np.ndarray] = {}
    layers, ranks = [], {}
    for name, kind in held.items():
        w, t = base[name], tuned[name]
        module = name.removesuffix(".weight")
        r = min(rank, *w.shape)
        delta = t.astype(np.float64) - w.astype(np.float64)
        # PEFT adds B·A to a Linear's (out, in); (B·A)ᵀ to a Conv1D's (in, out) (fan_in_fan_out) and to an
        # Embedding's (vocabulary, width), whose A is r × vocabulary and B width × r
        transposed = kind != "Linear"
        b, a = factors(delta.T if transposed else delta, r)
        if kind == "Embedding":
            tensors[f"base_model.model.{module}.lora_embedding_A"] = a
            tensors[f"base_model.model.{module}.lora_embedding_B"] = b
        else:
            tensors[f"base_model.model.{module}.lora_A.weight"] = a
            tensors[f"base_model.model.{module}.lora_B.weight"] = b
        merged = w.astype(np.float32) + ((b @ a).T if transposed else b @ a)
        error = merged.astype(np.float64) - t.astype(np.float64)
        change = float(np.linalg.norm(delta))
        layers.append(
            ExtractedLayer(module, tuple(w.shape), r, float(np.abs(error).max()), float(np.linalg.norm(error)) / change)
        )
        if r != rank:
            ranks[module] = r
    modules = [layer.module for layer in layers]
    config = {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": base_model if base_model is not None else str(base.path),
        "r": rank,
        "lora_alpha": rank,
        "rank_pattern": {f"^{re.escape(module)}$": r for module, r in ranks.items()},
        "alpha_pattern": {f"^{re.escape(module)}$": r for module, r in ranks.items()},
        "target_modules": "^(?:" + "|".join(map(re.escape, modules)) + ")$" if modules else [],
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": "Conv1D" in kinds,
        "inference_mode": True,
        "init_lora_weights": True,
        "modules_to_save": None,
    }
    with atomic_folder(Path(out)) as folder:
        save_checkpoint(tensors, folder / ADAPTER_WEIGHTS)
        (folder / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return Extraction(str(out), rank, layers, left_out)
