"""Keras HDF5 files, written by tf-keras and Keras 3 and read back by weightscope as ``get_weights()`` gives them."""

from __future__ import annotations

import io
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
from weightscope.errors import ChecksumMismatchError, CorruptCheckpointError, UnsupportedFormatError
from weightscope.formats.keras_writer import save


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


@pytest.mark.parametrize("kind", ["adam", "legacy adam", "rmsprop"])
def test_legacy_h5_attaches_optimizer_weights_by_name(tmp_path: Path, kind: str) -> None:
    tf_keras = _tf_keras()
    model = _two_dense_layers(tf_keras)
    optimizer = {
        "adam": tf_keras.optimizers.Adam(),
        "legacy adam": tf_keras.optimizers.legacy.Adam(),
        "rmsprop": tf_keras.optimizers.RMSprop(momentum=0.5),
    }[kind]
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(_training_data((8, 2)), _training_data((8, 2), seed=1), epochs=2, verbose=0)
    path = tmp_path / "model.h5"
    model.save(str(path))
    expected: dict[str, tuple[str, str, Any]] = {}  # tensor -> (owner, slot, value), from tf-keras' own bookkeeping
    for variable in model.trainable_variables:
        owner = variable.name.removesuffix(":0")
        if kind == "legacy adam":
            slots = {slot: optimizer.get_slot(variable, slot) for slot in optimizer.get_slot_names()}
        else:
            index = optimizer._index_dict[optimizer._var_key(variable)]
            lists = {"m": "_momentums", "v": "_velocities"} if kind == "adam" else {"velocity": "_velocities"}
            slots = {slot: getattr(optimizer, attribute)[index] for slot, attribute in lists.items()}
            slots |= {"momentum": optimizer._momentums[index]} if kind == "rmsprop" else {}
        for slot, state in slots.items():
            expected[f"optimizer/{state.name.removesuffix(':0')}"] = (owner, slot, state.numpy())
    assert len(expected) == 2 * len(model.trainable_variables)
    with ws.open(path) as ckpt:
        for name, (owner, slot, value) in expected.items():
            role = ckpt.role(name)
            assert (role.kind, role.role, role.owner) == ("optimizer", slot, owner)
            assert_same_tensor(ckpt[name], value)
        owned = {name for name in ckpt if ckpt.role(name).owner is not None}
        assert owned == set(expected)  # iterations and hyperparameters belong to no variable
        assert {layer.name: sorted(layer.optimizer_state) for layer in ckpt.layers().values()} == {
            "layer1": ["layer1/bias", "layer1/kernel"],
            "layer2": ["layer2/bias", "layer2/kernel"],
        }


def test_keras3_weights_h5_names_vars_by_layer(tmp_path: Path) -> None:
    keras = _keras3()
    model = _trained_cnn(keras)
    path = tmp_path / "cnn.weights.h5"
    model.save_weights(path)
    # Named as Keras 3 names them, by the class each group is named after (layers/conv2d, layers/dense);
    # a BatchNormalization without one of gamma and beta could be either: its variables keep their index.
    names = CNN_NAMED | {"bn": [f"vars/{index}" for index in range(3)]}
    with _assert_reads(path, _expected(model, names)) as ckpt:
        optimizer = [name for name in ckpt if name.startswith("optimizer/")]
        assert optimizer == [f"optimizer/vars/{index}" for index in range(len(model.optimizer.variables))]
        assert all(ckpt.role(name).kind == "optimizer" for name in optimizer)
        for name, variable in zip(optimizer, model.optimizer.variables, strict=True):
            assert_same_tensor(ckpt[name], variable.numpy())
        # BatchNorm's moving statistics are not trained, and without a config nothing here says which they are:
        # the optimizer's slots outnumber no layout, so they are left unattached.
        assert all(ckpt.role(name).owner is None for name in optimizer)
        assert not any(layer.optimizer_state for layer in ckpt.layers().values())


def _keras3_slots(model: Any, owner_of: Any) -> dict[str, tuple[str, np.ndarray, int]]:
    """``optimizer/<parameter>/<slot>`` -> (parameter, value, index in ``optimizer.variables``) from Keras' own
    lists: the optimizer keeps each slot's variables in lists indexed by ``_get_variable_index(variable)``."""
    optimizer = model.optimizer
    lists = {
        slot: getattr(optimizer, attribute)
        for slot, attribute in (("momentum", "_momentums"), ("velocity", "_velocities"), ("momentum", "momentums"))
        if getattr(optimizer, attribute, None)
    }
    position = {id(variable): index for index, variable in enumerate(optimizer.variables)}
    expected = {}
    for variable in model.trainable_variables:
        owner = owner_of(model, variable)
        for slot, values in lists.items():
            value = values[optimizer._get_variable_index(variable)]
            expected[f"optimizer/{owner}/{slot}"] = (owner, value.numpy(), position[id(value)])
    assert len(expected) == len(optimizer.variables) - 2  # all but iteration and learning_rate
    return expected


