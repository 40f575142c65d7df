"""TensorFlow tensor bundles: the checkpoints of ``tf.train.Saver`` and ``tf.train.Checkpoint``.

Files (``core/util/tensor_bundle/naming.cc``): ``PREFIX.index``, a sorted table
(``weightscope.containers.table``) from tensor name to ``BundleEntryProto``, and
``PREFIX.data-SSSSS-of-NNNNN``, raw tensor bytes, shard numbers zero-padded to five
digits. A directory's ``checkpoint`` file, a text ``CheckpointState``, names the newest
prefix (relative to the directory) in ``model_checkpoint_path``. A prefix ending in a
separator (``DIR/``: TF1's savers given a directory-like prefix) makes ``DIR/.index`` and
``DIR/.data-…``, recorded as ``.``; weightscope's prefix is then ``DIR`` and its files are
found inside it (``bundle_file``) when ``DIR.index`` is not there.

Index entries (``core/protobuf/tensor_bundle.proto``):

- key ``""`` (always first): ``BundleHeaderProto`` — ``num_shards`` (1), ``endianness``
  (2: 0 little, 1 big; applies to tensor bytes only), ``version`` (3: producer 1,
  min_consumer 0 as TF writes; a reader of consumer version 1 refuses
  ``min_consumer > 1`` and listed ``bad_consumers``).
- any other key: ``BundleEntryProto`` — ``dtype`` (1, ``types.proto`` numbers, see
  ``weightscope.dtypes``), ``shape`` (2), ``shard_id`` (3), ``offset`` (4), ``size``
  (5), ``crc32c`` (6, fixed32, masked as in LevelDB), ``slices`` (7, partitioned only).
- keys starting with byte 0 hold the slices of partitioned variables (OrderedCode:
  ``00``, the name with ``00``→``00 FF`` and ``FF``→``FF 00``, ``00 01``, the rank as an
  increasing number, then each dimension's start and length as signed increasing
  numbers, length −1 meaning the whole dimension). The full name's entry has the dtype,
  the full shape and the slice list; its data fields are unused.

Tensor bytes (``tensor_bundle.cc``): numeric tensors are raw row-major bytes at
``offset``, ``size`` = elements × item size, ``crc32c`` = mask(crc32c(bytes)).
Strings are ``[varint64 len]*n``, a uint32 LE masked checksum of the lengths (each as
4 LE bytes, 8 if over 0xFFFFFFFF), then the bytes; the entry checksum extends that
checksum's crc with the 4 stored bytes and every string. ``variant`` needs TF's C++
decoders and is listed but not read; ``resource`` is never stored.

A reader must refuse: a missing or unparsable header, ``num_shards`` < 1, an unknown
dtype, an unknown rank or negative dimension, a numeric ``size`` that is not elements ×
item size, ``shard_id`` ≥ ``num_shards``, ``offset + size`` past the shard's end, two
entries whose bytes overlap (TF writes every tensor's bytes once, one after another), and
a checksum mismatch (unless verification is turned off).

Opening reads the whole index at once (one read, not mapped: ``sources.open_source(whole=True)``): ``read_table``
parses its blocks, and ``entry_columns`` (``weightscope.formats._bundle_index``) decodes the entries laid out as
TensorFlow writes them, makes ``_describe``'s checks on them and sets them into the listing's columns, a chunk of
entries at a time, in compiled code (``weightscope._tables``) where the package was built with it; else numpy
decodes (``decode_entries``) and checks (``_check_entries``) them. Any other entry, or one failing a check, goes
through protobuf and ``_describe`` one by one, which raise the errors naming the tensor.
The infos are kept as the columns so made (``checkpoint.InfoColumns``; sizes and offsets as int64): a listing makes
each ``TensorInfo`` as it goes and frees it, none is kept for the garbage collector.
Measured (2-core Xeon, in one process with TensorFlow, interleaved, ``bench/bench_tensorflow.py``: a
``gc.collect()`` before each call leaves the caches cold): open and list 2,000 variables 1.7-1.9 ms (TensorFlow
1.8-1.9 ms), 100,000 variables 35-43 ms (TensorFlow 118-140 ms). See the README's notes for where the rest goes.
"""

