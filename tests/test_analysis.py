"""stats and diff: figures equal numpy's own, differences found and named, across formats."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from conftest import seed_copy  # noqa: F401 - a fixture

import weightscope as ws
from weightscope import analysis, blocks
from weightscope.analysis import TensorStats, checkpoint_stats, tensor_diff, tensor_stats
from weightscope.blocks import BLOCK_ELEMENTS, CHUNK_ELEMENTS, DOT_ELEMENTS, KERNEL_ELEMENTS
from weightscope.checkpoint import Checkpoint, Index, TensorInfo
from weightscope.cli import main
from weightscope.convert import convert

TF_FIXTURES = [
    "seed",
    "dtypes",
    "sharded",
    "partitioned",
    "keras3_checkpoint",
    "tfkeras_weights",
    "saved_model",
    "keras3_cnn",
]


def _expected(array: np.ndarray) -> dict[str, float | int | None]:
    """What numpy says of the whole array at once: the oracle."""
    # The dtypes fixture holds NaNs (cast to float64 they are "invalid") and extremes whose squares overflow
    # float64 (an l2 of inf, which stats must give too): numpy's warnings of both are expected here.
    with np.errstate(invalid="ignore", over="ignore"):
        values = array.astype(np.complex128 if array.dtype.kind == "c" else np.float64).reshape(-1)
        finite_or_inf = values[~np.isnan(values)]
        expected: dict[str, float | int | None] = {
            "zeros": int(np.count_nonzero(values == 0)),
            "nans": int(np.count_nonzero(np.isnan(values))),
            "infs": int(np.count_nonzero(np.isinf(values))),
            "l2": float(np.linalg.norm(finite_or_inf)) if finite_or_inf.size else 0.0,
        }
        if array.dtype.kind != "c" and finite_or_inf.size:
            # Not np.nanmin: numpy 2.4's fmin.reduce misses -inf beside signalling NaNs.
            expected.update(
                min=float(finite_or_inf.min()),
                max=float(finite_or_inf.max()),
                mean=float(finite_or_inf.mean()),
                std=float(finite_or_inf.std()),
            )
    return expected


def _assert_stats_match(name: str, array: np.ndarray, elements: int) -> None:
    _assert_figures(tensor_stats(name, array, elements=elements), array)


def _assert_figures(stats: TensorStats, array: np.ndarray) -> None:
    name = stats.name
    assert stats.count == array.size and stats.shape == array.shape
    expected = _expected(array)
    # Summation rounding grows with the magnitudes added: a tolerance on their scale.
    scale = expected["l2"] if np.isfinite(expected["l2"]) else 1.0  # type: ignore[arg-type]
    for field, value in expected.items():
        ours = getattr(stats, field)
        if isinstance(value, int):
            assert ours == value, (name, field)
        else:
            np.testing.assert_allclose(ours, value, rtol=1e-9, atol=1e-12 * max(1.0, scale), err_msg=f"{name}: {field}")


@pytest.mark.parametrize("fixture", TF_FIXTURES)
def test_stats_equal_numpy_on_every_fixture(tf_checkpoints: dict[str, Path], fixture: str) -> None:
    with ws.open(tf_checkpoints[fixture]) as ckpt:
        infos = [ckpt.info(name) for name in ckpt]
        numeric = [info.name for info in infos if info.dtype.kind not in "OV" or "float" in info.type_name]
        assert numeric
        for name in numeric:
            for elements in (7, 1 << 19):  # many chunk boundaries, and one chunk
                _assert_stats_match(name, ckpt[name], elements)
        results = checkpoint_stats(ckpt, list(ckpt))
        assert [result.name for result in results] == list(ckpt)


AWKWARD = [
    np.array([1.0, np.nan, -np.inf, 0.0, 3.5], np.float32),
    np.array([np.nan, np.nan], np.float64),
    np.arange(-5, 7, dtype=np.int8).reshape(3, 4)[:, ::2],  # not contiguous
    np.array([[True, False], [True, True]]),
    np.linspace(-3, 3, 101, dtype=np.float32).astype(ml_dtypes.bfloat16).reshape(101, 1).T,
    np.array([1 + 2j, 0, np.nan], np.complex64),
    np.zeros((0, 4), np.float32),
    np.array(2.5, np.float16),
]


@pytest.mark.parametrize(
    "array",
    AWKWARD,
    ids=["nan-inf", "all-nan", "strided-int8", "bool", "bfloat16-transposed", "complex", "empty", "scalar"],
)
def test_stats_of_awkward_tensors(array: np.ndarray) -> None:
    _assert_stats_match("t", array, elements=3)
    stats = tensor_stats("t", array)
    if array.dtype.kind == "c" or not np.count_nonzero(~np.isnan(array.astype(np.complex128))):
        assert stats.mean is None and stats.min is None


class _InMemory(Checkpoint):
    """Arrays as a checkpoint, for figures taken by ``checkpoint_stats`` (which sums small tensors side by side)."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        super().__init__(Path("memory"))
        self._arrays = arrays
        infos = {
            name: TensorInfo(name, a.dtype, a.shape, a.nbytes, str(a.dtype), "", 0, name) for name, a in arrays.items()
        }
        self._install(Index(infos))

    def _read(self, info: TensorInfo) -> np.ndarray:
        return self._arrays[info.name]

    def _close(self) -> None:
        pass


