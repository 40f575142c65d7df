"""The zip archive of PyTorch checkpoints and ``.npz`` files: its directory and members.

The central directory is parsed by ``zipfile`` over the file's bytes (through a
read-only file object over a ``FileSource``). A member's bytes start after its local
header: 30 bytes (signature ``PK\\x03\\x04`` first, the name and extra field lengths at
26 and 28), the name, then the extra field. A reader must refuse an unreadable
directory, encrypted members, a local header that is missing or names another member,
compression methods other than stored (0) and deflate (8), a stored member whose two
sizes differ, and a deflated member declaring more bytes than deflate can produce from
its compressed size (a zip bomb) — before inflating anything.
"""

from __future__ import annotations

import errno
import io
import struct
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from zlib_ng import zlib_ng

from weightscope.errors import ChecksumMismatchError, CorruptCheckpointError, UnsupportedFormatError, UsageError
from weightscope.sources import FileSource

if TYPE_CHECKING:
    import numpy as np

_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., name length, extra field length
_LOCAL_SIGNATURE = b"PK\x03\x04"
_UTF8_NAME_FLAG = 0x800
# Deflate writes at least 2 bits for a run of 258 bytes: at most ~1032 bytes out per byte
# in, plus the stream's fixed costs for tiny members.
DEFLATE_MAX_RATIO = 1032
DEFLATE_SLACK = 1024


def read_directory(source: FileSource, path: Path) -> list[zipfile.ZipInfo]:
    """The members the zip's central directory lists, in its order."""
    try:
        with zipfile.ZipFile(_SourceFile(source)) as archive:
            return archive.infolist()
    except (zipfile.BadZipFile, struct.error, ValueError, EOFError, OSError) as error:
        raise CorruptCheckpointError(f"{path}: not a readable zip archive ({error})") from None
    except NotImplementedError as error:  # a member needing a newer zip version than zipfile reads
        raise UnsupportedFormatError(f"{path}: a zip archive weightscope cannot read ({error})") from None


def escapes(name: str) -> bool:
    """Whether a member's name is absolute or climbs out of the archive with ``..`` (a path traversal)."""
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or ":" in name[:2] or ".." in parts


def member_start(source: FileSource, entry: zipfile.ZipInfo, what: str) -> int:
    """The file offset of the member's stored bytes, checked against its local header."""
    if entry.flag_bits & 1:
        raise UnsupportedFormatError(f"{what} is encrypted")
    local = source.read(entry.header_offset, _LOCAL_HEADER.size, f"local header of '{entry.filename}'")
    signature, name_length, extra_length = _LOCAL_HEADER.unpack(local)
    name_start = entry.header_offset + _LOCAL_HEADER.size
    stored_name = source.read(name_start, name_length, f"local header of '{entry.filename}'")
    encoding = "utf-8" if entry.flag_bits & _UTF8_NAME_FLAG else "cp437"
    if signature != _LOCAL_SIGNATURE or bytes(stored_name).decode(encoding, "replace") != entry.orig_filename:
        raise CorruptCheckpointError(f"{what}: no local header for it at {entry.header_offset}")
    return name_start + name_length + extra_length


def is_deflated(entry: zipfile.ZipInfo, what: str) -> bool:
    """Whether the member is deflated (else stored), once its method and sizes are checked."""
    if entry.compress_type == zipfile.ZIP_STORED:
        if entry.compress_size != entry.file_size:
            raise CorruptCheckpointError(
                f"{what} is stored uncompressed, yet its sizes differ ({entry.compress_size}, {entry.file_size})"
            )
        return False
    if entry.compress_type != zipfile.ZIP_DEFLATED:
        raise UnsupportedFormatError(
            f"{what} is compressed with zip method {entry.compress_type}; weightscope reads stored and deflated"
        )
    if entry.file_size > entry.compress_size * DEFLATE_MAX_RATIO + DEFLATE_SLACK:
        raise CorruptCheckpointError(
            f"{what} declares {entry.file_size} bytes inflated from {entry.compress_size}: "
            "more than deflate can produce (a zip bomb?)"
        )
    return True


# zlib-ng computes CRC-32 with carry-less multiplication (PCLMULQDQ/VPCLMULQDQ): ~32 GiB/s
# on one core here against zlib's ~6, so checking every member as it is read costs little
# next to reading it.
crc32 = zlib_ng.crc32


def check_crc(data: bytes | memoryview, stored: int, what: str, where: str = "") -> None:
    """Refuse a member whose CRC-32 is not the one its directory entry stores; ``what`` names it."""
    if (computed := crc32(data)) != stored:
        raise ChecksumMismatchError(
            f"{what} is damaged: stored CRC-32 {stored:#010x}, computed {computed:#010x}{where}"
        )


def inflate(compressed: bytes | memoryview, size: int, what: str) -> bytes:
    """A deflated member's bytes, which must be exactly the ``size`` its directory entry declares."""
    inflater = zlib_ng.decompressobj(-zlib_ng.MAX_WBITS)
    try:
        data = inflater.decompress(compressed, size + 1)  # one byte more shows a lie
    except zlib_ng.error as error:
        raise CorruptCheckpointError(f"{what}: damaged deflate stream ({error})") from None
    if len(data) != size or not inflater.eof:
        raise CorruptCheckpointError(
            f"{what}: the deflate stream does not inflate to the {size} bytes the zip directory declares"
        )
    return data


