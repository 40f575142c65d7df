"""TFLite models made by TensorFlow's converter (tests/fixtures/tflite/make_tflite.py), read against the runtime.

Every constant tensor is compared with what ``tf.lite.Interpreter`` itself holds for it (``get_tensor``: names,
shapes, dtypes, bytes, quantisation parameters), the set of constant tensors with what TensorFlow's own generated
schema code finds in the flatbuffer, dequantised values with ``scale * (q - zero_point)`` from the interpreter's
parameters, and the sparse kernel with the runtime's DENSIFY output.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema

import weightscope as ws
from weightscope.analysis import checkpoint_diff
from weightscope.cli import main
from weightscope.formats.tflite import TFLiteCheckpoint
from weightscope.quant.error import quantization_error
from weightscope.summary import summarize

pytestmark = pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated:UserWarning")

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "tflite"
DENSE_MODELS = sorted(path.stem for path in FIXTURES.glob("*.tflite") if path.stem != "sparse")  # sparse: its own test
QUANTISED = ["dynamic_int8", "full_int8", "int4"]


def _interpreter(path: Path) -> Any:
    interpreter = tf.lite.Interpreter(
        str(path),
        experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        experimental_preserve_all_tensors=True,
    )
    interpreter.allocate_tensors()
    return interpreter


def _constant_tensors(path: Path) -> set[tuple[int, int]]:
    """(subgraph, tensor) of every tensor with data, as TensorFlow's generated flatbuffer code finds them."""
    model = schema.Model.GetRootAs(path.read_bytes(), 0)
    found = set()
    for number in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(number)
        for index in range(subgraph.TensorsLength()):
            buffer = subgraph.Tensors(index).Buffer()
            data = model.Buffers(buffer)
            if buffer and (data.DataLength() or data.Offset() > 1):
                found.add((number, index))
    return found


@pytest.mark.parametrize("model", DENSE_MODELS)
def test_every_constant_tensor_is_the_one_the_interpreter_holds(model: str) -> None:
    path = FIXTURES / f"{model}.tflite"
    interpreter = _interpreter(path)
    with ws.open(path) as ckpt:
        assert isinstance(ckpt, TFLiteCheckpoint) and ckpt.format == "tflite"
        places = {ckpt.tensor_index(name): name for name in ckpt}
        assert set(places) == _constant_tensors(path) and len(places) == len(ckpt)
        for (subgraph, index), name in places.items():
            details = {entry["index"]: entry for entry in interpreter.get_tensor_details(subgraph)}[index]
            expected = interpreter.get_tensor(index, subgraph)
            assert name.endswith(details["name"]) and (subgraph > 0) == (name != details["name"])
            info, values = ckpt.info(name), ckpt[name]
            assert info.shape == tuple(details["shape"]) == values.shape
            if info.type_name == "int4":  # the interpreter hands 4-bit values out one an int8
                assert np.array_equal(values.astype(np.int8), expected)
            else:
                assert values.dtype == expected.dtype and values.tobytes() == expected.tobytes()
            parameters, quantization = details["quantization_parameters"], ckpt.quantization(name)
            if quantization is None:
                assert parameters["scales"].size == 0
            else:
                assert np.array_equal(quantization.scale, parameters["scales"])
                assert np.array_equal(quantization.zero_point, parameters["zero_points"])
                assert quantization.axis == parameters["quantized_dimension"]


def test_the_converters_int4_weights_are_unpacked_low_nibble_first() -> None:
    with ws.open(FIXTURES / "int4.tflite") as ckpt:
        (name,) = list(ckpt)
        assert ckpt.info(name).type_name == "int4" and ckpt.info(name).nbytes == 12  # 24 values, two a byte
        packed = np.frombuffer((FIXTURES / "int4.tflite").read_bytes(), np.uint8, 12, ckpt.info(name).offset)
        values = ckpt[name].astype(np.int8).reshape(-1)
        assert np.array_equal(values[0::2], ((packed & 15).astype(np.int8) ^ 8) - 8)
        assert np.array_equal(values[1::2], ((packed >> 4).astype(np.int8) ^ 8) - 8)


