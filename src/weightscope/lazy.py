"""Dask arrays over checkpoint tensors: each chunk a task that reads only its own bytes.

``Checkpoint.to_dask(name)`` returns a ``dask.array.Array`` cut along its first axis into
chunks of about 64 MiB. Each chunk is one task holding only plain, picklable values — the
file's path, the byte offset, the stored dtype and the shape (a ``TensorSource``) — never
an open handle, so the graph runs on threads here or on the workers of a
``dask.distributed`` cluster that see the same path (shared storage). A task reads its
byte range by mapping it (``np.memmap``: the page cache's pages, no copy) and converts it
to native byte order where the file's differs (a copy); nothing else of the file is touched.

Which tensors are plain bytes (``raw`` sources): those whose ``Checkpoint.extent`` is uncompressed
and in C order (``compression == ""`` and ``strides is None``), read at its file and offset as its dtype:

* safetensors: every tensor (little-endian);
* npy, and npz members stored uncompressed, in C order (the header's dtype gives the byte order);
* TensorFlow bundles: every numeric tensor that is not partitioned into slices (the
  bundle's byte order);
* PyTorch zip and legacy files: C-contiguous tensors (storage offset allowed, strides must
  be C order's);
* GGUF: the plain element types;
* ONNX: tensors in external data files, but the 4-bit types;
* Keras HDF5 files (not ``.keras`` zips): contiguous datasets.

Every other tensor — deflated npz members, Fortran-order arrays, strided PyTorch views,
partitioned TensorFlow variables, strings, quantised GGUF types, chunked (filtered) HDF5
datasets, tensors in a ``.keras`` zip or inside an ONNX model — is one chunk, whose task
reopens the checkpoint (by path and format) and reads the tensor through its reader.

Checksums: a chunk cannot check a checksum taken over the whole tensor (TensorFlow's
CRC32C, a zip member's CRC-32), so chunk reads are unverified. ``verification(ckpt)``
gives tasks that read each tensor whole through its reader with checksums checked, to
compute beside (or before) the analysis when that matters.

Dask is optional: without it these functions raise ``UnsupportedFormatError`` with the
install hint ``pip install 'weightscope[dask]'``. Importing this module imports no dask.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from weightscope.dtypes import native_order
from weightscope.errors import TruncatedFileError, UnsupportedFormatError, WeightscopeError
from weightscope.sources import local_path

if TYPE_CHECKING:
    from weightscope.checkpoint import Checkpoint, Extent, TensorInfo

INSTALL_HINT = "pip install 'weightscope[dask]'"
CHUNK_BYTES = 64 << 20  # a chunk's bytes as stored: large enough to amortise a task, small enough to spread


def require_dask() -> Any:
    """The ``dask`` module, with ``dask.array``; a typed error with the install hint when it is missing."""
    try:
        import dask
        import dask.array
    except ImportError:
        raise UnsupportedFormatError(f"this needs dask, which is not installed: {INSTALL_HINT}") from None
    return dask


@dataclass(frozen=True)
class TensorSource:
    """Where one tensor's values are, in terms any worker with the same path can use.

    ``file`` is set for a raw source: ``math.prod(shape)`` elements of ``stored`` (the
    dtype with the byte order of the file) from byte ``offset`` of ``file``, in C order.
    Otherwise the tensor is read whole through the reader of ``format`` at ``path``.
    """

    checkpoint: str  # the path the checkpoint opens from
    format: str
    reader: Callable[..., Checkpoint]  # its reader's class, which reopens it in a worker: reader(checkpoint, verify=)
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype  # the values' dtype, in native byte order
    file: str | None = None
    offset: int = 0
    stored: np.dtype | None = None

    @property
    def raw(self) -> bool:
        return self.file is not None

    @property
    def numeric(self) -> bool:
        return self.dtype.kind != "O" and self.dtype.names is None

    @property
    def row_elements(self) -> int:
        return math.prod(self.shape[1:])

    def rows_per_chunk(self, chunk_bytes: int) -> int:
        """Rows of a chunk: as many as fit ``chunk_bytes`` (at least one); all rows when read whole."""
        rows = self.shape[0] if self.shape else 1
        if not self.raw:
            return max(1, rows)
        return max(1, min(rows, chunk_bytes // max(1, self.row_elements * self.dtype.itemsize)))

    def bounds(self, chunk_bytes: int = CHUNK_BYTES) -> list[tuple[int, int]]:
        """The chunks as ``(start, stop)`` row ranges along the first axis (one range for a scalar)."""
        rows = self.shape[0] if self.shape else 1
        if rows == 0:
            return [(0, 0)]
        step = self.rows_per_chunk(chunk_bytes)
        return [(start, min(rows, start + step)) for start in range(0, rows, step)]

    def byte_range(self, start: int, stop: int) -> tuple[int, int]:
        """The file offset and length of rows ``[start, stop)`` of a raw source."""
        row_bytes = self.row_elements * self.dtype.itemsize
        return self.offset + start * row_bytes, (stop - start) * row_bytes

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` (the scalar itself for a 0-d tensor) in native byte order; read-only
        when they are mapped from the file as they are."""
        if not self.raw:
            return _read_through_reader(self, start, stop)
        assert self.file is not None and self.stored is not None
        offset, length = self.byte_range(start, stop)
        count = length // max(1, self.dtype.itemsize)
        values = _read_range(self.file, offset, count, self.stored)
        values = native_order(values, self.dtype)
        if not self.shape:
            return values.reshape(())
        return values.reshape((stop - start, *self.shape[1:]))


