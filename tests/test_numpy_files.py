""".npy and .npz files, written by numpy and read back by weightscope as np.load reads them."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from conftest import assert_refused, assert_same_tensor

import weightscope as ws
from weightscope.cli import main
from weightscope.formats.numpy_files import NpyCheckpoint, NpzCheckpoint

DTYPES = [
    "?", "i1", "u1", "<i2", ">i2", "<u2", "<i4", ">i4", "<u4", "<i8", ">i8", "<u8", "<f2", ">f2", "<f4", ">f4",
    "<f8", ">f8", np.longdouble, "<c8", ">c8", "<c16", ">c16", np.clongdouble, "S5", "<U3", ">U3", "V4",
    "<M8[ns]", ">m8[s]", [("a", "<i4"), ("b", ">f8", (2,))], ml_dtypes.bfloat16,
]  # fmt: skip
SHAPES = [(), (0,), (3, 0), (5,), (3, 4), (2, 3, 4)]


def _random(dtype: np.dtype, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(bool)
    raw = rng.integers(0, 256, int(np.prod(shape)) * dtype.itemsize, dtype=np.uint8)
    return raw.view(dtype).reshape(shape)


def _arrays() -> dict[str, np.ndarray]:
    """Every dtype in every shape, C and Fortran order; names safe as file names."""
    rng = np.random.default_rng(7)
    arrays = {}
    for i, dtype in enumerate(map(np.dtype, DTYPES)):
        for shape in SHAPES:
            array = _random(dtype, shape, rng)
            arrays[f"t{i}_{'x'.join(map(str, shape)) or 'scalar'}"] = array
            if len(shape) > 1:
                arrays[f"t{i}_{'x'.join(map(str, shape))}_fortran"] = np.asfortranarray(array)
    return arrays


ARRAYS = _arrays()


def test_npy_files_read_as_np_load_reads_them(tmp_path: Path) -> None:
    for name, array in ARRAYS.items():
        path = tmp_path / f"{name}.npy"
        np.save(path, array)
        with ws.open(path) as ckpt:
            assert isinstance(ckpt, NpyCheckpoint) and list(ckpt) == [name]
            ours = ckpt[name]
            assert_same_tensor(ours, np.load(path))
            assert not ours.flags.writeable and not ours.flags.owndata  # a view of the mapped file
            if name.endswith("fortran") and ours.size:
                assert ours.flags.f_contiguous and not ours.flags.c_contiguous
            assert ckpt.verify() == []


def test_old_and_new_header_versions(tmp_path: Path) -> None:
    array = np.arange(6, dtype=">i4").reshape(2, 3)
    for version in [(1, 0), (2, 0), (3, 0)]:
        path = tmp_path / f"v{version[0]}.npy"
        with path.open("wb") as handle:
            np.lib.format.write_array(handle, array, version=version)
        with ws.open(path) as ckpt:
            assert_same_tensor(ckpt[path.stem], array)


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_members_read_as_np_load_reads_them(save: object, tmp_path: Path) -> None:
    path = tmp_path / "arrays.npz"
    save(path, **ARRAYS)  # type: ignore[operator]
    raw = path.read_bytes()
    with ws.open(path) as ckpt, np.load(path) as theirs:
        assert isinstance(ckpt, NpzCheckpoint)
        assert list(ckpt) == theirs.files
        for name in ckpt:
            ours = ckpt[name]
            assert_same_tensor(ours, theirs[name])
            assert not ours.flags.writeable
            info = ckpt.info(name)
            if save is np.savez and ours.size:  # stored members: views of the file at the offset listed
                assert raw[info.offset : info.offset + info.nbytes] == ours.tobytes(order="A")
                assert not ours.flags.owndata
        assert ckpt.verify() == []


def test_command_line_on_npy_and_npz(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    npz = tmp_path / "model.npz"
    np.savez_compressed(npz, **{"layer1.weight": np.ones((3, 2), np.float32), "layer1.bias": np.zeros(3)})
    npy = tmp_path / "embedding.npy"
    np.save(npy, np.arange(4, dtype=np.int16))
    assert main(["ls", str(npz)]) == 0
    assert "layer1.weight" in capsys.readouterr().out
    assert main(["layers", str(npz)]) == 0
    assert "layer1" in capsys.readouterr().out
    assert main(["show", str(npy), "embedding"]) == 0
    assert capsys.readouterr().out == "[0 1 2 3]\n"
    for path in (npz, npy):
        assert main(["verify", str(path)]) == 0
        assert capsys.readouterr().out.startswith("OK:")


def test_found_by_content_whatever_its_name(tmp_path: Path) -> None:
    np.save(tmp_path / "array.npy", np.arange(3))
    (tmp_path / "array.npy").rename(tmp_path / "array.bin")
    np.savez(tmp_path / "bundle.npz", x=np.arange(3))
    (tmp_path / "bundle.npz").rename(tmp_path / "bundle.zip")
    with ws.open(tmp_path / "array.bin") as npy, ws.open(tmp_path / "bundle.zip") as npz:
        assert (npy.format, list(npy), npz.format, list(npz)) == ("npy", ["array"], "npz", ["x"])


def test_member_names_are_only_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "odd.npz"
    names = ["../../etc/passwd", "/abs", "bell\x07and\x1b[31mred"]
    np.savez(path, **{name: np.arange(2) for name in names})
    with ws.open(path) as ckpt:
        assert list(ckpt) == names
        assert_same_tensor(ckpt["/abs"], np.arange(2))
    assert main(["ls", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "bell\\x07and\\x1b[31mred" in out
    assert not (tmp_path / "abs").exists()


# -- damaged files -------------------------------------------------------------------------
def _npy(header: str, data: bytes = b"", version: tuple[int, int] = (1, 0)) -> bytes:
    text = header.encode("latin1")
    length = struct.pack("<H" if version == (1, 0) else "<I", len(text))
    return b"\x93NUMPY" + bytes(version) + length + text + data


GOOD_HEADER = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }"
PAYLOAD = "{'descr': __import__('os').system('touch pwned'), 'fortran_order': False, 'shape': (1,), }"
# fmt: off
BROKEN_NPY = {
    "a file cut in the magic": (b"\x93NUM", ws.TruncatedFileError, "EOF in the .npy magic"),
    "no magic": (b"NUMPY\x01\x00" + bytes(100), ws.CorruptCheckpointError, "not a .npy array"),
    "a version numpy never wrote": (_npy(GOOD_HEADER, version=(9, 0)), ws.UnsupportedFormatError, "version 9.0"),
    "a truncated header": (_npy(GOOD_HEADER)[:30], ws.TruncatedFileError, "EOF in the .npy header"),
    "a header over numpy's limit": (_npy(" " * 20_000, version=(2, 0)), ws.CorruptCheckpointError, "over the limit"),
    "a header that is code": (_npy(PAYLOAD), ws.CorruptCheckpointError, "not a Python literal"),
    "a header missing a key": (_npy("{'descr': '<f4', 'shape': (2,)}"), ws.CorruptCheckpointError, "not a dict of"),
    "a negative dimension": (_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,)}"), ws.CorruptCheckpointError, r"shape \(-2,\)"),  # noqa: E501
    "an unknown descr": (_npy("{'descr': '<q9', 'fortran_order': False, 'shape': (2,)}"), ws.UnsupportedFormatError, "not a dtype"),  # noqa: E501
    "an object array": (_npy("{'descr': '|O', 'fortran_order': False, 'shape': (2,)}"), ws.RefusedError, "tensor 'broken' holds Python objects \\(pickle\\); weightscope never unpickles"),  # noqa: E501
    "objects in a field": (_npy("{'descr': [('a', '<i4'), ('b', '|O')], 'fortran_order': False, 'shape': ()}"), ws.RefusedError, "holds Python objects"),  # noqa: E501
    "a huge shape (2**64 elements)": (_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296)}", b"\0" * 8), ws.TruncatedFileError, r"'broken' has \d+ bytes of data; shape \[4294967296, 4294967296\] of float64 needs 147573952589676412928"),  # noqa: E501
    "70 dimensions": (_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (" + "1," * 70 + ")}", b"\0" * 4), ws.UnsupportedFormatError, "70 dimensions; numpy arrays hold"),  # noqa: E501
    "data shorter than the shape": (_npy(GOOD_HEADER, b"\0" * 7), ws.TruncatedFileError, "'broken' has 7 bytes of data; shape \\[2\\] of float32 needs 8"),  # noqa: E501
}
# fmt: on


@pytest.mark.parametrize("damage", BROKEN_NPY)
def test_damaged_npy_files_raise_their_typed_error(
    damage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    content, error, message = BROKEN_NPY[damage]
    path = tmp_path / "broken.npy"
    path.write_bytes(content)
    monkeypatch.chdir(tmp_path)
    assert_refused(path, error, message, capsys)
    assert not (tmp_path / "pwned").exists()


def test_pickled_object_array_made_by_numpy_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "objects.npy"
    np.save(path, np.array([1, "two", None], dtype=object), allow_pickle=True)
    assert_refused(path, ws.RefusedError, "'objects' holds Python objects", capsys)


def _patch(path: Path, offset: int, value: bytes) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset : offset + len(value)] = value
    path.write_bytes(raw)


def _member_data_offset(path: Path, member: str) -> int:
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    raw = path.read_bytes()
    name_length, extra_length = struct.unpack_from("<HH", raw, info.header_offset + 26)
    return info.header_offset + 30 + name_length + extra_length


def test_damaged_stored_member_fails_its_crc(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "weights.npz"
    np.savez(path, good=np.arange(4.0), bad=np.arange(100.0))
    _patch(path, _member_data_offset(path, "bad.npy") + 200, b"\xff")
    with ws.open(path) as ckpt:  # listing reads no data
        assert_same_tensor(ckpt["good"], np.arange(4.0))
        with pytest.raises(ws.ChecksumMismatchError, match=f"{path}: tensor 'bad' is damaged: stored CRC-32"):
            ckpt["bad"]
        problems = ckpt.verify()
    assert [type(problem) for problem in problems] == [ws.ChecksumMismatchError]
    with ws.open(path, verify=False) as ckpt:
        assert ckpt["bad"].tobytes() != np.arange(100.0).tobytes()  # read, damage and all
    assert main(["ls", str(path)]) == 0
    assert main(["verify", str(path)]) == ws.ChecksumMismatchError.exit_status
    out, err = capsys.readouterr()
    assert "DAMAGED" in out and "tensor 'bad'" in out and "1 of 2 tensors damaged" in err


def test_damaged_deflated_member(tmp_path: Path) -> None:
    path = tmp_path / "weights.npz"
    np.savez_compressed(path, good=np.zeros(4), bad=np.random.default_rng(1).normal(size=1000))
    offset = _member_data_offset(path, "bad.npy")
    _patch(path, offset + 400, bytes(8))
    with ws.open(path) as ckpt:
        with pytest.raises(ws.CorruptCheckpointError, match=f"{path}: tensor 'bad'"):
            ckpt["bad"]
        assert [type(problem).__name__ for problem in ckpt.verify()] in (
            ["CorruptCheckpointError"],
            ["ChecksumMismatchError"],
        )


def test_zip_bomb_is_refused_before_inflating(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive, archive.open("x.npy", "w") as member:
        np.save(member, np.zeros(1000))
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("x.npy")
    directory = path.read_bytes().index(b"PK\x01\x02")
    for field in (directory + 24, 22):  # the declared (inflated) size, in the directory and the local header
        _patch(path, field, struct.pack("<I", 0xFFFF_FFF0))
    assert_refused(
        path, ws.CorruptCheckpointError, rf"declares 4294967280 bytes inflated from {info.compress_size}", capsys
    )


def test_npz_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cut.npz"
    np.savez(path, x=np.arange(100))
    path.write_bytes(path.read_bytes()[:500])
    assert_refused(path, ws.CorruptCheckpointError, "not a readable zip archive", capsys)
    path = tmp_path / "objects.npz"
    np.savez(path, fine=np.arange(2), objects=np.array([{}], dtype=object), allow_pickle=True)
    assert_refused(path, ws.RefusedError, "member 'objects.npy' holds Python objects", capsys)
    path = tmp_path / "bzip2.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_BZIP2) as archive:
        archive.writestr("x.npy", b"")
    assert_refused(path, ws.UnsupportedFormatError, "zip method 12", capsys)
