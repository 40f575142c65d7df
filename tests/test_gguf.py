"""GGUF files, written by gguf-py (llama.cpp's Python package) or by hand, read back by weightscope."""

from __future__ import annotations

import struct
import time
from operator import attrgetter
from pathlib import Path

import gguf
import ml_dtypes
import numpy as np
import pytest
from conftest import assert_refused, assert_same_tensor
from gguf import GGMLQuantizationType as Q

import weightscope as ws
from weightscope.cli import main
from weightscope.containers import quants
from weightscope.containers.quants import QUANT_SIZES, QUANT_TYPES, _grid, _sign_patterns
from weightscope.dtypes import BY_GGUF
from weightscope.errors import CorruptCheckpointError, TruncatedFileError, UnsupportedFormatError
from weightscope.formats.gguf import GgufCheckpoint

SHAPES = [(1,), (7,), (3, 5), (2, 3, 4), (2, 1, 3, 2)]
PLAIN = [np.float32, np.float16, np.float64, np.int8, np.int16, np.int32, np.int64]
QUANTISED = [Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.TQ1_0, Q.TQ2_0, Q.MXFP4]  # gguf-py quantises these
# gguf-py dequantises these but cannot quantise them: random blocks, with finite fp16 scales at these offsets.
# IQ1_M's scale is spread over 4 nibbles (set by _raw_blocks); NVFP4's scales are E4M3, finite whatever the bytes.
RAW_SCALES: dict[Q, tuple[int, ...]] = {
    Q.Q2_K: (-4, -2),
    Q.Q3_K: (-2,),
    Q.Q4_K: (0, 2),
    Q.Q5_K: (0, 2),
    Q.Q6_K: (-2,),
    Q.IQ2_XXS: (0,),
    Q.IQ2_XS: (0,),
    Q.IQ2_S: (0,),
    Q.IQ3_XXS: (0,),
    Q.IQ3_S: (0,),
    Q.IQ1_S: (0,),
    Q.IQ1_M: (),
    Q.IQ4_NL: (0,),
    Q.IQ4_XS: (0,),
    Q.NVFP4: (),
}
UNDEQUANTISABLE = [Q.Q8_1, Q.Q8_K, Q.Q1_0]  # gguf-py has no dequantiser to check one against: random blocks
ALL_QUANTISED = [*QUANTISED, *RAW_SCALES, *UNDEQUANTISABLE]


def _random(dtype: type, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    raw = rng.integers(0, 256, int(np.prod(shape)) * np.dtype(dtype).itemsize, dtype=np.uint8)
    return raw.view(dtype).reshape(shape)


def _raw_blocks(qtype: Q, rows: int, rng: np.random.Generator) -> np.ndarray:
    _, size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, (rows * 2, size), dtype=np.uint8)
    for at in RAW_SCALES.get(qtype, ()):
        blocks[:, at : at + 2 or None] = _finite_f16(rows * 2, rng).view(np.uint8).reshape(-1, 2)
    if qtype == Q.IQ1_M:  # the fp16 scale's nibbles are the top nibbles of the 4 uint16 at the end, lowest first
        nibbles = _finite_f16(rows * 2, rng).view(np.uint16).reshape(-1, 1) >> np.array([0, 4, 8, 12], np.uint16)
        packed = (blocks[:, -8:].copy().view(np.uint16) & np.uint16(0x0FFF)) | (nibbles << np.uint16(12))
        blocks[:, -8:] = packed.view(np.uint8)
    return blocks.reshape(rows, 2 * size)  # rows of 2 blocks


