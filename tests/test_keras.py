"""Keras HDF5 files, written by tf-keras and Keras 3 and read back by weightscope as ``get_weights()`` gives them."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import h5py
import ml_dtypes
import numpy as np
import pytest
from conftest import assert_same_tensor
from tf_fixtures import _keras3, _tf_keras, _training_data, _two_dense_layers

import weightscope as ws
from weightscope.cli import main
from weightscope.errors import CorruptCheckpointError, UnsupportedFormatError


def _trained_dense(keras: Any) -> Any:
    model = _two_dense_layers(keras)
    model.compile(optimizer="adam", loss="mse")
    model.fit(_training_data((8, 2)), _training_data((8, 2), seed=1), epochs=2, verbose=0)
    return model


def _trained_cnn(keras: Any) -> Any:
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, name="conv1"),
            keras.layers.BatchNormalization(name="bn", center=False),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(2, name="out"),
        ],
        name="cnn",
    )
    model.compile(optimizer="adam", loss="mse")
    model.fit(_training_data((4, 8, 8, 3)), _training_data((4, 2), seed=1), verbose=0)
    return model


def _expected(model: Any, names: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """Layer -> its weight names, mapped to what ``get_layer(...).get_weights()`` returns, in order."""
    expected: dict[str, np.ndarray] = {}
    for layer, weights in names.items():
        values = model.get_layer(layer).get_weights()
        assert len(values) == len(weights)
        expected.update({f"{layer}/{weight}": value for weight, value in zip(weights, values, strict=True)})
    return expected


def _assert_reads(path: Path, expected: dict[str, np.ndarray]) -> ws.Checkpoint:
    ckpt = ws.open(path)
    assert ckpt.format == "keras"
    assert [name for name in ckpt if not name.startswith("optimizer/")] == list(expected)
    for name, value in expected.items():
        assert_same_tensor(ckpt[name], value)
    return ckpt


DENSE = {"layer1": ["kernel", "bias"], "layer2": ["kernel", "bias"]}
CNN_NAMED = {"conv1": ["kernel", "bias"], "bn": ["gamma", "moving_mean", "moving_variance"], "out": ["kernel", "bias"]}


@pytest.mark.parametrize("save", ["model", "weights"])
def test_legacy_h5_reads_as_get_weights(tmp_path: Path, save: str) -> None:
    tf_keras = _tf_keras()
    for model, names in ((_trained_dense(tf_keras), DENSE), (_trained_cnn(tf_keras), CNN_NAMED)):
        path = tmp_path / f"{model.name}.h5"
        (model.save if save == "model" else model.save_weights)(str(path))
        with _assert_reads(path, _expected(model, names)) as ckpt:
            first = next(iter(ckpt))
            assert ckpt.info(first).key.endswith(f"{first}:0")
            assert ckpt.resolve(f"{first.split('/')[0]}/weight") == first
            optimizer = [name for name in ckpt if name.startswith("optimizer/")]
            assert bool(optimizer) == (save == "model")
            assert all(ckpt.role(name).kind == "optimizer" for name in optimizer)
            if save == "model":
                assert "model_config" in ckpt.metadata


def test_keras3_weights_h5_names_vars_by_layer(tmp_path: Path) -> None:
    keras = _keras3()
    model = _trained_cnn(keras)
    path = tmp_path / "cnn.weights.h5"
    model.save_weights(path)
    by_index = {layer: [f"vars/{index}" for index in range(len(names))] for layer, names in CNN_NAMED.items()}
    with _assert_reads(path, _expected(model, by_index)) as ckpt:
        optimizer = [name for name in ckpt if name.startswith("optimizer/")]
        assert optimizer == [f"optimizer/vars/{index}" for index in range(len(model.optimizer.variables))]
        assert all(ckpt.role(name).kind == "optimizer" for name in optimizer)
        for name, variable in zip(optimizer, model.optimizer.variables, strict=True):
            assert_same_tensor(ckpt[name], variable.numpy())


@pytest.mark.parametrize(("make", "names"), [(_trained_dense, DENSE), (_trained_cnn, CNN_NAMED)])
def test_keras_zip_names_vars_from_its_config(tmp_path: Path, make: Any, names: dict[str, list[str]]) -> None:
    model = make(_keras3())
    path = tmp_path / "model.keras"
    model.save(path)
    with _assert_reads(path, _expected(model, names)) as ckpt:
        assert "config.json" in ckpt.metadata
        assert [name for name in ckpt if name.startswith("optimizer/")]


def test_keras_zip_deflated_reads_the_same(tmp_path: Path) -> None:
    model = _trained_dense(_keras3())
    stored = tmp_path / "model.keras"
    model.save(stored)
    deflated = tmp_path / "deflated.keras"
    with zipfile.ZipFile(stored) as source, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as target:
        for entry in source.infolist():
            target.writestr(entry.filename, source.read(entry))
    _assert_reads(deflated, _expected(model, DENSE)).close()


def test_layers_command_shows_the_two_dense_layers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "w.h5"
    _trained_dense(_tf_keras()).save_weights(str(path))
    assert main(["layers", "--json", str(path)]) == 0
    layers = json.loads(capsys.readouterr().out)
    assert [layer["layer"] for layer in layers] == ["layer1", "layer2"]
    shapes = [(layer["parameters"]["weight"]["shape"], layer["parameters"]["bias"]["shape"]) for layer in layers]
    assert shapes == [([2, 5], [5]), ([5, 2], [2])]


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_broken_h5_is_a_typed_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str) -> None:
    whole = tmp_path / "whole.h5"
    _trained_dense(_tf_keras()).save(str(whole))
    path = tmp_path / "broken.h5"
    data = whole.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not an HDF5 file at all")
    with pytest.raises(CorruptCheckpointError, match=r"broken\.h5"):
        ws.open(path)
    assert main(["ls", str(path)]) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "broken.h5" in err and "Traceback" not in err


def test_zip_without_weights_is_not_keras(tmp_path: Path) -> None:
    path = tmp_path / "other.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "{}")
    with pytest.raises(UnsupportedFormatError, match=r"model\.weights\.h5"):
        ws.open(path)


def test_chunked_compressed_datasets_are_read_by_h5py(tmp_path: Path) -> None:
    model = _trained_dense(_tf_keras())
    plain = tmp_path / "plain.h5"
    model.save_weights(str(plain))
    path = tmp_path / "gzip.h5"
    with h5py.File(plain) as source, h5py.File(path, "w") as target:
        target.attrs.update(source.attrs)
        for layer in ("layer1", "layer2"):
            target.create_group(layer).attrs.update(source[layer].attrs)
            for weight in source[layer].attrs["weight_names"]:
                target[layer].create_dataset(weight, data=source[layer][weight][()], compression="gzip", chunks=True)
    with _assert_reads(path, _expected(model, DENSE)) as ckpt:
        assert all(info.offset == -1 for info in ckpt.infos())


def test_bfloat16_variables_keep_their_type(tmp_path: Path) -> None:
    keras = _keras3()
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, name="half", dtype="bfloat16")], name="bf")
    path = tmp_path / "bf.weights.h5"
    model.save_weights(path)
    with ws.open(path) as ckpt:
        for index, value in enumerate(model.get_layer("half").get_weights()):
            ours = ckpt[f"half/vars/{index}"]
            assert ours.dtype == ml_dtypes.bfloat16 and ckpt.info(f"half/vars/{index}").type_name == "bfloat16"
            assert ours.tobytes() == np.asarray(value, ml_dtypes.bfloat16).tobytes()


def test_missing_h5py_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "w.h5"
    _trained_dense(_tf_keras()).save_weights(str(path))
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(UnsupportedFormatError, match=r"pip install 'weightscope\[keras\]'"):
        ws.open(path)
