"""Writing safetensors, .npz and PyTorch files: each format's own library reads what we write, bit for bit."""

from __future__ import annotations

import collections
import json
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import safetensors.torch
import torch
from conftest import assert_same_tensor
from safetensors.numpy import save_file

import weightscope as ws
from weightscope.containers import zip as zip_container
from weightscope.formats import numpy_files, pytorch_writer
from weightscope.formats import safetensors as safetensors_format


def _dtype(name: str) -> np.dtype:
    return np.dtype(getattr(ml_dtypes, name, None) or name)


def _from_torch(tensor: torch.Tensor) -> np.ndarray:
    """A torch tensor as the numpy array of its dtype (ml_dtypes for bfloat16, float8), same bytes."""
    dtype = _dtype(str(tensor.dtype).removeprefix("torch."))
    raw = tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
    return raw.view(dtype).reshape(tuple(tensor.shape))


def _load_torch(path: Path, *, mmap: bool) -> dict[str, np.ndarray]:
    loaded = torch.load(path, weights_only=True, mmap=mmap)
    assert isinstance(loaded, collections.OrderedDict)
    return {name: _from_torch(tensor) for name, tensor in loaded.items()}


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as archive:
        return {name: archive[name] for name in archive.files}


@dataclass(frozen=True)
class Writer:
    format: str
    suffix: str
    save: Callable[..., Path]
    dtypes: tuple[str, ...]  # every element type it holds
    readers: tuple[Callable[[Path], dict[str, np.ndarray]], ...]  # the format's own library
    keeps_order: bool  # whether the library lists the tensors in the order given

    def __str__(self) -> str:
        return self.format


