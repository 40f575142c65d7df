"""GGUF (llama.cpp, ggml): typed metadata, tensor infos, then aligned tensor data.

Bytes (``ggml/src/gguf.cpp`` and ``gguf-py``, the reference implementations), all
little-endian:

- the header: 4 bytes of magic ``GGUF``; uint32 version (2 or 3; version 1 had 32-bit
  counts); uint64 tensor count; uint64 metadata key/value count.
- the metadata, one key/value after another: the key as a string, a uint32 value type,
  then the value. Types: 0 uint8, 1 int8, 2 uint16, 3 int16, 4 uint32, 5 int32,
  6 float32, 7 bool (one byte), 8 string, 9 array, 10 uint64, 11 int64, 12 float64. A
  string is a uint64 byte length then the bytes (UTF-8 by the spec; llama.cpp does not
  check, so neither do we: they are shown with replacement characters). An array is a
  uint32 element type, a uint64 count, then the elements, packed.
- the tensor infos, one per tensor: the name as a string; uint32 ``n_dims`` (0..4: ggml
  reads 0 as a scalar, and gguf-py writes a 0-d array so);
  ``n_dims`` uint64 dimensions in GGML order, innermost first (the numpy shape is them
  reversed); uint32 GGML type (the ``gguf`` column of ``weightscope.dtypes``); uint64
  offset, relative to the data section.
- padding to a multiple of ``general.alignment`` (a uint32 power of two; default 32),
  then the data section: each tensor's bytes at its offset, itself a multiple of the
  alignment.

F32, F16, BF16, F64, I8, I16, I32 and I64 tensors are plain arrays (read-only views of
the file). The other types are quantised in blocks (``weightscope.containers.quants``:
``QUANT_SIZES`` gives each one's block size in elements and bytes, gguf-py's
``GGML_QUANT_SIZES``); the innermost dimension is a whole number of blocks. Their info
gives float32 (what reading gives) and their stored size; reading one returns it
dequantised to float32, equal bit for bit to gguf-py's ``gguf.quants.dequantize``: Q4_0,
Q4_1, Q5_0, Q5_1, Q8_0; Q2_K, Q3_K, Q4_K, Q5_K, Q6_K; TQ1_0, TQ2_0; IQ1_S, IQ1_M, IQ2_XXS,
IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ4_NL, IQ4_XS; MXFP4, NVFP4. The others (Q8_1, Q8_K,
Q1_0), which gguf-py does not dequantise either, raise ``UnsupportedFormatError`` naming
the type.

A reader must refuse: a wrong magic; a version other than 2 or 3 (a big-endian file
reads as a huge version); any structure past the end of the file; counts the remaining
bytes cannot hold (checked before anything is allocated) or over the caps below; an
unknown value type, or an array of arrays; a key or tensor name given twice; more than
4 dimensions; an unknown GGML type; an innermost dimension that is not a whole number of
blocks; a tensor larger than numpy can hold; a ``general.alignment`` that is not a
uint32 power of two; tensor offsets that are not aligned, lie past the end of the file
or make tensors overlap.

Caps: metadata arrays of at most 100,000,000 elements, strings (keys, names, values) of
at most 64 MiB (a whole ``tokenizer.json`` is stored as one string), keys and tensor
names of at most 65,535 bytes. There are no checksums: ``verify`` reads every tensor,
which checks only bounds.

Layers: a transformer block's tensors (``blk.<N>.*``) are one layer, ``blk.<N>``;
``token_embd`` is the token embedding, ``output`` the LM head (``weightscope.summary``).
"""

from __future__ import annotations

import json
import math
import struct
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from operator import attrgetter
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from weightscope.checkpoint import Extent, FileCheckpoint, Index, TensorInfo
from weightscope.containers import quants
from weightscope.containers.quants import QUANT_SIZES
from weightscope.conventions import gguf_block_parameter
from weightscope.dtypes import BY_GGUF, check_size, little_endian_dtype
from weightscope.errors import CorruptCheckpointError, TruncatedFileError, UnsupportedFormatError, UsageError
from weightscope.layers import TensorRole
from weightscope.limits import Budget, Limits
from weightscope.sources import FileSource
from weightscope.writing import HeaderPlan, MetadataEntry

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_ARRAY_LENGTH = 100_000_000
MAX_STRING_LENGTH = 64 << 20
MAX_NAME_LENGTH = 0xFFFF
SUMMARY_LENGTH = 16  # arrays longer than this are summarised in ``metadata``

