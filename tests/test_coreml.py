"""Core ML models made by coremltools 9 (tests/fixtures/coreml/make_coreml.py), read by weightscope (which never
imports coremltools) and compared with what coremltools itself read from them, committed beside them."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bounded import run_bounded

import weightscope as ws
from weightscope.cli import main
from weightscope.containers.table import encode_varint
from weightscope.errors import CorruptCheckpointError, LimitExceededError, RefusedError, TruncatedFileError
from weightscope.formats.coreml import CoreMLCheckpoint
from weightscope.quant import Dequantized

FIXTURES = Path(__file__).parent / "fixtures" / "coreml"
EXPECTED: dict[str, list[dict[str, Any]]] = json.loads((FIXTURES / "expected.json").read_text())
NETWORKS = [name for name in EXPECTED if name.endswith(".mlmodel")]
PROGRAMS = [name for name in EXPECTED if name.endswith(".mlpackage")]
SCHEMES = {
    "linearQuantization": "coreml_linear",
    "lookupTableQuantization": "coreml_lut",
    "constexpr_affine_dequantize": "mil_affine",
    "constexpr_blockwise_shift_scale": "mil_blockwise",
}


@pytest.fixture(scope="module")
def arrays() -> Any:
    with np.load(FIXTURES / "expected.npz") as loaded:
        return dict(loaded)


def _same(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert np.array_equal(actual, expected)


@pytest.mark.parametrize("fixture", NETWORKS)
def test_neural_network_weights_match_coremltools(fixture: str, arrays: dict[str, np.ndarray]) -> None:
    with ws.open(FIXTURES / fixture) as ckpt:
        assert isinstance(ckpt, CoreMLCheckpoint)
        assert ckpt.metadata["model_type"] == ("pipeline" if "pipeline" in fixture else "neuralNetwork")
        for entry in EXPECTED[fixture]:
            name = entry["name"]
            _same(np.asarray(ckpt[name]), arrays[f"{fixture}/{name}"])
            role = ckpt.role(name)
            assert role.kind == "parameter" and role.layer == entry["layer"]
            if "quantization" in entry:
                assert ckpt.info(name).nbytes == -(-ckpt.info(name).size * entry["bits"] // 8)
                parts = (
                    ("quantization_scale", "quantization_bias")
                    if entry["bits"] and entry["quantization"] == "linearQuantization"
                    else ("lut",)
                )
                for part in parts:
                    _same(np.asarray(ckpt[f"{name}.{part}"]), arrays[f"{fixture}/{name}.{part}"])
        quantised = {entry["name"] for entry in EXPECTED[fixture] if "quantization" in entry}
        parts = {name for name in ckpt if name.rsplit(".", 1)[-1] in ("quantization_scale", "quantization_bias", "lut")}
        assert set(ckpt) == {entry["name"] for entry in EXPECTED[fixture]} | parts
        assert set(ckpt.recorded_quantization()) == quantised


@pytest.mark.parametrize("fixture", [name for name in NETWORKS if any("quantization" in e for e in EXPECTED[name])])
def test_neural_network_dequantised_as_coremltools(fixture: str, arrays: dict[str, np.ndarray]) -> None:
    with ws.open(FIXTURES / fixture, dequantize=True) as ckpt:
        assert isinstance(ckpt, Dequantized)
        assert list(ckpt) == [entry["name"] for entry in EXPECTED[fixture]]  # no parts left over, in layer order
        for entry in EXPECTED[fixture]:
            name = entry["name"]
            key = f"{fixture}/{name}@dequantized"
            if "quantization" in entry:
                assert ckpt.info(name).type_name == SCHEMES[entry["quantization"]]
                _same(np.asarray(ckpt[name]), arrays[key])
                assert ckpt.role(name).layer == entry["layer"]
            else:
                _same(np.asarray(ckpt[name]), arrays[f"{fixture}/{name}"])


@pytest.mark.parametrize("fixture", PROGRAMS)
def test_ml_program_constants_match_coremltools(fixture: str, arrays: dict[str, np.ndarray]) -> None:
    with ws.open(FIXTURES / fixture) as ckpt:
        assert ckpt.metadata["model_type"] == "mlProgram"
        listed = set()
        for entry in EXPECTED[fixture]:
            name = entry["name"]
            if entry["op"] == "const":
                _same(np.asarray(ckpt[name]), arrays[f"{fixture}/{name}"])
                listed.add(name)
                continue
            for part in entry["parts"]:
                stored = np.asarray(ckpt[f"{name}.{part}"])
                expected = arrays[f"{fixture}/{name}.{part}"]
                assert np.array_equal(stored, expected) and stored.shape == expected.shape
                listed.add(f"{name}.{part}")
        assert set(ckpt) == listed


@pytest.mark.parametrize("fixture", [name for name in PROGRAMS if any(e["op"] != "const" for e in EXPECTED[name])])
def test_ml_program_dequantised_as_coremltools(fixture: str, arrays: dict[str, np.ndarray]) -> None:
    with ws.open(FIXTURES / fixture, dequantize=True) as ckpt:
        for entry in EXPECTED[fixture]:
            if entry["op"] == "const":
                continue
            name = entry["name"]
            _same(np.asarray(ckpt[name]), arrays[f"{fixture}/{name}@dequantized"])
            role = ckpt.role(name)
            assert role.kind == "parameter" and role.role == "weight", role
        assert not [name for name in ckpt if "." in name]  # every constexpr op's parts became its weight


def test_every_core_ml_scheme_is_covered() -> None:
    from weightscope.quant.coreml import DEQUANTIZERS

    schemes = set()
    for fixture in EXPECTED:
        with ws.open(FIXTURES / fixture) as ckpt:
            schemes |= {weight.scheme for weight in ckpt.recorded_quantization().values()}
    assert schemes == set(DEQUANTIZERS)


def test_layers_name_the_roles_coreml_gives() -> None:
    with ws.open(FIXTURES / "nn_layers.mlmodel") as ckpt:
        layers = ckpt.layers()
        assert set(layers["dense_1"].parameters) == {"weight", "bias"}
        assert layers["conv_1"].weight is not None and layers["conv_1"].weight.shape == (4, 3, 3, 3)
        assert ckpt.role("bn_1.mean").buffer and ckpt.role("bn_1.variance").buffer
        assert ckpt.role("bn_1.gamma").role == "scale"
    with ws.open(FIXTURES / "mlp_fp32.mlpackage") as ckpt:
        assert ckpt.role("fc_weight").kind == "parameter" and ckpt.role("fc_weight").role == "weight"
        assert ckpt.role("fc_bias").role == "bias"
        assert ckpt.role("input_1_strides_0").kind == "bookkeeping"
        assert ckpt.extent("fc_weight") is not None  # a view of weight.bin


def test_convert_to_safetensors(tmp_path: Path, arrays: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import load_file

    out = tmp_path / "model.safetensors"
    assert main(["convert", str(FIXTURES / "mlp_block4_ios18.mlpackage"), str(out), "--dequantize"]) == 0
    loaded = load_file(out)
    key = "mlp_block4_ios18.mlpackage/fc_weight_to_fp16_quantized"
    assert np.array_equal(loaded["fc_weight_to_fp16_quantized"], arrays[f"{key}@dequantized"])
    out = tmp_path / "nn.safetensors"
    assert main(["convert", str(FIXTURES / "nn_fp16.mlmodel"), str(out)]) == 0
    assert np.array_equal(load_file(out)["conv_1.weight"], arrays["nn_fp16.mlmodel/conv_1.weight"])


def test_cli_lists_a_package_with_its_palettes_grouped(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls", str(FIXTURES / "mlp_lut4_ios18.mlpackage"), "--json"]) == 0
    listed = {entry["name"]: entry for entry in json.loads(capsys.readouterr().out)["tensors"]}
    weight = listed["fc_weight_to_fp16_palettized"]
    assert weight["scheme"] == "mil_lut" and weight["shape"] == [10, 144] and weight["role"] == "weight"
    assert weight["parts"] == ["fc_weight_to_fp16_palettized.indices", "fc_weight_to_fp16_palettized.lut"]


# -- hostile packages -------------------------------------------------------------------------------------------------
def _package(tmp_path: Path, name: str = "mlp_fp16.mlpackage") -> tuple[Path, Path]:
    package = tmp_path / name
    shutil.copytree(FIXTURES / name, package)
    return package, package / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"


def _first_blob(weights: Path) -> int:
    return 64  # coremltools writes the first blob's metadata right after the storage header


def test_bad_sentinel_is_refused(tmp_path: Path) -> None:
    package, weights = _package(tmp_path)
    data = bytearray(weights.read_bytes())
    data[_first_blob(weights) : _first_blob(weights) + 4] = struct.pack("<I", 0xCAFEBABE)
    weights.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match="sentinel 0xcafebabe"):
        ws.open(package)


def test_blob_past_the_end_is_refused(tmp_path: Path) -> None:
    package, weights = _package(tmp_path)
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(TruncatedFileError):
        ws.open(package)


def test_blob_of_the_wrong_size_is_refused(tmp_path: Path) -> None:
    package, weights = _package(tmp_path)
    data = bytearray(weights.read_bytes())
    start = _first_blob(weights) + 8
    size = struct.unpack_from("<Q", data, start)[0]
    struct.pack_into("<Q", data, start, size - 2)
    weights.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match="needs"):
        ws.open(package)


def test_storage_version_is_checked(tmp_path: Path) -> None:
    package, weights = _package(tmp_path)
    data = bytearray(weights.read_bytes())
    struct.pack_into("<I", data, 4, 1)
    weights.write_bytes(bytes(data))
    with pytest.raises(ws.errors.UnsupportedFormatError, match="storage version 1"):
        ws.open(package)


def test_manifest_escaping_the_package_is_refused(tmp_path: Path) -> None:
    package, _ = _package(tmp_path)
    manifest = json.loads((package / "Manifest.json").read_text())
    root = manifest["rootModelIdentifier"]
    manifest["itemInfoEntries"][root]["path"] = "../../../outside.mlmodel"
    (package / "Manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RefusedError):
        ws.open(package)


def test_truncated_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cut.mlmodel"
    path.write_bytes((FIXTURES / "nn_layers.mlmodel").read_bytes()[:300])
    with pytest.raises(CorruptCheckpointError):
        ws.open(path)


def test_model_of_500000_empty_layers_is_refused_before_parsing(tmp_path: Path) -> None:
    # Two bytes a layer on the wire, some 160 once parsed: 1 MB would make 80 MB of messages.
    layers = b"\x0a\x00" * 500_000
    path = tmp_path / "layers.mlmodel"
    path.write_bytes(b"\x08\x04" + b"\xa2\x1f" + encode_varint(len(layers)) + layers)  # version 4, neuralNetwork (500)
    with pytest.raises(LimitExceededError, match="parsing the model's protocol buffer"):
        ws.open(path)
    run_bounded(path).assert_within("LimitExceededError")


def test_diff_measures_what_quantising_a_network_cost(
    capsys: pytest.CaptureFixture[str], arrays: dict[str, Any]
) -> None:
    differ = main(["diff", str(FIXTURES / "nn_layers.mlmodel"), str(FIXTURES / "nn_lut3.mlmodel"), "--json"])
    assert differ == 1  # as diff(1): they differ
    report = {entry["name"]: entry for entry in json.loads(capsys.readouterr().out)["tensors"]}
    original = arrays["nn_layers.mlmodel/dense_1.weight"].astype(np.float64)
    dequantised = arrays["nn_lut3.mlmodel/dense_1.weight@dequantized"].astype(np.float64)
    assert report["dense_1.weight"]["type"] == "coreml_lut"
    assert report["dense_1.weight"]["rmse"] == pytest.approx(np.sqrt(np.mean((original - dequantised) ** 2)))
    assert report["norm_1.gamma"]["rmse"] == 0  # layer norm is not quantised by quantize_weights


@pytest.mark.parametrize("fixture", ["nn_lut3.mlmodel", "mlp_block4_ios18.mlpackage"])
def test_read_over_http_as_the_local_files(fixture: str) -> None:
    from test_remote import serving  # the range-answering HTTP server of the remote tests

    with serving(FIXTURES) as root, ws.open(f"{root}/{fixture}") as remote, ws.open(FIXTURES / fixture) as local:
        assert list(remote) == list(local)
        for name in local:
            assert remote.info(name) == local.info(name)._replace(file=remote.info(name).file)
            _same(np.asarray(remote[name]), np.asarray(local[name]))


def _program(ops: list[tuple[str, str, dict[str, Any]]]) -> bytes:
    """An ML program of ``(type, output, {parameter: (MIL type code, shape, bytes) or a name})``: tensor parameters
    of a const op are its ``val`` attribute, of any other op inline input values, or the names of other ops."""
    from weightscope._proto import CoreMLModel

    model = CoreMLModel(specificationVersion=8)
    function = model.mlProgram.functions["main"]
    function.opset = "CoreML8"
    block = function.block_specializations["CoreML8"]

    def typed(target: Any, code: int, shape: tuple[int, ...]) -> None:
        target.tensorType.dataType = code
        for size in shape:
            target.tensorType.dimensions.add().constant.size = size

    for op_type, output, parameters in ops:
        op = block.operations.add(type=op_type)
        op.outputs.add(name=output)
        for parameter, given in parameters.items():
            if isinstance(given, str):
                op.inputs[parameter].arguments.add(name=given)
                continue
            code, shape, data = given
            value = op.attributes["val"] if op_type == "const" else op.inputs[parameter].arguments.add().value
            typed(value.type, code, shape)
            value.immediateValue.tensor.bytes.values = data
            if op_type == "const":
                typed(op.outputs[0].type, code, shape)
        if op_type != "const":
            typed(op.outputs[0].type, 10, (2, 3))  # float16 [2, 3]
    serialized: bytes = model.SerializeToString()
    return serialized


_QUANTISED = (21, (2, 3), np.arange(-3, 3, dtype=np.int8).tobytes())
_SCALE = (10, (2,), np.array([0.5, 0.25], np.float16).tobytes())
_ZERO = (21, (2,), np.array([1, -1], np.int8).tobytes())
_AXIS = (23, (), np.array([0], np.int32).tobytes())


def test_constexpr_parameters_named_or_inline_dequantise_alike(tmp_path: Path) -> None:
    inline = {"quantized_data": _QUANTISED, "zero_point": _ZERO, "scale": _SCALE, "axis": _AXIS}
    named = {"quantized_data": "q", "zero_point": "z", "scale": "s", "axis": _AXIS}
    consts = [("const", "q", {"val": _QUANTISED}), ("const", "z", {"val": _ZERO}), ("const", "s", {"val": _SCALE})]
    (tmp_path / "inline.mlmodel").write_bytes(_program([("constexpr_affine_dequantize", "w", inline)]))
    (tmp_path / "named.mlmodel").write_bytes(_program([*consts, ("constexpr_affine_dequantize", "w", named)]))
    inline_path, named_path = tmp_path / "inline.mlmodel", tmp_path / "named.mlmodel"
    with ws.open(inline_path, dequantize=True) as first, ws.open(named_path, dequantize=True) as second:
        assert list(first) == list(second) == ["w"]
        _same(np.asarray(second["w"]), np.asarray(first["w"]))
        # coremltools' dequantize_by_scale_and_zp of these values (checked once with coremltools 9):
        expected = np.array([[-2.0, -1.5, -1.0], [0.25, 0.5, 0.75]], np.float16)
        _same(np.asarray(first["w"]), expected)
    with ws.open(tmp_path / "named.mlmodel") as raw:
        assert raw.recorded_quantization()["w"].parts == ("q", "z", "s")


def test_constexpr_missing_a_parameter_is_listed_not_dequantised(tmp_path: Path) -> None:
    path = tmp_path / "partial.mlmodel"
    path.write_bytes(_program([("constexpr_affine_dequantize", "w", {"quantized_data": _QUANTISED, "scale": _SCALE})]))
    with ws.open(path, dequantize=True) as ckpt:
        assert sorted(ckpt) == ["w.quantized_data", "w.scale"]
