"""DeepSpeed ZeRO checkpoints (stages 1, 2, 3), consolidated as ``zero_to_fp32`` does, without DeepSpeed or torch.

A checkpoint folder (``engine.save_checkpoint(folder)``) holds ``latest`` (text: the tag of the newest step,
``global_step1000``) and one folder per tag holding torch zip pickles (``weightscope.formats.pytorch``):

- ``mp_rank_00_model_states.pt`` (stages 1, 2) or ``zero_pp_rank_{dp}_mp_rank_00_model_states.pt`` (stage 3, one
  per data-parallel rank): ``module`` (the state dict in the training dtype: bf16/fp16 parameters and buffers;
  stage 3's parameters are empty placeholders), ``buffer_names``, ``param_shapes`` (one dict per parameter group,
  name -> ``torch.Size``, in the order the group's flat buffer holds them), ``frozen_param_shapes`` and
  ``frozen_param_fragments`` (stage >= 2; stage 3's fragments are each rank's ``ceil(numel / ws)`` elements),
  ``shared_params`` ({alias: kept name}: tied weights), ``dp_world_size``, ``global_steps``, ``ds_version``.
- ``[bf16_]zero_pp_rank_{dp}_mp_rank_00_optim_states.pt``, one per rank: ``optimizer_state_dict`` holding
  ``zero_stage`` (``ZeroStageEnum``), ``partition_count`` (stage <= 2: a list per group; 3: an int, the world
  size), and the fp32 master weights: stage <= 2 ``single_partition_of_fp32_groups`` (per group, this rank's
  slice of the group's flat buffer, padding left out) with the moments in ``base_optimizer_state.state[g]``;
  stage 3 ``fp32_flat_groups`` (per group, this rank's flat partition) with the moments in
  ``optimizer_state_dict.state[g]``, laid out alike.

Consolidation (``deepspeed/utils/zero_to_fp32.py``; files sorted with digits compared as numbers = rank order):

- buffers: ``module[name]`` for names in ``buffer_names``, floating ones as float32;
- stage <= 2: group ``g``'s flat vector is the ranks' slices one after another; its parameters are consecutive
  ``numel``-long runs of it (plus ``param_alignment_paddings[g][i]`` after each, where saved); what is left is
  padding: both what was consumed and what is there, rounded up to a multiple of ``2 * world size``, must agree;
  frozen parameters are ``frozen_param_fragments[name]``, whole (stage 1 saves none: its frozen parameters are
  read from ``module``, which ``zero_to_fp32`` leaves out);
- stage 3: each rank's groups are one vector; parameters (of all groups, in order) take consecutive slots of
  ``ceil(numel / ws)`` elements at the same offset on every rank, and a parameter is its slots, rank after rank,
  cut to ``numel``; the slots must fill rank 0's vector exactly; frozen parameters are the ranks' fragments one
  after another, cut to ``numel``;
- aliases (``shared_params``) are their kept parameter's values, under both names.

Every tensor is read when asked: a rank's partition is a read-only view of its mapped file, and a parameter is
copied out of the views of its pieces only; ``parts`` gives those views themselves, which ``convert`` writes one
after another, so consolidating holds no tensor's copy at all. Beside the
consolidated weights (the names ``zero_to_fp32`` gives), the checkpoint lists the optimizer's moments
(``optimizer.state.<name>.exp_avg``), consolidated the same way, and the module's bf16/fp16 copies
(``module.<name>``, stages 1, 2), both as optimizer state attached to their parameter (``convert`` leaves them out
unless asked).

Security: the pickles are read by ``weightscope.formats.pytorch``'s allow-list unpickler, with DeepSpeed's own
names added as inert values, never imported: ``ZeroStageEnum(n)`` is the int ``n`` (0 to 3), and
``LossScaler``, ``DynamicLossScaler`` and ``fragment_address`` objects made by NEWOBJ are records of the one
state dict BUILD gives them. Any other global is refused (``RefusedError``, exit 6). A tag must name a folder
inside the checkpoint folder. Refused with typed errors: a tag folder with no model or optimizer files, fewer or
more optimizer files than the world size (``partition_count``), model files of stage 3 other than one per rank,
a stage other than 1 to 3, partitions that do not add up to the parameters' sizes, ranks whose partitions
disagree in length (stage 3) or hold no 1-D float tensor where one belongs, a fragment of the wrong size.
Not read: model parallelism (more than one ``mp_rank``), pipeline-parallel layer files (``layer_*``),
DeepSpeed's universal checkpoints, NVMe-offloaded or AutoEP partitioned states.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np

from weightscope.checkpoint import FolderCheckpoint, Index, TensorInfo
from weightscope.containers.allow_list import Global, ScanEntry, ScanReport, is_int, show
from weightscope.containers.unpickler import Unpickler
from weightscope.errors import (
    CheckpointNotFoundError,
    CorruptCheckpointError,
    UnsupportedFormatError,
    WeightscopeError,
    kept,
)
from weightscope.formats import model_file_names
from weightscope.formats._sniffing import is_tag, latest_tag
from weightscope.formats.pytorch import TENSOR_BYTES, PyTorchCheckpoint
from weightscope.formats.pytorch import scan as scan_pytorch
from weightscope.formats.pytorch_pickle import ALLOWED_GLOBALS, TorchAllowList, _Tensor, _Unpickler
from weightscope.layers import TensorRole
from weightscope.limits import Budget, Limits
from weightscope.sources import AnyPath

MODEL_FILES = "*_model_states.pt"
OPTIM_FILES = "*_optim_states.pt"
STAGES = {1: "optimizer_states", 2: "gradients", 3: "weights"}  # ZeroStageEnum's names

# -- DeepSpeed's names in the pickles, as values -------------------------------------------------------------------

_ENUM = ("deepspeed.runtime.zero.config", "ZeroStageEnum")
_RECORDS = [
    ("deepspeed.runtime.fp16.loss_scaler", "LossScaler"),
    ("deepspeed.runtime.fp16.loss_scaler", "DynamicLossScaler"),
    ("deepspeed.utils.tensor_fragment", "fragment_address"),
]


@dataclass
class Record:
    """A DeepSpeed object as data: its class's name and the state BUILD gave it (nothing of it is run)."""

    qualname: str
    state: dict[Any, Any]


