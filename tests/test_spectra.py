"""Spectral figures (weightscope.spectra, ``weightscope spectra``) against weightwatcher's on the same weights.

weightwatcher needs pandas, scikit-learn, scipy and powerlaw beside torch: it ran in the fixtures environment
(tests/fixtures/spectra/make_spectra.py) on a torch model, and its per-layer DataFrame is committed beside the
model's weights; these tests compute the figures from the weights file and compare.
"""

from __future__ import annotations

import io
import json
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


def test_threads_single_process_and_a_cluster_agree() -> None:
    """Threads (the default), one thread, and a LocalCluster of 2 worker processes: the same figures, bit for bit."""
    import distributed

    with ws.open(MODEL) as ckpt:
        names = list(ckpt)
        on_threads = [result.to_json() for result in checkpoint_spectra(ckpt, names)]
        with_values = [result.to_json(True) for result in checkpoint_spectra(ckpt, names, top=6, workers=1)]
    single = [result.to_json() for result in path_spectra(str(MODEL), names, scheduler="sync")]
    with (
        distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
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
    """GPT-2's c_attn (in, 3 x out) and a Linear's qkv (3 x out, in): three spectra each, as the parts alone give."""
    from safetensors.numpy import save_file

    generator = np.random.default_rng(3)
    gpt2 = generator.standard_normal((16, 48)).astype(np.float32)
    linear = generator.standard_normal((48, 16)).astype(np.float32)
    grouped = generator.standard_normal((32, 16)).astype(np.float32)  # grouped-query: not split
    path = tmp_path / "attn.safetensors"
    save_file({"h.0.attn.c_attn.weight": gpt2, "blk.qkv.weight": linear, "gqa.qkv.weight": grouped}, str(path))
    with ws.open(path) as ckpt:
        results = {result.name: result for result in checkpoint_spectra(ckpt, list(ckpt))}
    assert sorted(results) == sorted(
        [f"h.0.attn.c_attn.weight[{part}]" for part in "qkv"]
        + [f"blk.qkv.weight[{part}]" for part in "qkv"]
        + ["gqa.qkv.weight"]
    )
    for index, part in enumerate("qkv"):
        alone = spectrum("part", gpt2[:, 16 * index : 16 * (index + 1)])
        split = results[f"h.0.attn.c_attn.weight[{part}]"]
        assert isinstance(split, Spectrum)
        np.testing.assert_array_equal(split.singular_values, alone.singular_values)
        assert results[f"blk.qkv.weight[{part}]"].shape == (16, 16)


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
