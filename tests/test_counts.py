"""One answer everywhere: what is a parameter, a buffer, optimizer state or bookkeeping, and how
many of each (tensors or values, always said), in ls, layers, summary, stats, diff and the viewer,
against torch's own ``parameters()`` / ``buffers()`` and Keras' trainable / non-trainable weights."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import weightscope as ws
from weightscope.cli import main
from weightscope.errors import ExitStatus
from weightscope.viewer.server import Viewer


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    status = main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return status, out, err


def _trained() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 2)
    )
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    optimizer.step()
    return model, optimizer


def _flat(prefix: str, state: dict[Any, Any]) -> dict[str, torch.Tensor]:
    """``optimizer.state_dict()["state"]`` as the dotted names a flattening exporter gives it."""
    return {f"{prefix}state.{index}.{slot}": value for index, slots in state.items() for slot, value in slots.items()}


@pytest.fixture(scope="module")
def training(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One PyTorch training run's checkpoint three ways: torch.save of {model, optimizer, epoch}, and
    its tensors flattened (``optimizer.state.0.exp_avg``) into a safetensors file and a flat torch dict."""
    directory = tmp_path_factory.mktemp("training")
    model, optimizer = _trained()
    saved = optimizer.state_dict()
    nested = directory / "train.pt"
    torch.save({"model": model.state_dict(), "optimizer": saved, "epoch": 3}, nested)
    flat = {
        **{f"model.{name}": value for name, value in model.state_dict().items()},
        **_flat("optimizer.", saved["state"]),
    }
    flat_safetensors = directory / "flat.safetensors"
    save_file({name: value.contiguous() for name, value in flat.items()}, flat_safetensors)
    flat_torch = directory / "flat.pt"
    torch.save(flat, flat_torch)
    state = [value for slots in saved["state"].values() for value in slots.values()]
    return {
        "paths": {"nested": nested, "flat.safetensors": flat_safetensors, "flat.pt": flat_torch},
        "parameters": sum(p.numel() for p in model.parameters()),
        "buffers": sum(b.numel() for name, b in model.named_buffers() if "running_" in name),
        "bookkeeping": sum(b.numel() for name, b in model.named_buffers() if "num_batches_tracked" in name),
        "torch_buffers": sum(b.numel() for b in model.buffers()),
        "state_tensors": len(state),
        "state_values": sum(value.numel() for value in state),
        "state_names": sorted(_flat("optimizer.", saved["state"])),
        "model_names": [f"model.{name}" for name in model.state_dict()],
    }


def _number(pattern: str, text: str) -> int:
    match = re.search(pattern, text)
    assert match, (pattern, text)
    return int(match.group(1).replace(",", ""))


FILES = ["nested", "flat.safetensors", "flat.pt"]


