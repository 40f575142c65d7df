"""Fuzz metadata editing (weightscope.metadata_edit): reading a safetensors or GGUF file's metadata, then setting and
deleting keys in place or by copy. Besides the rule every harness checks (only a WeightscopeError comes out), an
edit that succeeds must leave every tensor as it was and the file readable by its reader."""

from __future__ import annotations

import fuzzlib
import numpy as np

with fuzzlib.instrumented():
    import weightscope as ws
    from weightscope.errors import WeightscopeError
    from weightscope.metadata_edit import edit_metadata, read_metadata  # and the readers it uses

SUFFIXES = (".gguf", ".safetensors")


def seeds() -> list[bytes]:
    """A GGUF file of every value type, and safetensors files with and without metadata; the first byte picks
    the suffix (even: GGUF), the second whether the edit copies."""
    import gguf
    from safetensors.numpy import save_file

    path = fuzzlib.SCRATCH / "seed.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_uint32("t.u32", 7)
    writer.add_float32("t.f32", 0.5)
    writer.add_bool("t.bool", True)
    writer.add_string("t.str", "héllo")
    writer.add_array("t.ints", [1, 2, 3])
    writer.add_array("t.words", ["a", "bc"])
    writer.add_tensor("f32", np.arange(8, dtype=np.float32).reshape(2, 4))
    writer.add_tensor("f16", np.ones(3, np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    files = [b"\0\0" + path.read_bytes(), b"\0\1" + path.read_bytes()]
    tensors = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(2, np.int64)}
    for metadata in (None, {"format": "pt", "t.str": "x" * 40}):
        target = fuzzlib.SCRATCH / "seed.safetensors"
        save_file(tensors, target, metadata=metadata)
        files += [b"\1\0" + target.read_bytes(), b"\1\1" + target.read_bytes()]
    return files


def _tensors(path: object) -> dict[str, bytes] | None:
    try:
        with ws.open(path) as ckpt:  # type: ignore[arg-type]
            return {name: np.ascontiguousarray(ckpt[name]).tobytes() for name in ckpt}
    except WeightscopeError:
        return None


def one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    path = fuzzlib.scratch_file("input" + SUFFIXES[data[0] % 2], data[2:])
    try:
        _, entries = read_metadata(path)
    except WeightscopeError:
        return
    before = _tensors(path)
    assignments = [("fuzz.new", "value")]
    if entries:
        assignments.append((entries[0].key, "1"))
    deletions = [entries[-1].key] if len(entries) > 1 else []
    try:
        edit_metadata(path, assignments, deletions, copy=bool(data[1] % 2))
    except WeightscopeError:
        return
    if before is not None:
        assert _tensors(path) == before, "an edit changed the tensors"


if __name__ == "__main__":
    fuzzlib.run(one_input, seeds())