def _finite_f16(count: int, rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(-1, 1, count).astype(np.float16)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(7)
    path = tmp_path_factory.mktemp("gguf") / "model.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_uint8("t.u8", 200)
    writer.add_int8("t.i8", -100)
    writer.add_uint16("t.u16", 60000)
    writer.add_int16("t.i16", -30000)
    writer.add_uint32("t.u32", 4_000_000_000)
    writer.add_int32("t.i32", -2_000_000_000)
    writer.add_float32("t.f32", 0.1)
    writer.add_uint64("t.u64", 2**64 - 1)
    writer.add_int64("t.i64", -(2**63))
    writer.add_float64("t.f64", 0.1)
    writer.add_bool("t.bool", True)
    writer.add_string("t.str", "héllo")
    writer.add_array("t.ints", [1, 2, 3])
    writer.add_array("t.floats", [0.5, 1.5])
    writer.add_array("t.words", ["a", "bc"])
    writer.add_array("t.vocab", [f"token{i}" for i in range(1000)])
    writer.add_array("t.many", list(range(100)))
    for dtype in PLAIN:
        for shape in SHAPES:
            writer.add_tensor(f"{np.dtype(dtype).name}/{'x'.join(map(str, shape))}", _random(dtype, shape, rng))
    writer.add_tensor("bf16", _random(np.uint16, (3, 4), rng).view(np.uint8), raw_dtype=Q.BF16)
    for qtype in QUANTISED:
        block, _ = gguf.GGML_QUANT_SIZES[qtype]
        for shape in [(2 * block,), (3, 3 * block)]:
            quantised = gguf.quants.quantize(rng.normal(size=shape).astype(np.float32), qtype)
            writer.add_tensor(f"{qtype.name}/{'x'.join(map(str, shape))}", quantised, raw_dtype=qtype)
    for qtype in [*RAW_SCALES, *UNDEQUANTISABLE]:
        writer.add_tensor(qtype.name, _raw_blocks(qtype, 3, rng), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_every_tensor_reads_as_gguf_py_reads_it(written: Path) -> None:
    reference = gguf.GGUFReader(written)
    with ws.open(written) as ckpt:
        assert isinstance(ckpt, GgufCheckpoint)
        assert list(ckpt) == [tensor.name for tensor in reference.tensors]
        for tensor in reference.tensors:
            info = ckpt.info(tensor.name)
            shape = tuple(int(size) for size in reversed(tensor.shape))
            assert info.shape == shape
            assert info.nbytes == tensor.n_bytes
            assert info.offset == tensor.data_offset
            assert info.type_name == BY_GGUF[int(tensor.tensor_type)].name
            if info.type_name in QUANT_SIZES:
                assert info.dtype == np.float32  # what reading gives; type_name says how it is stored
                continue  # the values: test_quantised_tensors_read_as_gguf_py_dequantises_them
            ours = ckpt[tensor.name]
            assert not ours.flags.writeable
            if tensor.tensor_type == Q.BF16:
                assert ours.dtype == ml_dtypes.bfloat16
                assert ours.tobytes() == tensor.data.tobytes()
                assert ours.shape == shape
            else:
                assert_same_tensor(ours, tensor.data.reshape(shape))
        problems = ckpt.verify()
        assert all(isinstance(problem, UnsupportedFormatError) for problem in problems)
        assert [str(problem).split("' is quantised as ")[1].split(",")[0] for problem in problems] == [
            qtype.name.lower() for qtype in UNDEQUANTISABLE
        ]


@pytest.mark.parametrize("qtype", ALL_QUANTISED, ids=attrgetter("name"))
def test_quantised_tensors_read_as_gguf_py_dequantises_them(written: Path, qtype: Q) -> None:
    tensors = [tensor for tensor in gguf.GGUFReader(written).tensors if tensor.tensor_type == qtype]
    assert tensors
    with ws.open(written) as ckpt:
        for tensor in tensors:
            if qtype in UNDEQUANTISABLE:
                with pytest.raises(NotImplementedError):
                    gguf.quants.dequantize(tensor.data, qtype)
                with pytest.raises(UnsupportedFormatError, match=f"quantised as {qtype.name.lower()}, which"):
                    ckpt[tensor.name]
                continue
            ours = ckpt[tensor.name]
            theirs = gguf.quants.dequantize(tensor.data, qtype)
            assert ours.dtype == theirs.dtype == np.float32
            assert_same_tensor(ours, theirs.reshape(ckpt.info(tensor.name).shape))


def test_every_type_gguf_py_dequantises_is_dequantised_and_tested() -> None:
    theirs = set()
    for qtype, (block, size) in gguf.GGML_QUANT_SIZES.items():
        if block > 1 and qtype not in UNDEQUANTISABLE:
            gguf.quants.dequantize(np.zeros((1, size), np.uint8), qtype)  # raises if gguf-py cannot
            theirs.add(qtype.name.lower())
    assert set(QUANT_TYPES) == theirs
    assert all(QUANT_TYPES[name][1:3] == QUANT_SIZES[name] for name in QUANT_TYPES)
    assert sorted(qtype.name.lower() for qtype in ALL_QUANTISED) == sorted(QUANT_SIZES)


@pytest.mark.parametrize("qtype", [Q.IQ2_XXS, Q.IQ2_XS, Q.IQ2_S, Q.IQ3_XXS, Q.IQ3_S, Q.IQ1_S], ids=attrgetter("name"))
def test_iq_grids_equal_gguf_py_grids(qtype: Q) -> None:
    traits = getattr(gguf.quants, qtype.name)  # every row: random blocks reach only some
    traits.init_grid()
    ours = _grid(qtype.name.lower())
    assert_same_tensor(ours, traits.grid.reshape(ours.shape))
    ksigns = np.frombuffer(gguf.quants.IQ2_XXS.ksigns, np.uint8).reshape((-1, 1))
    signs = np.unpackbits(ksigns, axis=-1, bitorder="little")
    assert_same_tensor(_sign_patterns(), np.where(signs == 0, 1, -1).astype(np.float32))


def test_metadata_of_every_type_as_text(written: Path) -> None:
    with ws.open(written) as ckpt:
        metadata = ckpt.metadata
    assert metadata["general.architecture"] == "llama"
    assert metadata["t.u8"] == "200"
    assert metadata["t.i8"] == "-100"
    assert metadata["t.u16"] == "60000"
    assert metadata["t.i16"] == "-30000"
    assert metadata["t.u32"] == "4000000000"
    assert metadata["t.i32"] == "-2000000000"
    assert float(metadata["t.f32"]) == float(np.float32(0.1))
    assert metadata["t.u64"] == str(2**64 - 1)
    assert metadata["t.i64"] == str(-(2**63))
    assert metadata["t.f64"] == "0.1"
    assert metadata["t.bool"] == "True"
    assert metadata["t.str"] == "héllo"
    assert metadata["t.ints"] == "[1, 2, 3]"
    assert metadata["t.floats"] == "[0.5, 1.5]"
    assert metadata["t.words"] == "['a', 'bc']"
    assert metadata["t.vocab"] == "[1000 strings]"
    assert metadata["t.many"] == "[100 int32]"


def test_quantised_sizes_match_gguf_py() -> None:
    ours = {name: size for name, size in QUANT_SIZES.items()}
    theirs = {qtype.name.lower(): size for qtype, size in gguf.GGML_QUANT_SIZES.items() if size[0] > 1}
    assert ours == theirs
    assert {int(qtype): qtype.name.lower() for qtype in gguf.GGML_QUANT_SIZES if qtype.name.lower() in ours} == {
        code: element.name for code, element in BY_GGUF.items() if element.name in ours
    }


@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.IQ1_M], ids=attrgetter("name"))
def test_an_empty_quantised_tensor_reads_as_an_empty_float32_array(tmp_path: Path, qtype: Q) -> None:
    block, _ = gguf.GGML_QUANT_SIZES[qtype]
    path = tmp_path / "empty.gguf"
    path.write_bytes(_file([], [_info(b"none", [block, 0], code=int(qtype))], b""))
    with ws.open(path) as ckpt:
        assert ckpt.info("none").nbytes == 0
        empty = ckpt["none"]
    assert empty.shape == (0, block) and empty.dtype == np.float32


