"""PyTorch views (stride 0, overlapping, transposed) read as torch loads them, listed as what they are, and
refused past the expansion cap when read whole: torch is the oracle, on files torch.save wrote."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import weightscope as ws
from weightscope.analysis import checkpoint_stats, tensor_stats
from weightscope.cli import main
from weightscope.errors import ExitStatus, LimitExceededError
from weightscope.limits import EXPANSION_VARIABLE, MEMORY_VARIABLE


def _views() -> dict[str, torch.Tensor]:
    values = torch.arange(-3.0, 9.0, dtype=torch.float32) / 7
    return {
        "expanded": values[:3].expand(4, 3),  # strides (0, 1)
        "expanded_middle": values[:6].reshape(2, 1, 3).expand(2, 5, 3),  # (3, 0, 1)
        "scalar_everywhere": values[5].expand(3, 4, 2),  # (0, 0, 0)
        "windows": values.as_strided((6, 4), (1, 1), 2),  # overlapping, no stride 0
        "windows_expanded": values.as_strided((3, 2, 4), (2, 0, 1)),
        "transposed": values.reshape(3, 4).t(),
        "every_other": values[1::2],
        "doubles": torch.arange(5, dtype=torch.float64).expand(2, 5),
        "halves": torch.tensor([1.5, -0.0, float("inf")], dtype=torch.float16).expand(3, 3),
        "integers": torch.arange(5, dtype=torch.int64).as_strided((3, 2), (1, 2)),
        "with_a_nan": torch.tensor([float("nan"), 2.0]).expand(2, 2),
        "plain": values.reshape(3, 4).clone(),
    }


@pytest.fixture(scope="module", params=["zip", "legacy"])
def views(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    path = tmp_path_factory.mktemp("views") / "views.pt"
    torch.save(_views(), path, _use_new_zipfile_serialization=request.param == "zip")
    return path


def test_views_read_bit_for_bit_as_torch_loads_them(views: Path) -> None:
    loaded = torch.load(views, weights_only=True)
    with ws.open(views) as ckpt:
        assert list(ckpt) == list(loaded)
        for name, tensor in loaded.items():
            array = ckpt[name]
            expected = tensor.numpy()
            assert array.dtype == expected.dtype and array.shape == expected.shape, name
            assert np.ascontiguousarray(array).tobytes() == np.ascontiguousarray(expected).tobytes(), name
            view = ckpt.view(name)
            if tensor.is_contiguous():
                assert view is None, name
            else:
                assert view is not None and view.strides == tensor.stride(), name
                span = sum((n - 1) * s for n, s in zip(tensor.shape, tensor.stride(), strict=True))
                stored = tensor.element_size() * (1 + span)
                assert view.stored_nbytes == stored, name


def test_stats_of_views_equal_numpys_on_what_torch_loads(views: Path) -> None:
    loaded = torch.load(views, weights_only=True)
    with ws.open(views) as ckpt:
        results = checkpoint_stats(ckpt, list(ckpt))
    for result in results:
        expected = tensor_stats(result.name, np.ascontiguousarray(loaded[result.name].numpy()))
        assert result.count == expected.count and result.shape == expected.shape, result.name
        assert (result.zeros, result.nans, result.infs) == (expected.zeros, expected.nans, expected.infs), result.name
        for figure in ("min", "max", "mean", "std", "l2"):
            got, want = getattr(result, figure), getattr(expected, figure)
            assert got == pytest.approx(want, rel=1e-12, abs=1e-12, nan_ok=True), (result.name, figure)


def _run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    status = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def expanded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """585 bytes holding 2^40 values: torch.full((1,), 1.5).expand(2**40), as torch.save writes it."""
    path = tmp_path_factory.mktemp("expanded") / "expanded.pt"
    torch.save({"x": torch.full((1,), 1.5).expand(2**40)}, path)
    return path


def test_a_2_40_value_view_is_listed_as_the_4_bytes_it_stores(
    expanded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = _run(capsys, "ls", "--json", expanded)
    assert status == 0
    [row] = json.loads(out)["tensors"]
    assert (row["shape"], row["nbytes"], row["strides"], row["stored_nbytes"]) == ([2**40], 2**42, [0], 4)
    status, out, _ = _run(capsys, "ls", expanded)
    assert status == 0 and "4.0 TiB (view of 4 B, strides [0])" in out


def test_stats_of_a_2_40_value_view_come_from_its_stored_value(
    expanded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = _run(capsys, "stats", "--json", expanded)
    assert status == 0
    [figures] = json.loads(out)
    assert figures["count"] == 2**40 and figures["zeros"] == 0 and figures["nans"] == 0
    assert figures["min"] == figures["max"] == figures["mean"] == 1.5 and figures["std"] == 0
    assert figures["l2"] == pytest.approx(math.sqrt(2**40 * 1.5**2), rel=1e-15)


@pytest.mark.parametrize(
    "command", [["show", "--npy", "{out}.npy"], ["show", "--json"], ["convert", "{out}.safetensors"]]
)
def test_materialising_a_2_40_value_view_is_refused_naming_the_cap(
    expanded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    out = tmp_path / "out"
    arguments = [argument.format(out=out) for argument in command]
    arguments[1:1] = [str(expanded)] if command[0] == "convert" else []
    if command[0] == "show":
        arguments += [str(expanded), "x"]
    status, _, err = _run(capsys, *arguments)
    assert status == ExitStatus.UNSUPPORTED, err
    assert "strides [0]" in err and "4 stored" in err and EXPANSION_VARIABLE in err and "--max-expansion" in err
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary file left


def test_raising_the_cap_reads_the_view(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "wide.pt"
    torch.save({"x": torch.arange(3.0).expand(4096, 3)}, path)  # 48 KiB from 12 bytes: 4096x
    with ws.open(path) as ckpt:
        with pytest.raises(LimitExceededError, match=EXPANSION_VARIABLE):
            ckpt["x"]
        monkeypatch.setenv(EXPANSION_VARIABLE, "4096")
        assert ckpt["x"].sum() == 4096 * 3


def test_the_cap_options_raise_the_caps_for_their_command_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(EXPANSION_VARIABLE, raising=False)
    monkeypatch.delenv(MEMORY_VARIABLE, raising=False)
    path = tmp_path / "wide.pt"
    torch.save({"x": torch.arange(3.0).expand(4096, 3)}, path)
    npy = tmp_path / "x.npy"
    assert _run(capsys, "show", "--npy", npy, path, "x")[0] == ExitStatus.UNSUPPORTED
    assert _run(capsys, "--max-expansion", "4096", "show", "--npy", npy, path, "x")[0] == 0
    assert np.array_equal(np.load(npy), torch.arange(3.0).expand(4096, 3).numpy())
    assert EXPANSION_VARIABLE not in os.environ
    status, _, err = _run(capsys, "--max-expansion", "0", "ls", path)
    assert status == ExitStatus.USAGE and "--max-expansion" in err
    status, _, err = _run(capsys, "--max-memory", "lots", "ls", path)
    assert status == ExitStatus.USAGE and "not a size" in err
    assert _run(capsys, "--max-memory", "1GiB", "ls", path)[0] == 0
    assert MEMORY_VARIABLE not in os.environ


def test_overlapping_windows_past_the_cap_are_refused_by_stats_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "windows.pt"
    torch.save({"w": torch.arange(6143.0).as_strided((4096, 2048), (1, 1))}, path)  # 32 MiB of 24 KiB: 1365x
    status, out, _ = _run(capsys, "ls", "--json", path)
    assert status == 0 and json.loads(out)["tensors"][0]["stored_nbytes"] == 6143 * 4
    status, _, err = _run(capsys, "stats", path)
    assert status == ExitStatus.UNSUPPORTED and "strides [1, 1]" in err
    assert _run(capsys, "verify", path)[0] == 0  # the stored bytes are sound: only reading them whole is capped
