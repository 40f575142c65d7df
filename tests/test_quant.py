"""Quantised weights (issue 20): each scheme's fixture, made by the real tool, dequantises bit for bit as the reference
did (``tests/fixtures/quant/make_quant.py`` wrote both); grouping in ls and summary; broken parts; convert."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import weightscope as ws
from weightscope.cli import Environment, main
from weightscope.errors import CorruptCheckpointError, UsageError
from weightscope.quant import Dequantized, recognise

HERE = Path(__file__).parent / "fixtures" / "quant"
EXPECTED = HERE / "expected.safetensors"
with ws.open(EXPECTED) as _expected:
    KEYS = list(_expected)


def fixture(name: str) -> Path:
    return HERE / name if (HERE / name).is_dir() else HERE / f"{name}.safetensors"


def run(*args: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main([str(arg) for arg in args], env=Environment(stdout=out, stderr=err))
    return status, out.getvalue(), err.getvalue()


def same_bits(got: np.ndarray, want: np.ndarray) -> bool:
    return got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes()


@pytest.mark.parametrize("key", KEYS)
def test_each_weight_dequantises_as_its_reference_did_bit_for_bit(key: str) -> None:
    name, weight = key.split("/", 1)
    with ws.open(EXPECTED) as expected, ws.open(fixture(name), dequantize=True) as ckpt:
        want = expected[key]
        got = ckpt[weight]
        assert ckpt.info(weight).dtype == want.dtype and ckpt.info(weight).shape == want.shape
    assert same_bits(got, want), key


def test_every_scheme_is_covered_and_ragged_edges_are_among_them() -> None:
    schemes = set()
    for key in KEYS:
        name, weight = key.split("/", 1)
        with ws.open(fixture(name)) as ckpt:
            schemes.add(recognise(ckpt)[weight].scheme)
    from weightscope.quant.coreml import DEQUANTIZERS as COREML  # recorded by Core ML files: tests/test_coreml.py

    schemes.add("tflite_affine")  # a TFLite tensor's own parameters: tests/test_tflite.py, against the interpreter
    # OpenVINO's decompression subgraphs are recognised from the graph, not from names: tests/test_openvino.py
    assert schemes == set(ws.quant.SCHEMES) - {"ov_compressed"} - set(COREML)  # type: ignore[attr-defined]
    with ws.open(fixture("fp8_block"), dequantize=True) as ckpt:
        assert ckpt.info("ragged.weight").shape == (40, 21)  # 16x16 blocks: the last row and column of blocks partial


def test_without_dequantize_the_parts_read_as_stored() -> None:
    stored = load_file(fixture("ct_int4") / "model.safetensors")
    with ws.open(fixture("ct_int4")) as ckpt:
        assert set(ckpt) == set(stored)
        for name, tensor in stored.items():
            assert ckpt[name].tobytes() == tensor.view(torch.uint8).numpy().tobytes()
    with ws.open(fixture("ct_int4"), dequantize=True) as ckpt:
        assert list(ckpt) == ["proj.weight"]
        assert ckpt.raw["proj.weight_packed"].dtype == np.int32  # type: ignore[attr-defined]


def test_the_logical_weight_lists_its_scheme_parts_and_bits() -> None:
    with ws.open(fixture("ct_nvfp4")) as raw:
        weight = recognise(raw)["proj.weight"]
        stored = sum(raw.info(part).nbytes for part in weight.parts)
    assert weight.scheme == "nvfp4_packed"
    assert weight.parts == ("proj.weight_packed", "proj.weight_scale", "proj.weight_global_scale")
    assert weight.bits_per_weight == stored * 8 / (12 * 64)  # 4 bits a value, an E4M3 scale per 16, one global


def test_a_dtype_casts_the_reference_values_rounding_to_nearest_even() -> None:
    with ws.open(fixture("fp8_block"), dequantize="bfloat16") as ckpt, ws.open(EXPECTED) as expected:
        got = ckpt["even.weight"]
        want = torch.from_numpy(np.array(expected["fp8_block/even.weight"])).to(torch.bfloat16)
    assert got.dtype == ml_dtypes.bfloat16
    assert got.view(np.uint16).tolist() == want.view(torch.int16).numpy().view(np.uint16).tolist()
    with ws.open(fixture("fp8_block")) as raw, pytest.raises(UsageError, match="no float dtype"):
        Dequantized(raw, "int8")


def test_ls_lists_a_quantised_weight_once_and_all_its_parts_with_all() -> None:
    status, out, _ = run("ls", "--json", fixture("gptq"))
    assert status == 0
    (row,) = json.loads(out)["tensors"]
    assert row["name"] == "model.layers.0.self_attn.q_proj.weight" and row["dtype"] == "gptq"
    assert row["shape"] == [24, 64] and len(row["parts"]) == 4
    assert row["bits_per_weight"] == round(row["nbytes"] * 8 / (64 * 24), 3)
    status, out, _ = run("ls", "--all", fixture("gptq"))
    assert status == 0 and "q_proj.qweight" in out and "q_proj.g_idx" in out and "gptq →" not in out


def test_summary_totals_bits_and_bytes_per_scheme() -> None:
    status, out, _ = run("summary", "--json", fixture("bnb"))
    assert status == 0
    quantized = json.loads(out)["quantized"]
    with ws.open(fixture("bnb")) as raw:
        weights = recognise(raw)
    for scheme in ("bnb_nf4", "bnb_fp4", "bnb_int8"):
        (weight,) = (w for w in weights.values() if w.scheme == scheme)
        assert quantized[scheme]["bytes"] == weight.nbytes and quantized[scheme]["values"] == weight.size
    status, out, _ = run("summary", fixture("bnb"))
    assert "quantised bnb_nf4: 1 weights, 1,650 values" in out


def test_show_and_stats_dequantize(tmp_path: Path) -> None:
    with ws.open(EXPECTED) as expected:
        want = np.array(expected["awq/mlp.up_proj.weight"])
    status, _, _ = run("show", "--dequantize", "--npy", tmp_path / "w.npy", fixture("awq"), "mlp.up_proj.weight")
    assert status == 0 and same_bits(np.load(tmp_path / "w.npy"), want)
    status, out, _ = run("stats", "--dequantize", "--json", fixture("awq"))
    (row,) = json.loads(out)
    assert status == 0 and row["max"] == float(want.max()) and row["min"] == float(want.min())


def test_convert_keeps_the_parts_as_stored_or_writes_values(tmp_path: Path) -> None:
    kept = tmp_path / "kept.safetensors"
    status, _, err = run("convert", "--dtype", "bfloat16", fixture("ct_fp8"), kept)
    assert status == 0, err
    stored = load_file(fixture("ct_fp8"))
    written = load_file(kept)
    assert set(written) == set(stored)
    for name, tensor in stored.items():  # not cast: float8 stays float8, a bfloat16 scale stays as it was
        assert written[name].dtype == tensor.dtype and torch.equal(
            written[name].view(torch.uint8), tensor.view(torch.uint8)
        )
    values = tmp_path / "values.safetensors"
    status, _, err = run("convert", "--dequantize", "--dtype", "float32", fixture("ct_fp8"), values)
    assert status == 0, err
    with ws.open(EXPECTED) as expected:
        want = np.array(expected["ct_fp8/channel.weight"]).astype(np.float32)
    assert same_bits(load_file(values)["channel.weight"].numpy(), want)
    status, out, _ = run("diff", "--dequantize", fixture("ct_fp8"), kept)
    assert status == 0, out


def broken(tmp_path: Path, name: str, change: dict[str, torch.Tensor], drop: tuple[str, ...] = ()) -> Path:
    """A copy of fixture ``name`` with some parts replaced or dropped (its config.json kept)."""
    source = fixture(name)
    folder = tmp_path / name
    if source.is_dir():
        shutil.copytree(source, folder)
        target = folder / "model.safetensors"
    else:
        folder.mkdir(parents=True)
        target = folder / source.name
    tensors = load_file(target if source.is_dir() else source)
    tensors.update(change)
    save_file({k: v for k, v in tensors.items() if k not in drop}, target, metadata={"format": "pt"})
    return folder if source.is_dir() else target


@pytest.mark.parametrize(
    ("name", "weight", "change", "drop", "message"),
    [
        ("fp8_block", "even.weight", {"even.weight_scale_inv": torch.ones(2, 2)}, (), "weight_scale_inv has shape"),
        ("mxfp4", "model.layers.0.mlp.experts.down_proj", {}, (), "scales has shape"),
        ("ct_int4_asym", "proj.weight", {}, ("proj.weight_zero_point",), "no weight_zero_point is stored"),
        ("ct_int4", "proj.weight", {"proj.weight_packed": torch.zeros(8, 7, dtype=torch.int32)}, (), "weight_packed"),
        ("bnb", "nf4.weight", {"nf4.weight": torch.zeros(10, 1, dtype=torch.uint8)}, (), "weight holds 10 bytes"),
        ("gptq", "model.layers.0.self_attn.q_proj.weight", {}, (), "qzeros has shape"),
        ("awq", "mlp.up_proj.weight", {"mlp.up_proj.qzeros": torch.zeros(3, 2, dtype=torch.int32)}, (), "qzeros"),
        ("bnb", "int8.weight", {"int8.SCB": torch.ones(5)}, (), "SCB holds 5 values"),
        ("ct_nvfp4", "proj.weight", {"proj.weight_global_scale": torch.ones(2)}, (), "weight_global_scale holds 2"),
    ],
)
def test_broken_parts_are_corrupt_naming_the_weight(
    tmp_path: Path, name: str, weight: str, change: dict[str, torch.Tensor], drop: tuple[str, ...], message: str
) -> None:
    if name == "mxfp4":
        change = {"model.layers.0.mlp.experts.down_proj_scales": torch.zeros(2, 6, 2, dtype=torch.uint8)}
    if name == "gptq":
        change = {"model.layers.0.self_attn.q_proj.qzeros": torch.zeros(4, 2, dtype=torch.int32)}
    path = broken(tmp_path, name, change, drop)
    with ws.open(path, dequantize=True) as ckpt, pytest.raises(CorruptCheckpointError) as caught:
        ckpt[weight]
    assert f"quantised weight '{weight}'" in str(caught.value) and message in str(caught.value)
    status, _, err = run("show", "--dequantize", path, weight)
    assert status == int(CorruptCheckpointError.exit_status) and f"'{weight}'" in err


def test_packed_f4_reads_as_torch_lays_it_and_writes_back_the_same_bytes(tmp_path: Path) -> None:
    raw = torch.randint(0, 256, (3, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    source = tmp_path / "f4.safetensors"
    save_file({"x": raw.view(torch.float4_e2m1fn_x2), "y": torch.ones(2)}, source)  # F4, shape [3, 8]
    with ws.open(source) as ckpt:
        x = ckpt["x"]
        assert x.dtype == ml_dtypes.float4_e2m1fn and x.shape == (3, 8)
        low_first = torch.stack([raw & 15, raw >> 4], dim=-1).reshape(3, 8).numpy()  # torch's x2: low nibble first
        assert x.view(np.uint8).tolist() == low_first.tolist()
        ws.save({"x": x, "y": ckpt["y"]}, tmp_path / "again.safetensors")
    assert (tmp_path / "again.safetensors").read_bytes() == source.read_bytes()


@pytest.mark.parametrize("code", ["F6_E2M3", "F6_E3M2"])
def test_packed_f6_reads_four_codes_from_three_bytes_and_writes_them_back(tmp_path: Path, code: str) -> None:
    data = bytes(range(7, 7 + 12))  # 16 six-bit codes
    header = json.dumps({"x": {"dtype": code, "shape": [4, 4], "data_offsets": [0, 12]}}).encode()
    header += b" " * (-len(header) % 8)
    source = tmp_path / "f6.safetensors"
    source.write_bytes(len(header).to_bytes(8, "little") + header + data)
    with ws.open(source) as ckpt:
        x = ckpt["x"]
    stream = int.from_bytes(data, "little")  # element k at bits 6k..6k+5 of the little-endian stream
    assert x.view(np.uint8).reshape(-1).tolist() == [(stream >> (6 * k)) & 63 for k in range(16)]
    assert x.dtype == np.dtype(getattr(ml_dtypes, code.replace("F6_", "float6_").lower() + "fn"))
    ws.save({"x": x}, tmp_path / "again.safetensors")
    assert (tmp_path / "again.safetensors").read_bytes()[-12:] == data
    with pytest.raises(UsageError, match="no whole number of bytes"):
        ws.save({"x": x[:1, :1]}, tmp_path / "odd.safetensors")


def _state(tensor: torch.Tensor, **changes: object) -> torch.Tensor:
    state = json.loads(bytes(tensor.numpy()).decode())
    state.update(changes)
    return torch.tensor(list(json.dumps(state).encode()), dtype=torch.uint8)


def test_a_hostile_quant_state_is_refused_or_costs_nothing(tmp_path: Path) -> None:
    stored = load_file(fixture("bnb"))
    key = "fp4.weight.quant_state.bitsandbytes__fp4"
    # Blocks of 2**40 values: the one block the 63 values fill, the same values, no 2**40-element scale row.
    path = broken(tmp_path / "huge", "bnb", {key: _state(stored[key], blocksize=1 << 40)})
    with ws.open(path, dequantize=True) as ckpt, ws.open(EXPECTED) as expected:
        assert same_bits(ckpt["fp4.weight"], expected["bnb/fp4.weight"])
    nf4 = "nf4.weight.quant_state.bitsandbytes__nf4"
    for name, change, drop, message in (
        ("negative", {key: _state(stored[key], shape=[-7, 9])}, (), "shape \\[-7, 9\\]"),
        ("not json", {key: torch.tensor([123, 34], dtype=torch.uint8)}, (), "its quant state"),
        ("no nested absmax", {}, ("nf4.weight.nested_absmax",), "no nf4.weight.nested_absmax is stored"),
        ("huge state", {nf4: torch.full((70000,), 32, dtype=torch.uint8)}, (), "a quant state of 70000 bytes"),
    ):
        path = broken(tmp_path / name.replace(" ", "_"), "bnb", change, drop)
        with pytest.raises(CorruptCheckpointError, match=message):
            ws.open(path, dequantize=True)


def test_gptq_v2_stores_the_zero_itself(tmp_path: Path) -> None:
    """GPTQModel's ``convert_gptq_v1_to_v2_format`` adds one to each zero field: the same weight, read as v2."""
    prefix = "model.layers.0.self_attn.q_proj."
    stored = load_file(fixture("gptq") / "model.safetensors")
    words = stored[prefix + "qzeros"].numpy().view(np.uint32)
    fields = [(words >> (4 * j)) & 15 for j in range(8)]
    repacked = sum(((field + 1) << (4 * j) for j, field in enumerate(fields)), np.zeros_like(words))
    path = broken(tmp_path, "gptq", {prefix + "qzeros": torch.from_numpy(repacked.view(np.int32))})
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "quantization_config": {
        **config["quantization_config"], "checkpoint_format": "gptq_v2"}}))  # fmt: skip
    with ws.open(path, dequantize=True) as ckpt, ws.open(EXPECTED) as expected:
        assert same_bits(ckpt[prefix + "weight"], expected["gptq/" + prefix + "weight"])