def _by_weight_name(model: Any, variable: Any) -> str:
    return variable.path.split("/", 1)[1]  # sequential/layer1/kernel -> layer1/kernel


def _assert_slots(ckpt: ws.Checkpoint, expected: dict[str, tuple[str, np.ndarray, int]]) -> None:
    names = [name for name in ckpt if name.startswith("optimizer/")]
    assert names[:2] == ["optimizer/iteration", "optimizer/learning_rate"]
    assert sorted(names[2:]) == sorted(expected)
    for name, (owner, value, index) in expected.items():
        role = ckpt.role(name)
        assert (role.kind, role.role, role.owner) == ("optimizer", name.rpartition("/")[2], owner)
        assert ckpt.info(name).key == f"optimizer/vars/{index}"
        assert ckpt.info(f"optimizer/vars/{index}").name == name  # the stored name still reaches it
        assert_same_tensor(ckpt[name], value)
    attached = {
        (owner, slot, info.name)
        for layer in ckpt.layers().values()
        for owner, slots in layer.optimizer_state.items()
        for slot, info in slots.items()
    }
    assert attached == {(owner, name.rpartition("/")[2], name) for name, (owner, _, _) in expected.items()}


def test_keras3_weights_h5_attaches_adam_state_when_every_variable_is_trained(tmp_path: Path) -> None:
    model = _trained_dense(_keras3())
    path = tmp_path / "dense.weights.h5"
    model.save_weights(path)
    with ws.open(path) as ckpt:
        _assert_slots(ckpt, _keras3_slots(model, _by_weight_name))


@pytest.mark.parametrize(("make", "names"), [(_trained_dense, DENSE), (_trained_cnn, CNN_NAMED)])
def test_keras_zip_names_vars_from_its_config(tmp_path: Path, make: Any, names: dict[str, list[str]]) -> None:
    model = make(_keras3())
    path = tmp_path / "model.keras"
    model.save(path)
    with _assert_reads(path, _expected(model, names)) as ckpt:
        assert "config.json" in ckpt.metadata
        _assert_slots(ckpt, _keras3_slots(model, _by_weight_name))


def test_keras_zip_sgd_momentum_skips_a_frozen_layer(tmp_path: Path) -> None:
    keras = _keras3()
    model = _trained_cnn(keras)  # built; now train again with conv1 frozen and a fresh optimizer
    model.get_layer("conv1").trainable = False
    model.compile(optimizer=keras.optimizers.SGD(momentum=0.9), loss="mse")
    model.fit(_training_data((4, 8, 8, 3)), _training_data((4, 2), seed=1), verbose=0)
    path = tmp_path / "frozen.keras"
    model.save(path)
    expected = _keras3_slots(model, _by_weight_name)
    assert sorted(owner for owner, _, _ in expected.values()) == ["bn/gamma", "out/bias", "out/kernel"]
    with ws.open(path) as ckpt:
        _assert_slots(ckpt, expected)


def test_keras_zip_whose_config_does_not_fit_leaves_state_unattached(tmp_path: Path) -> None:
    model = _trained_dense(_keras3())
    saved = tmp_path / "model.keras"
    model.save(saved)
    path = tmp_path / "amsgrad.keras"  # the config claims a third slot per variable the file does not hold
    with zipfile.ZipFile(saved) as source, zipfile.ZipFile(path, "w") as target:
        for entry in source.infolist():
            data = source.read(entry)
            if entry.filename == "config.json":
                config = json.loads(data)
                config["compile_config"]["optimizer"]["config"]["amsgrad"] = True
                data = json.dumps(config).encode()
            target.writestr(entry.filename, data)
    with ws.open(path) as ckpt:
        optimizer = [name for name in ckpt if name.startswith("optimizer/")]
        assert optimizer == [f"optimizer/vars/{index}" for index in range(len(model.optimizer.variables))]
        assert all(ckpt.role(name).owner is None for name in optimizer)
        assert not any(layer.optimizer_state for layer in ckpt.layers().values())


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
        for weight, value in zip(("kernel", "bias"), model.get_layer("half").get_weights(), strict=True):
            ours = ckpt[f"half/{weight}"]
            assert ours.dtype == ml_dtypes.bfloat16 and ckpt.info(f"half/{weight}").type_name == "bfloat16"
            assert ours.tobytes() == np.asarray(value, ml_dtypes.bfloat16).tobytes()


