"""Slice reads: ``ckpt.slice(name)[key]`` equals ``ckpt[name][key]`` and reads only the bytes it needs."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import onnx
import pytest
import torch
from conftest import assert_same_tensor
from onnx import helper, numpy_helper

import weightscope as ws
from weightscope.sources import FileSource

TENSOR = np.arange(6 * 5 * 4, dtype=np.float32).reshape(6, 5, 4) * np.float32(1.5) - np.float32(7)
SCALAR = np.array(2.25, np.float64)
KEYS: list[Any] = [
    0,
    -1,
    (1, 2, 3),
    (-1, -2, -3),
    slice(1, 4),
    slice(None, None, 2),
    slice(None, None, -1),
    (slice(4, 0, -3), 2),
    (slice(None), slice(1, 4), slice(None, None, 2)),
    (Ellipsis, -1),
    (1, Ellipsis),
    (0, Ellipsis, 0),
    Ellipsis,
    (),
    None,
    (None, 1, None, slice(0, 2)),
    slice(2, 2),
    (slice(None), 0),
    np.array([0, 5]),  # advanced indexing: read whole, then indexed
    TENSOR[:, 0, 0] > 0,
]


def _safetensors(path: Path) -> Path:
    ws.save({"t": TENSOR, "s": SCALAR}, path / "m.safetensors", format="safetensors")
    return path / "m.safetensors"


def _npy_big_endian(path: Path) -> Path:
    np.save(path / "t.npy", TENSOR.astype(">f4"))
    return path / "t.npy"


def _npz(path: Path) -> Path:
    np.savez(path / "m.npz", t=TENSOR, s=SCALAR)
    return path / "m.npz"


def _npz_deflated(path: Path) -> Path:
    np.savez_compressed(path / "m.npz", t=TENSOR, s=SCALAR)
    return path / "m.npz"


def _pytorch(path: Path) -> Path:
    torch.save({"t": torch.from_numpy(TENSOR), "s": torch.from_numpy(SCALAR)}, path / "m.pt")
    return path / "m.pt"


def _pytorch_view(path: Path) -> Path:  # a strided view: read whole, then indexed
    stored = torch.from_numpy(np.ascontiguousarray(TENSOR.transpose(2, 1, 0)))
    torch.save({"t": stored.permute(2, 1, 0), "s": torch.from_numpy(SCALAR)}, path / "m.pt")
    return path / "m.pt"


def _tensorflow(path: Path) -> Path:
    ws.save({"t": TENSOR, "s": SCALAR}, path / "ckpt-1")
    return path / "ckpt-1"


def _keras(path: Path) -> Path:
    ws.save({"conv/kernel": TENSOR, "conv/bias": TENSOR[0, 0]}, path / "m.weights.h5", format="keras")
    return path / "m.weights.h5"


def _gguf(path: Path) -> Path:
    writer = gguf.GGUFWriter(path / "m.gguf", "llama")
    writer.add_tensor("t", TENSOR)
    writer.add_tensor("s", SCALAR.reshape(1))
    quantised = gguf.quants.quantize(np.resize(TENSOR, (3, 64)), gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("q", quantised, raw_dtype=gguf.GGMLQuantizationType.Q8_0)  # read whole, then indexed
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path / "m.gguf"


def _onnx(path: Path) -> Path:  # external data, read through the reader
    initializers = [numpy_helper.from_array(TENSOR, "t"), numpy_helper.from_array(SCALAR, "s")]
    model = helper.make_model(helper.make_graph([], "weights", [], [], initializer=initializers))
    onnx.save_model(model, path / "m.onnx", save_as_external_data=True, location="m.bin", size_threshold=0)
    return path / "m.onnx"


def _pickle(path: Path) -> Path:  # a plain pickle of numpy arrays, read through the reader
    (path / "params.pkl").write_bytes(pickle.dumps({"t": TENSOR, "s": SCALAR}))
    return path / "params.pkl"


MAKERS: dict[str, Callable[[Path], Path]] = {
    "safetensors": _safetensors,
    "npy-big-endian": _npy_big_endian,
    "npz": _npz,
    "npz-deflated": _npz_deflated,
    "pytorch": _pytorch,
    "pytorch-view": _pytorch_view,
    "tensorflow": _tensorflow,
    "keras": _keras,
    "gguf": _gguf,
    "onnx": _onnx,
    "pickle": _pickle,
}


def _same(ours: Any, theirs: Any) -> None:
    assert type(ours) is type(theirs)  # an array, or a numpy scalar where numpy gives one
    assert_same_tensor(ours, theirs)
    if isinstance(ours, np.ndarray):
        assert not ours.flags.writeable


@pytest.mark.parametrize("fmt", MAKERS)
def test_a_slice_equals_the_full_reads_slice(tmp_path: Path, fmt: str) -> None:
    with ws.open(MAKERS[fmt](tmp_path)) as ckpt:
        for name in ckpt:
            whole = ckpt[name]
            sliced = ckpt.slice(name)
            assert sliced.shape == whole.shape and sliced.get_shape() == list(whole.shape)
            assert sliced.dtype == whole.dtype
            keys = KEYS if whole.shape == TENSOR.shape else [0, -1, (), Ellipsis, None, slice(None, None, -1)]
            for key in keys if whole.ndim else [(), Ellipsis, None]:
                _same(sliced[key], whole[key])


@pytest.mark.parametrize("fmt", MAKERS)
@pytest.mark.parametrize("key", [6, -7, (0, 5), (0, 0, 0, 0), (Ellipsis, Ellipsis)], ids=repr)
def test_a_key_numpy_refuses_is_refused_as_numpy_refuses_it(tmp_path: Path, fmt: str, key: Any) -> None:
    with ws.open(MAKERS[fmt](tmp_path)) as ckpt:
        name = next(name for name in ckpt if ckpt.info(name).shape == TENSOR.shape)
        with pytest.raises(IndexError):
            ckpt[name][key]
        with pytest.raises(IndexError):
            ckpt.slice(name)[key]


def _spy_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    lengths: list[int] = []
    read = FileSource.read

    def spy(self: FileSource, offset: int, length: int, what: str) -> memoryview:
        lengths.append(length)
        return read(self, offset, length, what)

    monkeypatch.setattr(FileSource, "read", spy)
    return lengths


@pytest.mark.parametrize("fmt", ["safetensors", "npy-big-endian", "npz", "pytorch", "tensorflow", "gguf"])
def test_a_slice_of_plain_bytes_reads_only_the_bytes_it_takes(
    tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = MAKERS[fmt](tmp_path)
    with ws.open(path) as ckpt:
        name = next(name for name in ckpt if ckpt.info(name).shape == TENSOR.shape)
        whole = ckpt[name]
        lengths = _spy_reads(monkeypatch)
        _same(ckpt.slice(name)[2:4], whole[2:4])  # two rows: one range of their bytes
        assert lengths == [2 * 5 * 4 * 4]
        lengths.clear()
        _same(ckpt.slice(name)[-1, -1, ::-1], whole[-1, -1, ::-1])
        assert lengths == [4 * 4]
        lengths.clear()
        _same(ckpt.slice(name)[:, 0, 0], whole[:, 0, 0])  # sparse: one element per row
        assert lengths == [4] * 6


@pytest.mark.parametrize("fmt", ["npz-deflated", "pytorch-view", "keras", "onnx", "pickle"])
def test_a_slice_of_bytes_it_cannot_address_is_the_whole_tensor_indexed(
    tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ws.open(MAKERS[fmt](tmp_path)) as ckpt:
        name = next(name for name in ckpt if ckpt.info(name).shape == TENSOR.shape)
        _same(ckpt.slice(name)[2:4, 1], TENSOR[2:4, 1])


def test_a_slice_read_is_not_verified_but_the_whole_read_is(tmp_path: Path) -> None:
    path = _npz(tmp_path)
    data = bytearray(path.read_bytes())
    at = data.index(TENSOR[5].tobytes())
    data[at] ^= 0xFF  # the last row's first byte: the member's CRC-32 no longer matches
    path.write_bytes(bytes(data))
    with ws.open(path) as ckpt:
        _same(ckpt.slice("t")[:5], TENSOR[:5])  # the bytes it reads are sound, and it cannot check the rest
        with pytest.raises(ws.errors.ChecksumMismatchError):
            ckpt["t"]
