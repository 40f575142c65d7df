"""OCDBT, tensorstore's Optionally-Cooperative Distributed B+Tree: the key-value database Orbax writes into.

Read without tensorstore, as tensorstore's ``kvstore/ocdbt/format`` decodes it (checked against its sources:
``codec_util.cc``, ``manifest.cc``, ``version_tree_codec.h``, ``btree.cc``, ``btree_codec.h``,
``data_file_id_codec.cc``):

- Every encoded object (manifest, version-tree node, B+tree node) is ``magic`` (uint32 big-endian: manifest
  ``0x0cdb3a2a``, version node ``0x0cdb1234``, B+tree node ``0x0cdb20de``), ``length`` (uint64 LE, the whole
  object's, which must be the bytes read), ``version`` (varint, 0), ``compression`` (varint: 0 none, 1 one zstd
  frame decoded to its end), the body, and the CRC-32C (uint32 LE) of every byte before it.
- Varints are LEB128. A data-file table is ``n``, ``prefix_len[n-1]``, ``suffix_len[n]``, ``base_len[n]``,
  then the suffixes: ``path[i] = path[i-1][:prefix_len] + suffix[i]``, its first ``base_len`` bytes the base
  that a node read from it hands down to its children's tables.
- The manifest body: config (``uuid[16]``, ``manifest_kind``, ``max_inline_value_bytes``,
  ``max_decoded_node_bytes``, ``version_tree_arity_log2`` (a byte), ``compression`` (1: zstd, then a level,
  int32 LE)); for kind 0 a data-file table, the newest versions (``generation[n]``, ``root_height`` bytes,
  ``file_id[n]``, ``offset[n]``, ``length[n]``, three statistics columns, ``commit_time`` uint64 LE), then the
  older versions' tree nodes (``generation``, ``file_id``, ``offset``, ``length``, ``num_generations``,
  ``commit_time``, ``height`` bytes). The root is the last version's; ``offset = length = 2^64-1`` is an empty
  tree. Kind 1 (numbered manifests, written by multi-host commits) is refused by name.
- A B+tree node: ``height`` (a byte), a data-file table, ``n`` (1..2^20), ``key_prefix_len[n-1]``,
  ``key_suffix_len[n]``, (interior nodes) ``subtree_common_prefix_len[n]``, the key suffixes; keys strictly
  increase. Interior entries then hold ``file_id``, ``offset``, ``length`` and three statistics columns; a
  child's keys are relative to its entry's key cut to ``subtree_common_prefix_len``. Leaf entries hold
  ``value_len[n]``, ``value_kind`` **one byte each** (the format page says varint; the codec reads a byte:
  0 inline, 1 out of line), ``file_id`` and ``offset`` of the out-of-line ones, then the inline values.
- The zstd frames tensorstore writes declare their decoded size (``Frame_Content_Size``): a node is decoded into a
  buffer of that size, checked against the cap first.

Hostile databases: a child must be one level below its parent (so no path cycles and the depth is at most 255),
every reference must lie inside its file and every data file inside the database's folder, a node may decode to
no more than the memory cap (a zstd frame is decoded into a buffer of the cap, never grown), and the nodes and
keys built are charged to the file's memory budget.
"""

from __future__ import annotations

import itertools
import struct
import threading
from pathlib import Path
from typing import NamedTuple

import numpy as np

from weightscope._crc32c import crc32c
from weightscope.confine import confined
from weightscope.errors import (
    CheckpointNotFoundError,
    ChecksumMismatchError,
    CorruptCheckpointError,
    LimitExceededError,
    TruncatedFileError,
    UnsupportedFormatError,
)
from weightscope.limits import Budget, Limits
from weightscope.sources import ByteSource, open_source

MANIFEST_MAGIC = 0x0CDB3A2A
VERSION_NODE_MAGIC = 0x0CDB1234
BTREE_NODE_MAGIC = 0x0CDB20DE
MANIFEST = "manifest.ocdbt"
_MISSING = (1 << 64) - 1
_MAX_KEY = 65535
_MAX_ARITY = 1 << 20
_HEADER = struct.Struct("<Q")
_ENTRY_COST = 160  # bytes one listed key costs in Python (its str, tuple and dict slot), beyond its text
# Bytes one entry's columns take while a node is parsed, at most: 8 columns of Python ints (a list slot and an int
# object each: 40 bytes), the keys' bytes objects, and numpy's temporaries decoding one column (5 x 8 bytes).
_ENTRY_COLUMNS = 8 * 40 + 64 + 40


