"""safetensors files, written by the safetensors library and read back by weightscope."""

from __future__ import annotations

import json
import random
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import safetensors
from conftest import assert_refused, assert_same_tensor
from safetensors.numpy import load_file, save_file

import weightscope as ws
from weightscope.cli import main
from weightscope.dtypes import ELEMENT_TYPES, PACKED_BITS
from weightscope.formats import FORMATS
from weightscope.formats.safetensors import _COMPACT_COST, _HEADER_COSTS, SafetensorsCheckpoint
from weightscope.limits import MEMORY_VARIABLE, Limits, json_cost

# The packed sub-byte types (F4, F6_*), which the library's numpy and torch loaders do not read: see test_quant.
READABLE = [e for e in ELEMENT_TYPES if e.safetensors and e.dtype is not None and e.name not in PACKED_BITS]
# The safetensors library's numpy loader has no float8 types; its parser still checks their files.
NUMPY_LOADABLE = [element for element in READABLE if not element.name.startswith("float8")]
SHAPES = [(), (0,), (3, 0, 2), (7,), (2, 3, 4)]


def _random(dtype: np.dtype, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Any bit patterns (NaNs, infinities, subnormals) of ``dtype``; booleans 0 or 1."""
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(bool)
    raw = rng.integers(0, 256, int(np.prod(shape)) * dtype.itemsize, dtype=np.uint8)
    return raw.view(dtype).reshape(shape)


def _tensors(elements: list, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        f"{element.name}/{'x'.join(map(str, shape)) or 'scalar'}": _random(element.dtype, shape, rng)
        for element in elements
        for shape in SHAPES
    }


def test_every_dtype_and_shape_reads_as_the_library_reads_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    path = tmp_path / "numpy.safetensors"
    tensors = _tensors(NUMPY_LOADABLE, rng)
    save_file(tensors, path, metadata={"format": "np", "epoch": "3"})
    theirs = load_file(path)
    with ws.open(path) as ckpt:
        assert isinstance(ckpt, SafetensorsCheckpoint)
        with safetensors.safe_open(path, "np") as reference:
            assert list(ckpt) == list(reference.keys())  # sorted by name, as safe_open lists them
        assert ckpt.metadata == {"format": "np", "epoch": "3"}
        for name, array in tensors.items():
            ours = ckpt[name]
            assert_same_tensor(ours, theirs[name])
            assert_same_tensor(ours, array)
            assert not ours.flags.writeable
            assert ckpt.info(name).type_name == name.split("/")[0]
        assert ckpt.verify() == []


def test_float8_types_match_the_reference_parser(tmp_path: Path) -> None:
    path = tmp_path / "float8.safetensors"
    tensors = _tensors([element for element in READABLE if element not in NUMPY_LOADABLE], np.random.default_rng(8))
    save_file(tensors, path)
    reference = dict(safetensors.deserialize(path.read_bytes()))
    with ws.open(path) as ckpt:
        assert ckpt.metadata == {}
        for name, array in tensors.items():
            ours = ckpt[name]
            assert_same_tensor(ours, array)
            assert ours.tobytes() == bytes(reference[name]["data"])
            assert list(ours.shape) == reference[name]["shape"]
            assert ckpt.info(name).type_name == name.split("/")[0]


def test_arrays_are_views_of_the_file_where_the_header_says(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file({"b": np.arange(4, dtype=np.float32), "a": np.arange(3, dtype=np.int16)}, path)
    raw = path.read_bytes()
    with ws.open(path) as ckpt:
        for name in ckpt:
            info = ckpt.info(name)
            assert raw[info.offset : info.offset + info.nbytes] == ckpt[name].tobytes()
            assert not ckpt[name].flags.owndata


def test_command_line_on_a_safetensors_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "model.safetensors"
    weight = np.arange(6, dtype=np.float32).reshape(3, 2)
    save_file({"layer1.weight": weight, "layer1.bias": np.ones(3, np.float32)}, path)
    assert main(["ls", str(path)]) == 0
    out = capsys.readouterr().out
    assert "layer1.weight" in out and "[3, 2]" in out and "2 tensors, 9 parameters" in out
    assert main(["layers", "--json", str(path)]) == 0
    (layer,) = json.loads(capsys.readouterr().out)
    assert layer["layer"] == "layer1" and set(layer["parameters"]) == {"weight", "bias"}
    assert main(["show", str(path), "layer1.weight"]) == 0
    assert capsys.readouterr().out == f"{weight}\n"
    assert main(["verify", str(path)]) == 0
    assert capsys.readouterr().out.startswith("OK: 2 tensors")


def test_found_by_content_whatever_its_name(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    save_file({"x": np.zeros(2, np.float32)}, path)
    with ws.open(path) as ckpt:
        assert ckpt.format == "safetensors" and list(ckpt) == ["x"]


def test_tensorflow_files_are_not_taken_for_safetensors(tf_checkpoints: dict[str, Path]) -> None:
    prefix = tf_checkpoints["seed"]
    for path in (Path(f"{prefix}.index"), Path(f"{prefix}.data-00000-of-00001")):
        assert not any(FORMATS[name].sniff(path) for name in ("safetensors", "npy", "npz"))
        assert ws.open(path).format == "tensorflow"


# -- damaged files -------------------------------------------------------------------------
def _file(header: dict | bytes, data: bytes = b"") -> bytes:
    """A safetensors file of ``header`` (a dict as JSON, or raw bytes) and ``data``."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def _entry(dtype: str, shape: list[int], begin: int, end: int) -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


A = {"a": _entry("F32", [2], 0, 8)}
# fmt: off
BROKEN = {
    "a file shorter than its header length": (b"\x10\0\0\0", ws.TruncatedFileError, "EOF reading the header length"),
    "a header length past the end": (struct.pack("<Q", 1000) + b"{}", ws.TruncatedFileError, "EOF reading the JSON"),
    "a header length over the limit": (struct.pack("<Q", 1 << 40) + b"{}", ws.CorruptCheckpointError, "exceeds"),
    "a header that is not JSON": (_file(b"{not json"), ws.CorruptCheckpointError, "not UTF-8 JSON"),
    "a header that is not UTF-8": (_file(b'{"\xff": 1}'), ws.CorruptCheckpointError, "not UTF-8 JSON"),
    "a header that is a list": (_file(b"[1, 2]"), ws.CorruptCheckpointError, "a JSON list, not an object"),
    "a name given twice": (_file(b'{"a": {}, "a": {}}'), ws.CorruptCheckpointError, "names 'a' twice"),
    "an unknown dtype": (_file({"a": _entry("F7", [], 0, 0)}), ws.UnsupportedFormatError, "'a' has unknown dtype 'F7'"),
    "packed 4-bit values in half a byte": (
        _file({"a": _entry("F4", [3], 0, 2)}, b"\0\0"), ws.CorruptCheckpointError, "12 bits, no whole number of bytes"
    ),
    "a negative dimension": (_file({"a": _entry("F32", [-1], 0, 0)}), ws.CorruptCheckpointError, r"shape \[-1\]"),
    "offsets reversed": (_file({"a": _entry("F32", [0], 4, 0)}), ws.CorruptCheckpointError, "'a' has data_offsets"),
    "offsets past the end of the file": (_file(A, b"\0" * 4), ws.TruncatedFileError, "'a': bytes .* past the end"),
    "a byte count wrong for the shape": (
        _file({"a": _entry("F32", [3], 0, 8)}, b"\0" * 8),
        ws.CorruptCheckpointError,
        r"'a': data_offsets \[0, 8\] hold 8 bytes; shape \[3\] of float32 needs 12",
    ),
    "overlapping tensors": (
        _file(A | {"b": _entry("F32", [2], 4, 12)}, b"\0" * 12), ws.CorruptCheckpointError, "'b' .* overlaps tensor 'a'"
    ),
    "a hole between tensors": (
        _file(A | {"b": _entry("F32", [1], 12, 16)}, b"\0" * 16),
        ws.CorruptCheckpointError,
        "a hole of 4 bytes .* before tensor 'b'",
    ),
    "bytes after the last tensor": (_file(A, b"\0" * 9), ws.CorruptCheckpointError, "1 bytes .* after the last tensor"),
    "a huge shape whose offsets match it": (  # 2**62 elements: past the end of the file, before any allocation
        _file({"a": _entry("F32", [1 << 31, 1 << 31], 0, 1 << 64)}, b"\0" * 8),
        ws.TruncatedFileError,
        "'a': bytes .* past the end of the file",
    ),
    "an int of 5000 digits": (  # json raises a plain ValueError past Python's 4300 digits
        _file(b'{"a": {"dtype": "F32", "shape": [1' + b"0" * 5000 + b'], "data_offsets": [0, 4]}}', b"\0" * 4),
        ws.CorruptCheckpointError,
        "not UTF-8 JSON",
    ),
    "70 dimensions": (_file({"a": _entry("F32", [1] * 70, 0, 4)}, b"\0" * 4), ws.UnsupportedFormatError, "70 dim"),
    "metadata that is not strings": (
        _file(A | {"__metadata__": {"epoch": 3}}, b"\0" * 8), ws.CorruptCheckpointError, "__metadata__ is not a map"
    ),
}
# fmt: on


@pytest.mark.parametrize("damage", BROKEN)
def test_damaged_files_raise_their_typed_error(damage: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    content, error, message = BROKEN[damage]
    path = tmp_path / "broken.safetensors"
    path.write_bytes(content)
    assert_refused(path, error, message, capsys)


def test_ls_shows_the_metadata(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors.numpy import save_file

    path = tmp_path / "model.safetensors"
    save_file({"layer1.weight": np.zeros((5, 2), np.float32)}, str(path), metadata={"format": "pt", "note": "\x1b[2J"})
    assert main(["ls", str(path)]) == 0
    out = capsys.readouterr().out
    assert "metadata: format = pt" in out and "metadata: note = \\x1b[2J" in out


def test_100_000_tiny_tensors_open_within_the_memory_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A header of 100,000 one-value tensors (7 MB) was charged 32 bytes a byte (212 MB) and refused over its cap
    of 123 MB; charged by its structure it opens, its real peak under the cap and under the charge."""
    monkeypatch.delenv(MEMORY_VARIABLE, raising=False)
    path = tmp_path / "tiny.safetensors"
    save_file({f"t{number}": np.full((), number, np.float32) for number in range(100_000)}, str(path))
    with path.open("rb") as handle:
        header = handle.read(8 + int.from_bytes(handle.read(8), "little"))[8:]
    tracemalloc.start()
    try:
        with ws.open(path) as ckpt:
            infos = list(ckpt.infos())
            peak = tracemalloc.get_traced_memory()[1]
            last = ckpt["t99999"]
    finally:
        tracemalloc.stop()
    with safetensors.safe_open(str(path), framework="numpy") as reference:
        assert [info.name for info in infos] == list(reference.keys())
        assert last == reference.get_tensor("t99999") == 99_999
    assert {(info.shape, info.type_name, info.nbytes) for info in infos} == {((), "float32", 4)}
    assert peak <= Limits.for_size(path.stat().st_size).memory
    assert peak <= json_cost(header, **_HEADER_COSTS)  # the charge is an upper bound: honest


@pytest.mark.parametrize("kind", ["scalars", "shapes", "sizes"])
def test_the_text_path_builds_less_than_it_is_charged(tmp_path: Path, kind: str) -> None:
    """The header's text path is tried where four copies of the text and ``_COMPACT_COST`` bytes a quote fit the
    memory cap: what it builds (tracemalloc's peak) stays under that, for one-value tensors, tensors of one to four
    dimensions in three dtypes, and tensors of many sizes; and it reads them as safe_open does."""
    rng = np.random.default_rng(3)
    count = 20_000
    if kind == "scalars":
        tensors = {f"t{number}": np.full((), number, np.float32) for number in range(count)}
    elif kind == "shapes":
        dtypes = (np.float32, np.int8, np.float16)
        shapes = [tuple(rng.integers(1, 4, rng.integers(1, 5))) for _ in range(count)]
        tensors = {f"n{number}": np.zeros(shape, dtypes[number % 3]) for number, shape in enumerate(shapes)}
    else:
        tensors = {f"s{number}": np.zeros(number % 977 + 1, np.uint8) for number in range(count)}
    path = tmp_path / f"{kind}.safetensors"
    save_file(tensors, str(path))
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = data[8 : 8 + length]
    reader = SafetensorsCheckpoint(path)
    tracemalloc.start()
    try:
        index = reader._compact(header, 8 + length)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert index is not None
    assert peak <= 4 * len(header) + _COMPACT_COST * header.count(b'"')
    with safetensors.safe_open(str(path), framework="numpy") as reference:
        assert list(index.infos) == list(reference.keys())
        for name, info in index.infos.items():
            assert info.shape == tuple(reference.get_slice(name).get_shape())
            assert (info.dtype, info.nbytes) == (tensors[name].dtype, tensors[name].nbytes)


def test_a_header_laid_out_otherwise_reads_the_same(tmp_path: Path) -> None:
    """The header as save_file writes it is checked a column at a time; the same tensors with each entry's fields
    in another order (checked tensor by tensor) give the same infos and arrays."""
    rng = np.random.default_rng(7)
    tensors = _tensors([element for element in READABLE if element.name in ("float32", "bfloat16", "int64")], rng)
    tensors = {name: array for name, array in tensors.items() if array.size}  # empty ones take the other path
    written = tmp_path / "written.safetensors"
    save_file(tensors, str(written))
    data = written.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    reordered = {name: dict(reversed(entry.items())) for name, entry in header.items()}
    text = json.dumps(reordered, separators=(",", ":")).encode().ljust(length)
    assert len(text) == length and text != data[8 : 8 + length]
    other = tmp_path / "other.safetensors"
    other.write_bytes(data[:8] + text + data[8 + length :])
    with ws.open(written) as ckpt, ws.open(other) as same:
        assert [info._replace(file="") for info in ckpt.infos()] == [info._replace(file="") for info in same.infos()]
        for name, array in tensors.items():
            assert_same_tensor(ckpt[name], array)
            assert_same_tensor(same[name], array)


def test_the_column_paths_accept_only_what_the_per_tensor_path_accepts(tmp_path: Path) -> None:
    """Headers mutated at random (JSON tokens swapped in, characters cut): wherever a column-at-a-time path (on
    the parsed header, or on its text) returns an index, the per-tensor checks accept the header too and give the
    same index; where json refuses the text, the text path returns nothing; nothing else raises."""
    tensors = {
        "a": np.ones((2, 3), np.float32),
        "b": np.arange(4),
        "c": np.ones((), np.float16),
        "d": np.ones(3, np.uint8),
    }
    path = tmp_path / "base.safetensors"
    save_file(tensors, str(path), metadata={"k": "v"})
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header, start = data[8 : 8 + length].decode(), 8 + length
    reader = SafetensorsCheckpoint(path)
    tokens = ["0", "1", "-1", "true", "1.0", "[]", "{}", '"F32"', '"U8"', "null", "4", "12", "[2,3]", "[0,4]", '"a"']
    tokens += [f'"{word}"' for word in ("__metadata__", "dtype", "shape", "data_offsets")]
    tokens += [" ", "\n", "\\", '\\"', "\\u0041", "\t", "00", "-0", "1e3", ",", ":", '"', "é"]
    rng = random.Random(18)
    agreed = compacted = 0
    for _ in range(20_000):
        text = list(header)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(text))
            if rng.random() < 0.6:
                text[at : at + rng.randint(0, 4)] = rng.choice(tokens)
            else:
                del text[at : at + rng.randint(1, 3)]
        try:
            parsed = json.loads("".join(text), object_pairs_hook=tuple)
        except ValueError:
            assert reader._compact("".join(text).encode(), start) is None, "".join(text)
            continue
        fast = reader._written(parsed, start)
        compact = reader._compact("".join(text).encode(), start)
        try:
            checked = reader._per_tensor(parsed, start)
        except ws.WeightscopeError:
            assert fast is None and compact is None, "".join(text)
            continue
        for index in (fast, compact):
            if index is not None:
                assert (list(index.infos.items()), index.metadata) == (list(checked.infos.items()), checked.metadata)
        agreed += fast is not None
        compacted += compact is not None
    assert agreed > 50 and compacted > 50  # enough mutants (renamed tensors, other metadata) take the column paths
