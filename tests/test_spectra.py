"""Spectral figures (weightscope.spectra, ``weightscope spectra``) against weightwatcher's on the same weights.

weightwatcher needs pandas, scikit-learn, scipy and powerlaw beside torch: it ran in the fixtures environment
(tests/fixtures/spectra/make_spectra.py) on a torch model, and its per-layer DataFrame is committed beside the
model's weights; these tests compute the figures from the weights file and compare.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import weightscope as ws
from weightscope.cli import Environment, main
from weightscope.spectra import (
    Skipped,
    Spectrum,
    checkpoint_spectra,
    path_spectra,
    randomized_singular_values,
    spectrum,
)

HERE = Path(__file__).parent / "fixtures" / "spectra"
MODEL = HERE / "model.safetensors"
DIGITS = HERE / "digits.safetensors"  # a small conv net trained on scikit-learn's digits


def _figures(name: str) -> dict[str, dict[str, object]]:
    return {row["name"]: row for row in json.loads((HERE / name).read_text())}


WEIGHTWATCHER = _figures("weightwatcher.json")
CASES = [(MODEL, layer, row) for layer, row in WEIGHTWATCHER.items()] + [
    (DIGITS, layer, row) for layer, row in _figures("weightwatcher_digits.json").items()
]


def _close(ours: float | int | None, theirs: float, rtol: float = 1e-8) -> bool:
    """Within weightwatcher's own precision: its JSON holds 10 decimals."""
    return ours is not None and abs(ours - theirs) <= rtol * abs(theirs) + 1e-10


@pytest.mark.parametrize(("path", "layer", "theirs"), CASES, ids=[f"{path.stem}-{layer}" for path, layer, _ in CASES])
def test_figures_equal_weightwatchers(path: Path, layer: str, theirs: dict[str, Any]) -> None:
    """Every layer weightwatcher analysed (the embedding too, through the API: the command skips it)."""
    with ws.open(path) as ckpt:
        ours = spectrum(f"{layer}.weight", ckpt[f"{layer}.weight"])
    # weightwatcher scales each conv slice by 1/sqrt(2) (conv2d_norm): its eigenvalues are half the true ones.
    scale = 0.5 if theirs["layer_type"] == "conv2d" else 1.0
    assert (ours.n, ours.m, ours.matrices) == (theirs["N"], theirs["M"], theirs["rf"])
    assert len(ours.singular_values) == theirs["num_evals"]
    assert _close(scale * ours.spectral_norm**2, theirs["spectral_norm"])
    assert _close(scale * ours.frobenius_norm**2, theirs["norm"])
    assert _close(ours.stable_rank, theirs["stable_rank"])
    assert _close(ours.entropy, theirs["entropy"])
    assert _close(ours.alpha, theirs["alpha"])
    assert ours.xmin is not None and _close(scale * ours.xmin, theirs["xmin"])
    assert _close(ours.ks_distance, theirs["D"])
    assert _close(ours.alpha_error, theirs["sigma"])
    assert ours.tail == theirs["num_pl_spikes"]
    assert ours.mp_spikes == theirs["num_spikes"]
    assert _close(ours.mp_sigma, theirs["sigma_mp"])


def test_the_fixtures_exercise_each_path() -> None:
    """A heavy tail with MP spikes, the small-N fit, convs (one with a single input channel), a trained net's
    layers: else the comparison above proves less."""
    rows = [row for _, _, row in CASES]
    assert sum(row["num_spikes"] > 0 for row in rows) >= 3
    assert any(row["num_evals"] < 20 for row in rows)
    assert any(row["layer_type"] == "conv2d" and row["M"] == 1 for row in rows)
    assert any(row["N"] == row["M"] and row["num_spikes"] > 0 for row in rows)  # Q = 1: the quarter-circle law
    assert {row["layer_type"] for row in rows} >= {"dense", "conv2d", "embedding"}
    assert len({path for path, _, _ in CASES}) == 2


