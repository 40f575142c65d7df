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
from collections.abc import Iterator

from weightscope._crc32c import crc32c
from weightscope.errors import (
    ChecksumMismatchError,
    CorruptCheckpointError,
    TruncatedFileError,
    UnsupportedFormatError,
)
from weightscope.sources import FileSource

MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
TRAILER_SIZE = 5
NO_COMPRESSION = 0
SNAPPY_COMPRESSION = 1
_MASK_DELTA = 0xA282EAD8
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
            return result, pos
        shift += 7
        if shift > 63:
            raise CorruptCheckpointError(f"varint in {what} is longer than 10 bytes")


def read_block(source: FileSource, offset: int, size: int, what: str) -> bytes:
    """The checked, decompressed contents of the block at ``offset``."""
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
        return bytes(contents)
    if compression == SNAPPY_COMPRESSION:
        return _snappy_decompress(contents, source, offset, what)
    raise UnsupportedFormatError(
        f"{source.path}: {what} at {offset} uses compression type {compression}; "
        "only none (0) and snappy (1) exist in TensorFlow tables"
    )


def _snappy_decompress(contents: memoryview, source: FileSource, offset: int, what: str) -> bytes:
    import cramjam  # only snappy-compressed tables pay for the import

    length, _ = read_varint(contents, 0, what)
    # A block can never legitimately decompress to more than the whole index would
    # hold; refuse before allocating so a crafted length cannot exhaust memory.
    if length > 64 * max(source.size, 1 << 20):
        raise CorruptCheckpointError(f"{source.path}: {what} at {offset} claims {length} bytes uncompressed")
    try:
        return bytes(cramjam.snappy.decompress_raw(bytes(contents)))
    except Exception as error:  # cramjam raises its own DecompressionError
        raise CorruptCheckpointError(f"{source.path}: {what} at {offset} is not valid snappy data ({error})") from None


def iter_block(block: bytes, what: str) -> Iterator[tuple[bytes, bytes]]:
    """The (key, value) pairs of one block, keys made whole from their shared prefixes."""
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
        key = key[:shared] + block[pos : pos + non_shared]
        yield key, block[pos + non_shared : end]
        pos = end


def _read_handle(data: bytes | memoryview, pos: int, what: str) -> tuple[int, int, int]:
    offset, pos = read_varint(data, pos, what)
    size, pos = read_varint(data, pos, what)
    return offset, size, pos


def iter_table(source: FileSource) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) of the table in ``source``, in order, checked on the way."""
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
    previous: bytes | None = None
    for separator, handle in iter_block(index, f"{source.path}: index block"):
        offset, size, _ = _read_handle(handle, 0, "block handle")
        block = read_block(source, offset, size, "data block")
        what = f"data block at {offset}"
        last = None
        for key, value in iter_block(block, f"{source.path}: {what}"):
            if previous is not None and key <= previous:
                raise CorruptCheckpointError(f"{source.path}: keys out of order in {what} ({key!r} after {previous!r})")
            previous = last = key
            yield key, value
        if last is not None and last > separator:
            raise CorruptCheckpointError(f"{source.path}: {what} holds keys beyond its index separator")


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


def build_table(entries: Iterator[tuple[bytes, bytes]] | list[tuple[bytes, bytes]]) -> bytes:
    """A whole table holding ``entries`` (keys strictly increasing), as TensorFlow writes it."""
    out = bytearray()
    index = _BlockBuilder(INDEX_RESTART_INTERVAL)
    block = _BlockBuilder(DATA_RESTART_INTERVAL)
    pending: tuple[int, int] | None = None  # handle of the last flushed data block

    def write_block(contents: bytes) -> tuple[int, int]:
        offset = len(out)
        out.extend(contents)
        out.append(NO_COMPRESSION)
        out.extend(_U32.pack(mask_crc(crc32c(bytes([NO_COMPRESSION]), crc32c(contents)))))
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
    out.extend(struct.pack("<II", MAGIC & 0xFFFFFFFF, MAGIC >> 32))
    return bytes(out)
