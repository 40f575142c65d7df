"""The LevelDB-style sorted table of TensorFlow's ``.index`` files.

Layout (``tensorflow/core/lib/io/format.cc``, google/leveldb ``table/format.h``)::

    data block 0 | trailer | ... | data block n | trailer
    metaindex block | trailer | index block | trailer | footer (48 bytes)

- Footer: metaindex BlockHandle, index BlockHandle (each a varint64 offset and a
  varint64 size), zero padding to 40 bytes, then the magic number 0xdb4775248b80fb57
  as two little-endian uint32, low word first.
- Trailer (5 bytes after each block): compression type (0 none, 1 snappy) and the
  little-endian masked CRC32C of the block contents followed by the type byte.
- Block: entries, then uint32 LE restart offsets, then uint32 LE ``num_restarts``.
  An entry is varint32 ``shared``, varint32 ``non_shared``, varint32 ``value_length``,
  the ``non_shared`` key bytes, the value bytes; its key is the previous key's first
  ``shared`` bytes plus the new ones.
- The index block maps a separator key (>= the last key of a block, < the first key of
  the next) to the BlockHandle of each data block. The metaindex is empty in TF.

A reader must refuse: a wrong magic, a handle outside the file, a CRC mismatch, an
unknown compression type, ``num_restarts`` larger than the block can hold, an entry
running past the restart array, a ``shared`` longer than the previous key, and keys
that are not strictly increasing.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import numpy as np

from weightscope._crc32c import crc32c
from weightscope.errors import (
    ChecksumMismatchError,
    CorruptCheckpointError,
    TruncatedFileError,
    UnsupportedFormatError,
)
from weightscope.limits import Budget, Limits
from weightscope.sources import AnySource

try:
    from weightscope import _tables
except ImportError:  # built without a C compiler: numpy's lockstep parse, and the entry-by-entry one
    _tables = None  # type: ignore[assignment]

MAGIC = 0xDB4775248B80FB57
MAGIC_BYTES = struct.pack("<Q", MAGIC)  # 57 fb 80 8b 24 75 47 db, the file's last 8 bytes
FOOTER_SIZE = 48
TRAILER_SIZE = 5
NO_COMPRESSION = 0
SNAPPY_COMPRESSION = 1
SNAPPY_MAX_RATIO = 22
_MASK_DELTA = 0xA282EAD8
# Memory charged per key (``weightscope.limits.Budget``): decoded as UTF-8 with
# surrogateescape, a key takes up to 2 bytes a byte, plus its ``str`` and list slot.
# Keys share prefixes, so a few bytes per entry can describe keys growing by one byte
# each (``a``, ``aa``, ``aaa``...: 320 KB of index, 1.4 GB of keys): charged, they are
# refused at the cap instead.
_KEY_BYTE_COST = 2
_KEY_COST = 80
_U32 = struct.Struct("<I")


def mask_crc(crc: int) -> int:
    """LevelDB's CRC masking, also used for TensorFlow's tensor checksums."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def read_varint(data: bytes | memoryview, pos: int, what: str) -> tuple[int, int]:
    """Decode a base-128 varint at ``pos``; returns (value, position after it)."""
    result = 0
    shift = 0
    end = len(data)
    while True:
        if pos >= end:
            raise TruncatedFileError(f"varint in {what} runs past its end")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            if shift == 63 and byte > 1:
                raise CorruptCheckpointError(f"varint in {what} is over 64 bits")
            return result, pos
        shift += 7
        if shift > 63:
            raise CorruptCheckpointError(f"varint in {what} is longer than 10 bytes")


def read_block(source: AnySource, offset: int, size: int, what: str) -> bytes | memoryview:
    """The checked, decompressed contents of the block at ``offset``.

    An uncompressed block is a view of ``source``, valid while it is open: no copy.
    """
    raw = source.read(offset, size + TRAILER_SIZE, what)
    contents = raw[:size]
    compression = raw[size]
    (stored,) = _U32.unpack_from(raw, size + 1)
    actual = mask_crc(crc32c(raw[size : size + 1], crc32c(contents)))
    if stored != actual:
        raise ChecksumMismatchError(
            f"{source.path}: {what} at {offset} is damaged: block checksum {stored:#010x}, computed {actual:#010x}"
        )
    if compression == NO_COMPRESSION:
        return contents
    if compression == SNAPPY_COMPRESSION:
        return _snappy_decompress(contents, source, offset, what)
    raise UnsupportedFormatError(
        f"{source.path}: {what} at {offset} uses compression type {compression}; "
        "only none (0) and snappy (1) exist in TensorFlow tables"
    )