def test_singular_values_equal_torchs() -> None:
    with ws.open(MODEL) as ckpt:
        for name in ("fc1.weight", "fc2.weight", "head.weight"):
            weight = ckpt[name]
            expected = torch.linalg.svdvals(torch.tensor(weight, dtype=torch.float64)).numpy()
            np.testing.assert_allclose(spectrum(name, weight).singular_values, expected, rtol=1e-12, atol=1e-14)


def test_tensorflow_conv_layout_gives_the_same_spectrum() -> None:
    """(kh, kw, in, out) is found as weightwatcher finds it: the same slices as PyTorch's (out, in, kh, kw)."""
    with ws.open(MODEL) as ckpt:
        kernel = ckpt["conv.weight"]
    torch_layout = spectrum("conv", kernel)
    tf_layout = spectrum("conv", np.ascontiguousarray(kernel.transpose(2, 3, 1, 0)))
    np.testing.assert_allclose(tf_layout.singular_values, torch_layout.singular_values, rtol=1e-12)
    assert tf_layout.alpha == pytest.approx(torch_layout.alpha, rel=1e-12)


def test_randomized_values_stay_within_the_stated_bound() -> None:
    generator = np.random.default_rng(5)
    left, _ = np.linalg.qr(generator.standard_normal((300, 200)))
    right, _ = np.linalg.qr(generator.standard_normal((200, 200)))
    matrix = (left * (1.0 / np.arange(1, 201) ** 1.5)) @ right.T  # a decaying spectrum, as trained layers have
    exact = np.linalg.svd(matrix, compute_uv=False)
    values, bound = randomized_singular_values(matrix, 20)
    assert 0 < bound < 0.05 * exact[0]
    assert np.all(np.abs(values - exact[:20]) <= bound)
    assert np.all(values <= exact[:20] + 1e-12)  # a projection's singular values never exceed the matrix's
    low_rank = left[:, :5] @ right[:, :5].T
    values, bound = randomized_singular_values(low_rank, 5)
    assert bound < 1e-6 and np.allclose(values, 1.0)
    result = spectrum("m", matrix, top=20)
    assert result.method == "randomized" and result.error_bound > 0 and result.mp_spikes is None
    assert result.frobenius_norm == pytest.approx(np.linalg.norm(matrix), rel=1e-12)  # exact on every path


def test_skipped_with_reasons() -> None:
    with ws.open(MODEL) as ckpt:
        results = {result.name: result for result in checkpoint_spectra(ckpt, list(ckpt))}
    reasons = {name: result.reason for name, result in results.items() if isinstance(result, Skipped)}
    assert "embedding" in reasons["embed.weight"]
    assert "vector" in reasons["norm.weight"] and "vector" in reasons["fc1.bias"]
    assert "min_evals" in reasons["tiny.weight"]
    assert sorted(name for name, result in results.items() if isinstance(result, Spectrum)) == sorted(
        f"{layer}.weight" for layer in WEIGHTWATCHER if layer != "embed"
    )


