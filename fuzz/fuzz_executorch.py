"""Fuzz the ExecuTorch reader: the extended header, the program flatbuffer, segments, tensors and the size breakdown."""

from __future__ import annotations

from pathlib import Path

import fuzzlib

import weightscope as ws
from weightscope.errors import WeightscopeError

with fuzzlib.instrumented():
    import weightscope.flatbuffers
    import weightscope.formats.executorch

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "executorch"


def seeds() -> list[bytes]:
    """The programs ExecuTorch exported (tests/fixtures/executorch): segment and inline constants, channels-last,
    every element type, two methods, mutable state, external constants, an XNNPACK delegate."""
    return [path.read_bytes() for path in sorted(FIXTURES.glob("*.pte"))]


def one_input(data: bytes) -> None:
    path = fuzzlib.scratch_file("input.pte", data)
    fuzzlib.exercise(path, "executorch")
    try:
        with ws.open(path, format="executorch") as ckpt:
            ckpt.size_breakdown()
    except WeightscopeError:
        pass


if __name__ == "__main__":
    fuzzlib.run(one_input, seeds())
