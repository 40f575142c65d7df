"""OpenVINO IR (issue 24, item 3): every Const as the runtime reads it, compressed weights dequantised as it folds
them, roles from the graph, conversion, and hostile XML refused.

The fixtures (tests/fixtures/openvino/, made by ``make_openvino.py`` with openvino and nncf) are compared with two
oracles: the openvino runtime installed now (``ov.Core().read_model``, its constant folding), and what the runtime
said when the fixtures were made (``expected.npz``, ``expected.json``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_refused
from fixtures.openvino.make_openvino import COMPRESSED, MLP_COMPRESSED, MODELS, runtime_view
from safetensors.numpy import load_file
from test_remote import serving

import weightscope as ws
from weightscope.cli import main
from weightscope.convert import convert
from weightscope.errors import (
    CheckpointNotFoundError,
    CorruptCheckpointError,
    RefusedError,
    TruncatedFileError,
    UnsupportedFormatError,
)
from weightscope.formats.openvino import ELEMENT_TYPES
from weightscope.quant import recognise
from weightscope.summary import summarize

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "openvino"


def _recorded(model: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    stored = np.load(FIXTURES / "expected.npz")
    prefix = {kind: f"{kind}/{model}/" for kind in ("raw", "values", "dequantized")}
    arrays = {
        f"{kind}/{key[len(start) :]}": stored[key]
        for kind, start in prefix.items()
        for key in stored.files
        if key.startswith(start)
    }
    return arrays, json.loads((FIXTURES / "expected.json").read_text())[model]


ORACLES = {"live": lambda model: runtime_view(FIXTURES / f"{model}.xml"), "recorded": _recorded}


@pytest.fixture(params=list(ORACLES), scope="module")
def oracle(request: pytest.FixtureRequest) -> Any:
    return ORACLES[request.param]


@pytest.mark.parametrize("model", MODELS)
def test_every_const_is_what_the_runtime_reads(model: str, oracle: Any) -> None:
    arrays, facts = oracle(model)
    bin_bytes = (FIXTURES / f"{model}.bin").read_bytes()
    with ws.open(FIXTURES / f"{model}.xml") as ckpt:
        assert ckpt.format == "openvino"
        assert sorted(info.key for info in ckpt.infos()) == sorted(facts["consts"])
        for key, const in facts["consts"].items():
            info = ckpt.info(key)
            type_name, _ = ELEMENT_TYPES[const["element_type"]]
            assert (info.type_name, list(info.shape)) == (type_name, const["shape"]), key
            stored = bin_bytes[info.offset : info.offset + info.nbytes]
            assert stored == arrays[f"raw/{key}"].tobytes(), key
            values = ckpt[info.name]
            if f"values/{key}" in arrays:  # packed: the runtime's own unpacking (and NF4 table), as float32
                assert np.array_equal(values.astype(np.float32), arrays[f"values/{key}"].reshape(info.shape)), key
            else:
                assert values.dtype == info.dtype and values.tobytes() == stored, key


def test_opening_the_bin_opens_the_pair() -> None:
    with ws.open(FIXTURES / "int4_asym.xml") as by_xml, ws.open(FIXTURES / "int4_asym.bin") as by_bin:
        assert list(by_xml) == list(by_bin)
        for name in by_xml:
            assert np.array_equal(by_xml[name], by_bin[name])


def test_consts_sharing_bytes_read_alike() -> None:
    with ws.open(FIXTURES / "types.xml") as ckpt:
        assert ckpt.info("shared.a").offset == ckpt.info("shared.b").offset  # save_model stored the data once
        assert np.array_equal(ckpt["shared.a"], np.arange(12, dtype=np.float32).reshape(3, 4))
        assert np.array_equal(ckpt["shared.a"], ckpt["shared.b"])


def test_a_const_of_no_elements_reads_empty_from_the_byte_save_model_gives_it(tmp_path: Path) -> None:
    import openvino as ov
    import openvino.opset13 as ops

    constant = ops.constant(np.zeros((3, 0, 2), np.float32))
    constant.set_friendly_name("empty")
    xml = tmp_path / "model.xml"
    ov.save_model(ov.Model([ops.result(constant)], [], "empty"), xml, compress_to_fp16=False)
    assert 'shape="3, 0, 2" offset="0" size="1"' in xml.read_text()  # one byte in the .bin for no elements
    with ws.open(xml) as ckpt:
        assert (ckpt.info("empty").nbytes, ckpt["empty"].shape) == (0, (3, 0, 2))
    _edit(xml, 'size="1"', 'size="2"')
    with pytest.raises(CorruptCheckpointError, match="size 2 bytes; shape \\[3, 0, 2\\] of f32 needs 0"):
        ws.open(xml)


def test_fp16_compressed_weights_keep_their_names_and_type() -> None:
    with ws.open(FIXTURES / "f16.xml") as ckpt, ws.open(FIXTURES / "f32.xml") as full:
        assert list(ckpt) == list(full)  # fc1.weight, not fc1.weight_compressed
        assert ckpt.info("fc1.weight").type_name == "float16"
        assert ckpt.info("fc1.weight").key == "fc1.weight_compressed"
        assert ckpt.resolve("fc1.weight_compressed") == "fc1.weight"
        assert np.array_equal(ckpt["fc1.weight"], full["fc1.weight"].astype(np.float16))


@pytest.mark.parametrize("model", ("f32", "f16", *COMPRESSED, *MLP_COMPRESSED))
def test_dequantized_weights_are_what_the_runtime_folds(model: str, oracle: Any) -> None:
    arrays, facts = oracle(model)
    with ws.open(FIXTURES / f"{model}.xml", dequantize=True) as ckpt:
        for root, layer in facts["weights"].items():
            name = layer if model == "f16" else root  # a Convert's name, or the Const's own (nncf's codes)
            want = arrays[f"dequantized/{root}"]
            got = ckpt[name]
            assert got.shape == want.shape, name
            if model not in ("f32", "f16"):
                assert ckpt.info(name).type_name == "ov_compressed" and got.dtype == np.float32
            assert np.array_equal(got.astype(np.float32), want), name  # bit for bit: no NaN among them


@pytest.mark.parametrize("model", COMPRESSED)
def test_without_dequantize_the_parts_are_listed_as_stored(model: str) -> None:
    with ws.open(FIXTURES / f"{model}.xml") as ckpt:
        weights = recognise(ckpt)
        assert set(weights) == {"conv.weight", "fc1.weight", "fc2.kernel"}
        fc1 = weights["fc1.weight"]
        assert fc1.shape == (32, 64) and fc1.parts[0] == "fc1.weight"
        zero_point = () if model in ("int8_sym", "int4_sym", "nf4") else ("fc1.weight/zero_point",)  # int2_sym has
        assert set(fc1.parts[1:]) == {"fc1.weight/scale", *zero_point}
        assert ckpt.role("fc1.weight/scale").role == "weight_scale"
    with ws.open(FIXTURES / f"{model}.xml", dequantize=True) as ckpt:
        assert "fc1.weight/scale" not in ckpt and ckpt.info("fc1.weight").shape == (32, 64)
        assert ckpt.info("fc1.weight").type_label == "ov_compressed → float32"


def test_every_element_type_is_read() -> None:
    with ws.open(FIXTURES / "types.xml") as ckpt:
        read = {info.type_name for info in ckpt.infos()}
    assert read == {name for name, _ in ELEMENT_TYPES.values()} - {"float16"}  # f16 is f16.xml's


@pytest.mark.parametrize(("model", "dequantize"), [("f32", False), ("f16", False), ("int4_asym", True)])
def test_layers_and_summary_show_kinds(model: str, dequantize: bool) -> None:
    with ws.open(FIXTURES / f"{model}.xml", dequantize=dequantize) as ckpt:
        kinds = {layer.name: layer.description for layer in summarize(ckpt).layers}
        roles = {name: sorted(layer.parameters) for name, layer in ckpt.layers().items()}
    assert kinds == {"conv": "Conv2D 3×3 3 → 4", "fc1": "Dense 64 → 32", "fc2": "Dense 32 → 16"}
    assert roles == {"conv": ["bias", "weight"], "fc1": ["bias", "weight"], "fc2": ["weight"]}


def test_convert_to_safetensors(tmp_path: Path) -> None:
    convert(FIXTURES / "f16.xml", tmp_path / "f16.safetensors")
    written = load_file(tmp_path / "f16.safetensors")
    with ws.open(FIXTURES / "f16.xml") as ckpt:
        assert set(written) == set(ckpt) - {"flatten.shape"}  # weights only: a graph constant is bookkeeping
        for name, array in written.items():
            assert array.dtype == ckpt[name].dtype and np.array_equal(array, ckpt[name])
    with ws.open(FIXTURES / "nf4.xml", dequantize=True) as ckpt:
        convert(ckpt, tmp_path / "nf4.safetensors")
        written = load_file(tmp_path / "nf4.safetensors")
        assert np.array_equal(written["fc1.weight"], ckpt["fc1.weight"])
        assert written["fc1.weight"].shape == (32, 64) and "fc1.weight/scale" not in written


def test_cli_reads_the_pair_by_its_bin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls", str(FIXTURES / "int4_asym.bin")]) == 0
    assert "ov_compressed → float32 (5.25 bits, 3 parts)" in capsys.readouterr().out  # ls groups a weight's parts
    out = tmp_path / "int4.safetensors"
    assert main(["convert", str(FIXTURES / "int4_asym.xml"), str(out), "--dequantize"]) == 0
    assert main(["show", str(FIXTURES / "int4_asym.bin"), "fc1.weight", "--dequantize"]) == 0
    with ws.open(FIXTURES / "int4_asym.xml", dequantize=True) as ckpt:
        assert np.array_equal(load_file(out)["fc1.weight"], ckpt["fc1.weight"])
        assert str(ckpt["fc1.weight"][0, 0]) in capsys.readouterr().out


@pytest.mark.parametrize("file", ["int4_asym.xml", "int4_asym.bin"])
def test_an_ir_over_http_reads_as_the_local_one(file: str) -> None:
    with (
        serving(FIXTURES) as root,
        ws.open(f"{root}/{file}", dequantize=True) as remote,
        ws.open(FIXTURES / "int4_asym.xml", dequantize=True) as local,
    ):
        assert list(remote) == list(local)
        for name in local:
            assert remote[name].tobytes() == local[name].tobytes(), name


def _copy(tmp_path: Path, model: str = "f32") -> tuple[Path, Path]:
    xml, bin_file = tmp_path / "model.xml", tmp_path / "model.bin"
    shutil.copy(FIXTURES / f"{model}.xml", xml)
    shutil.copy(FIXTURES / f"{model}.bin", bin_file)
    return xml, bin_file


def _edit(xml: Path, old: str, new: str) -> None:
    text = xml.read_text()
    assert old in text
    xml.write_text(text.replace(old, new, 1))


BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE net [\n <!ENTITY a "aaaaaaaaaa">\n'
    + "".join(f' <!ENTITY {chr(98 + n)} "{("&" + chr(97 + n) + ";") * 10}">\n' for n in range(8))
    + ']>\n<net name="&i;" version="11"><layers/><edges/></net>\n'
)
EXTERNAL_ENTITY = (
    '<?xml version="1.0"?>\n<!DOCTYPE net [<!ENTITY secret SYSTEM "file:///etc/passwd">]>\n'
    '<net name="&secret;" version="11"><layers/><edges/></net>\n'
)


@pytest.mark.parametrize("text", [BILLION_LAUGHS, EXTERNAL_ENTITY], ids=["billion-laughs", "external-entity"])
def test_doctypes_are_refused(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> None:
    xml = tmp_path / "model.xml"
    xml.write_text(text)
    assert_refused(xml, RefusedError, "DOCTYPE", capsys)


@pytest.mark.parametrize(
    ("old", "new", "error", "message"),
    [
        ('offset="8784"', 'offset="8800"', TruncatedFileError, "past the end"),
        ('shape="32, 64" offset', 'shape="32, 65" offset', CorruptCheckpointError, "needs 8320"),
        ('element_type="f32" shape="32, 64"', 'element_type="q9" shape="32, 64"', UnsupportedFormatError, "'q9'"),
        ('shape="32, 64" offset', 'shape="32, -64" offset', CorruptCheckpointError, "not a non-negative integer"),
        ('version="11"', 'version="7"', UnsupportedFormatError, "IR version"),
        ('to-layer="2" to-port="1"', 'to-layer="2" to-port="0"', CorruptCheckpointError, "two edges feed"),
        ('from-layer="0" from-port="0" to-layer="2"', 'from-layer="0" from-port="0" to-layer="99"',
         CorruptCheckpointError, "no such layer"),
    ],
)  # fmt: skip
def test_damaged_irs_are_refused(
    tmp_path: Path, old: str, new: str, error: type[Exception], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    xml, _ = _copy(tmp_path)
    _edit(xml, old, new)
    assert_refused(xml, error, message, capsys)  # type: ignore[arg-type]


def test_a_missing_bin_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    xml, bin_file = _copy(tmp_path)
    bin_file.unlink()
    with pytest.raises(CheckpointNotFoundError, match=r"model\.bin: missing"):
        ws.open(xml)


def test_not_an_ir_is_corrupt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    xml = tmp_path / "page.xml"
    xml.write_text("<html><body/></html>")
    assert_refused(xml, CorruptCheckpointError, "not an OpenVINO IR", capsys)
    xml.write_text("<net version='11'><layers>")
    assert_refused(xml, CorruptCheckpointError, "does not parse", capsys)


def test_a_scale_that_does_not_fit_is_refused_when_dequantising(tmp_path: Path) -> None:
    xml, _ = _copy(tmp_path, "int8_sym")
    _edit(xml, 'shape="32, 1" offset="2196"', 'shape="1, 32" offset="2196"')
    with ws.open(xml) as ckpt:
        assert ckpt["fc1.weight/scale"].shape == (1, 32)  # as stored, nothing to refuse
    with ws.open(xml, dequantize=True) as ckpt:
        assert ckpt["fc2.kernel"].shape == (32, 16)
        with pytest.raises(
            CorruptCheckpointError, match=r"multiply of \[32, 64\] and \[1, 32\], which do not broadcast"
        ):
            ckpt["fc1.weight"]


def test_a_weight_of_another_size_than_its_codes_is_refused(tmp_path: Path) -> None:
    xml, _ = _copy(tmp_path, "int4_sym")
    text = xml.read_text()
    start = text.index("<output>", text.index('name="fc1.weight/fq_weights_1/convert"'))  # what MatMul takes
    end = text.index("</output>", start)
    xml.write_text(text[:start] + text[start:end].replace("<dim>64</dim>", "<dim>65</dim>") + text[end:])
    with ws.open(xml, dequantize=True) as ckpt:
        assert ckpt.info("fc1.weight").shape == (32, 65)  # as the graph says, until read
        with pytest.raises(CorruptCheckpointError, match=r"result has shape \[32, 64\]; expected \[32, 65\]"):
            ckpt["fc1.weight"]


def test_diff_measures_what_compression_cost(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["diff", str(FIXTURES / "f32.xml"), str(FIXTURES / "int8_asym.xml"), "--dequantize"]) == 1
    )  # they differ
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("conv.", "fc1.", "fc2."))}
    assert {name: row[1] for name, row in rows.items()} == {  # the biases, equal, are counted as exact
        "conv.weight": "ov_compressed",
        "fc1.weight": "ov_compressed",
        "fc2.kernel": "ov_compressed",
    }
    with ws.open(FIXTURES / "f32.xml") as full, ws.open(FIXTURES / "int8_asym.xml", dequantize=True) as small:
        error = np.abs(full["fc1.weight"] - small["fc1.weight"]).max()
    assert 0 < error < 0.05 and f"{error:.6g}" in " ".join(rows["fc1.weight"])


def test_a_subgraph_making_more_values_than_its_bytes_allow_is_refused(tmp_path: Path) -> None:
    xml, _ = _copy(tmp_path, "int8_sym")  # codes [32, 1] times a scale [1, 32] would broadcast to [32, 32]
    _edit(xml, 'shape="32, 64" offset="148" size="2048"', 'shape="32, 1" offset="148" size="32"')
    _edit(xml, 'shape="32, 1" offset="2196"', 'shape="1, 32" offset="2196"')
    with ws.open(xml, dequantize=True) as ckpt, ws.open(FIXTURES / "int8_sym.xml", dequantize=True) as intact:
        assert np.array_equal(ckpt["fc2.kernel"], intact["fc2.kernel"])
        with pytest.raises(CorruptCheckpointError, match=r"'fc1.weight' \(ov_compressed\): 2048 values from 96 bytes"):
            ckpt["fc1.weight"]