def test_non_finite_and_zero_matrices(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    bad = np.ones((10, 12), np.float32)
    bad[3, 4] = np.nan
    path = tmp_path / "odd.safetensors"
    integers = np.ones((10, 12), np.int8)
    save_file({"bad.weight": bad, "zero.weight": np.zeros((10, 12), np.float32), "q.weight": integers}, str(path))
    with ws.open(path) as ckpt:
        bad_result, zero_result, integer_result = checkpoint_spectra(ckpt, ["bad.weight", "zero.weight", "q.weight"])
    assert isinstance(integer_result, Skipped) and "--dequantize" in integer_result.reason
    assert isinstance(bad_result, Skipped) and "NaN" in bad_result.reason
    assert isinstance(zero_result, Spectrum)
    assert (zero_result.spectral_norm, zero_result.alpha, zero_result.effective_rank) == (0.0, None, 0.0)


def _run(*args: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main([str(arg) for arg in args], env=Environment(stdout=out, stderr=err))
    return status, out.getvalue(), err.getvalue()


def test_command_json_equals_the_api() -> None:
    status, out, err = _run("spectra", MODEL, "--json")
    assert status == 0, err
    rows = {row["name"]: row for row in json.loads(out)}
    assert rows["embed.weight"]["skipped"].startswith("an embedding")
    fc2 = rows["fc2.weight"]
    assert fc2["mp_spikes"] == WEIGHTWATCHER["fc2"]["num_spikes"] == 3
    assert _close(fc2["alpha"], WEIGHTWATCHER["fc2"]["alpha"])
    with ws.open(MODEL) as ckpt:
        assert fc2 == spectrum("fc2.weight", ckpt["fc2.weight"]).to_json()


def test_command_table_and_names() -> None:
    status, out, err = _run("spectra", MODEL, "fc2.weight", "head.weight")
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["name", "shape", "spectral"] and len(lines) == 4
    assert lines[2].startswith("fc2.weight") and lines[2].split()[-1] == "3"
    status, out, err = _run("spectra", MODEL, "fc2.weight", "--top", "5", "--json", "--values")
    (row,) = json.loads(out)
    assert row["method"] == "randomized" and len(row["singular_values"]) == 5
    status, out, err = _run("spectra", MODEL, "--filter", "*.bias")
    assert status == 0 and "skipped 8, a vector" in err  # eight biases


def test_threads_single_process_and_a_cluster_agree(client: Any) -> None:
    """Threads (the default), one thread, and a LocalCluster of 2 worker processes: the same figures, bit for bit."""
    with ws.open(MODEL) as ckpt:
        names = list(ckpt)
        on_threads = [result.to_json() for result in checkpoint_spectra(ckpt, names)]
        with_values = [result.to_json(True) for result in checkpoint_spectra(ckpt, names, top=6, workers=1)]
    single = [result.to_json() for result in path_spectra(str(MODEL), names, scheduler="sync")]
    on_cluster = [result.to_json() for result in path_spectra(str(MODEL), names, client=client)]
    randomized = [result.to_json(True) for result in path_spectra(str(MODEL), names, top=6, client=client)]
    assert on_threads == single == on_cluster
    # The randomized path's products sum in an order that depends on BLAS's threads (one a Dask worker): equal
    # to rounding, not bit for bit.
    for ours, theirs in zip(with_values, randomized, strict=True):
        assert ours.keys() == theirs.keys() and ours.get("skipped") == theirs.get("skipped")
        if "singular_values" in ours:
            np.testing.assert_allclose(theirs["singular_values"], ours["singular_values"], rtol=1e-12)
            for key in ("spectral_norm", "stable_rank", "entropy", "alpha", "xmin", "error_bound"):
                assert theirs[key] == (None if ours[key] is None else pytest.approx(ours[key], rel=1e-9, abs=1e-12))
    assert sum("alpha" in row for row in on_cluster) == 6


def test_command_on_a_scheduler() -> None:
    status, out, err = _run("spectra", MODEL, "--json", "--scheduler", "sync")
    assert status == 0, err
    status, threaded, err = _run("spectra", MODEL, "--json")
    assert json.loads(out) == json.loads(threaded)
    status, out, err = _run("spectra", MODEL, "--scheduler", "bogus")
    assert status != 0 and "unknown scheduler" in err


def test_fused_qkv_split_where_names_show_it(tmp_path: Path) -> None:
    """Without config.json: GPT-2's c_attn (in, 3 x out) and a Linear's qkv (3 x out, in) in thirds, three
    spectra each, as the parts alone give; unequal parts and query_key_value (interleaved) whole, with a note."""
    from safetensors.numpy import save_file

    generator = np.random.default_rng(3)
    gpt2 = generator.standard_normal((16, 48)).astype(np.float32)
    linear = generator.standard_normal((48, 16)).astype(np.float32)
    grouped = generator.standard_normal((32, 16)).astype(np.float32)  # grouped-query: not split
    neox = generator.standard_normal((48, 16)).astype(np.float32)  # thirds in shape, but interleaved per head
    path = tmp_path / "attn.safetensors"
    tensors = {"h.0.attn.c_attn.weight": gpt2, "blk.qkv.weight": linear, "gqa.qkv.weight": grouped}
    save_file(tensors | {"h.0.attention.query_key_value.weight": neox}, str(path))
    with ws.open(path) as ckpt:
        results = {result.name: result for result in checkpoint_spectra(ckpt, list(ckpt))}
    assert sorted(results) == sorted(
        [f"h.0.attn.c_attn.weight[{part}]" for part in "qkv"]
        + [f"blk.qkv.weight[{part}]" for part in "qkv"]
        + ["gqa.qkv.weight", "h.0.attention.query_key_value.weight"]
    )
    for index, part in enumerate("qkv"):
        alone = spectrum("part", gpt2[:, 16 * index : 16 * (index + 1)])
        split = results[f"h.0.attn.c_attn.weight[{part}]"]
        assert isinstance(split, Spectrum) and split.note is None
        np.testing.assert_array_equal(split.singular_values, alone.singular_values)
        assert results[f"blk.qkv.weight[{part}]"].shape == (16, 16)
    grouped_result, neox_result = results["gqa.qkv.weight"], results["h.0.attention.query_key_value.weight"]
    assert isinstance(grouped_result, Spectrum) and "config.json" in str(grouped_result.note)
    assert isinstance(neox_result, Spectrum) and "interleaved per head" in str(neox_result.note)
    status, _, err = _run("spectra", path)
    assert status == 0 and "not split into q, k, v (unequal parts" in err and "gqa.qkv.weight" in err, err


def _phi3() -> Any:
    from transformers import Phi3Config, Phi3ForCausalLM

    config = Phi3Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                        num_attention_heads=4, num_key_value_heads=2, pad_token_id=0)  # fmt: skip
    return Phi3ForCausalLM(config)


def _neox() -> Any:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    config = GPTNeoXConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=4)  # fmt: skip
    return GPTNeoXForCausalLM(config)