def _read_range(file: str, offset: int, count: int, dtype: np.dtype) -> np.ndarray:
    """``count`` elements of ``dtype`` from byte ``offset`` of ``file``: the only bytes a chunk touches.

    Mapped read-only (``np.memmap``), not copied: the values are the page cache's pages,
    read as the task walks them, and no buffer of the chunk's size is allocated.
    """
    if count == 0:
        return np.empty(0, dtype)
    length = count * dtype.itemsize
    size = os.path.getsize(file)
    if offset + length > size:
        raise TruncatedFileError(f"{file}: EOF reading {length} bytes at {offset}: got {max(0, size - offset)}")
    return np.memmap(file, dtype=dtype, mode="r", offset=offset, shape=(count,)).view(np.ndarray)


def _read_through_reader(source: TensorSource, start: int, stop: int) -> np.ndarray:
    with source.reader(source.checkpoint, verify=True) as ckpt:
        array = ckpt[source.name]
        if not source.shape:
            return np.array(array)
        return np.array(array[start:stop])


def is_plain(info: TensorInfo, extent: Extent | None) -> bool:
    """Whether ``extent`` holds ``info``'s numeric values as plain bytes in C order, one after another."""
    dtype = info.dtype
    if extent is None or dtype.kind == "O" or dtype.names is not None or not info.size:
        return False
    return not extent.compression and extent.strides is None


@dataclass(frozen=True)
class OpenedSource(TensorSource):
    """A tensor of a checkpoint open in this process (a remote one), read whole through it: for tasks on this
    process's threads only (an open checkpoint is not sent to other processes)."""

    opened: Checkpoint | None = field(default=None, compare=False, repr=False)

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        assert self.opened is not None
        array = self.opened[self.name]
        return np.asarray(array) if not self.shape else np.asarray(array[start:stop])


def tensor_source(ckpt: Checkpoint, name: str, *, in_process: bool = False) -> TensorSource:
    """Where tensor ``name`` of ``ckpt`` is: a byte range when it is plain bytes, else the reader; with
    ``in_process``, a remote checkpoint's tensors are read through ``ckpt`` itself (tasks on this process's
    threads), where otherwise a remote checkpoint is refused (a worker elsewhere cannot read it by path)."""
    remote = local_path(ckpt.path) is None
    if remote and not in_process:
        raise UnsupportedFormatError(
            f"{ckpt.path}: dask reads checkpoints on this machine or a shared filesystem, not by URL; download it first"
        )
    info = ckpt.info(name)
    native = info.dtype.newbyteorder("=") if info.dtype.kind in "biufc" else info.dtype
    if remote:
        return OpenedSource(str(ckpt.path), ckpt.format, type(ckpt), info.name, tuple(info.shape), native, opened=ckpt)
    path = str(ckpt.path.resolve())
    extent = ckpt.extent(info.name)
    if extent is None or not is_plain(info, extent):
        return TensorSource(path, ckpt.format, type(ckpt), info.name, tuple(info.shape), native)
    file = str(type(ckpt.path)(extent.file).resolve())
    return TensorSource(
        path, ckpt.format, type(ckpt), info.name, tuple(info.shape), native, file, extent.offset, extent.dtype
    )


