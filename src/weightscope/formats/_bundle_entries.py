"""Columns of a bundle index's entries, decoded together: keys and dtype codes as arrays, the distinct
shapes once each, and the few entries numpy's decoder (``_bundle_index``) leaves to protobuf.
"""

from __future__ import annotations

from itertools import repeat
from typing import Any

import numpy as np

from weightscope.dtypes import ElementType
from weightscope.errors import CorruptCheckpointError
from weightscope.formats._bundle_index import Header

_HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)


def _key_bytes(name: str) -> bytes:
    """The index key of a tensor name: keys are sorted as bytes."""
    return name.encode("utf-8", "surrogateescape")


def _numpy_dtype(element: ElementType) -> np.dtype:
    """The dtype a tensor of ``element`` reads as: object for types numpy cannot hold."""
    return element.dtype if element.dtype is not None else np.dtype(object)


def _column(values: np.ndarray, index: np.ndarray) -> list[object]:
    """``values[index]`` as a list; quicker when the index is all one (one dtype, one shard)."""
    if len(index) and not (index != index[0]).any():
        return [values[index[0]]] * len(index)
    return values[index].tolist()


def _shapes(rank: np.ndarray, dims: np.ndarray) -> list[tuple[int, ...]]:
    """Shape tuples of Python ints from ranks and dims (1 past the rank), one tuple per distinct shape.

    Checkpoints repeat a few shapes many times. Sharing one tuple among them saves making
    (and garbage-collecting) one per tensor. Rows are grouped by a key: the rank and dims
    packed into 64 bits where they fit (4 bits of rank, the rest shared by the dims),
    else a hash, and then the rows are compared.
    """
    bits = 60 // max(dims.shape[1], 1)
    packed = dims.shape[1] < 16 and int(dims.max(initial=0)) < 1 << bits
    key = rank.astype(np.uint64)
    for column in dims.T.astype(np.uint64):
        key = (key << np.uint64(bits)) | column if packed else key * _HASH_MULTIPLIER + column  # hash: wraps
    first, inverse = _groups(key)
    if packed or ((rank[first][inverse] == rank).all() and (dims[first][inverse] == dims).all()):
        distinct = np.fromiter(_shape_tuples(rank[first], dims[first]), object, len(first))
        return distinct[inverse].tolist()
    return _shape_tuples(rank, dims)  # two shapes hashed alike: one tuple each


def _groups(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A row of each distinct key, and each row's group (an index into the first): what ``np.unique`` gives with
    ``return_index`` and ``return_inverse``, less its stable sort (at 100,000 rows 11 ms against this quicksort's
    0.7). Any row of a group stands for it: rows of a key are equal, or compared afterwards."""
    order = np.argsort(key)
    ordered = key[order]
    new = np.ones(len(key), bool)  # where a group starts, in sorted order
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    inverse = np.empty(len(key), np.intp)
    inverse[order] = np.cumsum(new) - 1
    return order[new], inverse


def _shape_tuples(rank: np.ndarray, dims: np.ndarray) -> list[tuple[int, ...]]:
    """One shape tuple per row, built a rank at a time."""
    shapes = np.empty(len(rank), object)
    for r in sorted(set(rank.tolist())):  # not np.unique: in numpy 2.4 it imports numpy.ma (15 ms)
        rows = np.flatnonzero(rank == r)
        tuples = zip(*dims[rows, :r].T.tolist(), strict=True) if r else repeat((), len(rows))
        shapes[rows] = np.fromiter(tuples, object, len(rows))
    return shapes.tolist()


def _header_by_protobuf(value: bytes, what: str) -> Header:
    header = _parse("BundleHeaderProto", value, what)
    version = header.version
    return Header(header.num_shards, header.endianness, version.min_consumer, tuple(version.bad_consumers))


def _parse(message: str, value: bytes, what: str) -> Any:
    """The protobuf ``message`` (a name in ``weightscope._proto``) in ``value``."""
    from google.protobuf.message import DecodeError

    from weightscope import _proto  # imported on first need: the common path decodes by hand

    try:
        return getattr(_proto, message).FromString(value)
    except DecodeError as error:
        raise CorruptCheckpointError(f"{what} is not a valid protocol buffer ({error})") from None