def _falcon(**options: bool | int) -> Callable[[], Any]:
    def make() -> Any:
        from transformers import FalconConfig, FalconForCausalLM

        config = FalconConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, **options)
        return FalconForCausalLM(config)

    return make


def _bloom() -> Any:
    from transformers import BloomConfig, BloomForCausalLM

    return BloomForCausalLM(BloomConfig(vocab_size=64, hidden_size=32, n_layer=1, n_head=4))


def _codegen() -> Any:
    from transformers import CodeGenConfig, CodeGenForCausalLM

    return CodeGenForCausalLM(CodeGenConfig(vocab_size=64, n_embd=32, n_layer=1, n_head=4, rotary_dim=4))


def _bigcode(multi_query: bool) -> Callable[[], Any]:
    def make() -> Any:
        from transformers import GPTBigCodeConfig, GPTBigCodeForCausalLM

        config = GPTBigCodeConfig(vocab_size=64, n_embd=32, n_layer=1, n_head=4, multi_query=multi_query)
        return GPTBigCodeForCausalLM(config)

    return make


def _gpt2() -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=1, n_head=4))


FUSED_MODELS: dict[str, Callable[[], Any]] = {
    "phi3-gqa": _phi3,
    "gpt_neox": _neox,
    "falcon-new-decoder": _falcon(new_decoder_architecture=True, num_kv_heads=2),
    "falcon-multi-query": _falcon(),  # FalconConfig's default
    "falcon-per-head": _falcon(multi_query=False),
    "bloom": _bloom,
    "codegen": _codegen,
    "gpt_bigcode-multi-query": _bigcode(True),
    "gpt_bigcode": _bigcode(False),
    "gpt2-conv1d": _gpt2,
}


