"""Fuzz the ONNX reader: the ModelProto, initializers in every data field, and external data references.

The input is the model's bytes; a fixed external data file ``weights.bin`` lies beside it
(and ``../outside.bin`` just outside the model's folder, which must stay refused).
"""

from __future__ import annotations

import fuzzlib
import numpy as np

with fuzzlib.instrumented():
    import weightscope.formats.onnx  # noqa: F401 - instrumented for coverage

FOLDER = fuzzlib.SCRATCH / "onnx-model"
FOLDER.mkdir(exist_ok=True)
WEIGHTS = np.arange(256, dtype=np.float32).tobytes()
(FOLDER / "weights.bin").write_bytes(WEIGHTS)
(fuzzlib.SCRATCH / "outside.bin").write_bytes(WEIGHTS)


def seeds() -> list[bytes]:
    """Models made with onnx's helpers: raw and typed initializers of several types, and external ones."""
    import hashlib

    import ml_dtypes
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inside = [
        numpy_helper.from_array(rng.standard_normal((2, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal(3).astype(np.float16), "half"),
        numpy_helper.from_array(rng.standard_normal(2).astype(ml_dtypes.bfloat16), "brain"),
        numpy_helper.from_array(np.array([1, -2], np.int64), "i64"),
        numpy_helper.from_array(np.zeros((0, 2), np.float32), "empty"),
        helper.make_tensor("typed_float", TensorProto.FLOAT, [2], [1.0, -2.0]),
        helper.make_tensor("typed_int8", TensorProto.INT8, [3], [1, -2, 3]),
        helper.make_tensor("typed_u64", TensorProto.UINT64, [1], [2**64 - 1]),
        helper.make_tensor("typed_double", TensorProto.DOUBLE, [1], [0.1]),
        helper.make_tensor("int4", TensorProto.INT4, [3], [1, -2, 7]),
        helper.make_tensor("strings", TensorProto.STRING, [2], [b"a", b"bc"]),
    ]
    external = []
    for name, offset, length, checksum in (("e1", 0, 64, True), ("e2", 64, 128, False), ("e3", 512, None, False)):
        tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[(length or len(WEIGHTS) - offset) // 4])
        tensor.data_location = TensorProto.EXTERNAL
        entries = {"location": "weights.bin", "offset": str(offset)}
        if length is not None:
            entries["length"] = str(length)
        if checksum:
            entries["checksum"] = hashlib.sha1(WEIGHTS).hexdigest()
        for key, value in entries.items():
            tensor.external_data.add(key=key, value=value)
        external.append(tensor)
    files = []
    for initializers in (inside, external, inside[:2] + external[:1]):
        graph = helper.make_graph([], "g", [], [], initializer=initializers)
        model = helper.make_model(graph, producer_name="fuzz")
        model.metadata_props.add(key="k", value="v")
        files.append(model.SerializeToString())
    constants = [  # weights and shapes in Constant nodes, used by a Gemm and a Reshape
        helper.make_node("Constant", [], [name], value=value)
        for name, value in (("cw", inside[0]), ("cb", inside[1]), ("shape", inside[3]), ("s", inside[5]))
    ]
    uses = [
        helper.make_node("Gemm", ["x", "cw", "cb"], ["h"], name="fc"),
        helper.make_node("Reshape", ["h", "shape"], ["y"]),
    ]
    files.append(
        helper.make_model(helper.make_graph(constants + uses, "g", [], [], initializer=inside[:1])).SerializeToString()
    )
    del onnx
    return files


def one_input(data: bytes) -> None:
    fuzzlib.exercise(fuzzlib.scratch_file("onnx-model/model.onnx", data), "onnx")


if __name__ == "__main__":
    fuzzlib.run(one_input, seeds())