class Value(NamedTuple):
    """Where one key's value is: ``inline`` bytes held in its leaf, else ``length`` bytes at ``offset`` of ``file``."""

    file: Path | None
    offset: int
    length: int
    inline: bytes | None


def _content_size(frame: bytes | memoryview) -> int | None:
    """The decoded size a zstd frame's header declares (``Frame_Content_Size``), or None where it declares none."""
    if len(frame) < 6 or bytes(frame[:4]) != b"\x28\xb5\x2f\xfd":
        return None
    descriptor = frame[4]
    single = (descriptor >> 5) & 1
    start = 5 + (1 - single) + (0, 1, 2, 4)[descriptor & 3]
    width = (single, 2, 4, 8)[descriptor >> 6]
    if not width or len(frame) < start + width:
        return None
    return int.from_bytes(frame[start : start + width], "little") + (256 if width == 2 else 0)


def zstd_decode(
    data: bytes | memoryview, cap: int, what: str, where: object, into: np.ndarray | None = None
) -> np.ndarray:
    """One zstd frame's bytes, at most ``cap`` of them, as a uint8 array: ``into``'s first bytes where given (a
    contiguous uint8 array of ``cap`` bytes), else a buffer of the size the frame declares (one claiming more than
    ``cap`` is refused before decoding), or, where it declares none, one grown fourfold while the frame fills it,
    never past ``cap``: a zstd bomb costs the cap at most, never what it would decode to."""
    import cramjam  # only zstd-compressed objects pay for the import

    declared = None if into is not None else _content_size(data)
    if declared is not None and declared > cap:
        raise LimitExceededError(f"{where}: {what} declares {declared:,} bytes decoded, over the cap of {cap:,}")
    size = cap if into is not None else declared if declared is not None else min(cap, max(1 << 16, 8 * len(data)))
    while True:
        out = np.empty(size, np.uint8) if into is None else into  # pages untouched until written
        try:
            return out[: cramjam.zstd.decompress_into(data, out)]  # type: ignore[arg-type]  # numpy is a Buffer
        except cramjam.DecompressionError as error:
            if "whole buffer" not in str(error):
                raise CorruptCheckpointError(f"{where}: {what}: damaged zstd data ({error})") from None
        if size >= cap:
            raise LimitExceededError(f"{where}: {what} decompresses to more than {cap:,} bytes")
        size = min(cap, 4 * size)


