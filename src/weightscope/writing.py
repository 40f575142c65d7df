"""What every writer reads from: tensors planned by dtype and shape, then streamed one at a time.

A writer first lays out its whole file from ``spec(name)`` (dtype and shape, no data
touched), then asks ``array(name)`` once per tensor, in the order it writes them, and lets
each array go before asking for the next. Conversions hand writers a ``Tensors`` whose
arrays are memory-mapped views of the source (or one transposed copy at a time), so no
two full copies of a checkpoint are ever in memory. ``as_tensors`` wraps a plain mapping
of name to array-like, which is what ``weightscope.save`` is usually given.

Every writer plans with ``plan_specs`` (each name once, refused before a file is made) and
checks each array against its plan with ``checked`` (or ``array_bytes``) before writing
its bytes: a ``Tensors`` whose arrays are not what it promised writes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike

from weightscope.errors import UsageError


@runtime_checkable
class Tensors(Protocol):
    """Named tensors a writer can plan from and then stream."""

    def names(self) -> list[str]:
        """The names, in the order the writer should write them."""
        ...

    def spec(self, name: str) -> tuple[np.dtype, tuple[int, ...]]:
        """The dtype and shape of ``name``, without reading its data."""
        ...

    def array(self, name: str) -> np.ndarray:
        """The values of ``name``; asked once, when the writer writes it."""
        ...


class MappingTensors:
    """``Tensors`` over a mapping of name to array-like (numpy arrays, views, lists)."""

    def __init__(self, tensors: Mapping[str, ArrayLike]) -> None:
        self._tensors = tensors

    def names(self) -> list[str]:
        return list(self._tensors)

    def spec(self, name: str) -> tuple[np.dtype, tuple[int, ...]]:
        array = np.asarray(self._tensors[name])
        return array.dtype, array.shape

    def array(self, name: str) -> np.ndarray:
        return np.asarray(self._tensors[name])


def as_tensors(tensors: Tensors | Mapping[str, ArrayLike]) -> Tensors:
    """``tensors`` as a ``Tensors``: itself if it is one, else the mapping wrapped."""
    if isinstance(tensors, Tensors):
        return tensors
    return MappingTensors(tensors)


@dataclass(frozen=True)
class Spec:
    """One tensor as a writer plans it, before any of its data is read."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def plan_specs(source: Tensors, target: Path, stored_as: Callable[[str], Hashable] | None = None) -> list[Spec]:
    """Every tensor's planned dtype and shape, each name checked to be given once, before a byte is written.

    ``stored_as`` maps a name to what the format stores it under (an ``.npz`` member, an
    index key): two names stored alike are refused too, since the second would hide the first.
    """
    specs: list[Spec] = []
    seen: dict[Hashable, str] = {}
    for name in source.names():
        if not isinstance(name, str) or not name:
            raise UsageError(f"tensor names must be non-empty strings, not {name!r}")
        key = name if stored_as is None else stored_as(name)
        if key in seen and seen[key] == name:
            raise UsageError(f"{target}: tensor '{name}' is given twice")
        if key in seen:
            raise UsageError(f"{target}: tensors '{seen[key]}' and '{name}' would be stored under one name")
        seen[key] = name
        dtype, shape = source.spec(name)
        specs.append(Spec(name, np.dtype(dtype), tuple(int(size) for size in shape)))
    return specs


def checked(array: ArrayLike, spec: Spec) -> np.ndarray:
    """``array`` as numpy, refused unless it has the dtype (in any byte order) and shape ``spec`` planned."""
    array = np.asarray(array)
    if array.shape != spec.shape or array.dtype.newbyteorder("=") != spec.dtype.newbyteorder("="):
        raise UsageError(
            f"tensor '{spec.name}': planned as {spec.dtype} of shape {list(spec.shape)}, "
            f"but its array is {array.dtype} of shape {list(array.shape)}"
        )
    return array


def array_bytes(array: ArrayLike, spec: Spec) -> np.ndarray:
    """``array``'s elements as flat little-endian C-order bytes, once checked against ``spec``.

    A contiguous little-endian array is viewed, not copied; a non-contiguous or big-endian
    one is copied (one tensor at a time, see ``little_endian``).
    """
    return little_endian(checked(array, spec)).reshape(-1).view(np.uint8)


_TILE = 64  # rows and columns of a transpose tile: two 64x64 float32 tiles stay in L1


def little_endian(array: np.ndarray) -> np.ndarray:
    """The values as C-order little-endian elements: a view when they already are, else one copy.

    A transposed matrix copied whole reads memory across its rows (0.6 GiB/s here); it is
    copied tile by tile instead, each tile's rows staying in cache (2.1 GiB/s).
    """
    dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder != "|" else array.dtype
    if array.ndim == 2 and array.size >= _TILE * _TILE and not array.flags.c_contiguous:
        out = np.empty(array.shape, dtype)
        rows, columns = array.shape
        for row in range(0, rows, _TILE):
            for column in range(0, columns, _TILE):
                out[row : row + _TILE, column : column + _TILE] = array[row : row + _TILE, column : column + _TILE]
        return out
    return array.astype(dtype, order="C", copy=False)  # keeps 0-d arrays 0-d