def _attention_inputs(model: Any, fused: torch.nn.Module) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """What the fused projection is given, and the query, key and value its model's forward hands to attention
    (torch's scaled_dot_product_attention; Bloom's, of ALiBi without it, from its own ``_reshape``; each
    (batch, heads, tokens, head_dim)): two tokens at position 0, where the rotary embedding is the identity,
    for more inputs than the projection is wide."""
    seen: dict[str, torch.Tensor] = {}
    attention = torch.nn.functional.scaled_dot_product_attention
    (owner,) = [module for module in model.modules() if any(child is fused for child in module.children())]

    def record(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        seen.update(q=query, k=key, v=value)
        return attention(query, key, value, *args, **kwargs)

    reshape = getattr(owner, "_reshape", None)

    def split(qkv: torch.Tensor) -> Any:
        seen.update(zip("qkv", reshape(qkv), strict=True))
        return seen["q"], seen["k"], seen["v"]

    handle = fused.register_forward_hook(lambda module, inputs, output: seen.update(input=inputs[0]))
    tokens = torch.randint(0, 64, (48, 2), generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad(), pytest.MonkeyPatch.context() as patch:
            patch.setattr(torch.nn.functional, "scaled_dot_product_attention", record)
            if reshape is not None:
                patch.setattr(owner, "_reshape", split)
            model(input_ids=tokens, position_ids=torch.zeros_like(tokens))
    finally:
        handle.remove()
    return seen.pop("input"), seen


@pytest.mark.parametrize("kind", FUSED_MODELS)
def test_fused_qkv_parts_are_what_the_models_attention_takes(kind: str, tmp_path: Path) -> None:
    """A tiny transformers model of each layout saved as its folder: the parts read with its config.json, the
    stored weight projecting what the fused layer is given, equal the query, key and value its forward gives
    attention (a key/value head repeated for the query heads it serves, where the model repeats it)."""
    from weightscope.spectra import FUSED_QKV, fused_parts

    torch.manual_seed(0)
    model = FUSED_MODELS[kind]()
    model.config._attn_implementation = "sdpa"
    ((module_name, fused),) = [(name, module) for name, module in model.named_modules() if FUSED_QKV.search(name)]
    with torch.no_grad():
        if getattr(fused, "bias", None) is not None:
            fused.bias.zero_()  # the parts are of the weight alone
    model.eval().save_pretrained(tmp_path)
    inputs, attention = _attention_inputs(model, fused)
    name = f"{module_name}.weight"
    with ws.open(tmp_path) as ckpt:
        parts, note = fused_parts(name, ckpt[name], ckpt.metadata)
        results = {result.name: result for result in checkpoint_spectra(ckpt, [name])}
    assert note is None and [part for part, _ in parts] == [f"{name}[{part}]" for part in "qkv"]
    tasks = path_spectra(str(tmp_path), [name], scheduler="sync")  # a Dask task reads the config where it runs
    assert [result.to_json() for result in tasks] == [result.to_json() for result in results.values()]
    for (part, matrix), letter in zip(parts, "qkv", strict=True):
        weight = torch.from_numpy(matrix)
        projected = inputs @ (weight if kind == "gpt2-conv1d" else weight.T)  # Conv1D keeps (in, out)
        expected = attention[letter]
        heads = projected.reshape(*projected.shape[:2], -1, expected.shape[-1]).transpose(1, 2)
        heads = heads.repeat_interleave(expected.shape[1] // heads.shape[1], dim=1)
        torch.testing.assert_close(heads, expected, rtol=1e-5, atol=1e-6)
        result = results[part]
        assert isinstance(result, Spectrum) and result.note is None
        np.testing.assert_array_equal(result.singular_values, spectrum(part, matrix).singular_values)


def test_a_fused_projection_the_config_does_not_fit_is_left_whole(tmp_path: Path) -> None:
    """A config.json whose heads do not give the stored rows, or that is hostile, or of a model whose
    query_key_value weightscope does not know: the matrix whole, the reason noted, never an error."""
    from weightscope.spectra import fused_parts

    weight = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)  # (H + 2 KV) d = 64: H 4, KV 2
    gqa = {"config.model_type": "phi3", "config.hidden_size": "32", "config.num_attention_heads": "4",
           "config.num_key_value_heads": "2"}  # fmt: skip
    parts, note = fused_parts("qkv_proj.weight", weight, gqa)
    assert [part.shape for _, part in parts] == [(32, 32), (16, 32), (16, 32)] and note is None
    for extra, reason in (
        ({"config.num_key_value_heads": "3"}, "neither side is the 80 rows"),
        ({"config.num_attention_heads": "-4"}, "no number of attention heads"),
        ({"config.num_attention_heads": "true"}, "no number of attention heads"),
        ({"config.num_attention_heads": "{"}, "no number of attention heads"),
        ({"config.num_attention_heads": "[" * 100_000}, "no number of attention heads"),
        ({"config.num_attention_heads": str(10**15)}, "no head_dim"),
        ({"config.head_dim": str(10**15)}, "neither side"),
        ({"config.model_type": "chatglm"}, None),
    ):
        parts, note = fused_parts("qkv_proj.weight", weight, gqa | extra)
        assert (note is None) == (reason is None) and (reason is None or reason in str(note)), (extra, note)
    parts, note = fused_parts("query_key_value.weight", weight, gqa | {"config.model_type": "chatglm"})
    assert parts == [("query_key_value.weight", weight)] and "chatglm is not known" in str(note)
    parts, note = fused_parts("qkv_proj.weight", weight, {"config.model_type": "falcon", "config.hidden_size": "32",
                              "config.num_attention_heads": "4", "config.new_decoder_architecture": "true",
                              "config.num_kv_heads": "3"})  # fmt: skip
    assert len(parts) == 1 and "4 heads in 3 key/value groups" in str(note)


def test_plot_kind_spectrum(tmp_path: Path) -> None:
    import struct

    out = tmp_path / "esd.png"
    status, text, err = _run("plot", MODEL, "fc2.weight", "--kind", "spectrum", "--out", out, "--size", "640x480")
    assert status == 0, err
    assert "alpha 1.874 from xmin 0.2198; 3 MP spikes" in text
    header = out.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", header[16:24]) == (640, 480)
    status, text, err = _run("plot", MODEL, "fc1.bias", "--kind", "spectrum", "--out", out)
    assert status != 0 and "has no spectrum: a vector" in err
    status, text, err = _run("plot", MODEL, "fc2.weight", "--kind", "spectrum", "--log", "--out", out)
    assert status != 0 and "for --kind hist" in err
    zeros = ws.save({"zero/kernel": np.zeros((16, 16), np.float32)}, tmp_path / "zeros.ckpt")
    status, text, err = _run("plot", zeros, "zero/kernel", "--kind", "spectrum", "--out", out)
    assert status == 2 and err.strip() == "weightscope: error: 'zero/kernel' has no spectrum to draw: a matrix of zeros"


def test_progress_on_threads_and_on_a_scheduler() -> None:
    for extra in ((), ("--scheduler", "sync")):
        status, _, err = _run("spectra", DIGITS, "--progress", *extra)
        assert status == 0, err
        assert "weightscope: 8/8 tasks (100%)" in err  # 4 weights, 4 biases


@pytest.mark.parametrize("workers", [1, 2])
def test_blas_runs_one_thread_under_each_of_several_workers_and_its_own_under_one(
    workers: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from threadpoolctl import threadpool_info

    import weightscope.spectra as spectra_module

    own = max(pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas")
    assert own > 1  # this machine's BLAS starts a thread per core (else the case tells nothing)
    seen: list[int] = []
    computed = spectra_module.spectrum

    def recording(*args: Any, **kwargs: Any) -> Any:
        seen.append(max(pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"))
        return computed(*args, **kwargs)

    monkeypatch.setattr(spectra_module, "spectrum", recording)
    path = tmp_path / "m.safetensors"
    generator = np.random.default_rng(5)
    ws.save({f"layer{i}.weight": generator.standard_normal((32, 16)).astype(np.float32) for i in range(4)}, path)
    with ws.open(path) as ckpt:
        results = spectra_module.checkpoint_spectra(ckpt, list(ckpt), workers=workers)
    assert len(results) == 4 and seen == [1 if workers > 1 else own] * 4
    assert max(pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas") == own  # restored
