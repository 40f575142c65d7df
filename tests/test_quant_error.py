"""Quantisation error (issue 20, item 4): ``diff ORIGINAL QUANTISED`` pairs each quantised weight with its original,
across names (GGUF <-> Hugging Face) and llama.cpp's Q/K rotary permutation, and its figures equal numpy's on the
reference dequantisation: the committed expected values of ``tests/fixtures/quant`` (``make_quant.py``) and, for the
tiny Llama converted to GGUF (``make_llama_gguf.py``), gguf-py's own ``GGUFReader`` and ``quants.dequantize``."""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path

import gguf
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import weightscope as ws
from weightscope.cli import Environment, main
from weightscope.errors import CorruptCheckpointError, ExitStatus
from weightscope.quant.error import Aligned, gguf_llama_names, layer_of, quantization_error

HERE = Path(__file__).parent / "fixtures" / "quant"
EXPECTED = HERE / "expected.safetensors"
HF, GGUF = HERE / "llama_hf", HERE / "llama.gguf"
FIGURES = ("rmse", "max_abs", "snr_db", "cosine", "outlier_share")


def run(*args: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main([str(arg) for arg in args], env=Environment(stdout=out, stderr=err))
    return status, out.getvalue(), err.getvalue()


def fixture(name: str) -> Path:
    return HERE / name if (HERE / name).is_dir() else HERE / f"{name}.safetensors"


def numpy_sums(w: np.ndarray, q: np.ndarray) -> dict[str, float]:
    """The sums the figures come from, straight from their definitions (README, weightscope.quant.error)."""
    w, q = w.astype(np.float64).ravel(), q.astype(np.float64).ravel()
    magnitudes = np.abs(w[np.isfinite(w)])
    threshold = np.sort(magnitudes)[-math.ceil(0.001 * magnitudes.size)]  # the k-th largest: ties are outliers too
    finite = np.isfinite(w) & np.isfinite(q)  # pairs with a NaN or an infinity are left out
    w, q = w[finite], q[finite]
    d2 = (w - q) ** 2
    return {
        "n": w.size,
        "d2": d2.sum(),
        "w2": (w * w).sum(),
        "q2": (q * q).sum(),
        "dot": (w * q).sum(),
        "max": np.abs(w - q).max(),
        "outliers": d2[np.abs(w) >= threshold].sum(),
    }


def numpy_figures(sums: dict[str, float]) -> dict[str, float | None]:
    d2 = sums["d2"]
    return {
        "rmse": math.sqrt(d2 / sums["n"]),
        "max_abs": sums["max"],
        "snr_db": 10 * math.log10(sums["w2"] / d2) if d2 else math.inf,
        "cosine": sums["dot"] / math.sqrt(sums["w2"] * sums["q2"]),
        "outlier_share": sums["outliers"] / d2 if d2 else None,
    }


def combined(parts: list[dict[str, float]]) -> dict[str, float]:
    return {key: max(p[key] for p in parts) if key == "max" else sum(p[key] for p in parts) for key in parts[0]}


def assert_figures(got: dict[str, object], want: dict[str, float | None], what: str) -> None:
    for key in FIGURES:
        value, expected = got[key], want[key]
        if expected is None or math.isinf(expected):
            assert value == (None if expected is None else "Infinity"), (what, key, value)
        else:
            assert value == pytest.approx(expected, rel=1e-9, abs=1e-300), (what, key, value, expected)
    assert got["max_abs"] == want["max_abs"], what  # a maximum is exact, not a sum


# -- the tiny Llama and its GGUF conversion --------------------------------------------------


def llama_permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute (the heads already chosen: n_head_kv for k)."""
    return (
        weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def gguf_reference() -> dict[str, np.ndarray]:
    """Every tensor of the GGUF as gguf-py dequantises it, in numpy's [out, in] order (GGML's dims reversed)."""
    reader = gguf.GGUFReader(GGUF)
    return {
        tensor.name: gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(
            [int(d) for d in reversed(tensor.shape)]
        )
        for tensor in reader.tensors
    }


def test_llama_gguf_aligns_with_its_original_with_no_names_given_and_figures_equal_numpys() -> None:
    status, out, err = run("diff", "--json", HF, GGUF)
    assert status == ExitStatus.DIFFERENT, err
    document = json.loads(out)
    original = load_file(HF / "model.safetensors")
    reference = gguf_reference()
    assert document["matched_by"] == "name"
    assert document["only_original"] == [] and document["only_quantised"] == []
    assert len(document["tensors"]) == len(original) == len(reference) == 21
    heads = {"attn_q": 4, "attn_k": 2}  # the fixture's num_attention_heads and num_key_value_heads
    by_layer: dict[str, list[dict[str, float]]] = {}
    for row in document["tensors"]:
        w, q = original[row["name"]], reference[row["other"]]
        assert row["shape"] == [list(w.shape), list(w.shape)] and q.shape == w.shape  # GGML's [in, out] reversed
        kind = row["other"].split(".")[-2]
        if kind in heads:  # the test's own inverse: compare in GGUF's order, the original permuted as llama.cpp does
            w = llama_permute(w, heads[kind])
            assert row["moved"] == f"rotary permutation undone ({heads[kind]} heads)"
        sums = numpy_sums(w, q)
        by_layer.setdefault(layer_of(row["name"]), []).append(sums)
        assert_figures(row, numpy_figures(sums), row["name"])
    assert {row["name"]: row["type"] for row in document["tensors"] if row["name"].startswith("model.layers.0.s")} == {
        "model.layers.0.self_attn.q_proj.weight": "float32",
        "model.layers.0.self_attn.k_proj.weight": "float16",
        "model.layers.0.self_attn.v_proj.weight": "q8_0",
        "model.layers.0.self_attn.o_proj.weight": "q8_0",
    }
    layers = {row["layer"]: row for row in document["layers"]}
    assert list(layers) == ["lm_head", "model.embed_tokens", "model.layers.0", "model.layers.1", "model.norm"]
    for layer, parts in by_layer.items():
        assert layers[layer]["count"] == sum(p["n"] for p in parts)
        assert_figures(layers[layer], numpy_figures(combined(parts)), layer)
    assert layers["model.layers.1"]["snr_db"] < layers["model.layers.0"]["snr_db"]  # Q4_0 costs more than Q8_0


def test_the_rotary_permutation_is_undone_value_for_value() -> None:
    original = load_file(HF / "model.safetensors")
    with ws.open(GGUF) as ckpt:
        aligned = gguf_llama_names(ckpt, list(ckpt))
        q = aligned["model.layers.0.self_attn.q_proj.weight"]
        k = aligned["model.layers.0.self_attn.k_proj.weight"]
        assert (q.source, q.heads, k.source, k.heads) == ("blk.0.attn_q.weight", 4, "blk.0.attn_k.weight", 2)
        stored_q = ckpt["blk.0.attn_q.weight"]
        assert np.array_equal(q.read(ckpt), original["model.layers.0.self_attn.q_proj.weight"])  # stored F32
        assert not np.array_equal(stored_q, original["model.layers.0.self_attn.q_proj.weight"])  # as stored: permuted
        want_k = original["model.layers.0.self_attn.k_proj.weight"].astype(np.float16)  # stored F16
        assert np.array_equal(k.read(ckpt), want_k)
    _, out, _ = run("diff", "--json", "--all", HF, GGUF)
    rows = {row["name"]: row for row in json.loads(out)["tensors"]}
    assert rows["model.layers.0.self_attn.q_proj.weight"]["rmse"] == 0.0


def test_either_side_may_be_the_quantised_one_and_the_original_of_any_format(tmp_path: Path) -> None:
    import torch

    _, forward, _ = run("diff", "--json", HF, GGUF)
    status, backward, _ = run("diff", "--json", GGUF, HF)
    assert status == ExitStatus.DIFFERENT
    assert json.loads(backward) == json.loads(forward)
    pickled = tmp_path / "llama.pt"
    torch.save({name: torch.from_numpy(value) for name, value in load_file(HF / "model.safetensors").items()}, pickled)
    status, other, _ = run("diff", "--json", pickled, GGUF)
    assert status == ExitStatus.DIFFERENT
    assert json.loads(other)["tensors"] == json.loads(forward)["tensors"]


def test_two_quantised_sides_or_none_are_a_plain_diff() -> None:
    for a, b in ((fixture("gptq"), fixture("gptq")), (GGUF, GGUF), (HF, HF)):
        status, out, err = run("diff", "--json", a, b)
        assert status == 0, err
        document = json.loads(out)
        assert document["equal"] and "only_a" in document and "layers" not in document


def test_text_output_and_the_plot_per_layer(tmp_path: Path) -> None:
    image = tmp_path / "error.png"
    status, out, err = run("diff", HF, GGUF, "--plot", image)
    assert status == ExitStatus.DIFFERENT, err
    assert re.search(r"model\.layers\.1\.self_attn\.q_proj\.weight ~ blk\.1\.attn_q\.weight +q4_0 ", out)
    assert "model.layers.0.self_attn.q_proj.weight" not in out  # exact: listed only with --all
    assert "21 tensors of" in out and "6 exact" in out
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"wrote {image}" in err
    status, _, err = run("diff", HF, GGUF, "--atol", "0.1")
    assert status == ExitStatus.DIFFERENT and "do not apply to a quantisation error" in err
    status, _, err = run("diff", HF, HF, "--plot", image)
    assert status == ExitStatus.USAGE and "--plot" in err


# -- the quantisation schemes' fixtures: an original near the reference dequantisation ------------------------------


@pytest.mark.parametrize("name", sorted({key.split("/", 1)[0] for key in load_file(EXPECTED)}))
def test_scheme_figures_equal_numpys_on_the_reference_dequantisation(tmp_path: Path, name: str) -> None:
    import ml_dtypes  # noqa: F401  (bfloat16 expected values)

    expected = {key.split("/", 1)[1]: value for key, value in _expected_values().items() if key.startswith(name + "/")}
    rng = np.random.default_rng(20)
    originals: dict[str, np.ndarray] = {}
    with ws.open(fixture(name), dequantize=True) as ckpt:
        for weight in ckpt:
            if ckpt.role(weight).kind != "parameter":
                continue
            values = np.asarray(ckpt[weight]).astype(np.float32)
            if weight in expected:  # what the quantiser might have been given: the reference's values, disturbed
                scale = float(np.abs(values[np.isfinite(values)]).max())  # mxfp4's holds 2**127 * 6: inf in bfloat16
                values = values + rng.normal(0, 0.05 * scale, values.shape)
            originals[weight] = np.ascontiguousarray(values, dtype=np.float32)
    assert set(expected) <= set(originals)
    path = tmp_path / "original.safetensors"
    save_file(originals, path)
    status, out, err = run("diff", "--json", path, fixture(name))
    assert status == ExitStatus.DIFFERENT, err
    assert run("diff", "--json", "--dequantize", path, fixture(name))[1] == out  # the same, asked for or not
    rows = {row["name"]: row for row in json.loads(out)["tensors"]}
    for weight, reference in expected.items():
        assert rows[weight]["type"] not in ("float32", "float16", "bfloat16")
        assert_figures(rows[weight], numpy_figures(numpy_sums(originals[weight], reference)), weight)
        w, q = originals[weight].astype(np.float64), reference.astype(np.float64)
        assert rows[weight]["nonfinite"] == np.count_nonzero(~(np.isfinite(w) & np.isfinite(q)))
    if name == "mxfp4":  # its scale byte 255 makes infinities in the reference: left out, and counted
        assert next(iter(rows.values()))["nonfinite"] > 0


def test_an_original_of_another_framework_is_matched_by_the_layer_model(tmp_path: Path) -> None:
    reference = _expected_values()["ct_int4/proj.weight"]
    original = reference.astype(np.float32) + np.random.default_rng(4).normal(0, 0.1, reference.shape)
    np.savez(tmp_path / "tf.npz", **{"proj/kernel": np.ascontiguousarray(original.T, dtype=np.float32)})  # [in, out]
    status, out, _ = run("diff", "--json", tmp_path / "tf.npz", fixture("ct_int4"))
    assert status == ExitStatus.DIFFERENT
    document = json.loads(out)
    assert document["matched_by"] == "layer model" and document["only_original"] == []
    (row,) = document["tensors"]
    assert (row["name"], row["other"], row["layer"], row["moved"]) == (
        "proj/kernel",
        "proj.weight",
        "proj",
        "both in PyTorch's layout",
    )
    assert_figures(row, numpy_figures(numpy_sums(original.astype(np.float32), reference)), "proj")


def _expected_values() -> dict[str, np.ndarray]:
    with ws.open(EXPECTED) as ckpt:
        return {key: np.array(ckpt[key]) for key in ckpt}


def write_gguf(path: Path, tensors: dict[str, np.ndarray], heads: int | None = None) -> Path:
    """A llama GGUF of ``tensors`` (2-D float32 ones ending in ``ffn_up.weight`` stored Q8_0), with gguf-py."""
    writer = gguf.GGUFWriter(path, "llama")
    if heads is not None:
        writer.add_head_count(heads)
    for name, values in tensors.items():
        if name.endswith("ffn_up.weight"):
            kind = gguf.GGMLQuantizationType.Q8_0
            writer.add_tensor(name, gguf.quants.quantize(values, kind), raw_dtype=kind)
        else:
            writer.add_tensor(name, values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_name_the_file_already_holds_is_not_given_to_another(tmp_path: Path) -> None:
    path = write_gguf(
        tmp_path / "clash.gguf",
        {"output.weight": np.ones((4, 32), np.float32), "lm_head.weight": np.zeros((4, 32), np.float32)},
    )
    with ws.open(path) as ckpt:
        assert gguf_llama_names(ckpt, list(ckpt)) == {
            name: Aligned(name) for name in ("output.weight", "lm_head.weight")
        }


def test_the_ggufs_head_counts_are_checked(tmp_path: Path) -> None:
    for heads, rows, message in ((4, 12, "12 rows"), (None, 16, "no llama.attention.head_count"), (0, 16, "is 0")):
        tensors = {
            "blk.0.attn_q.weight": np.ones((rows, 32), np.float32),
            "blk.0.ffn_up.weight": np.ones((8, 32), np.float32),
        }
        path = write_gguf(tmp_path / f"q{heads}-{rows}.gguf", tensors, heads)
        original = {
            "model.layers.0.self_attn.q_proj.weight": tensors["blk.0.attn_q.weight"],
            "model.layers.0.mlp.up_proj.weight": tensors["blk.0.ffn_up.weight"],
        }
        save_file(original, tmp_path / "hf.safetensors")
        with (
            ws.open(path) as ckpt,
            ws.open(tmp_path / "hf.safetensors") as hf,
            pytest.raises(CorruptCheckpointError, match=message),
        ):
            quantization_error(hf, ckpt)
        status, _, err = run("diff", tmp_path / "hf.safetensors", path)
        assert status == ExitStatus.CORRUPT and message in err and "Traceback" not in err


def test_a_pair_of_other_shapes_is_named_not_measured(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "up.gguf", {"blk.0.ffn_up.weight": np.ones((8, 32), np.float32)})
    save_file({"model.layers.0.mlp.up_proj.weight": np.ones((32, 8), np.float32)}, tmp_path / "hf.safetensors")
    status, out, _ = run("diff", "--json", tmp_path / "hf.safetensors", path)
    assert status == ExitStatus.DIFFERENT
    (row,) = json.loads(out)["tensors"]
    assert row["status"] == "shape" and row["shape"] == [[32, 8], [8, 32]] and row["rmse"] is None
    assert json.loads(out)["layers"] == []
    status, out, _ = run("diff", tmp_path / "hf.safetensors", path)
    assert status == ExitStatus.DIFFERENT and "shape [32, 8] vs [8, 32]" in out
