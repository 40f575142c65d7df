"""Flax msgpack files read without Flax: every tensor equals what flax's own msgpack_restore gave, bit for bit.

The fixtures (tests/fixtures/flax/) and flax's answers for them (expected.npz, expected.json) were made by
``make_flax.py`` beside them, with flax, jax and optax (the fixtures venv); none of those is imported here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

import weightscope as ws
from weightscope.cli import main

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "flax"
EXPECTED: dict[str, dict[str, dict[str, Any]]] = json.loads((FIXTURES / "expected.json").read_text())
FILES = sorted(EXPECTED)


@pytest.fixture(scope="module")
def restored() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "expected.npz") as stored:
        return {name: stored[name] for name in stored.files}


@pytest.mark.parametrize("file", FILES)
def test_every_leaf_is_what_msgpack_restore_gives(file: str, restored: dict[str, np.ndarray]) -> None:
    leaves = EXPECTED[file]
    with ws.open(FIXTURES / file, format="flax-msgpack") as ckpt:  # a shard alone (sniffed, it opens its set)
        arrays = {name for name, leaf in leaves.items() if "dtype" in leaf}
        assert list(ckpt) == [name for name in leaves if name in arrays]  # names and order as flax flattens them
        for name in arrays:
            array = ckpt[name]
            assert array.dtype.name == leaves[name]["dtype"] and list(array.shape) == leaves[name]["shape"]
            assert array.tobytes() == restored[f"{file}:{name}"].tobytes(), name
            assert not array.flags.writeable
        assert ckpt.metadata == {name: leaf["value"] for name, leaf in leaves.items() if "value" in leaf}
        assert ckpt.verify() == []


def test_arrays_are_views_of_the_file_at_their_recorded_offsets() -> None:
    raw = (FIXTURES / "train_state.msgpack").read_bytes()
    with ws.open(FIXTURES / "train_state.msgpack") as ckpt:
        info = ckpt.info("params/Dense_0/kernel")
        array = ckpt["params/Dense_0/kernel"]
        assert info.nbytes == 48 * 4 * 4 and raw[info.offset : info.offset + info.nbytes] == array.tobytes()
        assert not array.flags.owndata  # the mapped file's bytes, not a copy
        assert ckpt.extent("params/Dense_0/kernel") is not None


def test_a_chunked_array_is_joined_from_its_chunks() -> None:
    with ws.open(FIXTURES / "chunked.msgpack") as ckpt:
        assert ckpt.extent("big") is None and ckpt.extent("small") is not None  # joined on read; plain
        assert np.array_equal(ckpt["big"], np.arange(50, dtype=np.float32).reshape(5, 10))
        assert ckpt.info("layer/big_bf16").type_name == "bfloat16"
        assert ckpt["layer/big_bf16"].astype(np.float32).tolist() == np.arange(40).reshape(2, 4, 5).tolist()


def test_flax_and_optax_names_make_layers_with_their_optimizer_state() -> None:
    with ws.open(FIXTURES / "train_state.msgpack") as ckpt:
        layers = ckpt.layers()
        assert sorted(layers) == ["BatchNorm_0", "Conv_0", "Dense_0", "Dense_1", "LayerNorm_0"]
        dense = layers["Dense_0"]
        assert dense.weight is not None and dense.weight.name == "params/Dense_0/kernel"
        assert dense.bias is not None and dense.bias.name == "params/Dense_0/bias"
        state = dense.optimizer_state["params/Dense_0/kernel"]
        assert {slot: info.name for slot, info in state.items()} == {
            "mu": "opt_state/0/mu/Dense_0/kernel",
            "nu": "opt_state/0/nu/Dense_0/kernel",
        }
        assert set(layers["LayerNorm_0"].parameters) == {"scale", "offset"}
        assert ckpt.role("opt_state/0/count").kind == "optimizer"
    with ws.open(FIXTURES / "variables.msgpack") as ckpt:
        norm = ckpt.layers()["BatchNorm_0"]
        assert {role: info.name for role, info in norm.parameters.items()} == {
            "scale": "params/BatchNorm_0/scale",
            "offset": "params/BatchNorm_0/bias",
            "running_mean": "batch_stats/BatchNorm_0/mean",
            "running_var": "batch_stats/BatchNorm_0/var",
        }


def test_summary_tells_the_layers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", str(FIXTURES / "variables.msgpack")]) == 0
    out = capsys.readouterr().out
    for kind in ("BatchNorm 3", "Conv2D 3×3 2 → 3", "Dense 48 → 4", "LayerNorm 4", "Dense 4 → 2"):
        assert kind in out
    assert main(["summary", str(FIXTURES / "hf_flax")]) == 0
    assert "Embedding 16 × 8" in capsys.readouterr().out


def test_convert_with_pytorch_names_gives_torch_linear_weights(tmp_path: Path) -> None:
    out = tmp_path / "model.safetensors"
    source = FIXTURES / "train_state.msgpack"
    assert main(["convert", str(source), str(out), "--names", "pytorch", "--layout", "pytorch"]) == 0
    converted = load_file(str(out))
    assert sorted(converted) == sorted(
        f"params.{layer}.{role}"
        for layer in ("BatchNorm_0", "Conv_0", "Dense_0", "Dense_1", "LayerNorm_0")
        for role in (("scale", "bias") if "Norm" in layer else ("weight", "bias"))
    )  # the optimizer state is left out
    with ws.open(source) as ckpt:
        kernel, bias, conv = ckpt["params/Dense_0/kernel"], ckpt["params/Dense_0/bias"], ckpt["params/Conv_0/kernel"]
    linear = torch.nn.Linear(48, 4)
    linear.load_state_dict({"weight": torch.from_numpy(converted["params.Dense_0.weight"]), "bias": torch.tensor(bias)})
    inputs = np.random.default_rng(0).standard_normal((2, 48)).astype(np.float32)
    assert np.allclose(linear(torch.from_numpy(inputs)).detach().numpy(), inputs @ kernel + bias, atol=1e-6)
    assert np.array_equal(converted["params.Conv_0.weight"], conv.transpose(3, 2, 0, 1))


def test_a_hub_folder_reads_flax_model_msgpack_single_or_sharded() -> None:
    with ws.open(FIXTURES / "hf_flax") as single, ws.open(FIXTURES / "hf_flax_sharded") as sharded:
        assert sorted(sharded) == sorted(single) and len(single) == 28  # the index lists them sorted
        for name in single:
            assert single[name].tobytes() == sharded[name].tobytes()
        assert len(sharded.files) == 5
    with ws.open(FIXTURES / "hf_flax_sharded" / "flax_model-00002-of-00005.msgpack") as shard:
        assert sorted(shard) == sorted(single)  # a shard opens its set, as with safetensors
    with ws.open(FIXTURES / "train_state.msgpack") as ckpt:
        assert ckpt.format == "flax-msgpack"


def test_transformers_order_puts_flax_weights_after_safetensors_and_bin(tmp_path: Path) -> None:
    folder = shutil.copytree(FIXTURES / "hf_flax", tmp_path / "both")
    ws.save({"lm_head.weight": np.ones((2, 2), np.float32)}, folder / "pytorch_model.bin")
    with ws.open(folder) as ckpt:
        assert list(ckpt) == ["lm_head.weight"]
        assert ckpt.notes == [
            f"{folder}: read pytorch_model.bin, as transformers loads it first; not read: flax_model.msgpack"
        ]
