"""Fuzz the Core ML reader: the Model protobuf (neural networks, ML programs) and an ML package's weight.bin.

The input's first byte chooses what the rest is: even, the package's ``model.mlmodel`` (beside the weight file of
the fixture it came from); odd, its ``weight.bin`` (beside that fixture's model). Each package is read as stored
and with ``dequantize=True``, where the quantised weights' arithmetic runs too.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import fuzzlib

with fuzzlib.instrumented():
    import weightscope.formats.coreml
    import weightscope.quant.coreml  # noqa: F401

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "coreml"
PACKAGE = fuzzlib.SCRATCH / "fuzz.mlpackage"
SOURCE = "mlp_block4_ios18.mlpackage"  # int4 blobs, an fp16 const, immediate values and a constexpr op
MODEL = Path("Data/com.apple.CoreML/model.mlmodel")
WEIGHTS = Path("Data/com.apple.CoreML/weights/weight.bin")
if not PACKAGE.exists():
    shutil.copytree(FIXTURES / SOURCE, PACKAGE)
ORIGINAL = {MODEL: (FIXTURES / SOURCE / MODEL).read_bytes(), WEIGHTS: (FIXTURES / SOURCE / WEIGHTS).read_bytes()}


def seeds() -> list[bytes]:
    """Every fixture's model (the neural networks' too, read as the package's model) and weight files."""
    found = [b"\0" + path.read_bytes() for path in sorted(FIXTURES.glob("*.mlmodel"))]
    for package in sorted(FIXTURES.glob("*.mlpackage")):
        found.append(b"\0" + (package / MODEL).read_bytes())
        found.append(b"\1" + (package / WEIGHTS).read_bytes())
    return found


def one_input(data: bytes) -> None:
    if not data:
        return
    fuzzed, kept = (MODEL, WEIGHTS) if data[0] % 2 == 0 else (WEIGHTS, MODEL)
    (PACKAGE / fuzzed).write_bytes(data[1:])
    (PACKAGE / kept).write_bytes(ORIGINAL[kept])
    fuzzlib.exercise(PACKAGE, "coreml")
    fuzzlib.exercise(PACKAGE, "coreml", dequantize=True)


if __name__ == "__main__":
    fuzzlib.run(one_input, seeds())