HEADER = struct.Struct("<4sIQQ")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
STRING_TYPE, ARRAY_TYPE = 8, 9
# Metadata value types of fixed size: their name and little-endian numpy dtype.
SCALAR_TYPES: dict[int, tuple[str, np.dtype]] = {
    code: (name, np.dtype(numpy))
    for code, name, numpy in (
        (0, "uint8", "<u1"),
        (1, "int8", "<i1"),
        (2, "uint16", "<u2"),
        (3, "int16", "<i2"),
        (4, "uint32", "<u4"),
        (5, "int32", "<i4"),
        (6, "float32", "<f4"),
        (7, "bool", "?"),
        (10, "uint64", "<u8"),
        (11, "int64", "<i8"),
        (12, "float64", "<f8"),
    )
}
# The fewest bytes one tensor info takes: a name length, n_dims, no dimension (a scalar), type, offset.
_MIN_TENSOR_INFO = 8 + 4 + 4 + 8
_MIN_KEY_VALUE = 8 + 4 + 1  # a key length, a value type, a one-byte value
# Memory charged (``weightscope.limits.Budget``) per metadata entry and per tensor beyond
# their names' and values' own ``str`` objects: a dict slot; a TensorInfo with its shape,
# integers and the entry it was made from. A file of the smallest entries costs about
# 10 times its size, so the cap refuses only files made of little else.
_ENTRY_COST = 32
_TENSOR_COST = 320


def _block_role(name: str) -> TensorRole | None:
    found = gguf_block_parameter(name)
    return None if found is None else TensorRole("parameter", layer=found[0], role=found[1])


