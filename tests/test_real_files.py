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
