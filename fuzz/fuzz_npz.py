"""Fuzz the ``.npz`` reader: the zip directory, local headers, stored and deflated members, CRCs, ``.npy`` headers."""

from __future__ import annotations

import io

import fuzzlib
import numpy as np

with fuzzlib.instrumented():
    from weightscope.formats.numpy_files import save


def _patch_atheris_array_compare_leak() -> None:
    """Compare numpy arrays without atheris: its ``_trace_cmp`` (3.0.0) keeps two references to an array result.

    Every array comparison in the instrumented reader would leak its result, and the
    process would reach the 2 GiB limit after some ten thousand inputs. Arrays are not
    what the comparison feedback is for; everything else still goes to atheris.
    """
    import operator

    import atheris
    from atheris.version_dependent import CMP_OP_SHIFT_AMOUNT

    native = atheris._trace_cmp
    compare = (operator.lt, operator.le, operator.eq, operator.ne, operator.gt, operator.ge)

    def trace_cmp(left: object, right: object, op: int, counter: int, is_const: bool) -> object:
        if isinstance(left, np.ndarray) or isinstance(right, np.ndarray):
            return compare[op >> CMP_OP_SHIFT_AMOUNT](left, right)
        return native(left, right, op, counter, is_const)

    if getattr(native, "__name__", "") != "trace_cmp":
        atheris._trace_cmp = trace_cmp


_patch_atheris_array_compare_leak()

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
