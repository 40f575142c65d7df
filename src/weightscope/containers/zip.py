"""The zip archive of PyTorch checkpoints and ``.npz`` files: its directory and members.

The central directory is parsed by ``zipfile`` over the file's bytes (through a
read-only file object over a ``FileSource``). A member's bytes start after its local
header: 30 bytes (signature ``PK\\x03\\x04`` first, the name and extra field lengths at
26 and 28), the name, then the extra field. A reader must refuse an unreadable
directory, encrypted members, and a local header that is missing or names another member.
"""

from __future__ import annotations

import errno
import io
import struct
import zipfile
from pathlib import Path
from typing import Any

from weightscope.errors import CorruptCheckpointError, UnsupportedFormatError
from weightscope.sources import FileSource

_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., name length, extra field length
_LOCAL_SIGNATURE = b"PK\x03\x04"
_UTF8_NAME_FLAG = 0x800


def read_directory(source: FileSource, path: Path) -> list[zipfile.ZipInfo]:
    """The members the zip's central directory lists, in its order."""
    try:
        with zipfile.ZipFile(_SourceFile(source)) as archive:
            return archive.infolist()
    except (zipfile.BadZipFile, struct.error, ValueError, EOFError, OSError) as error:
        raise CorruptCheckpointError(f"{path}: not a readable zip archive ({error})") from None


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