@pytest.mark.parametrize("model", QUANTISED)
def test_dequantised_values_are_scale_times_q_minus_zero_point_as_the_runtime_computes(model: str) -> None:
    path = FIXTURES / f"{model}.tflite"
    interpreter = _interpreter(path)
    details = {entry["index"]: entry for entry in interpreter.get_tensor_details()}
    with ws.open(path) as raw, ws.open(path, dequantize=True) as ckpt:
        quantised = [name for name in raw if raw.quantization(name) is not None]
        assert quantised and set(ckpt) == set(raw)
        for name in quantised:
            index = raw.tensor_index(name)[1]
            parameters = details[index]["quantization_parameters"]
            q = interpreter.get_tensor(index).astype(np.int64)
            shape = [1] * q.ndim
            if parameters["scales"].size > 1:
                shape[parameters["quantized_dimension"]] = -1
            scale = parameters["scales"].astype(np.float64).reshape(shape)
            zero_point = parameters["zero_points"].reshape(shape)
            expected = (scale * (q - zero_point)).astype(np.float32)
            assert ckpt.info(name).type_name == "tflite_affine" and ckpt.info(name).dtype == np.float32
            assert ckpt[name].tobytes() == expected.tobytes()
        assert ckpt.info(quantised[0]).type_label == "tflite_affine → float32"


def _dequantize_model(values: np.ndarray, code: int, scale: np.ndarray, zero_point: np.ndarray, axis: int) -> bytes:
    """A model of one DEQUANTIZE operator on a constant, packed by TensorFlow's own schema code (4-bit values two a
    byte, low nibble first)."""
    from tensorflow.lite.tools import flatbuffer_utils

    model, subgraph = schema.ModelT(), schema.SubGraphT()
    operator_code, operator = schema.OperatorCodeT(), schema.OperatorT()
    operator_code.builtinCode = operator_code.deprecatedBuiltinCode = schema.BuiltinOperator.DEQUANTIZE
    operator.opcodeIndex, operator.inputs, operator.outputs = 0, np.array([0], np.int32), np.array([1], np.int32)
    stored = values.tobytes()
    if code == schema.TensorType.INT4:
        nibbles = np.append(values.reshape(-1), 0)[: values.size + values.size % 2].astype(np.uint8) & 15
        stored = (nibbles[0::2] | nibbles[1::2] << 4).astype(np.uint8).tobytes()
    data = schema.BufferT()
    data.data = np.frombuffer(stored, np.uint8)
    quantized, output, parameters = schema.TensorT(), schema.TensorT(), schema.QuantizationParametersT()
    parameters.scale, parameters.zeroPoint, parameters.quantizedDimension = scale, zero_point, axis
    quantized.shape, quantized.type, quantized.buffer, quantized.name = list(values.shape), code, 1, "q"
    quantized.quantization = parameters
    output.shape, output.type, output.buffer, output.name = list(values.shape), schema.TensorType.FLOAT32, 2, "f"
    subgraph.tensors, subgraph.operators = [quantized, output], [operator]
    subgraph.inputs, subgraph.outputs = np.array([], np.int32), np.array([1], np.int32)
    model.version, model.operatorCodes, model.subgraphs = 3, [operator_code], [subgraph]
    model.buffers = [schema.BufferT(), data, schema.BufferT()]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


# (numpy type, TFLite type, values' range, zero points' range, axis: None for one scale)
_DEQUANTIZED = {
    "int8-per-tensor": (np.int8, schema.TensorType.INT8, (-128, 128), (-128, 128), None),
    "int8-per-channel-axis-0": (np.int8, schema.TensorType.INT8, (-128, 128), (-128, 128), 0),
    "int8-per-channel-axis-1": (np.int8, schema.TensorType.INT8, (-128, 128), (0, 1), 1),
    "uint8-per-tensor": (np.uint8, schema.TensorType.UINT8, (0, 256), (0, 256), None),
    "int16-per-tensor": (np.int16, schema.TensorType.INT16, (-32768, 32768), (0, 1), None),
    "int4-per-channel": (np.int8, schema.TensorType.INT4, (-8, 8), (0, 1), 0),
}


