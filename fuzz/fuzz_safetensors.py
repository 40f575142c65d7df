"""Fuzz the safetensors reader: header length, JSON header, dtypes, offsets, data."""

from __future__ import annotations

import io
import json

import fuzzlib
import numpy as np

with fuzzlib.instrumented():
    from weightscope.formats.safetensors import save


def seeds() -> list[bytes]:
    """Small real files: several dtypes, a scalar, an empty tensor, metadata."""
    tensors = {
        "layer1.weight": np.arange(10, dtype=np.float32).reshape(5, 2),
        "layer1.bias": np.ones(5, np.float16),
        "step": np.array(3, np.int64),
        "empty": np.zeros((0, 4), np.uint8),
    }
    files = []
    for metadata in (None, {"format": "pt"}):
        path = fuzzlib.SCRATCH / "seed.safetensors"
        save(tensors, path, metadata=metadata)
        files.append(path.read_bytes())
    header = json.dumps({"x": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}).encode()
    buffer = io.BytesIO()
    buffer.write(len(header).to_bytes(8, "little") + header + b"\0" * 4)
    files.append(buffer.getvalue())
    return files


def one_input(data: bytes) -> None:
    fuzzlib.exercise(fuzzlib.scratch_file("input.safetensors", data), "safetensors")


if __name__ == "__main__":
    fuzzlib.run(one_input, seeds())
