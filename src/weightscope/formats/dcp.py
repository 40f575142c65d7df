"""PyTorch Distributed Checkpoint (DCP): a folder of ``.metadata`` and ``__R_I.distcp`` files, read without torch.

What FSDP2, torchtitan, accelerate, Megatron-Core ``torch_dist`` and NeMo 2 write with
``torch.distributed.checkpoint.save`` (facts from torch 2.13's ``distributed/checkpoint/``: ``filesystem.py``,
``metadata.py``, ``_nested_dict.py``, ``_extension.py``, ``hf_storage.py``; ``shared/formats/next-formats.md``
section 2, corrected where it was wrong):

- **The folder**: ``.metadata`` (one pickle by the coordinator; saved with ``use_collectives=False``, each rank's
  own ``__{rank}.metadata`` of what it wrote, merged here: chunks gathered, what several ranks saved, such as
  replicated values, taken from the first) and data files ``__{rank}_{i}.distcp`` (``i``: the writer's thread
  bucket). The folder, or any file of it, opens it. (``HuggingFaceStorageWriter`` without ``save_distributed`` also
  writes a ``.metadata``, but as a JSON index beside ``model-0000N-of-0000M.safetensors``: no DCP folder.)
- **``.metadata``** (``pickle.dump``, protocol 4): each dataclass made by ``NEWOBJ`` of its class with no
  arguments and ``BUILD`` of its attributes as a dict; ``TensorProperties``' state is the 5-tuple ``(dtype,
  layout, requires_grad, _MEM_FORMAT_ENCODING(n), pin_memory)``. ``Metadata``: ``state_dict_metadata`` {fqn:
  ``TensorStorageMetadata(properties, size, chunks)`` | ``BytesStorageMetadata()``}, ``planner_data`` {fqn:
  the path of keys and list indices it was flattened from}, ``storage_data`` {``MetadataIndex(fqn, offset,
  index)``: ``_StorageInfo(relative_path, offset, length[, transform_descriptors])``} (a chunk is matched by
  ``(fqn, offset)``: ``index`` is a hint), ``storage_meta`` (its checkpoint id may be a pickled path object),
  ``version`` (``"1.0.0"``; absent in old files; other attributes, such as Megatron's ``mcore_data``, are
  ignored). ``ChunkStorageMetadata(offsets, sizes)``; sizes are ``torch.Size`` (``REDUCE`` of a tuple of ints),
  dtypes the globals ``torch.float32`` ..., the layout ``torch.serialization._get_layout('torch.strided')``.
- **Items**: each storage entry is a complete ``torch.save`` zip, ``length`` bytes at ``offset`` (a file holds
  its bytes items first, then its tensors): a tensor item holds exactly its chunk (the writer clones views of
  larger storages), a bytes item ``torch.save(value)`` of a value that was no tensor (a float, a list of
  strings, a ``param_groups`` entry). Both are read by ``weightscope.formats.pytorch``'s reader over that byte
  range only, under torch's ``weights_only`` allow-list; bytes items are shown as metadata. With
  ``transform_descriptors == ["stream.zstd/1"]`` (``FileSystemWriter(_extensions=[ZStandard()])``: torch needs
  ``zstandard`` or ``pyzstd``; the one transform it registers) the range is a zstd stream of the zip,
  decompressed (by cramjam) into a buffer of the chunk's size plus ``ITEM_OVERHEAD``, which a bomb cannot outgrow.
- **Names**: nested dicts and lists are flattened, the fqn the path's parts joined by ``.``; lists of scalars
  and tuples are one bytes item. ``get_state_dict(model, optimizer)`` keys optimizer state by parameter name,
  one part of the path (``optim.state.0.weight.exp_avg`` is ``('optim', 'state', '0.weight', 'exp_avg')``),
  ``step`` a 0-d tensor, ``optim.param_groups.0.lr`` ... bytes items; it is attached to the one listed
  parameter named so (or ``<prefix>.<name>``: ``model.0.weight``) as its optimizer state (``TensorRole``), as is
  Megatron-Core's ``optimizer.state.exp_avg.<parameter key>`` (one path part: Megatron flattens its own keys).
- **Sharded tensors** (DTensor: FSDP, TP): one chunk per shard, each its own item, placed at its ``offsets``
  in ``size`` (uneven: FSDP2 splits 7 rows 4 + 3). Tensors and bytes that are no DTensor are saved once.

Variants: the **safetensors storage** (``HuggingFaceStorageWriter(path, save_distributed=True)``) writes no
``.metadata``: one ``shard-{rank+1:05d}-model-{i:05d}-of-{n:05d}.safetensors`` per rank, each tensor that
rank's chunk, its offsets in ``__metadata__["DCP_SHARDING_INFO"]`` (JSON ``{fqn: {"saved_offsets": [..]}}``;
none: 0), the full size the largest ``offset + shape`` per axis. **Megatron-Core** ``torch_dist``: a DCP folder
with ``metadata.json`` (``{"sharded_backend": "torch_dist"}``) and ``common.pt`` (``torch.save`` of the
non-sharded state: its tensors listed beside; one naming globals outside the allow-list, such as
``argparse.Namespace``, left out with a note).

Security model: ``.metadata`` is read by ``weightscope.containers.unpickler`` under ``DcpAllowList``
(``weightscope.formats.dcp_pickle``): exactly the classes above (as inert records), ``torch.Size``, the dtypes,
``_get_layout`` of a string, the memory-format enum by value and ``pathlib``'s path classes (as strings); any
other global is ``RefusedError`` naming it. ``scan`` lists what it names without building anything.

A reader must refuse: a ``.metadata`` that is not such a ``Metadata``; a data file missing
(``CheckpointNotFoundError``) or outside the folder (``RefusedError``); an item past its file's end
(``TruncatedFileError``), that is no torch.save zip (a safetensors-serialized one: unsupported; torch fails on
them too), or holds another dtype or shape than its chunk; chunks of another rank than their tensor, outside it,
overlapping or leaving holes; a chunk with no storage entry; other transforms; a zstd stream that is not one,
or outgrows its bound (``LimitExceededError``).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from weightscope.bounds import check_range
from weightscope.checkpoint import Checkpoint, Extent, FolderCheckpoint, Index, TensorInfo
from weightscope.confine import confined
from weightscope.containers.allow_list import Global, ScanEntry, ScanReport, ints, show
from weightscope.containers.unpickler import size_of
from weightscope.dtypes import BY_NAME, check_rank, check_size
from weightscope.errors import (
    CheckpointNotFoundError,
    CorruptCheckpointError,
    LimitExceededError,
    UnsupportedFormatError,
    WeightscopeError,
    kept,
)
from weightscope.formats._folder_choice import read_json
from weightscope.formats.dcp_pickle import DcpAllowList, _merged, _MetadataUnpickler, _Record
from weightscope.formats.pytorch import PyTorchCheckpoint
from weightscope.formats.pytorch_pickle import _Unpickler
from weightscope.layers import TORCH_SLOTS, TensorRole
from weightscope.limits import Budget, Limits
from weightscope.sources import AnyPath, AnySource, as_path, local_path, open_source

if TYPE_CHECKING:
    from weightscope.remote import RemotePath

METADATA = ".metadata"
RANK_METADATA = re.compile(r"^__(\d+)\.metadata$")  # each rank's own, saved without collectives
HF_SHARD = re.compile(r"^shard-\d{5}-model-\d{5}-of-\d{5}\.safetensors$")
HF_SHARDING_KEY = "DCP_SHARDING_INFO"
MEGATRON_CONFIG, MEGATRON_COMMON = "metadata.json", "common.pt"
# Megatron-Core's optimizer state keys (dist_checkpointing/optimizer.py): optimizer.state.<slot>.<parameter key>, its
# distributed optimizer's fp32 master weights under the slots fp32_param (or param).
MEGATRON_STATE = "optimizer.state."
MEGATRON_SLOTS = TORCH_SLOTS | {"fp32_param", "param"}
ZIP_HEAD = b"PK\x03\x04"
ZSTD = "stream.zstd"  # the one transform torch registers (_extension.py ZStandard), version 1
ITEM_OVERHEAD = 1 << 20  # what a torch.save zip holds beside its one tensor's bytes, at most: a zstd stream's bound
# Pairs of chunks compared for overlap, at most: a sweep along the axis cut most compares only chunks that meet
# along it (FSDP's or TP's shards none, a 2-D mesh's a row of them), so only a crafted file comes near this.
MAX_PAIRS = 4_000_000
ENTRY_BYTES = 2048  # what one listed tensor or chunk costs: its records, its row in a listing


class _Chunk(NamedTuple):
    """One stored piece of a tensor: where it sits in the tensor, and where its item is."""

    offsets: tuple[int, ...]
    sizes: tuple[int, ...]
    file: str  # the data file, as the metadata names it (relative to the folder)
    offset: int  # of the item (a torch.save zip) in the file; for the safetensors variant, of the tensor's bytes
    length: int
    transformed: bool = False  # a zstd stream of the item (``stream.zstd/1``)


class _Sharded(NamedTuple):
    """A tensor of the checkpoint: its size and type, and its chunks."""

    size: tuple[int, ...]
    element: str
    chunks: list[_Chunk]


class _Window:
    """``length`` bytes at ``start`` of another source, as a source of their own: one stored item."""

    def __init__(self, source: AnySource | memoryview, start: int, length: int, label: str) -> None:
        self._source, self._start, self.size = source, start, length  # a memoryview: a decompressed item
        self.path = Path(label)  # what messages name: the data file and the item's offset
        self.local_path: Path | None = None  # nothing to map on its own

    def read(self, offset: int, length: int, what: str) -> memoryview:
        check_range(self.path, offset, length, self.size, what)
        if isinstance(self._source, memoryview):
            return self._source[self._start + offset : self._start + offset + length]
        return self._source.read(self._start + offset, length, what)

    def read_head(self, offset: int, length: int, limit: int, what: str) -> memoryview:
        return self.read(offset, length, what)

    def prefetch(self, ranges: list[tuple[int, int]]) -> None:
        """Nothing: the item's bytes are its file's (or in memory)."""

    def close(self) -> None:
        """Nothing: the file's source is the checkpoint's to close."""


class _Item(PyTorchCheckpoint):
    """One stored item: the torch.save zip in a window of a data file, read as ``PyTorchCheckpoint`` reads a file."""

    def __init__(self, window: _Window, *, verify: bool) -> None:
        Checkpoint.__init__(self, window.path)
        self.verify_checksums = verify
        self._source = window
        self._install(self._load())

    def value(self) -> Any:
        """The object saved (a bytes item's value), unpickled under torch's allow-list."""
        return _Unpickler(bytes(self._member_bytes("data.pkl")), str(self.path), budget=self._budget).load()


class DcpCheckpoint(FolderCheckpoint):
    """A DCP folder: each tensor reassembled from its chunks, each chunk read from its own byte range."""

    format = "dcp"
    checksums = "zip CRC-32"

    def __init__(self, path: str | os.PathLike[str] | RemotePath, *, verify: bool = True) -> None:
        location = as_path(path)
        inside = location.name == METADATA or location.suffix in (METADATA, ".distcp")  # a file of the folder
        super().__init__(location.parent if inside else location, verify=verify)

    def _prepare(self) -> None:
        self._sources: dict[str, AnySource] = {}
        self._tensors: dict[str, _Sharded] = {}
        self._items: dict[tuple[str, int], _Item] = {}  # (file, offset) -> the item, once read
        self._common: PyTorchCheckpoint | None = None
        self._safetensors = False

    # -- opening -----------------------------------------------------------------------
    def _load(self) -> Index:
        folder = self.path
        names = [METADATA] if (folder / METADATA).is_file() else _rank_metadata(folder)
        if not names:
            return self._load_safetensors(folder)
        unpicklers = [_metadata_unpickler(self._open(name), folder / name, scan=False) for name in names]
        loaded = [unpickler.load() for unpickler in unpicklers]
        index = Index()
        self._read_metadata(loaded[0] if len(loaded) == 1 else _merged(loaded, folder), index, unpicklers[0].budget)
        self._load_megatron(folder, index)
        return index

    def _open(self, name: str) -> AnySource:
        """The source of data file ``name`` (confined to the folder), opened once."""
        key = str(self.path / name)
        if key not in self._sources:
            where = str(self.path / METADATA)
            file = confined(self.path, name, where, "data file")
            if not file.is_file():
                raise CheckpointNotFoundError(f"{self.path}: data file '{name}' is missing ({where} names it)")
            self._sources[key] = open_source(file)
        return self._sources[key]

    def _read_metadata(self, metadata: Any, index: Index, budget: Budget) -> None:
        where = self.path / METADATA
        if not isinstance(metadata, _Record) or metadata.kind != "Metadata":
            raise CorruptCheckpointError(f"{where}: not a DCP Metadata but {show(metadata, 100)}")
        entries, paths = metadata.get("state_dict_metadata"), metadata.get("planner_data") or {}
        storage = metadata.get("storage_data")
        if not isinstance(entries, dict) or not isinstance(storage, dict) or not isinstance(paths, dict):
            raise CorruptCheckpointError(f"{where}: a Metadata without state_dict_metadata and storage_data dicts")
        if isinstance(version := metadata.get("version"), str):
            index.metadata["dcp.version"] = version
        items = _storage_items(storage, where)
        for fqn, entry in entries.items():
            if not isinstance(fqn, str) or not isinstance(entry, _Record):
                raise CorruptCheckpointError(f"{where}: entry {show(fqn, 100)} is {show(entry, 100)}")
            budget.spend(ENTRY_BYTES + size_of(fqn), "the tensors listed")
            if entry.kind == "BytesStorageMetadata":
                self._bytes_entry(fqn, items, index)
            elif entry.kind == "TensorStorageMetadata":
                self._tensor_entry(fqn, entry, items, index, budget)
            else:
                raise CorruptCheckpointError(f"{where}: entry '{fqn}' is a {entry.kind}")
        index.roles.update(_optimizer_roles(index.infos, paths))

    def _tensor_entry(self, fqn: str, entry: _Record, items: dict[Any, Any], index: Index, budget: Budget) -> None:
        where = f"{self.path / METADATA}: tensor '{fqn}'"
        properties, size, chunks = entry.get("properties"), entry.get("size"), entry.get("chunks")
        dtype = properties.get("dtype") if isinstance(properties, _Record) else None
        if not isinstance(dtype, Global) or dtype.kind != "dtype" or not ints(size) or not isinstance(chunks, list):
            raise CorruptCheckpointError(f"{where}: not a dtype, a size and a list of chunks: {show(entry, 200)}")
        assert dtype.element is not None
        check_rank(size, where)
        placed = []
        for chunk in chunks:
            offsets: Any = chunk.get("offsets") if isinstance(chunk, _Record) else None
            sizes: Any = chunk.get("sizes") if isinstance(chunk, _Record) else None
            if not (ints(offsets) and ints(sizes)):
                raise CorruptCheckpointError(f"{where}: a chunk that is not offsets and sizes: {show(chunk, 200)}")
            stored = items.get((fqn, offsets))
            if stored is None:
                raise CorruptCheckpointError(f"{where}: no storage entry for its chunk at {list(offsets)}")
            budget.spend(ENTRY_BYTES, "the chunks listed")
            placed.append(_Chunk(offsets, sizes, *stored))
        _check_chunks(where, size, placed)
        self._add_tensor(index, fqn, _Sharded(size, dtype.element, placed))

    def _add_tensor(self, index: Index, fqn: str, tensor: _Sharded) -> None:
        dtype = BY_NAME[tensor.element].dtype
        assert dtype is not None
        check_size(tensor.size, dtype.itemsize, f"{self.path}: tensor '{fqn}'")
        nbytes = math.prod(tensor.size) * dtype.itemsize
        info = TensorInfo(fqn, dtype, tensor.size, nbytes, tensor.element, str(self.path), 0, fqn)
        if tensor.chunks and not tensor.chunks[0].transformed:  # where its first chunk's values are: read at open
            first = self._chunk_extent(info, tensor.chunks[0])[1]
            info = info._replace(file=first.file, offset=first.offset)
        index.infos[fqn] = info
        self._tensors[fqn] = tensor

    def _bytes_entry(self, fqn: str, items: dict[Any, Any], index: Index) -> None:
        """A value that was no tensor: shown as metadata, as torch.save's scalars are."""
        stored = items.get((fqn, None))
        if stored is None:
            raise CorruptCheckpointError(f"{self.path / METADATA}: no storage entry for bytes entry '{fqn}'")
        try:
            item = self._item(_Chunk((), (), *stored), Limits.for_size(stored[2]).memory)
            value = item.value()
        except WeightscopeError as error:
            self._notes.append(f"bytes entry '{fqn}' not read: {error}")
            return
        if len(item):  # a tuple of tensors is saved whole, as one bytes item
            self._notes.append(f"bytes entry '{fqn}' holds {len(item)} tensors, not listed")
        index.metadata[fqn] = value if isinstance(value, str) else show(value, 1000)

    def _load_megatron(self, folder: AnyPath, index: Index) -> None:
        """Megatron-Core's ``common.pt`` beside the DCP files (``metadata.json`` says torch_dist): its tensors
        listed with the others; left out with a note where its pickle names what the allow-list refuses."""
        config, common = folder / MEGATRON_CONFIG, folder / MEGATRON_COMMON
        if not common.is_file():
            return
        if config.is_file():
            backend = read_json(config, "Megatron's checkpoint config")
            if isinstance(backend, dict):
                index.metadata["megatron.sharded_backend"] = str(backend.get("sharded_backend"))
        try:
            self._common = PyTorchCheckpoint(common, verify=self.verify_checksums)
        except WeightscopeError as error:
            self._notes.append(f"{common}: not read: {error}")
            return
        for info in self._common.infos():
            if info.name in index.infos:
                raise CorruptCheckpointError(f"{common}: tensor '{info.name}' is in the DCP files too")
            index.infos[info.name] = info
        index.metadata.update({f"common.{key}": value for key, value in self._common.metadata.items()})

    def _load_safetensors(self, folder: AnyPath) -> Index:
        """The Hugging Face storage variant: each rank's safetensors shard, its chunks' offsets in its metadata."""
        from weightscope.formats.safetensors import SafetensorsCheckpoint

        self._safetensors, self.checksums = True, ""  # safetensors files hold none
        found: dict[str, tuple[str, list[_Chunk]]] = {}
        index = Index()
        for file in sorted(folder.iterdir(), key=lambda file: file.name):  # type: ignore[union-attr]
            if not HF_SHARD.match(file.name):
                continue
            with SafetensorsCheckpoint(file, verify=self.verify_checksums) as shard:
                offsets = _sharding_info(shard.metadata.get(HF_SHARDING_KEY), file)
                for info in shard.infos():
                    place = offsets.get(info.name, (0,) * len(info.shape))
                    extent = shard.extent(info.name)
                    if not ints(place) or len(place) != len(info.shape) or extent is None:
                        raise CorruptCheckpointError(f"{file}: tensor '{info.name}' has offsets {show(place, 100)}")
                    element, chunks = found.setdefault(info.name, (info.type_name, []))
                    if element != info.type_name:
                        raise CorruptCheckpointError(f"{file}: tensor '{info.name}' is {info.type_name}, not {element}")
                    chunks.append(_Chunk(place, info.shape, file.name, extent.offset, extent.nbytes))
        if not found:
            raise CheckpointNotFoundError(f"{folder}: no {METADATA} and no DCP safetensors shards")
        for name, (element, chunks) in found.items():
            rank = len(chunks[0].sizes)
            if any(len(chunk.sizes) != rank for chunk in chunks):
                raise CorruptCheckpointError(f"{folder}: tensor '{name}' has chunks of different ranks")
            size = tuple(max(chunk.offsets[axis] + chunk.sizes[axis] for chunk in chunks) for axis in range(rank))
            _check_chunks(f"{folder}: tensor '{name}'", size, chunks)
            self._add_tensor(index, name, _Sharded(size, element, chunks))
        return index

    # -- reading -----------------------------------------------------------------------
    def _item(self, chunk: _Chunk, bound: int) -> _Item:
        """The torch.save zip a storage entry locates, read once; a zstd stream's decompressed (within ``bound``
        bytes) each time it is asked for, never kept: reading every tensor holds one at a time."""
        key = (chunk.file, chunk.offset)
        if key in self._items:
            return self._items[key]
        source = self._open(chunk.file)
        label = f"{self.path / chunk.file}@{chunk.offset}"
        check_range(self.path / chunk.file, chunk.offset, chunk.length, source.size, "an item")
        window = _Window(source, chunk.offset, chunk.length, label)
        if chunk.transformed:
            window = _decompressed(window, bound)
        head = bytes(window.read(0, min(9, window.size), "the item's head"))
        if head[8:] == b"{" and not head.startswith(ZIP_HEAD):  # serialization_format=SAFETENSORS
            raise UnsupportedFormatError(f"{label}: a safetensors-serialized item; weightscope reads torch.save's")
        if not head.startswith(ZIP_HEAD):
            raise CorruptCheckpointError(f"{label}: not a torch.save zip (it starts {head[:4]!r})")
        item = _Item(window, verify=self.verify_checksums)
        if not chunk.transformed:
            self._items[key] = item
        return item

    def _chunk_item(self, info: TensorInfo, chunk: _Chunk) -> tuple[_Item, TensorInfo]:
        """The item holding a chunk of tensor ``info``, and the tensor in it: of the chunk's shape and type."""
        what = f"{self.path / chunk.file}: chunk {list(chunk.offsets)} of '{info.name}'"
        item = self._item(chunk, math.prod(chunk.sizes) * info.dtype.itemsize + ITEM_OVERHEAD)
        if len(item) != 1:
            raise CorruptCheckpointError(f"{what}: its item holds {len(item)} tensors, not one")
        held = next(item.infos())
        if held.shape != chunk.sizes or held.type_name != info.type_name:
            raise CorruptCheckpointError(
                f"{what}: its item holds a {held.type_name} tensor of shape {list(held.shape)}, "
                f"not {info.type_name} {list(chunk.sizes)}"
            )
        return item, held

    def _chunk_extent(self, info: TensorInfo, chunk: _Chunk) -> tuple[TensorInfo, Extent]:
        """A plain chunk of tensor ``info`` as a tensor of its own, and where its values are in its data file."""
        file = str(self.path / chunk.file)
        stored = TensorInfo(info.name, info.dtype, chunk.sizes, 0, info.type_name, file, 0, info.name)
        if self._safetensors:
            self._open(chunk.file)
            nbytes = math.prod(chunk.sizes) * info.dtype.itemsize
            extent = Extent(file, chunk.offset, nbytes, info.dtype.newbyteorder("<"))
            return stored._replace(nbytes=nbytes, offset=chunk.offset), extent
        item, held = self._chunk_item(info, chunk)
        extent = item._extent(held)
        checked = None if extent.checked is None else (chunk.offset + extent.checked[0], extent.checked[1])
        moved = extent._replace(file=file, offset=chunk.offset + extent.offset, checked=checked)
        return stored._replace(nbytes=held.nbytes, offset=moved.offset), moved

    def _chunk_values(self, info: TensorInfo, chunk: _Chunk) -> np.ndarray:
        if chunk.transformed:
            item, held = self._chunk_item(info, chunk)
            return item[held.name]
        return self._read_extent(*self._chunk_extent(info, chunk))

    def _extent(self, info: TensorInfo) -> Extent | None:
        """A tensor stored whole in one plain chunk is that chunk's extent; a sharded or compressed one has none."""
        tensor = self._tensors.get(info.name)
        if tensor is None or len(tensor.chunks) != 1 or tensor.chunks[0].sizes != tensor.size:
            return None
        return None if tensor.chunks[0].transformed else self._chunk_extent(info, tensor.chunks[0])[1]

    def _source_of(self, file: str) -> AnySource | None:
        return self._sources.get(file)

    def _read(self, info: TensorInfo) -> np.ndarray:
        if info.name not in self._tensors:
            assert self._common is not None
            return self._common[info.name]
        tensor = self._tensors[info.name]
        if len(tensor.chunks) == 1 and tensor.chunks[0].sizes == tensor.size:
            return self._chunk_values(info, tensor.chunks[0])
        values = np.empty(tensor.size, info.dtype)
        for chunk in tensor.chunks:
            place = tuple(
                slice(start, start + length) for start, length in zip(chunk.offsets, chunk.sizes, strict=True)
            )
            values[place] = self._chunk_values(info, chunk)
        return values

    # -- what it is --------------------------------------------------------------------
    def chunks(self, name: str) -> list[tuple[tuple[int, ...], tuple[int, ...], str]]:
        """Tensor ``name``'s chunks: (offsets, sizes, data file), in the metadata's order."""
        tensor = self._tensors.get(self.info(name).name)
        return [] if tensor is None else [(chunk.offsets, chunk.sizes, chunk.file) for chunk in tensor.chunks]

    def sharding(self) -> dict[str, Any]:
        """How the checkpoint is sharded: its ranks, chunks per tensor (tensors by count) and bytes per file."""
        files = sorted({chunk.file for tensor in self._tensors.values() for chunk in tensor.chunks})
        ranks = {re.sub(r"_\d+\.distcp$|-model-.*$", "", file) for file in files}  # __R_I.distcp, shard-R-model-...
        counts = Counter(len(tensor.chunks) for tensor in self._tensors.values())
        sizes = {file: (self.path / file).stat().st_size for file in files if (self.path / file).is_file()}
        return {"ranks": len(ranks), "chunks_per_tensor": dict(sorted(counts.items())), "bytes_per_file": sizes}

    def checked_files(self) -> list[tuple[AnyPath, str, str]]:
        metadata = str(self.path / METADATA)
        common = self._common.checked_files() if self._common is not None else []
        return [(as_path(file), self.format, self.checksums) for file in self._sources if file != metadata] + common

    def verify(self, advance: Callable[[int, int], None] | None = None) -> list[WeightscopeError]:
        """Every chunk's item read and checked (its bounds, its zip's CRC-32), every tensor reassembled."""
        problems: list[WeightscopeError] = []
        for name, tensor in self._tensors.items():
            for chunk in tensor.chunks:
                try:
                    self._chunk_values(self._infos[name], chunk)
                except WeightscopeError as error:
                    problems.append(kept(error))
            if advance is not None:
                advance(1, self._infos[name].nbytes)
        if self._common is not None:
            problems += self._common.verify(advance)
        return problems

    def _close(self) -> None:
        for source in self._sources.values():
            source.close()
        if self._common is not None:
            self._common.close()


def _rank_metadata(folder: AnyPath) -> list[str]:
    """The per-rank ``__{rank}.metadata`` files of a folder saved without collectives, rank 0 up; [] for none."""
    local = local_path(folder)
    found = sorted(
        int(match[1]) for file in (local.iterdir() if local else []) if (match := RANK_METADATA.match(file.name))
    )
    if found and found != list(range(len(found))):
        missing = min(set(range(found[-1] + 1)) - set(found))
        raise CheckpointNotFoundError(f"{folder}: __{missing}{METADATA} is missing (ranks {found} saved theirs)")
    return [f"__{rank}{METADATA}" for rank in found]


def _metadata_unpickler(source: AnySource, path: AnyPath, *, scan: bool) -> _MetadataUnpickler:
    return _MetadataUnpickler(
        bytes(source.read(0, source.size, "the metadata pickle")),
        str(path),
        DcpAllowList(),
        scan=scan,
        budget=Budget(Limits.for_size(source.size), path),
    )


def scan(path: str | os.PathLike[str]) -> ScanReport:
    """The globals and calls ``.metadata`` names (or each rank's ``__N.metadata``) of the DCP folder at ``path`` (or
    of the file), each marked allowed or refused, and the verdict: what opening the folder raises. Nothing is
    imported or called; the safetensors storage has no pickle to scan."""
    location = as_path(path)
    folder = location if location.is_dir() else location.parent
    names = [METADATA] if (folder / METADATA).is_file() else _rank_metadata(folder)
    found: dict[tuple[str, str, bool], int] = {}
    for name in names:
        source = open_source(folder / name)
        try:
            unpickler = _metadata_unpickler(source, folder / name, scan=True)
            unpickler.load()
        finally:
            source.close()
        for key, count in unpickler.found.items():
            found[key] = found.get(key, 0) + count
    report = ScanReport(ScanEntry(*key, count) for key, count in found.items())
    try:
        DcpCheckpoint(location).close()
    except WeightscopeError as error:
        report.verdict = kept(error)
    return report


def _storage_items(storage: dict[Any, Any], where: AnyPath) -> dict[tuple[str, Any], tuple[str, int, int, bool]]:
    """``storage_data`` as ``(fqn, offsets or None) -> (file, offset, length, zstd)``, every entry checked."""
    items: dict[tuple[str, Any], tuple[str, int, int, bool]] = {}
    for key, info in storage.items():
        fqn: Any = key.get("fqn") if isinstance(key, _Record) else None
        offset: Any = key.get("offset") if isinstance(key, _Record) else None
        ok = isinstance(key, _Record) and key.kind == "MetadataIndex" and isinstance(fqn, str)
        if not ok or not (offset is None or ints(offset)):
            raise CorruptCheckpointError(f"{where}: a storage key that is not a MetadataIndex: {show(key, 200)}")
        file = info.get("relative_path") if isinstance(info, _Record) else None
        start, length = (info.get("offset"), info.get("length")) if isinstance(info, _Record) else (None, None)
        if not (isinstance(file, str) and type(start) is int and type(length) is int and min(start, length) >= 0):
            raise CorruptCheckpointError(f"{where}: '{fqn}' is stored at {show(info, 200)}")
        descriptors = info.get("transform_descriptors") or []
        name, _, version = descriptors[0].partition("/") if len(descriptors) == 1 else ("", "", "")
        if descriptors and (name != ZSTD or version.partition(".")[0] != "1"):
            raise UnsupportedFormatError(
                f"{where}: '{fqn}' is stored through transforms {show(descriptors, 100)}; weightscope reads "
                f"{ZSTD}/1 (zstd) or none"
            )
        items.setdefault((fqn, offset), (file, start, length, bool(descriptors)))  # ranks' copies: the first
    return items


def _decompressed(window: _Window, bound: int) -> _Window:
    """The item a zstd stream holds, refused where it would be more than ``bound`` bytes (decompressed into a
    buffer of that size, which it cannot outgrow: a bomb stops when the buffer is full; left uninitialised, its
    pages are only those written)."""
    import cramjam

    output = np.empty(bound + 1, np.uint8)
    try:
        written = cramjam.zstd.decompress_into(bytes(window.read(0, window.size, "a zstd stream")), output.data)
    except cramjam.DecompressionError as error:
        if "whole buffer" in str(error):  # cramjam's word for output that outgrew the buffer
            raise LimitExceededError(f"{window.path}: a zstd stream of more than {bound:,} bytes") from None
        raise CorruptCheckpointError(f"{window.path}: not a zstd stream ({error})") from None
    if written > bound:
        raise LimitExceededError(f"{window.path}: a zstd stream of more than {bound:,} bytes")
    return _Window(memoryview(output.data)[:written], 0, written, str(window.path))


def _check_chunks(where: str, size: tuple[int, ...], chunks: list[_Chunk]) -> None:
    """Refuse chunks of another rank than the tensor, outside it, overlapping, or leaving holes."""
    for chunk in chunks:
        if len(chunk.offsets) != len(size) or len(chunk.sizes) != len(size):
            raise CorruptCheckpointError(
                f"{where}: chunk {list(chunk.offsets)} + {list(chunk.sizes)} is not of the tensor's rank {len(size)}"
            )
        if any(
            start < 0 or length < 0 or start + length > whole
            for start, length, whole in zip(*chunk[:2], size, strict=True)
        ):
            raise CorruptCheckpointError(
                f"{where}: chunk at {list(chunk.offsets)} of shape {list(chunk.sizes)} lies outside {list(size)}"
            )
    pairs, filled = 0, [chunk for chunk in chunks if math.prod(chunk.sizes)]
    axis = max(range(len(size)), key=lambda axis: len({chunk.offsets[axis] for chunk in filled}), default=0)
    active: list[_Chunk] = []
    for chunk in sorted(filled, key=lambda chunk: chunk.offsets[axis : axis + 1]):  # a sweep along that axis
        start = chunk.offsets[axis] if chunk.offsets else 0
        active = [other for other in active if not other.offsets or other.offsets[axis] + other.sizes[axis] > start]
        for other in active:
            pairs += 1
            if all(
                a < b + m and b < a + n
                for a, n, b, m in zip(chunk.offsets, chunk.sizes, other.offsets, other.sizes, strict=True)
            ):
                raise CorruptCheckpointError(
                    f"{where}: chunks at {list(other.offsets)} and {list(chunk.offsets)} overlap"
                )
        if pairs > MAX_PAIRS:
            raise LimitExceededError(f"{where}: more than {MAX_PAIRS:,} pairs of chunks to compare for overlap")
        active.append(chunk)
    covered = sum(math.prod(chunk.sizes) for chunk in chunks)
    if covered != math.prod(size):  # none overlap and none lies outside: fewer values are holes
        raise CorruptCheckpointError(
            f"{where}: its chunks hold {covered} of its {math.prod(size)} values: they leave holes"
        )


def _sharding_info(text: str | None, file: AnyPath) -> dict[str, Any]:
    """The saved offsets of each tensor of a DCP safetensors shard, by name ({} where it says none)."""
    try:
        document = json.loads(text or "{}")
    except ValueError as error:
        raise CorruptCheckpointError(f"{file}: {HF_SHARDING_KEY} is not JSON: {error}") from None
    offsets = {}
    for name, entry in document.items() if isinstance(document, dict) else [(HF_SHARDING_KEY, document)]:
        place = entry.get("saved_offsets") if isinstance(entry, dict) else None
        if not (isinstance(place, list) and all(type(item) is int for item in place)):
            raise CorruptCheckpointError(f"{file}: {HF_SHARDING_KEY} gives '{name}' offsets {show(entry, 100)}")
        offsets[name] = tuple(place)
    return offsets


def _optimizer_roles(infos: dict[str, TensorInfo], paths: dict[Any, Any]) -> dict[str, TensorRole]:
    """Optimizer state (``optim.state.<parameter>.<slot>``, by its flattening path; Megatron-Core's one-part
    ``optimizer.state.<slot>.<parameter>``) attached to its parameter: the one listed tensor, not itself optimizer
    state, named ``<parameter>`` or ``<prefix>.<parameter>``."""
    states: dict[str, tuple[str, str]] = {}
    for name in infos:
        path = paths.get(name)
        slot, _, parameter = name.removeprefix(MEGATRON_STATE).partition(".")
        if isinstance(path, tuple) and len(path) >= 4 and path[-3] == "state" and path[-1] in TORCH_SLOTS:
            states[name] = (str(path[-2]), str(path[-1]))
        elif name.startswith(MEGATRON_STATE) and slot in MEGATRON_SLOTS and parameter:
            states[name] = (parameter, slot)
    owners: dict[str, list[str]] = {}
    for name in infos:
        if name not in states:
            owners.setdefault(name, []).append(name)
            for position, character in enumerate(name):
                if character == ".":
                    owners.setdefault(name[position + 1 :], []).append(name)
    roles = {}
    for name, (parameter, slot) in states.items():
        found = owners.get(parameter, [])
        roles[name] = TensorRole("optimizer", role=slot, owner=found[0] if len(found) == 1 else None)
    return roles
