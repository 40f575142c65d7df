"""Byte sources: the one place that opens files.

A source hands out read-only byte ranges of one file as memoryviews, checking every range
against the real file length first (with Python ints, so no offset can wrap around).
Formats read through sources and never call ``open()``. ``ByteSource`` is the whole
contract between a reader and the bytes it reads: ``path`` (its name in messages), ``size``,
``read``, ``read_head``, ``prefetch``, ``local_path`` and ``close``. ``FileSource`` answers
it over a memory map; any object that answers it can back a reader.

A checkpoint named by a URL (``s3://``, ``gs://``, ``https://``, any fsspec protocol)
gets a ``weightscope.remote.RemotePath`` instead of a ``Path`` and a ``RemoteSource``
instead of a ``FileSource``, answered by range requests. What code asks of a path of
either kind is answered here (``as_path``, ``local_path``, ``open_source``, ``plus``,
``inside``, ``opening``), so no other module tells the two apart by their types; a local
path stays a ``Path`` and a ``FileSource``, and ``weightscope.remote`` (and fsspec) is
never imported for it.
"""

from __future__ import annotations

import mmap
import os
import stat
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from weightscope.bounds import check_range
from weightscope.errors import CheckpointNotFoundError, TruncatedFileError, UnsupportedFormatError

if TYPE_CHECKING:
    from weightscope.remote import RemotePath

AnyPath: TypeAlias = "Path | RemotePath"


class ByteSource(Protocol):
    """The bytes of one file, local or not: all a reader may ask of them."""

    @property
    def path(self) -> AnyPath:
        """What the bytes are named by in messages (and told apart by: a bundle's shards)."""
        ...

    @property
    def size(self) -> int:
        """The file's length in bytes."""
        ...

    @property
    def local_path(self) -> Path | None:
        """The local file these bytes are, or None: what may be memory-mapped or handed to a local-only library."""
        ...

    def read(self, offset: int, length: int, what: str) -> memoryview:
        """The read-only bytes ``[offset, offset + length)``, checked against ``size`` first; ``what`` names them in
        errors (``TruncatedFileError`` past the end)."""
        ...

    def read_head(self, offset: int, length: int, limit: int, what: str) -> memoryview:
        """The bytes ``[offset, offset + length)``, checked against the end as a read of them all is, of which a
        source may return only the first ``limit`` when more cost a fetch (a compressed member's first block)."""
        ...

    def prefetch(self, ranges: list[tuple[int, int]]) -> None:
        """A hint: the ``(offset, length)`` ranges the small reads that follow will ask for (a zip's local headers)."""
        ...

    def close(self) -> None:
        """Let the bytes go; views already handed out stay valid."""
        ...


AnySource: TypeAlias = ByteSource  # the name the formats' signatures use


def is_url(path: object) -> bool:
    """Whether ``path`` is a URL (``scheme://...``, the scheme two characters or more: not ``C:``)."""
    if not isinstance(path, str):
        return False
    scheme, separator, _ = path.partition("://")
    return bool(separator) and len(scheme) > 1 and scheme.replace("+", "").replace("-", "").replace(".", "").isalnum()


def as_path(path: str | os.PathLike[str] | RemotePath, storage_options: dict[str, Any] | None = None) -> AnyPath:
    """A ``Path`` for a local path (as ever), a ``RemotePath`` for a URL."""
    if isinstance(path, Path):
        return path
    if isinstance(path, str) and is_url(path):
        if path.startswith("file://"):
            return Path(path[len("file://") :])
        from weightscope.remote import RemotePath

        return RemotePath(path, storage_options=storage_options)
    if isinstance(path, str | os.PathLike):
        return Path(path)
    return path  # already a RemotePath


def local_path(path: AnyPath) -> Path | None:
    """The local file or folder ``path`` names; None for a URL (no memory map, no local-only library, no history)."""
    return path if isinstance(path, Path) else None


def open_source(path: AnyPath, *, whole: bool = False) -> ByteSource:
    """The byte source of a file: mapped if local (read into memory at its first read with ``whole``, a file read
    once and let go: ``LoadedFile``), else the path's own (range requests for a URL)."""
    if isinstance(path, Path):
        return LoadedFile(path) if whole else FileSource(path)
    return path.open_source()


def plus(path: AnyPath, text: str) -> AnyPath:
    """``path`` with ``text`` appended to its name: a prefix's ``.index`` and ``.data-…`` files."""
    if isinstance(path, Path):
        return Path(f"{path}{text}")
    return path.plus(text)


def inside(path: AnyPath, folder: AnyPath) -> bool:
    """Whether resolved ``path`` lies in resolved ``folder``: a local file in a local folder, a URL under a URL."""
    if isinstance(folder, Path):
        return isinstance(path, Path) and path.is_relative_to(folder)
    return not isinstance(path, Path) and path.is_relative_to(folder)


