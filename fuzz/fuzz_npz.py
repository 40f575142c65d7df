"""Fuzz the ``.npz`` reader: the zip directory, local headers, stored and deflated members, CRCs, ``.npy`` headers."""

from __future__ import annotations

import io

import fuzzlib
import numpy as np

with fuzzlib.instrumented():
    from weightscope.formats.numpy_files import save


ARRAYS = {
    "weight": np.arange(12, dtype=np.float32).reshape(3, 4),
    "bias": np.ones(4, np.float16),
    "step": np.array(3, np.int64),
    "empty": np.zeros((0, 2), np.uint8),
}


def seeds() -> list[bytes]:
    """What weightscope's writer, ``np.savez`` and ``np.savez_compressed`` write."""
    path = fuzzlib.SCRATCH / "seed.npz"
    save(ARRAYS, path)
    files = [path.read_bytes()]
    for write in (np.savez, np.savez_compressed):
        buffer = io.BytesIO()
        write(buffer, **ARRAYS)
        files.append(buffer.getvalue())
    return files


def one_input(data: bytes) -> None:
    fuzzlib.exercise(fuzzlib.scratch_file("input.npz", data), "npz")


if __name__ == "__main__":
    fuzzlib.run(one_input, seeds())
