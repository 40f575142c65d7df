"""Real files that every reader must get right (issue 16): each made by the framework that makes it."""

from __future__ import annotations

import struct
import warnings
from collections.abc import Callable
from pathlib import Path

import gguf
import h5py
import numpy as np
import onnx
import onnx.helper
import onnx.numpy_helper
import pytest
import torch
from safetensors.numpy import save_file

import weightscope as ws

# -- every format: files made by its own library ------------------------------------------------


def _tensorflow(path: Path) -> Path:
    return ws.save({"layer1/kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}, path / "model.ckpt")


def _safetensors(path: Path) -> Path:
    save_file({"layer1.weight": np.ones((3, 2), np.float32)}, str(path / "m.safetensors"))
    return path / "m.safetensors"


def _npy(path: Path) -> Path:
    np.save(path / "w.npy", np.arange(4.0))
    return path / "w.npy"


def _npz_deflated(path: Path) -> Path:
    np.savez_compressed(path / "w.npz", a=np.arange(4.0), b=np.ones((2, 2), np.int32))
    return path / "w.npz"


def _pytorch(path: Path) -> Path:
    torch.save({"fc.weight": torch.ones(3, 2), "fc.bias": torch.zeros(3)}, path / "m.pt")
    return path / "m.pt"


def _pytorch_legacy(path: Path) -> Path:
    torch.save({"fc.weight": torch.ones(3, 2)}, path / "legacy.pt", _use_new_zipfile_serialization=False)
    return path / "legacy.pt"


def _keras_gzip(path: Path) -> Path:
    with h5py.File(path / "w.h5", "w") as file:  # tf-keras save_weights' layout, datasets gzip-compressed
        file.attrs["layer_names"] = [b"dense"]
        group = file.create_group("dense").create_group("dense")
        group.create_dataset("kernel:0", data=np.ones((4, 3), np.float32), compression="gzip", chunks=True)
        file["dense"].attrs["weight_names"] = [b"dense/kernel:0"]
    return path / "w.h5"


def _keras3_model() -> object:
    import keras

    layers = keras.layers
    return keras.Sequential([keras.Input((2,)), layers.Dense(3, name="layer1"), layers.BatchNormalization()])


def _keras3_weights(path: Path) -> Path:
    _keras3_model().save_weights(path / "m.weights.h5")  # type: ignore[attr-defined]
    return path / "m.weights.h5"


def _keras3_zip(path: Path) -> Path:
    _keras3_model().save(path / "m.keras")  # type: ignore[attr-defined]
    return path / "m.keras"


def _gguf_quantised(path: Path) -> Path:
    writer = gguf.GGUFWriter(path / "m.gguf", "llama")
    rows = np.random.default_rng(0).normal(size=(2, 64)).astype(np.float32)
    writer.add_tensor("blk.0.ffn_up.weight", gguf.quants.quantize(rows, gguf.GGMLQuantizationType.Q8_0),
                      raw_dtype=gguf.GGMLQuantizationType.Q8_0)  # fmt: skip
    writer.add_tensor("token_embd.weight", np.ones((4, 8), np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path / "m.gguf"


def _onnx(path: Path) -> Path:
    weight = onnx.numpy_helper.from_array(np.ones((3, 2), np.float32), "fc.weight")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", "fc.weight"], ["y"])],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2])],
        [weight],
    )
    onnx.save(onnx.helper.make_model(graph), path / "m.onnx")
    return path / "m.onnx"


EVERY_FORMAT: dict[str, Callable[[Path], Path]] = {
    "tensorflow": _tensorflow,
    "safetensors": _safetensors,
    "npy": _npy,
    "npz-deflated": _npz_deflated,
    "pytorch": _pytorch,
    "pytorch-legacy": _pytorch_legacy,
    "keras-gzip": _keras_gzip,
    "keras3-weights": _keras3_weights,
    "keras3-zip": _keras3_zip,
    "gguf-quantised": _gguf_quantised,
    "onnx": _onnx,
}


@pytest.mark.parametrize("make", EVERY_FORMAT.values(), ids=EVERY_FORMAT.keys())
def test_every_array_a_checkpoint_returns_is_read_only(tmp_path: Path, make: Callable[[Path], Path]) -> None:
    read: dict[str, tuple[np.ndarray, bytes]] = {}
    with ws.open(make(tmp_path)) as ckpt:
        assert len(ckpt) > 0
        for name in ckpt:
            array = ckpt[name]
            assert not array.flags.writeable, name
            with pytest.raises(ValueError, match="read-only"):
                array.reshape(-1)[:1] = 0
            read[name] = (array, array.tobytes())
    for array, data in read.values():  # still valid, closed: the views keep their map (numpy 2 would lose it)
        assert array.tobytes() == data


@pytest.mark.parametrize("make", EVERY_FORMAT.values(), ids=EVERY_FORMAT.keys())
def test_every_stored_key_opens_its_tensor(tmp_path: Path, make: Callable[[Path], Path]) -> None:
    with ws.open(make(tmp_path)) as ckpt:
        for info in ckpt.infos():
            assert ckpt.info(info.key) == info
            assert info.key in ckpt
            np.testing.assert_array_equal(ckpt[info.key], ckpt[info.name])


# -- .npy headers written by Python 2 ------------------------------------------------------------


def _npy_file(path: Path, header: str, data: bytes, version: tuple[int, int] = (1, 0)) -> Path:
    """A .npy file with this header text, as numpy (of any age) lays one out."""
    length = "<H" if version == (1, 0) else "<I"
    prefix = 6 + 2 + struct.calcsize(length)
    padded = header + " " * (-(prefix + len(header) + 1) % 64) + "\n"
    encoded = padded.encode("utf8" if version == (3, 0) else "latin1")
    path.write_bytes(b"\x93NUMPY" + bytes(version) + struct.pack(length, len(encoded)) + encoded + data)
    return path


PYTHON2_HEADERS = {
    "long-dims": ("{'descr': '<f8', 'fortran_order': False, 'shape': (2L, 3L), }", (1, 0)),
    "long-one-dim": ("{'descr': '<f8', 'fortran_order': False, 'shape': (6L,), }", (1, 0)),
    "unicode-keys": ("{u'descr': u'<f8', u'fortran_order': False, u'shape': (6L,), }", (1, 0)),
    "old-structured": ("{'descr': [('a', '<i4'), ('b', '<i4')], 'fortran_order': False, 'shape': (3L,), }", (1, 0)),
    "version-2": ("{'descr': '<f8', 'fortran_order': True, 'shape': (3L, 2L), }", (2, 0)),
    "spaced-L": ("{'descr': '<f8', 'fortran_order': False, 'shape': (6 L,), }", (1, 0)),
}


@pytest.mark.parametrize(("header", "version"), PYTHON2_HEADERS.values(), ids=PYTHON2_HEADERS.keys())
def test_python2_npy_headers_read_as_np_load_reads_them(tmp_path: Path, header: str, version: tuple[int, int]) -> None:
    path = _npy_file(tmp_path / "old.npy", header, np.arange(6.0).tobytes(), version)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy warns that the header needed Python 2 parsing
        expected = np.load(path)
    with ws.open(path) as ckpt:
        ours = ckpt["old"]
    assert ours.dtype == expected.dtype and ours.shape == expected.shape
    assert ours.tobytes() == expected.tobytes()


REFUSED_HEADERS = {
    "L-in-version-3": ("{'descr': '<f8', 'fortran_order': False, 'shape': (6L,), }", (3, 0)),
    "L-after-a-name": ("{'descr': '<f8', 'fortran_order': False, 'shape': (x L,), }", (1, 0)),
    "a-call": ("{'descr': '<f8', 'fortran_order': False, 'shape': (len('abcdef'),), }", (1, 0)),
    "double-L": ("{'descr': '<f8', 'fortran_order': False, 'shape': (6LL,), }", (1, 0)),
}


@pytest.mark.parametrize(("header", "version"), REFUSED_HEADERS.values(), ids=REFUSED_HEADERS.keys())
def test_headers_np_load_refuses_are_corrupt(tmp_path: Path, header: str, version: tuple[int, int]) -> None:
    path = _npy_file(tmp_path / "bad.npy", header, np.arange(6.0).tobytes(), version)
    with pytest.raises(ValueError), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.load(path)
    with pytest.raises(ws.CorruptCheckpointError, match="not a Python literal"):
        ws.open(path)


# -- Keras 3 .weights.h5 without a config: variables named as Keras 3 names them ------------------


def _keras3_layers() -> dict[str, tuple[object, tuple[int, ...] | None, str]]:
    """Every built-in Keras 3 layer class with weights: (layer, input shape, input kind)."""
    import keras

    layers = keras.layers
    return {
        "Dense": (layers.Dense(3), (4,), "one"),
        "Dense-no-bias": (layers.Dense(3, use_bias=False), (4,), "one"),
        "EinsumDense": (layers.EinsumDense("ab,bc->ac", output_shape=5, bias_axes="c"), (4,), "one"),
        "EinsumDense-no-bias": (layers.EinsumDense("ab,bc->ac", output_shape=5), (4,), "one"),
        "Embedding": (layers.Embedding(10, 3), (5,), "int"),
        "LayerNormalization": (layers.LayerNormalization(), (4,), "one"),
        "GroupNormalization": (layers.GroupNormalization(2), (4,), "one"),
        "RMSNormalization": (layers.RMSNormalization(), (4,), "one"),
        "BatchNormalization": (layers.BatchNormalization(), (4,), "one"),
        "BatchNormalization-no-center-no-scale": (layers.BatchNormalization(center=False, scale=False), (4,), "one"),
        "Normalization": (layers.Normalization(), (4,), "one"),
        "PReLU": (layers.PReLU(), (4,), "one"),
        "Attention": (layers.Attention(use_scale=True, score_mode="concat"), (5, 4), "two"),
        "AdditiveAttention": (layers.AdditiveAttention(), (5, 4), "two"),
        "MultiHeadAttention": (layers.MultiHeadAttention(2, 4), (5, 4), "attention"),
        "Conv1D": (layers.Conv1D(2, 3), (8, 2), "one"),
        "Conv2D": (layers.Conv2D(2, 3), (8, 8, 2), "one"),
        "Conv2D-no-bias": (layers.Conv2D(2, 3, use_bias=False), (8, 8, 2), "one"),
        "Conv3D": (layers.Conv3D(2, 2), (4, 4, 4, 2), "one"),
        "Conv1DTranspose": (layers.Conv1DTranspose(3, 2), (8, 2), "one"),
        "Conv2DTranspose": (layers.Conv2DTranspose(3, 2), (8, 8, 2), "one"),
        "Conv3DTranspose": (layers.Conv3DTranspose(3, 2), (4, 4, 4, 2), "one"),
        "DepthwiseConv1D": (layers.DepthwiseConv1D(3), (8, 2), "one"),
        "DepthwiseConv2D": (layers.DepthwiseConv2D(3), (8, 8, 2), "one"),
        "SeparableConv1D": (layers.SeparableConv1D(3, 3), (8, 2), "one"),
        "SeparableConv2D": (layers.SeparableConv2D(3, 3), (8, 8, 2), "one"),
        "LSTM": (layers.LSTM(3), (5, 4), "one"),
        "GRU": (layers.GRU(3), (5, 4), "one"),
        "SimpleRNN": (layers.SimpleRNN(3), (5, 4), "one"),
        "SimpleRNN-no-bias": (layers.SimpleRNN(3, use_bias=False), (5, 4), "one"),
        "Bidirectional": (layers.Bidirectional(layers.LSTM(3)), (5, 4), "one"),
        "TimeDistributed": (layers.TimeDistributed(layers.Dense(3)), (5, 4), "one"),
        "ConvLSTM1D": (layers.ConvLSTM1D(2, 3), (3, 8, 2), "one"),
        "ConvLSTM2D": (layers.ConvLSTM2D(2, 3), (3, 8, 8, 2), "one"),
    }


KERAS3_LAYERS = list(_keras3_layers())


@pytest.mark.parametrize("case", KERAS3_LAYERS)
def test_keras3_save_weights_names_every_variable_as_keras_does(tmp_path: Path, case: str) -> None:
    import keras

    layer, shape, kind = _keras3_layers()[case]
    inputs = keras.Input(shape, dtype="int32" if kind == "int" else "float32")
    arguments = {"attention": (inputs, inputs), "two": ([inputs, inputs],)}.get(kind, (inputs,))
    outputs = layer(*arguments)  # type: ignore[operator]
    model = keras.Model(inputs, outputs)
    for variable in model.weights:  # distinct values, so a variable read under another's name shows
        variable.assign(np.random.default_rng(len(variable.path)).normal(size=variable.shape).astype(variable.dtype))
    model.save_weights(tmp_path / "m.weights.h5")
    expected = {variable.path: np.asarray(variable.numpy()) for variable in layer.weights}  # type: ignore[attr-defined]
    assert expected
    with ws.open(tmp_path / "m.weights.h5") as ckpt:
        assert sorted(ckpt) == sorted(expected)
        for name, value in expected.items():
            np.testing.assert_array_equal(ckpt[name], value)


def test_keras3_weights_h5_works_with_every_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import keras

    from weightscope.cli import main

    layers = [keras.layers.Dense(5, name="layer1"), keras.layers.Dense(2, name="layer2")]
    model = keras.Sequential([keras.Input((2,)), *layers])
    model.save_weights(tmp_path / "model.weights.h5")
    path = str(tmp_path / "model.weights.h5")
    assert main(["show", path, "layer1/weight"]) == 0
    out, err = capsys.readouterr()
    assert "'layer1/weight' is 'layer1/kernel'" in err
    assert out.strip() == str(model.layers[0].kernel.numpy())
    with ws.open(path) as ckpt:
        layers = ckpt.layers()
        assert layers["layer1"].weight.shape == (2, 5) and layers["layer1"].bias.shape == (5,)
    assert main(["summary", path]) == 0
    assert "?" not in capsys.readouterr().out
    import tensorflow as tf

    tf.train.Checkpoint(model=model).write(str(tmp_path / "tf" / "ckpt"))  # the same model, as TensorFlow saves it
    assert main(["diff", path, str(tmp_path / "tf" / "ckpt")]) == 0
    assert "4 tensors compared" in capsys.readouterr().out
    assert main(["convert", path, str(tmp_path / "m.safetensors"), "--names", "pytorch", "--layout", "pytorch"]) == 0
    capsys.readouterr()
    with ws.open(tmp_path / "m.safetensors") as converted:
        assert sorted(converted) == ["layer1.bias", "layer1.weight", "layer2.bias", "layer2.weight"]


# -- Keras 2 (tf-keras) full models: tensors under the layer names Keras loads by --------------

_TF1_GRAPH_MODEL = """
import sys
import numpy as np
import tensorflow as tf
tf.compat.v1.disable_eager_execution()
import tf_keras as keras

def build():
    model = keras.Sequential([
        keras.layers.Conv2D(2, 3, input_shape=(6, 6, 1), name="conv"),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(2, name="out"),
    ])
    model.compile(optimizer="adam", loss="mse")
    return model

build()
model = build()  # the graph already holds conv/ and out/: this model's variables are conv_1/..., out_1/...
model.fit(np.ones((4, 6, 6, 1)), np.ones((4, 2)), verbose=0)
model.save(sys.argv[1])
names = [weight.name for weight in model.weights]
np.savez(sys.argv[2], names=np.array(names), **{str(i): value for i, value in enumerate(model.get_weights())})
"""


def test_tf_keras_full_model_names_tensors_by_their_layers(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = tmp_path / "make.py"
    script.write_text(_TF1_GRAPH_MODEL)
    path, expected = tmp_path / "model.h5", tmp_path / "expected.npz"
    subprocess.run([sys.executable, str(script), str(path), str(expected)], check=True, capture_output=True)
    with np.load(expected) as saved:
        stored = list(saved["names"])
        values = [saved[str(index)] for index in range(len(stored))]
    assert stored == ["conv_1/kernel:0", "conv_1/bias:0", "out_1/kernel:0", "out_1/bias:0"]  # what Keras wrote
    with ws.open(path) as ckpt:
        parameters = [name for name in ckpt if ckpt.role(name).kind == "parameter"]
        assert parameters == ["conv/kernel", "conv/bias", "out/kernel", "out/bias"]
        for name, value in zip(parameters, values, strict=True):
            np.testing.assert_array_equal(ckpt[name], value)
        assert ckpt.info("model_weights/conv/conv_1/kernel:0").name == "conv/kernel"  # the stored key still opens it
        assert ckpt.resolve("conv/weight") == "conv/kernel"
        owners = {ckpt.role(name).owner for name in ckpt if ckpt.role(name).kind == "optimizer"} - {None}
        assert owners == set(parameters)  # Adam's m and v, tied to the renamed variables


# -- GGUF: a llama.cpp model's layers, and what verify checked -----------------------------------


def _llama_gguf(path: Path, blocks: int = 2) -> Path:
    """A small llama-architecture GGUF as gguf-py writes one, its tensors named by gguf-py's own table."""
    names = gguf.TENSOR_NAMES
    tensor = gguf.MODEL_TENSOR
    rng = np.random.default_rng(0)
    vocabulary, hidden, feed_forward = 300, 32, 64
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_tensor(names[tensor.TOKEN_EMBD] + ".weight", rng.normal(size=(vocabulary, hidden)).astype(np.float16))
    for block in range(blocks):
        shapes = {
            tensor.ATTN_NORM: (hidden,), tensor.ATTN_Q: (hidden, hidden), tensor.ATTN_K: (hidden, hidden),
            tensor.ATTN_V: (hidden, hidden), tensor.ATTN_OUT: (hidden, hidden), tensor.FFN_NORM: (hidden,),
            tensor.FFN_GATE: (feed_forward, hidden), tensor.FFN_UP: (feed_forward, hidden),
            tensor.FFN_DOWN: (hidden, feed_forward),
        }  # fmt: skip
        for kind, shape in shapes.items():
            writer.add_tensor(names[kind].format(bid=block) + ".weight", rng.normal(size=shape).astype(np.float32))
    writer.add_tensor(names[tensor.OUTPUT_NORM] + ".weight", np.ones(hidden, np.float32))
    writer.add_tensor(names[tensor.OUTPUT] + ".weight", rng.normal(size=(vocabulary, hidden)).astype(np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_layers_are_blocks_an_embedding_and_an_lm_head(tmp_path: Path) -> None:
    from weightscope.summary import summarize

    with ws.open(_llama_gguf(tmp_path / "llama.gguf")) as ckpt:
        layers = ckpt.layers()
        assert list(layers) == ["token_embd", "blk.0", "blk.1", "output_norm", "output"]
        block = layers["blk.1"]
        assert block.parameters["attn_q"].name == "blk.1.attn_q.weight"
        assert len(block.parameters) == 9 and block.parameter_count == 2 * 32 + 4 * 32 * 32 + 3 * 64 * 32
        kinds = {row.name: row.description for row in summarize(ckpt).layers}
    assert kinds["token_embd"] == "Embedding 300 × 32"
    assert kinds["output"] == "LM head 32 → 300"
    assert kinds["blk.0"] == "Block: 4 attention, 3 feed-forward, 2 other tensors"


NO_CHECKSUMS = {
    "gguf": lambda path: _llama_gguf(path / "m.gguf", blocks=1),
    "safetensors": _safetensors,
    "npy": _npy,
    "onnx": _onnx,
    "keras-h5": _keras_gzip,
    "keras3-weights": _keras3_weights,
    "pytorch-legacy": _pytorch_legacy,
}


@pytest.mark.parametrize("make", NO_CHECKSUMS.values(), ids=NO_CHECKSUMS.keys())
def test_verify_says_no_checksum_was_checked_where_a_format_has_none(
    tmp_path: Path, make: Callable[[Path], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from weightscope.cli import main

    path = make(tmp_path)
    assert main(["verify", str(path)]) == 0
    out = capsys.readouterr().out
    assert "verified" not in out and "within the file and of its declared size" in out
    assert "no checksums checked" in out


WITH_CHECKSUMS = {"tensorflow": _tensorflow, "pytorch": _pytorch, "npz": _npz_deflated, "keras3-zip": _keras3_zip}


@pytest.mark.parametrize("make", WITH_CHECKSUMS.values(), ids=WITH_CHECKSUMS.keys())
def test_verify_says_verified_where_checksums_were_checked(
    tmp_path: Path, make: Callable[[Path], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from weightscope.cli import main

    assert main(["verify", str(make(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK: ") and out.rstrip().endswith(" verified")


# -- ONNX weights held in Constant nodes ------------------------------------------------------------


def _onnx_with_constants(path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """y = Reshape(Gemm(x, W, b, transB=1), shape) * half: the weights in Constant nodes, as some exporters write."""
    rng = np.random.default_rng(0)
    values = {
        "fc.w": rng.normal(size=(4, 3)).astype(np.float32),
        "fc.b": rng.normal(size=4).astype(np.float32),
        "shape": np.array([2, 2], np.int64),
        "half": np.array(0.5, np.float32),
    }
    helper = onnx.helper
    constants = [
        helper.make_node("Constant", [], [name], name=f"const_{name}", value=onnx.numpy_helper.from_array(value))
        for name, value in values.items()
    ]
    nodes = [
        *constants,
        helper.make_node("Gemm", ["x", "fc.w", "fc.b"], ["h"], name="/fc/Gemm", transB=1),
        helper.make_node("Reshape", ["h", "shape"], ["r"], name="/Reshape"),
        helper.make_node("Mul", ["r", "half"], ["y"], name="/Mul"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path, values


def test_onnx_constant_nodes_are_tensors_and_only_weights_are_parameters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from weightscope.cli import main

    path, values = _onnx_with_constants(tmp_path / "constants.onnx")
    stored = {node.output[0]: onnx.numpy_helper.to_array(node.attribute[0].t) for node in onnx.load(path).graph.node
              if node.op_type == "Constant"}  # fmt: skip
    with ws.open(path) as ckpt:
        assert sorted(ckpt) == sorted(values)
        for name, value in stored.items():
            assert ckpt[name].dtype == value.dtype and ckpt[name].tobytes() == value.tobytes()
        roles = {name: (ckpt.role(name).kind, ckpt.role(name).role) for name in ckpt}
        assert roles == {
            "fc.w": ("parameter", "weight"),
            "fc.b": ("parameter", "bias"),
            "shape": ("bookkeeping", None),
            "half": ("bookkeeping", None),
        }
        layers = ckpt.layers()
        assert list(layers) == ["/fc/Gemm"]
        assert layers["/fc/Gemm"].weight.name == "fc.w" and layers["/fc/Gemm"].bias.name == "fc.b"
    assert main(["ls", str(path)]) == 0
    out = capsys.readouterr().out
    rows = [line.split()[0] for line in out.splitlines()[2:] if line.startswith(("fc.", "shape ", "half "))]
    assert rows == ["fc.w", "fc.b"] and "2 tensors, 16 parameters" in out
    assert main(["convert", str(path), str(tmp_path / "w.safetensors")]) == 0
    capsys.readouterr()
    with ws.open(tmp_path / "w.safetensors") as converted:
        assert sorted(converted) == ["fc.b", "fc.w"]
        np.testing.assert_array_equal(converted["fc.w"], values["fc.w"])


def test_onnx_constant_named_like_an_initializer_is_corrupt(tmp_path: Path) -> None:
    helper = onnx.helper
    weight = onnx.numpy_helper.from_array(np.ones(2, np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["w"], value=onnx.numpy_helper.from_array(np.zeros(2, np.float32)))],
        "g", [], [helper.make_tensor_value_info("w", onnx.TensorProto.FLOAT, [2])], [weight],
    )  # fmt: skip
    onnx.save(helper.make_model(graph), tmp_path / "twice.onnx")
    with pytest.raises(ws.CorruptCheckpointError, match="two tensors are named 'w'"):
        ws.open(tmp_path / "twice.onnx")


# -- files recognised but not read: each says what it is and how to get its weights out -------------


def _plain_hdf5(path: Path) -> Path:
    with h5py.File(path / "data.h5", "w") as file:
        file.create_dataset("images", data=np.zeros((2, 4), np.uint8))
        file.create_dataset("labels", data=np.arange(2))
    return path / "data.h5"


def _onnx_tensor(path: Path) -> Path:
    onnx.save_tensor(onnx.numpy_helper.from_array(np.ones((2, 3), np.float32), "input_0"), str(path / "input_0.pb"))
    return path / "input_0.pb"


RECOGNISED = {
    "plain-hdf5": (_plain_hdf5, "an HDF5 file, but not a Keras weights file", "'images', 'labels'"),
    "onnx-tensor": (_onnx_tensor, "a bare ONNX TensorProto", "onnx.load_tensor"),
}


@pytest.mark.parametrize(("make", "what", "way_out"), RECOGNISED.values(), ids=RECOGNISED.keys())
def test_recognised_files_say_what_they_are(
    tmp_path: Path, make: Callable[[Path], Path], what: str, way_out: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from weightscope.cli import main

    path = make(tmp_path)
    with pytest.raises(ws.UnsupportedFormatError) as caught:
        ws.open(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: {what}") and way_out in message
    assert "not a checkpoint format weightscope knows" not in message
    assert main(["ls", str(path)]) == ws.UnsupportedFormatError.exit_status
    assert capsys.readouterr().err.count("\n") == 1


def test_a_graph_pb_is_not_taken_for_an_onnx_tensor(tmp_path: Path) -> None:
    import tensorflow as tf

    graph = tf.function(lambda x: x * 2.0).get_concrete_function(tf.TensorSpec([2], tf.float32)).graph
    (tmp_path / "frozen.pb").write_bytes(graph.as_graph_def().SerializeToString())
    with pytest.raises(ws.UnsupportedFormatError, match="not a checkpoint format weightscope knows"):
        ws.open(tmp_path / "frozen.pb")


# -- TensorFlow: prefixes ending in a separator, and state files from another machine ------------


def _tf1_save(prefix: str, values: dict[str, np.ndarray]) -> str:
    """Save ``values`` with TF1's Saver (in a graph of its own) at ``prefix``, as TF1 programs did; returns its path."""
    import tensorflow as tf

    with tf.Graph().as_default():
        variables = [tf.compat.v1.get_variable(name, initializer=tf.constant(value)) for name, value in values.items()]
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saved: str = saver.save(session, prefix)
    return saved


def test_a_tf1_prefix_ending_in_a_separator_opens_by_every_natural_path(tmp_path: Path) -> None:
    values = {"layer1/kernel": np.arange(6, dtype=np.float32).reshape(2, 3), "layer1/bias": np.ones(3, np.float32)}
    folder = tmp_path / "model"
    folder.mkdir()
    _tf1_save(f"{folder}/", values)
    assert (folder / ".index").is_file() and (folder / ".data-00000-of-00001").is_file()  # what TF1 wrote
    for form in (str(folder), f"{folder}/", str(folder / ".index"), str(folder / ".data-00000-of-00001")):
        with ws.open(form) as ckpt:
            assert sorted(ckpt) == sorted(values), form
            for name, value in values.items():
                np.testing.assert_array_equal(ckpt[name], value)
    (folder / "checkpoint").unlink()  # without its state file: the directory's only index
    with ws.open(folder) as ckpt:
        assert sorted(ckpt) == sorted(values)
    from weightscope.history import checkpoint_history

    _tf1_save(f"{folder}/", values)
    (entry,) = checkpoint_history(folder)
    assert entry.exists and entry.newest


def test_a_moved_folder_opens_its_own_checkpoint_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    values = {"w": np.arange(4, dtype=np.float32)}
    original = tmp_path / "machine-a" / "run"
    original.mkdir(parents=True)
    saved = _tf1_save(str(original / "model.ckpt"), values)
    assert f'"{saved}"' in (original / "checkpoint").read_text()  # TF1 records the absolute path
    moved = tmp_path / "machine-b" / "run"
    shutil.move(str(original.parent), str(moved.parent))
    capsys.readouterr()
    with ws.open(moved) as ckpt:
        np.testing.assert_array_equal(ckpt["w"], values["w"])
        assert ckpt.path == moved / "model.ckpt"
    err = capsys.readouterr().err
    assert f"names {saved}, which is not here" in err and str(moved / "model.ckpt") in err
    assert err.count("\n") == 1


class _TensorAttributes(torch.nn.Module):
    """Weights kept as plain tensor attributes, which torch.onnx.export writes as Constant nodes."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.w = torch.randn(4, 3, generator=generator)
        self.b = torch.randn(4, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.w, self.b).reshape(2, 2)


def test_torch_onnx_export_constants_are_the_weights(tmp_path: Path) -> None:
    module = _TensorAttributes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter is deprecated (the new one needs onnxscript)
        torch.onnx.export(module, (torch.ones(1, 3),), str(tmp_path / "m.onnx"), dynamo=False)
    graph = onnx.load(tmp_path / "m.onnx").graph
    assert not graph.initializer  # every tensor is in a Constant node
    with ws.open(tmp_path / "m.onnx") as ckpt:
        layer = ckpt.layers()["/Gemm"]
        assert layer.weight is not None and layer.bias is not None
        np.testing.assert_array_equal(ckpt[layer.weight.name], module.w.numpy())
        np.testing.assert_array_equal(ckpt[layer.bias.name], module.b.numpy())
        others = [name for name in ckpt if ckpt.role(name).kind != "parameter"]
        assert [ckpt.info(name).dtype for name in others] == [np.dtype(np.int64)]  # the Reshape's shape