class _Cursor:
    """Reads an object's body in order; every shortfall is an error naming the object."""

    def __init__(self, data: bytes, what: str, where: object) -> None:
        self.data = data
        self.position = 0
        self.what = what
        self.where = where
        self.budget: Budget | None = None  # what the entries' columns are weighed against, while they are parsed

    def afford(self, count: int, what: str) -> None:
        """Refuse ``count`` entries whose columns (Python lists of ints, and numpy's work while decoding them)
        would take the memory cap, before any is decoded: zstd shrinks a million zero columns to a few bytes."""
        if self.budget is not None:
            needed = self.budget.spent + _ENTRY_COLUMNS * count
            self.budget.limits.check_memory(needed, f"{self.what}: {count:,} {what}", self.where)

    def fail(self, problem: str) -> CorruptCheckpointError:
        return CorruptCheckpointError(f"{self.where}: {self.what}: {problem}")

    def take(self, length: int) -> bytes:
        end = self.position + length
        if end > len(self.data):
            raise self.fail(f"ends {end - len(self.data)} bytes early")
        piece = self.data[self.position : end]
        self.position = end
        return piece

    def byte(self) -> int:
        return self.take(1)[0]

    def varint(self, bits: int = 64) -> int:
        value = shift = 0
        while True:
            if self.position >= len(self.data):
                raise self.fail("ends inside a varint")
            byte = self.data[self.position]
            self.position += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift >= bits + 7:
                raise self.fail("a varint runs past its width")
        if value >> bits:
            raise self.fail(f"a varint of {value} overflows {bits} bits")
        return value

    def column(self, count: int, bits: int = 64) -> list[int]:
        """``count`` varints in a row, decoded together with numpy (a node's million zero-length columns, which
        zstd shrinks to nothing, cost milliseconds, not seconds of Python)."""
        if count <= 4:
            return [self.varint(bits) for _ in range(count)]
        window = np.frombuffer(self.data, np.uint8, count=min(10 * count, len(self.data) - self.position),
                               offset=self.position)  # fmt: skip
        ends = np.flatnonzero(window < 0x80)[:count]
        if len(ends) < count:
            raise self.fail("ends inside a varint")
        starts = np.concatenate(([0], ends[:-1] + 1))
        lengths = ends - starts + 1
        widest = -(-bits // 7)
        if int(lengths.max()) > widest:
            raise self.fail(f"a varint runs past {bits} bits")
        used = window[: int(ends[-1]) + 1].astype(np.uint64)
        place = np.arange(len(used), dtype=np.uint64) - np.repeat(starts, lengths).astype(np.uint64)
        values = np.bitwise_or.reduceat((used & np.uint64(0x7F)) << (np.uint64(7) * place), starts)
        # Past ``bits``: a 64-bit varint's tenth byte may hold only the 64th bit.
        overflow = values >> np.uint64(bits) if bits < 64 else (lengths == 10) & (window[ends] > 1)
        if overflow.any():
            raise self.fail(f"a varint overflows {bits} bits")
        self.position += int(ends[-1]) + 1
        result: list[int] = values.tolist()
        return result

    def end(self) -> None:
        if self.position != len(self.data):
            raise self.fail(f"{len(self.data) - self.position} bytes follow its end")


def decode_object(data: bytes | memoryview, magic: int, cap: int, what: str, where: object) -> _Cursor:
    """The body of an encoded object: header, version and CRC-32C checked, decompressed (to at most ``cap``)."""
    if len(data) < 16:
        raise TruncatedFileError(f"{where}: {what} is {len(data)} bytes, shorter than an OCDBT header")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise CorruptCheckpointError(f"{where}: {what} starts {found:#010x}, not OCDBT's {magic:#010x}")
    (length,) = _HEADER.unpack_from(data, 4)
    if length != len(data):
        raise CorruptCheckpointError(f"{where}: {what} declares {length} bytes but has {len(data)}")
    stored = int.from_bytes(data[-4:], "little")
    computed = crc32c(data[:-4])
    if stored != computed:
        raise ChecksumMismatchError(
            f"{where}: {what} is damaged: stored CRC-32C {stored:#010x}, computed {computed:#010x}"
        )
    head = _Cursor(bytes(data[12:-4]), what, where)
    if (version := head.varint(32)) != 0:
        raise UnsupportedFormatError(f"{where}: {what} is of OCDBT format version {version}; weightscope reads 0")
    compression = head.varint(32)
    rest = head.data[head.position :]
    if compression == 0:
        return _Cursor(rest, what, where)
    if compression == 1:
        return _Cursor(zstd_decode(rest, cap, what, where).tobytes(), what, where)
    raise CorruptCheckpointError(f"{where}: {what} has unknown compression {compression}")


def _data_files(cursor: _Cursor, base: str) -> list[tuple[str, str]]:
    """A data-file table: per file, (its path relative to the database, the base its children inherit)."""
    count = cursor.varint()
    if count > len(cursor.data):
        raise cursor.fail(f"a table of {count} data files is longer than the object")
    cursor.afford(count, "data files")
    prefixes = [0, *cursor.column(count - 1)] if count else []
    suffixes = cursor.column(count)
    bases = cursor.column(count)
    paths: list[tuple[str, str]] = []
    previous = b""
    for prefix, suffix, base_length in zip(prefixes, suffixes, bases, strict=True):
        if prefix > len(previous) or len(base) + prefix + suffix > _MAX_KEY:
            raise cursor.fail("a data file's path is longer than its table allows")
        path = previous[:prefix] + cursor.take(suffix)
        if base_length > len(path):
            raise cursor.fail("a data file's base path is longer than its path")
        previous = path
        try:
            text = path.decode()
        except UnicodeDecodeError:
            raise cursor.fail(f"data file path {path!r} is not UTF-8") from None
        paths.append((base + text, base + text[:base_length]))
    return paths


def _file_id(cursor: _Cursor, files: list[tuple[str, str]]) -> int:
    found = cursor.varint()
    if found >= len(files):
        raise cursor.fail(f"data file {found} is not in its table of {len(files)}")
    return found


class _Node(NamedTuple):
    file: str  # relative to the database's folder
    base: str  # what the node's own table's paths are relative to
    offset: int
    length: int
    height: int
    prefix: bytes  # the keys inherited from above


class Database:
    """One OCDBT database's newest version: every key and where its value is, read at open."""

    def __init__(self, root: Path, budget: Budget | None = None) -> None:
        self.root = root.resolve()
        self.manifest = self.root / MANIFEST
        if not self.manifest.is_file():
            raise CheckpointNotFoundError(f"{root}: no {MANIFEST}")
        self._sources: dict[str, ByteSource] = {}
        self._opening = threading.Lock()
        self.files: dict[str, int] = {}  # data file (relative) -> bytes of values it holds
        if budget is None:
            budget = Budget(Limits.for_size(self._total_size()), root)
        self.budget = budget
        self._node_cap = budget.limits.memory // 4  # one node's decoded bytes: room left for what is built of it
        self.values: dict[str, Value] = {}
        root_node = self._read_manifest()
        self.height = -1 if root_node is None else root_node.height  # the B+tree's root's (-1: an empty tree)
        if root_node is not None:
            self._walk(root_node)

    def _total_size(self) -> int:
        return sum(path.stat().st_size for path in self.root.rglob("*") if path.is_file())

    def _source(self, file: str) -> ByteSource:
        with self._opening:  # tensors may be read on several threads (Checkpoint.arrays): each file opened once
            source = self._sources.get(file)
            if source is None:
                path = confined(self.root, file, str(self.manifest), "data file")
                if not path.is_file():
                    raise CheckpointNotFoundError(f"{self.manifest}: data file {file} is missing")
                source = self._sources[file] = open_source(path)
            return source

    def _read(self, file: str, offset: int, length: int, what: str) -> memoryview:
        source = self._source(file)
        if offset + length > source.size:
            raise TruncatedFileError(
                f"{source.path}: {what} at {offset}..{offset + length} lies past the file's end ({source.size} bytes)"
            )
        return source.read(offset, length, what)

    def _read_manifest(self) -> _Node | None:
        data = self.manifest.read_bytes()
        cursor = decode_object(data, MANIFEST_MAGIC, self._node_cap, "the manifest", self.manifest)
        cursor.take(16)  # uuid
        kind = cursor.varint(8)
        if kind != 0:
            raise UnsupportedFormatError(f"{self.manifest}: a numbered manifest (kind {kind}) is not read yet")
        cursor.varint()  # max_inline_value_bytes
        cursor.varint()  # max_decoded_node_bytes
        arity_log2 = cursor.byte()
        if not 1 <= arity_log2 <= 16:
            raise cursor.fail(f"version tree arity 2^{arity_log2} is out of range")
        if (method := cursor.varint(32)) == 1:
            cursor.take(4)  # zstd level
        elif method != 0:
            raise cursor.fail(f"unknown compression method {method}")
        files = _data_files(cursor, "")
        count = cursor.varint()
        if not 1 <= count <= 1 << arity_log2:
            raise cursor.fail(f"{count} inline versions; 1..{1 << arity_log2} allowed")
        generations = cursor.column(count)
        if 0 in generations or any(later <= earlier for earlier, later in itertools.pairwise(generations)):
            raise cursor.fail("version generations do not increase from 1")
        heights = list(cursor.take(count))
        ids = [_file_id(cursor, files) for _ in range(count)]
        offsets, lengths = cursor.column(count), cursor.column(count)
        cursor.column(3 * count)  # num_keys, num_tree_bytes, num_indirect_value_bytes
        cursor.take(8 * count)  # commit times
        older = cursor.varint()
        if older > len(cursor.data):
            raise cursor.fail(f"{older} version tree nodes cannot fit")
        for _ in range(older):
            cursor.varint()  # generation
        for _ in range(older):
            _file_id(cursor, files)
        cursor.column(3 * older)  # offset, length, num_generations
        cursor.take(9 * older)  # commit times, heights
        cursor.end()
        if offsets[-1] == _MISSING and lengths[-1] == _MISSING:
            return None  # an empty tree
        file, base = files[ids[-1]]
        return _Node(file, base, offsets[-1], lengths[-1], heights[-1], b"")

    def _walk(self, root: _Node) -> None:
        pending = [root]
        while pending:
            node = pending.pop()
            data = self._read(node.file, node.offset, node.length, f"B+tree node of height {node.height}")
            self.budget.spend(2 * node.length, "the B+tree's nodes")
            what = f"B+tree node at {node.offset} of {node.file}"
            cursor = decode_object(data, BTREE_NODE_MAGIC, self._node_cap, what, self.root)
            cursor.budget = self.budget
            self.budget.spend(len(cursor.data), "the B+tree's nodes")
            if (height := cursor.byte()) != node.height:
                raise cursor.fail(
                    f"its height is {height} where its parent's says {node.height} (a node below its own level: "
                    "a cycle, or a reference to the wrong node)"
                )
            files = _data_files(cursor, node.base)
            count = cursor.varint()
            if not 1 <= count <= _MAX_ARITY or count > len(cursor.data):
                raise cursor.fail(f"{count} entries")
            cursor.afford(count, "entries")
            keys, subtree = _keys(cursor, count, interior=height > 0)
            if height == 0:
                self._leaf(cursor, files, [node.prefix + key for key in keys])
                continue
            ids = [_file_id(cursor, files) for _ in range(count)]
            offsets, lengths = cursor.column(count), cursor.column(count)
            cursor.column(3 * count)
            cursor.end()
            for key, common, file_id, offset, length in zip(keys, subtree, ids, offsets, lengths, strict=True):
                file, base = files[file_id]
                pending.append(_Node(file, base, offset, length, height - 1, node.prefix + key[:common]))
        self.values = dict(sorted(self.values.items()))

    def _leaf(self, cursor: _Cursor, files: list[tuple[str, str]], keys: list[bytes]) -> None:
        count = len(keys)
        lengths = cursor.column(count)
        kinds = cursor.take(count)
        if any(kind > 1 for kind in kinds):
            raise cursor.fail("a value kind is neither inline (0) nor out of line (1)")
        outside = [index for index, kind in enumerate(kinds) if kind]
        ids = [_file_id(cursor, files) for _ in outside]
        offsets = cursor.column(len(outside))
        values: dict[int, Value] = {}
        for index, file_id, offset in zip(outside, ids, offsets, strict=True):
            file = files[file_id][0]
            size = self._source(file).size
            if offset + lengths[index] > size:
                raise TruncatedFileError(
                    f"{self.root / file}: the value of key {keys[index]!r} at {offset}..{offset + lengths[index]} "
                    f"lies past the file's end ({size} bytes)"
                )
            self.files[file] = self.files.get(file, 0) + lengths[index]
            values[index] = Value(self.root / file, offset, lengths[index], None)
        for index, kind in enumerate(kinds):
            if not kind:
                values[index] = Value(None, 0, lengths[index], cursor.take(lengths[index]))
        cursor.end()
        self.budget.spend(sum(_ENTRY_COST + len(key) for key in keys), "the database's keys")
        for index, key in enumerate(keys):
            try:
                text = key.decode()
            except UnicodeDecodeError:
                raise cursor.fail(f"key {key!r} is not UTF-8") from None
            if text in self.values:
                raise cursor.fail(f"key {text!r} appears twice in the tree")
            self.values[text] = values[index]

    def read(self, key: str) -> bytes | memoryview:
        """The value of ``key`` (a view of its data file's bytes when stored out of line)."""
        value = self.values[key]
        if value.inline is not None:
            return value.inline
        assert value.file is not None
        return self._read(str(value.file.relative_to(self.root)), value.offset, value.length, f"the value of {key}")

    def close(self) -> None:
        for source in self._sources.values():
            source.close()
        self._sources.clear()


def _keys(cursor: _Cursor, count: int, *, interior: bool) -> tuple[list[bytes], list[int]]:
    """A node's keys (strictly increasing, relative to the node's inherited prefix) and, for an interior node,
    each child's common prefix length."""
    prefixes = [0, *cursor.column(count - 1, 32)]
    suffixes = cursor.column(count, 32)
    common = cursor.column(count, 32) if interior else []
    keys: list[bytes] = []
    previous = b""
    for index, (prefix, suffix) in enumerate(zip(prefixes, suffixes, strict=True)):
        if prefix > len(previous) or prefix + suffix > _MAX_KEY:
            raise cursor.fail(f"key {index}'s prefix or length is out of range")
        key = previous[:prefix] + cursor.take(suffix)
        if keys and key <= previous:
            raise cursor.fail(f"key {key!r} does not follow {previous!r}")
        if interior and common[index] > len(key):
            raise cursor.fail(f"key {index}'s subtree prefix is longer than the key")
        keys.append(key)
        previous = key
    return keys, common


def open_databases(folder: Path, budget: Budget | None = None) -> list[Database]:
    """The databases of an Orbax item: its merged ``manifest.ocdbt``, else each ``ocdbt.process_*`` one."""
    if (folder / MANIFEST).is_file():
        return [Database(folder, budget)]
    parts = sorted(path for path in folder.glob("ocdbt.process_*") if (path / MANIFEST).is_file())
    if not parts:
        raise CheckpointNotFoundError(f"{folder}: no {MANIFEST} here or in an ocdbt.process_* folder")
    return [Database(part, budget) for part in parts]
