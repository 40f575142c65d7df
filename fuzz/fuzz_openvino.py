"""Fuzz the OpenVINO IR reader: the XML (layers, Consts' data, ports, edges, DOCTYPEs) and decompression subgraphs.

The input is the IR's ``model.xml``; a fixed ``model.bin`` of 16 KiB lies beside it (its bytes are any values, so
only the XML's offsets and sizes matter). Each input is read as stored and again dequantised.
"""

from __future__ import annotations

from pathlib import Path

import fuzzlib
import numpy as np

with fuzzlib.instrumented():
    import weightscope.formats.openvino
    import weightscope.quant

TESTS = Path(__file__).resolve().parent.parent / "tests"
(fuzzlib.SCRATCH / "model.bin").write_bytes(np.arange(4096, dtype=np.float32).tobytes())


def seeds() -> list[bytes]:
    """The IRs openvino and nncf wrote (tests/fixtures/openvino) and the broken ones of tests/corpus/openvino."""
    files = sorted((TESTS / "fixtures" / "openvino").glob("*.xml")) + sorted(
        (TESTS / "corpus" / "openvino").glob("*.xml")
    )
    return [path.read_bytes() for path in files]


def one_input(data: bytes) -> None:
    path = fuzzlib.scratch_file("model.xml", data)
    fuzzlib.exercise(path, "openvino")
    try:
        with weightscope.open(path, format="openvino", dequantize=True) as ckpt:
            for name in ckpt:
                ckpt[name]
    except weightscope.WeightscopeError:
        pass


if __name__ == "__main__":
    fuzzlib.run(one_input, seeds())