def opening(path: AnyPath) -> AbstractContextManager[None]:
    """The context to open a checkpoint at ``path`` in: a URL's store keeps the blocks read to sniff its
    format, which its reader reads next; a local file needs nothing."""
    if isinstance(path, Path):
        return nullcontext()
    return path.store.pinned()


def reading_many(path: AnyPath) -> AbstractContextManager[int]:
    """The context to read many tensors of a checkpoint at ``path`` in, giving how many reads are worth having in
    flight: for a URL, its store's bound, each read fetching exactly its range; 1 for a local file, whose reads are
    views of its map."""
    if isinstance(path, Path):
        return nullcontext(1)
    return path.store.reading_many()


def _refuse_unless_regular(path: Path, mode: int) -> None:
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
        raise UnsupportedFormatError(f"{path}: {kind}, not a regular file; weightscope reads regular files only")


def open_regular(path: Path) -> int:
    """A read-only descriptor of ``path``, which must be a regular file.

    Checked before opening, and again on the descriptor, opened non-blocking: a FIFO (or
    a device) swapped in between would otherwise block the open, or every read, forever.
    """
    try:
        _refuse_unless_regular(path, os.stat(path).st_mode)
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise CheckpointNotFoundError(f"{path}: no such file") from None
    try:
        _refuse_unless_regular(path, os.fstat(descriptor).st_mode)
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


class FileSource:
    """A local regular file, memory-mapped read-only on first use."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            status = self.path.stat()
        except FileNotFoundError:
            raise CheckpointNotFoundError(f"{self.path}: no such file") from None
        _refuse_unless_regular(self.path, status.st_mode)
        self.size = status.st_size
        self._map: mmap.mmap | bytes | None = None

    def _mapping(self) -> mmap.mmap | bytes:
        if self.size == 0:
            return b""  # mmap cannot map an empty file
        if self._map is None:
            descriptor = open_regular(self.path)
            try:
                self._map = mmap.mmap(descriptor, 0, access=mmap.ACCESS_READ)
            finally:
                os.close(descriptor)
        return self._map

    @property
    def local_path(self) -> Path:
        return self.path  # mappable, and a file a local-only library (h5py) may open

    def read(self, offset: int, length: int, what: str) -> memoryview:
        """The bytes ``[offset, offset + length)``; ``what`` names them in errors."""
        check_range(self.path, offset, length, self.size, what)
        return memoryview(self._mapping())[offset : offset + length]

    def read_head(self, offset: int, length: int, limit: int, what: str) -> memoryview:
        """All of ``[offset, offset + length)``: a mapped file's bytes are all a view away."""
        return self.read(offset, length, what)

    def prefetch(self, ranges: list[tuple[int, int]]) -> None:
        """Nothing: a mapped file's small reads cost no request."""

    def close(self) -> None:
        # Dropped, not closed: arrays handed out may still view the map, and numpy keeps the
        # mmap itself as their base (not the memoryview, whose export it releases), so
        # mmap.close() would succeed and unmap their bytes under them. CPython unmaps it when
        # the last of them goes (at once, when there are none).
        self._map = None


LOAD_AT_MOST = 1 << 20  # bytes of a file LoadedFile reads whole; a larger one it maps


class LoadedFile(FileSource):
    """A local regular file read whole on first use, with one read, not mapped: for a file read once and let go (a
    TensorFlow index, read at open, as TensorFlow reads it). Mapping it cost every open ~0.1 ms more in
    ``bench/bench_tensorflow.py`` (its pages faulted in, the map undone at close), a fixed cost next to its own
    parse of ~0.3 ms at 2,000 variables. Past ``LOAD_AT_MOST`` bytes it is mapped all the same: there the copy
    costs more than the map (a 3.3 MB index, 100,000 variables: ~0.9 ms more read than mapped)."""

    def _mapping(self) -> mmap.mmap | bytes:
        if self.size > LOAD_AT_MOST:
            return super()._mapping()
        if self._map is None:
            descriptor = open_regular(self.path)
            try:
                data = os.read(descriptor, self.size)
                while len(data) < self.size and (more := os.read(descriptor, self.size - len(data))):
                    data += more  # (a short read: on to the size, or the end)
            finally:
                os.close(descriptor)
            if len(data) != self.size:
                raise TruncatedFileError(
                    f"{self.path}: {len(data)} bytes read of its {self.size}: it changed meanwhile"
                )
            self._map = data
        return self._map


def file_ends_with(path: str | os.PathLike[str] | RemotePath, magic: bytes) -> bool:
    """Whether ``path`` is a regular file whose last bytes are ``magic`` (a trailing signature)."""
    path = as_path(path)
    if not path.is_file() or path.stat().st_size < len(magic):
        return False
    source = open_source(path)
    try:
        return source.read(source.size - len(magic), len(magic), "trailing magic") == magic
    finally:
        source.close()