class _DeepSpeedAllowList(TorchAllowList):
    """torch's allow-list and the few DeepSpeed names its checkpoints pickle, each rebuilt as a plain value."""

    globals: ClassVar[dict[tuple[str, str], Global]] = {
        **ALLOWED_GLOBALS,
        _ENUM: Global(*_ENUM, "enum"),
        **{key: Global(*key, "record") for key in _RECORDS},
    }

    def call(self, function: Global, args: tuple[Any, ...], unpickler: Unpickler) -> Any:
        if function.kind == "enum":
            if len(args) == 1 and is_int(args[0]) and 0 <= args[0] <= 3:
                return args[0]
            raise CorruptCheckpointError(f"{unpickler.where}: {function.qualname}{show(args, 100)}: no ZeRO stage")
        return super().call(function, args, unpickler)

    def new(self, cls: Global, args: tuple[Any, ...], unpickler: Unpickler) -> Any:
        if cls.kind == "record" and args == ():
            return Record(cls.qualname, {})
        return super().new(cls, args, unpickler)

    def build(self, target: Any, state: Any, unpickler: Unpickler) -> bool:
        if isinstance(target, Record) and not target.state and isinstance(state, dict):
            target.state.update(state)
            return True
        return super().build(target, state, unpickler)


class _RankFile(PyTorchCheckpoint):
    """One of the tag folder's torch zips, read under DeepSpeed's allow-list; ``saved`` is the object it holds."""

    saved: Any = None
    position = 0  # its index among the checkpoint's files

    def _unpickle(self, data: bytes) -> Any:
        allow = _DeepSpeedAllowList()
        self.saved = _Unpickler(data, str(self.path), budget=self._budget, allow=allow).load()
        return self.saved


# -- the folder -----------------------------------------------------------------------------------------------------


