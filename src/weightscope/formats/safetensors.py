"""safetensors: a JSON header, then the raw bytes of every tensor.

Bytes (``safetensors/src/tensor.rs``, the reference implementation):

- 8 bytes: ``N``, the header length, unsigned 64-bit little-endian; at most 100,000,000.
- ``N`` bytes: a UTF-8 JSON object. Each key but ``__metadata__`` names a tensor:
  ``{"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}``. ``__metadata__``,
  if present, maps strings to strings. The writer pads the header with spaces to a
  multiple of 8 bytes and orders entries by alignment, then name; readers list tensors
  sorted by name (``safe_open(...).keys()``).
- the data buffer, to the end of the file: tensor bytes at ``[begin, end)`` relative to
  its start, little-endian, row-major, with no strides and no alignment of their own.

Dtype codes are the ``safetensors`` column of ``weightscope.dtypes``: BOOL, U8, I8, I16,
U16, F16, BF16, I32, U32, F32, C64, F64, I64, U64 and the float8 types F8_E5M2, F8_E4M3,
F8_E4M3FNUZ, F8_E5M2FNUZ, F8_E8M0 (those via ``ml_dtypes``). The sub-byte types F4, F6_E2M3 and
F6_E3M2 are stored packed (``weightscope.dtypes.PACKED_BITS``: ``elements * bits / 8`` bytes, a whole number), read
unpacked to ml_dtypes' float4_e2m1fn / float6_e2m3fn / float6_e3m2fn and written packed again, bit for bit.

A reader must refuse: a header length over the limit or past the end of the file, a
header that is not UTF-8 JSON or not an object, a name given twice, an unknown dtype, a
shape that is not a list of non-negative integers, ``data_offsets`` that are not
``[begin, end]`` with ``0 <= begin <= end``, ``end - begin`` other than elements × item
size, bytes past the end of the file, and tensors that overlap or leave holes: sorted by
offset they must tile the buffer exactly, from 0 to the end of the file (the reference
reader's check). ``__metadata__`` must map strings to strings.

There are no checksums: ``verify`` reads every tensor, which checks only bounds.

Writing (``save``) makes the bytes ``safetensors.numpy.save_file`` makes: the compact JSON
header (UTF-8, not ASCII-escaped) with ``__metadata__`` first when given, then the tensors
ordered as the reference orders them (by dtype, its enum's order reversed, so wider types
come first, then by name), data in that order, the header padded with spaces so the data
starts at a multiple of 8. Dtypes are those of the table with a numpy type (BF16 and F8
through ``ml_dtypes``); others (complex128, strings) are refused before any file is made.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import struct
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from itertools import accumulate, chain, repeat
from operator import attrgetter, mul, sub
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from weightscope.checkpoint import Extent, FileCheckpoint, Index, TensorInfo
from weightscope.dtypes import (
    BY_SAFETENSORS,
    ELEMENT_TYPES,
    NUMPY_MAX_RANK,
    PACKED_BITS,
    check_rank,
    check_size,
    element_for,
    little_endian_dtype,
    pack_bits,
    unpack_bits,
)
from weightscope.errors import CorruptCheckpointError, TruncatedFileError, UnsupportedFormatError, UsageError
from weightscope.infos import collection_paused
from weightscope.limits import Limits, json_cost
from weightscope.writing import HeaderPlan, Holds, Spec, Writer, array_bytes, byte_pieces, plan

try:  # the C parser of a compact header (optional: built where the install had a C compiler)
    from weightscope import _headers
except ImportError:  # an install without a C compiler: the Python path
    _headers = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from weightscope.formats import Staging
    from weightscope.writing import Tensors

MAX_HEADER_SIZE = 100_000_000  # the reference implementation's limit
METADATA_KEY = "__metadata__"
_HEADER_LENGTH = struct.Struct("<Q")
# What parsing a header (objects as tuples of pairs) and indexing it take at most, measured (tracemalloc, CPython
# 3.11): a string 56 bytes (with its text, counted apart), an array 96 (``[1],...``: a list with room for four), any
# other separator 48 (``{"k1":1000000,...}``: a pair, its slot, its value). A header of 100,000 one-value tensors
# (7 MB) is charged 117 MB, its peak 103 MB, the cap 123 MB; 32 bytes a byte of header charged 212 MB.
_HEADER_COSTS = {"separator": 48, "array": 96, "string": 56}
# Each code with a numpy type -> its dtype, item size and element type's name.
_PLAIN = {
    code: (element.dtype, element.dtype.itemsize, element.name)
    for code, element in BY_SAFETENSORS.items()
    if element.dtype is not None and element.name not in PACKED_BITS
}
# The reference writer's compact header, read from its text (``_compact``): with no escape and no control character
# in it, splitting at every '"' alternates what lies between strings and their contents, each tensor ten pieces:
# name, ':{', 'dtype', ':', code, ',', 'shape', ':[2,3],', 'data_offsets', ':[0,24]},' (the last ':[0,24]}}').
_FIXED = ((1, ":{"), (2, "dtype"), (3, ":"), (5, ","), (6, "shape"), (8, "data_offsets"))
_NUMBER = "(?:0|[1-9][0-9]*)"  # JSON's non-negative integers: no sign, no leading zero
_SHAPE = re.compile(rf":\[(?:{_NUMBER}(?:,{_NUMBER})*)?\],")
# What ``_compact`` builds at most a quote of its header, besides four copies of the text: its pieces (a string and
# its slot each), then each tensor's info, sizes and offsets (tracemalloc, CPython 3.11: 54 bytes for 100,000 tensors
# of shape (); 54 for 60,000 of one to four dimensions in three dtypes; 48 for 60,000 of 977 sizes).
_COMPACT_COST = 64
_SPELLINGS_KEPT = 4096  # the most tensors of a header whose offsets ``_spelled_spans`` keeps spelled


class SafetensorsCheckpoint(FileCheckpoint):
    """A ``.safetensors`` file: tensors sorted by name, arrays as read-only views of the file."""

    format = "safetensors"
    threadsafe_reads = True  # the header is read at open; a read views (or fetches) its bytes

    def _extent(self, info: TensorInfo) -> Extent:
        if info.type_name in PACKED_BITS:  # sub-byte codes, packed
            return Extent(info.file, info.offset, info.nbytes, np.dtype(np.uint8), compression=info.type_name)
        return Extent(info.file, info.offset, info.nbytes, little_endian_dtype(info.dtype))  # raw little-endian

    def _read(self, info: TensorInfo) -> np.ndarray:
        if info.type_name not in PACKED_BITS:
            return super()._read(info)
        data = np.frombuffer(self._source.read(info.offset, info.nbytes, f"tensor '{info.name}'"), np.uint8)
        return unpack_bits(data, PACKED_BITS[info.type_name], info.size).view(info.dtype).reshape(info.shape)

    def _load(self) -> Index:
        (length,) = _HEADER_LENGTH.unpack(self._source.read(0, _HEADER_LENGTH.size, "the header length"))
        if length > MAX_HEADER_SIZE:
            raise CorruptCheckpointError(
                f"{self.path}: header length {length} exceeds the format's limit of {MAX_HEADER_SIZE} bytes"
            )
        text = bytes(self._source.read(_HEADER_LENGTH.size, length, "the JSON header"))
        start = _HEADER_LENGTH.size + length
        limits = Limits.for_size(self._source.size)
        with collection_paused():
            # The text path (``_compact``) builds less than ``_COMPACT_COST`` bytes a quote: tried where that fits
            # (the quotes counted only where as many quotes as bytes would not fit).
            quotes = len(text) if (4 + _COMPACT_COST) * len(text) <= limits.memory else text.count(b'"')
            if 4 * len(text) + _COMPACT_COST * quotes <= limits.memory:
                compact = self._compact(text, start)
                if compact is not None:
                    return compact
            # Before parsing: a few bytes of JSON make dozens of bytes of Python objects.
            limits.check_memory(json_cost(text, **_HEADER_COSTS), "parsing the JSON header", self.path)
            try:
                # Each JSON object a tuple of its (key, value) pairs: made in C, where a hook refusing a name given
                # twice is a Python call per tensor; arrays stay lists, so an object is never taken for an array.
                parsed = json.loads(text.decode("utf-8"), object_pairs_hook=tuple)
            except (UnicodeDecodeError, ValueError, RecursionError) as error:  # ValueError: JSON, ints > 4300 digits
                raise CorruptCheckpointError(f"{self.path}: the header is not UTF-8 JSON ({error})") from None
            del text  # parsed: its bytes are not kept while the index is built
            return self._written(parsed, start) or self._per_tensor(parsed, start)

    def _compact(self, text: bytes, start: int) -> Index | None:
        """The index of a header in the reference writer's compact layout, every check of ``_per_tensor`` made
        without JSON objects: in one pass of C (``weightscope._headers``) where the package has it, else a column
        at a time (``_columns``). None where the header is laid out otherwise or any check fails: ``_written`` and
        ``_per_tensor`` then take it."""
        if _headers is None:
            found = self._columns(text, start)
        else:
            found = _headers.compact_header(text, _PLAIN, TensorInfo, str(self.path), start, self._source.size)
        if found is None:
            return None
        metadata, by_name, ordered = found
        if not ordered:  # tensors of several dtypes: the writer orders them by dtype first
            by_name = dict(sorted(by_name.items()))
        return Index(by_name, metadata=metadata)

    def _columns(self, text: bytes, start: int) -> tuple[dict[str, str], dict[str, TensorInfo], bool] | None:
        """``_compact``'s metadata, infos by name (in the header's order, no name given twice, not the metadata's)
        and whether that order is the names', taken from the header's text a column at a time (C loops over all
        tensors, no JSON objects made)."""
        body = text.rstrip(b" ")  # the writer's padding
        # No backslash and no control character (a byte under 0x20: its smallest, found by numpy in one pass): no
        # string that needs json's decoder.
        if not body.startswith(b'{"') or b"\\" in body or np.frombuffer(body, np.uint8).min() < 0x20:
            return None
        try:
            pieces = body.decode("utf-8").split('"')
        except UnicodeDecodeError:
            return None  # json's message names it
        found = _leading_metadata(pieces)
        if found is None:
            return None
        metadata, first = found
        del pieces[:first]
        count = len(pieces) // 10
        if not pieces or len(pieces) % 10 or any(pieces[at::10] != [word] * count for at, word in _FIXED):
            return None
        names, codes, shapes = pieces[0::10], pieces[4::10], pieces[7::10]
        if not (distinct_codes := _distinct(codes)) <= _PLAIN.keys():
            return None
        # (code, shape text) -> what a tensor of them is: dtype, shape, bytes, element type's name
        kinds: dict[tuple[str, str], tuple[np.dtype[Any], tuple[int, ...], int, str]] = {}
        for shape_text in _distinct(shapes):
            if not _SHAPE.fullmatch(shape_text):
                return None
            shape = tuple(map(int, shape_text[2:-2].split(","))) if len(shape_text) > 4 else ()  # one per shape
            if len(shape) > NUMPY_MAX_RANK or 0 in shape:
                return None  # an empty tensor: check_size's case
            for code in distinct_codes:
                dtype, itemsize, type_name = _PLAIN[code]
                kinds[code, shape_text] = (dtype, shape, math.prod(shape) * itemsize, type_name)
        dtypes: Sequence[np.dtype[Any]]
        dims: Sequence[tuple[int, ...]]
        nbytes: Sequence[int]
        type_names: Sequence[str]
        if len(kinds) == 1:  # one dtype and shape (a mixture of experts' shard): columns of one value
            dtype, shape, size, type_name = kinds.popitem()[1]
            dtypes, dims, nbytes, type_names = [dtype] * count, [shape] * count, [size] * count, [type_name] * count
        else:  # each tensor's row by its (code, shape) pair, whose strings' hashes the sets above computed
            dtypes, dims, nbytes, type_names = zip(
                *map(kinds.__getitem__, zip(codes, shapes, strict=True)), strict=True
            )
        del codes, shapes
        # Listed in their data's order, the tensors tile the buffer: each one's offsets are known from the sizes
        # before it, and the header's text must spell exactly those (so they are JSON's integers, no sign, no
        # leading zero, and every check of the offsets holds). Spelled as the pieces between the quotes are.
        sizes = tuple(nbytes)  # the shards of a model folder mostly repeat one layout: its spelling is kept
        spelled = (_spelled_spans if count <= _SPELLINGS_KEPT else _spelled_spans.__wrapped__)(sizes)
        if spelled != '"'.join(pieces[9::10]) or start + sum(sizes) != self._source.size:
            return None
        del pieces, spelled
        file, offsets_in_file = str(self.path), accumulate(sizes, initial=start)
        rows = zip(names, dtypes, dims, nbytes, type_names, repeat(file), offsets_in_file, names)
        by_name = dict(zip(names, _made(rows), strict=True))
        if len(by_name) != count or METADATA_KEY in by_name:
            return None
        return metadata, by_name, sorted(names) == names

    def _written(self, parsed: object, start: int) -> Index | None:
        """The index of a header as the reference writes it, every check of ``_per_tensor`` made a column at a time
        (C loops over all tensors); None where any fails or the header is laid out otherwise (fields in another
        order, an empty tensor): ``_per_tensor`` then checks it tensor by tensor and names what is wrong."""
        if type(parsed) is not tuple or len(header := dict(parsed)) != len(parsed):
            return None
        pairs = header.pop(METADATA_KEY, ())
        if type(pairs) is not tuple or len(metadata := dict(pairs)) != len(pairs):
            return None
        entries = list(header.values())
        if (
            not entries
            or not set(map(type, metadata.values())) <= {str}
            or set(map(type, entries)) != {tuple}
            or set(map(len, entries)) != {3}
        ):
            return None
        columns = (zip(*column, strict=True) for column in zip(*entries, strict=True))
        (fields, codes), (shape_fields, shapes), (offset_fields, offsets) = columns
        if {*fields} != {"dtype"} or {*shape_fields} != {"shape"} or {*offset_fields} != {"data_offsets"}:
            return None
        if set(map(type, codes)) != {str} or not set(codes) <= _PLAIN.keys():
            return None
        dtypes, itemsizes, type_names = zip(*map(_PLAIN.__getitem__, codes), strict=True)
        if set(map(type, shapes)) != {list} or max(map(len, shapes)) > NUMPY_MAX_RANK:
            return None
        dims = list(chain.from_iterable(shapes))
        if not set(map(type, dims)) <= {int} or min(dims, default=0) < 0:
            return None
        sizes = list(map(math.prod, shapes))
        if 0 in sizes or set(map(type, offsets)) != {list} or set(map(len, offsets)) != {2}:
            return None  # an empty tensor: check_size's case
        begins, ends = zip(*offsets, strict=True)
        nbytes = list(map(mul, sizes, itemsizes))
        if (
            set(map(type, begins + ends)) != {int}
            or min(begins) < 0
            or list(map(sub, ends, begins)) != nbytes
            or start + max(ends) > self._source.size
        ):
            return None
        # In the order listed (the reference writes data in its header's order), the tensors tile the data buffer.
        if begins[0] != 0 or begins[1:] != ends[:-1] or start + ends[-1] != self._source.size:
            return None
        file, offsets_in_file = str(self.path), map(start.__add__, begins)
        infos = _made(zip(header, dtypes, map(tuple, shapes), nbytes, type_names, repeat(file), offsets_in_file,
                          header))  # fmt: skip
        infos.sort()  # by name: names are unique, so no other field is compared
        return Index(dict(zip(sorted(header), infos, strict=True)), metadata=metadata)

    def _per_tensor(self, parsed: object, start: int) -> Index:
        """The index of any header, checked tensor by tensor: the first problem raised, naming its tensor."""
        try:
            header = self._objects(parsed)
        except RecursionError as error:
            raise CorruptCheckpointError(f"{self.path}: the header is not UTF-8 JSON ({error})") from None
        if not isinstance(header, dict):
            raise CorruptCheckpointError(f"{self.path}: the header is a JSON {type(header).__name__}, not an object")
        metadata = header.pop(METADATA_KEY, {})
        if not isinstance(metadata, dict) or not all(isinstance(value, str) for value in metadata.values()):
            raise CorruptCheckpointError(f"{self.path}: {METADATA_KEY} is not a map of strings to strings")
        infos = [self._describe(name, entry, start) for name, entry in header.items()]
        self._check_layout(infos, start)
        return Index({info.name: info for info in sorted(infos, key=attrgetter("name"))}, metadata=metadata)

    def _objects(self, value: object) -> object:
        """``value`` as parsed, each JSON object (a tuple of pairs) a dict: inner ones first, as ``json`` makes
        them, so that the first name given twice is the one an ``object_pairs_hook`` would have found."""
        if type(value) is list:
            return [self._objects(item) for item in value]
        if type(value) is not tuple:
            return value
        pairs = [(key, self._objects(item)) for key, item in value]
        found = dict(pairs)
        if len(found) != len(pairs):
            counts = Counter(name for name, _ in pairs)  # one pass: names.count(name) per name was quadratic
            twice = next(name for name, count in counts.items() if count > 1)
            raise CorruptCheckpointError(f"{self.path}: the header names '{twice}' twice")
        return found

    def _describe(self, name: str, entry: object, start: int) -> TensorInfo:
        """The tensor ``name`` of the header, its data buffer starting at file offset ``start``."""
        where = f"{self.path}: tensor '{name}'"
        if not isinstance(entry, dict):
            raise CorruptCheckpointError(f"{where} is described by a JSON {type(entry).__name__}, not an object")
        code, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        element = BY_SAFETENSORS.get(code) if isinstance(code, str) else None
        if element is None:
            raise UnsupportedFormatError(f"{where} has unknown dtype {code!r}")
        dtype = element.dtype
        if dtype is None:
            raise UnsupportedFormatError(
                f"{where} has dtype {code} ({element.name}): packed sub-byte elements that numpy holds no type for"
            )
        if not isinstance(shape, list) or not all(type(size) is int and size >= 0 for size in shape):
            raise CorruptCheckpointError(f"{where} has shape {shape!r}; expected a list of non-negative integers")
        check_rank(shape, where)
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(type(offset) is int for offset in offsets)
            or not 0 <= offsets[0] <= offsets[1]
        ):
            raise CorruptCheckpointError(
                f"{where} has data_offsets {offsets!r}; expected [begin, end] with 0 <= begin <= end"
            )
        begin, end = offsets
        bits = math.prod(shape) * PACKED_BITS.get(element.name, dtype.itemsize * 8)
        if bits % 8:
            raise CorruptCheckpointError(
                f"{where}: shape {shape} of {code} fills {bits} bits, no whole number of bytes"
            )
        nbytes = bits // 8
        if end - begin != nbytes:
            raise CorruptCheckpointError(
                f"{where}: data_offsets [{begin}, {end}] hold {end - begin} bytes; "
                f"shape {shape} of {element.name} needs {nbytes}"
            )
        if start + end > self._source.size:
            raise TruncatedFileError(
                f"{where}: bytes {start + begin}..{start + end} lie past the end of the file "
                f"({self._source.size} bytes)"
            )
        # Only a shape with a zero in it gets here with more bytes than a file holds.
        check_size(shape, dtype.itemsize, where)
        return TensorInfo(name, dtype, tuple(shape), nbytes, element.name, str(self.path), start + begin, name)

    def _check_layout(self, infos: list[TensorInfo], start: int) -> None:
        """Sorted by offset, the tensors must tile the data buffer: no overlap, no hole, nothing after."""
        position, previous = start, None
        for info in sorted(infos, key=attrgetter("offset", "nbytes")):
            if previous is not None and info.offset < position:
                raise CorruptCheckpointError(
                    f"{self.path}: tensor '{info.name}' (bytes {info.offset}..{info.offset + info.nbytes}) "
                    f"overlaps tensor '{previous.name}' (bytes {previous.offset}..{position})"
                )
            if info.offset > position:
                raise CorruptCheckpointError(
                    f"{self.path}: a hole of {info.offset - position} bytes at {position}, before tensor "
                    f"'{info.name}'; tensors must fill the data buffer without gaps"
                )
            position, previous = info.offset + info.nbytes, info
        if position != self._source.size:
            raise CorruptCheckpointError(
                f"{self.path}: {self._source.size - position} bytes at {position} after the last tensor; "
                "tensors must fill the data buffer to the end of the file"
            )


def _made(rows: Iterable[tuple[Any, ...]]) -> list[TensorInfo]:
    """Each row of columns made a ``TensorInfo`` as its docstring advises, ``tuple.__new__`` mapped over them (a
    ``partial`` of it takes a sixth longer)."""
    return list(map(tuple.__new__, repeat(TensorInfo), rows))


def _distinct(texts: list[str]) -> set[str]:
    """The different strings of ``texts``: one where all are alike (compared, not hashed: a shard of experts)."""
    return {texts[0]} if texts == [texts[0]] * len(texts) else {*texts}


@functools.lru_cache(maxsize=16)
def _spelled_spans(sizes: tuple[int, ...]) -> str:
    """The ``data_offsets`` of tensors of ``sizes`` bytes one after another from 0, and the ends of their entries, as
    the reference writer spells them and as ``_compact`` splits them at '"': ``:[0,24]},"``... ``:[24,40]}}``."""
    texts = list(map(str, accumulate(sizes)))  # an int's text: most of the time a spelling takes
    count = len(texts)
    spelled = [']},":['] * (4 * count)  # the begin, ',', the end, and what follows up to the next begin
    spelled[0::4] = ["0", *texts[:-1]]
    spelled[1::4] = [","] * count
    spelled[2::4] = texts
    spelled[-1] = "]}}"
    return ":[" + "".join(spelled)