class GgufCheckpoint(FileCheckpoint):
    """A ``.gguf`` file: tensors in file order; plain types as read-only views, quantised ones dequantised."""

    format = "gguf"

    _position = 0  # where the index is read next

    # -- reading the index ---------------------------------------------------------
    def _take(self, length: int, what: str) -> memoryview:
        data = self._source.read(self._position, length, what)
        self._position += length
        return data

    def _uint(self, layout: struct.Struct, what: str) -> int:
        value: int = layout.unpack(self._take(layout.size, what))[0]
        return value

    def _string(self, what: str, limit: int = MAX_STRING_LENGTH) -> memoryview:
        length = self._uint(_U64, f"the length of {what}")
        if length > limit:
            raise CorruptCheckpointError(
                f"{self.path}: {what} at {self._position - 8} is {length} bytes long; the limit is {limit}"
            )
        return self._take(length, what)

    def _count(self, count: int, least: int, what: str, limit: int | None = None) -> None:
        """Refuse ``count`` items of at least ``least`` bytes each that the file cannot hold (or over ``limit``)."""
        if limit is not None and count > limit:
            raise CorruptCheckpointError(f"{self.path}: {what} declares {count} items; the limit is {limit}")
        remaining = self._source.size - self._position
        if count * least > remaining:
            raise TruncatedFileError(
                f"{self.path}: {what} declares {count} items, at least {count * least} bytes, "
                f"but only {remaining} bytes remain after offset {self._position}"
            )

    def _load(self) -> Index:
        magic, version, n_tensors, n_values = HEADER.unpack(self._take(HEADER.size, "the GGUF header"))
        if magic != MAGIC:
            raise CorruptCheckpointError(f"{self.path}: magic {bytes(magic)!r}, expected {MAGIC!r}")
        if version not in VERSIONS:
            raise UnsupportedFormatError(
                f"{self.path}: GGUF version {version}; weightscope reads versions 2 and 3 (little-endian)"
            )
        self._count(n_values, _MIN_KEY_VALUE, "the metadata count")
        budget = Budget(Limits.for_size(self._source.size), self.path)
        values: dict[str, str] = {}
        alignment = DEFAULT_ALIGNMENT
        for _ in range(n_values):
            at = self._position
            key = self._text(self._string("a metadata key", MAX_NAME_LENGTH))
            if key in values:
                raise CorruptCheckpointError(f"{self.path}: metadata key '{key}' at {at} is given twice")
            kind = self._uint(_U32, f"the type of metadata '{key}'")
            if key == "general.alignment":
                alignment = self._alignment(kind)
            values[key] = self._value(kind, f"metadata '{key}'")
            budget.spend(sys.getsizeof(key) + sys.getsizeof(values[key]) + _ENTRY_COST, "the metadata")
        self._count(n_tensors, _MIN_TENSOR_INFO, "the tensor count")
        entries: list[tuple[str, list[int], int, int]] = []
        for _ in range(n_tensors):
            entries.append(self._tensor_info())
            budget.spend(sys.getsizeof(entries[-1][0]) + _TENSOR_COST, "the tensor infos")
        start = -(-self._position // alignment) * alignment
        infos = [self._describe(name, dims, code, offset, start, alignment) for name, dims, code, offset in entries]
        self._check_overlap(infos)
        by_name = {info.name: info for info in infos}
        if len(by_name) != len(infos):
            counts = Counter(name for name, *_ in entries)  # one pass: a list per name was quadratic
            twice = next(name for name, count in counts.items() if count > 1)
            raise CorruptCheckpointError(f"{self.path}: tensor '{twice}' is given twice")
        roles = {name: role for name in by_name if (role := _block_role(name)) is not None}
        return Index(by_name, metadata=values, roles=roles)

    def _text(self, data: memoryview) -> str:
        return bytes(data).decode("utf-8", errors="replace")

    def _alignment(self, kind: int) -> int:
        at = self._position
        if kind != 4:
            raise CorruptCheckpointError(f"{self.path}: general.alignment at {at} is not a uint32 (type {kind})")
        (alignment,) = _U32.unpack(self._source.read(at, 4, "general.alignment"))
        if alignment == 0 or alignment & (alignment - 1):
            raise CorruptCheckpointError(f"{self.path}: general.alignment {alignment} is not a power of two")
        return int(alignment)

    def _value(self, kind: int, what: str) -> str:
        """The value of type ``kind`` at the current position, as text."""
        if kind == STRING_TYPE:
            return self._text(self._string(what))
        if kind == ARRAY_TYPE:
            return self._array(what)
        if kind not in SCALAR_TYPES:
            raise CorruptCheckpointError(f"{self.path}: {what} has unknown value type {kind}")
        dtype = SCALAR_TYPES[kind][1]
        return str(np.frombuffer(self._take(dtype.itemsize, what), dtype)[0].item())

    def _array(self, what: str) -> str:
        kind = self._uint(_U32, f"the element type of {what}")
        count = self._uint(_U64, f"the length of {what}")
        if kind == ARRAY_TYPE:
            raise UnsupportedFormatError(f"{self.path}: {what} is an array of arrays")
        if kind == STRING_TYPE:
            self._count(count, 8, what, MAX_ARRAY_LENGTH)
            # Each element is checked, but only a short array's are kept: a million empty
            # strings (8 MB of lengths) would otherwise become a million views and texts.
            strings = [self._string(f"element {index} of {what}") for index in range(min(count, SUMMARY_LENGTH + 1))]
            if count > SUMMARY_LENGTH:
                for index in range(len(strings), count):
                    self._string(f"element {index} of {what}")
                return f"[{count} strings]"
            return "[" + ", ".join(repr(self._text(text)) for text in strings) + "]"
        if kind not in SCALAR_TYPES:
            raise CorruptCheckpointError(f"{self.path}: {what} has unknown element type {kind}")
        name, dtype = SCALAR_TYPES[kind]
        self._count(count, dtype.itemsize, what, MAX_ARRAY_LENGTH)
        if count > SUMMARY_LENGTH:
            self._position += count * dtype.itemsize  # within the file: _count checked
            return f"[{count} {name}]"
        items = np.frombuffer(self._take(count * dtype.itemsize, what), dtype)
        return "[" + ", ".join(str(item) for item in items.tolist()) + "]"

    def _tensor_info(self) -> tuple[str, list[int], int, int]:
        at = self._position
        name = self._text(self._string(f"the name of the tensor info at {at}", MAX_NAME_LENGTH))
        n_dims = self._uint(_U32, f"the dimension count of tensor '{name}'")
        if n_dims > MAX_DIMS:
            raise CorruptCheckpointError(
                f"{self.path}: tensor '{name}' at {at} has {n_dims} dimensions; GGML allows 0 to {MAX_DIMS}"
            )
        dims = list(struct.unpack(f"<{n_dims}Q", self._take(8 * n_dims, f"the dimensions of tensor '{name}'")))
        code = self._uint(_U32, f"the type of tensor '{name}'")
        offset = self._uint(_U64, f"the offset of tensor '{name}'")
        return name, dims, code, offset

    def _describe(self, name: str, dims: list[int], code: int, offset: int, start: int, alignment: int) -> TensorInfo:
        """The tensor ``name``, with the data section at file offset ``start``."""
        where = f"{self.path}: tensor '{name}'"
        element = BY_GGUF.get(code)
        if element is None:
            raise UnsupportedFormatError(f"{where} has unknown GGML type {code}")
        shape = tuple(reversed(dims))
        count = math.prod(dims)
        if element.dtype is not None:
            dtype, nbytes = element.dtype, count * element.dtype.itemsize
        else:
            # Read dequantised: its info says float32 (what reading gives), its type_name the stored type.
            dtype, nbytes = np.dtype(np.float32), quants.stored_nbytes(element.name, shape, where)
        # An empty tensor's other dimensions count too: numpy cannot make (2^63, 0) or (2^40, 0, 2^40).
        check_size(shape, dtype.itemsize, where, nbytes)
        if offset % alignment:
            raise CorruptCheckpointError(f"{where} has offset {offset}, not a multiple of the alignment {alignment}")
        if start + offset + nbytes > self._source.size:
            raise TruncatedFileError(
                f"{where}: bytes {start + offset}..{start + offset + nbytes} lie past the end of the file "
                f"({self._source.size} bytes)"
            )
        return TensorInfo(name, dtype, shape, nbytes, element.name, str(self.path), start + offset, name)

    def _check_overlap(self, infos: list[TensorInfo]) -> None:
        previous: TensorInfo | None = None
        for info in sorted(infos, key=attrgetter("offset", "nbytes")):
            if previous is not None and info.offset < previous.offset + previous.nbytes:
                raise CorruptCheckpointError(
                    f"{self.path}: tensor '{info.name}' (bytes {info.offset}..{info.offset + info.nbytes}) "
                    f"overlaps tensor '{previous.name}' (bytes {previous.offset}..{previous.offset + previous.nbytes})"
                )
            if info.nbytes:
                previous = info

    # -- reading tensors -------------------------------------------------------------
    def _extent(self, info: TensorInfo) -> Extent:
        if info.type_name in QUANT_SIZES:  # quantised blocks are no plain elements
            return Extent(info.file, info.offset, info.nbytes, np.dtype(np.uint8), compression=info.type_name)
        return Extent(info.file, info.offset, info.nbytes, little_endian_dtype(info.dtype))

    def _read(self, info: TensorInfo) -> np.ndarray:
        if info.type_name not in QUANT_SIZES:
            return super()._read(info)
        data = self._source.read(info.offset, info.nbytes, f"tensor '{info.name}'")
        return quants.dequantize(data, info.type_name, info.shape, f"{self.path}: tensor '{info.name}'")


# -- metadata edits (``weightscope meta``; weightscope.metadata_edit writes them) ----------------------------------
GGUF_TYPES = {name: code for code, (name, _) in SCALAR_TYPES.items()} | {"string": STRING_TYPE}
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class _RawEntry(NamedTuple):
    key: str
    key_bytes: bytes  # as stored (re-written as they were, whatever their encoding)
    kind: int
    value: bytes  # the bytes after the type code: a scalar, a string's length and bytes, an array's all


class _GgufLayout(NamedTuple):
    version: int
    tensor_count: int
    entries: list[_RawEntry]
    tensor_infos: bytes
    data_start: int
    alignment: int


def _gguf_entry(entry: _RawEntry) -> MetadataEntry:
    if entry.kind == STRING_TYPE:
        return MetadataEntry(entry.key, "string", entry.value[8:].decode("utf-8", "replace"))
    if entry.kind in SCALAR_TYPES:
        name, dtype = SCALAR_TYPES[entry.kind]
        return MetadataEntry(entry.key, name, np.frombuffer(entry.value, dtype)[0].item())
    element, count = struct.unpack_from("<IQ", entry.value)
    if element == STRING_TYPE:
        values: list[Any] = []
        position = 12
        for _ in range(min(count, SUMMARY_LENGTH)):
            (length,) = _U64.unpack_from(entry.value, position)
            values.append(entry.value[position + 8 : position + 8 + length].decode("utf-8", "replace"))
            position += 8 + length
        name = "string"
    else:
        name, dtype = SCALAR_TYPES[element]
        values = np.frombuffer(entry.value, dtype, min(count, SUMMARY_LENGTH), 12).tolist()
    return MetadataEntry(entry.key, f"array[{name}]", values if count <= SUMMARY_LENGTH else None, count)


def _parse_gguf(path: Path) -> _GgufLayout:
    """The key/values (raw), tensor infos (raw bytes) and data start of a GGUF file its reader has accepted."""
    source = FileSource(path)
    position = 0

    def take(length: int, what: str) -> memoryview:
        nonlocal position
        data = source.read(position, length, what)
        position += length
        return data

    def number(layout: struct.Struct, what: str) -> int:
        value: int = layout.unpack(take(layout.size, what))[0]
        return value

    try:
        _, version, tensor_count, value_count = HEADER.unpack(take(HEADER.size, "the GGUF header"))
        entries = []
        alignment = DEFAULT_ALIGNMENT
        for _ in range(value_count):
            key_bytes = bytes(take(number(_U64, "a key's length"), "a metadata key"))
            key = key_bytes.decode("utf-8", "replace")
            kind = number(_U32, f"the type of '{key}'")
            start = position
            if kind == STRING_TYPE:
                take(number(_U64, f"the length of '{key}'"), f"metadata '{key}'")
            elif kind == ARRAY_TYPE:
                element, count = number(_U32, f"the element type of '{key}'"), number(_U64, f"the length of '{key}'")
                if element == STRING_TYPE:
                    for _ in range(count):
                        take(number(_U64, f"a string's length in '{key}'"), f"a string in '{key}'")
                else:
                    take(count * SCALAR_TYPES[element][1].itemsize, f"metadata '{key}'")
            else:
                take(SCALAR_TYPES[kind][1].itemsize, f"metadata '{key}'")
            value = bytes(source.read(start, position - start, f"metadata '{key}'"))
            if key == "general.alignment":
                (alignment,) = _U32.unpack(value)
            entries.append(_RawEntry(key, key_bytes, kind, value))
        infos_start = position
        for _ in range(tensor_count):
            take(number(_U64, "a tensor name's length"), "a tensor name")
            take(8 * number(_U32, "a tensor's dimension count") + 4 + 8, "a tensor info")
        tensor_infos = bytes(source.read(infos_start, position - infos_start, "the tensor infos"))
    except KeyError as error:  # a type the reader accepted cannot be unknown here unless the file changed since
        raise CorruptCheckpointError(f"{path}: unknown GGUF value type {error} (did the file change?)") from None
    finally:
        source.close()
    return _GgufLayout(version, tensor_count, entries, tensor_infos, _aligned(position, alignment), alignment)


def _aligned(offset: int, alignment: int) -> int:
    return -(-offset // alignment) * alignment


def _gguf_value(path: Path, key: str, text: str, type_name: str) -> tuple[int, bytes]:
    """``text`` as a GGUF value of ``type_name``: its type code and bytes. An ``array[TYPE]``'s text is a JSON
    array of its elements (strings for ``array[string]``, numbers or booleans otherwise)."""
    element_type = type_name.removeprefix("array[").removesuffix("]") if type_name.startswith("array[") else None
    if type_name not in GGUF_TYPES and element_type not in GGUF_TYPES:
        known = [*GGUF_TYPES, *(f"array[{name}]" for name in GGUF_TYPES)]
        raise UsageError(f"{path}: unknown GGUF type '{type_name}'; known: {', '.join(known)}")
    if element_type is not None:
        return ARRAY_TYPE, _gguf_array(path, key, text, element_type)
    kind = GGUF_TYPES[type_name]
    if kind == STRING_TYPE:
        data = text.encode("utf-8", "surrogateescape")
        return kind, _U64.pack(len(data)) + data
    dtype = SCALAR_TYPES[kind][1]
    wrong = UsageError(f"{path}: '{key}' is a {type_name}; '{text}' is not one")
    if dtype.kind == "b":
        truth = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(text.lower())
        if truth is None:
            raise wrong
        return kind, bytes([truth])
    try:
        if dtype.kind in "iu":
            number = int(text, 0)
            if not np.iinfo(dtype).min <= number <= np.iinfo(dtype).max:
                raise wrong
            return kind, np.array(number, dtype).tobytes()
        value = float(text)
    except ValueError:
        raise wrong from None
    with np.errstate(over="ignore"):
        stored = np.array(value, dtype)
    if math.isfinite(value) and not np.isfinite(stored):
        raise UsageError(f"{path}: '{key}' = {text} does not fit a {type_name}")
    return kind, stored.tobytes()


def _gguf_array(path: Path, key: str, text: str, element_type: str) -> bytes:
    """``text``, a JSON array, as the bytes of a GGUF array of ``element_type``: its type, count and elements."""
    try:
        elements = json.loads(text)
    except (ValueError, RecursionError):
        elements = None
    strings = element_type == "string"
    if not isinstance(elements, list) or not all(
        isinstance(element, str) if strings else type(element) in (int, float, bool) for element in elements
    ):
        what = "strings" if strings else "numbers"
        raise UsageError(
            f"{path}: '{key}' is an array[{element_type}]; give a JSON array of {what}, like {_LIKE[strings]}"
        )
    if len(elements) > MAX_ARRAY_LENGTH:
        raise UsageError(
            f"{path}: '{key}' has {len(elements):,} elements; GGUF arrays hold at most {MAX_ARRAY_LENGTH:,}"
        )
    kind = GGUF_TYPES[element_type]
    values = (
        _gguf_value(path, key, element if strings else json.dumps(element), element_type)[1] for element in elements
    )
    return _U32.pack(kind) + _U64.pack(len(elements)) + b"".join(values)


_LIKE = {True: '["a", "b"]', False: "[1, 2, 3]"}


def _gguf_prefix(
    path: Path,
    layout: _GgufLayout,
    assignments: Sequence[tuple[str, str]],
    deletions: Sequence[str],
    types: Mapping[str, str],
) -> bytes:
    """The new header, key/values and tensor infos (unpadded)."""
    entries = {entry.key: entry for entry in layout.entries}
    for key in [*deletions, *(key for key, _ in assignments)]:
        if key == "general.alignment":
            raise UsageError(f"{path}: general.alignment places the tensor data; convert the file to change it")
    for key in deletions:
        if entries.pop(key, None) is None:
            raise UsageError(f"{path}: no metadata key '{key}' to delete")
    for key, text in assignments:
        old = entries.get(key)
        type_name = types.get(key) or types.get("")
        if type_name is None:
            type_name = "string" if old is None else _gguf_entry(old).type
        kind, value = _gguf_value(path, key, text, type_name)
        key_bytes = old.key_bytes if old is not None else key.encode("utf-8", "surrogateescape")
        entries[key] = _RawEntry(key, key_bytes, kind, value)
    pieces = [HEADER.pack(b"GGUF", layout.version, layout.tensor_count, len(entries))]
    for entry in entries.values():
        pieces += [_U64.pack(len(entry.key_bytes)), entry.key_bytes, _U32.pack(entry.kind), entry.value]
    return b"".join([*pieces, layout.tensor_infos])


class _MetadataEditor:
    """Values typed as gguf-py's ``gguf_new_metadata`` types them: a key that exists keeps its type (its value
    parsed as that type: an array's as a JSON array of its element type), a new key is a string unless a type is
    given (``array[int32]``, ...);
    ``general.alignment`` is neither set nor deleted (it places the data). The data starts at the first multiple
    of ``general.alignment`` after the tensor infos, and llama.cpp requires the first tensor at offset 0 of it, so
    an edit is written in place only when the new key/values and tensor infos end within the last ``alignment``
    bytes before the data (padded with zeros to it): a value of the same size, or a change smaller than the padding
    there was; any other edit is written into a new file."""

    def entries(self, path: Path) -> list[MetadataEntry]:
        return [_gguf_entry(entry) for entry in _parse_gguf(path).entries]

    def plan(
        self, path: Path, assignments: Sequence[tuple[str, str]], deletions: Sequence[str], types: Mapping[str, str]
    ) -> HeaderPlan:
        layout = _parse_gguf(path)
        prefix = _gguf_prefix(path, layout, assignments, deletions, types)
        end = _aligned(len(prefix), layout.alignment)
        return HeaderPlan(
            in_place=prefix.ljust(layout.data_start, b"\0") if end == layout.data_start else None,
            copied=prefix.ljust(end, b"\0"),
            data_start=layout.data_start,
            need=f"the new key/values and tensor infos end at byte {len(prefix)}, "
            f"the data starts at {layout.data_start} (alignment {layout.alignment})",
        )


METADATA_EDITOR = _MetadataEditor()
