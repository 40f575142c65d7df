"""Model folders as Hugging Face writes them: tensors split into shards, and an index naming each one's shard.

A format that Hugging Face models are kept in names, in its registry entry, the weights file
of a model folder (``model_file``: ``model.safetensors``, ``pytorch_model.bin``). Written
with a largest shard size, a folder holds, as ``huggingface_hub``'s
``split_torch_state_dict_into_shards`` and transformers' ``save_pretrained`` name and group
them (``huggingface_hub/serialization/_base.py``, ``split_state_dict_into_shards_factory``):

- the tensors taken in order, each counted at its bytes (each has a storage of its own
  here: ``untyped_storage().nbytes()`` of the tensor torch would load); a new shard starts
  when the next tensor would take the current one over the limit; a tensor over the limit
  on its own is a shard of its own at once, while the current one stays open (so shard
  numbers need not follow the order of the names); tensors sharing a storage go where the
  first of them went, which for torch's empty tensors (all at address 0) means every empty
  tensor joins the first one's shard;
- shards named ``<stem>-{i:05d}-of-{n:05d}<suffix>`` from 1 (``model-00001-of-00003.safetensors``),
  and ``<model_file>.index.json`` (``model.safetensors.index.json``) holding
  ``{"metadata": {"total_size": <bytes of every tensor>}, "weight_map": {name: shard}}``,
  written as transformers writes it (``indent=2``, keys sorted, a final newline; without the
  ``total_parameters`` transformers adds, which counts a model's parameters but not its
  buffers: the names do not tell them apart);
- everything in one shard: the one file ``<model_file>`` and no index.

Sizes are given as huggingface_hub parses them (``parse_size_to_int``): a number and
``KB``/``MB``/``GB``/``TB``, powers of ten (``"5GB"`` = 5 * 10**9, ``"0.5GB"`` too), and,
as transformers' ``convert_file_size_to_int`` also takes, ``KiB``/``MiB``/``GiB``/``TiB``,
powers of two; or a number of bytes.

The folder appears whole or not at all: it is written into a hidden folder beside it and
renamed into place at the end (``weightscope.atomic.atomic_folder``). A model's own files
beside its weights (``config.json``, ``generation_config.json``: what ``save_pretrained``
writes besides them) are copied with it; its tokenizer's files are not, and a note says so.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from weightscope.errors import UsageError
from weightscope.writing import Spec, Tensors, Writer, plan

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from weightscope.sources import AnyPath

_UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([KMGT]I?B)?\s*", re.IGNORECASE)
# The files save_pretrained writes beside the weights, which describe the model they are the weights of.
MODEL_FILES = ("config.json", "generation_config.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model")
DEFAULT_SHARD_SIZE = "5GB"  # save_pretrained's and huggingface_hub's default max_shard_size
_MAX_MODEL_FILE = 16 << 20  # a config larger than this is no config: refused, not copied


def parse_size(size: int | str) -> int:
    """Bytes, from ``size``: an int, or a number and a unit as huggingface_hub parses it (``"5GB"``, ``"0.5GB"``), or
    a binary unit (``"2GiB"``); at least one byte."""
    if isinstance(size, int) and not isinstance(size, bool):
        value = size
    elif isinstance(size, str) and (found := _SIZE.fullmatch(size)):
        number, unit = found.groups()
        value = int(float(number) * _UNITS[unit.upper()]) if unit else int(float(number))
    else:
        raise UsageError(f"a shard size is bytes or a number and KB, MB, GB, TB (or KiB, MiB, GiB, TiB); not {size!r}")
    if value < 1:
        raise UsageError(f"a shard size is at least one byte; not {size!r}")
    return value


@dataclass(frozen=True)
class ShardNames:
    """The files of a model folder whose one weights file is ``model_file``."""

    model_file: str

    def shard(self, number: int, count: int) -> str:
        """The ``number``-th of ``count`` shards (from 1): ``model-00001-of-00002.safetensors``."""
        stem, dot, suffix = self.model_file.rpartition(".")
        return f"{stem}-{number:05d}-of-{count:05d}{dot}{suffix}"

    @property
    def index(self) -> str:
        return f"{self.model_file}.index.json"

    def claims(self, name: str) -> bool:
        """Whether a file called ``name`` is this folder's weights: the file, a shard, or the index."""
        stem, dot, suffix = self.model_file.rpartition(".")
        shard = re.fullmatch(re.escape(stem) + r"-\d{5}-of-\d{5}" + re.escape(dot + suffix), name)
        return name in (self.model_file, self.index) or shard is not None