def _snappy_decompress(contents: memoryview, source: AnySource, offset: int, what: str) -> bytes:
    import cramjam  # only snappy-compressed tables pay for the import

    length, _ = read_varint(contents, 0, what)
    # Snappy's densest element is a 3-byte copy of 64 bytes: no block inflates more than
    # 22-fold. Refuse a longer claim before the decompressor allocates it.
    if length > SNAPPY_MAX_RATIO * len(contents):
        raise CorruptCheckpointError(
            f"{source.path}: {what} at {offset} claims {length} bytes uncompressed, "
            f"more than snappy makes of {len(contents)}"
        )
    try:
        return bytes(cramjam.snappy.decompress_raw(bytes(contents)))
    except Exception as error:  # cramjam raises its own DecompressionError
        raise CorruptCheckpointError(f"{source.path}: {what} at {offset} is not valid snappy data ({error})") from None


def iter_block(block: bytes | memoryview, what: str, budget: Budget | None = None) -> Iterator[tuple[bytes, bytes]]:
    """The (key, value) pairs of one block, keys made whole from their shared prefixes.

    Each key is charged to ``budget`` as it is made, if one is given.
    """
    size = len(block)
    if size < 4:
        raise CorruptCheckpointError(f"{what} is {size} bytes, too short for a block")
    (num_restarts,) = _U32.unpack_from(block, size - 4)
    if num_restarts > (size - 4) // 4:
        raise CorruptCheckpointError(f"{what} claims {num_restarts} restart points, more than its {size} bytes hold")
    limit = size - 4 - 4 * num_restarts
    pos = 0
    key = b""
    while pos < limit:
        # Nearly every varint here is one byte; decode that case inline.
        shared = block[pos]
        if shared < 0x80 and block[pos + 1] < 0x80 and pos + 2 < limit and block[pos + 2] < 0x80:
            non_shared = block[pos + 1]
            value_length = block[pos + 2]
            pos += 3
        else:
            shared, pos = read_varint(block, pos, what)
            non_shared, pos = read_varint(block, pos, what)
            value_length, pos = read_varint(block, pos, what)
        end = pos + non_shared + value_length
        if shared > len(key) or end > limit:
            raise CorruptCheckpointError(f"{what}: entry at {pos} runs past the block")
        if budget is not None:
            budget.spend(_KEY_BYTE_COST * (shared + non_shared) + _KEY_COST, "decoding the index's keys")
        key = key[:shared] + block[pos : pos + non_shared]
        yield key, bytes(block[pos + non_shared : end])
        pos = end


def _read_handle(data: bytes | memoryview, pos: int, what: str) -> tuple[int, int, int]:
    offset, pos = read_varint(data, pos, what)
    size, pos = read_varint(data, pos, what)
    return offset, size, pos


class Table(NamedTuple):  # (not a dataclass: its decorator costs the command line ~0.4 ms a class)
    """Every entry of a table, in order: its key, and where its value lies in ``data``."""

    keys: list[str]  # decoded as UTF-8 with surrogateescape: encode the same way for the exact bytes
    data: np.ndarray  # uint8, with PADDING zero bytes after the last value
    starts: np.ndarray  # int64, one per key: value i is data[starts[i]:ends[i]]
    ends: np.ndarray

    def value(self, index: int) -> bytes:
        return self.data[self.starts[index] : self.ends[index]].tobytes()


# A data block as the index names it: its separator key, its offset, its checked contents.
_Block = tuple[bytes, int, bytes | memoryview]


