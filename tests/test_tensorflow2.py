"""TF2 object-based checkpoints: readable names, optimizer state attached, Keras layers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_same_tensor
from tf_fixtures import KERAS_FIXTURES, expected_layer_weights, tf_reader_values

import weightscope as ws
from weightscope.cli import main

ROLE_ORDER = ("weight", "bias", "scale", "offset", "running_mean", "running_var")


@pytest.mark.parametrize("fixture", KERAS_FIXTURES)
def test_every_tensor_equals_tensorflow_by_key_and_by_name(tf_checkpoints: dict[str, Path], fixture: str) -> None:
    path = tf_checkpoints[fixture]
    expected = tf_reader_values(path)
    with ws.open(path) as ckpt:
        assert sorted(info.key for info in ckpt.infos()) == sorted(expected)
        for info in ckpt.infos():
            assert_same_tensor(ckpt[info.name], expected[info.key])
            assert_same_tensor(ckpt[info.key], expected[info.key])


# keras3_export saves every variable twice (under variables/N and _all_variables/N) with
# the same full name, so its names are object paths and its layers cannot be told.
@pytest.mark.parametrize("fixture", [name for name in KERAS_FIXTURES if name != "keras3_export"])
def test_keras_layers_match_get_weights(tf_checkpoints: dict[str, Path], fixture: str) -> None:
    path = tf_checkpoints[fixture]
    expected = expected_layer_weights(path)
    with ws.open(path) as ckpt:
        layers = ckpt.layers()
        assert sorted(layers) == sorted(expected)
        for name, weights in expected.items():
            parameters = layers[name].parameters
            ours = [ckpt[parameters[role].name] for role in ROLE_ORDER if role in parameters]
            assert len(ours) == len(weights)
            for mine, theirs in zip(ours, weights, strict=True):
                assert_same_tensor(mine, theirs)


def test_keras3_checkpoint_lists_layer_names(
    tf_checkpoints: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = tf_checkpoints["keras3_checkpoint"]
    assert main(["ls", str(path)]) == 0
    out = capsys.readouterr().out
    names = [line.split()[0] for line in out.splitlines()[2:6]]
    assert names == [
        "sequential/layer1/bias",
        "sequential/layer1/kernel",
        "sequential/layer2/bias",
        "sequential/layer2/kernel",
    ]
    assert "_trainable_variables" not in out
    assert "hidden: 1 bookkeeping tensor, 10 optimizer state tensors" in out
    assert main(["ls", "--keys", str(path)]) == 0
    out = capsys.readouterr().out
    assert "optimizer/_trainable_variables/0/.ATTRIBUTES/VARIABLE_VALUE" in out


def test_keras3_optimizer_state_is_attached(tf_checkpoints: dict[str, Path]) -> None:
    with ws.open(tf_checkpoints["keras3_checkpoint"]) as ckpt:
        layer1 = ckpt.layers()["layer1"]
        assert layer1.weight is not None and layer1.weight.shape == (2, 5)
        assert layer1.bias is not None and layer1.bias.shape == (5,)
        slots = layer1.optimizer_state["sequential/layer1/kernel"]
        assert {slot: info.name for slot, info in slots.items()} == {
            "m": "adam/sequential_layer1_kernel_momentum",
            "v": "adam/sequential_layer1_kernel_velocity",
        }
        assert ckpt.role("adam/iteration").kind == "optimizer"
        assert ckpt.role("optimizer/_trainable_variables/0/.ATTRIBUTES/VARIABLE_VALUE").role == "weight"


@pytest.mark.parametrize(
    ("fixture", "slot_name"),
    [("tfkeras_weights", "Adam/m/layer1/kernel"), ("tfkeras_legacy_adam", "Adam/layer1/kernel/m")],
)
def test_tf_keras_optimizer_state_is_attached(tf_checkpoints: dict[str, Path], fixture: str, slot_name: str) -> None:
    with ws.open(tf_checkpoints[fixture]) as ckpt:
        assert ckpt.info("layer1/kernel").key == "layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE"
        slots = ckpt.layers()["layer1"].optimizer_state["layer1/kernel"]
        assert slots["m"].name == slot_name


def test_layers_command_on_keras(tf_checkpoints: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    for fixture in ("keras3_checkpoint", "tfkeras_weights", "saved_model"):
        assert main(["layers", "--json", str(tf_checkpoints[fixture])]) == 0
        layers = {layer["layer"]: layer for layer in json.loads(capsys.readouterr().out)}
        assert layers["layer1"]["parameters"]["weight"]["shape"] == [2, 5]
        assert layers["layer2"]["parameters"]["weight"]["shape"] == [5, 2]
        assert layers["layer2"]["parameters"]["bias"]["shape"] == [2]


def test_cnn_layers(tf_checkpoints: dict[str, Path]) -> None:
    with ws.open(tf_checkpoints["keras3_cnn"]) as ckpt:
        layers = ckpt.layers()
    assert set(layers) == {"conv1", "bn1", "dense1"}
    assert layers["conv1"].weight is not None and layers["conv1"].weight.shape == (3, 3, 3, 8)
    assert set(layers["bn1"].parameters) == {"scale", "offset", "running_mean", "running_var"}


def test_saved_model_directory_opens_its_variables(tf_checkpoints: dict[str, Path]) -> None:
    directory = tf_checkpoints["saved_model"]
    with ws.open(directory) as ckpt:
        assert ckpt.path == directory / "variables" / "variables"
        assert "layer1/kernel" in ckpt
        assert ckpt.role("total").kind == "bookkeeping"


def test_object_graph_is_bookkeeping(tf_checkpoints: dict[str, Path]) -> None:
    with ws.open(tf_checkpoints["sharded"]) as ckpt:
        assert ckpt.role("_CHECKPOINTABLE_OBJECT_GRAPH").kind == "bookkeeping"
        assert "model/kernel" in ckpt


def test_history_lists_every_checkpoint(tf_checkpoints: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    directory = tf_checkpoints["history"]
    assert main(["history", "--json", str(directory)]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [entry["step"] for entry in entries] == [10, 20, 30]
    assert [entry["newest"] for entry in entries] == [False, False, True]
    assert all(entry["exists"] and entry["timestamp"] > 1e9 for entry in entries)
    assert main(["history", str(directory)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("*")
    assert main(["show", "--json", "--step", "20", str(directory), *_first_name(directory)]) == 0
    with ws.open(directory / "model.ckpt-20") as ckpt:
        name = _first_name(directory)[0]
        assert json.loads(capsys.readouterr().out)[name]["values"] == np.asarray(ckpt[name], float).tolist()
    assert main(["ls", "--step", "40", str(directory)]) == 2
    assert "steps: 10, 20, 30" in capsys.readouterr().err


def _first_name(directory: Path) -> list[str]:
    with ws.open(directory) as ckpt:
        return [next(name for name in ckpt if ckpt.role(name).kind == "parameter")]


def test_v1_checkpoint_is_refused_with_a_way_out(
    tf_checkpoints: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = tf_checkpoints["v1"]
    assert prefix.is_file() and not Path(f"{prefix}.index").exists()
    with pytest.raises(ws.UnsupportedFormatError, match="TensorFlow V1 checkpoint"):
        ws.open(prefix)
    assert main(["ls", str(prefix.parent)]) == 5  # by its directory too
    assert "tf.compat.v1.train.Saver" in capsys.readouterr().err


@pytest.mark.parametrize("fixture", ["keras3_checkpoint", "tfkeras_legacy_adam", "saved_model", "sharded"])
def test_merged_parse_finds_every_attribute_a_node_walk_finds(tf_checkpoints: dict[str, Path], fixture: str) -> None:
    from weightscope import _proto
    from weightscope.formats.tf_object_graph import OBJECT_GRAPH_KEY

    with ws.open(tf_checkpoints[fixture]) as ckpt:
        serialized = ckpt[OBJECT_GRAPH_KEY][()]
    walked = [
        (attribute.checkpoint_key, attribute.full_name)
        for node in _proto.TrackableObjectGraph.FromString(serialized).nodes
        for attribute in node.attributes
    ]
    merged = _proto.TrackableObjectGraphMerged.FromString(serialized).nodes.attributes
    assert [(attribute.checkpoint_key, attribute.full_name) for attribute in merged] == walked
    assert walked