@pytest.mark.parametrize("case", _DEQUANTIZED)
def test_dequantised_values_are_what_the_runtimes_dequantize_operator_outputs(case: str, tmp_path: Path) -> None:
    kind, code, values_range, zero_range, axis = _DEQUANTIZED[case]
    rng = np.random.default_rng(len(case))
    values = rng.integers(*values_range, (5, 7)).astype(kind)
    count = 1 if axis is None else values.shape[axis]
    scale = rng.uniform(1e-4, 2.0, count).astype(np.float32)
    zero_point = rng.integers(*zero_range, count).astype(np.int64)
    path = tmp_path / f"{case}.tflite"
    path.write_bytes(_dequantize_model(values, code, scale, zero_point, axis or 0))
    interpreter = _interpreter(path)
    interpreter.invoke()
    with ws.open(path, dequantize=True) as ckpt:
        assert list(ckpt) == ["q"] and ckpt.info("q").type_name == "tflite_affine"
        assert ckpt["q"].tobytes() == interpreter.get_tensor(1).tobytes()


def test_string_constants_are_named_in_the_metadata_not_read(tmp_path: Path) -> None:
    from tensorflow.lite.tools import flatbuffer_utils

    model, subgraph = schema.ModelT(), schema.SubGraphT()
    model.version, model.subgraphs, model.buffers, subgraph.tensors = 3, [subgraph], [schema.BufferT()], []
    for name, code, data in (("words", schema.TensorType.STRING, b"\1\0\0\0\x0c\0\0\0\x0d\0\0\0a"),
                             ("weight", schema.TensorType.FLOAT32, np.ones(2, np.float32).tobytes())):  # fmt: skip
        buffer, tensor = schema.BufferT(), schema.TensorT()
        buffer.data = np.frombuffer(data, np.uint8)
        tensor.shape, tensor.type, tensor.buffer, tensor.name = (
            [1 if name == "words" else 2],
            code,
            len(model.buffers),
            name,
        )
        model.buffers.append(buffer)
        subgraph.tensors.append(tensor)
    (tmp_path / "strings.tflite").write_bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    with ws.open(tmp_path / "strings.tflite") as ckpt:
        assert list(ckpt) == ["weight"] and ckpt.metadata["tensors_skipped"] == "words (string)"


def test_the_sparse_kernel_is_densified_as_the_runtimes_densify_op_does() -> None:
    path = FIXTURES / "sparse.tflite"
    interpreter = _interpreter(path)
    interpreter.set_tensor(0, np.ones((1, 16), np.float32))
    interpreter.invoke()
    densify = next(op for op in interpreter._get_ops_details() if op["op_name"] == "DENSIFY")
    with ws.open(path) as ckpt:
        (name,) = list(ckpt)
        assert ckpt.tensor_index(name) == (0, densify["inputs"][0])
        assert ckpt.extent(name) is None  # stored sparse: only its non-zeros
        assert ckpt.info(name).nbytes == interpreter.get_tensor(densify["inputs"][0]).nbytes < 8 * 16 * 4
        expected = interpreter.get_tensor(densify["outputs"][0])
        assert ckpt[name].tobytes() == expected.tobytes() and np.count_nonzero(expected) < expected.size
        assert ckpt.role(name).role == "weight" and ckpt.operator(name) == "FULLY_CONNECTED"