from __future__ import annotations

import bisect
import functools
import math
import os
import struct
from typing import TYPE_CHECKING, Any

import numpy as np

from weightscope._crc32c import crc32c
from weightscope.checkpoint import Checkpoint, Extent, Index, TensorInfo
from weightscope.containers.table import (
    Table,
    mask_crc,
    read_table,
    read_varint,
)
from weightscope.dtypes import (
    ELEMENT_TYPES,
    check_rank,
    from_tensorflow,
    little_endian_dtype,
)
from weightscope.errors import (
    CheckpointNotFoundError,
    ChecksumMismatchError,
    CorruptCheckpointError,
    TruncatedFileError,
    UnsupportedFormatError,
)
from weightscope.formats._bundle_entries import _column, _header_by_protobuf, _key_bytes, _numpy_dtype, _parse, _shapes
from weightscope.formats._bundle_index import (
    Entries,
    check_rows,
    decode_entries,
    decode_header,
    entry_columns,
    first_overlap,
)
from weightscope.formats.tf_state import OBJECT_GRAPH_KEY, resolve_prefix
from weightscope.infos import InfoColumns, collection_paused
from weightscope.sources import as_path, open_source

if TYPE_CHECKING:
    from weightscope.layers import TensorRole
    from weightscope.remote import RemotePath
    from weightscope.sources import AnySource

CONSUMER_VERSION = 1
MAX_SHARDS = 1 << 20
_STRING_CODE = 7  # DT_STRING
_BIG_ENDIAN = 1


def data_file_name(prefix: str, shard: int, num_shards: int) -> str:
    return f"{prefix}.data-{shard:05d}-of-{num_shards:05d}"


# A listing's columns: lists, and int64 arrays for the sizes and offsets (``InfoColumns``).
_Columns = list[list[Any] | np.ndarray]


def _row(columns: _Columns, i: int) -> TensorInfo:
    return TensorInfo._make(column[i] if isinstance(column, list) else int(column[i]) for column in columns)


def _set_row(columns: _Columns, i: int, info: TensorInfo) -> None:
    for column, value in zip(columns, info, strict=True):
        column[i] = value


_ELEMENTS_BY_NAME = {element.name: element for element in ELEMENT_TYPES}
# DataType code (below 256; _REF codes included) -> index into ELEMENT_TYPES, -1 if unknown. (By name: the
# dataclass's generated __eq__, called ~900 times by ELEMENT_TYPES.index, cost every command ~0.4 ms.)
_INDEX_BY_NAME = {element.name: index for index, element in enumerate(ELEMENT_TYPES)}
_ELEMENT_INDEX = np.array(
    [-1 if (element := from_tensorflow(code)) is None else _INDEX_BY_NAME[element.name] for code in range(256)]
)
# Per element type: its dtype and item size (0: not checked, strings and the like), made
# when a checkpoint first holds the type (ml_dtypes is imported only for its types).
_DTYPES = np.full(len(ELEMENT_TYPES), None, object)
_ITEMSIZES = np.full(len(ELEMENT_TYPES), -1, np.int64)  # -1: not made yet
_TYPE_NAMES = np.array([element.name for element in ELEMENT_TYPES], object)
# Entries decoded together: numpy's temporaries then stay under 128 KiB, which glibc's
# malloc serves from its heap; larger ones are mapped and unmapped every time (measured:
# 5 ns an element against 20-30, most of it page faults).
_CHUNK = 8192
# A slice of a partitioned variable: its key, and where it goes in the full tensor.
_Part = tuple[bytes, tuple[slice, ...]]


def _make_dtype(index: int) -> None:
    """The dtype of element type ``index``, and its item size (0: not checked, strings and the like), its size
    first (the compiled checks read the sizes)."""
    dtype = _numpy_dtype(ELEMENT_TYPES[index])
    _ITEMSIZES[index] = 0 if dtype.kind == "O" else dtype.itemsize
    _DTYPES[index] = dtype


