"""``weightscope summary``: the network read from the weights alone, counted as Keras and PyTorch count it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

import weightscope as ws
from weightscope.cli import main
from weightscope.summary import summarize

KERAS_KINDS = {"Conv2D": "Conv2D", "BatchNormalization": "BatchNorm", "Dense": "Dense"}


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    status = main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return status, out, err


def summary_json(capsys: pytest.CaptureFixture[str], path: Path) -> dict[str, Any]:
    status, out, _ = run(capsys, "summary", "--json", path)
    assert status == 0
    return json.loads(out)


def total_line(out: str, label: str) -> str:
    """The totals line that starts with ``label:``, its spacing squeezed."""
    (line,) = [line for line in out.splitlines() if line.startswith(f"{label}:")]
    return " ".join(line.split())


def test_seed_is_two_dense_layers_with_adam(
    tf_checkpoints: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, "summary", tf_checkpoints["seed"])
    assert status == 0 and err == ""
    rows = {line.split()[0]: line for line in out.splitlines()[2:4]}
    assert "Dense 2 → 5" in rows["layer1"] and rows["layer1"].split()[-3:] == ["15", "0", "30"]
    assert "Dense 5 → 2" in rows["layer2"] and rows["layer2"].split()[-3:] == ["12", "0", "24"]
    assert total_line(out, "parameters (trainable)") == "parameters (trainable): 27"
    assert total_line(out, "buffers (non-trainable)") == "buffers (non-trainable): 0"
    assert total_line(out, "optimizer slot values") == "optimizer slot values: 54 (per variable)"
    assert total_line(out, "other optimizer values") == "other optimizer values: 2 (beta1_power, beta2_power)"
    assert total_line(out, "values in all") == "values in all: 83"
    assert total_line(out, "bytes by dtype") == "bytes by dtype: float32 332 B"

    document = summary_json(capsys, tf_checkpoints["seed"])
    assert [(layer["name"], layer["kind"], layer["description"]) for layer in document["layers"]] == [
        ("layer1", "Dense", "Dense 2 → 5"),
        ("layer2", "Dense", "Dense 5 → 2"),
    ]
    assert document["totals"] == {
        "layers": 2,
        "parameters": 27,
        "buffers": 0,
        "optimizer_slots": 54,
        "optimizer_other": 2,
        "bookkeeping": 0,
        "in_all": 83,
        "string_tensors": 0,
    }
    assert document["optimizer_other"] == ["beta1_power", "beta2_power"]
    assert document["bytes_by_dtype"] == {"float32": 332}


def test_json_schema_is_stable(tf_checkpoints: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    document = summary_json(capsys, tf_checkpoints["keras3_cnn"])
    assert list(document) == [
        "layers",
        "totals",
        "optimizer_other",
        "bytes_by_dtype",
        "values_by_dtype",
        "model",
        "sharding",
    ]
    assert document["sharding"] is None  # saved whole (a DCP folder's ranks and chunks: tests/test_dcp.py)
    for layer in document["layers"]:
        assert list(layer) == ["name", "kind", "description", "parameters", "buffers", "optimizer_state", "roles"]
        assert all(isinstance(layer[key], int) for key in ("parameters", "buffers", "optimizer_state"))
        assert all(isinstance(shape, list) for shape in layer["roles"].values())
    assert list(document["totals"]) == [
        "layers",
        "parameters",
        "buffers",
        "optimizer_slots",
        "optimizer_other",
        "bookkeeping",
        "in_all",
        "string_tensors",
    ]
    assert all(isinstance(count, int) for count in document["bytes_by_dtype"].values())


def test_keras3_cnn_counts_as_keras_does(tf_checkpoints: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    prefix = tf_checkpoints["keras3_cnn"]
    keras_layers = json.loads((prefix.parent / "expected_layers.json").read_text("utf-8"))["layers"]
    expected = {}
    for layer in keras_layers:
        if not layer["variables"]:
            continue  # Flatten
        sizes = [math.prod(shape) for shape in layer["shapes"]]
        trainable = sum(size for size, flag in zip(sizes, layer["trainable"], strict=True) if flag)
        # parameters are Keras' trainable weights, buffers its non-trainable ones; Adam: m, v
        expected[layer["name"]] = (KERAS_KINDS[layer["class"]], trainable, sum(sizes) - trainable, 2 * trainable)
    document = summary_json(capsys, prefix)
    got = {
        layer["name"]: (layer["kind"], layer["parameters"], layer["buffers"], layer["optimizer_state"])
        for layer in document["layers"]
    }
    assert got == expected
    descriptions = {layer["name"]: layer["description"] for layer in document["layers"]}
    assert descriptions == {"conv1": "Conv2D 3×3 3 → 8", "bn1": "BatchNorm 8", "dense1": "Dense 288 → 4"}

    count_params = sum(parameters + buffers for _, parameters, buffers, _ in expected.values())  # model.count_params()
    trainable = sum(trainable for _, trainable, _, _ in expected.values())
    totals = document["totals"]
    assert (totals["parameters"], totals["buffers"]) == (trainable, count_params - trainable)
    assert totals["buffers"] > 0  # bn1's moving mean and variance
    assert totals["optimizer_slots"] == 2 * trainable
    assert sorted(document["optimizer_other"]) == ["adam/iteration", "adam/learning_rate"]
    assert totals["optimizer_other"] == 2 and totals["string_tensors"] == 1  # _CHECKPOINTABLE_OBJECT_GRAPH
    with ws.open(prefix) as ckpt:  # as TensorFlow counts: every element of every tensor but the strings
        assert totals["in_all"] == sum(info.size for info in ckpt.infos() if info.type_name != "string")
        assert document["bytes_by_dtype"]["string"] == ckpt.info("_CHECKPOINTABLE_OBJECT_GRAPH").nbytes
    assert totals["in_all"] == count_params + 2 * trainable + 2

    status, out, _ = run(capsys, "summary", prefix)
    assert status == 0
    assert "Conv2D 3×3 3 → 8" in out and "BatchNorm 8" in out and "Dense 288 → 4" in out
    assert (
        total_line(out, "buffers (non-trainable)")
        == f"buffers (non-trainable): {count_params - trainable} (running statistics)"
    )
    assert total_line(out, "values in all") == f"values in all: {totals['in_all']:,} (1 string tensor not counted)"


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(30, 6)
        self.conv = torch.nn.Conv2d(3, 16, 3)
        self.bn = torch.nn.BatchNorm2d(16)
        self.conv1d = torch.nn.Conv1d(4, 8, 5)
        self.fc = torch.nn.Linear(16, 5)
        self.norm = torch.nn.LayerNorm(5)


def test_pytorch_state_dict_kinds_and_counts_match_the_modules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(0)
    net = _Net()
    path = tmp_path / "net.pt"
    torch.save(net.state_dict(), path)
    descriptions = {
        "embed": ("Embedding", "Embedding 30 × 6"),
        "conv": ("Conv2D", "Conv2D 3×3 3 → 16"),
        "bn": ("BatchNorm", "BatchNorm 16"),
        "conv1d": ("Conv1D", "Conv1D 5 4 → 8"),
        "fc": ("Dense", "Dense 16 → 5"),
        "norm": ("LayerNorm", "LayerNorm 5"),
    }
    document = summary_json(capsys, path)
    assert [layer["name"] for layer in document["layers"]] == list(descriptions)  # the state dict's order
    for layer in document["layers"]:
        module = getattr(net, layer["name"])
        trainable = sum(p.numel() for p in module.parameters())
        statistics = sum(b.numel() for name, b in module.named_buffers() if name.startswith("running_"))
        assert (layer["kind"], layer["description"]) == descriptions[layer["name"]]
        assert (layer["parameters"], layer["buffers"], layer["optimizer_state"]) == (trainable, statistics, 0)
    totals = document["totals"]
    assert totals["parameters"] == sum(p.numel() for p in net.parameters())
    assert totals["buffers"] == 32  # bn's running mean and variance
    assert totals["bookkeeping"] == 1  # bn.num_batches_tracked
    assert totals["in_all"] == sum(t.numel() for t in net.state_dict().values())
    assert document["bytes_by_dtype"] == {
        "float32": sum(t.numel() * 4 for t in net.state_dict().values() if t.dtype == torch.float32),
        "int64": 8,
    }


def test_pytorch_adam_state_counts_per_layer(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 5), torch.nn.Sigmoid(), torch.nn.Linear(5, 2))
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(3, 2)).sum().backward()
    optimizer.step()
    path = tmp_path / "train.pt"
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, path)
    with ws.open(path) as ckpt:
        summary = summarize(ckpt)
    assert [(layer.name, layer.description) for layer in summary.layers] == [("0", "Dense 2 → 5"), ("2", "Dense 5 → 2")]
    # exp_avg and exp_avg_sq of each parameter, and its step (a scalar per parameter in PyTorch)
    assert [layer.optimizer_state for layer in summary.layers] == [2 * 15 + 2, 2 * 12 + 2]
    assert summary.optimizer_slots == 2 * 27 + 4 and summary.parameters == 27


def test_unknown_and_ambiguous_layers_are_not_guessed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)

    def tensor(*shape: int) -> np.ndarray:
        return rng.normal(size=shape).astype(np.float32)

    path = tmp_path / "tf_names.safetensors"
    save_file(
        {
            "mystery/w": tensor(2, 3, 4),  # rank 3, but 'w' belongs to no framework's layout
            "lstm/kernel": tensor(4, 32),
            "lstm/recurrent_kernel": tensor(8, 32),
            "lstm/bias": tensor(32),
            "conv1d/kernel": tensor(5, 4, 8),
            "conv1d/bias": tensor(8),
            "conv3d/kernel": tensor(2, 3, 3, 4, 6),
            "conv2d_transpose/kernel": tensor(3, 3, 8, 16),  # [..spatial, out, in]
            "conv2d_transpose/bias": tensor(8),
            "depthwise_conv2d/kernel": tensor(3, 3, 16, 2),  # Keras 3: [..spatial, in, multiplier]
            "dw/depthwise_kernel": tensor(3, 3, 4, 1),
            "sep/depthwise_kernel": tensor(3, 3, 4, 2),
            "sep/pointwise_kernel": tensor(1, 1, 8, 12),
            "sep/bias": tensor(12),
            "token/embeddings": tensor(100, 16),
            "ln/gamma": tensor(16),
            "ln/beta": tensor(16),
            "dense_bad_bias/kernel": tensor(3, 4),
            "dense_bad_bias/bias": tensor(3),
        },
        str(path),
    )
    document = summary_json(capsys, path)
    got = {layer["name"]: layer["description"] for layer in document["layers"]}
    assert got == {
        "mystery": "? weight [2, 3, 4]",
        "lstm": "? bias [32], weight [4, 32], recurrent_kernel [8, 32]",
        "conv1d": "Conv1D 5 4 → 8",
        "conv3d": "Conv3D 2×3×3 4 → 6",
        "conv2d_transpose": "Conv2DTranspose 3×3 16 → 8",
        "depthwise_conv2d": "DepthwiseConv2D 3×3 16 → 32",
        "dw": "DepthwiseConv2D 3×3 4 → 4",
        "sep": "SeparableConv2D 3×3 4 → 12",
        "token": "Embedding 100 × 16",
        "ln": "LayerNorm 16",
        "dense_bad_bias": "? bias [3], weight [3, 4]",
    }
    kinds = {layer["name"]: layer["kind"] for layer in document["layers"]}
    assert kinds["mystery"] == kinds["lstm"] == kinds["dense_bad_bias"] == "?"
    status, out, _ = run(capsys, "summary", path)
    assert status == 0
    (row,) = [line for line in out.splitlines() if line.startswith("mystery ")]
    assert "? weight [2, 3, 4]" in row and row.split()[-3:] == ["24", "0", "0"]


def test_pytorch_lone_1d_weight_is_a_norm_only_where_the_name_says(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "lone.safetensors"
    ones = np.ones(8, np.float32)
    save_file(
        {"act.weight": ones, "final_norm.weight": ones, "group_norm.weight": ones, "group_norm.bias": ones}, str(path)
    )
    document = summary_json(capsys, path)
    got = {layer["name"]: layer["description"] for layer in document["layers"]}
    assert got == {"act": "? weight [8]", "final_norm": "LayerNorm 8", "group_norm": "GroupNorm 8"}
