"""Byte sources: the one place that opens files.

A source hands out read-only byte ranges of one file as memoryviews over a memory map,
checking every range against the real file length first (with Python ints, so no
offset can wrap around). Formats read through sources and never call ``open()``.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from pathlib import Path

from weightscope.errors import CheckpointNotFoundError, TruncatedFileError


class FileSource:
    """A local file, memory-mapped read-only on first use."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self.size = self.path.stat().st_size
        except FileNotFoundError:
            raise CheckpointNotFoundError(f"{self.path}: no such file") from None
        self._map: mmap.mmap | None = None

    def _mapping(self) -> mmap.mmap | bytes:
        if self.size == 0:
            return b""  # mmap cannot map an empty file
        if self._map is None:
            with open(self.path, "rb") as handle:
                self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        return self._map

    def read(self, offset: int, length: int, what: str) -> memoryview:
        """The bytes ``[offset, offset + length)``; ``what`` names them in errors."""
        if offset < 0 or length < 0:
            raise TruncatedFileError(f"{self.path}: {what} has a negative offset or length ({offset}, {length})")
        if offset + length > self.size:
            available = max(0, self.size - offset)
            raise TruncatedFileError(
                f"{self.path}: EOF reading {what} at {offset}: expected {length} bytes, got {available}"
            )
        return memoryview(self._mapping())[offset : offset + length]

    def close(self) -> None:
        if self._map is not None:
            # Arrays handed out may still view the map; then it is unmapped when they go.
            with contextlib.suppress(BufferError):
                self._map.close()
            self._map = None


def file_ends_with(path: str | os.PathLike[str], magic: bytes) -> bool:
    """Whether ``path`` is a regular file whose last bytes are ``magic`` (a trailing signature)."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size < len(magic):
        return False
    source = FileSource(path)
    try:
        return source.read(source.size - len(magic), len(magic), "trailing magic") == magic
    finally:
        source.close()
