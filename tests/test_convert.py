"""weightscope convert: weights moved between frameworks give the same network, bit for bit where kept."""

from __future__ import annotations

import json
import os
import re
import textwrap
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors
import safetensors.numpy
import torch
from conftest import assert_same_tensor, killed_while_writing
from tf_fixtures import _keras3, _tf

import weightscope as ws
from weightscope.cli import main
from weightscope.convert import convert
from weightscope.renames import Renames

RNG = np.random.default_rng(7)
# The seed's Sequential in PyTorch: Linear(2, 5), Sigmoid, Linear(5, 2), Sigmoid. The
# converted names are the TF layers'; this is the key map the README shows.
SEED_KEY_MAP = {
    "layer1.weight": "0.weight",
    "layer1.bias": "0.bias",
    "layer2.weight": "2.weight",
    "layer2.bias": "2.bias",
}


def _random(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def test_seed_converted_to_pytorch_gives_the_tensorflow_outputs(
    tf_checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = tf_checkpoints["seed"]
    out = tmp_path / "seed.pt"
    args = ["convert", str(prefix), str(out), "--to", "pytorch", "--layout", "pytorch", "--names", "pytorch"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "layer1/kernel  layer1.weight  [5, 2]  dense [1, 0]" in printed
    assert "left out: 10 optimizer state" in printed
    state = torch.load(out, weights_only=True)
    assert sorted(state) == sorted(SEED_KEY_MAP)
    network = torch.nn.Sequential(torch.nn.Linear(2, 5), torch.nn.Sigmoid(), torch.nn.Linear(5, 2), torch.nn.Sigmoid())
    network.load_state_dict({SEED_KEY_MAP[name]: value for name, value in state.items()})
    tf = _tf()
    reader = tf.train.load_checkpoint(str(prefix))
    inputs = _random(64, 2)
    hidden = tf.sigmoid(tf.matmul(inputs, reader.get_tensor("layer1/kernel")) + reader.get_tensor("layer1/bias"))
    expected = tf.sigmoid(tf.matmul(hidden, reader.get_tensor("layer2/kernel")) + reader.get_tensor("layer2/bias"))
    with torch.no_grad():
        outputs = network(torch.from_numpy(inputs)).numpy()
    np.testing.assert_allclose(outputs, expected.numpy(), rtol=1e-6, atol=1e-7)


def test_convert_summarises_what_it_wrote_and_lists_it_all_with_verbose(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A row per tensor fills a screen (102 for a ResNet-18): five (each layout's first among them), then counts;
    --verbose lists all."""
    tensors = {f"features.{i}.weight": _random(4, 3, 3, 3) for i in range(8)} | {"head.weight": _random(2, 4)}
    source = ws.save(tensors, tmp_path / "in.safetensors")
    args = ["--layout", "tensorflow", "--names", "tensorflow"]
    assert main(["convert", str(source), str(tmp_path / "json" / "model.ckpt"), *args, "--json"]) == 0
    written = json.loads(capsys.readouterr().out)["tensors"]  # every tensor, as before
    assert len(written) == 9
    layouts: dict[str, int] = {}
    for tensor in written:
        layouts[tensor["layout"]] = layouts.get(tensor["layout"], 0) + 1
    assert main(["convert", str(source), str(tmp_path / "short" / "model.ckpt"), *args]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split()[0] for line in lines[2 : lines.index("4 more: --verbose lists every tensor")]]
    assert rows == [tensor["source"] for tensor in written[:4]] + ["head.weight"]  # each layout's first, in order
    counted = ", ".join(f"{count} {layout}" for layout, count in sorted(layouts.items()))
    assert f"layouts: {counted}" in lines and counted == "8 convolution 2D [2, 3, 1, 0], 1 dense [1, 0]"
    assert "renamed: 9 of 9 tensors (to tensorflow's names)" in lines
    assert main(["convert", str(source), str(tmp_path / "all" / "model.ckpt"), *args, "--verbose"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[2:11]] == [tensor["source"] for tensor in written]
    assert lines[11].startswith("wrote 9 tensors") and not any("--verbose" in line for line in lines)


class _ToChannelsLast(torch.nn.Module):
    """Keras flattens NHWC feature maps: a PyTorch twin must flatten in the same order."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1)


def test_keras_cnn_with_batchnorm_converted_to_pytorch_modules(tmp_path: Path) -> None:
    keras = _keras3()
    tf = _tf()
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(8, 3, name="conv1"),
            keras.layers.BatchNormalization(name="bn1"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(4, name="dense1"),
        ],
        name="cnn",
    )
    for layer in model.layers:  # every weight random, the variances positive
        layer.set_weights([_random(*w.shape) ** (2 if "variance" in w.path else 1) for w in layer.weights])
    prefix = tf.train.Checkpoint(model=model).write(str(tmp_path / "keras" / "ckpt"))
    out = tmp_path / "cnn.pt"
    result = convert(prefix, out, layout="pytorch", names="pytorch", renames=Renames.parse(strip_prefix="cnn."))
    assert {tensor.source: tensor.name for tensor in result.tensors} == {
        "cnn/conv1/kernel": "conv1.weight",
        "cnn/conv1/bias": "conv1.bias",
        "cnn/bn1/gamma": "bn1.weight",
        "cnn/bn1/beta": "bn1.bias",
        "cnn/bn1/moving_mean": "bn1.running_mean",
        "cnn/bn1/moving_variance": "bn1.running_var",
        "cnn/dense1/kernel": "dense1.weight",
        "cnn/dense1/bias": "dense1.bias",
    }
    network = torch.nn.Sequential(
        OrderedDict(
            conv1=torch.nn.Conv2d(3, 8, 3),
            bn1=torch.nn.BatchNorm2d(8, eps=1e-3),  # Keras's default epsilon
            nhwc=_ToChannelsLast(),
            flatten=torch.nn.Flatten(),
            dense1=torch.nn.Linear(288, 4),
        )
    )
    network.load_state_dict(torch.load(out, weights_only=True))  # strict; BatchNorm fills in num_batches_tracked
    network.eval()
    inputs = _random(5, 8, 8, 3)
    expected = model(inputs, training=False).numpy()
    with torch.no_grad():
        outputs = network(torch.from_numpy(inputs).permute(0, 3, 1, 2)).numpy()
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-4)


def _keras_layer_case(kind: str) -> tuple[Any, tuple[int, ...], Any]:
    """A Keras 3 layer, its input shape, and the torch function computing the same from PyTorch weights."""
    keras = _keras3()
    functional = torch.nn.functional
    cases: dict[str, tuple[Any, tuple[int, ...], Any]] = {
        "dense": (keras.layers.Dense(3, name="dense"), (4, 5), functional.linear),
        "conv1d": (keras.layers.Conv1D(3, 2, name="conv1d"), (2, 6, 4), functional.conv1d),
        "conv2d": (keras.layers.Conv2D(3, (2, 3), name="conv2d"), (2, 6, 5, 4), functional.conv2d),
        "conv3d": (keras.layers.Conv3D(3, 2, name="conv3d"), (2, 4, 5, 3, 2), functional.conv3d),
        "conv1d_transpose": (keras.layers.Conv1DTranspose(3, 2, name="t1"), (2, 6, 4), functional.conv_transpose1d),
        "conv2d_transpose": (
            keras.layers.Conv2DTranspose(3, (2, 3), name="t2"),
            (2, 5, 4, 4),
            functional.conv_transpose2d,
        ),
        "conv3d_transpose": (
            keras.layers.Conv3DTranspose(3, 2, name="t3"),
            (2, 3, 4, 3, 2),
            functional.conv_transpose3d,
        ),
        "depthwise_conv2d": (
            keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="depthwise_conv2d"),
            (2, 6, 6, 4),
            lambda x, weight, bias: functional.conv2d(x, weight, bias, groups=4),
        ),
    }
    return cases[kind]


@pytest.mark.parametrize(
    "kind",
    [
        "dense",
        "conv1d",
        "conv2d",
        "conv3d",
        "conv1d_transpose",
        "conv2d_transpose",
        "conv3d_transpose",
        "depthwise_conv2d",
    ],
)
def test_each_layer_kind_computes_the_same_in_pytorch_layout(kind: str, tmp_path: Path) -> None:
    layer, input_shape, torch_function = _keras_layer_case(kind)
    layer.build(input_shape)
    kernel, bias = _random(*layer.kernel.shape), _random(*layer.bias.shape)
    layer.set_weights([kernel, bias])
    inputs = _random(*input_shape)
    expected = np.asarray(layer(inputs))
    source = ws.save({f"{layer.name}/kernel": kernel, f"{layer.name}/bias": bias}, tmp_path / "tf" / "model.ckpt")
    convert(source, tmp_path / "torch" / "model.ckpt", layout="pytorch", names="pytorch")
    with ws.open(tmp_path / "torch" / "model.ckpt") as converted:
        weight, torch_bias = (
            torch.from_numpy(np.array(converted[f"{layer.name}.weight"])),
            converted[f"{layer.name}.bias"],
        )
        channels_first = torch.from_numpy(np.moveaxis(inputs, -1, 1))
        outputs = torch_function(channels_first, weight, torch.from_numpy(np.array(torch_bias))).numpy()
    np.testing.assert_allclose(np.moveaxis(outputs, 1, -1), expected, rtol=1e-5, atol=1e-5)
    # And back: the TensorFlow layout again, bit for bit (a depthwise kernel has no way back).
    if kind != "depthwise_conv2d":
        back = convert(tmp_path / "torch" / "model.ckpt", tmp_path / "back" / "model.ckpt", layout="tensorflow")
        with ws.open(back.destination) as restored:
            assert_same_tensor(restored[f"{layer.name}.weight"], kernel)


def test_ambiguous_tensors_are_kept_and_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tensors = {"lstm/kernel": _random(3, 8), "lstm/recurrent_kernel": _random(2, 8), "lstm/bias": _random(8)}
    source = ws.save(tensors, tmp_path / "model.ckpt")
    assert main(["convert", str(source), str(tmp_path / "out" / "model.ckpt"), "--layout", "pytorch", "--json"]) == 0
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert document["ambiguous"] == {
        "lstm/recurrent_kernel": "'recurrent_kernel' of rank 2 has no known pytorch layout"
    }
    assert {tensor["source"]: tensor["shape"] for tensor in document["tensors"]} == {
        "lstm/kernel": [8, 3],
        "lstm/recurrent_kernel": [2, 8],
        "lstm/bias": [8],
    }
    assert "kept as is: 'lstm/recurrent_kernel'" in captured.err
    assert "\r" not in captured.err  # no progress bar when stderr is not a terminal
    out = tmp_path / "out"  # the files moved into place, in that order: data, the index naming it, the state file
    assert document["files"] == [str(out / name) for name in ("model.ckpt.data-00000-of-00001", "model.ckpt.index")] + [
        str(out / "checkpoint")
    ]


def test_pytorch_names_map_to_tensorflow_names(tmp_path: Path) -> None:
    tensors = {
        "features.0.weight": _random(8, 3, 3, 3),
        "features.1.weight": _random(8),
        "features.1.bias": _random(8),
        "features.1.running_mean": _random(8),
        "features.1.running_var": _random(8),
        "features.1.num_batches_tracked": np.array(3, np.int64),
        "token_embedding.weight": _random(10, 4),
        "norm.weight": _random(4),
        "head.weight": _random(2, 4),
    }
    source = ws.save(tensors, tmp_path / "model.ckpt")
    result = convert(source, tmp_path / "tf" / "model.ckpt", layout="tensorflow", names="tensorflow")
    assert {tensor.source: (tensor.name, tensor.shape) for tensor in result.tensors} == {
        "features.0.weight": ("features/0/kernel", (3, 3, 3, 8)),
        "features.1.weight": ("features/1/gamma", (8,)),
        "features.1.bias": ("features/1/beta", (8,)),
        "features.1.running_mean": ("features/1/moving_mean", (8,)),
        "features.1.running_var": ("features/1/moving_variance", (8,)),
        "token_embedding.weight": ("token_embedding/embeddings", (10, 4)),
        "norm.weight": ("norm/gamma", (4,)),
        "head.weight": ("head/kernel", (4, 2)),
    }
    assert result.skipped == {"features.1.num_batches_tracked": "bookkeeping"}


def test_round_trip_tensorflow_safetensors_tensorflow_is_bit_exact(
    tf_checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    prefix = tf_checkpoints["keras3_cnn"]
    middle = convert(prefix, tmp_path / "cnn.safetensors", include_optimizer=True)
    assert middle.format == "safetensors"
    back = convert(middle.destination, tmp_path / "tf" / "ckpt", include_optimizer=True)
    tf = _tf()
    reader = tf.train.load_checkpoint(back.destination)
    with ws.open(prefix) as original:
        names = [name for name in original if original.role(name).kind != "bookkeeping"]
        assert sorted(reader.get_variable_to_shape_map()) == sorted(names)
        for name in names:
            assert_same_tensor(reader.get_tensor(name), original[name])


def test_round_trip_pytorch_tensorflow_pytorch_is_bit_exact(tmp_path: Path) -> None:
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.Linear(4, 2)
    )
    model[1].running_mean.uniform_()
    state = {name: value.clone() for name, value in model.state_dict().items()}
    state["half"] = torch.arange(6, dtype=torch.bfloat16).reshape(2, 3)
    torch.save(state, tmp_path / "model.pt")
    convert(tmp_path / "model.pt", tmp_path / "tf" / "model.ckpt", layout="tensorflow", names="tensorflow")
    convert(tmp_path / "tf" / "model.ckpt", tmp_path / "back.pt", layout="pytorch", names="pytorch")
    back = torch.load(tmp_path / "back.pt", weights_only=True)
    assert sorted(back) == sorted(name for name in state if not name.endswith("num_batches_tracked"))
    for name, value in back.items():
        assert value.dtype == state[name].dtype and torch.equal(value.view(torch.uint8), state[name].view(torch.uint8))


SLOW_CONVERT = """
import sys, time
from weightscope.convert import convert
from weightscope.renames import Renames

def slow(done, total, nbytes, total_bytes):
    if done == 2:
        print("writing", flush=True)
        time.sleep(60)

convert(sys.argv[1], sys.argv[2], progress=slow)
"""


@pytest.mark.parametrize("destination", ["model.ckpt", "model.safetensors", "model.pt", "model.npz"])
def test_killed_conversion_leaves_nothing_a_reader_accepts(tmp_path: Path, destination: str) -> None:
    source = ws.save({f"layer{i}/kernel": _random(256, 256) for i in range(4)}, tmp_path / "source" / "model.ckpt")
    out = tmp_path / "out" / destination
    with killed_while_writing(textwrap.dedent(SLOW_CONVERT), str(source), str(out)):
        pass
    visible = [path for path in (tmp_path / "out").iterdir() if not path.name.startswith(".")]
    assert visible == []
    with pytest.raises(ws.CheckpointNotFoundError):
        ws.open(out)


def test_refusals_leave_nothing_behind(tmp_path: Path, tf_checkpoints: dict[str, Path]) -> None:
    source = ws.save({"a/kernel": _random(2, 2), "a/weight": _random(2, 2)}, tmp_path / "in" / "model.ckpt")
    with pytest.raises(ws.UsageError, match=r"would both be named 'a\.weight'"):
        convert(source, tmp_path / "out" / "model.ckpt", names="pytorch")
    with pytest.raises(ws.UsageError, match="is the checkpoint being converted"):
        convert(source, source)
    with pytest.raises(ws.UsageError, match="is the checkpoint being converted"):
        convert(f"{source}.index", source)  # opened by its index, written at its prefix
    with pytest.raises(
        ws.UsageError, match=f"is a directory; give a file name such as {tmp_path / 'model.safetensors'}"
    ):
        convert(source, tmp_path, to="safetensors")  # the writer's output-path check, before the source is opened
    with pytest.raises(ws.UnsupportedFormatError, match="no tensors to convert; left out: 2 not matched by nothing"):
        convert(source, tmp_path / "out" / "model.ckpt", pattern="nothing*")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("shape", [(300, 200), (64, 64), (65, 4097)])
def test_large_kernels_are_transposed_tile_by_tile_exactly(tmp_path: Path, shape: tuple[int, int]) -> None:
    kernel = RNG.standard_normal(shape).astype(">f4")  # big-endian too: the tiles are written little-endian
    source = ws.save({"dense/kernel": kernel}, tmp_path / "tf" / "model.ckpt")
    convert(source, tmp_path / "out.safetensors", layout="pytorch", names="pytorch")
    with ws.open(tmp_path / "out.safetensors") as converted:
        assert_same_tensor(converted["dense.weight"], kernel.T.astype("<f4"))


# -- the destination's name, TensorFlow's state file, exit statuses --------------------------


def _torch_file(path: Path, **extra: torch.Tensor) -> Path:
    """A small model's state dict saved by torch."""
    torch.manual_seed(0)
    state = torch.nn.Sequential(torch.nn.Linear(2, 5), torch.nn.Linear(5, 2)).state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(OrderedDict({**state, **extra}), path)
    return path


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("r.onnx", "reads onnx files ending .onnx but does not write them"),
        ("r.gguf", "reads gguf files ending .gguf but does not write them"),
        ("r.h5", r"reads keras files ending \.h5 but does not write them \(its writer writes \.weights\.h5\)"),
        ("r.keras", "reads keras files ending .keras"),
        ("r.npy", "reads npy files"),
        ("r.safetensor", r"'\.safetensor' names no format weightscope writes \(did you mean \.safetensors\?\)"),
        ("r.v2", "'.v2' names no format weightscope writes;"),
        ("r.index", "a TensorFlow checkpoint is written at its prefix; give the name without .index"),
    ],
)
def test_a_destination_whose_name_names_no_writer_is_refused(
    tmp_path: Path, name: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _torch_file(tmp_path / "in" / "model.pt")
    out = tmp_path / "out"
    out.mkdir()
    assert main(["convert", str(source), str(out / name)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert re.search(says, err)
    assert ".safetensors, .npz, .pt/.pth/.bin (pytorch), .weights.h5 (keras)" in err and "--to" in err
    assert list(out.iterdir()) == []
    with pytest.raises(ws.UsageError, match=says):
        ws.save({"w": np.zeros(2, np.float32)}, out / name)
    assert list(out.iterdir()) == []


def test_tensorflow_is_written_at_a_bare_prefix_or_when_asked(tmp_path: Path) -> None:
    tf = _tf()
    source = _torch_file(tmp_path / "in" / "model.pt")
    for destination, to in [("ckpt-100", None), ("model.ckpt", None), ("model.ckpt-7", None), ("r.onnx", "tensorflow")]:
        result = convert(source, tmp_path / destination, to=to)
        assert result.format == "tensorflow"
        reader = tf.train.load_checkpoint(str(tmp_path / destination))
        assert sorted(reader.get_variable_to_shape_map()) == ["0.bias", "0.weight", "1.bias", "1.weight"]
    assert (tmp_path / "r.onnx.index").is_file()


@pytest.mark.parametrize(
    ("suffix", "load"),
    [
        (".safetensors", lambda path: safetensors.numpy.load_file(path)),
        (".pt", lambda path: {name: value.numpy() for name, value in torch.load(path, weights_only=True).items()}),
        (".npz", lambda path: dict(np.load(path))),
        (".ckpt", lambda path: {name: _tf().train.load_checkpoint(str(path)).get_tensor(name) for name in ("w", "b")}),
    ],
)
def test_ws_save_writes_the_format_its_suffix_names(tmp_path: Path, suffix: str, load: Any) -> None:
    tensors = {"w": _random(2, 3), "b": np.arange(3, dtype=np.int64)}
    path = ws.save(tensors, tmp_path / f"x{suffix}")
    assert path == tmp_path / f"x{suffix}"
    assert suffix == ".ckpt" or path.is_file()  # a TensorFlow checkpoint is a prefix
    loaded = load(path)
    for name, value in tensors.items():
        assert_same_tensor(loaded[name], value)


def test_a_checkpoint_directory_beside_a_tensorflow_prefix_is_left_and_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Where a user stands after `make run`: a directory called checkpoint.
    tf = _tf()
    source = _torch_file(tmp_path / "in" / "model.pt")
    (tmp_path / "checkpoint").mkdir()
    monkeypatch.chdir(tmp_path)
    assert main(["convert", str(source), "model"]) == 0
    captured = capsys.readouterr()
    assert "checkpoint is a directory, not TensorFlow's checkpoint state file: left as it is" in captured.err
    assert "wrote 4 tensors" in captured.out
    assert (tmp_path / "checkpoint").is_dir() and list((tmp_path / "checkpoint").iterdir()) == []
    reader = tf.train.load_checkpoint(str(tmp_path / "model"))
    assert sorted(reader.get_variable_to_shape_map()) == ["0.bias", "0.weight", "1.bias", "1.weight"]
    with pytest.warns(UserWarning, match="checkpoint is a directory"):
        ws.save({"w": np.ones(2, np.float32)}, tmp_path / "saved")
    with ws.open(tmp_path / "saved") as ckpt:
        assert ckpt["w"].tolist() == [1.0, 1.0]


def test_a_failure_while_moving_into_place_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = _torch_file(tmp_path / "in" / "model.pt")
    out = tmp_path / "out"
    out.mkdir()
    replace = os.replace

    def fail_on_the_index(old: str, new: str) -> None:
        if Path(new).name == "model.index" and ".weightscope-convert-" not in str(new):  # the data is in place
            raise OSError(28, "No space left on device")
        replace(old, new)

    monkeypatch.setattr(os, "replace", fail_on_the_index)
    with pytest.raises(OSError, match="No space left"):
        convert(source, out / "model")
    with pytest.raises(OSError, match="No space left"):
        convert(source, out / "new" / "folders" / "model")  # the folders it made go too
    assert list(out.iterdir()) == []


def test_nothing_to_convert_and_an_unholdable_dtype_are_unsupported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _torch_file(tmp_path / "in" / "model.pt", phase=torch.zeros(3, dtype=torch.complex128))
    assert main(["convert", str(source), str(tmp_path / "out.safetensors")]) == 5
    assert "tensor 'phase': safetensors holds no complex128" in capsys.readouterr().err
    assert main(["convert", str(source), str(tmp_path / "out.npz"), "--filter", "nothing*"]) == 5
    assert "no tensors to convert; left out: 5 not matched by nothing*" in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in"]


# -- what info says is what reading gives; a quantised GGUF converts --------------------------


def _framework_files(directory: Path) -> list[Path]:
    """A small file of each format, made by its own framework, with the dtypes each holds."""
    import gguf
    import ml_dtypes
    import onnx
    from onnx import numpy_helper

    rng = np.random.default_rng(3)
    paths = [directory / name for name in ("t.pt", "n.npz", "one.npy", "s.safetensors", "g.gguf", "o.onnx")]
    torch.save(
        {
            "f": torch.randn(3, 4),
            "t": torch.randn(3, 4).t(),
            "h": torch.randn(2).half(),
            "bf": torch.randn(2).bfloat16(),
            "f8": torch.randn(4).to(torch.float8_e4m3fn),
            "i": torch.arange(3),
            "u16": torch.zeros(3, dtype=torch.uint16),
            "b": torch.tensor([True]),
            "c": torch.randn(2, dtype=torch.complex64),
        },
        paths[0],
    )
    np.savez(paths[1], be=np.arange(4, dtype=">f4"), le=np.arange(3.0), b=np.array([True]), c=np.zeros(2, complex))
    np.save(paths[2], np.arange(5, dtype=">i8"))
    bf16, f8 = np.zeros(2, ml_dtypes.bfloat16), np.zeros(2, ml_dtypes.float8_e5m2)
    safetensors.numpy.save_file({"a": np.arange(3, dtype=np.float32), "bf": bf16, "f8": f8}, paths[3])
    writer = gguf.GGUFWriter(paths[4], "llama")
    for qtype in (gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.Q4_1):
        quantised = gguf.quants.quantize(rng.normal(size=(2, 64)).astype(np.float32), qtype)
        writer.add_tensor(qtype.name, quantised, raw_dtype=qtype)
    writer.add_tensor("f16", np.ones(3, np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    initializers = [
        numpy_helper.from_array(np.arange(4, dtype=np.float32).reshape(2, 2), "w"),
        numpy_helper.from_array(np.arange(3, dtype=np.int64), "i"),
        onnx.helper.make_tensor("i4", onnx.TensorProto.INT4, [3], [1, -2, 3]),
        onnx.helper.make_tensor("bf", onnx.TensorProto.BFLOAT16, [2], [1.0, 2.0]),
    ]
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph([], "g", [], [], initializer=initializers)), paths[5])
    keras = _keras3()
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3), keras.layers.BatchNormalization()])
    model.save_weights(directory / "k.weights.h5")
    return [*paths, directory / "k.weights.h5"]


