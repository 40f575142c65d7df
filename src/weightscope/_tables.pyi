"""The compiled parsers of TensorFlow's index tables and bundle entries (src/weightscope/_tables.c)."""

from collections.abc import Sequence

import numpy as np

def parse_blocks(
    blocks: Sequence[tuple[bytes, int, bytes | memoryview]], room: int, /
) -> tuple[list[str], bytearray, int] | None: ...
def decode_entries(data: np.ndarray, starts: np.ndarray, ends: np.ndarray, /) -> bytearray | None: ...