def _sparse_model(
    shape: list[int], order: list[int], block_map: list[int], levels: list[Any], values: np.ndarray
) -> bytes:
    """A sparse float32 constant and the DENSIFY operator on it, packed by TensorFlow's own schema code; ``levels``:
    a dense level's size, or a CSR level's (segments, indices)."""
    from tensorflow.lite.tools import flatbuffer_utils

    metadata = []
    for level in levels:
        dimension = schema.DimensionMetadataT()
        if isinstance(level, int):
            dimension.format, dimension.denseSize = schema.DimensionType.DENSE, level
        else:
            dimension.format = schema.DimensionType.SPARSE_CSR
            segments, indices = schema.Int32VectorT(), schema.Int32VectorT()
            segments.values, indices.values = np.array(level[0], np.int32), np.array(level[1], np.int32)
            dimension.arraySegmentsType = dimension.arrayIndicesType = schema.SparseIndexVector.Int32Vector
            dimension.arraySegments, dimension.arrayIndices = segments, indices
        metadata.append(dimension)
    sparsity = schema.SparsityParametersT()
    sparsity.traversalOrder, sparsity.dimMetadata = np.array(order, np.int32), metadata
    sparsity.blockMap = np.array(block_map, np.int32) if block_map else None
    model, subgraph, code, operator = schema.ModelT(), schema.SubGraphT(), schema.OperatorCodeT(), schema.OperatorT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.DENSIFY
    operator.opcodeIndex, operator.inputs, operator.outputs = 0, np.array([0], np.int32), np.array([1], np.int32)
    data, sparse, dense = schema.BufferT(), schema.TensorT(), schema.TensorT()
    data.data = np.frombuffer(values.astype(np.float32).tobytes(), np.uint8)
    sparse.shape, sparse.buffer, sparse.name, sparse.sparsity = shape, 1, "sparse", sparsity
    dense.shape, dense.buffer, dense.name = shape, 2, "dense"
    subgraph.tensors, subgraph.operators = [sparse, dense], [operator]
    subgraph.inputs, subgraph.outputs = np.array([], np.int32), np.array([1], np.int32)
    model.version, model.operatorCodes, model.subgraphs = 3, [code], [subgraph]
    model.buffers = [schema.BufferT(), data, schema.BufferT()]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