def test_missing_h5py_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "w.h5"
    _trained_dense(_tf_keras()).save_weights(str(path))
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(UnsupportedFormatError, match=r"pip install 'weightscope\[keras\]'"):
        ws.open(path)


def _legacy_weights_file() -> bytes:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as file:
        file.attrs["layer_names"] = np.array([b"dense"], "S5")
        group = file.create_group("dense")
        group.attrs["weight_names"] = np.array([b"dense/kernel:0"], "S14")
        group["dense/kernel:0"] = np.ones(2, np.float32)
    return buffer.getvalue()


def test_damaged_hdf5_metadata_h5py_raises_typeerror_for_is_corrupt(tmp_path: Path) -> None:
    # Found by mutating .h5 files: h5py raises TypeError ("Unknown string encoding (value 4)")
    # for a string datatype whose character set is not ASCII or UTF-8.
    data = bytearray(_legacy_weights_file())
    string_type = data.index(b"\x13\x01\x00\x00\x05\x00\x00\x00")  # version 1, class 3 (string), 5 bytes
    data[string_type + 1] |= 0x40  # character set 4
    path = tmp_path / "cset.h5"
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match="Unknown string encoding"):
        ws.open(path)


def test_object_names_that_are_not_utf8_are_corrupt(tmp_path: Path) -> None:
    # Found by mutating .h5 files: h5py hands such names to visititems as bytes (a TypeError then).
    path = tmp_path / "names.weights.h5"
    with h5py.File(path, "w") as file:
        file.create_group(b"layers/\xff\xfe/vars")["0"] = np.ones(2, np.float32)
    with pytest.raises(CorruptCheckpointError, match="not UTF-8"):
        ws.open(path)


def _keras_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _weights_h5(tmp_path: Path) -> bytes:
    path = tmp_path / "w.weights.h5"
    save({"dense/kernel": np.arange(6, dtype=np.float32).reshape(3, 2), "dense/bias": np.ones(2, np.float32)}, path)
    return path.read_bytes()


def test_keras_zip_members_are_checked_against_their_crc(tmp_path: Path) -> None:
    weights = _weights_h5(tmp_path)
    path = _keras_zip(tmp_path / "m.keras", {"config.json": b"{}", "model.weights.h5": weights})
    data = bytearray(path.read_bytes())
    data[data.index(weights) + len(weights) - 100] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match=r"model\.weights\.h5"):
        ws.open(path)
    with ws.open(path, verify=False) as checkpoint:  # as before: h5py reads what is there
        assert set(checkpoint) == {"dense/kernel", "dense/bias"}


@pytest.mark.parametrize("name", ["../evil.sh", "assets/../../evil", "/etc/evil"])
def test_keras_zip_member_leaving_the_archive_is_corrupt(tmp_path: Path, name: str) -> None:
    members = {"config.json": b"{}", "model.weights.h5": _weights_h5(tmp_path), name: b"echo"}
    with pytest.raises(CorruptCheckpointError, match="outside the archive"):
        ws.open(_keras_zip(tmp_path / "m.keras", members))


@pytest.mark.parametrize("chunked", [True, False], ids=["chunks never written", "contiguous, never written"])
def test_a_dataset_claiming_far_more_than_it_stores_is_refused_before_reading(tmp_path: Path, chunked: bool) -> None:
    # Found reviewing the h5py path: an 8 KB file with a chunked dataset of shape (2^40,) made
    # h5py allocate 4 TiB (MemoryError); 2^28 floats would have been allocated and filled.
    path = tmp_path / "bomb.weights.h5"
    with h5py.File(path, "w") as file:
        variables = file.create_group("layers/dense/vars")
        if chunked:
            variables.create_dataset("0", shape=(2**40,), dtype="f4", chunks=(2**20,), compression="gzip")
        else:
            variables.create_dataset("0", shape=(2**28,), dtype="f4")
    with pytest.raises(ws.LimitExceededError, match="WEIGHTSCOPE_MAX_EXPANSION"):
        ws.open(path)
    with h5py.File(path, "a") as file:  # a modest ratio is read
        file.create_dataset("small", data=np.zeros((256, 256), np.float32), chunks=(64, 64), compression="gzip")
        del file["layers/dense/vars/0"]
        file["layers/dense/vars/0"] = file["small"]
        del file["small"]
    with ws.open(path) as checkpoint:
        assert checkpoint["dense/kernel"].shape == (256, 256)
