"""The compiled parsers of TensorFlow's index tables and bundle entries (src/weightscope/_tables.c)."""

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import numpy as np

_Row = TypeVar("_Row", bound=tuple[Any, ...])

def parse_blocks(
    blocks: Sequence[tuple[bytes, int, bytes | memoryview]], room: int, /
) -> tuple[list[str], bytearray, int] | None: ...
def decode_entries(
    data: np.ndarray, starts: np.ndarray, ends: np.ndarray, /
) -> tuple[bytearray, list[tuple[int, ...]]] | None: ...
def check_entries(
    rows: bytearray, element_index: np.ndarray, itemsizes: np.ndarray, shard_sizes: np.ndarray, /
) -> tuple[bytearray, list[int]]: ...
def entry_columns(
    rows: bytearray,
    checked: bytearray,
    shapes: list[tuple[int, ...]],
    dtypes: list[Any],
    type_names: list[Any],
    files: list[str],
    numbers: np.ndarray,
    start: int,
    columns: list[list[Any]],
    /,
) -> list[int]: ...
def first_overlap(extents: np.ndarray, order: np.ndarray, /) -> tuple[int, int] | None: ...
def rows(cls: type[_Row], columns: Sequence[list[Any] | np.ndarray], /) -> Iterator[_Row]: ...