def _leading_metadata(pieces: list[str]) -> tuple[dict[str, str], int] | None:
    """``__metadata__`` at the head of a compact header split at its '"' (``_compact``), and the index of the first
    tensor's name; None where the head is anything else (not a map of strings, a key given twice)."""
    if pieces[0] != "{":
        return None
    if pieces[1] != METADATA_KEY:
        return {}, 1
    if pieces[2] == ":{},":
        return {}, 3
    if pieces[2] != ":{":
        return None
    metadata: dict[str, str] = {}
    for at in range(3, len(pieces) - 3, 4):
        if pieces[at + 1] != ":" or pieces[at] in metadata:
            return None
        metadata[pieces[at]] = pieces[at + 2]
        if pieces[at + 3] == "},":
            return metadata, at + 4
        if pieces[at + 3] != ",":
            return None
    return None


# The reference's ``Dtype`` enum, in declaration order: its writer sorts tensors by dtype,
# last declared first, then by name.
_REFERENCE_ORDER = (
    "BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F8_E4M3FNUZ",
    "F8_E5M2FNUZ", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "C64", "F64", "I64", "U64",
)  # fmt: skip
_RANK = {code: rank for rank, code in enumerate(_REFERENCE_ORDER)}
_ALIGNMENT = 8  # the header is padded so that the data starts at a multiple of this