def test_info_says_the_dtype_and_shape_reading_gives_in_every_format(
    tmp_path: Path, tf_checkpoints: dict[str, Path]
) -> None:
    readable = [path for name, path in tf_checkpoints.items() if name != "v1"]  # V1 is refused by name
    paths = [*_framework_files(tmp_path), *readable]
    quantised = 0
    for path in paths:
        with ws.open(path) as ckpt:
            assert len(ckpt)
            for name in ckpt:
                info, array = ckpt.info(name), ckpt[name]
                assert (info.dtype, info.shape) == (array.dtype, array.shape), (path, name)
                quantised += info.type_name in ("q8_0", "q4_1")
    assert quantised == 2  # the GGUF's stored type is still said: type_name


def test_a_quantised_gguf_converts_to_what_gguf_py_dequantises(tmp_path: Path) -> None:
    import gguf

    from weightscope.containers.quants import QUANT_SIZES

    rng = np.random.default_rng(5)
    source = tmp_path / "model.gguf"
    writer = gguf.GGUFWriter(source, "llama")
    quantised = {}
    for qtype in (gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.Q4_0, gguf.GGMLQuantizationType.Q5_1):
        quantised[f"blk.0.{qtype.name.lower()}.weight"] = (
            gguf.quants.quantize(rng.normal(size=(4, 64)).astype(np.float32), qtype),
            qtype,
        )
    for name, (data, qtype) in quantised.items():
        writer.add_tensor(name, data, raw_dtype=qtype)
    writer.add_tensor("output_norm.weight", rng.normal(size=8).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with ws.open(source) as ckpt:
        assert {ckpt.info(name).type_name for name in quantised} <= set(QUANT_SIZES)
    result = convert(source, tmp_path / "model.safetensors")
    assert sorted(tensor.name for tensor in result.tensors) == sorted([*quantised, "output_norm.weight"])
    converted = safetensors.numpy.load_file(tmp_path / "model.safetensors")
    for name, (data, qtype) in quantised.items():
        assert_same_tensor(converted[name], gguf.quants.dequantize(data, qtype))


# -- dtypes: diff across them, convert --dtype ----------------------------------------------


@pytest.mark.parametrize("cast", ["float16", "bfloat16"])
def test_diff_across_dtypes_gives_the_figures_and_says_the_types(
    tmp_path: Path, cast: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _torch_file(tmp_path / "a.pt")
    state = torch.load(source, weights_only=True)
    torch.save(OrderedDict((name, value.to(getattr(torch, cast))) for name, value in state.items()), tmp_path / "b.pt")
    assert main(["diff", str(source), str(tmp_path / "b.pt"), "--json"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert {tensor["name"] for tensor in document["tensors"]} == set(state)
    for tensor in document["tensors"]:
        a = state[tensor["name"]].double().numpy()
        b = state[tensor["name"]].to(getattr(torch, cast)).double().numpy()
        assert tensor["status"] == "different" and tensor["dtype"] == ["float32", cast]
        assert tensor["max_abs"] == np.abs(a - b).max() > 0
        assert tensor["mismatched"] == np.count_nonzero(a != b)
    assert main(["diff", str(source), str(tmp_path / "b.pt"), "--atol", "0.05"]) == 0
    out = capsys.readouterr().out
    assert f"4 tensors compared (matched by name): 4 equal\nof other dtypes: 4 float32 vs {cast}" in out
    assert main(["diff", str(source), str(tmp_path / "b.pt")]) == 1
    assert f"different (float32 vs {cast})" in capsys.readouterr().out


@pytest.mark.parametrize("cast", ["float16", "bfloat16", "float32"])
def test_convert_casts_floating_tensors_and_says_so(
    tmp_path: Path, cast: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _torch_file(tmp_path / "in.pt", steps=torch.arange(3), scale=torch.ones(2, dtype=torch.float64))
    state = torch.load(source, weights_only=True)
    out = tmp_path / "out.pt"
    assert main(["convert", str(source), str(out), "--dtype", cast]) == 0
    target = getattr(torch, cast)
    floating = [name for name, value in state.items() if value.is_floating_point() and value.dtype != target]
    assert f"cast to {cast}: {len(floating)} tensors" in capsys.readouterr().out
    converted = torch.load(out, weights_only=True)
    for name, value in state.items():
        expected = value.to(getattr(torch, cast)) if value.is_floating_point() else value
        assert converted[name].dtype == expected.dtype
        assert torch.equal(converted[name].view(torch.uint8), expected.view(torch.uint8))  # torch's rounding, bitwise
    assert main(["convert", str(source), str(tmp_path / "bad.pt"), "--dtype", "int8"]) == 2


def test_safetensors_of_pytorch_names_say_format_pt(tmp_path: Path, tf_checkpoints: dict[str, Path]) -> None:
    # transformers' load_state_dict refuses a safetensors file unless
    # safe_open(...).metadata().get("format") is one of pt, tf, flax, mlx (before 4.48.2, a file with no
    # metadata at all raised AttributeError).
    seed = tf_checkpoints["seed"]
    written = {
        "from-tensorflow": convert(seed, tmp_path / "a.safetensors", layout="pytorch", names="pytorch"),
        "from-pytorch": convert(_torch_file(tmp_path / "in.pt"), tmp_path / "b.safetensors"),
        "tensorflow-names": convert(seed, tmp_path / "c.safetensors"),
    }
    metadata = {}
    for case, result in written.items():
        with safetensors.safe_open(result.destination, framework="pt") as opened:
            metadata[case] = opened.metadata()
    assert metadata == {"from-tensorflow": {"format": "pt"}, "from-pytorch": {"format": "pt"}, "tensorflow-names": None}


def _training_checkpoints(directory: Path) -> dict[str, Path]:
    """Training checkpoints as people save them with torch: model, optimizer (Adam's state.<id>.exp_avg...)."""
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(2, 5), torch.nn.BatchNorm1d(5), torch.nn.Linear(5, 2))
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 2)).sum().backward()
    optimizer.step()
    saved = {
        "tutorial.pt": {
            "epoch": 3,
            "model_state_dict": model.state_dict(),
            "optimizer_state_dict": optimizer.state_dict(),
        },
        "lightning.pt": {"state_dict": model.state_dict(), "optimizer_states": [optimizer.state_dict()]},
        "legacy.pt": {"model": model.state_dict(), "optimizer": optimizer.state_dict()},
        "optimizer.pt": optimizer.state_dict(),
    }
    paths = {}
    for name, value in saved.items():
        paths[name] = directory / name
        torch.save(value, paths[name], _use_new_zipfile_serialization=name != "legacy.pt")
    return paths


def test_optimizer_state_of_pytorch_training_checkpoints_is_converted_only_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, path in _training_checkpoints(tmp_path).items():
        with ws.open(path) as ckpt:
            kinds = {tensor: ckpt.role(tensor).kind for tensor in ckpt}
        optimizer = {tensor for tensor, kind in kinds.items() if kind == "optimizer"}
        assert any(tensor.endswith("state.0.exp_avg") for tensor in optimizer), name
        assert main(["ls", str(path), "--json"]) == 0
        listed = {row["name"] for row in json.loads(capsys.readouterr().out)["tensors"]}  # what ls calls the weights
        assert not listed & optimizer
        if name == "optimizer.pt":
            assert not listed
            assert main(["convert", str(path), str(tmp_path / f"{name}.npz")]) == 5
            assert f"left out: {len(optimizer)} optimizer state" in capsys.readouterr().err
        else:
            weights = convert(path, tmp_path / f"{name}.npz")
            assert {tensor.source for tensor in weights.tensors} == listed
            assert sorted(np.load(tmp_path / f"{name}.npz").files) == sorted(listed)
        everything = convert(path, tmp_path / f"{name}-all.npz", include_optimizer=True)
        assert {tensor.source for tensor in everything.tensors} == listed | optimizer
