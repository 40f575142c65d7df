"""Fuzz the TFLite reader and the flatbuffer reader under it: tables, vtables, offsets, buffers, quantisation,
sparsity, operators (and dequantising, as ``--dequantize`` reads)."""

from __future__ import annotations

from pathlib import Path

import fuzzlib

with fuzzlib.instrumented():
    import weightscope.flatbuffers
    import weightscope.formats.tflite
    import weightscope.formats.tflite_sparsity

import weightscope as ws
from weightscope.errors import WeightscopeError
from weightscope.summary import summarize

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "tflite"


def seeds() -> list[bytes]:
    """The models TensorFlow's converter made for the tests (float, int8, int4, sparse, offset buffers, subgraphs)."""
    return [path.read_bytes() for path in sorted(FIXTURES.glob("*.tflite"))]


def one_input(data: bytes) -> None:
    path = fuzzlib.scratch_file("input.tflite", data)
    fuzzlib.exercise(path, "tflite")
    try:  # what diff and summary ask of a dequantised model besides its values
        with ws.open(path, format="tflite", dequantize=True) as ckpt:
            for name in ckpt:
                ckpt.framework_name(name)
                ckpt[name]
            summarize(ckpt)
    except WeightscopeError:
        pass


if __name__ == "__main__":
    fuzzlib.run(one_input, seeds())