def _blocks(source: AnySource, budget: Budget) -> Iterator[_Block]:
    """The data blocks of the table in ``source``, in order, each read and checked when reached."""
    if source.size < FOOTER_SIZE:
        raise TruncatedFileError(f"{source.path}: {source.size} bytes, too short for a table footer of {FOOTER_SIZE}")
    footer = source.read(source.size - FOOTER_SIZE, FOOTER_SIZE, "footer")
    low, high = struct.unpack_from("<II", footer, 40)
    if (high << 32) | low != MAGIC:
        raise CorruptCheckpointError(
            f"{source.path}: not a TensorFlow checkpoint index (bad table magic "
            f"{bytes(footer[40:]).hex()}, expected 57fb808b247547db)"
        )
    _, _, pos = _read_handle(footer, 0, "footer")  # the metaindex is always empty
    index_offset, index_size, _ = _read_handle(footer, pos, "footer")
    index = read_block(source, index_offset, index_size, "index block")
    for separator, handle in iter_block(index, f"{source.path}: index block", budget):
        offset, size, _ = _read_handle(handle, 0, "block handle")
        yield separator, offset, read_block(source, offset, size, "data block")


def _entries(source: AnySource, blocks: Iterable[_Block], budget: Budget) -> Iterator[tuple[bytes, bytes]]:
    previous: bytes | None = None
    for separator, offset, block in blocks:
        what = f"data block at {offset}"
        last = None
        for key, value in iter_block(block, f"{source.path}: {what}", budget):
            if previous is not None and key <= previous:
                raise CorruptCheckpointError(f"{source.path}: keys out of order in {what} ({key!r} after {previous!r})")
            previous = last = key
            yield key, value
        if last is not None and last > separator:
            raise CorruptCheckpointError(f"{source.path}: {what} holds keys beyond its index separator")


def _budget(source: AnySource, budget: Budget | None) -> Budget:
    return Budget(Limits.for_size(source.size), source.path) if budget is None else budget


