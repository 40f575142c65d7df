"""The Keras writer: ``.weights.h5`` files that Keras 3's ``load_weights`` takes, checked against Keras itself."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import ml_dtypes
import numpy as np
import pytest
from conftest import assert_same_tensor
from tf_fixtures import _keras3, _tf

import weightscope as ws
from weightscope.convert import convert
from weightscope.errors import UnsupportedFormatError, UsageError
from weightscope.formats import keras_writer as keras_format


def _cnn(keras: Any) -> Any:
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((6, 6, 3)),
            layers.Conv2D(4, 3, name="conv1"),
            layers.BatchNormalization(name="bn1"),
            layers.Flatten(name="flat"),
            layers.Dense(3, name="dense1"),
        ],
        name="cnn",
    )


def _text(keras: Any) -> Any:
    layers = keras.layers
    inputs = keras.Input((5,), dtype="int32")
    x = layers.Embedding(10, 4, name="embedding")(inputs)
    x = layers.LayerNormalization(name="norm")(x)
    x = layers.Dense(3, name="dense")(x)
    return keras.Model(inputs, x, name="text")


def _separable(keras: Any) -> Any:
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((7, 7, 3)),
            layers.DepthwiseConv2D(3, depth_multiplier=2, name="depthwise_conv2d"),
            layers.SeparableConv2D(5, 2, name="sep"),
            layers.Conv2DTranspose(2, 2, name="up_conv2d_transpose"),
            layers.Flatten(),
        ],
        name="separable",
    )


MODELS: dict[str, tuple[Callable[[Any], Any], Callable[[np.random.Generator], np.ndarray]]] = {
    "cnn": (_cnn, lambda rng: rng.normal(0, 1, (2, 6, 6, 3)).astype(np.float32)),
    "text": (_text, lambda rng: rng.integers(0, 10, (2, 5)).astype(np.int32)),
    "separable": (_separable, lambda rng: rng.normal(0, 1, (2, 7, 7, 3)).astype(np.float32)),
}


def _randomised(name: str) -> tuple[Any, np.ndarray]:
    """The model with random weights (variances positive), and an input for it."""
    build, inputs = MODELS[name]
    model = build(_keras3())
    rng = np.random.default_rng(7)
    for variable in model.weights:
        value = rng.normal(0, 1, tuple(variable.shape)).astype(variable.dtype)
        variable.assign(np.abs(value) + 0.5 if "variance" in variable.path else value)
    return model, inputs(rng)


def _keyed(model: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """The model's variables as ``[<prefix>/]<layer>/<variable>`` -> value."""
    return {
        f"{prefix}{layer.name}/{weight.name}": np.asarray(weight.numpy())
        for layer in model.layers
        for weight in layer.weights
    }


def _write(route: str, model: Any, path: Path) -> None:
    if route == "convert":  # a TF checkpoint of the model, converted
        prefix = _tf().train.Checkpoint(model=model).write(str(path.parent / "tf" / "ckpt"))
        convert(prefix, path)
    else:  # weightscope.save of its variables, under the model's name
        ws.save(_keyed(model, f"{model.name}/"), path, format="keras")


def _assert_loads(model: Any, fresh: Any, inputs: np.ndarray) -> None:
    """``fresh`` holds the same weights, bit for bit, and computes the same outputs."""
    assert len(fresh.weights) == len(model.weights)
    for ours, theirs in zip(fresh.weights, model.weights, strict=True):
        assert ours.path == theirs.path
        assert_same_tensor(ours.numpy(), theirs.numpy())
    np.testing.assert_array_equal(np.asarray(fresh(inputs)), np.asarray(model(inputs)))


def _contents(path: Path) -> tuple[dict[str, tuple[str, tuple[int, ...], bytes]], set[tuple[str, str]]]:
    """The file's datasets (path -> dtype, shape, bytes) and its groups (path, ``name`` attribute)."""
    datasets: dict[str, tuple[str, tuple[int, ...], bytes]] = {}
    groups: set[tuple[str, str]] = set()

    def visit(key: str, item: Any) -> None:
        if isinstance(item, h5py.Dataset):
            datasets[key] = (item.dtype.str, item.shape, item[()].tobytes())
        else:
            groups.add((key, str(item.attrs.get("name"))))

    with h5py.File(path, "r") as file:
        file.visititems(visit)
    return datasets, groups


@pytest.mark.parametrize("route", ["convert", "save"])
@pytest.mark.parametrize("model_name", ["cnn", "text", "separable"])
def test_keras_loads_what_is_written(tmp_path: Path, model_name: str, route: str) -> None:
    model, inputs = _randomised(model_name)
    path = tmp_path / "m.weights.h5"
    _write(route, model, path)
    fresh = MODELS[model_name][0](_keras3())
    fresh.load_weights(path)
    _assert_loads(model, fresh, inputs)
    # The datasets Keras itself writes, at the same paths, with the same types and bytes.
    model.save_weights(tmp_path / "keras.weights.h5")
    assert _contents(path)[0] == _contents(tmp_path / "keras.weights.h5")[0]


@pytest.mark.parametrize("model_name", ["cnn", "text"])
def test_reads_back_what_it_wrote(tmp_path: Path, model_name: str) -> None:
    model, _ = _randomised(model_name)
    for prefix in ("", f"{model.name}/"):
        written = _keyed(model, prefix)
        path = ws.save(written, tmp_path / f"{prefix.strip('/') or 'plain'}.weights.h5", format="keras")
        with ws.open(path) as ckpt:
            assert ckpt.format == "keras"
            assert sorted(ckpt) == sorted(written)
            for name, value in written.items():
                assert_same_tensor(ckpt[name], value)