def test_parts_of_other_types_than_their_scheme_stores_are_not_taken_for_it(tmp_path: Path) -> None:
    """Names of a scheme over tensors of other types: read as stored, or refused naming the weight; never a crash."""
    quant_state = np.frombuffer(b'{"shape":[2,4],"blocksize":64,"dtype":"float32"}', np.uint8).copy()
    cases = {
        "nvfp4 codes in int32": {
            "p.weight_packed": np.full((2, 4), 1 << 30, np.int32),
            "p.weight_scale": np.ones((2, 1), np.float32),
            "p.weight_global_scale": np.ones(1, np.float32),
        },
        "mxfp4 scales in int32": {"e_blocks": np.zeros((1, 2, 1, 16), np.uint8), "e_scales": np.full((1, 2, 1), 999)},
        "bnb codes in int32": {
            "w.weight": np.full((4, 1), 1 << 20, np.int32),
            "w.weight.absmax": np.ones(1, np.float32),
            "w.weight.quant_map": np.ones(16, np.float32),
            "w.weight.quant_state.bitsandbytes__nf4": quant_state,
        },
    }
    for name, tensors in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.safetensors"
        ws.save(tensors, path)
        with ws.open(path, dequantize=True) as ckpt:
            assert sorted(ckpt) == sorted(tensors), name  # no scheme: every part as stored
    path = tmp_path / "gptq_float_g_idx.safetensors"
    ws.save(
        {
            "l.qweight": np.zeros((1, 8), np.int32),
            "l.qzeros": np.zeros((1, 1), np.int32),
            "l.scales": np.ones((1, 8), np.float16),
            "l.g_idx": np.full(8, 0.5, np.float32),
        },
        path,
    )
    with ws.open(path, dequantize=True) as ckpt, pytest.raises(CorruptCheckpointError, match="g_idx is float32"):
        ckpt["l.weight"]