def test_ls_lists_a_gguf_file(written: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls", str(written)]) == 0
    out = capsys.readouterr().out
    assert "q8_0" in out and "bfloat16" in out


# -- broken files, made by hand --------------------------------------------------------
def _string(text: bytes) -> bytes:
    return struct.pack("<Q", len(text)) + text


def _info(name: bytes, dims: list[int], code: int = 0, offset: int = 0) -> bytes:
    return _string(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, code, offset)


def _file(
    kvs: list[bytes], infos: list[bytes], data: bytes, *, version: int = 3, n_tensors: int | None = None
) -> bytes:
    count = len(infos) if n_tensors is None else n_tensors
    head = b"GGUF" + struct.pack("<IQQ", version, count, len(kvs)) + b"".join(kvs) + b"".join(infos)
    return head + b"\0" * (-len(head) % 32) + data


NAME_KV = _string(b"general.name") + struct.pack("<I", 8) + _string(b"tiny")
VALID_INFOS = [_info(b"a", [4]), _info(b"b", [2, 2], offset=32)]
VALID = _file([NAME_KV], VALID_INFOS, np.arange(4, dtype=np.float32).tobytes() + b"\0" * 16 + bytes(16))
INFOS_START = 24 + len(NAME_KV)


def test_the_hand_made_file_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "tiny.gguf"
    path.write_bytes(VALID)
    with ws.open(path) as ckpt:
        assert ckpt.metadata == {"general.name": "tiny"}
        assert ckpt["a"].tolist() == [0, 1, 2, 3]
        assert ckpt["b"].shape == (2, 2)
    assert [tensor.name for tensor in gguf.GGUFReader(path).tensors] == ["a", "b"]


BROKEN: dict[str, tuple[bytes, type[ws.WeightscopeError], str]] = {
    "bad magic": (b"GGUX" + VALID[4:], CorruptCheckpointError, "magic"),
    "version 1": (VALID[:4] + struct.pack("<I", 1) + VALID[8:], UnsupportedFormatError, "version 1"),
    "big-endian": (VALID[:4] + struct.pack(">I", 3) + VALID[8:], UnsupportedFormatError, "version"),
    "truncated header": (VALID[:13], TruncatedFileError, "header"),
    "truncated metadata": (VALID[: 24 + 10], TruncatedFileError, "metadata"),
    "truncated tensor infos": (VALID[: INFOS_START + len(VALID_INFOS[0]) + 12], TruncatedFileError, "tensor"),
    "truncated data": (VALID[:-4], TruncatedFileError, "tensor 'b'.*past the end"),
    "string past the end": (
        _file([_string(b"k") + struct.pack("<IQ", 8, 1000) + b"xy"], [], b""),
        TruncatedFileError,
        "metadata 'k'",
    ),
    "string over the cap": (
        _file([_string(b"k") + struct.pack("<IQ", 8, 2**62)], [], b""),
        CorruptCheckpointError,
        "limit",
    ),
    "array over the cap": (
        _file([_string(b"k") + struct.pack("<IIQ", 9, 0, 2**60)], [], b""),
        CorruptCheckpointError,
        "limit",
    ),
    "array past the end": (
        _file([_string(b"k") + struct.pack("<IIQ", 9, 8, 1000)], [], b""),
        TruncatedFileError,
        "remain",
    ),
    "array of arrays": (
        _file([_string(b"k") + struct.pack("<IIQ", 9, 9, 1)], [], b""),
        UnsupportedFormatError,
        "array of arrays",
    ),
    "unknown value type": (
        _file([_string(b"k") + struct.pack("<I", 13) + b"\0" * 8], [], b""),
        CorruptCheckpointError,
        "type 13",
    ),
    "key twice": (_file([NAME_KV, NAME_KV], VALID_INFOS, VALID[-64:]), CorruptCheckpointError, "twice"),
    "alignment not a power of two": (
        _file([_string(b"general.alignment") + struct.pack("<II", 4, 24)], [], b""),
        CorruptCheckpointError,
        "power of two",
    ),
    "offset past the end": (
        _file([NAME_KV], [_info(b"a", [4]), _info(b"b", [4], offset=1 << 40)], bytes(64)),
        TruncatedFileError,
        "past the end",
    ),
    "unaligned offset": (
        _file([NAME_KV], [_info(b"a", [4]), _info(b"b", [4], offset=16)], bytes(64)),
        CorruptCheckpointError,
        "not a multiple",
    ),
    "overlapping tensors": (
        _file([NAME_KV], [_info(b"a", [16]), _info(b"b", [4], offset=32)], bytes(64)),
        CorruptCheckpointError,
        "overlaps",
    ),
    "name twice": (
        _file([], [_info(b"a", [4]), _info(b"a", [4], offset=32)], bytes(64)),
        CorruptCheckpointError,
        "twice",
    ),
    "five dimensions": (_file([], [_info(b"a", [1] * 5)], bytes(32)), CorruptCheckpointError, "5 dimensions"),
    "unknown ggml type": (_file([], [_info(b"a", [4], code=4)], bytes(32)), UnsupportedFormatError, "type 4"),
    "partial block": (_file([], [_info(b"a", [16], code=8)], bytes(64)), CorruptCheckpointError, "whole blocks"),
    "huge shape": (_file([], [_info(b"a", [2**62, 2**62])], bytes(32)), UnsupportedFormatError, "larger than numpy"),
    "absurd tensor count": (
        _file([NAME_KV], [], b"", n_tensors=2**62),
        TruncatedFileError,
        "declares 4611686018427387904 items",
    ),
    "absurd metadata count": (b"GGUF" + struct.pack("<IQQ", 3, 0, 2**62), TruncatedFileError, "metadata count"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_files_are_refused_quickly(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, error, message = BROKEN[case]
    path = tmp_path / "broken.gguf"
    path.write_bytes(data)
    started = time.perf_counter()
    assert_refused(path, error, message, capsys)
    assert time.perf_counter() - started < 2


@pytest.mark.parametrize(
    ("dims", "code"),
    [([0, 2**63], 0), ([2**40, 0, 2**40], 0), ([32, 0, 2**57], int(Q.Q4_0))],
    ids=["f32 (2^63, 0)", "f32 (2^40, 0, 2^40)", "q4_0 (2^57, 0, 32) as float32"],
)
def test_an_empty_tensor_numpy_cannot_shape_is_refused(tmp_path: Path, dims: list[int], code: int) -> None:
    # Found by the corpus review: a 0 dimension made the size check pass, then numpy raised
    # ValueError ("Maximum allowed dimension exceeded", "array is too big") on reading.
    path = tmp_path / "empty.gguf"
    path.write_bytes(_file([], [_info(b"w", dims, code)], b""))
    with pytest.raises(UnsupportedFormatError, match="larger than numpy can hold"):
        ws.open(path)
    path.write_bytes(_file([], [_info(b"w", [32, 0, 2**55], int(Q.Q4_0))], b""))
    with ws.open(path) as checkpoint:
        assert checkpoint["w"].shape == (2**55, 0, 32)


def test_the_quants_module_dequantises_blocks_from_any_format() -> None:
    """``weightscope.containers.quants`` knows no file: given a type's blocks and a shape, it gives the values."""
    rng = np.random.default_rng(3)
    values = rng.normal(size=(4, 64)).astype(np.float32)
    for qtype in QUANTISED:
        if gguf.GGML_QUANT_SIZES[qtype][0] > values.shape[-1]:
            continue
        blocks = gguf.quants.quantize(values, qtype)
        name = qtype.name.lower()
        assert quants.stored_nbytes(name, values.shape, "x") == blocks.nbytes
        ours = quants.dequantize(blocks.tobytes(), name, values.shape, "x")
        assert_same_tensor(ours, gguf.quants.dequantize(blocks, qtype).reshape(values.shape))
    with pytest.raises(CorruptCheckpointError, match="rows of 48 elements, not whole blocks of 32"):
        quants.stored_nbytes("q8_0", (2, 48), "x")
    with pytest.raises(UnsupportedFormatError, match="x is quantised as q8_k, which weightscope cannot dequantise"):
        quants.dequantize(bytes(292), "q8_k", (256,), "x")