class TensorFlowCheckpoint(Checkpoint):
    """A TensorFlow tensor bundle, opened from any of the paths that name it."""

    format = "tensorflow"
    checksums = "CRC32C"
    threadsafe_reads = True  # the index is read at open; a read looks up its shard, reads and checks its bytes

    def __init__(
        self, path: str | os.PathLike[str] | RemotePath, *, verify: bool = True, readable_names: bool = True
    ) -> None:
        """Open the checkpoint ``path`` names; ``readable_names=False`` keeps TF2's stored keys as names."""
        prefix, index = resolve_prefix(as_path(path))
        super().__init__(prefix)
        self.prefix = prefix
        self.verify_checksums = verify
        self._index = open_source(index, whole=True)  # read whole, once
        self._slice_entries: dict[bytes, tuple[TensorInfo, int]] = {}  # slice key -> (info, crc32c)
        self._partitions: dict[str, list[_Part]] = {}
        # Each tensor's stored crc32c, by name: the names in index order (sorted as bytes).
        self._checksum_columns: tuple[list[str], np.ndarray] = ([], np.zeros(0, np.int64))
        self._big_endian = False
        self._shards: list[AnySource] = []
        self._shard_of_file: dict[str, AnySource] = {}
        self._readable_names = readable_names
        try:
            self._install(self._load_index())
        finally:
            self._index.close()

    def _read_object_graph(self, table: Table, index: Index) -> dict[str, str]:
        """TF2 checkpoints: their names from the object graph (key -> name, also ``index``'s aliases), roles for
        later."""
        position = bisect.bisect_left(table.keys, _key_bytes(OBJECT_GRAPH_KEY), key=_key_bytes)  # keys sort as bytes
        if position == len(table.keys) or table.keys[position] != OBJECT_GRAPH_KEY:
            return {}
        entry = _parse("BundleEntryProto", table.value(position), f"{self._index.path}: entry {OBJECT_GRAPH_KEY}")
        info, checksum = self._describe(OBJECT_GRAPH_KEY, entry, len(self._shards))
        tensor = self._read_entry(info, checksum)
        if tensor.shape != () or not isinstance(tensor[()], bytes):
            raise CorruptCheckpointError(f"{self.prefix}: {OBJECT_GRAPH_KEY} is not a scalar string")
        from weightscope.formats.tf_object_graph import ObjectGraph  # TF2's names: TF1's checkpoints have none

        graph = ObjectGraph(tensor[()], set(table.keys))
        names = graph.names
        index.aliases = names  # key -> name; a name that is its own key is harmless here

        def roles() -> dict[str, TensorRole]:
            from weightscope.layers import TensorRole

            found = {names[key]: role for key, role in graph.roles().items()}
            return found | {OBJECT_GRAPH_KEY: TensorRole("bookkeeping")}

        index.lazy_roles = roles
        return names

    def _load_index(self) -> Index:
        index_path = self._index.path
        table = read_table(self._index)
        if not table.keys or table.keys[0] != "":
            raise CorruptCheckpointError(f"{index_path}: no bundle header (the first key must be empty)")
        header = decode_header(table.value(0)) or _header_by_protobuf(table.value(0), f"{index_path}: bundle header")
        if header.min_consumer > CONSUMER_VERSION or CONSUMER_VERSION in header.bad_consumers:
            raise UnsupportedFormatError(
                f"{index_path}: written for readers of version {header.min_consumer} "
                f"or later; weightscope reads version {CONSUMER_VERSION}"
            )
        if not 1 <= header.num_shards <= MAX_SHARDS:
            raise CorruptCheckpointError(f"{index_path}: header claims {header.num_shards} shards")
        self._big_endian = header.endianness == _BIG_ENDIAN
        shard_paths = []
        # Beside the index where it was found (``bundle_file``: inside a DIR/ prefix), not looked for again a shard.
        folder, stem = index_path.parent, index_path.name.removesuffix(".index")
        for shard in range(header.num_shards):  # a missing one stops the loop: a header may claim 2**20
            name = folder / data_file_name(stem, shard, header.num_shards)
            if not name.is_file():
                raise CheckpointNotFoundError(f"{name}: data shard missing (the index {index_path} names it)")
            shard_paths.append(name)
        self._shards = [open_source(name) for name in shard_paths]
        self._shard_of_file = {str(shard.path): shard for shard in self._shards}
        index = Index()
        with collection_paused():
            index.columns = self._load_entries(
                table, self._read_object_graph(table, index) if self._readable_names else {}
            )
        return index

    def _load_entries(self, table: Table, readable: dict[str, str]) -> InfoColumns:
        """Every entry but the header, as columns of infos: decoded and checked a chunk at a time, odd ones one by
        one. ``readable`` renames stored keys (TF2's object-graph keys) for display.
        """
        names = table.keys[1:]
        display = list(map(readable.get, names, names)) if readable else names
        # Each entry's crc32c, shard, offset, size where stored (its extent, checked for overlaps at the end: 0 where
        # odd, until _describe says) and size: the sizes and offsets stay int64 until a listing makes each info.
        numbers = np.zeros((5, len(names)), np.int64)
        checksums, extents, sizes = numbers[0], numbers[1:4], numbers[4]
        files = [str(source.path) for source in self._shards]
        shard_numbers = {file: number for number, file in enumerate(files)}  # not list.index per entry
        check = functools.partial(self._checked_rows, shard_sizes=np.array([source.size for source in self._shards]))
        filled: list[list[Any]] = [[None] * len(names) for _ in range(4)]  # dtype, shape, type, file: by chunks
        odd: list[int] = []  # entries for protobuf and _describe
        for start in range(0, len(names), _CHUNK):
            stop = min(start + _CHUNK, len(names))
            bounds = (table.starts[start + 1 : stop + 1], table.ends[start + 1 : stop + 1])
            chunk = entry_columns(table.data, bounds, check, (_DTYPES, _TYPE_NAMES), files, numbers, start, filled)
            if chunk is None:  # (no compiler)
                chunk = self._numpy_columns(decode_entries(table.data, *bounds), files, numbers, filled, start)
            odd += chunk
        dtypes, shapes, type_names, paths = filled
        columns: _Columns = [display, dtypes, shapes, sizes, type_names, paths, extents[1], names]  # TensorInfo's
        partitioned: list[tuple[int, TensorInfo, list[object]]] = []
        for i in odd:
            name = names[i]
            key = name.encode("utf-8", "surrogateescape")
            entry = _parse("BundleEntryProto", table.value(i + 1), f"{self._index.path}: entry {key!r}")
            info, checksums[i] = self._describe(name, entry, len(self._shards))
            _set_row(columns, i, info._replace(name=display[i]))
            if entry.slices and not key.startswith(b"\x00"):
                partitioned.append((i, _row(columns, i), list(entry.slices)))
            else:  # (a partitioned variable's own entry holds no bytes: its slices do)
                extents[:, i] = shard_numbers[info.file], info.offset, info.nbytes
        self._check_overlaps(extents, names)
        # Keys of slices start with byte 0, so they sort first.
        num_slices = 0
        while num_slices < len(names) and names[num_slices].startswith("\x00"):
            key = names[num_slices].encode("utf-8", "surrogateescape")
            self._slice_entries[key] = (_row(columns, num_slices), int(checksums[num_slices]))
            num_slices += 1
        for i, info, slices in partitioned:
            _set_row(columns, i, self._add_partitioned(info, slices))
        if num_slices:
            columns = [column[num_slices:] for column in columns]
        if readable:  # in order of the names shown: code point order is UTF-8 byte order, TF's
            order = sorted(range(len(columns[0])), key=columns[0].__getitem__)
            columns = [
                list(map(column.__getitem__, order)) if isinstance(column, list) else column[order]
                for column in columns
            ]
        self._checksum_columns = (names[num_slices:], checksums[num_slices:])
        return InfoColumns(columns, unique=not readable)  # TF's keys are unique; names shown need not be

    def _numpy_columns(
        self, entries: Entries, files: list[str], numbers: np.ndarray, columns: list[list[Any]], start: int
    ) -> list[int]:
        """``entry_columns`` for entries numpy decoded: set into ``columns`` and ``numbers`` at ``start``; the odd
        ones' indices."""
        element, shard, plain = self._check_entries(entries)
        stop = start + len(element)
        numbers[:, start:stop] = entries.crc32c, shard, entries.offset, np.where(plain, entries.size, 0), entries.size
        made: tuple[list[Any], ...] = (
            _column(_DTYPES, element),
            _shapes(np.where(plain, entries.rank, 0), entries.dims),  # (a row not plain is made again by _describe)
            _column(_TYPE_NAMES, element),
            _column(np.array(files, object), shard),
        )
        for column, values in zip(columns, made, strict=True):
            column[start:stop] = values
        return (np.flatnonzero(~plain) + start).tolist()

    def _check_overlaps(self, extents: np.ndarray, names: list[str]) -> None:
        """Refuse two entries whose bytes overlap: TensorFlow writes each tensor's bytes once, apart."""
        shard, offset, size = extents
        clash = first_overlap(extents, np.lexsort((offset, shard)))
        if clash is not None:
            first, second = clash
            raise CorruptCheckpointError(
                f"{self._index.path}: tensors '{names[first]}' (bytes {offset[first]}..{offset[first] + size[first]}) "
                f"and '{names[second]}' (bytes {offset[second]}..{offset[second] + size[second]}) overlap "
                f"in {self._shards[int(shard[first])].path}"
            )

    def _checked_rows(self, rows: bytearray, shard_sizes: np.ndarray) -> bytearray:
        """``check_rows``' rows of the compiled decoder's ``rows``, the element types met for the first time made
        first (their entries fail until then: made, they are checked again)."""
        checked, unknown = check_rows(rows, _ELEMENT_INDEX, _ITEMSIZES, shard_sizes)
        while unknown:
            for index in unknown:
                _make_dtype(index)
            checked, unknown = check_rows(rows, _ELEMENT_INDEX, _ITEMSIZES, shard_sizes)
        return checked

    def _check_entries(self, entries: Entries) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each entry's element type (index into ELEMENT_TYPES) and shard, and which pass every check.

        The checks are ``_describe``'s. An entry failing one is passed over here (it gets
        element 0 and shard 0), and ``_describe`` raises its error, naming it.
        """
        shard_sizes = np.array([source.size for source in self._shards])
        plain = entries.decoded.copy()
        known = entries.dtype < len(_ELEMENT_INDEX)
        element = _ELEMENT_INDEX[np.where(known, entries.dtype, 0)]
        plain &= known & (element >= 0) & (entries.shard < len(self._shards))
        element = np.where(plain, element, 0)
        shard = np.where(plain, entries.shard, 0)
        plain &= entries.offset + entries.size <= shard_sizes[shard]
        # Element counts are exact in int64 where the float64 product stays below 2**62.
        count = np.ones(len(plain), np.int64)
        estimate = np.ones(len(plain))
        for column in entries.dims.T:
            count *= column
            estimate *= column
        plain &= estimate < 2.0**62
        for index in np.flatnonzero(np.bincount(element[plain], minlength=len(ELEMENT_TYPES))).tolist():
            if _DTYPES[index] is None:  # the first tensor of its type
                _make_dtype(index)
        itemsize = _ITEMSIZES[element]
        divisor = np.maximum(itemsize, 1)
        plain &= (itemsize == 0) | ((entries.size % divisor == 0) & (entries.size // divisor == count))
        return element, shard, plain

    def _describe(self, name: str, entry: object, num_shards: int) -> tuple[TensorInfo, int]:
        where = f"{self._index.path}: tensor '{name}'"
        element = from_tensorflow(entry.dtype)  # type: ignore[attr-defined]
        if element is None:
            raise UnsupportedFormatError(f"{where} has unknown dtype code {entry.dtype}")  # type: ignore[attr-defined]
        shape_proto = entry.shape  # type: ignore[attr-defined]
        if shape_proto.unknown_rank:
            raise CorruptCheckpointError(f"{where} has an unknown rank")
        shape = tuple(dim.size for dim in shape_proto.dim)
        if any(size < 0 for size in shape):
            raise CorruptCheckpointError(f"{where} has a negative dimension in shape {list(shape)}")
        check_rank(shape, where)
        shard, offset, size = entry.shard_id, entry.offset, entry.size  # type: ignore[attr-defined]
        if not 0 <= shard < num_shards:
            raise CorruptCheckpointError(f"{where} is in shard {shard}, but there are {num_shards}")
        if offset < 0 or size < 0 or offset + size > self._shards[shard].size:
            raise TruncatedFileError(
                f"{where}: bytes {offset}..{offset + size} lie past the end of "
                f"{self._shards[shard].path} ({self._shards[shard].size} bytes)"
            )
        count = math.prod(shape)
        dtype = element.dtype
        numeric = dtype is not None and dtype.kind != "O"
        if numeric and not entry.slices and count * dtype.itemsize != size:  # type: ignore[attr-defined, union-attr]
            raise CorruptCheckpointError(
                f"{where}: {size} bytes stored for {count} {element.name} elements "
                f"of shape {list(shape)}, expected {count * dtype.itemsize}"  # type: ignore[union-attr]
            )
        path = str(self._shards[shard].path)
        info = TensorInfo(name, _numpy_dtype(element), shape, size, element.name, path, offset, name)
        return info, entry.crc32c  # type: ignore[attr-defined]

    def _add_partitioned(self, info: TensorInfo, slices: list[object]) -> TensorInfo:
        """Register a partitioned variable whose slices are stored under OrderedCode keys."""
        from weightscope.formats._ordered_code import _slice_key  # only partitioned variables have slices

        name = info.key
        parts: list[_Part] = []
        total = 0
        covered = 0  # elements, which must be the whole tensor's
        for slice_proto in slices:
            extents = []
            index = []
            for dim, extent in zip(info.shape, slice_proto.extent, strict=False):  # type: ignore[attr-defined]
                length = extent.length if extent.HasField("length") else -1
                extents.append((extent.start, length))
                stop = dim if length == -1 else extent.start + length
                if extent.start < 0 or not extent.start <= stop <= dim:
                    raise CorruptCheckpointError(
                        f"{self._index.path}: slice of '{name}' lies outside shape {list(info.shape)}"
                    )
                index.append(slice(extent.start, stop))
            key = _slice_key(name.encode("utf-8", "surrogateescape"), extents)
            if key not in self._slice_entries:
                raise CorruptCheckpointError(f"{self._index.path}: slice {extents} of '{name}' has no entry")
            slice_info, _ = self._slice_entries[key]
            if slice_info.type_name != info.type_name:
                raise CorruptCheckpointError(
                    f"{self._index.path}: slice {extents} of '{name}' is stored as {slice_info.type_name}, "
                    f"the variable is {info.type_name}"
                )
            expected = tuple(s.stop - s.start for s in index)
            if slice_info.shape != expected:
                raise CorruptCheckpointError(
                    f"{self._index.path}: slice {extents} of '{name}' is stored with shape "
                    f"{list(slice_info.shape)}, expected {list(expected)}"
                )
            parts.append((key, tuple(index)))
            total += slice_info.nbytes
            covered += math.prod(expected)
        if covered != math.prod(info.shape):
            raise CorruptCheckpointError(
                f"{self._index.path}: the slices of '{name}' hold {covered} elements of its "
                f"{math.prod(info.shape)} (shape {list(info.shape)})"
            )
        self._partitions[name] = parts
        return info._replace(nbytes=total)

    # -- reading -----------------------------------------------------------------------
    def _extent(self, info: TensorInfo) -> Extent | None:
        if info.key in self._partitions:
            return None  # stored in parts, each its own entry
        return self._entry_extent(info, self._checksum(info.key))

    def _entry_extent(self, info: TensorInfo, checksum: int) -> Extent:
        """Where entry ``info``'s bytes are: plain numbers in the bundle's byte order, or a type to decode
        (strings: varint lengths, their checksum, the bytes; TensorFlow's own types: its C++ decoders)."""
        element = _ELEMENTS_BY_NAME[info.type_name]
        dtype = little_endian_dtype(info.dtype)
        if element.dtype is None or dtype.kind == "O":
            return Extent(
                info.file, info.offset, info.nbytes, np.dtype(np.uint8), None, element.name, "crc32c", checksum
            )
        if self._big_endian and dtype.itemsize > 1:
            dtype = dtype.newbyteorder(">")  # ml_dtypes' types too: the base swaps them as unsigned integers
        return Extent(info.file, info.offset, info.nbytes, dtype, None, "", "crc32c", checksum)

    def _read(self, info: TensorInfo) -> np.ndarray:
        parts = self._partitions.get(info.key)
        if parts is not None:
            # The slices first: each is checked against its bytes, so the whole (which they
            # cover, see _add_partitioned) is allocated only once they are all there.
            pieces = [(index, self._read_entry(*self._slice_entries[key])) for key, index in parts]
            full = np.empty(info.shape, dtype=info.dtype)
            for index, piece in pieces:
                full[index] = piece
            return full
        return self._read_entry(info, self._checksum(info.key))

    def _checksum(self, name: str) -> int:
        names, checksums = self._checksum_columns
        i = bisect.bisect_left(names, _key_bytes(name), key=_key_bytes)
        if i == len(names) or names[i] != name:
            raise self._not_found(name)
        return int(checksums[i])

    def _read_entry(self, info: TensorInfo, checksum: int) -> np.ndarray:
        extent = self._entry_extent(info, checksum)
        if not extent.compression:
            return self._read_extent(info, extent)
        if extent.compression != "string":
            raise UnsupportedFormatError(
                f"{self.prefix}: tensor '{info.name}' is a {extent.compression} tensor, "
                "which only TensorFlow's own C++ decoders can read"
            )
        data = self._shard_of_file[info.file].read(info.offset, info.nbytes, f"tensor '{info.name}'")
        return self._read_strings(info, checksum, data)

    def _read_strings(self, info: TensorInfo, checksum: int, data: memoryview) -> np.ndarray:
        what = f"{self.prefix}: string tensor '{info.name}'"
        count = info.size
        if count == 0:
            return np.empty(info.shape, dtype=object)
        if count + 4 > len(data):  # a length byte per string at least, and the lengths' checksum
            raise CorruptCheckpointError(f"{what}: {count} strings cannot fit in {len(data)} bytes")
        lengths = []
        pos = 0
        crc = 0
        for _ in range(count):
            length, pos = read_varint(data, pos, what)
            if length > len(data):  # (and so below 2**64, which a 10-byte varint may exceed)
                raise CorruptCheckpointError(f"{what}: a string of {length} bytes in an entry of {len(data)}")
            lengths.append(length)
            crc = crc32c(struct.pack("<I" if length <= 0xFFFFFFFF else "<Q", length), crc)
        if pos + 4 + sum(lengths) != len(data):
            raise CorruptCheckpointError(
                f"{what}: lengths add up to {pos + 4 + sum(lengths)} bytes, the entry holds {len(data)}"
            )
        stored_lengths_crc = data[pos : pos + 4]
        if self.verify_checksums:
            (stored,) = struct.unpack("<I", stored_lengths_crc)
            self._check(info, mask_crc(crc), stored, "length checksum")
        crc = crc32c(stored_lengths_crc, crc)
        pos += 4
        strings = np.empty(count, dtype=object)
        for i, length in enumerate(lengths):
            strings[i] = bytes(data[pos : pos + length])
            pos += length
        if self.verify_checksums:
            crc = crc32c(data[len(data) - sum(lengths) :], crc)
            self._check(info, mask_crc(crc), checksum)
        return strings.reshape(info.shape)

    def _check(self, info: TensorInfo, actual: int, stored: int, what: str = "checksum") -> None:
        if actual != stored:
            raise ChecksumMismatchError(
                f"{info.file}: tensor '{info.name}' is damaged: stored {what} {stored:#010x}, "
                f"computed {actual:#010x} over bytes {info.offset}..{info.offset + info.nbytes}"
            )

    def _source_of(self, file: str) -> AnySource | None:
        return self._shard_of_file.get(file)

    def _close(self) -> None:
        for shard in self._shards:
            shard.close()