# What the files hold: every type of the table with a numpy dtype and a code.
HOLDS = Holds(
    "safetensors",
    "model.safetensors",
    dtypes=frozenset(e.name for e in ELEMENT_TYPES if e.safetensors is not None and e.numpy_name is not None),
    reserved={METADATA_KEY: "the header's metadata"},
    max_header=MAX_HEADER_SIZE,
)


def _code(dtype: np.dtype) -> str:
    element = element_for(dtype, lambda e: e.safetensors is not None)
    assert element is not None and element.safetensors is not None  # planned: a type the format holds
    return element.safetensors


def save(
    tensors: Tensors | Mapping[str, ArrayLike],
    path: str | os.PathLike[str],
    *,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``tensors`` as a ``.safetensors`` file at ``path``, with ``metadata`` as ``__metadata__``.

    The header is planned from the tensors' specs, then each array is streamed in the
    header's order; the file appears at ``path`` only once complete. Returns the path.
    """
    write(tensors, path, metadata=metadata)
    return Path(path)


def write(
    tensors: Tensors | Mapping[str, ArrayLike],
    path: str | os.PathLike[str],
    *,
    metadata: Mapping[str, str] | None = None,
) -> list[Path]:
    """``save``, returning the one file written (the registry's ``Writer``)."""
    target = Path(path)
    if metadata is not None and not (
        isinstance(metadata, Mapping) and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        raise UsageError("safetensors metadata must map strings to strings")
    from weightscope.atomic import atomic_write

    source, specs = plan(tensors, target, HOLDS)
    planned = sorted(((_code(spec.dtype), spec) for spec in specs), key=lambda entry: (-_RANK[entry[0]], entry[1].name))
    header: dict[str, Any] = {} if metadata is None else {METADATA_KEY: dict(metadata)}
    offset = 0
    for code, spec in planned:
        nbytes = _stored_nbytes(code, spec)
        header[spec.name] = {"dtype": code, "shape": list(spec.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    try:
        text = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError as error:
        raise UsageError(f"{target}: a tensor name or metadata string is not valid UTF-8 text ({error})") from None
    text += b" " * (-len(text) % _ALIGNMENT)
    HOLDS.check_header(target, len(text))
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(target) as handle:
        handle.write(_HEADER_LENGTH.pack(len(text)) + text)
        for code, spec in planned:
            bits = PACKED_BITS.get(BY_SAFETENSORS[code].name)
            if bits is not None:
                handle.write(pack_bits(array_bytes(source.array(spec.name), spec), bits).data)
                continue
            for data in byte_pieces(source, spec):  # a tensor in pieces (a ZeRO partition's) is never joined
                handle.write(data.data)
    return [target]


def _stored_nbytes(code: str, spec: Spec) -> int:
    """The bytes ``spec`` takes in the file: its elements', or their bits packed; a count of bits that fills no whole
    number of bytes is refused, as the reference refuses it."""
    bits = PACKED_BITS.get(BY_SAFETENSORS[code].name)
    if bits is None:
        return spec.nbytes
    if math.prod(spec.shape) * bits % 8:
        raise UsageError(
            f"tensor '{spec.name}': {list(spec.shape)} values of {bits} bits fill no whole number of bytes"
        )
    return math.prod(spec.shape) * bits // 8


WRITER = Writer(HOLDS, write)


# What safetensors files of PyTorch weights say (safetensors.torch's save_pretrained writes it;
# transformers refuses a file whose metadata lacks a format, and older releases one with none).
PYTORCH_METADATA = {"format": "pt"}


def staging(destination: Path, names: Sequence[str]) -> Staging:
    """What ``convert`` tells this writer: tensors named as PyTorch names them (module paths joined by dots,
    no '/') are marked as PyTorch's in the metadata."""
    from weightscope.formats import Staging

    return Staging(options={"metadata": PYTORCH_METADATA} if all("/" not in name for name in names) else {})


# -- metadata edits (``weightscope meta``; weightscope.metadata_edit writes them) ----------------------------------
METADATA_HEADROOM = 1024  # spaces a copied header keeps, so that the next edits fit in place


class _MetadataEditor:
    """``__metadata__`` maps strings to strings. The JSON header may be padded with spaces, so any new header no
    longer than the old one is written in place (padded to its length); one that is longer is written into a new
    file with ``METADATA_HEADROOM`` spaces after it, so the next edits fit in place."""

    def entries(self, path: Path) -> None:
        return None  # the reader's metadata: strings

    def plan(
        self, path: Path, assignments: Sequence[tuple[str, str]], deletions: Sequence[str], types: Mapping[str, str]
    ) -> HeaderPlan:
        from weightscope.sources import FileSource

        if types:
            raise UsageError(f"{path}: safetensors metadata maps strings to strings; --type is for GGUF")
        source = FileSource(path)
        try:
            (length,) = _HEADER_LENGTH.unpack(source.read(0, _HEADER_LENGTH.size, "the header length"))
            header = json.loads(bytes(source.read(_HEADER_LENGTH.size, length, "the header")))
        finally:
            source.close()
        metadata = dict(header.pop(METADATA_KEY, None) or {})
        for key in deletions:
            if key not in metadata:
                raise UsageError(f"{path}: no metadata key '{key}' to delete")
            del metadata[key]
        metadata.update(assignments)
        edited = ({METADATA_KEY: metadata} if metadata else {}) | header  # first, as the reference writer puts it
        try:
            text = json.dumps(edited, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate in a name ("\ud800" in the file): kept as its escape
            text = json.dumps(edited, separators=(",", ":")).encode("ascii")
        padded = -(-(len(text) + METADATA_HEADROOM) // 8) * 8
        return HeaderPlan(
            in_place=_HEADER_LENGTH.pack(length) + text.ljust(length, b" ") if len(text) <= length else None,
            copied=_HEADER_LENGTH.pack(padded) + text.ljust(padded, b" "),
            data_start=_HEADER_LENGTH.size + length,
            need=f"the new header is {len(text)} bytes, the old one {length}",
        )


METADATA_EDITOR = _MetadataEditor()