def _natural(path: Path) -> list[Any]:
    """``zero_to_fp32``'s order: digits compared as numbers (rank 10 after rank 9)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def is_step_folder(path: AnyPath) -> bool:
    """Whether ``path`` is a tag folder (``global_stepN/``): it holds a model-states file."""
    return path.is_dir() and any(path.glob(MODEL_FILES))


def tag_folder(path: Path) -> tuple[Path, str]:
    """The tag folder ``path`` names (itself, or the one its ``latest`` names) and how it was found."""
    tag = None if is_step_folder(path) else latest_tag(path)
    if tag is None:
        return Path(path), ""
    if not is_tag(tag):
        raise CorruptCheckpointError(f"{path / 'latest'}: not a tag naming a folder beside it: {tag[:80]!r}")
    folder = Path(path) / tag
    if not folder.is_dir():
        raise CheckpointNotFoundError(f"{path / 'latest'}: names '{tag}', which is no folder in {path}")
    return folder, f"the tag in latest: {tag}"


# -- the plan of each tensor ----------------------------------------------------------------------------------------


class Piece(NamedTuple):
    """Elements ``start:stop`` of the flattened tensor ``key`` of rank file ``file``."""

    file: int
    key: str
    start: int
    stop: int


class Plan(NamedTuple):
    pieces: tuple[Piece, ...]
    dtype: np.dtype  # what reading gives (float32 for a buffer saved in bf16)


FLOAT32 = (np.dtype("float32"), "float32")


class DeepSpeedCheckpoint(FolderCheckpoint):
    """A DeepSpeed ZeRO checkpoint folder (or one tag's folder), consolidated as ``zero_to_fp32`` does."""

    format = "deepspeed"
    checksums = "zip CRC-32"

    def _prepare(self) -> None:
        self._files: list[_RankFile] = []
        self._plans: dict[str, Plan] = {}

    # -- opening
    def _load(self) -> Index:
        folder, found = tag_folder(Path(str(self.path)))  # a local folder (the registry's local_only)
        self.folder = folder
        if found:
            self._notes.append(f"{self.path}: {found}")
            self._note_weights_beside(Path(str(self.path)))
        models = sorted(folder.glob(MODEL_FILES), key=_natural)
        optims = sorted(folder.glob(OPTIM_FILES), key=_natural)
        if not models:
            raise CheckpointNotFoundError(f"{folder}: no {MODEL_FILES} file; not a DeepSpeed checkpoint folder")
        if not optims:
            raise CheckpointNotFoundError(f"{folder}: no {OPTIM_FILES} file: the optimizer's rank files are missing")
        self.model_files = [self._open(file) for file in models]
        self.optim_files = [self._open(file) for file in optims]
        # What listing may spend: a tensor's record per name, charged as the PyTorch reader charges its own
        self._budget = Budget(Limits.for_size(sum(rank.path.stat().st_size for rank in self._files)), folder)
        model = self._model_state(self.model_files[0])
        optimizer = self._optimizer_state(self.optim_files[0])
        self.stage = _stage(optimizer.get("zero_stage"), self.optim_files[0].path)
        counts = optimizer.get("partition_count")
        world = max(counts) if isinstance(counts, list) and counts and all(map(is_int, counts)) else counts
        if not isinstance(world, int) or isinstance(world, bool) or world < 1:
            raise CorruptCheckpointError(f"{optims[0]}: partition_count is {show(counts, 80)}, not a world size")
        self.world_size = world
        if len(optims) != world:
            raise CheckpointNotFoundError(
                f"{folder}: {len(optims)} {OPTIM_FILES} files for a world size of {world} (partition_count): "
                "a rank's file is missing, or an older checkpoint's files are mixed in"
            )
        saved_world = model.get("dp_world_size", world)
        if saved_world != world:
            raise CorruptCheckpointError(
                f"{models[0]}: dp_world_size {show(saved_world, 40)}; the optimizer's partition_count says {world}"
            )
        if self.stage == 3 and len(models) != world:
            raise CheckpointNotFoundError(
                f"{folder}: {len(models)} {MODEL_FILES} files for a ZeRO-3 world size of {world}: one per rank"
            )
        for number, rank in enumerate(self.optim_files[1:], 1):
            other = self._optimizer_state(rank)
            if _stage(other.get("zero_stage"), rank.path) != self.stage or other.get("partition_count") != counts:
                raise CorruptCheckpointError(
                    f"{rank.path}: rank {number} says stage {other.get('zero_stage')}, partition_count "
                    f"{show(other.get('partition_count'), 40)}; rank 0 says {self.stage}, {show(counts, 40)}"
                )
        index = Index()
        self.module_dtypes: dict[str, str] = {}
        self._buffers(index, model)
        shapes = _param_shapes(model, self.model_files[0].path)
        frozen = self._frozen(index, model, shapes)
        layouts = self._partitioned(shapes) if self.stage <= 2 else self._flat(shapes)
        for name, (pieces, _) in layouts.items():
            self._add(index, name, _shape_of(shapes, name), pieces, FLOAT32)
        self._aliases_of(index, model)
        self._moments(index, layouts, shapes)
        self._module_copies(index, model, shapes, frozen)
        for key in ("global_steps", "global_samples", "dp_world_size", "ds_version"):
            if isinstance(model.get(key), int | str) and not isinstance(model.get(key), bool):
                index.metadata[key] = str(model[key])
        index.metadata["zero_stage"] = str(self.stage)
        index.metadata["sharding"] = self._sharding(index)
        return index

    def _sharding(self, index: Index) -> str:
        """One line for ``summary``: the stage and ranks, the files, the dtypes of the two copies, the optimizer."""
        from weightscope.output import format_bytes

        files = sum(rank.path.stat().st_size for rank in self._files)
        module = ", ".join(sorted(set(self.module_dtypes.values()))) or "none saved"
        slots = sorted({role.role for role in index.roles.values() if role.role and "module" not in role.role})
        return (
            f"ZeRO stage {self.stage} over {self.world_size} ranks ({len(self._files)} rank files, "
            f"{format_bytes(files)}); master weights float32, module {module}; optimizer state {', '.join(slots)}"
        )

    def _note_weights_beside(self, root: Path) -> None:
        """A Trainer's ``checkpoint-N/`` holds the ZeRO files and may hold the model's weights too: say so."""
        names = model_file_names()
        beside = sorted(entry.name for entry in root.iterdir() if any(kind.claims(entry.name) for kind in names))
        if beside:
            self._notes.append(
                f"{root}: read as DeepSpeed's ZeRO checkpoint; it also holds {', '.join(beside)} (the module's "
                "weights as saved: open that file by name to read them)"
            )

    def _open(self, file: Path) -> _RankFile:
        rank = _RankFile(file, verify=self.verify_checksums)
        rank.position = len(self._files)
        self._files.append(rank)
        if not isinstance(rank.saved, dict):
            raise CorruptCheckpointError(f"{file}: holds {type(rank.saved).__name__}, not DeepSpeed's dict")
        return rank

    def _model_state(self, rank: _RankFile) -> dict[Any, Any]:
        saved = rank.saved
        if not isinstance(saved.get("module"), dict) or not isinstance(saved.get("buffer_names", []), list):
            raise CorruptCheckpointError(f"{rank.path}: no 'module' state dict: not a DeepSpeed model-states file")
        if not isinstance(saved.get("shared_params") or {}, dict):
            raise CorruptCheckpointError(f"{rank.path}: shared_params is {show(saved['shared_params'], 80)}, no dict")
        return dict(saved)

    def _optimizer_state(self, rank: _RankFile) -> dict[Any, Any]:
        state = rank.saved.get("optimizer_state_dict")
        if not isinstance(state, dict) or "zero_stage" not in state:
            raise CorruptCheckpointError(f"{rank.path}: no optimizer_state_dict with a zero_stage: not ZeRO's")
        return state

    def _tensor(self, rank: _RankFile, key: str, what: str, floating: bool = True) -> TensorInfo:
        """The 1-D (or any, ``floating=False``) tensor ``key`` of ``rank``, refused where it is not one."""
        if key not in rank:
            raise CorruptCheckpointError(f"{rank.path}: no tensor '{key}' ({what})")
        info = rank.info(key)
        if floating and (len(info.shape) != 1 or (info.dtype.kind != "f" and info.type_name != "bfloat16")):
            raise CorruptCheckpointError(
                f"{rank.path}: '{key}' ({what}) is {info.type_name} {list(info.shape)}, not a flat float partition"
            )
        return info

    def _add(
        self, index: Index, name: str, shape: tuple[int, ...], pieces: list[Piece], kind: tuple[np.dtype, str]
    ) -> None:
        """List ``name``: ``shape``, read from ``pieces`` as ``kind`` (its dtype and type name)."""
        dtype, type_name = kind
        self._budget.spend(TENSOR_BYTES + 2 * len(name), "the tensors listed")
        first = self._files[pieces[0].file] if pieces else self.model_files[0]
        size = math.prod(shape)
        info = TensorInfo(name, dtype, shape, size * dtype.itemsize, type_name, str(first.path), 0, name)
        index.infos[name] = info
        self._plans[name] = Plan(tuple(pieces), dtype)

    def _buffers(self, index: Index, model: dict[Any, Any]) -> None:
        rank = self.model_files[0]
        names = model.get("buffer_names", [])
        for name in model["module"]:
            if name not in names or not isinstance(name, str):
                continue
            info = self._tensor(rank, f"module.{name}", "a buffer", floating=False)
            kind = FLOAT32 if info.dtype.kind == "f" or info.type_name == "bfloat16" else (info.dtype, info.type_name)
            self._add(index, name, info.shape, [Piece(0, info.name, 0, info.size)], kind)

    def _frozen(self, index: Index, model: dict[Any, Any], shapes: list[dict[str, tuple[int, ...]]]) -> set[str]:
        """List the frozen parameters; their names."""
        fragments = model.get("frozen_param_fragments")
        frozen = model.get("frozen_param_shapes")
        if frozen is None:  # stage 1 saves none: they are in module only (zero_to_fp32 leaves them out)
            trained = {name for group in shapes for name in group}
            names = set(model.get("buffer_names", [])) | set(model.get("shared_params") or {})
            found = [name for name in model["module"] if name not in trained | names]
            rank = self.model_files[0]
            for name in found:
                info = self._tensor(rank, f"module.{name}", "a frozen parameter", floating=False)
                self._add(index, name, info.shape, [Piece(0, info.name, 0, info.size)], (info.dtype, info.type_name))
            if found:
                self._notes.append(
                    f"{self.folder}: {len(found)} frozen parameters read from the module's weights (ZeRO-1 keeps no "
                    "fp32 copy; zero_to_fp32 leaves them out)"
                )
            return set(found)
        if not isinstance(frozen, dict) or not isinstance(fragments, dict):
            raise CorruptCheckpointError(f"{self.model_files[0].path}: frozen_param_shapes or fragments malformed")
        for name, shape in frozen.items():
            shape = _shape(shape, name, self.model_files[0].path)
            numel = math.prod(shape)
            pieces: list[Piece] = []
            ranks = self.model_files if self.stage == 3 else self.model_files[:1]
            kinds = set()
            for rank in ranks:
                info = self._tensor(rank, f"frozen_param_fragments.{name}", "a frozen parameter", floating=False)
                kinds.add((info.dtype, info.type_name))
                pieces.append(Piece(rank.position, info.name, 0, info.size))
            have = sum(piece.stop for piece in pieces)
            want = numel if self.stage <= 2 else math.ceil(numel / self.world_size) * self.world_size
            if have != want and not (self.stage == 3 and have >= numel):
                raise CorruptCheckpointError(
                    f"{self.folder}: frozen parameter '{name}' of {numel} elements has fragments of {have}"
                )
            if len(kinds) != 1:
                raise CorruptCheckpointError(f"{self.folder}: frozen parameter '{name}''s fragments differ in type")
            self._add(index, name, shape, _cut(pieces, numel), kinds.pop())
        return set(frozen)

    def _partitioned(self, shapes: list[dict[str, tuple[int, ...]]]) -> dict[str, tuple[list[Piece], int]]:
        """Stage 1/2: each trainable parameter's pieces of the ranks' slices of its group (and the group)."""
        layouts: dict[str, tuple[list[Piece], int]] = {}
        paddings = self._optimizer_state(self.optim_files[0]).get("param_alignment_paddings")
        align = 2 * self.world_size
        for group, group_shapes in enumerate(shapes):
            slices = [self._group_slice(rank, group) for rank in self.optim_files]
            total = sum(info.size for info in slices)
            pads = _group_paddings(paddings, group, len(group_shapes), self.optim_files[0].path)
            offset = 0
            for position, (name, shape) in enumerate(group_shapes.items()):
                numel = math.prod(shape)
                if offset + numel > total:
                    raise CorruptCheckpointError(
                        f"{self.folder}: group {group}'s partitions hold {total} elements; parameter '{name}' needs "
                        f"{offset + numel}: the partitions do not add up"
                    )
                layouts[name] = (self._span(slices, offset, offset + numel), group)
                offset += numel + pads[position]
            if math.ceil(offset / align) * align != math.ceil(total / align) * align:
                raise CorruptCheckpointError(
                    f"{self.folder}: group {group}'s parameters take {offset} elements of the {total} its "
                    f"{self.world_size} partitions hold: the partitions do not add up"
                )
        return layouts

    def _group_slice(self, rank: _RankFile, group: int) -> TensorInfo:
        key = "single_partition_of_fp32_groups" if self.stage <= 2 else "fp32_flat_groups"
        return self._tensor(rank, f"optimizer_state_dict.{key}.{group}", f"group {group}'s fp32 partition")

    def _span(self, slices: list[TensorInfo], start: int, stop: int) -> list[Piece]:
        """The pieces of ``start:stop`` of the ranks' slices one after another."""
        pieces, base = [], 0
        for rank, info in zip(self.optim_files, slices, strict=True):
            low, high = max(start, base), min(stop, base + info.size)
            if low < high:
                pieces.append(Piece(rank.position, info.name, low - base, high - base))
            base += info.size
        return pieces

    def _flat(self, shapes: list[dict[str, tuple[int, ...]]]) -> dict[str, tuple[list[Piece], int]]:
        """Stage 3: each parameter's slot on every rank, rank after rank, cut to its size."""
        flat_groups = self._optimizer_state(self.optim_files[0]).get("fp32_flat_groups")
        if not isinstance(flat_groups, list):
            raise CorruptCheckpointError(f"{self.optim_files[0].path}: fp32_flat_groups is {show(flat_groups, 80)}")
        groups = len(flat_groups)
        per_rank = [[self._group_slice(rank, group) for group in range(groups)] for rank in self.optim_files]
        sizes = [info.size for info in per_rank[0]]
        for rank, infos in zip(self.optim_files[1:], per_rank[1:], strict=False):
            if [info.size for info in infos] != sizes:
                raise CorruptCheckpointError(
                    f"{rank.path}: its flat partitions hold {[info.size for info in infos]} elements; rank 0's "
                    f"{sizes}: the ranks disagree"
                )
        total = sum(sizes)
        layouts: dict[str, tuple[list[Piece], int]] = {}
        offset = 0
        for group_shapes in shapes:
            for name, shape in group_shapes.items():
                numel = math.prod(shape)
                part = math.ceil(numel / self.world_size)
                if offset + part > total:
                    raise CorruptCheckpointError(
                        f"{self.folder}: the flat partitions hold {total} elements per rank; parameter '{name}' "
                        f"needs {offset + part}: the partitions do not add up"
                    )
                pieces = [
                    piece
                    for rank, infos in zip(self.optim_files, per_rank, strict=True)
                    for piece in self._in_groups(rank.position, infos, offset, offset + part)
                ]
                layouts[name] = (_cut(pieces, numel), 0)
                offset += part
        if offset != total:
            raise CorruptCheckpointError(
                f"{self.folder}: the parameters take {offset} of the {total} elements each rank's flat partitions "
                "hold: the partitions do not add up"
            )
        return layouts

    def _in_groups(self, rank: int, infos: list[TensorInfo], start: int, stop: int) -> list[Piece]:
        """The pieces of ``start:stop`` of one rank's groups one after another (``rank``: its file's index)."""
        pieces, base = [], 0
        for info in infos:
            low, high = max(start, base), min(stop, base + info.size)
            if low < high:
                pieces.append(Piece(rank, info.name, low - base, high - base))
            base += info.size
        return pieces

    def _aliases_of(self, index: Index, model: dict[Any, Any]) -> None:
        shared = model.get("shared_params") or {}
        for alias, name in shared.items():
            if isinstance(alias, str) and name in self._plans and alias not in self._plans:
                plan, info = self._plans[name], index.infos[name]
                self._add(index, alias, info.shape, list(plan.pieces), (plan.dtype, info.type_name))

    def _moments(
        self, index: Index, layouts: dict[str, tuple[list[Piece], int]], shapes: list[dict[str, tuple[int, ...]]]
    ) -> None:
        """The optimizer's per-element state (Adam's exp_avg, exp_avg_sq), laid out as the fp32 partitions."""
        where = "base_optimizer_state" if self.stage <= 2 else "optimizer_state_dict"
        state = self._optimizer_state(self.optim_files[0]).get(where)
        slots = state.get("state") if isinstance(state, dict) else None
        if not isinstance(slots, dict):
            return
        # Stage 3: every group's state alike, laid out as its fp32 partition (the piece's key says which group).
        for group, values in slots.items() if self.stage <= 2 else list(slots.items())[:1]:
            if not isinstance(values, dict):
                continue
            for slot, value in values.items():
                if not isinstance(value, _Tensor) or not isinstance(slot, str):
                    continue
                flat = f"optimizer_state_dict.{where}.state.{group}.{slot}"
                if len(value.shape) == 0:  # Adam's step count, one per group
                    step = self.optim_files[0][flat]
                    index.metadata[f"optimizer.state.{group}.{slot}"] = str(step.item()) if step.size == 1 else ""
                    continue
                for name, (pieces, owner_group) in layouts.items():
                    if self.stage <= 2 and owner_group != group:
                        continue
                    moved = [self._moment_piece(piece, flat) for piece in pieces]
                    moment = f"optimizer.state.{name}.{slot}"
                    self._add(index, moment, _shape_of(shapes, name), moved, FLOAT32)
                    index.roles[moment] = TensorRole("optimizer", role=slot, owner=name)

    def _moment_piece(self, piece: Piece, flat: str) -> Piece:
        """``piece`` of a parameter's fp32 partition, moved to the same elements of the moment ``flat``."""
        rank = self._files[piece.file]
        info = self._tensor(rank, flat if self.stage <= 2 else _group_key(piece.key, flat), "an optimizer moment")
        partition = rank.info(piece.key)
        if info.size < partition.size:  # stages 1, 2 keep the moments' padding (the last rank's), not the weights'
            raise CorruptCheckpointError(
                f"{rank.path}: '{info.name}' holds {info.size} elements; its partition '{piece.key}' {partition.size}"
            )
        return piece._replace(key=info.name)

    def _module_copies(
        self, index: Index, model: dict[Any, Any], shapes: list[dict[str, tuple[int, ...]]], frozen: set[str]
    ) -> None:
        """The module's weights in the training dtype (stages 1, 2: stage 3 saves empty placeholders)."""
        rank = self.model_files[0]
        trained = [name for group in shapes for name in group]
        for name in trained:
            key = f"module.{name}"
            if key not in rank:
                continue
            info = rank.info(key)
            self.module_dtypes[name] = info.type_name
            if self.stage == 3 or info.size != math.prod(_shape_of(shapes, name)):
                continue
            copy = f"module.{name}"
            self._add(index, copy, info.shape, [Piece(0, key, 0, info.size)], (info.dtype, info.type_name))
            index.roles[copy] = TensorRole("optimizer", role=f"module ({info.type_name})", owner=name)

    # -- reading
    def _pieces(self, info: TensorInfo) -> list[np.ndarray]:
        """The views of the mapped rank files' elements that make ``info``, in order (each zip-CRC-32-checked)."""
        return [self._files[at.file][at.key].reshape(-1)[at.start : at.stop] for at in self._plans[info.name].pieces]

    def parts(self, name: str) -> list[np.ndarray]:
        info = self.info(name)
        parts = self._pieces(info)
        return parts if len(parts) > 1 and all(part.dtype == info.dtype for part in parts) else [self[name]]

    def _read(self, info: TensorInfo) -> np.ndarray:
        parts, dtype = self._pieces(info), self._plans[info.name].dtype
        array = np.concatenate(parts) if len(parts) > 1 else parts[0] if parts else np.zeros(0, dtype)
        return array.astype(dtype, copy=False).reshape(info.shape)

    def checked_files(self) -> list[tuple[AnyPath, str, str]]:
        return [(rank.path, "pytorch", rank.checksums) for rank in self._files]

    def verify(self, advance: Callable[[int, int], None] | None = None) -> list[WeightscopeError]:
        return [problem for rank in self._files for problem in rank.verify(advance)] + super().verify(advance)

    @contextlib.contextmanager
    def checks_deferred(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:  # every rank file's checks (the pieces are theirs)
            for rank in self._files:
                stack.enter_context(rank.checks_deferred())
            yield

    def _close(self) -> None:
        for rank in self._files:
            rank.close()


def scan(path: str | os.PathLike[str]) -> ScanReport:
    """The globals and calls the tag folder's rank files' pickles name, each file's under DeepSpeed's allow-list
    (``weightscope.formats.pytorch.scan``), counted together; the verdict is what opening the folder raises."""
    folder, _ = tag_folder(Path(path))
    report, found = ScanReport(), dict[tuple[str, str, bool], int]()
    for file in sorted([*folder.glob(MODEL_FILES), *folder.glob(OPTIM_FILES)], key=_natural):
        scanned = scan_pytorch(file, allow=_DeepSpeedAllowList, reader=_RankFile)
        for entry in scanned:
            key = (entry.opcode, entry.name, entry.allowed)
            found[key] = found.get(key, 0) + entry.count
        report.verdict = report.verdict or scanned.verdict
    report.extend(ScanEntry(opcode, name, allowed, count) for (opcode, name, allowed), count in found.items())
    if report.verdict is None:
        try:
            DeepSpeedCheckpoint(path).close()
        except WeightscopeError as error:
            report.verdict = kept(error)
    return report


# -- helpers --------------------------------------------------------------------------------------------------------


def _stage(value: object, path: AnyPath) -> int:
    if not is_int(value) or value not in STAGES:
        raise UnsupportedFormatError(f"{path}: zero_stage {show(value, 40)}: weightscope reads ZeRO stages 1 to 3")
    assert isinstance(value, int)
    return value


def _shape(value: object, name: str, path: AnyPath) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(is_int(length) and length >= 0 for length in value):
        raise CorruptCheckpointError(f"{path}: parameter '{name}' has shape {show(value, 80)}")
    return value


def _param_shapes(model: dict[Any, Any], path: AnyPath) -> list[dict[str, tuple[int, ...]]]:
    groups = model.get("param_shapes")
    if isinstance(groups, dict):
        groups = [groups]  # older DeepSpeed saved one dict
    if not isinstance(groups, list) or not all(isinstance(group, dict) for group in groups):
        raise CorruptCheckpointError(f"{path}: param_shapes is {show(groups, 80)}, not a list of dicts")
    return [{str(name): _shape(shape, str(name), path) for name, shape in group.items()} for group in groups]


def _shape_of(shapes: list[dict[str, tuple[int, ...]]], name: str) -> tuple[int, ...]:
    return next(group[name] for group in shapes if name in group)


def _group_paddings(paddings: object, group: int, count: int, path: AnyPath) -> list[int]:
    if paddings is None:
        return [0] * count
    found = paddings[group] if isinstance(paddings, list) and group < len(paddings) else None
    if not isinstance(found, list) or len(found) != count or not all(is_int(pad) and pad >= 0 for pad in found):
        raise CorruptCheckpointError(f"{path}: param_alignment_paddings of group {group}: {show(found, 80)}")
    return found


def _group_key(partition: str, flat: str) -> str:
    """Stage 3: the moment of the group whose fp32 partition is ``partition`` (``....fp32_flat_groups.<g>``)."""
    group = partition.rpartition(".")[2]
    head, _, tail = flat.rpartition(".state.")
    slot = tail.partition(".")[2]
    return f"{head}.state.{group}.{slot}"


def _cut(pieces: list[Piece], numel: int) -> list[Piece]:
    """The first ``numel`` elements of ``pieces`` one after another."""
    kept_pieces, left = [], numel
    for piece in pieces:
        if left <= 0:
            break
        length = min(piece.stop - piece.start, left)
        kept_pieces.append(piece._replace(stop=piece.start + length))
        left -= length
    return kept_pieces
