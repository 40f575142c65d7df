"""Fuzz the safetensors reader: header length, JSON header, dtypes, offsets, data."""

from __future__ import annotations

import io
import json

import fuzzlib
import numpy as np

with fuzzlib.instrumented():
    from weightscope.formats.safetensors import save


def seeds() -> list[bytes]:
    """Small real files: several dtypes, a scalar, an empty tensor, metadata; every dtype; headers alone."""
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
    # Headers alone (see one_input): every dtype, names with escapes, a float8 tensor.
    sizes = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4}
    sizes |= {"C64": 8, "F64": 8, "I64": 8, "U64": 8, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E4M3FNUZ": 1}
    sizes |= {"F8_E5M2FNUZ": 1, "F8_E8M0": 1}
    entries, offset = {}, 0
    for i, (code, size) in enumerate(sizes.items()):
        entries[f"t{i}\x1b[31m"] = {"dtype": code, "shape": [1], "data_offsets": [offset, offset + size]}
        offset += size
    files.append(json.dumps({"__metadata__": {"k": "v"}, **entries}).encode() + b"\x01" * offset)
    for file in files[:2]:  # headers with data, their length left to one_input
        length = int.from_bytes(file[:8], "little")
        files.append(file[8 : 8 + length].rstrip(b" ") + file[8 + length :])
    return files


def as_file(data: bytes) -> bytes:
    """Inputs starting with ``{`` are a header and its data: given the length that header has.

    A mutated JSON header nearly always contradicts its length first; so that the
    mutations reach the JSON and the checks behind it, the fuzzer also writes headers
    alone, ending at their last ``}``.
    """
    if not data.startswith(b"{"):
        return data
    end = data.rfind(b"}") + 1
    return end.to_bytes(8, "little") + data


def one_input(data: bytes) -> None:
    fuzzlib.exercise(fuzzlib.scratch_file("input.safetensors", as_file(data)), "safetensors")


if __name__ == "__main__":
    fuzzlib.run(one_input, seeds())
