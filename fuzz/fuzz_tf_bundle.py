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
    from weightscope.formats.tensorflow import data_file_name
    from weightscope.formats.tensorflow_writer import save


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
