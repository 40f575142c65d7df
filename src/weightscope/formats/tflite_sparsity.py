"""TFLite's sparse tensors densified as the runtime's ``FormatConverter::SparseToDense`` does.

A sparse tensor (``SparsityParameters``, a variant of TACO's format) of dense shape ``(d0 ..
dn-1)`` with an optional k-dimensional block is traversed over ``n + k`` levels in
``traversal_order``; level ``l`` has ``dim_metadata[l]``: DENSE (0) with ``dense_size``, or
SPARSE_CSR (1) with ``array_segments`` and ``array_indices`` (each an ``Int32Vector``,
``Uint16Vector`` or ``Uint8Vector``). The runtime's ``Populate`` walks the levels depth first:
a dense level visits ``0 .. dense_size-1`` (position ``prev * size + i``), a sparse one the
indices ``array_indices[array_segments[prev] .. array_segments[prev + 1]]`` (position the
index's own); each leaf takes the next stored value. A leaf's coordinate in level ``i < n`` is
that of dimension ``traversal_order[i]``; a block level ``i >= n`` refines dimension
``block_map[traversal_order[i] - n]`` as ``coordinate * block_size + index``, with block size
``dense_size[traversal_order[n + b]]`` (the runtime indexes it so). Here the walk is done a
level at a time with numpy, in the same order.

A reader must refuse what the runtime would read out of bounds or silently skip: a traversal
order that is no permutation, a block map naming no dimension, fewer or more dim metadata than
levels, a segment past its array or running backwards, an index past its array, a coordinate
outside the dense shape, more positions at a level than the dense tensor has elements, and a
count of leaves other than the values stored.
"""

from __future__ import annotations

import math

import numpy as np

from weightscope.errors import CorruptCheckpointError
from weightscope.flatbuffers import Table
from weightscope.limits import Limits

_DENSE, _SPARSE_CSR = 0, 1
_INDEX_VECTORS = {1: "int32", 2: "uint16", 3: "uint8"}  # SparseIndexVector's members: values in slot 0


def densify(values: np.ndarray, shape: tuple[int, ...], sparsity: Table, where: str) -> np.ndarray:
    """The dense tensor of ``shape`` whose non-zeros ``values`` and ``sparsity`` describe."""
    rank = len(shape)
    order = _ints(sparsity, 0, "traversal_order", where)
    block_map = _ints(sparsity, 1, "block_map", where)
    levels = sparsity.tables(2, "dim_metadata")
    if sorted(order) != list(range(len(order))) or len(order) != rank + len(block_map) or len(levels) != len(order):
        raise CorruptCheckpointError(
            f"{where}: sparsity traversal_order {order}, block_map {block_map} and {len(levels)} dim_metadata "
            f"do not fit a tensor of rank {rank}"
        )
    if any(not 0 <= dimension < rank for dimension in block_map):
        raise CorruptCheckpointError(f"{where}: sparsity block_map {block_map} names dimensions outside 0..{rank - 1}")
    dense = math.prod(shape)
    Limits.for_size(0).check_expansion(dense * values.itemsize, values.nbytes, "densified, it", where)
    dense_sizes = [level.integer(1, "int32") for level in levels]
    block_size = [dense_sizes[order[rank + block]] for block in range(len(block_map))]
    previous = np.zeros(1, np.int64)
    coordinates: list[np.ndarray] = []
    for number, level in enumerate(levels):
        if level.integer(0, "int8") == _DENSE:
            size = dense_sizes[number]
            if size < 0 or previous.size * size > max(dense, 1):
                raise CorruptCheckpointError(f"{where}: sparsity level {number} makes more positions than {shape}")
            coordinates = [np.repeat(column, size) for column in coordinates]
            coordinates.append(np.tile(np.arange(size, dtype=np.int64), previous.size))
            previous = (previous[:, None] * size + np.arange(size, dtype=np.int64)).reshape(-1)
            continue
        segments = _index_vector(level, 2, f"level {number}'s array_segments", where)
        indices = _index_vector(level, 4, f"level {number}'s array_indices", where)
        if previous.size and int(previous.max()) + 1 >= segments.size:
            raise CorruptCheckpointError(f"{where}: sparsity level {number}: array_segments too short")
        starts, ends = segments[previous], segments[previous + 1]
        counts = ends - starts
        total = int(counts.sum()) if counts.size else 0
        if (counts.size and int(counts.min()) < 0) or total > max(dense, 1):
            raise CorruptCheckpointError(f"{where}: sparsity level {number}: array_segments out of order")
        positions = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(total, dtype=np.int64)
        if total and (int(positions.min()) < 0 or int(positions.max()) >= indices.size):
            raise CorruptCheckpointError(f"{where}: sparsity level {number}: a segment runs past array_indices")
        coordinates = [np.repeat(column, counts) for column in coordinates]
        coordinates.append(indices[positions])
        previous = positions
    if previous.size != values.size:
        raise CorruptCheckpointError(
            f"{where}: sparsity describes {previous.size} values; the buffer holds {values.size}"
        )
    original = [np.zeros(previous.size, np.int64) for _ in range(rank)]
    for depth in range(rank):
        original[order[depth]] = coordinates[depth]
    for depth in range(rank, len(order)):
        block = order[depth] - rank
        if not 0 <= block < len(block_map):
            raise CorruptCheckpointError(f"{where}: sparsity traversal_order {order} names no block at level {depth}")
        dimension = block_map[block]
        original[dimension] = original[dimension] * block_size[block] + coordinates[depth]
    for dimension, column in enumerate(original):
        if column.size and (int(column.min()) < 0 or int(column.max()) >= shape[dimension]):
            raise CorruptCheckpointError(f"{where}: a sparse value lies outside shape {list(shape)}")
    out = np.zeros(dense, values.dtype)
    if previous.size:
        out[np.ravel_multi_index(tuple(original), shape)] = values
    return out.reshape(shape)


def _ints(table: Table, slot: int, name: str, where: str) -> list[int]:
    found = table.scalars(slot, "int32", f"sparsity {name}")
    return [] if found is None else [int(value) for value in found]


def _index_vector(level: Table, slot: int, what: str, where: str) -> np.ndarray:
    kind, vector = level.union(slot, what)
    if kind not in _INDEX_VECTORS or vector is None:
        raise CorruptCheckpointError(f"{where}: sparsity {what} has union type {kind}; expected 1, 2 or 3")
    found = vector.scalars(0, _INDEX_VECTORS[kind], what)
    return np.zeros(0, np.int64) if found is None else found.astype(np.int64)
