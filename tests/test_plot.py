"""weightscope plot: histograms and heatmaps as PNG files of an exact size, in bounded memory."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import weightscope as ws
from weightscope.cli import main
from weightscope.errors import ExitStatus, UnsupportedFormatError
from weightscope.plot import (
    Tensor,
    bin_edges,
    block_means,
    finite_range,
    heatmap_figure,
    histogram,
    histogram_figure,
    matrix_shape,
    output_paths,
    plot_checkpoint,
)

pytest.importorskip("matplotlib")


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    status = main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return status, out, err


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG's IHDR chunk, after checking that it is one."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind, width, height = struct.unpack(">I4sII", head[8:24])
    assert (length, kind) == (13, b"IHDR")
    return width, height


def assert_png(path: Path, width: int, height: int) -> None:
    import matplotlib.image

    assert png_size(path) == (width, height)
    pixels = matplotlib.image.imread(path)  # decodes the whole image
    assert pixels.shape[:2] == (height, width)
    assert pixels.std() > 0  # something was drawn


def seed_like(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "layer1/kernel": rng.normal(size=(2, 5)).astype(np.float32),
        "layer1/bias": rng.normal(size=5).astype(np.float32),
        "layer2/kernel": rng.normal(size=(5, 2)).astype(np.float32),
        "layer2/bias": rng.normal(size=2).astype(np.float32),
        "conv/kernel": rng.normal(size=(3, 3, 2, 4)).astype(np.float32),
        "odd": np.array([1.0, -2.0, np.nan, np.inf, -np.inf, 3.0, 0.5], dtype=np.float32),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "global_step": np.array(7, dtype=np.int64),
    }


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return ws.save(seed_like(np.random.default_rng(0)), tmp_path / "model.ckpt")


@pytest.fixture
def other_model(tmp_path: Path) -> Path:
    tensors = {name: array * 2 + 1 for name, array in seed_like(np.random.default_rng(1)).items()}
    (tmp_path / "other").mkdir()
    return ws.save(tensors, tmp_path / "other" / "model.ckpt")


# -- the command ---------------------------------------------------------------------------


def test_hist_png_is_the_default_size(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "kernel.png"
    status, stdout, _ = run(capsys, "plot", model, "layer1/kernel", "--out", out)
    assert status == 0
    assert f"wrote {out}: hist of 'layer1/kernel'" in stdout
    assert_png(out, 800, 600)


@pytest.mark.parametrize("size", [(641, 479), (801, 599), (1234, 333), (320, 240)])
@pytest.mark.parametrize("kind", ["hist", "heatmap"])
def test_png_has_exactly_the_size_asked(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], size: tuple[int, int], kind: str
) -> None:
    out = tmp_path / "x.png"
    status, _, err = run(
        capsys, "plot", model, "layer2/kernel", "--kind", kind, "--size", "{}x{}".format(*size), "--out", out
    )
    assert status == 0, err
    assert_png(out, *size)


def test_heatmap_of_the_seed_kernel(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "heat.png"
    status, stdout, _ = run(capsys, "plot", model, "layer1/weight", "--kind", "heatmap", "--out", out)
    assert status == 0
    assert "heatmap of 'layer1/kernel'" in stdout  # the role name resolved
    assert_png(out, 800, 600)


def test_several_names_write_one_file_each(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "plots" / "x.png"  # the directory is made
    status, stdout, _ = run(capsys, "plot", model, "layer1/kernel", "layer1/bias", "conv/kernel", "--out", out)
    assert status == 0
    expected = [tmp_path / "plots" / f"x-{name}.png" for name in ("layer1_kernel", "layer1_bias", "conv_kernel")]
    assert sorted(path.name for path in (tmp_path / "plots").iterdir()) == sorted(path.name for path in expected)
    for path in expected:
        assert f"wrote {path}:" in stdout
        assert_png(path, 800, 600)


def test_several_names_that_would_share_a_file_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ws.UsageError, match="would both be written"):
        output_paths(tmp_path / "x.png", ["a/b", "a_b"])
    assert output_paths(tmp_path / "x.png", ["a/b"]) == [tmp_path / "x.png"]


def test_compare_overlays_the_second_checkpoint(
    model: Path, other_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "compare.png"
    status, stdout, err = run(capsys, "plot", model, "conv/kernel", "--compare", other_model, "--log", "--out", out)
    assert status == 0, err
    assert "against B's 'conv/kernel'" in stdout
    assert_png(out, 800, 600)


def test_compare_shares_edges_and_names_both_files(model: Path, other_model: Path) -> None:
    with ws.open(model) as a, ws.open(other_model) as b:
        first, second = Tensor.of(a, "conv/kernel"), Tensor.of(b, "conv/kernel")
        figure, _ = histogram_figure(first, compare=second, bins=30)
        legend = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
        assert legend == [f"A: {a.path} (conv/kernel)", f"B: {b.path} (conv/kernel)"]
        edges = bin_edges([finite_range(first.array), finite_range(second.array)], 30)
        low = min(first.array.min(), second.array.min())
        high = max(first.array.max(), second.array.max())
        assert (edges[0], edges[-1]) == (low, high)
        for tensor in (first, second):
            counts = histogram(tensor.array, edges=edges).counts
            assert counts.sum() == tensor.array.size
            np.testing.assert_array_equal(counts, np.histogram(tensor.array, bins=edges)[0])


def test_heatmap_of_a_vector_and_of_a_4d_tensor(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("layer1/bias", "conv/kernel"):
        out = tmp_path / "heat.png"
        status, _, _ = run(capsys, "plot", model, name, "--kind", "heatmap", "--out", out)
        assert status == 0
        assert_png(out, 800, 600)
    with ws.open(model) as ckpt:
        figure, notes = heatmap_figure(Tensor.of(ckpt, "layer1/bias"))
        assert notes == ["a vector of 5 values, drawn as one row"]
        assert figure.axes[0].images[0].get_array().shape == (1, 5)
        figure, notes = heatmap_figure(Tensor.of(ckpt, "conv/kernel"))
        assert notes == ["reshaped [3, 3, 2, 4] → [3, 24] (first dimension × the rest)"]
        image = figure.axes[0].images[0]
        np.testing.assert_array_equal(image.get_array(), ckpt["conv/kernel"].reshape(3, 24))
        low, high = image.get_clim()
        assert low == -high == -np.abs(ckpt["conv/kernel"]).max()  # centred on 0
        assert len(figure.axes) == 2  # the colorbar
        texts = [text.get_text() for text in figure.texts]
        assert texts[0] == f"{ckpt.path}\nconv/kernel · float32 · [3, 3, 2, 4]"
        assert "reshaped [3, 3, 2, 4] → [3, 24]" in texts[1]


def test_title_and_axes_labels(model: Path) -> None:
    with ws.open(model) as ckpt:
        figure, notes = histogram_figure(Tensor.of(ckpt, "odd"), log=True)
    axes = figure.axes[0]
    assert figure.texts[0].get_text() == f"{ckpt.path}\nodd · float32 · [7]"
    assert axes.get_xlabel() == "value"
    assert figure.texts[1].get_text().startswith("100 bins of width 0.05 from -2 to 3\n")
    assert axes.get_ylabel() == "count (log scale)" and axes.get_yscale() == "log"
    assert notes == ["odd: 1 NaN and 2 infinite values left out"]
    assert notes[0] in figure.texts[1].get_text()


def test_large_matrix_heatmap_says_what_a_cell_is(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(2)
    big = (rng.normal(size=(3000, 2000)) + np.linspace(-3, 3, 2000)).astype(np.float32)
    path = ws.save({"big": big}, tmp_path / "big.ckpt")
    out = tmp_path / "big.png"
    status, stdout, _ = run(capsys, "plot", path, "big", "--kind", "heatmap", "--out", out)
    assert status == 0
    assert "each cell is the mean of a 7×4 block of values" in stdout
    assert_png(out, 800, 600)
    with ws.open(path) as ckpt:
        figure, _ = heatmap_figure(Tensor.of(ckpt, "big"))
        shown = np.asarray(figure.axes[0].images[0].get_array())
        wide = big.astype(np.float64)
        assert shown.shape == (429, 500)  # no more cells than the plot has pixels
        width, height = figure.axes[0].get_window_extent().size
        assert shown.shape[0] <= height and shown.shape[1] <= width
        np.testing.assert_allclose(shown[:428], wide[: 428 * 7].reshape(428, 7, 500, 4).mean(axis=(1, 3)), rtol=1e-10)
        np.testing.assert_allclose(shown[428], wide[428 * 7 :].reshape(4, 500, 4).mean(axis=(0, 2)), rtol=1e-10)


# -- the figures ---------------------------------------------------------------------------


@pytest.mark.parametrize("elements", [1 << 22, 100_000, 2999])
def test_block_means_equal_numpy_reshape_mean(elements: int) -> None:
    matrix = np.random.default_rng(3).normal(size=(3000, 2000)).astype(np.float32)
    result = block_means(matrix, (600, 500), elements=elements)
    assert result.block == (5, 4) and result.matrix == (3000, 2000) and result.left_out == 0
    expected = matrix.astype(np.float64).reshape(600, 5, 500, 4).mean(axis=(1, 3))
    np.testing.assert_allclose(result.means, expected, rtol=1e-10, atol=1e-12)


def test_block_means_of_uneven_blocks_and_non_finite_values() -> None:
    matrix = np.random.default_rng(4).normal(size=(23, 17))
    matrix[0, 0] = np.nan
    matrix[5, 6] = np.inf
    matrix[20:, 15:] = np.nan  # a whole (partial) block
    result = block_means(matrix, (5, 4), elements=50)
    assert result.block == (5, 5) and result.means.shape == (5, 4)
    assert result.left_out == 2 + 3 * 2
    for i in range(5):
        for j in range(4):
            block = matrix[i * 5 : (i + 1) * 5, j * 5 : (j + 1) * 5]
            finite = block[np.isfinite(block)]
            if finite.size:
                assert result.means[i, j] == pytest.approx(finite.mean(), rel=1e-12)
            else:
                assert np.isnan(result.means[i, j])
    assert np.isnan(result.means[4, 3])


def test_block_means_of_a_transposed_tensor_and_of_higher_rank() -> None:
    tensor = np.random.default_rng(5).normal(size=(40, 6, 5)).transpose(2, 0, 1)  # not contiguous
    result = block_means(tensor, (2, 30), elements=64)
    expected = np.ascontiguousarray(tensor).reshape(5, 240)
    expected = np.pad(expected, ((0, 1), (0, 0)), constant_values=np.nan).reshape(2, 3, 30, 8)
    np.testing.assert_allclose(result.means, np.nanmean(expected, axis=(1, 3)), rtol=1e-12)
    assert matrix_shape(()) == (1, 1) and matrix_shape((7,)) == (1, 7) and matrix_shape((3, 3, 2, 4)) == (3, 24)


@pytest.mark.parametrize("elements", [1 << 22, 1000, 7])
def test_histogram_counts_equal_numpy_histogram(elements: int) -> None:
    values = np.random.default_rng(6).standard_t(3, size=100_003).astype(np.float32)
    values[::1000] = np.nan
    values[5] = np.inf
    values[7] = -np.inf
    result = histogram(values, bins=77, elements=elements)
    finite = values[np.isfinite(values)]
    assert (result.edges[0], result.edges[-1]) == (finite.min(), finite.max())
    np.testing.assert_array_equal(result.counts, np.histogram(finite, bins=result.edges)[0])
    assert result.counts.sum() == finite.size
    assert (result.nans, result.infs, result.count) == (101, 2, values.size)


def test_histogram_of_integers_booleans_bfloat16_and_a_constant() -> None:
    import ml_dtypes

    for values in (
        np.arange(-50, 50, dtype=np.int8),
        np.array([True, False, True]),
        np.linspace(-1, 1, 1001).astype(ml_dtypes.bfloat16),
        np.full((4, 4), 2.5, dtype=np.float16),
    ):
        result = histogram(values, bins=10, elements=16)
        wide = values.astype(np.float64)
        np.testing.assert_array_equal(result.counts, np.histogram(wide, bins=result.edges)[0])
        assert result.counts.sum() == values.size
    assert list(histogram(np.full(3, 2.5), bins=2).edges) == [2.0, 2.5, 3.0]  # as np.histogram widens


def test_usage_errors(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.png"
    for args, message in (
        (["--kind", "heatmap", "--log"], "--log is for --kind hist"),
        (["--size", "10x10"], "outside 320x240"),
        (["--size", "big"], "WIDTHxHEIGHT"),
        (["--bins", "0"], "--bins must be from 1"),
    ):
        status, _, err = run(capsys, "plot", model, "layer1/kernel", "--out", out, *args)
        assert status == ExitStatus.USAGE and message in err, err
    status, _, err = run(capsys, "plot", model, "empty", "--out", out)
    assert status == ExitStatus.USAGE and "no elements" in err
    status, _, err = run(capsys, "plot", model, "layer1/kernel", "--out", tmp_path / "x.jpg")
    assert status == ExitStatus.USAGE and ".png" in err
    status, _, err = run(capsys, "plot", model, "layer1/kernel", "nothing", "--out", out)
    assert status == ExitStatus.NOT_FOUND
    assert not out.exists()  # every name is checked before anything is drawn


def test_out_is_replaced_atomically(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "pictures" / "x.png"
    out.parent.mkdir()
    out.write_bytes(b"old")
    assert run(capsys, "plot", model, "layer1/kernel", "--out", out, "--size", "330x250")[0] == 0
    assert_png(out, 330, 250)
    assert os.listdir(out.parent) == ["x.png"]  # no temporary file left beside it


def test_missing_matplotlib_gives_the_install_hint(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for module in ("matplotlib", "matplotlib.figure", "matplotlib.backends", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    out = tmp_path / "x.png"
    status, _, err = run(capsys, "plot", model, "layer1/kernel", "--out", out)
    assert status == ExitStatus.UNSUPPORTED
    assert "pip install 'weightscope[plot]'" in err
    assert not out.exists()
    with ws.open(model) as ckpt, pytest.raises(UnsupportedFormatError, match=r"weightscope\[plot\]"):
        plot_checkpoint(ckpt, ["layer1/kernel"], out)


def test_ls_does_not_import_matplotlib(model: Path) -> None:
    code = (
        "import sys; from weightscope.cli import main; "
        f"status = main(['ls', {str(model)!r}]); "
        "print('MATPLOTLIB', 'matplotlib' in sys.modules, status)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "MATPLOTLIB False 0" in result.stdout
