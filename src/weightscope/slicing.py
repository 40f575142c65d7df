"""Slice reads: ``ckpt.slice(name)[0:10, :]`` reads only the bytes the selection needs.

Like safetensors' ``safe_open(...).get_slice(name)``: ``Checkpoint.slice(name)`` returns a
``TensorSlice`` (its ``shape``, ``dtype`` and ``info`` come from the index alone); indexing
it with a basic numpy index — integers (negative ones too), slices (with steps, negative
ones too), ``Ellipsis`` and ``None`` (a new axis of length 1), as numpy takes them — gives
what ``ckpt[name][key]`` gives, bit for bit: an array (read-only), or a numpy scalar when
every axis is taken by an integer.

Where a tensor's values are plain bytes in C order (its ``Checkpoint.extent`` uncompressed,
with no strides: the tensors ``weightscope.lazy`` reads by range: safetensors, npy and
stored npz members, TensorFlow bundle tensors, contiguous PyTorch tensors, GGUF's
unquantised types, ONNX external data, contiguous HDF5 datasets), only the bytes between the
first and the last element selected are read: locally a view of the mapped file, whose pages
are touched only where the selection lies; remotely the ranges requested. A sparse selection
(less than half of the bytes between its ends) is read run by run (each run of elements
adjacent in the file), up to ``MAX_RUNS`` of them: a column of a remote matrix fetches its
elements' ranges, not the matrix. Any other tensor (compressed, strided, quantised,
partitioned, strings, chunked HDF5, in a .keras zip or an ONNX model) and any other index
(arrays, masks) is read whole through the reader, then indexed.

Checksums: a slice cannot check a checksum taken over the whole tensor (TensorFlow's
CRC32C, a zip member's CRC-32), so byte-range slice reads are not verified, whatever the
checkpoint's ``verify``; ``ckpt[name]`` and ``ckpt.verify()`` are. (Reading the whole
tensor to verify it would undo what a slice is for.)
"""

from __future__ import annotations

import itertools
import math
import numbers
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from weightscope.dtypes import native_order
from weightscope.lazy import is_plain

if TYPE_CHECKING:
    from weightscope.checkpoint import Checkpoint, Extent, TensorInfo
    from weightscope.sources import AnySource

MAX_RUNS = 4096  # more runs than this are fetched as the one range that spans them


def _basic(key: Any) -> tuple[Any, ...] | None:
    """``key`` as a tuple when numpy indexes with it by basic indexing (a view, no copy); None otherwise."""
    parts = key if isinstance(key, tuple) else (key,)
    for part in parts:
        if isinstance(part, bool | np.bool_):
            return None  # numpy reads a lone bool as a mask
        if not (isinstance(part, numbers.Integral | slice) or part is None or part is Ellipsis):
            return None
    return parts


Selection = tuple[tuple[int, ...], tuple[int, ...], int]  # shape, byte strides, byte offset of the first element


def _selection(shape: tuple[int, ...], itemsize: int, key: tuple[Any, ...]) -> Selection:
    """The shape, byte strides and first element's byte offset of ``key``'s selection of a C-order tensor.

    numpy itself applies the key, to an array of a zero-byte dtype laid out as the tensor is: its strides and
    data address give the selection's, and no byte of memory is read. A leading axis of length 1 keeps the
    result an array when every axis is taken by an integer.
    """
    strides = tuple(itemsize * math.prod(shape[axis + 1 :]) for axis in range(len(shape)))
    base = np.zeros(1, np.dtype([]))
    layout = as_strided(base, shape=(1, *shape), strides=(0, *strides))
    chosen = layout[(slice(None), *key)]  # raises IndexError as numpy does for a key that does not fit
    start = chosen.__array_interface__["data"][0] - layout.__array_interface__["data"][0]
    return chosen.shape[1:], chosen.strides[1:], start


class TensorSlice:
    """Tensor ``info.name`` of ``ckpt``, to be indexed: ``ckpt.slice(name)[key]`` reads only what ``key`` takes."""

    def __init__(self, ckpt: Checkpoint, info: TensorInfo, extent: Extent | None, source: AnySource | None) -> None:
        self._ckpt = ckpt
        self.info = info
        self._extent = extent if is_plain(info, extent) else None
        self._source = source

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.info.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.info.dtype

    def get_shape(self) -> list[int]:
        """The tensor's shape, as safetensors' ``PySafeSlice.get_shape`` gives it."""
        return list(self.info.shape)

    def __len__(self) -> int:
        if not self.info.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.info.shape[0]

    def __getitem__(self, key: Any) -> Any:
        parts = _basic(key)
        if parts is None or self._extent is None or self._source is None:
            values = self._ckpt[self.info.name][key]
        else:
            values = self._read(parts, self._source, self._extent)
        if isinstance(values, np.ndarray):
            values.flags.writeable = False
        return values

    def _read(self, key: tuple[Any, ...], source: AnySource, extent: Extent) -> Any:
        stored = extent.dtype
        itemsize = stored.itemsize
        shape, strides, start = _selection(self.shape, itemsize, key)
        if 0 in shape:
            values = np.empty(shape, stored)
        else:
            low = start + sum(min(0, (n - 1) * s) for n, s in zip(shape, strides, strict=True))
            high = start + sum(max(0, (n - 1) * s) for n, s in zip(shape, strides, strict=True)) + itemsize
            runs = _runs(shape, strides, itemsize)
            what = f"tensor '{self.info.name}'"
            needed = math.prod(shape) * itemsize
            if 2 * needed >= high - low or runs is None:
                data = source.read(extent.offset + low, high - low, what)
                values = np.ndarray(shape, stored, buffer=data, offset=start - low, strides=strides)
            else:
                values = _gather(source, extent.offset + start, shape, strides, stored, runs, what)
        if stored != self.info.dtype:
            values = native_order(np.ascontiguousarray(values), self.info.dtype)
        # numpy gives a scalar for a 0-d result, unless the key holds an Ellipsis
        return values[()] if not values.shape and Ellipsis not in key else values


def _runs(shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int) -> int | None:
    """How many axes, from the first, are walked run by run: the rest lie adjacent, in order, in the file.

    None when that makes more than ``MAX_RUNS`` runs.
    """
    outer, inner = len(shape), itemsize
    while outer and strides[outer - 1] == inner:
        outer -= 1
        inner *= shape[outer]
    return outer if math.prod(shape[:outer]) <= MAX_RUNS else None


def _gather(
    source: AnySource,
    first: int,
    shape: tuple[int, ...],
    strides: tuple[int, ...],
    stored: np.dtype,
    outer: int,
    what: str,
) -> np.ndarray:
    """The selection read run by run: one read per index of the first ``outer`` axes."""
    values = np.empty(shape, stored)
    run = math.prod(shape[outer:]) * stored.itemsize
    for index in itertools.product(*(range(n) for n in shape[:outer])):
        offset = first + sum(i * s for i, s in zip(index, strides, strict=False))
        values[index] = np.frombuffer(source.read(offset, run, what), stored).reshape(shape[outer:])
    return values
