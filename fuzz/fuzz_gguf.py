"""Fuzz the GGUF reader: header, typed metadata, tensor infos, alignment, plain and quantised tensors."""

from __future__ import annotations

import fuzzlib
import numpy as np

with fuzzlib.instrumented():
    import weightscope.formats.gguf  # noqa: F401 - instrumented for coverage


def seeds() -> list[bytes]:
    """Small files written by gguf-py: metadata of every type, plain tensors, and one tensor of every quantised type."""
    import gguf

    rng = np.random.default_rng(0)
    path = fuzzlib.SCRATCH / "seed.gguf"
    files = []
    quantised = [qtype for qtype in gguf.GGMLQuantizationType if qtype.name not in ("F32", "F16", "BF16", "F64")]
    quantised = [qtype for qtype in quantised if not qtype.name.startswith("I") or qtype.name.startswith("IQ")]
    for group in (quantised[: len(quantised) // 2], quantised[len(quantised) // 2 :], []):
        writer = gguf.GGUFWriter(path, "llama")
        writer.add_uint32("t.u32", 7)
        writer.add_int64("t.i64", -(2**63))
        writer.add_float32("t.f32", 0.5)
        writer.add_bool("t.bool", True)
        writer.add_string("t.str", "héllo")
        writer.add_array("t.ints", [1, 2, 3])
        writer.add_array("t.words", ["a", "bc"])
        if not group:
            writer.add_uint32("general.alignment", 64)
        writer.add_tensor("f32", np.arange(8, dtype=np.float32).reshape(2, 4))
        writer.add_tensor("f16", np.ones(3, np.float16))
        writer.add_tensor("i8", np.arange(4, dtype=np.int8))
        writer.add_tensor(
            "bf16", np.arange(4, dtype=np.uint16).view(np.uint8), raw_dtype=gguf.GGMLQuantizationType.BF16
        )
        for qtype in group:
            if qtype not in gguf.GGML_QUANT_SIZES:
                continue
            _, size = gguf.GGML_QUANT_SIZES[qtype]
            raw = rng.integers(0, 256, (1, size), dtype=np.uint8)
            raw[:, :2] = np.frombuffer(np.float16(0.25).tobytes(), np.uint8)  # a finite scale where most keep it
            writer.add_tensor(qtype.name, raw, raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        files.append(path.read_bytes())
    return files


def one_input(data: bytes) -> None:
    fuzzlib.exercise(fuzzlib.scratch_file("input.gguf", data), "gguf")


if __name__ == "__main__":
    fuzzlib.run(one_input, seeds())