def iter_table(source: AnySource, budget: Budget | None = None) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) of the table in ``source``, in order, checked on the way, entry by entry.

    Keys are charged to ``budget`` (by default, the caps for ``source``'s size).
    """
    budget = _budget(source, budget)
    return _entries(source, _blocks(source, budget), budget)


def read_table(source: AnySource, budget: Budget | None = None) -> Table:
    """The whole table in ``source``, every block checked, its keys charged to ``budget`` (by default, the caps for
    ``source``'s size): a ``LimitExceededError`` past them.

    The blocks are parsed entry by entry in compiled code (``_parse_compiled``) where the package was built with it;
    else, laid out the usual way (restart points at entry boundaries, prefixes shared only within a restart interval,
    keys in order), by ``_parse_blocks`` with numpy, all restart intervals in lockstep. Otherwise as ``iter_table``
    reads them, entry by entry, which is also what raises the precise error for a table that breaks the format.
    """
    budget = _budget(source, budget)
    blocks = list(_blocks(source, budget))
    parsed = _parse_compiled(blocks, budget)
    parsed = _parse_blocks(blocks, budget) if parsed is None else parsed
    if parsed is not None:
        return parsed
    keys: list[str] = []
    values: list[bytes] = []
    for key, value in _entries(source, blocks, budget):
        keys.append(key.decode("utf-8", "surrogateescape"))
        values.append(value)
    lengths = np.fromiter(map(len, values), np.int64, len(values))
    ends = np.cumsum(lengths)
    return Table(keys, np.frombuffer(b"".join([*values, bytes(PADDING)]), np.uint8), ends - lengths, ends)


def _parse_compiled(blocks: list[_Block], budget: Budget) -> Table | None:
    """Every block entry by entry, as ``iter_block`` parses them, in compiled code (``weightscope._tables``); None
    where it is not built, or where anything breaks the format or the keys would pass the cap (then the paths after it
    take the table, and raise the precise error)."""
    if _tables is None:
        return None
    parsed = _tables.parse_blocks(blocks, budget.limits.memory - budget.spent)
    if parsed is None:
        return None
    keys, bounds, cost = parsed
    budget.spend(cost, "decoding the index's keys")
    joined = np.frombuffer(b"".join([*(block for _, _, block in blocks), bytes(PADDING)]), np.uint8)
    starts, ends = np.frombuffer(bounds, np.int64).reshape(2, len(keys))
    return Table(keys, joined, starts, ends)


# -- the vectorised parse ------------------------------------------------------------------
# ``read_table`` takes the vectorised parse below where it can. Measured on the 20,000-entry
# index TensorFlow writes for ``bench/bench_tensorflow.py`` (3 data blocks): entry by entry
# (``iter_block``, keys decoded one by one) about 12 ms, vectorised about 3.5 ms.
PADDING = 32  # zero bytes after a table's data: 8-byte windows read past any position in it
_MAX_INTERVAL = 128  # entries between restart points followed in lockstep (TF writes 16)
_MAX_KEY_BYTES = 1 << 26  # entries × (longest key + 9): beyond it, parse entry by entry
_SEPARATOR = 0x0A  # joins keys for decoding: a byte tensor names hardly ever hold
_NEWLINE = chr(_SEPARATOR)
# Bytes of a temporary array worth staying under: glibc's malloc serves smaller ones from
# its heap, and maps (and page-faults in) larger ones anew each time, 4-6 times slower.
_SMALL = 1 << 16
_BYTE = np.uint64(0xFF)
_CONTINUES = np.uint64(0x80)
_LOW_7 = np.uint64(0x7F)
_STOP_BITS = np.uint64(0x8080808080808080)
_PAYLOAD_BITS = np.uint64(0x7F7F7F7F7F7F7F7F)
_ONE_BYTE_HEADERS = np.uint64(0x808080)  # shared, non_shared, value_length all one byte
# One step of the lockstep parse, for the intervals still going: their index, and each
# one's entry's shared, non_shared, key length, key position, value position and value end.
_Step = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def byte_windows(data: np.ndarray) -> np.ndarray:
    """For every byte offset of ``data`` (uint8), the little-endian uint64 of the 8 bytes there.

    An unaligned view, no copy: ``windows[positions]`` gathers 8 bytes per position.
    """
    return np.ndarray(shape=(max(len(data) - 7, 0),), dtype="<u8", buffer=data, strides=(1,))


def decode_varints(windows: np.ndarray, size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """The varints that start at the low byte of each uint64 window: values and lengths (int64).

    Only the low ``size`` bytes of a window count (a window shifted right holds fewer). A varint that does not end
    within them has length 0, and a junk value.
    """
    if not (windows & _CONTINUES).any():  # all one byte long, as small numbers are
        return (windows & _LOW_7).astype(np.int64), np.ones(len(windows), np.int64)
    stops = ~windows & (_STOP_BITS >> np.uint64(64 - 8 * size))
    stop = stops & (~stops + np.uint64(1))  # the lowest stop bit: bit 7 of the last byte
    lengths = (np.frexp(stop.astype(np.float64))[1] >> 3).astype(np.int64)  # 2**(8k + 7) -> k + 1; 0 -> 0
    bits = windows & (stop + (stop - np.uint64(1))) & _PAYLOAD_BITS
    # Squeeze the 7-bit groups together: pairs into 14 bits, then 28, then 56.
    bits = (bits & np.uint64(0x007F007F007F007F)) | ((bits & np.uint64(0x7F007F007F007F00)) >> np.uint64(1))
    bits = (bits & np.uint64(0x00003FFF00003FFF)) | ((bits & np.uint64(0x3FFF00003FFF0000)) >> np.uint64(2))
    bits = (bits & np.uint64(0x000000000FFFFFFF)) | ((bits & np.uint64(0x0FFFFFFF00000000)) >> np.uint64(4))
    return bits.astype(np.int64), lengths


def _parse_blocks(blocks: list[_Block], budget: Budget) -> Table | None:
    """Every block at once with numpy; None where the blocks are not laid out the usual way.

    Each restart interval is a chain of entries that starts with a whole key (shared 0) and ends exactly at the next
    restart point. The intervals of all blocks are followed in lockstep, one entry of each per step (``_follow``), then
    their keys are rebuilt a step at a time, checked and decoded at once (``_keys``).
    """
    layout = _intervals(blocks)
    if layout is None:
        return None
    data, interval_starts, interval_ends, last_intervals = layout
    if not len(interval_starts):
        empty = np.zeros(0, np.int64)
        return Table([], data, empty, empty)
    windows = byte_windows(data)
    steps = _follow(windows, interval_starts, interval_ends)
    if steps is None:
        return None
    return _keys(blocks, last_intervals, steps, data, windows, budget)


def _intervals(blocks: list[_Block]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]] | None:
    """The blocks' contents joined and padded, and where their restart intervals lie.

    Returns the data, each interval's start and end in it, and each block's last interval (-1 for a block without
    entries); None where a restart array is not the usual one.
    """
    contents: list[bytes | memoryview] = []
    starts: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    last_intervals: list[int] = []
    num_intervals = 0
    base = 0
    for _, _, block in blocks:
        size = len(block)
        if size < 4:
            return None
        (num_restarts,) = _U32.unpack_from(block, size - 4)
        if not 0 < num_restarts <= (size - 4) // 4:
            return None
        limit = size - 4 - 4 * num_restarts
        if limit:
            restarts = np.frombuffer(block, "<u4", num_restarts, limit).astype(np.int64)
            if restarts[0] != 0 or restarts[-1] >= limit or (np.diff(restarts) <= 0).any():
                return None
            starts.append(restarts + base)
            ends.append(np.append(restarts[1:], limit) + base)
            num_intervals += num_restarts
        last_intervals.append(num_intervals - 1 if limit else -1)
        contents.append(block)
        base += size
    data = np.frombuffer(b"".join([*contents, bytes(PADDING)]), np.uint8)
    empty = np.zeros(0, np.int64)
    return data, np.concatenate(starts) if starts else empty, np.concatenate(ends) if ends else empty, last_intervals


def _follow(windows: np.ndarray, pos: np.ndarray, end: np.ndarray) -> list[_Step] | None:
    """Step k: (interval, shared, non_shared, key length, key_at, value_at, value_end) of each interval's k-th entry."""
    interval = np.arange(len(pos))
    known = np.zeros(len(pos), np.int64)  # the length of each interval's previous key
    steps: list[_Step] = []
    while len(pos):
        if len(steps) == _MAX_INTERVAL:
            return None
        window = windows[pos]
        if not (window & _ONE_BYTE_HEADERS).any():
            header = window.view(np.uint8).reshape(-1, 8)  # little-endian: byte i of each window in column i
            shared, non_shared, value_length = (header[:, i].astype(np.int64) for i in range(3))
            key_at = pos + 3
        else:
            shared, length1 = decode_varints(window)
            non_shared, length2 = decode_varints(windows[pos + length1])
            value_length, length3 = decode_varints(windows[pos + length1 + length2])
            if not (length1.all() and length2.all() and length3.all()):
                return None
            key_at = pos + length1 + length2 + length3
        value_at = key_at + non_shared
        value_end = value_at + value_length
        if (value_end > end).any() or (shared > known).any():
            return None
        known = shared + non_shared
        steps.append((interval, shared, non_shared, known, key_at, value_at, value_end))
        going = value_end < end
        pos = value_end
        if not going.all():
            pos, end, interval, known = pos[going], end[going], interval[going], known[going]
    return steps


def _keys(
    blocks: list[_Block],
    last_intervals: list[int],
    steps: list[_Step],
    data: np.ndarray,
    windows: np.ndarray,
    budget: Budget,
) -> Table | None:
    """The table, its keys rebuilt, checked and decoded; None if unusual.

    Each interval's key so far lives in a row of ``current``: a step writes its new bytes over it 8 at a time (bytes
    past a key are junk) and copies the step's keys to their rows of ``rows``, in table order (entry k of interval i is
    entry ``first[i] + k``). The keys are then checked and decoded all at once: a step's numpy calls, not its entries,
    are most of a small index's time. A key shares ``shared`` bytes with the one before it and the next byte decides
    their order; LevelDB's writer shares the whole common prefix, so an equal byte means an unusual writer (None: parse
    entry by entry). Keys of neighbouring intervals, and each block's last key and its separator, are compared whole.
    """
    num_intervals = len(steps[0][0])
    width = max(int(step[3].max()) for step in steps) + 9  # a separator, and 8-byte writes
    counts = np.zeros(num_intervals, np.int64)
    for step in steps:
        counts[step[0]] += 1
    first = np.cumsum(counts) - counts
    n = int(counts.sum())
    if n * width > _MAX_KEY_BYTES:
        return None
    key_bytes = sum(int(step[3].sum()) for step in steps)
    budget.spend(_KEY_BYTE_COST * key_bytes + _KEY_COST * n, "decoding the index's keys")
    current = np.empty((num_intervals, width), np.uint8)
    current_windows = byte_windows(current.reshape(-1))
    rows = np.empty((n, width), np.uint8)
    places = []
    for k, (interval, shared, non_shared, _, key_at, _, _) in enumerate(steps):
        to = interval * width + shared
        current_windows[to] = windows[key_at]
        for eight in range(8, int(non_shared.max()), 8):
            longer = non_shared > eight
            current_windows[to[longer] + eight] = windows[key_at[longer] + eight]
        place = first[interval] + k
        rows[place] = current if len(interval) == num_intervals else current[interval]
        places.append(place)
    columns = np.empty((6, n), np.int64)  # the steps' columns in table order
    place = np.concatenate(places)
    for row, column in zip(columns, list(zip(*steps, strict=True))[1:], strict=True):
        row[place] = np.concatenate(column)
    shared, non_shared, lengths, key_at, value_at, value_end = columns
    # Each key against the one before it in its interval (every entry but an interval's first).
    later = np.ones(n, bool)
    later[first] = False
    entry = np.flatnonzero(later)
    whole = shared[entry] == lengths[entry - 1]  # it shares all of the key before it
    after = data[key_at[entry]] > rows[entry - 1, shared[entry]]
    if not ((non_shared[entry] > 0) & (whole | after)).all():
        return None
    last = first + counts - 1
    if not _increasing(rows[last[:-1]], lengths[last[:-1]], rows[first[1:]], lengths[first[1:]]):
        return None
    for (separator, _, _), final in zip(blocks, last_intervals, strict=True):  # each block's last interval
        if final >= 0 and rows[last[final], : lengths[last[final]]].tobytes() > separator:
            return None
    return Table(_decode_keys(rows, lengths), data, value_at, value_end)


def _increasing(before: np.ndarray, before_lengths: np.ndarray, after: np.ndarray, after_lengths: np.ndarray) -> bool:
    """Whether each key in ``after`` is greater than the one in ``before`` (rows of bytes).

    Decided by the first differing byte, else by the length; bytes past a key's length may differ, but only after its
    last byte, where the length decides.
    """
    differ = before != after
    at = differ.argmax(axis=1)
    pairs = np.arange(len(before))
    by_byte = differ[pairs, at] & (at < np.minimum(before_lengths, after_lengths))
    return bool(np.where(by_byte, after[pairs, at] > before[pairs, at], after_lengths > before_lengths).all())


def _decode_keys(keys: np.ndarray, lengths: np.ndarray) -> list[str]:
    """The rows of ``keys``, each ``lengths`` bytes long, as ``str``.

    The keys are joined by newlines (written over the byte after each), decoded in one call per chunk of rows, and split
    again. An ASCII byte always decodes to itself and ends any broken UTF-8 sequence before it, so each key decodes
    exactly as it would alone; a key holding a newline itself shows in the count, and then the keys are decoded one by
    one.
    """
    keys[np.arange(len(keys)), lengths] = _SEPARATOR
    columns = np.arange(keys.shape[1], dtype=np.int32)
    rows = max(_SMALL // keys.shape[1], 1)
    names: list[str] = []
    for start in range(0, len(keys), rows):
        within = columns <= lengths[start : start + rows].astype(np.int32)[:, None]  # int32: quicker
        names += str(keys[start : start + rows][within].data, "utf-8", "surrogateescape").split(_NEWLINE)
        names.pop()  # what follows the last separator
    if len(names) == len(keys):
        return names
    return [keys[i, :length].tobytes().decode("utf-8", "surrogateescape") for i, length in enumerate(lengths.tolist())]


# -- writing ---------------------------------------------------------------------------
# TensorFlow's table options for bundles (core/lib/io/table_options.h, tensor_bundle.cc):
# 256 KiB blocks, restart interval 16 in data blocks and 1 in the index block, no
# compression. Keeping them makes our index files byte-identical to TensorFlow's.
BLOCK_SIZE = 256 * 1024
DATA_RESTART_INTERVAL = 16
INDEX_RESTART_INTERVAL = 1


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class _BlockBuilder:
    def __init__(self, restart_interval: int) -> None:
        self.restart_interval = restart_interval
        self.buffer = bytearray()
        self.restarts = [0]
        self.counter = 0
        self.last_key = b""

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self.counter < self.restart_interval:
            limit = min(len(self.last_key), len(key))
            while shared < limit and self.last_key[shared] == key[shared]:
                shared += 1
        else:
            self.restarts.append(len(self.buffer))
            self.counter = 0
        self.buffer += encode_varint(shared) + encode_varint(len(key) - shared) + encode_varint(len(value))
        self.buffer += key[shared:] + value
        self.last_key = key
        self.counter += 1

    def size_estimate(self) -> int:
        return len(self.buffer) + 4 * len(self.restarts) + 4

    def finish(self) -> bytes:
        restarts = b"".join(_U32.pack(offset) for offset in self.restarts)
        return bytes(self.buffer) + restarts + _U32.pack(len(self.restarts))


def _shortest_separator(start: bytes, limit: bytes) -> bytes:
    """LevelDB's bytewise FindShortestSeparator, as TensorFlow's table builder uses it."""
    common = 0
    while common < min(len(start), len(limit)) and start[common] == limit[common]:
        common += 1
    if common < min(len(start), len(limit)):
        byte = start[common]
        if byte < 0xFF and byte + 1 < limit[common]:
            return start[:common] + bytes([byte + 1])
    return start


def _short_successor(key: bytes) -> bytes:
    """LevelDB's bytewise FindShortSuccessor."""
    for i, byte in enumerate(key):
        if byte != 0xFF:
            return key[:i] + bytes([byte + 1])
    return key


def build_table(entries: Iterator[tuple[bytes, bytes]] | list[tuple[bytes, bytes]], *, snappy: bool = False) -> bytes:
    """A whole table holding ``entries`` (keys strictly increasing), as TensorFlow writes it.

    ``snappy`` compresses the blocks, as LevelDB tables allow and TensorFlow's own bundle
    writer never does (readers must still accept them).
    """
    compression = SNAPPY_COMPRESSION if snappy else NO_COMPRESSION
    out = bytearray()
    index = _BlockBuilder(INDEX_RESTART_INTERVAL)
    block = _BlockBuilder(DATA_RESTART_INTERVAL)
    pending: tuple[int, int] | None = None  # handle of the last flushed data block

    def write_block(contents: bytes) -> tuple[int, int]:
        if snappy:
            import cramjam

            contents = bytes(cramjam.snappy.compress_raw(contents))
        offset = len(out)
        out.extend(contents)
        out.append(compression)
        out.extend(_U32.pack(mask_crc(crc32c(bytes([compression]), crc32c(contents)))))
        return offset, len(contents)

    def handle_bytes(handle: tuple[int, int]) -> bytes:
        return encode_varint(handle[0]) + encode_varint(handle[1])

    last_key = b""
    for key, value in entries:
        if pending is not None:
            index.add(_shortest_separator(last_key, key), handle_bytes(pending))
            pending = None
        block.add(key, value)
        last_key = key
        if block.size_estimate() >= BLOCK_SIZE:
            pending = write_block(block.finish())
            block = _BlockBuilder(DATA_RESTART_INTERVAL)
    if block.counter:
        pending = write_block(block.finish())
    if pending is not None:
        index.add(_short_successor(last_key), handle_bytes(pending))
    metaindex_handle = write_block(_BlockBuilder(DATA_RESTART_INTERVAL).finish())
    index_handle = write_block(index.finish())
    footer = handle_bytes(metaindex_handle) + handle_bytes(index_handle)
    out.extend(footer.ljust(FOOTER_SIZE - 8, b"\x00"))
    out.extend(MAGIC_BYTES)
    return bytes(out)