_SPARSE = {  # shape, traversal order, block map, levels, values
    "csr-by-columns": ([3, 4], [1, 0], [], [4, ([0, 1, 1, 3, 4], [2, 0, 1, 2])], np.arange(1, 5)),
    "blocks-of-1x4": ([4, 8], [0, 1, 2], [1], [4, ([0, 1, 1, 3, 4], [1, 0, 1, 0]), 4], np.arange(1, 17)),
    "blocks-of-2x2": (
        [4, 4], [0, 1, 2, 3], [0, 1], [2, ([0, 2, 3], [0, 1, 1]), 2, 2], np.arange(1, 13),
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", _SPARSE)
def test_block_and_column_major_sparse_tensors_densify_as_the_runtimes_densify_op_does(
    case: str, tmp_path: Path
) -> None:
    path = tmp_path / f"{case}.tflite"
    path.write_bytes(_sparse_model(*_SPARSE[case]))
    interpreter = _interpreter(path)
    interpreter.invoke()
    expected = interpreter.get_tensor(1)
    with ws.open(path) as ckpt:
        assert list(ckpt) == ["sparse"] and ckpt.extent("sparse") is None
        assert ckpt["sparse"].tobytes() == expected.tobytes() and np.count_nonzero(expected) == _SPARSE[case][4].size


def test_buffers_after_the_flatbuffer_read_as_the_inline_ones() -> None:
    with ws.open(FIXTURES / "buffer_offset.tflite") as outside, ws.open(FIXTURES / "float32.tflite") as inline:
        assert outside.metadata["metadata.buffer_location"] == "outside flatbuffers"
        assert list(outside) == list(inline)
        root = int.from_bytes((FIXTURES / "buffer_offset.tflite").read_bytes()[:4], "little")
        for name in outside:
            assert outside.info(name).offset > root
            assert outside[name].tobytes() == inline[name].tobytes()


def test_layers_say_which_tensor_is_a_convolutions_kernel_and_which_a_dense_layers() -> None:
    with ws.open(FIXTURES / "full_int8.tflite") as ckpt:
        layers = ckpt.layers()
        assert set(layers) == {"conv_1", "depthwise_1", "dense_1"}  # the model's scope left out
        operators = {name: {ckpt.operator(info.name) for info in layer.parameters.values()}
                     for name, layer in layers.items()}  # fmt: skip
        assert operators == {"conv_1": {"CONV_2D"}, "depthwise_1": {"DEPTHWISE_CONV_2D"},
                             "dense_1": {"FULLY_CONNECTED"}}  # fmt: skip
        assert layers["conv_1"].parameters["weight"].name == "small_1/conv_1/convolution"
        assert layers["dense_1"].parameters["bias"].name == "small_1/dense_1/BiasAdd"
        assert layers["dense_1"].parameters["weight"].shape == (10, 128)  # [out, in]
        assert ckpt.role("small_1/flatten_1/Reshape/shape/1").kind == "bookkeeping"
    with ws.open(FIXTURES / "full_int8.tflite", dequantize=True) as ckpt:  # dequantised, each keeps its part
        kinds = {layer.name: layer.description for layer in summarize(ckpt).layers}
        assert kinds == {
            "conv_1": "Conv2D 3×3 3 → 8 (CONV_2D)",
            "depthwise_1": "DepthwiseConv2D 3×3 → 8 (DEPTHWISE_CONV_2D)",
            "dense_1": "Dense 128 → 10 (FULLY_CONNECTED)",
        }


def test_subgraphs_other_than_the_first_prefix_their_tensors_names() -> None:
    interpreter = _interpreter(FIXTURES / "branches.tflite")
    with ws.open(FIXTURES / "branches.tflite") as ckpt:
        assert sorted(ckpt.tensor_index(name)[0] for name in ckpt) == [1, 2]
        for name in ckpt:
            subgraph, index = ckpt.tensor_index(name)
            assert name.startswith(("cond_true", "cond_false")) and name.count("/") >= 1
            assert np.array_equal(ckpt[name], interpreter.get_tensor(index, subgraph))


def test_scan_finds_no_code_and_says_what_opening_finds(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", str(FIXTURES / "float32.tflite")]) == 0
    broken = FIXTURES.parent.parent / "corpus" / "tflite" / "CorruptCheckpointError--wrong-file-identifier.tflite"
    assert main(["scan", str(broken)]) == 4
    assert "file identifier b'TFL2' at 4, expected b'TFL3'" in capsys.readouterr().err


def test_convert_writes_every_tensor_to_safetensors(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    for model in ("float32", "full_int8"):
        destination = tmp_path / f"{model}.safetensors"
        assert main(["convert", str(FIXTURES / f"{model}.tflite"), str(destination)]) == 0
        written = load_file(destination)
        with ws.open(FIXTURES / f"{model}.tflite") as ckpt:
            parameters = [name for name in ckpt if ckpt.role(name).kind == "parameter"]
            assert set(written) == set(parameters)
            for name in parameters:
                assert np.array_equal(written[name], ckpt[name].astype(written[name].dtype))
    assert main(["convert", str(FIXTURES / "int4.tflite"), str(tmp_path / "int4.safetensors")]) == 5  # no int4 there
    for model in ("full_int8", "int4"):
        dequantised = tmp_path / f"{model}-dequantised.safetensors"
        assert main(["convert", "--dequantize", str(FIXTURES / f"{model}.tflite"), str(dequantised)]) == 0
        with ws.open(FIXTURES / f"{model}.tflite", dequantize=True) as ckpt:
            written = load_file(dequantised)
            assert written and all(written[name].dtype == np.float32 and written[name].tobytes() == ckpt[name].tobytes()
                                   for name in written)  # fmt: skip


def test_the_float_model_diffs_equal_to_its_keras_model_kernels_transposed() -> None:
    with ws.open(FIXTURES / "model.keras") as keras_model, ws.open(FIXTURES / "float32.tflite") as tflite:
        result = checkpoint_diff(keras_model, tflite)
        assert result.equal and not result.only_a and not result.only_b
        pairs = {tensor.name: tensor.other for tensor in result.tensors}
        assert pairs == {
            "conv/kernel": "small_1/conv_1/convolution",
            "conv/bias": "small_1/conv_1/Relu;small_1/conv_1/BiasAdd;small_1/conv_1/convolution;small_1/conv_1/Squeeze",
            "depthwise/kernel": "small_1/depthwise_1/depthwise",
            "depthwise/bias": "small_1/depthwise_1/BiasAdd;small_1/depthwise_1/depthwise;small_1/depthwise_1/Squeeze",
            "dense/kernel": "small_1/dense_1/MatMul",
            "dense/bias": "small_1/dense_1/BiasAdd",
        }
        # the converter transposed the dense kernel: Keras' [in, out] is TFLite's [out, in]
        assert np.array_equal(keras_model["dense/kernel"].T, tflite["small_1/dense_1/MatMul"])


def test_a_tf_keras_models_scopes_are_its_layers_names() -> None:
    with ws.open(FIXTURES / "tf_keras_model.h5") as keras_model, ws.open(FIXTURES / "tf_keras_float32.tflite") as lite:
        result = checkpoint_diff(keras_model, lite)
        assert result.equal and not result.only_a and not result.only_b
        pairs = {tensor.name: tensor.other for tensor in result.tensors}
        assert set(pairs) == {"conv/kernel", "conv/bias", "dense/kernel", "dense/bias"}
        assert pairs["conv/kernel"] == "sequential/conv/Conv2D" and pairs["dense/kernel"] == "sequential/dense/MatMul"


def _as_tflite_lays_it_out(name: str, keras_value: np.ndarray) -> np.ndarray:
    """A Keras kernel as the converter writes it: a convolution's [h, w, in, out] as [out, h, w, in], a depthwise
    one's [h, w, in, 1] as [1, h, w, in], a dense one's [in, out] as [out, in]."""
    if name == "conv/kernel":
        return keras_value.transpose(3, 0, 1, 2)
    if name == "depthwise/kernel":
        return keras_value.reshape(1, *keras_value.shape[:2], -1)
    return keras_value.T


def test_the_quantised_model_diffs_as_a_quantisation_error_of_each_weight(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "model.keras", tmp_path / "model.keras")
    with ws.open(FIXTURES / "model.keras") as keras_model, ws.open(FIXTURES / "full_int8.tflite") as raw:
        from weightscope.quant import grouped

        result = quantization_error(keras_model, grouped(raw))
        assert len(result.tensors) == 6 and not result.only_original and not result.only_quantised
        interpreter = _interpreter(FIXTURES / "full_int8.tflite")
        details = {entry["name"]: entry for entry in interpreter.get_tensor_details()}
        for tensor in result.tensors:
            assert tensor.type == "tflite_affine" and tensor.status == "compared"
            entry = details[tensor.other]
            parameters = entry["quantization_parameters"]
            q = interpreter.get_tensor(entry["index"]).astype(np.int64)
            shape = [-1 if axis == parameters["quantized_dimension"] else 1 for axis in range(q.ndim)]
            several = parameters["scales"].size > 1
            scale = parameters["scales"].astype(np.float64).reshape(shape if several else ())
            zero_point = parameters["zero_points"].reshape(shape if several else ())
            dequantised = (scale * (q - zero_point)).astype(np.float32)
            error = np.abs(_as_tflite_lays_it_out(tensor.name, keras_model[tensor.name]) - dequantised)
            assert tensor.partial.figures()["max_abs"] == float(error.max())
    assert main(["diff", str(tmp_path / "model.keras"), str(FIXTURES / "full_int8.tflite")]) == 1  # not exact
