"""Fuzz the TensorFlow data file reader: tensor bytes, string tensors, checksums, bounds.

The input is the data file ``model.ckpt.data-00000-of-00001``; the index beside it is
one fixed valid file. Mutated bytes mostly fail their checksums (the expected error), so
every input is also read with ``verify=False``, which reaches the decoding behind them.
"""

from __future__ import annotations

import fuzzlib
import numpy as np

with fuzzlib.instrumented():
    import weightscope as ws
    from weightscope.errors import WeightscopeError
    from weightscope.formats.tensorflow import data_file_name, save


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

DIRECTORY = fuzzlib.SCRATCH / "tf_bundle"
PREFIX = DIRECTORY / "model.ckpt"
DATA = DIRECTORY / data_file_name("model.ckpt", 0, 1)
TENSORS = {
    "dense/kernel": np.arange(12, dtype=np.float32).reshape(3, 4),
    "dense/bias": np.ones(4, np.float16),
    "global_step": np.array(7, np.int64),
    "names": np.array([b"a", b"bc", b"", b"d" * 200], dtype=object),
    "label": np.array(b"scalar string", dtype=object),
    "empty": np.zeros((0, 3), np.int8),
    "flags": np.array([True, False]),
    "complex": np.array([1 + 2j], np.complex64),
}
save(TENSORS, PREFIX, update_state=False)  # the fixed index, and the seed's data


def seeds() -> list[bytes]:
    """The data file ``save`` wrote for the fixed index."""
    return [DATA.read_bytes()]


def _read_unverified() -> None:
    try:
        with ws.open(PREFIX, format="tensorflow", verify=False) as ckpt:
            for name in ckpt:
                array = ckpt[name]
                if array.dtype.kind not in "OV" and array.size:
                    np.asarray(array).reshape(-1)[[0, -1]]
    except WeightscopeError:
        pass


def one_input(data: bytes) -> None:
    DATA.write_bytes(data)
    fuzzlib.exercise(PREFIX, "tensorflow")
    _read_unverified()


if __name__ == "__main__":
    fuzzlib.run(one_input, seeds())