def read_chunk(source: TensorSource, start: int, stop: int) -> np.ndarray:
    """A chunk's task: rows ``[start, stop)`` of ``source``."""
    return source.read_rows(start, stop)


def _key_name(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_.-]+", "_", name)[:80] or "tensor"


def _stamp(source: TensorSource) -> tuple[int, int] | None:
    """The file's modification time and size: a rewritten file gets new task keys, never cached results."""
    try:
        status = os.stat(source.file or source.checkpoint)
    except OSError:
        return None
    return status.st_mtime_ns, status.st_size


def source_array(source: TensorSource, chunk_bytes: int = CHUNK_BYTES) -> Any:
    """A dask array of ``source``'s values: one ``read_chunk`` task per chunk of its first axis."""
    require_dask()
    import dask.array as da
    from dask.base import tokenize

    key = f"weightscope-{_key_name(source.name)}-{tokenize(source, chunk_bytes, _stamp(source))}"
    bounds = source.bounds(chunk_bytes)
    if not source.shape:
        graph: dict[tuple[Any, ...], tuple[Any, ...]] = {(key,): (read_chunk, source, 0, 1)}
        return da.Array(graph, key, (), dtype=source.dtype)
    tail = (0,) * (len(source.shape) - 1)
    graph = {(key, i, *tail): (read_chunk, source, start, stop) for i, (start, stop) in enumerate(bounds)}
    chunks = (tuple(stop - start for start, stop in bounds), *((size,) for size in source.shape[1:]))
    return da.Array(graph, key, chunks, dtype=source.dtype)


def to_dask(ckpt: Checkpoint, name: str | None = None, *, chunk_bytes: int | None = None) -> Any:
    """Tensor ``name`` as a dask array (all tensors, as a dict by name, when ``name`` is None).

    Chunks run along the first axis, about ``chunk_bytes`` (64 MiB) each; each chunk's
    task reads only its own byte range of the file (see the module's description for
    which tensors are plain bytes; the others are one chunk read through the reader).
    Chunk reads are not checked against the format's checksums, which cover whole
    tensors: compute ``verification(ckpt)`` for that.
    """
    size = CHUNK_BYTES if chunk_bytes is None else chunk_bytes
    if size < 1:
        raise UnsupportedFormatError(f"chunk_bytes must be positive, not {size}")
    require_dask()
    if name is None:
        return {tensor: source_array(tensor_source(ckpt, tensor), size) for tensor in ckpt}
    return source_array(tensor_source(ckpt, ckpt.resolve(name)), size)


def _verify(checkpoint: str, reader: Callable[..., Checkpoint], name: str) -> str | None:
    """Read ``name`` whole with checksums checked; the problem found, or None."""
    try:
        with reader(checkpoint, verify=True) as ckpt:
            ckpt[name]
    except WeightscopeError as error:
        return str(error)
    return None


def verification(ckpt: Checkpoint, names: list[str] | None = None) -> Any:
    """A dask ``Delayed``: a task per tensor reading it whole with its checksum checked; computes to
    ``{name: problem}`` for the tensors found damaged (empty when all are sound)."""
    dask = require_dask()
    path = str(ckpt.path.resolve())
    chosen = list(ckpt) if names is None else [ckpt.resolve(name) for name in names]
    checks = [dask.delayed(_verify, pure=True)(path, type(ckpt), name) for name in chosen]

    def damaged(results: list[str | None]) -> dict[str, str]:
        return {name: problem for name, problem in zip(chosen, results, strict=True) if problem is not None}

    return dask.delayed(damaged)(checks)