def test_checkpoint_stats_of_many_small_tensors_side_by_side_equal_numpys() -> None:
    arrays = {f"awkward{index}": array for index, array in enumerate(AWKWARD)}
    arrays.update(
        {
            "both-infinities": np.array([np.inf, 1.0, -np.inf], np.float32),
            "big-int64": np.array([2**62, -(2**62) + 1, 7], np.int64),
            "big-endian": np.arange(6, dtype=">f8").reshape(2, 3) / 3,
            "expanded": np.broadcast_to(np.array([1.5, np.nan, -2.0], np.float16), (5, 3)),
            "near-large": np.linspace(1e8, 1e8 + 1, 4097),  # past the side-by-side size: alone
        }
    )
    arrays.update({f"one{index}": np.array([index / 7], np.float32) for index in range(300)})
    results = checkpoint_stats(_InMemory(arrays), list(arrays))
    assert [result.name for result in results] == list(arrays)
    for result in results:
        _assert_figures(result, arrays[result.name])


def test_stats_command_lists_figures_and_warns_of_nans(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "model.safetensors"
    tensors = {"good/kernel": np.ones((2, 3), np.float32), "bad/kernel": np.array([np.nan, 1], np.float32)}
    ws.save(tensors, path, format="safetensors")
    assert main(["stats", str(path)]) == 0
    captured = capsys.readouterr()
    assert "1 tensors hold NaN or infinite values: bad/kernel" in captured.err
    assert main(["stats", str(path), "good/kernel", "--json"]) == 0
    (document,) = json.loads(capsys.readouterr().out)
    assert document == {
        "name": "good/kernel",
        "dtype": "float32",
        "shape": [2, 3],
        "count": 6,
        "min": 1.0,
        "max": 1.0,
        "mean": 1.0,
        "std": 0.0,
        "l2": pytest.approx(6**0.5),
        "zeros": 0,
        "nans": 0,
        "infs": 0,
    }
    assert main(["stats", str(path), "bad/kernel", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["nans"] == 1


def test_diff_of_initial_and_trained_seed_lists_every_weight(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    initial, trained = tmp_path / "initial" / "model.ckpt", tmp_path / "trained" / "model.ckpt"
    assert main(["demo", "--steps", "0", "--seed", "3", "--out", str(initial)]) == 0
    assert main(["demo", "--steps", "50", "--seed", "3", "--out", str(trained)]) == 0
    capsys.readouterr()
    assert main(["diff", str(initial), str(trained), "--json"]) == int(ws.errors.ExitStatus.DIFFERENT)
    document = json.loads(capsys.readouterr().out)
    assert document["equal"] is False
    assert {tensor["name"]: tensor["status"] for tensor in document["tensors"]} == {
        "layer1/kernel": "different",
        "layer1/bias": "different",
        "layer2/kernel": "different",
        "layer2/bias": "different",
    }
    with ws.open(initial) as a, ws.open(trained) as b:
        kernel = next(t for t in document["tensors"] if t["name"] == "layer1/kernel")
        gap = np.abs(a["layer1/kernel"].astype(np.float64) - b["layer1/kernel"])
        assert kernel["max_abs"] == pytest.approx(gap.max())
        assert kernel["mismatched"] == np.count_nonzero(gap)


def test_diff_of_a_tensorflow_checkpoint_and_its_pytorch_conversion_is_equal(
    tf_checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for fixture in ("seed", "keras3_cnn"):
        converted = tmp_path / f"{fixture}.pt"
        convert(tf_checkpoints[fixture], converted, layout="pytorch", names="pytorch")
        assert main(["diff", str(tf_checkpoints[fixture]), str(converted)]) == 0, fixture
        assert "(matched by layer model):" in capsys.readouterr().out
    kept_names = tmp_path / "kept" / "ckpt"
    convert(tf_checkpoints["keras3_cnn"], kept_names, layout="pytorch", include_optimizer=True)
    assert main(["diff", str(tf_checkpoints["keras3_cnn"]), str(kept_names), "--include-optimizer", "--all"]) == 0
    assert "equal (A permuted [3, 2, 0, 1])" in capsys.readouterr().out


def test_diff_names_the_one_flipped_value(seed_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    with ws.open(seed_copy) as ckpt:
        tensors = {name: np.array(ckpt[name]) for name in ckpt}
    tensors["layer2/kernel"][3, 1] = -tensors["layer2/kernel"][3, 1]
    flipped = ws.save(tensors, tmp_path / "flipped" / "model.ckpt")
    assert main(["diff", str(seed_copy), str(flipped)]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[2].split()[:2] == ["layer2/kernel", "different"]
    assert "4 tensors compared (matched by name): 1 different, 3 equal" in out
    # Within a tolerance larger than the change, they are equal.
    atol = str(2 * abs(float(tensors["layer2/kernel"][3, 1])) + 1e-6)
    assert main(["diff", str(seed_copy), str(flipped), "--atol", atol]) == 0


def test_diff_reports_shapes_dtypes_and_tensors_on_one_side(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = {"x/kernel": np.zeros((2, 3), np.float32), "y/bias": np.zeros(3, np.float32), "only/bias": np.zeros(1)}
    second = {"x/kernel": np.zeros((2, 2), np.float32), "y/bias": np.zeros(3), "extra/bias": np.zeros(1)}
    a = ws.save(first, tmp_path / "a.safetensors", format="safetensors")
    b = ws.save(second, tmp_path / "b.safetensors", format="safetensors")
    assert main(["diff", str(a), str(b), "--json"]) == 1
    document = json.loads(capsys.readouterr().out)
    statuses = {tensor["name"]: (tensor["status"], tensor["dtype"]) for tensor in document["tensors"]}
    # Numbers of two types are compared by value; the types are said.
    assert statuses == {"x/kernel": ("shape", ["float32", "float32"]), "y/bias": ("equal", ["float32", "float64"])}
    assert document["only_a"] == ["only/bias"] and document["only_b"] == ["extra/bias"]
    assert main(["diff", str(a), str(b), "--rtol", "-1"]) == 2


def test_tensor_diff_of_nans_and_infinities() -> None:
    a = np.array([np.nan, np.inf, 1.0, 2.0], np.float32)
    same = tensor_diff("t", "t", a, a.copy())
    assert same.status == "equal" and same.max_abs == 0 and same.mismatched == 0
    other = tensor_diff("t", "t", a, np.array([np.nan, np.inf, 1.0, np.nan], np.float32))
    assert other.status == "different" and other.mismatched == 1
    close = tensor_diff("t", "t", a, a + np.float32(1e-3), rtol=0, atol=2e-3)
    assert close.status == "equal" and close.max_abs == pytest.approx(1e-3, rel=1e-3)


def test_diff_ignores_byte_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    values = np.arange(6, dtype="<f4")
    np.savez(tmp_path / "little.npz", w=values)
    np.savez(tmp_path / "big.npz", w=values.astype(">f4"))
    assert main(["diff", str(tmp_path / "little.npz"), str(tmp_path / "big.npz")]) == 0
    assert "1 equal" in capsys.readouterr().out
    np.savez(tmp_path / "wider.npz", w=values.astype(">f8"))
    assert main(["diff", str(tmp_path / "little.npz"), str(tmp_path / "wider.npz"), "--json"]) == 0
    compared = json.loads(capsys.readouterr().out)["tensors"][0]
    assert (compared["status"], compared["dtype"], compared["max_abs"]) == ("equal", ["float32", "float64"], 0.0)
    np.savez(tmp_path / "strings.npz", w=np.array(list("abcdef")))
    assert main(["diff", str(tmp_path / "little.npz"), str(tmp_path / "strings.npz"), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["tensors"][0]["status"] == "dtype"  # not both numbers


# -- the fused paths: block boundaries, the blocks that leave them, thread counts --------------------------------


def _straddling(dtype: type | np.dtype, seed: int = 0, block: int = BLOCK_ELEMENTS) -> np.ndarray:
    """Two blocks and a few values, cut so no boundary falls on a chunk's: a block of plain values, a block whose
    mean dominates its spread (the deviations summed from the mean), and a short last one."""
    rng = np.random.default_rng(seed)
    values = rng.standard_normal(2 * block + 5)
    values[block : 2 * block] = 1e4 + values[block : 2 * block] / 64
    values[::97] = 0.0
    return values.astype(dtype)


@pytest.fixture(params=["kernel", "numpy"])
def float_block(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """The fused float path under test, and its block: the C kernel's (the project's install builds it), or
    numpy's, which an install without a C compiler takes."""
    if request.param == "numpy":
        monkeypatch.setattr(blocks, "_kernels", None)
    else:
        assert blocks._kernels is not None, "weightscope._kernels was not built: pip install -e . needs a C compiler"
    expected = {"kernel": KERNEL_ELEMENTS, "numpy": BLOCK_ELEMENTS}[request.param]
    assert blocks.fused_block_elements() == expected == 1 << {"kernel": 18, "numpy": 15}[request.param]
    return expected


FUSED_DTYPES = [np.float32, np.float64, np.float16, ml_dtypes.bfloat16, np.dtype(">f4"), np.dtype(">f8")]


@pytest.mark.parametrize("dtype", FUSED_DTYPES, ids=["float32", "float64", "float16", "bfloat16", ">f4", ">f8"])
@pytest.mark.parametrize("cut", ["chunk", "block+3", "dot-1"])
def test_fused_stats_across_block_and_chunk_boundaries_equal_numpys(dtype: type, cut: str, float_block: int) -> None:
    assert CHUNK_ELEMENTS % float_block == 0 and BLOCK_ELEMENTS % DOT_ELEMENTS == 0  # blocks fill chunks
    elements = {"chunk": CHUNK_ELEMENTS, "block+3": float_block + 3, "dot-1": DOT_ELEMENTS - 1}[cut]
    array = _straddling(dtype, block=float_block)
    _assert_stats_match("t", array, elements)
    _assert_stats_match("t", array[::-1], elements)  # not contiguous: copied a piece at a time


@pytest.mark.parametrize("where", ["last", "last-block", "first-block-end", "first"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_a_block_with_a_nan_or_infinity_takes_the_general_path_alone(
    where: str, value: float, float_block: int
) -> None:
    index = {"last": -1, "last-block": -6, "first-block-end": float_block - 1, "first": 0}[where]
    for dtype in (np.float32, ml_dtypes.bfloat16):
        array = _straddling(dtype, block=float_block)
        array[index] = value
        _assert_stats_match("t", array, CHUNK_ELEMENTS)
        _assert_stats_match("t", array, float_block + 3)
    quiet = _straddling(np.float32, block=float_block)
    quiet.view(np.uint32)[-2] = 0x7F800001  # a signalling NaN shows in min and max too
    assert tensor_stats("t", quiet).nans == 1
    _assert_stats_match("t", quiet, CHUNK_ELEMENTS)


class _CountingPool(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(2)
        self.submitted = 0

    def submit(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
        self.submitted += 1
        return super().submit(*args, **kwargs)  # type: ignore[arg-type]


def test_a_large_tensor_goes_to_the_threads_in_runs_of_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a pool, a contiguous tensor's chunks are handed to the threads in runs (``blocks.run_chunks``: up to 64, at
    least two runs a thread), each run on one thread in order; a strided one's, copied, one at a time. The figures
    are one thread's to the bit either way."""
    import threading

    assert blocks.RUN_CHUNKS == 64
    assert blocks.run_chunks(np.empty(512 << 20, np.float32), CHUNK_ELEMENTS, 2) == 64  # 2 GiB: 16 runs
    assert blocks.run_chunks(np.empty(16 << 20, np.float32), CHUNK_ELEMENTS, 2) == 8  # 64 MiB: 4 runs of 8
    assert blocks.run_chunks(np.empty(16 << 20, np.float32)[::2], CHUNK_ELEMENTS, 2) == 1
    assert blocks.run_chunks(np.empty(0, np.float32), CHUNK_ELEMENTS, 2) == 1
    assert blocks.run_chunks(np.array(1, np.float32), 1, 4) == 1
    elements = 1000
    array = np.random.default_rng(3).standard_normal(40 * elements + 7, dtype=np.float32)  # 41 chunks: runs of 10
    base = array.__array_interface__["data"][0]
    taken: list[tuple[int, int]] = []  # (chunk, thread)
    chunk_stats = analysis.chunk_stats

    def recorded(chunk: np.ndarray, kind: str) -> analysis.StatsPartial:
        taken.append(((chunk.__array_interface__["data"][0] - base) // 4 // elements, threading.get_ident()))
        return chunk_stats(chunk, kind)

    single = tensor_stats("t", array, elements=elements)
    monkeypatch.setattr(analysis, "chunk_stats", recorded)
    with _CountingPool() as pool:
        assert tensor_stats("t", array, elements=elements, pool=pool) == single
        assert pool.submitted == 5
        for first in range(0, 41, 10):
            run = [(chunk, thread) for chunk, thread in taken if first <= chunk < first + 10]
            assert [chunk for chunk, _ in run] == list(range(first, min(first + 10, 41)))
            assert len({thread for _, thread in run}) == 1
        strided = array[::2]
        assert tensor_stats("t", strided, elements=elements, pool=pool) == tensor_stats("t", strided, elements=elements)
        assert pool.submitted == 5 + 21  # 20,004 values: 21 chunks, each copied and handed alone


def test_stats_on_one_thread_and_two_are_the_same_to_the_bit(monkeypatch: pytest.MonkeyPatch, float_block: int) -> None:
    array = _straddling(np.float32, block=float_block)
    array[-1] = np.nan
    single = tensor_stats("t", array, elements=float_block + 3)
    with ThreadPoolExecutor(2) as pool:
        assert tensor_stats("t", array, elements=float_block + 3, pool=pool) == single
    arrays = {"big": array, "small": array[:100], "ints": np.arange(CHUNK_ELEMENTS + 9, dtype=np.int32)}
    by_threads = []
    for threads in (1, 2):
        monkeypatch.setattr(analysis, "_workers", lambda threads=threads: threads)
        by_threads.append(checkpoint_stats(_InMemory(arrays), list(arrays)))
    assert by_threads[0] == by_threads[1]
    _assert_figures(by_threads[0][0], array)


def _expected_diff(a: np.ndarray, b: np.ndarray, rtol: float, atol: float) -> dict[str, float | int | None]:
    """The oracle: numpy on the two whole arrays widened, by the definitions in ``analysis``'s description."""
    x, y = a.astype(np.float64).reshape(-1), b.astype(np.float64).reshape(-1)
    with np.errstate(invalid="ignore"):
        same = (x == y) | (np.isnan(x) & np.isnan(y))
        gap = np.abs(x - y)
        close = same | (gap <= atol + rtol * np.abs(y))
    gaps = gap[~same & ~np.isnan(gap)]
    finite = np.isfinite(x) & np.isfinite(y)
    xf, yf = x[finite], y[finite]
    norms = float(np.linalg.norm(xf)), float(np.linalg.norm(yf))
    return {
        "mismatched": int(np.count_nonzero(~close)),
        "max_abs": float(gaps.max()) if gaps.size else 0.0,
        "relative_l2": float(np.linalg.norm(xf - yf)) / norms[0] if norms[0] else 0.0,
        "cosine": float(xf @ yf) / (norms[0] * norms[1]) if norms[0] and norms[1] else None,
    }


def _assert_diff(a: np.ndarray, b: np.ndarray, rtol: float = 0.0, atol: float = 0.0) -> None:
    result = tensor_diff("t", "t", a, b, rtol=rtol, atol=atol)
    expected = _expected_diff(a, b, rtol, atol)
    assert result.status == ("different" if expected["mismatched"] else "equal")
    assert result.mismatched == expected["mismatched"]
    assert result.max_abs == expected["max_abs"]  # one value's gap, no sum: exact
    for field in ("relative_l2", "cosine"):
        if expected[field] is None:
            assert getattr(result, field) is None, field
        else:
            np.testing.assert_allclose(getattr(result, field), expected[field], rtol=1e-9, atol=1e-15, err_msg=field)


@pytest.mark.parametrize("dtype", FUSED_DTYPES[:4], ids=["float32", "float64", "float16", "bfloat16"])
def test_fused_diff_across_block_boundaries_equals_numpys(dtype: type, float_block: int) -> None:
    a = _straddling(dtype, block=float_block)
    b = a.copy()
    b[float_block - 1] = a[float_block - 1] + 1  # the first block's last value
    b[-3:] = -a[-3:]  # the short last block
    _assert_diff(a, b)
    _assert_diff(a, b, rtol=1e-3, atol=0.5)
    _assert_diff(a, b.astype(np.float64))  # two types: by value
    _assert_diff(a.astype(np.int32), b.astype(np.int16))  # integers: widened to float64
    b[float_block + 7] = np.nan  # a NaN in the middle block: that block by the general path
    _assert_diff(a, b)
    a[-1] = b[-1] = np.inf
    _assert_diff(a, b, atol=0.1)


def test_equal_bytes_are_equal_without_arithmetic_and_equal_values_with_it(float_block: int) -> None:
    a = _straddling(np.float32, block=float_block)
    a[-1] = np.nan  # byte for byte the same NaN: equal
    same = tensor_diff("t", "t", a, a.copy())
    assert (same.status, same.max_abs, same.relative_l2, same.cosine, same.mismatched) == ("equal", 0.0, 0.0, 1.0, 0)
    zeros = tensor_diff("t", "t", np.zeros(5, np.float32), np.zeros(5, np.float32))
    assert (zeros.status, zeros.relative_l2, zeros.cosine) == ("equal", 0.0, None)  # no norm: no cosine
    signed = tensor_diff("t", "t", np.array([0.0, 1.0]), np.array([-0.0, 1.0]))  # bytes differ, values do not
    assert (signed.status, signed.mismatched, signed.max_abs) == ("equal", 0, 0.0)
    _assert_diff(np.array([0.0, 1.0]), np.array([-0.0, 1.0]))


def test_diff_partial_sums_equal_blocks_once_and_changed_ones_whole(float_block: int) -> None:
    """``diff_partial`` (what ``runs`` merges) without the whole-tensor byte compare: equal blocks beside changed."""
    a = _straddling(np.float32, block=float_block)
    b = a.copy()
    b[-1] += 1
    figures = analysis.diff_partial(a, b, elements=float_block + 3)
    expected = _expected_diff(a, b, 0.0, 0.0)
    assert (figures.mismatched, figures.max_abs) == (expected["mismatched"], expected["max_abs"])
    np.testing.assert_allclose(figures.relative_l2, expected["relative_l2"], rtol=1e-9)
    np.testing.assert_allclose(figures.cosine, expected["cosine"], rtol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_deviation_of_values_far_from_zero_is_summed_from_the_mean(dtype: type, float_block: int) -> None:
    """Where the mean dominates the spread, the sum of squares less the squared sum would cancel every digit."""
    values = (1e4 if dtype is np.float32 else 1e6) + np.random.default_rng(1).standard_normal(3 * float_block + 1)
    array = values.astype(dtype)
    stats = tensor_stats("t", array, elements=float_block + 3)
    wide = array.astype(np.float64)
    assert stats.std == pytest.approx(float(wide.std()), rel=1e-9)
    assert stats.mean == pytest.approx(float(wide.mean()), rel=1e-12)
