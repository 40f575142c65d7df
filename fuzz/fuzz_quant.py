"""Fuzz quantised weights read dequantised (weightscope.quant): safetensors files of every scheme's parts, mutated."""

from __future__ import annotations

from pathlib import Path

import fuzzlib
import numpy as np

with fuzzlib.instrumented():
    import weightscope as ws
    from weightscope.errors import WeightscopeError

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "quant"


def seeds() -> list[bytes]:
    """The committed fixtures' safetensors files (a folder's config.json left out: the schemes found by their parts)."""
    return [
        path.read_bytes() for path in sorted(FIXTURES.rglob("*.safetensors")) if path.name != "expected.safetensors"
    ]


def one_input(data: bytes) -> None:
    path = fuzzlib.scratch_file("input.safetensors", data)
    try:
        with ws.open(path, format="safetensors", dequantize=True) as ckpt:
            for name in ckpt:
                array = ckpt[name]
                if array.size:
                    np.asarray(array).reshape(-1)[[0, -1]]
    except WeightscopeError:
        pass


if __name__ == "__main__":
    fuzzlib.run(one_input, seeds())
