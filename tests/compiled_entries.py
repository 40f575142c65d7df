"""The compiled decoder's entries (``weightscope._tables.decode_entries``) as numpy's ``Entries``, for the tests
that hold the two decoders equal: the reader itself hands the compiled decoder's rows straight to its checks and
columns (``_bundle_index.entry_columns``), never as ``Entries``."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from weightscope import _tables
from weightscope.formats._bundle_index import MAX_RANK, Entries


class Compiled(NamedTuple):
    entries: Entries  # dims up to the highest rank met (numpy's hold 1s past it)
    shapes: list[tuple[int, ...]]  # each entry's shape, one tuple per distinct shape; () where not decoded
    rows: bytearray  # the decoder's rows of fields, which ``check_rows`` reads


def compiled_entries(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> Compiled:
    decoded = _tables.decode_entries(data, starts, ends)
    assert decoded is not None, "the bounds lie outside the data"
    rows, shapes = decoded
    fields = np.frombuffer(rows, np.int64).reshape(len(starts), 7 + MAX_RANK).T  # an entry's fields are a row
    taken, dtype, shard, offset, size, crc32c, rank = fields[:7]
    dims = fields[7 : 7 + int(rank.max(initial=0))].T
    return Compiled(Entries(taken != 0, dtype, shard, offset, size, crc32c, rank, dims), shapes, rows)
