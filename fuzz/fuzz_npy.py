"""Fuzz the ``.npy`` reader: magic, version, header length, the header literal, descr, shape, data."""

from __future__ import annotations

import io

import fuzzlib
import numpy as np

with fuzzlib.instrumented():
    import weightscope.formats.numpy_files  # noqa: F401 - instrumented for coverage; fuzzlib.exercise opens the files


def seeds() -> list[bytes]:
    """Files ``np.save`` writes: several dtypes and ranks, Fortran order, version 2.0 and 3.0, fields, Python 2's."""
    arrays = [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.asfortranarray(np.arange(6, dtype=">i2").reshape(2, 3)),
        np.array(3.5, np.float64),
        np.zeros((0, 5), np.uint8),
        np.array([True, False]),
        np.array([1 + 2j], np.complex64),
        np.zeros(2, dtype=[("a", "<i4"), ("b", "<f2", (2,))]),
    ]
    files = []
    for array in arrays:
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        files.append(buffer.getvalue())
    for version in ((2, 0), (3, 0)):
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, np.ones(3, np.int64), version=version)
        files.append(buffer.getvalue())
    # Python 2's np.save wrote long integers (3L): the header numpy filters token by token.
    header = b"{'descr': '<i8', 'fortran_order': False, 'shape': (3L,), }"
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    files.append(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + np.ones(3, "<i8").tobytes())
    return files


def one_input(data: bytes) -> None:
    fuzzlib.exercise(fuzzlib.scratch_file("input.npy", data), "npy")


if __name__ == "__main__":
    fuzzlib.run(one_input, seeds())