class _SourceFile(io.RawIOBase):
    """A read-only file object over a ``FileSource``: ``zipfile`` reads the directory through it."""

    def __init__(self, source: FileSource) -> None:
        self._source = source
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        position = offset + (0, self._position, self._source.size)[whence]
        if position < 0:
            raise OSError(errno.EINVAL, "negative seek position")
        self._position = position
        return position

    def tell(self) -> int:
        return self._position

    def readinto(self, buffer: Any) -> int:
        length = max(0, min(len(buffer), self._source.size - self._position))
        buffer[:length] = self._source.read(self._position, length, "the zip directory")
        self._position += length
        return length


# -- writing -------------------------------------------------------------------------------

ZIP64_LIMIT = 0xFFFFFFFF  # sizes, offsets at or past this (and member counts past 0xFFFF) need zip64
_ZIP_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_ZIP_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
_ZIP_END = struct.Struct("<4sHHHHIIH")
_ZIP64_END = struct.Struct("<4sQHHIIQQQQ")
_ZIP64_LOCATOR = struct.Struct("<4sIQI")
_ZIP_CRC_OFFSET = 14  # of the CRC-32 in a local header, patched once the data is written
_ZIP_DATE = (1 << 5) | 1  # 1980-01-01 00:00, the zip epoch: no clock in the bytes, so they are reproducible
_ZIP_PADDING = b"FB"  # the extra field id PyTorch pads local headers with (its bytes are "Z"s)
_ZIP_UTF8 = 0x800
ZIP_NAME_MAX = 0xFFFF  # bytes in a member name


class ZipWriter:
    """A zip of stored members written to a seekable file, each member's data aligned to ``align``.

    Each member's size is known before it is written; its CRC-32 is computed while its
    bytes stream and patched into its local header afterwards (no data descriptors).
    Shared by the ``.npz`` and PyTorch writers.
    """

    def __init__(self, handle: BinaryIO, *, align: int = 1) -> None:
        self._handle = handle
        self._align = align
        self._entries: list[tuple[bytes, int, int, int, int]] = []  # name, flags, CRC-32, size, offset

    def add(self, name: str, size: int, chunks: Iterable[bytes | memoryview | np.ndarray]) -> int:
        """Write the member ``name`` of ``size`` bytes from ``chunks``; returns its CRC-32."""
        handle = self._handle
        offset = handle.tell()
        encoded = name.encode("utf-8")
        flags = 0 if encoded.isascii() else _ZIP_UTF8
        zip64 = size >= ZIP64_LIMIT
        extra = struct.pack("<HHQQ", 1, 16, size, size) if zip64 else b""
        start = offset + _ZIP_LOCAL.size + len(encoded) + len(extra)
        if start % self._align:
            padding = -(start + 4) % self._align
            extra += _ZIP_PADDING + struct.pack("<H", padding) + b"Z" * padding
        stored = _narrow(size)
        version = 45 if zip64 else 20
        handle.write(
            _ZIP_LOCAL.pack(b"PK\x03\x04", version, flags, 0, 0, _ZIP_DATE, 0, stored, stored, len(encoded), len(extra))
        )
        handle.write(encoded + extra)
        crc = written = 0
        for chunk in chunks:
            crc = crc32(chunk, crc)
            written += memoryview(chunk).nbytes
            handle.write(chunk)
        if written != size:
            raise UsageError(f"zip member '{name}': planned {size} bytes, given {written}")
        end = handle.tell()
        handle.seek(offset + _ZIP_CRC_OFFSET)
        handle.write(struct.pack("<I", crc))
        handle.seek(end)
        self._entries.append((encoded, flags, crc, size, offset))
        return crc

    def close(self) -> None:
        """Write the central directory (and zip64 records when needed) after the members."""
        handle = self._handle
        start = handle.tell()
        for encoded, flags, crc, size, offset in self._entries:
            # The zip64 extra field holds, in this order, the sizes and the offset too wide for their fields.
            wide = (2 * [size] if size >= ZIP64_LIMIT else []) + ([offset] if offset >= ZIP64_LIMIT else [])
            extra = struct.pack(f"<HH{len(wide)}Q", 1, 8 * len(wide), *wide) if wide else b""
            version = 45 if wide else 20
            stored = _narrow(size)
            fields = (version, version, flags, 0, 0, _ZIP_DATE, crc, stored, stored, len(encoded), len(extra))
            handle.write(_ZIP_CENTRAL.pack(b"PK\x01\x02", *fields, 0, 0, 0, 0, _narrow(offset)))
            handle.write(encoded + extra)
        end = handle.tell()
        count, directory = len(self._entries), end - start
        if count >= 0xFFFF or directory >= ZIP64_LIMIT or start >= ZIP64_LIMIT:
            record = (_ZIP64_END.size - 12, 45, 45, 0, 0, count, count, directory, start)
            handle.write(_ZIP64_END.pack(b"PK\x06\x06", *record))
            handle.write(_ZIP64_LOCATOR.pack(b"PK\x06\x07", 0, end, 1))
        members = min(count, 0xFFFF)
        handle.write(_ZIP_END.pack(b"PK\x05\x06", 0, 0, members, members, _narrow(directory), _narrow(start), 0))


def _narrow(value: int) -> int:
    """A size or offset for a 4-byte zip field: 0xFFFFFFFF when it is in a zip64 record instead."""
    return 0xFFFFFFFF if value >= ZIP64_LIMIT else value