_NUMBERS = (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "complex64",
)  # fmt: skip
_FLOAT8 = ("float8_e5m2", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu")

SAFETENSORS = Writer(
    "safetensors",
    ".safetensors",
    safetensors_format.save,
    (*_NUMBERS, "bfloat16", *_FLOAT8),
    (lambda path: {name: _from_torch(tensor) for name, tensor in safetensors.torch.load_file(path).items()},),
    keeps_order=False,  # sorted by dtype, then name
)
NPZ = Writer("npz", ".npz", numpy_files.save, (*_NUMBERS, "complex128"), (_load_npz,), keeps_order=True)
PYTORCH = Writer(
    "pytorch",
    ".pt",
    pytorch_writer.save,
    (*_NUMBERS, "complex128", "bfloat16", *_FLOAT8),
    (lambda path: _load_torch(path, mmap=False), lambda path: _load_torch(path, mmap=True)),
    keeps_order=True,
)
WRITERS = [SAFETENSORS, NPZ, PYTORCH]


def _random(dtype: np.dtype, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Random bits (NaNs and all) of ``dtype``; bools 0 or 1."""
    rng = np.random.default_rng(seed)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(bool)
    count = int(np.prod(shape)) * dtype.itemsize
    return rng.integers(0, 256, size=count, dtype=np.uint8).view(dtype).reshape(shape)


def _tensors(writer: Writer) -> dict[str, np.ndarray]:
    """One tensor of every dtype the writer holds, and the awkward layouts."""
    tensors = {f"dtype.{name}": _random(_dtype(name), (2, 3), seed) for seed, name in enumerate(writer.dtypes)}
    transposed = np.arange(12, dtype=np.float32).reshape(3, 4).T
    assert not transposed.flags.c_contiguous
    tensors.update(
        {
            "scalar": np.array(2.5, dtype=np.float64),
            "empty": np.zeros((3, 0, 2), dtype=np.int16),
            "transposed": transposed,
            "strided": np.arange(20, dtype=np.int64)[::3],
            "big_endian.f4": np.arange(6, dtype=">f4").reshape(2, 3),
            "big_endian.i8": np.arange(-3, 3, dtype=">i8"),
            "layer/0.weight": np.ones((4, 2), dtype=np.float32),  # a member path in an .npz
            "née": np.zeros(2, dtype=np.uint8),
        }
    )
    tensors["shares_memory"] = tensors["transposed"][1:]  # written again, not aliased
    return tensors


def _assert_all_equal(expected: dict[str, np.ndarray], got: dict[str, np.ndarray], *, ordered: bool) -> None:
    if ordered:
        assert list(got) == list(expected)
    assert sorted(got) == sorted(expected)
    for name, value in expected.items():
        # Big-endian inputs come back little-endian: compare the values in native order.
        assert_same_tensor(np.asarray(value, dtype=value.dtype.newbyteorder("=")), got[name])


@pytest.mark.parametrize("writer", WRITERS, ids=str)
def test_weightscope_save_writes_each_format(writer: Writer, tmp_path: Path) -> None:
    tensors = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros(3, dtype=np.int64)}
    path = ws.save(tensors, tmp_path / f"model{writer.suffix}", format=writer.format)
    with ws.open(path) as ckpt:
        assert ckpt.format == writer.format
        _assert_all_equal(tensors, {name: ckpt[name] for name in ckpt}, ordered=False)


@pytest.mark.parametrize(
    ("writer", "tensors", "message"),
    [
        (SAFETENSORS, {"c": np.zeros(2, np.complex128)}, "tensor 'c': safetensors holds no complex128"),
        (SAFETENSORS, {"s": np.array(["a"])}, "tensor 's': safetensors holds no <U1"),
        (SAFETENSORS, {"__metadata__": np.zeros(1)}, "tensor '__metadata__': the name is reserved"),
        (SAFETENSORS, {"\udc80": np.zeros(1)}, "not valid UTF-8"),
        (
            NPZ,
            {"b": np.zeros(2, ml_dtypes.bfloat16)},
            "tensor 'b': .npz holds no bfloat16: np.save records it as '<V2'",
        ),
        (NPZ, {"f": np.zeros(2, ml_dtypes.float8_e4m3fn)}, "tensor 'f': .npz holds no float8_e4m3fn: .*'<V1'"),
        (NPZ, {"f": np.zeros(2, ml_dtypes.float8_e5m2)}, "tensor 'f': .npz holds no float8_e5m2: .*'<f1'"),
        (NPZ, {"o": np.array([None])}, "tensor 'o': .npz holds no object"),
        (NPZ, {"../evil": np.zeros(1)}, r"tensor '\.\./evil': not a safe \.npz member path"),
        (NPZ, {"/abs": np.zeros(1)}, "tensor '/abs': not a safe"),
        (NPZ, {"a//b": np.zeros(1)}, "tensor 'a//b': not a safe"),
        (NPZ, {"a\\b": np.zeros(1)}, "not a safe"),
        (NPZ, {"x" * 70_000: np.zeros(1)}, "a name of 70004 bytes; zip member names hold 65535"),
        (PYTORCH, {"i": np.zeros(2, ml_dtypes.int4)}, "tensor 'i': PyTorch holds no int4"),
        (PYTORCH, {"s": np.array([b"x"])}, "tensor 's': PyTorch holds no |S1"),
        (PYTORCH, {"\udc80": np.zeros(1)}, "not valid UTF-8"),
    ],
    ids=lambda value: str(value) if isinstance(value, Writer) else "",
)
def test_refused_before_any_file_is_made(writer: Writer, tensors: dict, message: str, tmp_path: Path) -> None:
    tensors = {"first": np.ones(3, np.float32), **tensors}  # refused even after a good tensor
    # A type the format cannot hold is unsupported (exit 5); a name it cannot hold, a usage error (2).
    error = ws.UnsupportedFormatError if "holds no" in message else ws.UsageError
    with pytest.raises(error, match=message) as caught:
        writer.save(tensors, tmp_path / "out" / f"model{writer.suffix}")
    assert type(caught.value) is error
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("writer", WRITERS, ids=str)
def test_a_directory_is_no_target(writer: Writer, tmp_path: Path) -> None:
    with pytest.raises(ws.UsageError, match="is a directory"):
        writer.save({"w": np.zeros(1)}, tmp_path)


# Every writer, TensorFlow's and Keras's included, by the suffix ws.save knows it by.
EVERY_WRITER = {
    "safetensors": ".safetensors",
    "npz": ".npz",
    "pytorch": ".pt",
    "keras": ".weights.h5",
    "tensorflow": ".ckpt",
}


class _Lying:
    """A ``Tensors`` whose names or arrays are not what it planned: a Keras-shaped dense layer."""

    def __init__(self, names: list[str], array: np.ndarray) -> None:
        self._names, self._array = names, array

    def names(self) -> list[str]:
        return self._names

    def spec(self, name: str) -> tuple[np.dtype, tuple[int, ...]]:
        return np.dtype(np.float32), (2, 2)

    def array(self, name: str) -> np.ndarray:
        return self._array


@pytest.mark.parametrize("format", EVERY_WRITER)
@pytest.mark.parametrize(
    ("array", "found"),
    [(np.zeros((3, 2), np.float64), r"float64 of shape \[3, 2\]"), (np.zeros((2, 2), np.int32), "int32")],
    ids=["dtype and shape", "dtype"],
)
def test_an_array_unlike_its_plan_is_refused_and_nothing_is_left(
    format: str, array: np.ndarray, found: str, tmp_path: Path
) -> None:
    tensors = _Lying(["dense/kernel"], array)
    message = rf"tensor 'dense/kernel': planned as float32 of shape \[2, 2\], but its array is {found}"
    with pytest.raises(ws.UsageError, match=message):
        ws.save(tensors, tmp_path / f"model{EVERY_WRITER[format]}", format=format)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("format", EVERY_WRITER)
def test_a_name_given_twice_is_refused_before_a_file_is_made(format: str, tmp_path: Path) -> None:
    tensors = _Lying(["dense/kernel", "dense/bias", "dense/kernel"], np.zeros((2, 2), np.float32))
    with pytest.raises(ws.UsageError, match="tensor 'dense/kernel' is given twice"):
        ws.save(tensors, tmp_path / f"model{EVERY_WRITER[format]}", format=format)
    assert list(tmp_path.iterdir()) == []


# -- the bytes the libraries write -----------------------------------------------------------


def _little_endian(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: np.array(value, dtype=value.dtype.newbyteorder("<"), order="C") for name, value in tensors.items()}


def test_safetensors_bytes_are_the_reference_writers(tmp_path: Path) -> None:
    tensors = _tensors(SAFETENSORS)
    metadata = {"note": "ünïcode"}  # one key: the reference orders several at random (a Rust HashMap)
    ours = safetensors_format.save(tensors, tmp_path / "ours.safetensors", metadata=metadata)
    save_file(_little_endian(tensors), tmp_path / "theirs.safetensors", metadata=metadata)
    data = ours.read_bytes()
    assert data == (tmp_path / "theirs.safetensors").read_bytes()
    (length,) = struct.unpack_from("<Q", data)
    assert (8 + length) % 8 == 0
    assert next(iter(json.loads(data[8 : 8 + length]))) == "__metadata__"


def test_safetensors_metadata_keeps_the_order_given(tmp_path: Path) -> None:
    metadata = {"z": "1", "format": "pt", "a": "ü"}
    path = safetensors_format.save({"w": np.zeros(2)}, tmp_path / "model.safetensors", metadata=metadata)
    (length,) = struct.unpack_from("<Q", path.read_bytes())
    assert list(json.loads(path.read_bytes()[8 : 8 + length])["__metadata__"].items()) == list(metadata.items())
    with safetensors.safe_open(path, "np") as opened:
        assert opened.metadata() == metadata


@pytest.mark.parametrize("metadata", [{"k": 1}, {2: "v"}, ["k"]])
def test_safetensors_metadata_must_map_strings_to_strings(metadata: object, tmp_path: Path) -> None:
    with pytest.raises(ws.UsageError, match="metadata must map strings to strings"):
        safetensors_format.save({"w": np.zeros(2)}, tmp_path / "model.safetensors", metadata=metadata)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_safetensors_without_tensors_or_metadata(tmp_path: Path) -> None:
    ours = safetensors_format.save({}, tmp_path / "ours.safetensors")
    save_file({}, tmp_path / "theirs.safetensors")
    assert ours.read_bytes() == (tmp_path / "theirs.safetensors").read_bytes()


def test_npz_members_are_what_np_savez_writes(tmp_path: Path) -> None:
    tensors = _tensors(NPZ)
    ours = numpy_files.save(tensors, tmp_path / "ours.npz")
    np.savez(tmp_path / "theirs.npz", **_little_endian(tensors))
    with zipfile.ZipFile(ours) as mine, zipfile.ZipFile(tmp_path / "theirs.npz") as theirs:
        assert mine.testzip() is None
        assert mine.namelist() == theirs.namelist()
        for member in theirs.namelist():
            assert mine.read(member) == theirs.read(member), member
        for entry in mine.infolist():
            assert entry.compress_type == zipfile.ZIP_STORED
            assert (_data_start(ours, entry) + 128) % 64 == 0  # after a 128-byte .npy header


def _data_start(path: Path, entry: zipfile.ZipInfo) -> int:
    with path.open("rb") as handle:
        handle.seek(entry.header_offset + 26)
        name_length, extra_length = struct.unpack("<HH", handle.read(4))
    return entry.header_offset + 30 + name_length + extra_length


def test_npy_header_moves_to_version_2_when_too_long_for_1() -> None:
    shape = (1,) * 30_000  # "1, " each: over 65,535 bytes
    header = numpy_files.npy_header("w", np.dtype(np.float32), shape)
    assert header[6:8] == b"\x02\x00" and len(header) % 64 == 0
    assert numpy_files.npy_header("w", np.dtype(">f4"), (2,))[6:8] == b"\x01\x00"


def _torch_state_dict(tensors: dict[str, np.ndarray]) -> collections.OrderedDict[str, torch.Tensor]:
    result = collections.OrderedDict()
    for name, value in _little_endian(tensors).items():
        tensor = torch.empty(value.shape, dtype=getattr(torch, value.dtype.name))
        tensor.reshape(-1).view(torch.uint8).copy_(torch.from_numpy(value.reshape(-1).view(np.uint8)))
        result[name] = tensor
    return result


def test_pytorch_archive_is_what_torch_save_writes(tmp_path: Path) -> None:
    tensors = _tensors(PYTORCH)
    ours = pytorch_writer.save(tensors, tmp_path / "ours.pt")
    torch.save(_torch_state_dict(tensors), tmp_path / "theirs.pt")
    with zipfile.ZipFile(ours) as mine, zipfile.ZipFile(tmp_path / "theirs.pt") as theirs:
        assert mine.testzip() is None
        names = [name.removeprefix("archive/") for name in mine.namelist()]
        assert names == [name.removeprefix("theirs/") for name in theirs.namelist()]
        for name in names:
            if name != ".data/serialization_id":  # torch's is a hash of its own
                assert mine.read(f"archive/{name}") == theirs.read(f"theirs/{name}"), name
        for entry in mine.infolist():
            assert entry.compress_type == zipfile.ZIP_STORED
            assert _data_start(ours, entry) % 64 == 0, entry.filename
        assert len(mine.read("archive/.data/serialization_id")) == 40


def test_pytorch_dict_of_more_than_one_batch_of_items(tmp_path: Path) -> None:
    tensors = {f"t{index}": np.full(1, index, dtype=np.int32) for index in range(1001)}
    ours = pytorch_writer.save(tensors, tmp_path / "ours.pt")
    torch.save(_torch_state_dict(tensors), tmp_path / "theirs.pt")
    with zipfile.ZipFile(ours) as mine, zipfile.ZipFile(tmp_path / "theirs.pt") as theirs:
        assert mine.read("archive/data.pkl") == theirs.read("theirs/data.pkl")
    _assert_all_equal(tensors, _load_torch(ours, mmap=True), ordered=True)


@pytest.mark.parametrize("writer", [NPZ, PYTORCH], ids=str)
def test_zip64_records_read_back(writer: Writer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every size and offset past the limit: the zip64 fields and records of a file over 4 GiB.
    monkeypatch.setattr(zip_container, "ZIP64_LIMIT", 0)
    tensors = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros((), dtype=np.int64)}
    path = writer.save(tensors, tmp_path / f"model{writer.suffix}")
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        assert all(entry.extract_version == 45 for entry in archive.infolist())
    for read in writer.readers:
        _assert_all_equal(tensors, read(path), ordered=True)
    with ws.open(path) as ckpt:
        _assert_all_equal(tensors, {name: ckpt[name] for name in ckpt}, ordered=False)


class _Recording:
    """A ``Tensors`` that records the calls a writer makes."""

    def __init__(self, tensors: dict[str, np.ndarray]) -> None:
        self.tensors = tensors
        self.calls: list[tuple[str, str]] = []

    def names(self) -> list[str]:
        return list(self.tensors)

    def spec(self, name: str) -> tuple[np.dtype, tuple[int, ...]]:
        self.calls.append(("spec", name))
        return self.tensors[name].dtype, self.tensors[name].shape

    def array(self, name: str) -> np.ndarray:
        self.calls.append(("array", name))
        return self.tensors[name]


@pytest.mark.parametrize("writer", WRITERS, ids=str)
def test_writers_plan_from_specs_then_ask_each_array_once(writer: Writer, tmp_path: Path) -> None:
    source = _Recording({"b": np.ones(3, np.float32), "a": np.zeros((2, 2), np.int64), "c": np.ones(1, np.uint8)})
    writer.save(source, tmp_path / f"model{writer.suffix}")
    kinds = [kind for kind, _ in source.calls]
    assert kinds == sorted(kinds, key=("spec", "array").index)  # every spec before any array
    arrays = [name for kind, name in source.calls if kind == "array"]
    assert sorted(arrays) == ["a", "b", "c"]
    if writer.keeps_order:
        assert arrays == ["b", "a", "c"]


class _Pieces:
    """Tensors given in pieces (``writing.PiecewiseTensors``), as a ZeRO checkpoint's parameters are: each array's
    flat elements cut at ``cuts``, the pieces' dtype or total size falsified when asked."""

    def __init__(
        self, tensors: dict[str, np.ndarray], cuts: list[int], dtype: str | None = None, drop: int = 0
    ) -> None:
        self.tensors, self.cuts, self.dtype, self.drop = tensors, cuts, dtype, drop
        self.calls: list[str] = []

    def names(self) -> list[str]:
        return list(self.tensors)

    def spec(self, name: str) -> tuple[np.dtype, tuple[int, ...]]:
        return self.tensors[name].dtype, self.tensors[name].shape

    def array(self, name: str) -> np.ndarray:
        self.calls.append(f"array {name}")
        return self.tensors[name]

    def pieces(self, name: str) -> list[np.ndarray]:
        self.calls.append(f"pieces {name}")
        flat = self.tensors[name].reshape(-1)[: self.tensors[name].size - self.drop]
        parts = np.split(flat, [cut for cut in self.cuts if cut < flat.size])
        return [part.astype(self.dtype) if self.dtype else part for part in parts]


def test_safetensors_written_from_pieces_are_the_reference_writers_bytes(tmp_path: Path) -> None:
    """Pieces (views, none copied: the big-endian ones aside) one after another are the tensor's bytes: the file is
    the reference writer's of the whole arrays, and only ``pieces`` is asked, never ``array``."""
    rng = np.random.default_rng(0)
    tensors = {
        "w": rng.standard_normal((5, 7)).astype(np.float32),
        "b": rng.standard_normal(7).astype(">f4"),  # copied to little-endian piece by piece
        "i": rng.integers(-9, 9, (3, 4), dtype=np.int64),
    }
    source = _Pieces(tensors, [0, 3, 10, 11])  # an empty piece first, and pieces of 3, 7, 1 and the rest
    ours = safetensors_format.save(source, tmp_path / "ours.safetensors")
    save_file(_little_endian(tensors), tmp_path / "theirs.safetensors")
    assert ours.read_bytes() == (tmp_path / "theirs.safetensors").read_bytes()
    assert sorted(source.calls) == ["pieces b", "pieces i", "pieces w"]


@pytest.mark.parametrize(
    ("dtype", "drop", "message"),
    [
        ("float64", 0, r"tensor 'w': planned as float32, but its pieces are not all flat float32"),
        (None, 1, r"tensor 'w': planned as \[5, 7\], but its pieces hold 34 elements"),
    ],
    ids=["dtype", "size"],
)
def test_pieces_unlike_their_plan_are_refused_and_nothing_is_left(
    dtype: str | None, drop: int, message: str, tmp_path: Path
) -> None:
    source = _Pieces({"w": np.zeros((5, 7), np.float32)}, [10], dtype, drop)
    with pytest.raises(ws.UsageError, match=message):
        safetensors_format.save(source, tmp_path / "model.safetensors")
    assert list(tmp_path.iterdir()) == []