@pytest.mark.parametrize("file", FILES)
def test_optimizer_state_is_hidden_and_counted_alike_everywhere(
    training: dict[str, Any], file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = training["paths"][file]
    with ws.open(path) as ckpt:
        state_names = sorted(name for name in ckpt if ckpt.role(name).kind == "optimizer")
        assert state_names == training["state_names"]
        rows = Viewer([ckpt]).tensors({"file": "0"})["tensors"]
        assert sorted(row["name"] for row in rows if row["kind"] == "optimizer") == state_names

    status, out, _ = run(capsys, "ls", path)
    assert status == 0
    listed = [line.split()[0] for line in out.splitlines()[2:] if line.startswith("model.")]
    assert sorted(listed) == sorted(name for name in training["model_names"] if "num_batches_tracked" not in name)
    assert _number(r"(\d+) optimizer state tensors", out) == training["state_tensors"]
    assert _number(r"tensors, ([\d,]+) parameters", out) == training["parameters"]  # torch's parameters()
    assert _number(r"([\d,]+) buffer values", out) == training["buffers"]
    status, out, _ = run(capsys, "ls", "--all", path)
    assert _number(r"([\d,]+) optimizer state values", out) == training["state_values"]

    status, out, _ = run(capsys, "layers", "--json", path)
    layers = json.loads(out)
    assert len(layers) == 3 and not any("state" in layer["layer"] for layer in layers)
    assert sum(layer["parameter_count"] for layer in layers) == training["parameters"]
    assert sum(layer["buffer_count"] for layer in layers) == training["buffers"]

    status, out, _ = run(capsys, "summary", "--json", path)
    totals = json.loads(out)["totals"]
    assert (totals["parameters"], totals["buffers"]) == (training["parameters"], training["buffers"])
    assert totals["optimizer_slots"] + totals["optimizer_other"] == training["state_values"]

    status, out, _ = run(capsys, "stats", "--json", path)
    assert not {row["name"] for row in json.loads(out)} & set(state_names)
    status, out, _ = run(capsys, "stats", "--all", "--json", path)
    assert {row["name"] for row in json.loads(out)} >= set(state_names)


def test_diff_compares_optimizer_state_only_when_asked(training: dict[str, Any], tmp_path: Path) -> None:
    path = training["paths"]["flat.safetensors"]
    with ws.open(path) as ckpt:
        tensors = {name: np.array(ckpt[name]) for name in ckpt}
    tensors["optimizer.state.0.exp_avg"] = tensors["optimizer.state.0.exp_avg"] + 1
    other = tmp_path / "other.safetensors"
    ws.save(tensors, other, format="safetensors")
    assert main(["diff", str(path), str(other)]) == 0
    assert main(["diff", "--include-optimizer", str(path), str(other)]) == ExitStatus.DIFFERENT


def test_ls_layers_and_summary_label_units(training: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    path = training["paths"]["nested"]
    _, out, _ = run(capsys, "ls", path)
    assert "hidden: 1 bookkeeping tensor, 18 optimizer state tensors (--all shows them)" in out
    _, out, _ = run(capsys, "layers", path)
    assert out.splitlines()[0].split()[-4:] == ["parameters", "buffers", "optimizer", "tensors"]
    assert (
        out.splitlines()[-1] == f"3 layers, {training['parameters']} parameters, 8 buffer values (running statistics)"
    )
    _, out, _ = run(capsys, "summary", path)
    assert out.splitlines()[0].split()[-4:] == ["parameters", "buffers", "optimizer", "values"]
    totals = {line.split(":")[0]: line.split(":")[1].split()[0] for line in out.splitlines() if ":" in line}
    assert totals["parameters (trainable)"] == str(training["parameters"])
    assert totals["buffers (non-trainable)"] == str(training["buffers"])
    assert totals["bookkeeping values"] == str(training["bookkeeping"])  # num_batches_tracked
    # torch's buffers(): the running statistics, and num_batches_tracked, which weightscope calls bookkeeping
    assert training["buffers"] + training["bookkeeping"] == training["torch_buffers"] == 9


def test_len_is_what_ls_shows_and_hides(training: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    path = training["paths"]["nested"]
    _, out, _ = run(capsys, "ls", path)
    shown = _number(r"^(\d+) tensors,", _totals_line(out))
    (hidden_line,) = [line for line in out.splitlines() if line.startswith("hidden: ")]
    hidden = sum(int(count) for count in re.findall(r"(\d+) [a-z ]+? tensors?\b", hidden_line))
    assert hidden == 1 + 18
    with ws.open(path) as ckpt:
        assert shown + hidden == len(ckpt)


def _totals_line(out: str) -> str:
    (line,) = [line for line in out.splitlines() if re.match(r"^\d+ tensors,", line)]
    return line


def test_keras_counts_trainable_weights_as_parameters_and_the_rest_as_buffers(
    tf_checkpoints: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = tf_checkpoints["keras3_cnn"]
    keras_layers = json.loads((prefix.parent / "expected_layers.json").read_text("utf-8"))["layers"]
    trainable = non_trainable = 0
    for layer in keras_layers:
        for shape, flag in zip(layer["shapes"], layer["trainable"], strict=True):
            if flag:
                trainable += math.prod(shape)
            else:
                non_trainable += math.prod(shape)
    assert non_trainable > 0  # BatchNormalization's moving mean and variance
    _, out, _ = run(capsys, "ls", prefix)
    line = _totals_line(out)
    assert _number(r"tensors, ([\d,]+) parameters", line) == trainable
    assert _number(r"([\d,]+) buffer values", line) == non_trainable
    _, out, _ = run(capsys, "layers", "--json", prefix)
    layers = json.loads(out)
    assert sum(layer["parameter_count"] for layer in layers) == trainable
    assert sum(layer["buffer_count"] for layer in layers) == non_trainable
