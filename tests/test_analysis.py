"""stats and diff: figures equal numpy's own, differences found and named, across formats."""

from __future__ import annotations

import json
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from conftest import seed_copy  # noqa: F401 - a fixture

import weightscope as ws
from weightscope.analysis import TensorStats, checkpoint_stats, tensor_diff, tensor_stats
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