def split(specs: Sequence[Spec], max_shard_size: int) -> list[list[Spec]]:
    """The tensors grouped into shards as huggingface_hub groups them (see the module's docstring)."""
    shards: list[list[Spec]] = []
    current: list[Spec] = []
    current_size = 0
    empty: list[Spec] = []  # torch's empty tensors all share one storage (address 0, no bytes): they go together
    for spec in specs:
        if spec.nbytes == 0 and empty:
            empty.append(spec)
            continue
        if spec.nbytes == 0:
            empty.append(spec)
        if spec.nbytes > max_shard_size:
            shards.append([spec])
            continue
        if current_size + spec.nbytes > max_shard_size:
            shards.append(current)
            current, current_size = [], 0
        current.append(spec)
        current_size += spec.nbytes
    if current or not shards:
        shards.append(current)  # (no tensors at all: one empty file, where huggingface_hub writes none)
    if empty:  # the later ones join the first in its shard, after the shard's others
        next(shard for shard in shards if empty[0] in shard).extend(empty[1:])
    return shards


class _Part:
    """The tensors of one shard, as a ``Tensors`` over the whole set's."""

    def __init__(self, source: Tensors, specs: list[Spec]) -> None:
        self._source = source
        self._names = [spec.name for spec in specs]

    def names(self) -> list[str]:
        return self._names

    def spec(self, name: str) -> tuple[np.dtype, tuple[int, ...]]:
        return self._source.spec(name)

    def array(self, name: str) -> np.ndarray:
        return self._source.array(name)


@dataclass(frozen=True)
class WrittenSet:
    """A model folder's files in the order they were written (shards, then the index), and each shard's tensors."""

    files: list[Path]
    shards: dict[Path, list[str]]


@dataclass(frozen=True)
class PlannedSet:
    """A model folder planned, before a byte is written: its tensors in shards, and the files it will hold."""

    writer: Writer
    names: ShardNames
    source: Tensors
    shards: list[list[Spec]]

    @property
    def files(self) -> list[str]:
        """The shards' names, then the index's; or the one file."""
        count = len(self.shards)
        if count == 1:
            return [self.names.model_file]
        return [*(self.names.shard(number, count) for number in range(1, count + 1)), self.names.index]

    def write(self, folder: Path, **options: Any) -> WrittenSet:
        """Write the shards (each by the format's writer, given ``options``), then the index, into ``folder``."""
        files = [folder / name for name in self.files]
        written: dict[Path, list[str]] = {}
        for path, shard in zip(files, self.shards, strict=False):  # the index, last, is no shard
            self.writer.write(_Part(self.source, shard), path, **options)
            written[path] = [spec.name for spec in shard]
        if len(self.shards) > 1:
            index = {
                "metadata": {"total_size": sum(spec.nbytes for shard in self.shards for spec in shard)},
                "weight_map": {name: path.name for path, names in written.items() for name in names},
            }
            files[-1].write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return WrittenSet(files, written)


def plan_set(
    writer: Writer, model_file: str, tensors: Tensors | Mapping[str, ArrayLike], folder: Path, max_shard_size: int | str
) -> PlannedSet:
    """``tensors`` planned as a model folder at ``folder`` of ``writer``'s format, in shards of at most
    ``max_shard_size`` bytes (one over it alone in its own), all refused before a file is made as ``writing.plan``
    refuses them."""
    limit = parse_size(max_shard_size)
    source, specs = plan(tensors, folder / model_file, writer.holds)
    return PlannedSet(writer, ShardNames(model_file), source, split(specs, limit))


def model_files(source: AnyPath, claims: Sequence[ShardNames]) -> tuple[dict[str, bytes], list[str]]:
    """The model's own files beside a checkpoint that is a model folder or a Hugging Face weights file in one (name ->
    bytes), and the names of its tokenizer's files there, which are not copied. A file that is not a model's weights
    (a ``weights.pt`` beside an unrelated ``config.json``) has none."""
    if source.is_dir():
        folder = source
    elif any(names.claims(source.name) for names in claims):
        folder = source.parent
    else:
        return {}, []
    found: dict[str, bytes] = {}
    for name in MODEL_FILES:
        path = folder / name
        if path.is_file():
            if path.stat().st_size > _MAX_MODEL_FILE:
                raise UsageError(f"{path}: {path.stat().st_size} bytes, too large for a model's {name}; not copied")
            found[name] = path.read_bytes()
    return found, [name for name in _TOKENIZER_FILES if (folder / name).is_file()]
