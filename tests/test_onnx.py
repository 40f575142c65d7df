"""ONNX models, built and saved by the onnx package, read back by weightscope (which never imports onnx)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
from conftest import assert_refused, assert_same_tensor
from onnx import TensorProto, helper, numpy_helper

import weightscope as ws
from weightscope.cli import main
from weightscope.dtypes import BY_ONNX
from weightscope.errors import (
    CheckpointNotFoundError,
    ChecksumMismatchError,
    CorruptCheckpointError,
    RefusedError,
    TruncatedFileError,
    UnsupportedFormatError,
)
from weightscope.formats.onnx import OnnxCheckpoint


def _initializers() -> list[TensorProto]:
    rng = np.random.default_rng(0)
    tensors = [
        numpy_helper.from_array(rng.standard_normal((2, 5)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.standard_normal((5, 2)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.standard_normal(2).astype(np.float32), "b2"),
        numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float16), "half"),
        numpy_helper.from_array(rng.standard_normal((2, 3)).astype(ml_dtypes.bfloat16), "brain"),
        numpy_helper.from_array(rng.integers(-(2**40), 2**40, (4,)), "int64"),
        numpy_helper.from_array(rng.integers(0, 2, (2, 2)).astype(bool), "mask"),
        numpy_helper.from_array(rng.integers(-128, 127, (6,)).astype(np.int8), "int8"),
        numpy_helper.from_array(rng.integers(0, 65535, (3,)).astype(np.uint16), "uint16"),
        numpy_helper.from_array(rng.standard_normal(3), "double"),
        numpy_helper.from_array(np.zeros((0, 3), np.float32), "empty"),
        numpy_helper.from_array(np.array(2.5, np.float32), "scalar"),
        # typed fields rather than raw_data
        helper.make_tensor("typed_float", TensorProto.FLOAT, [2, 2], [1.0, -2.0, 3.5, float("inf")]),
        helper.make_tensor("typed_int32", TensorProto.INT32, [3], [1, -2, 2**31 - 1]),
        helper.make_tensor("typed_int64", TensorProto.INT64, [2], [-(2**62), 7]),
        helper.make_tensor("typed_half", TensorProto.FLOAT16, [3], np.array([1.5, -0.25, 65504], np.float16)),
        helper.make_tensor("typed_bool", TensorProto.BOOL, [3], [True, False, True]),
        helper.make_tensor("typed_uint8", TensorProto.UINT8, [2], [0, 255]),
        helper.make_tensor("typed_uint64", TensorProto.UINT64, [2], [0, 2**64 - 1]),
        helper.make_tensor("typed_double", TensorProto.DOUBLE, [2], [0.1, -1e300]),
    ]
    return tensors


def _model() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["m"]),
        helper.make_node("Add", ["m", "b2"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "mlp", [x], [y], initializer=_initializers())
    model = helper.make_model(graph, producer_name="weightscope-tests", opset_imports=[helper.make_opsetid("", 17)])
    model.producer_version = "1.0"
    return model


@pytest.fixture
def inline(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    onnx.save_model(_model(), path)
    return path


@pytest.fixture
def external(tmp_path: Path) -> Path:
    path = tmp_path / "ext" / "model.onnx"
    path.parent.mkdir()
    onnx.save_model(
        _model(),
        path,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    return path


def _compare(path: Path) -> None:
    expected = {tensor.name: numpy_helper.to_array(tensor, base_dir=str(path.parent)) for tensor in _load(path)}
    with ws.open(path) as checkpoint:
        assert isinstance(checkpoint, OnnxCheckpoint)
        assert list(checkpoint) == list(expected)
        for name, theirs in expected.items():
            ours = checkpoint[name]
            assert checkpoint.info(name).shape == theirs.shape
            assert_same_tensor(ours, theirs)
        assert checkpoint.verify() == []


def _load(path: Path) -> list[TensorProto]:
    return list(onnx.load(str(path), load_external_data=False).graph.initializer)


def test_inline_model_matches_onnx(inline: Path) -> None:
    _compare(inline)
    with ws.open(inline) as checkpoint:
        metadata = checkpoint.metadata
        assert metadata["producer_name"] == "weightscope-tests"
        assert metadata["producer_version"] == "1.0"
        assert metadata["opset_imports"] == "ai.onnx=17"
        assert metadata["ir_version"] == str(onnx.load(str(inline)).ir_version)
        assert checkpoint["typed_half"].dtype == np.float16
        assert checkpoint["brain"].dtype == ml_dtypes.bfloat16
        assert checkpoint["scalar"].shape == ()
        assert checkpoint["empty"].shape == (0, 3)


def test_external_model_matches_onnx(external: Path) -> None:
    assert (external.parent / "weights.bin").is_file()
    _compare(external)
    with ws.open(external) as checkpoint:
        info = checkpoint.info("w1")
        assert info.file == str((external.parent / "weights.bin").resolve())
        array = checkpoint["w1"]
        assert not array.flags.writeable


def test_onnx_column_matches_onnx_codes() -> None:
    for code, element in BY_ONNX.items():
        assert code in onnx.TensorProto.DataType.values()
        if element.name != "string":
            assert np.dtype(helper.tensor_dtype_to_np_dtype(code)) == element.dtype, element.name


def test_int4_round_trip(tmp_path: Path) -> None:
    values = np.array([-8, 7, 0, -1, 3], dtype=ml_dtypes.int4)
    tensor = numpy_helper.from_array(values, "four")
    uvalues = np.array([0, 15, 9], dtype=ml_dtypes.uint4)
    graph = helper.make_graph([], "g", [], [], initializer=[tensor, numpy_helper.from_array(uvalues, "ufour")])
    path = tmp_path / "four.onnx"
    onnx.save_model(helper.make_model(graph), path)
    _compare(path)


def test_sparse_initializers_are_skipped(tmp_path: Path) -> None:
    values = numpy_helper.from_array(np.array([1.0, 2.0], np.float32), "sparse")
    indices = numpy_helper.from_array(np.array([0, 3], np.int64), "sparse_indices")
    sparse = helper.make_sparse_tensor(values, indices, [4])
    graph = helper.make_graph([], "g", [], [], initializer=[numpy_helper.from_array(np.ones(2, np.float32), "dense")])
    graph.sparse_initializer.append(sparse)
    path = tmp_path / "sparse.onnx"
    onnx.save_model(helper.make_model(graph), path)
    with ws.open(path) as checkpoint:
        assert list(checkpoint) == ["dense"]
        assert "sparse" in checkpoint.metadata["sparse_initializers_skipped"]


def _rewrite(path: Path, key: str, value: str) -> None:
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        for entry in tensor.external_data:
            if entry.key == key:
                entry.value = value
                break
        else:
            tensor.external_data.add(key=key, value=value)
    path.write_bytes(model.SerializeToString())


@pytest.mark.parametrize("location", ["../../etc/passwd", "/etc/passwd", "sub/../../weights.bin"])
def test_escaping_locations_are_refused(external: Path, location: str, capsys: pytest.CaptureFixture[str]) -> None:
    _rewrite(external, "location", location)
    assert_refused(external, RefusedError, "external data path", capsys)
    assert main(["ls", str(external)]) == 6


def test_symlink_escaping_the_folder_is_refused(external: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.bin"
    outside.write_bytes((external.parent / "weights.bin").read_bytes())
    (external.parent / "link.bin").symlink_to(outside)
    _rewrite(external, "location", "link.bin")
    with pytest.raises(RefusedError, match="escapes the model's folder"):
        ws.open(external)


def test_external_data_past_the_end(external: Path, capsys: pytest.CaptureFixture[str]) -> None:
    size = (external.parent / "weights.bin").stat().st_size
    model = onnx.load(str(external), load_external_data=False)
    entries = model.graph.initializer[0].external_data
    for entry in entries:
        if entry.key == "offset":
            entry.value = str(size - 4)
    if not any(entry.key == "offset" for entry in entries):
        entries.add(key="offset", value=str(size - 4))
    external.write_bytes(model.SerializeToString())
    assert_refused(external, TruncatedFileError, "past the end", capsys)


def test_checksum(external: Path) -> None:
    digest = hashlib.sha1((external.parent / "weights.bin").read_bytes()).hexdigest()
    _rewrite(external, "checksum", digest)
    with ws.open(external) as checkpoint:
        assert checkpoint.verify() == []
    _rewrite(external, "checksum", "0" * 40)
    with ws.open(external) as checkpoint:
        problems = checkpoint.verify()
        assert problems and all(isinstance(problem, ChecksumMismatchError) for problem in problems)
        with pytest.raises(ChecksumMismatchError):
            checkpoint["w1"]
    with ws.open(external, verify=False) as checkpoint:
        checkpoint["w1"]  # not checked when reading unverified
        assert checkpoint.verify()
    assert main(["verify", str(external)]) != 0


def test_missing_external_file(external: Path) -> None:
    (external.parent / "weights.bin").unlink()
    with pytest.raises(CheckpointNotFoundError, match=r"weights\.bin"):
        ws.open(external)


@pytest.mark.parametrize("data", [b"\xff" * 64, b"hello, this is not a model\n", b""])
def test_garbage_is_corrupt(tmp_path: Path, data: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "garbage.onnx"
    path.write_bytes(data)
    assert_refused(path, CorruptCheckpointError, "not an ONNX model", capsys)


def test_raw_data_of_the_wrong_length(tmp_path: Path) -> None:
    tensor = numpy_helper.from_array(np.ones(4, np.float32), "w")
    tensor.raw_data = tensor.raw_data[:-1]
    path = tmp_path / "short.onnx"
    onnx.save_model(helper.make_model(helper.make_graph([], "g", [], [], initializer=[tensor])), path)
    with pytest.raises(CorruptCheckpointError, match="raw_data holds 15 bytes"):
        ws.open(path)


def test_cli_lists_an_onnx_model(inline: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls", str(inline)]) == 0
    assert "w1" in capsys.readouterr().out


def _model_bytes(*initializers: TensorProto, producer: str = "test") -> bytes:
    graph = helper.make_graph([], "g", [], [], initializer=list(initializers))
    return helper.make_model(graph, producer_name=producer).SerializeToString()


@pytest.mark.parametrize("where", ["name", "producer", "external key", "external location"])
def test_strings_that_are_not_utf8_are_corrupt(tmp_path: Path, where: str) -> None:
    # Found by fuzz_onnx: protobuf hands a proto2 string that is not UTF-8 back as bytes, and
    # a bytes tensor name raised TypeError in role().
    tensor = numpy_helper.from_array(np.ones(1, np.float32), "wxyz" if where == "name" else "w")
    if where.startswith("external"):
        tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1], data_location=TensorProto.EXTERNAL)
        tensor.external_data.add(key="locatxyz" if where == "external key" else "location", value="wxyz.bin")
    data = _model_bytes(tensor, producer="pxyz" if where == "producer" else "test")
    path = tmp_path / "model.onnx"
    path.write_bytes(data.replace(b"xyz", b"\xff\xfe\xfd"))
    with pytest.raises(CorruptCheckpointError, match="not UTF-8"), ws.open(path) as checkpoint:
        for name in checkpoint:
            checkpoint.role(name)


@pytest.mark.parametrize("location", [".", "sub", "a\0b"])
def test_external_location_that_is_no_file_is_corrupt(external: Path, location: str) -> None:
    (external.parent / "sub").mkdir()
    _rewrite(external, "location", location)
    with pytest.raises(CorruptCheckpointError, match=r"is not a file|NUL"):
        ws.open(external)


@pytest.mark.parametrize("field", ["raw_data", "float_data"])
def test_more_dimensions_than_numpy_holds_are_unsupported(tmp_path: Path, field: str) -> None:
    # Found after the TensorFlow readers' same bug: 65 dimensions made numpy raise ValueError.
    path = tmp_path / "deep.onnx"
    for rank in (64, 65):
        tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1] * rank)
        if field == "raw_data":
            tensor.raw_data = b"\0" * 4
        else:
            tensor.float_data.append(1.0)
        path.write_bytes(_model_bytes(tensor))
        if rank == 64:
            with ws.open(path) as checkpoint:
                assert checkpoint["w"].ndim == 64
        else:
            with pytest.raises(UnsupportedFormatError, match="65 dimensions; numpy arrays hold 64"):
                ws.open(path)