def test_layers_sharing_a_class_are_placed_by_the_given_order(tmp_path: Path) -> None:
    keras = _keras3()

    def build() -> Any:
        layers = keras.layers
        return keras.Sequential(
            [keras.Input((4,)), layers.Dense(3, name="b"), layers.Dropout(0.1), layers.Dense(3, name="a")], name="mlp"
        )

    model = build()
    for variable in model.weights:
        variable.assign(np.random.default_rng(len(variable.path)).normal(0, 1, tuple(variable.shape)))
    tensors = _keyed(model, "mlp/")  # the prefix is the model's name
    with pytest.raises(UsageError, match="their order in the model"):
        keras_format.save(tensors, tmp_path / "m.weights.h5")
    assert list(tmp_path.iterdir()) == []
    order = {layer.name: type(layer).__name__ for layer in model.layers}
    path = keras_format.save(dict(sorted(tensors.items())), tmp_path / "m.weights.h5", layers=order)
    fresh = build()
    fresh.load_weights(path)
    _assert_loads(model, fresh, np.ones((2, 4), np.float32))
    model.save_weights(tmp_path / "keras.weights.h5")
    ours, theirs = _contents(path), _contents(tmp_path / "keras.weights.h5")
    assert ours == theirs  # the weightless layers' and the model's vars groups too


def test_bfloat16_is_written_as_keras_writes_it(tmp_path: Path) -> None:
    keras = _keras3()

    def build() -> Any:
        return keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, name="half", dtype="bfloat16")], name="bf")

    model = build()
    model.get_layer("half").kernel.assign(np.arange(6, dtype=np.float32).reshape(2, 3) / 7)
    tensors = {name: value.astype(ml_dtypes.bfloat16) for name, value in _keyed(model).items()}
    path = ws.save(tensors, tmp_path / "bf.weights.h5", format="keras")
    fresh = build()
    fresh.load_weights(path)
    _assert_loads(model, fresh, np.ones((1, 2), np.float32))
    model.save_weights(tmp_path / "keras.weights.h5")
    with h5py.File(path, "r") as ours, h5py.File(tmp_path / "keras.weights.h5", "r") as theirs:
        for key in ("layers/dense/vars/0", "layers/dense/vars/1"):
            assert ours[key].dtype == theirs[key].dtype and dict(ours[key].attrs) == dict(theirs[key].attrs)


class _FailingTensors:
    """Tensors whose second array cannot be read."""

    def __init__(self, tensors: dict[str, np.ndarray]) -> None:
        self._tensors = tensors

    def names(self) -> list[str]:
        return list(self._tensors)

    def spec(self, name: str) -> tuple[np.dtype, tuple[int, ...]]:
        return self._tensors[name].dtype, self._tensors[name].shape

    def array(self, name: str) -> np.ndarray:
        if name == "dense/bias":
            raise OSError("the source went away")
        return self._tensors[name]


KERNEL = np.ones((2, 3), np.float32)
BIAS = np.ones(3, np.float32)


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({"kernel": KERNEL}, "'kernel': not <layer>/<variable>"),
        ({"a/b/dense/kernel": KERNEL}, "nested models"),
        ({"dense/kernel": KERNEL, "dense/weird": BIAS}, "layer 'dense' holds"),
        ({"lstm/kernel": KERNEL, "lstm/recurrent_kernel": KERNEL}, "layer 'lstm' holds"),
        ({"dense/vars/0": KERNEL}, "named by its index"),
        ({"dense/kernel": KERNEL, "optimizer/iteration": np.int64(1)}, "optimizer state"),
        ({"a/dense/kernel": KERNEL, "b/out/kernel": KERNEL}, "several models"),
        ({"dense/kernel": KERNEL.astype(np.complex64)}, "'dense/kernel': a Keras weights file holds no complex64"),
        ({"dense/kernel": KERNEL.astype(ml_dtypes.float8_e4m3fn)}, "'dense/kernel': .* holds no float8_e4m3fn"),
        ({"dense/kernel": np.array([["a"]], dtype=object)}, "'dense/kernel': .* holds no object"),
        ({"up_transpose/kernel": np.ones((3, 3, 2, 4), np.float32), "up_transpose/bias": BIAS}, "fits no Keras"),
    ],
    ids=[
        "no-layer",
        "nested",
        "unknown-variable",
        "unknown-layer",
        "index-names",
        "optimizer",
        "two-models",
        "complex64",
        "float8",
        "object",
        "transpose-contradicted",
    ],
)
def test_refusals_leave_nothing(tmp_path: Path, tensors: dict[str, Any], message: str) -> None:
    # A type Keras cannot hold is unsupported (exit 5); the rest are usage errors (2).
    error = UnsupportedFormatError if "holds no" in message else UsageError
    with pytest.raises(error, match=message) as caught:
        ws.save(tensors, tmp_path / "m.weights.h5", format="keras")
    assert type(caught.value) is error
    assert list(tmp_path.iterdir()) == []


def test_a_failure_while_writing_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="went away"):
        keras_format.save(_FailingTensors({"dense/kernel": KERNEL, "dense/bias": BIAS}), tmp_path / "m.weights.h5")
    assert list(tmp_path.iterdir()) == []


def test_missing_h5py_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(UnsupportedFormatError, match=r"pip install 'weightscope\[keras\]'"):
        ws.save({"dense/kernel": KERNEL}, tmp_path / "m.weights.h5", format="keras")
    assert list(tmp_path.iterdir()) == []
