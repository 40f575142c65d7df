"""ExecuTorch programs exported by executorch 1.5.1 (tests/fixtures/executorch/make_pte.py), read back without it.

The oracles are committed beside the files: what ExecuTorch's own deserializer (``deserialize_pte_binary``) found in
each program (values, operators, kernel calls, delegates, named data) and the torch tensors each stored tensor was
made from (``expected.npz``: the module's parameters and buffers, as torch holds them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from conftest import assert_same_tensor
from safetensors.numpy import load_file

import weightscope as ws
from weightscope.cli import main
from weightscope.dtypes import BY_EXECUTORCH
from weightscope.formats.executorch import ExecuTorchCheckpoint, read_header
from weightscope.summary import summarize

FIXTURES = Path(__file__).parent / "fixtures" / "executorch"
EXPECTED: dict[str, Any] = json.loads((FIXTURES / "expected.json").read_text())
ARRAYS = np.load(FIXTURES / "expected.npz")
READ = sorted(name for name in EXPECTED if name != "external.pte")


def _name(plan: str, value: dict[str, Any]) -> str:
    """A name every stored tensor answers to: its recorded name, else ``<method>.values.<N>`` (an alias where the
    reader names it after the operator taking it)."""
    return value["fully_qualified_name"] or f"{plan}.values.{value['index']}"


def _stored(expected: dict[str, Any]) -> dict[tuple[bool, int], list[tuple[str, dict[str, Any]]]]:
    """The tensors held in the file (external ones aside) by where their bytes are, each with the values that take
    them (a constant two methods share is one tensor)."""
    found: dict[tuple[bool, int], list[tuple[str, dict[str, Any]]]] = {}
    for plan in expected["plans"]:
        for value in plan["values"]:
            if not value["external"]:
                found.setdefault((value["mutable"], value["data_buffer_idx"]), []).append((plan["name"], value))
    return found


def test_scalar_types_are_executorch_s_codes_for_torch_s_dtypes() -> None:
    codes = json.loads((FIXTURES / "scalar_types.json").read_text())
    assert set(BY_EXECUTORCH) == set(codes["schema"].values())  # every code the schema has, no other
    for torch_name, code in codes["torch"].items():  # the code the exporter writes for each torch dtype
        assert BY_EXECUTORCH[code].name == torch_name


@pytest.mark.parametrize("fixture", READ)
def test_every_stored_tensor_is_the_torch_tensor_it_was_exported_from(fixture: str) -> None:
    expected = EXPECTED[fixture]
    stored = _stored(expected)
    with ws.open(FIXTURES / fixture) as ckpt:
        assert isinstance(ckpt, ExecuTorchCheckpoint)
        assert len(ckpt) == len(stored)
        for values in stored.values():
            listed = {ckpt.info(_name(plan, value)).name for plan, value in values}
            assert len(listed) == 1  # every method's name for it leads to the one tensor listed
            for plan, value in values:
                name = _name(plan, value)
                info = ckpt.info(name)
                element = BY_EXECUTORCH[value["scalar_type"]]
                assert (info.type_name, info.shape, info.nbytes) == (
                    element.name,
                    tuple(value["sizes"]),
                    value["nbytes"],
                )
                ours = ckpt[name]
                theirs = ARRAYS[f"{fixture}:{plan}:{value['index']}"]
                if element.name == "bfloat16":  # kept as float32 in the npz, exactly
                    theirs = theirs.astype(ml_dtypes.bfloat16)
                assert_same_tensor(ours, theirs)


_LINEAR = ["Dense 4 → 8", "Dense 8 → 3"]  # Linear(4, 8), Linear(8, 3)


@pytest.mark.parametrize(
    ("fixture", "kinds"),
    [
        ("mlp.pte", _LINEAR),
        ("mlp_inline.pte", _LINEAR),
        ("mlp_float16.pte", _LINEAR),
        ("two_methods.pte", _LINEAR),
        # Embedding(10, 8), LayerNorm(8), BatchNorm1d(8), Linear(8, 10, bias=False); num_batches_tracked no op takes
        ("tiny_lm.pte", ["? 8 []", "BatchNorm 8", "Dense 8 → 10", "Embedding 10 × 8", "LayerNorm 8"]),
    ],
)
def test_constants_are_named_by_the_operators_taking_them_as_torch_names_them(fixture: str, kinds: list[str]) -> None:
    """``fc1.weight`` and ``fc1.bias`` become one layer's ``weight`` and ``bias`` (the program records neither name:
    the reader follows ``permute_copy`` into ``addmm``), a norm's statistics its ``running_mean`` and ``running_var``;
    ``summary`` sees the torch modules they came from."""
    layers: dict[str, set[str]] = {}
    with ws.open(FIXTURES / fixture) as ckpt:
        for plan in EXPECTED[fixture]["plans"]:
            for value in plan["values"]:
                name = ckpt.info(_name(plan["name"], value)).name
                module, role = value["source"].rsplit(".", 1)
                if role == "num_batches_tracked":
                    assert name == _name(plan["name"], value)
                    continue
                layer, own_role = name.rsplit(".", 1)
                assert own_role == role
                layers.setdefault(module, set()).add(layer)
        summary = summarize(ckpt)
    assert all(len(ours) == 1 for ours in layers.values())
    assert len({layer for ours in layers.values() for layer in ours}) == len(layers)  # one layer per torch module
    assert sorted(layer.description for layer in summary.layers) == kinds


def test_a_convolution_weight_is_named_and_described_as_torch_s_conv2d() -> None:
    with ws.open(FIXTURES / "conv_channels_last.pte") as ckpt:
        assert ckpt.info("forward.values.0").name == "forward.conv0.weight"
        assert ckpt.info("forward.values.1").name == "forward.conv0.bias"
        assert ckpt.info("forward.values.2").name == "forward.values.2"  # the buffer mul takes: no role
        descriptions = {layer.name: layer.description for layer in summarize(ckpt).layers}
    assert "Conv2D 3×3 3 → 4" in descriptions.values()  # Conv2d(3, 4, 3)


def test_channels_last_constants_are_given_in_their_logical_order_as_a_view_of_the_stored_bytes() -> None:
    with ws.open(FIXTURES / "conv_channels_last.pte") as ckpt:
        (plan,) = EXPECTED["conv_channels_last.pte"]["plans"]
        orders = {_name("forward", value): value["dim_order"] for value in plan["values"]}
        assert orders["forward.values.0"] == orders["forward.values.2"] == [0, 2, 3, 1]
        view = ckpt.view("forward.conv0.weight")
        assert view is not None and view.strides == (27, 1, 9, 3)  # [4, 3, 3, 3] stored as [4, 3, 3, 3] NHWC
        weight = ckpt["forward.conv0.weight"]
        assert not weight.flags.c_contiguous and weight.base is not None
        assert ckpt.view("forward.conv0.bias") is None


def test_size_breakdown_takes_each_kernel_calls_constants_from_the_program() -> None:
    for fixture in [*READ, "external.pte"]:
        expected = EXPECTED[fixture]
        with ws.open(FIXTURES / fixture) as ckpt:
            breakdown = ckpt.size_breakdown()
            by_value = {  # the name listed (an external tensor's recorded one) of every value holding data
                (plan["name"], value["index"]): value["fully_qualified_name"]
                if value["external"]
                else ckpt.info(_name(plan["name"], value)).name
                for plan in expected["plans"]
                for value in plan["values"]
            }
        assert breakdown is not None
        taken: dict[str, set[str]] = {}
        calls: dict[str, int] = {}
        for plan in expected["plans"]:
            for call in plan["calls"]:
                label = call.get("op") or f"delegate {call['delegate']}"
                calls[label] = calls.get(label, 0) + 1
                taken.setdefault(label, set()).update(by_value[plan["name"], index] for index in call["constants"])
        assert {entry["operator"]: set(entry["tensors"]) for entry in breakdown["operators"]} == taken
        assert {entry["operator"]: entry["calls"] for entry in breakdown["operators"]} == calls
        sizes = {entry["name"]: entry["bytes"] for entry in breakdown["tensors"]}
        assert sum(entry["bytes"] for entry in breakdown["operators"]) == sum(
            sizes[name] for names in taken.values() for name in names
        )
        assert {entry["key"]: entry["bytes"] for entry in breakdown["named_data"]} == expected["named_data"]
        assert breakdown["methods"] == [plan["name"] for plan in expected["plans"]]
        assert breakdown["constants"] == ("inline" if expected["inline"] else "segment")


def test_delegated_weights_are_counted_not_listed() -> None:
    with ws.open(FIXTURES / "xnnpack.pte") as ckpt:
        assert len(ckpt) == 0
        breakdown = ckpt.size_breakdown()
        notes = ckpt.notes
    assert breakdown is not None
    expected = EXPECTED["xnnpack.pte"]
    (delegate,) = breakdown["delegates"]
    assert delegate["id"] == "XnnpackBackend" == expected["plans"][0]["delegates"][0]["id"]
    assert delegate["bytes"] == expected["delegate_bytes"][0]  # the blob ExecuTorch restores inline
    assert breakdown["totals"]["named_data_bytes"] == sum(expected["named_data"].values()) == 128 + 32 + 96 + 12
    assert any("XnnpackBackend" in note and "not listed" in note for note in notes)


def test_external_constants_are_named_and_reported_not_followed() -> None:
    with ws.open(FIXTURES / "external.pte") as ckpt:
        assert len(ckpt) == 0
        (note,) = ckpt.notes
        breakdown = ckpt.size_breakdown()
    assert "fc1.weight" in note and ".ptd" in note
    assert breakdown is not None
    external = {entry["name"]: entry["bytes"] for entry in breakdown["tensors"] if entry["where"] == "external"}
    (plan,) = EXPECTED["external.pte"]["plans"]
    assert external == {value["fully_qualified_name"]: value["nbytes"] for value in plan["values"]}
    assert breakdown["totals"]["external_bytes"] == sum(external.values())


def test_extended_header_is_read_as_executorch_writes_it() -> None:
    data = (FIXTURES / "mlp.pte").read_bytes()
    header = read_header(data[:40], len(data), "mlp.pte")
    # _program.py: program_size includes the header; the segments start at its next multiple of 128
    assert header.length == 32 and header.program_size < header.segment_base_offset
    assert header.segment_base_offset == -(-header.program_size // 128) * 128
    assert header.segment_base_offset + header.segment_data_size == len(data)
    inline = (FIXTURES / "mlp_inline.pte").read_bytes()
    assert read_header(inline[:40], len(inline), "mlp_inline.pte").length == 0  # no header: the file is the program


def test_summary_json_has_the_size_breakdown(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "--json", str(FIXTURES / "conv_channels_last.pte")]) == 0
    document = json.loads(capsys.readouterr().out)
    breakdown = document["size_breakdown"]
    operators = {entry["operator"]: entry for entry in breakdown["operators"]}
    assert set(operators["aten::convolution.out"]["tensors"]) == {"forward.conv0.weight", "forward.conv0.bias"}
    assert operators["aten::convolution.out"]["bytes"] == 4 * 3 * 3 * 3 * 4 + 4 * 4
    assert breakdown["totals"]["tensor_bytes"] == sum(entry["bytes"] for entry in breakdown["tensors"])
    assert main(["summary", str(FIXTURES / "conv_channels_last.pte")]) == 0
    text = capsys.readouterr().out
    assert "aten::convolution.out" in text and "taken by" in text
    assert main(["summary", "--json", str(FIXTURES / "mlp.pte")]) == 0
    assert "size_breakdown" in json.loads(capsys.readouterr().out)


def test_summary_of_a_checkpoint_that_is_no_program_has_no_breakdown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws.save({"w": np.ones((2, 2), np.float32)}, tmp_path / "w.safetensors")
    assert main(["summary", "--json", str(tmp_path / "w.safetensors")]) == 0
    assert "size_breakdown" not in json.loads(capsys.readouterr().out)


def test_convert_to_safetensors(tmp_path: Path) -> None:
    for fixture in ("conv_channels_last.pte", "typed.pte", "mlp_bfloat16.pte", "two_methods.pte"):
        out = tmp_path / fixture.replace(".pte", ".safetensors")
        assert main(["convert", str(FIXTURES / fixture), str(out)]) == 0
        written = load_file(out) if fixture != "mlp_bfloat16.pte" else None
        with ws.open(FIXTURES / fixture) as ckpt, ws.open(out) as converted:
            assert sorted(converted) == sorted(ckpt)  # safetensors keeps its names sorted
            for name in ckpt:
                assert_same_tensor(converted[name], ckpt[name])
                if written is not None:
                    assert_same_tensor(written[name], ckpt[name])


def test_a_program_read_over_http_reads_as_the_local_file() -> None:
    from test_remote import assert_same_as_local, serving

    with serving(FIXTURES) as root:
        for fixture in ("conv_channels_last.pte", "two_methods.pte", "mutable.pte"):
            assert_same_as_local(f"{root}/{fixture}", FIXTURES / fixture)


def test_a_tensor_of_a_type_numpy_cannot_hold_is_named_in_a_note_not_listed(tmp_path: Path) -> None:
    from corpus.make_executorch_corpus import patched_field, tensor_of

    path = tmp_path / "quint4x2.pte"
    path.write_bytes(patched_field(lambda root: (tensor_of(root, 0), 0, 1), "<b", 16))  # QUINT4X2
    with ws.open(path) as ckpt:
        assert "forward.values.0" not in ckpt and len(ckpt) == 3
        assert any("quint4x2" in note and "not listed" in note for note in ckpt.notes)


def test_scan_finds_no_code_in_a_program_and_refuses_a_broken_one() -> None:
    assert main(["scan", str(FIXTURES / "mlp.pte")]) == 0
    broken = Path(__file__).parent / "corpus" / "executorch" / "TruncatedFileError--segments-cut-off.pte"
    assert main(["scan", str(broken)]) == ws.TruncatedFileError.exit_status


def test_a_program_laid_out_by_the_flatbuffers_package_reads_as_built(tmp_path: Path) -> None:
    """The layout as the flatbuffers package's Builder writes it (another writer than ExecuTorch's): constants in a
    segment after an ``eh00`` header, or inline without one."""
    from corpus.make_executorch_corpus import built_program

    values = np.arange(8, dtype="<f4")
    path = tmp_path / "built.pte"
    path.write_bytes(built_program([(1, "w", False), (2, None, False)], [0, 0, 16], [], values.tobytes()))
    with ws.open(path) as ckpt:
        assert list(ckpt) == ["w", "forward.values.1"]
        assert_same_tensor(ckpt["w"], values[:4])
        assert_same_tensor(ckpt["forward.values.1"], values[4:])
    path.write_bytes(built_program([(1, None, False)], [], [b"", values[:4].tobytes()], b""))
    with ws.open(path) as ckpt:
        assert ckpt.metadata["executorch.constants"] == "inline"
        assert_same_tensor(ckpt["forward.values.0"], values[:4])


def test_the_dequantised_view_keeps_the_programs_size_breakdown() -> None:
    """``ws.open(dequantize=True)`` wraps a program in the dequantised view, whose summary still says where its
    bytes go."""
    from weightscope.quant import Dequantized

    with ws.open(FIXTURES / "mlp.pte") as raw:
        breakdown = raw.size_breakdown()
        assert breakdown is not None
        assert Dequantized(raw, quantized={}).size_breakdown() == breakdown
