"""``BundleEntryProto`` decoded with numpy, every entry of an index at once.

The protobuf runtime stays the reference; this decoder only takes the entries laid
out the way TensorFlow's ``BundleWriter`` writes them, and says which ones it took.
Every other entry (and every entry whose values a reader would refuse) is left to
``BundleEntryProto.FromString`` and the checks that name the tensor, one by one.

Wire format (proto3, ``tensor_bundle.proto``), fields in number order, zero values
omitted: ``dtype`` (1, varint), ``shape`` (2, ``TensorShapeProto``: ``dim`` (2,
repeated ``{size = 1 varint, name = 2}``), ``unknown_rank`` (3)), ``shard_id`` (3,
varint), ``offset`` (4, varint), ``size`` (5, varint), ``crc32c`` (6, fixed32),
``slices`` (7, repeated ``TensorSliceProto``).

Taken here: each field at most once and in that order; dims of rank up to
``MAX_RANK``, each holding only a size; varints of up to 7 bytes (values below
2**49; negative values are 10-byte varints). Left to protobuf: anything else — a
field out of order or repeated, an unknown field or wire type, slices, a dim name,
``unknown_rank``, longer varints, lengths that overrun the entry.

Why not protobuf for all (measured on the 20,000 entries TensorFlow writes for
``bench/bench_tensorflow.py``, 2-core AMD EPYC, Python 3.11, upb protobuf 7.36):
``FromString`` on every entry takes about 8 ms, and reading their fields back into
Python about 28 ms more; this decoder takes about 1.1 ms. TensorFlow's whole listing of
that checkpoint takes 13-17 ms, so no per-entry Python fits: the entries are decoded
a field at a time across all of them, with 8-byte windows gathered at each entry's
position (``weightscope.containers.table.byte_windows``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from weightscope.containers.table import byte_windows, decode_varints, read_varint
from weightscope.errors import CorruptCheckpointError

try:
    from weightscope import _tables
except ImportError:  # built without a C compiler: numpy's decoder below
    _tables = None  # type: ignore[assignment]

MAX_RANK = 8
_PADDING = 16  # bytes read past an entry's end: 7 by a window at the end, 9 by one at a dim's size
_BYTE = np.uint64(0xFF)
_LOW_32 = np.uint64(0xFFFFFFFF)
# (field number, tag byte) in the order TensorFlow writes them: all varints (wire type
# 0) but the shape (2, length-delimited) and the crc32c (6, fixed32).
_FIELDS: tuple[tuple[int, int], ...] = ((1, 0x08), (2, 0x12), (3, 0x18), (4, 0x20), (5, 0x28), (6, 0x35))
_DTYPE_AND_SHAPE = np.uint64(0x00120008)  # tags 08 and 12, and the high bits of the bytes after them clear
_DTYPE_AND_SHAPE_MASK = np.uint64(0x80FF80FF)
_DIM_TAG = 0x12  # TensorShapeProto.dim
_DIM_SIZE_TAG = 0x08  # Dim.size


class Entries(NamedTuple):  # (not a dataclass: its decorator costs the command line ~0.4 ms a class)
    """The fields of n entries; a row counts only where ``decoded`` is set."""

    decoded: np.ndarray  # bool: this decoder took the entry
    dtype: np.ndarray  # int64 DataType code
    shard: np.ndarray  # int64
    offset: np.ndarray  # int64
    size: np.ndarray  # int64
    crc32c: np.ndarray  # int64 (a uint32)
    rank: np.ndarray  # int64
    dims: np.ndarray  # (n, highest rank) int64; 1 past an entry's rank, so a row's product is its element count


def check_rows(
    rows: bytearray, element_index: np.ndarray, itemsizes: np.ndarray, shard_sizes: np.ndarray
) -> tuple[bytearray, list[int]]:
    """The compiled checks (``TensorFlowCheckpoint._check_entries``' own) of the ``rows`` the compiled decoder made:
    3 int64 a row (each entry's element type, shard, and whether it passes them all), and the element types whose
    item size is not known yet (-1 in ``itemsizes``: their entries fail until it is)."""
    assert _tables is not None  # (only the compiled decoder makes rows)
    return _tables.check_entries(rows, element_index, itemsizes, shard_sizes)


def entry_columns(
    data: np.ndarray,
    bounds: tuple[np.ndarray, np.ndarray],
    check: Callable[[bytearray], bytearray],
    kinds: tuple[np.ndarray, np.ndarray],
    files: list[str],
    numbers: np.ndarray,
    start: int,
    columns: list[list[Any]],
) -> list[int] | None:
    """The entries in ``data[starts[i]:ends[i]]`` (``bounds``) decoded, checked (``check``: ``check_rows``' rows) and
    set into the columns in compiled code, three calls in all (``weightscope._tables``): ``columns`` (4 lists of
    every entry's dtype, shape, type name and file) at ``start + i``, dtypes and type names from ``kinds`` (object
    arrays by element type, read after the check, which makes the types met first), files from ``files`` by shard;
    ``numbers[:, start + i]`` (5 rows: crc32c, shard, offset, the size where it passes every check, else 0, and the
    size). The indices of the entries not passing every check (left to protobuf); None where the package was built
    without it or a bound lies outside ``data`` (then numpy decodes the entries, ``decode_entries``)."""
    compiled = None if _tables is None else _tables.decode_entries(data, *bounds)
    if compiled is None:
        return None
    rows, shapes = compiled
    checked = check(rows)
    dtypes, type_names = (kind.tolist() for kind in kinds)
    return _tables.entry_columns(rows, checked, shapes, dtypes, type_names, files, numbers, start, columns)


def first_overlap(extents: np.ndarray, order: np.ndarray) -> tuple[int, int] | None:
    """The first two entries with a size (``extents``: 3 C-contiguous rows of int64, shard, offset, size) that follow
    each other in ``order`` (all entries sorted by shard, then offset, stably) and whose bytes overlap; None where none
    do."""
    if _tables is not None:
        return _tables.first_overlap(extents, order)
    stored = order[extents[2, order] > 0]
    shard, offset, size = extents[:, stored]
    clash = np.flatnonzero((shard[1:] == shard[:-1]) & (offset[1:] < (offset + size)[:-1]))
    return (int(stored[clash[0]]), int(stored[clash[0] + 1])) if len(clash) else None


def decode_entries(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> Entries:
    """The entries held in ``data[starts[i]:ends[i]]`` (``data`` uint8, bounds int64) that this decoder takes,
    decoded with numpy a field at a time across all of them: where the package was built without the compiled
    decoder, or ``entry_columns``' bounds do not fit ``data``. (The tests hold the two decoders equal.)

    Reads up to 16 bytes past an entry's end: ``data`` is padded first if it ends sooner.
    """
    n = len(starts)
    if len(data) < int(ends.max(initial=0)) + _PADDING:
        data = np.concatenate([data, np.zeros(_PADDING, np.uint8)])
    windows = byte_windows(data)
    decoded = np.ones(n, bool)
    at = starts.copy()  # each entry's next field
    values: dict[int, np.ndarray] = {}
    shape_at, shape_end = np.zeros(n, np.int64), np.zeros(n, np.int64)
    fields = _FIELDS
    # TensorFlow starts every entry with a one-byte dtype and a shape of under 128 bytes,
    # 08 DT 12 LL: when all do, one window reads both fields.
    window = windows[at]
    if n and not ((window & _DTYPE_AND_SHAPE_MASK) != _DTYPE_AND_SHAPE).any():
        values[1] = ((window >> np.uint64(8)) & _BYTE).astype(np.int64)
        shape_at = at + 4
        shape_end = shape_at + ((window >> np.uint64(24)) & _BYTE).astype(np.int64)
        at = shape_end
        fields = _FIELDS[2:]
        if (at > ends).any():
            decoded &= at <= ends
            at = np.minimum(at, ends)
    for number, tag in fields:
        window = windows[at]
        present = ((window & _BYTE) == tag) & (at < ends)
        everywhere = bool(present.all())  # as dtype, shape, size and crc32c usually are
        if not everywhere and not present.any():
            continue
        after = window >> np.uint64(8)
        length: np.ndarray | int
        if number == 6:
            value, length = (after & _LOW_32).astype(np.int64), 4
        else:
            value, length = decode_varints(after, 7)
            if not length.all():
                decoded &= ~present | (length > 0)
        following = at + 1 + length
        if number == 2:
            shape_end = following + value
            shape_at, shape_end = (following, shape_end) if everywhere else (following * present, shape_end * present)
            following = shape_end
        else:
            values[number] = value if everywhere else value * present
        at = following if everywhere else np.where(present, following, at)
        if (at > ends).any():  # a length running past the entry
            decoded &= at <= ends
            at = np.minimum(at, ends)  # keeps every later window inside the data
    decoded &= at == ends  # anything left over (slices, unknown or repeated fields) is protobuf's
    rank, dims = _decode_shapes(windows, shape_at, shape_end, decoded)
    dtype, shard, offset, size, crc32c = (values.get(number, np.zeros(n, np.int64)) for number in (1, 3, 4, 5, 6))
    return Entries(decoded, dtype, shard, offset, size, crc32c, rank, dims)


def _decode_shapes(
    windows: np.ndarray, at: np.ndarray, end: np.ndarray, decoded: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Ranks and dims of the shapes in ``[at, end)``; clears ``decoded`` where one is not plain."""
    n = len(at)
    rank = np.zeros(n, np.int64)
    columns: list[np.ndarray] = []  # one per axis, made when some shape reaches it
    going = np.flatnonzero(decoded & (at < end))
    while len(going):
        if len(columns) == MAX_RANK:
            decoded[going] = False
            break
        pos = at[going]
        window = windows[pos]  # dim tag, length, size tag, size: 12 LL 08 ...
        length = (window >> np.uint64(8)) & _BYTE  # a dim holds at most 11 bytes: its length is one byte
        empty = length == 0  # a dim of size 0
        size, size_length = decode_varints(window >> np.uint64(24), 5)
        if not (empty | (size_length > 0)).all():  # a size of 2**35 or more: look further
            size, size_length = decode_varints(windows[pos + 3], 7)
        plain = ((window & _BYTE) == _DIM_TAG) & (
            empty | ((((window >> np.uint64(16)) & _BYTE) == _DIM_SIZE_TAG) & (size_length + 1 == length))
        )
        plain &= empty | (size_length > 0)
        following = pos + 2 + length.astype(np.int64)
        shape_end = end[going]
        plain &= following <= shape_end
        decoded[going[~plain]] = False
        column = np.ones(n, np.int64)
        column[going] = np.where(empty, 0, size)
        columns.append(column)
        rank[going] = len(columns)
        at[going] = following
        going = going[plain & (following < shape_end)]
    return rank, np.stack(columns, axis=1) if columns else np.ones((n, 0), np.int64)


class Header(NamedTuple):
    """The fields of ``BundleHeaderProto`` a reader checks."""

    num_shards: int
    endianness: int
    min_consumer: int
    bad_consumers: tuple[int, ...]


def decode_header(value: bytes) -> Header | None:
    """A ``BundleHeaderProto`` as TensorFlow writes it, by hand; None for anything else.

    ``num_shards`` (1), ``endianness`` (2), ``version`` (3: ``producer`` 1,
    ``min_consumer`` 2, ``bad_consumers`` 3, packed or not). Decoding this one message
    by hand spares the command line importing the protobuf runtime (about 10 ms of
    every start) when every entry is plain; None hands the header to protobuf.
    """
    fields = _varint_fields(value)
    if fields is None or any(number not in (1, 2, 3) for number, _ in fields):
        return None
    values = dict(fields)
    version = values.get(3, b"")
    version_fields = _varint_fields(version) if isinstance(version, bytes) else None
    if version_fields is None or not all(isinstance(v, int) for n, v in fields if n in (1, 2)):
        return None
    bad: list[int] = []
    min_consumer = 0
    for number, field in version_fields:
        if number == 2 and isinstance(field, int):
            min_consumer = field
        elif number == 3 and isinstance(field, int):
            bad.append(field)
        elif number == 3 and isinstance(field, bytes):  # packed
            packed = _varints(field)
            if packed is None:
                return None
            bad += packed
        elif number != 1:
            return None
    return Header(_int32(values.get(1, 0)), _int32(values.get(2, 0)), _int32(min_consumer), tuple(map(_int32, bad)))


def _int32(value: object) -> int:
    """A proto int32 decoded from its varint (negative values are sign-extended to 64 bits)."""
    assert isinstance(value, int)
    return value - (1 << 64) if value >= 1 << 63 else value


def _varints(data: bytes) -> list[int] | None:
    values = []
    pos = 0
    while pos < len(data):
        value, pos = _varint(data, pos)
        if value is None:
            return None
        values.append(value)
    return values


def _varint(data: bytes, pos: int) -> tuple[int | None, int]:
    try:
        return read_varint(data, pos, "bundle header")
    except CorruptCheckpointError:  # truncated or overlong: protobuf will say which
        return None, pos


def _varint_fields(data: bytes) -> list[tuple[int, int | bytes]] | None:
    """(field number, value) of a message holding only varint and length-delimited fields."""
    fields: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        tag, pos = _varint(data, pos)
        if tag is None:
            return None
        value, pos = _varint(data, pos)
        if value is None or tag & 7 not in (0, 2):
            return None
        if tag & 7 == 2:
            if pos + value > len(data):
                return None
            fields.append((tag >> 3, bytes(data[pos : pos + value])))
            pos += value
        else:
            fields.append((tag >> 3, value))
    return fields
