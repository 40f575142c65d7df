"""GGUF (llama.cpp, ggml): typed metadata, tensor infos, then aligned tensor data.

Bytes (``ggml/src/gguf.cpp`` and ``gguf-py``, the reference implementations), all
little-endian:

- the header: 4 bytes of magic ``GGUF``; uint32 version (2 or 3; version 1 had 32-bit
  counts); uint64 tensor count; uint64 metadata key/value count.
- the metadata, one key/value after another: the key as a string, a uint32 value type,
  then the value. Types: 0 uint8, 1 int8, 2 uint16, 3 int16, 4 uint32, 5 int32,
  6 float32, 7 bool (one byte), 8 string, 9 array, 10 uint64, 11 int64, 12 float64. A
  string is a uint64 byte length then the bytes (UTF-8 by the spec; llama.cpp does not
  check, so neither do we: they are shown with replacement characters). An array is a
  uint32 element type, a uint64 count, then the elements, packed.
- the tensor infos, one per tensor: the name as a string; uint32 ``n_dims`` (1..4);
  ``n_dims`` uint64 dimensions in GGML order, innermost first (the numpy shape is them
  reversed); uint32 GGML type (the ``gguf`` column of ``weightscope.dtypes``); uint64
  offset, relative to the data section.
- padding to a multiple of ``general.alignment`` (a uint32 power of two; default 32),
  then the data section: each tensor's bytes at its offset, itself a multiple of the
  alignment.

F32, F16, BF16, F64, I8, I16, I32 and I64 tensors are plain arrays (read-only views of
the file). The other types are quantised in blocks: ``QUANT_SIZES`` gives each one's
block size in elements and bytes (gguf-py's ``GGML_QUANT_SIZES``); the innermost
dimension is a whole number of blocks. They are listed as ``uint8`` tensors of their
stored size; reading one returns it dequantised to float32 (Q4_0, Q4_1, Q5_0, Q5_1,
Q8_0, Q4_K, Q5_K, Q6_K) or raises ``UnsupportedFormatError`` naming the type.

A reader must refuse: a wrong magic; a version other than 2 or 3 (a big-endian file
reads as a huge version); any structure past the end of the file; counts the remaining
bytes cannot hold (checked before anything is allocated) or over the caps below; an
unknown value type, or an array of arrays; a key or tensor name given twice; more than
4 dimensions; an unknown GGML type; an innermost dimension that is not a whole number of
blocks; a tensor larger than numpy can hold; a ``general.alignment`` that is not a
uint32 power of two; tensor offsets that are not aligned, lie past the end of the file
or make tensors overlap.

Caps: metadata arrays of at most 100,000,000 elements, strings (keys, names, values) of
at most 64 MiB (a whole ``tokenizer.json`` is stored as one string), keys and tensor
names of at most 65,535 bytes. There are no checksums: ``verify`` reads every tensor,
which checks only bounds.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Callable
from operator import attrgetter

import numpy as np

from weightscope.checkpoint import FileCheckpoint, TensorInfo
from weightscope.dtypes import BY_GGUF
from weightscope.errors import CorruptCheckpointError, TruncatedFileError, UnsupportedFormatError

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_ARRAY_LENGTH = 100_000_000
MAX_STRING_LENGTH = 64 << 20
MAX_NAME_LENGTH = 0xFFFF
SUMMARY_LENGTH = 16  # arrays longer than this are summarised in ``metadata``
_NUMPY_MAX_BYTES = 1 << 63

_HEADER = struct.Struct("<4sIQQ")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_STRING, _ARRAY = 8, 9
# Metadata value types of fixed size: their name and little-endian numpy dtype.
_SCALARS: dict[int, tuple[str, np.dtype]] = {
    code: (name, np.dtype(numpy))
    for code, name, numpy in (
        (0, "uint8", "<u1"),
        (1, "int8", "<i1"),
        (2, "uint16", "<u2"),
        (3, "int16", "<i2"),
        (4, "uint32", "<u4"),
        (5, "int32", "<i4"),
        (6, "float32", "<f4"),
        (7, "bool", "?"),
        (10, "uint64", "<u8"),
        (11, "int64", "<i8"),
        (12, "float64", "<f8"),
    )
}
# The fewest bytes one tensor info takes: a name length, n_dims, one dimension, type, offset.
_MIN_TENSOR_INFO = 8 + 4 + 8 + 4 + 8
_MIN_KEY_VALUE = 8 + 4 + 1  # a key length, a value type, a one-byte value

# GGML type name -> (elements per block, bytes per block): gguf-py's GGML_QUANT_SIZES.
# fmt: off
QUANT_SIZES: dict[str, tuple[int, int]] = {
    "q4_0": (32, 18),     "q4_1": (32, 20),     "q5_0": (32, 22),     "q5_1": (32, 24),
    "q8_0": (32, 34),     "q8_1": (32, 40),     "q2_k": (256, 84),    "q3_k": (256, 110),
    "q4_k": (256, 144),   "q5_k": (256, 176),   "q6_k": (256, 210),   "q8_k": (256, 292),
    "iq2_xxs": (256, 66), "iq2_xs": (256, 74),  "iq3_xxs": (256, 98), "iq1_s": (256, 50),
    "iq4_nl": (32, 18),   "iq3_s": (256, 110),  "iq2_s": (256, 82),   "iq4_xs": (256, 136),
    "iq1_m": (256, 56),   "tq1_0": (256, 54),   "tq2_0": (256, 66),   "mxfp4": (32, 17),
    "nvfp4": (64, 36),    "q1_0": (128, 18),
}
# fmt: on


class GgufCheckpoint(FileCheckpoint):
    """A ``.gguf`` file: tensors in file order; plain types as read-only views, quantised ones dequantised."""

    format = "gguf"

    def __init__(self, path: str | os.PathLike[str], *, verify: bool = True) -> None:
        """Open ``path``; ``verify`` is accepted for the common signature (the format has no checksums)."""
        self._position = 0
        super().__init__(path, verify=verify)

    # -- reading the index ---------------------------------------------------------
    def _take(self, length: int, what: str) -> memoryview:
        data = self._source.read(self._position, length, what)
        self._position += length
        return data

    def _uint(self, layout: struct.Struct, what: str) -> int:
        value: int = layout.unpack(self._take(layout.size, what))[0]
        return value

    def _string(self, what: str, limit: int = MAX_STRING_LENGTH) -> memoryview:
        length = self._uint(_U64, f"the length of {what}")
        if length > limit:
            raise CorruptCheckpointError(
                f"{self.path}: {what} at {self._position - 8} is {length} bytes long; the limit is {limit}"
            )
        return self._take(length, what)

    def _count(self, count: int, least: int, what: str, limit: int | None = None) -> None:
        """Refuse ``count`` items of at least ``least`` bytes each that the file cannot hold (or over ``limit``)."""
        if limit is not None and count > limit:
            raise CorruptCheckpointError(f"{self.path}: {what} declares {count} items; the limit is {limit}")
        remaining = self._source.size - self._position
        if count * least > remaining:
            raise TruncatedFileError(
                f"{self.path}: {what} declares {count} items, at least {count * least} bytes, "
                f"but only {remaining} bytes remain after offset {self._position}"
            )

    def _load(self) -> None:
        magic, version, n_tensors, n_values = _HEADER.unpack(self._take(_HEADER.size, "the GGUF header"))
        if magic != MAGIC:
            raise CorruptCheckpointError(f"{self.path}: magic {bytes(magic)!r}, expected {MAGIC!r}")
        if version not in VERSIONS:
            raise UnsupportedFormatError(
                f"{self.path}: GGUF version {version}; weightscope reads versions 2 and 3 (little-endian)"
            )
        self._count(n_values, _MIN_KEY_VALUE, "the metadata count")
        values: dict[str, str] = {}
        alignment = DEFAULT_ALIGNMENT
        for _ in range(n_values):
            at = self._position
            key = self._text(self._string("a metadata key", MAX_NAME_LENGTH))
            if key in values:
                raise CorruptCheckpointError(f"{self.path}: metadata key '{key}' at {at} is given twice")
            kind = self._uint(_U32, f"the type of metadata '{key}'")
            if key == "general.alignment":
                alignment = self._alignment(kind)
            values[key] = self._value(kind, f"metadata '{key}'")
        self._metadata = values
        self._count(n_tensors, _MIN_TENSOR_INFO, "the tensor count")
        entries = [self._tensor_info() for _ in range(n_tensors)]
        start = -(-self._position // alignment) * alignment
        infos = [self._describe(name, dims, code, offset, start, alignment) for name, dims, code, offset in entries]
        self._check_overlap(infos)
        self._infos = {info.name: info for info in infos}
        if len(self._infos) != len(infos):
            twice = next(name for name, *_ in entries if [entry[0] for entry in entries].count(name) > 1)
            raise CorruptCheckpointError(f"{self.path}: tensor '{twice}' is given twice")

    def _text(self, data: memoryview) -> str:
        return bytes(data).decode("utf-8", errors="replace")

    def _alignment(self, kind: int) -> int:
        at = self._position
        if kind != 4:
            raise CorruptCheckpointError(f"{self.path}: general.alignment at {at} is not a uint32 (type {kind})")
        (alignment,) = _U32.unpack(self._source.read(at, 4, "general.alignment"))
        if alignment == 0 or alignment & (alignment - 1):
            raise CorruptCheckpointError(f"{self.path}: general.alignment {alignment} is not a power of two")
        return int(alignment)

    def _value(self, kind: int, what: str) -> str:
        """The value of type ``kind`` at the current position, as text."""
        if kind == _STRING:
            return self._text(self._string(what))
        if kind == _ARRAY:
            return self._array(what)
        if kind not in _SCALARS:
            raise CorruptCheckpointError(f"{self.path}: {what} has unknown value type {kind}")
        dtype = _SCALARS[kind][1]
        return str(np.frombuffer(self._take(dtype.itemsize, what), dtype)[0].item())

    def _array(self, what: str) -> str:
        kind = self._uint(_U32, f"the element type of {what}")
        count = self._uint(_U64, f"the length of {what}")
        if kind == _ARRAY:
            raise UnsupportedFormatError(f"{self.path}: {what} is an array of arrays")
        if kind == _STRING:
            self._count(count, 8, what, MAX_ARRAY_LENGTH)
            strings = [self._string(f"element {index} of {what}") for index in range(count)]
            if count > SUMMARY_LENGTH:
                return f"[{count} strings]"
            return "[" + ", ".join(repr(self._text(text)) for text in strings) + "]"
        if kind not in _SCALARS:
            raise CorruptCheckpointError(f"{self.path}: {what} has unknown element type {kind}")
        name, dtype = _SCALARS[kind]
        self._count(count, dtype.itemsize, what, MAX_ARRAY_LENGTH)
        if count > SUMMARY_LENGTH:
            self._position += count * dtype.itemsize  # within the file: _count checked
            return f"[{count} {name}]"
        items = np.frombuffer(self._take(count * dtype.itemsize, what), dtype)
        return "[" + ", ".join(str(item) for item in items.tolist()) + "]"

    def _tensor_info(self) -> tuple[str, list[int], int, int]:
        at = self._position
        name = self._text(self._string(f"the name of the tensor info at {at}", MAX_NAME_LENGTH))
        n_dims = self._uint(_U32, f"the dimension count of tensor '{name}'")
        if not 1 <= n_dims <= MAX_DIMS:
            raise CorruptCheckpointError(
                f"{self.path}: tensor '{name}' at {at} has {n_dims} dimensions; GGML allows 1 to {MAX_DIMS}"
            )
        dims = list(struct.unpack(f"<{n_dims}Q", self._take(8 * n_dims, f"the dimensions of tensor '{name}'")))
        code = self._uint(_U32, f"the type of tensor '{name}'")
        offset = self._uint(_U64, f"the offset of tensor '{name}'")
        return name, dims, code, offset

    def _describe(self, name: str, dims: list[int], code: int, offset: int, start: int, alignment: int) -> TensorInfo:
        """The tensor ``name``, with the data section at file offset ``start``."""
        where = f"{self.path}: tensor '{name}'"
        element = BY_GGUF.get(code)
        if element is None:
            raise UnsupportedFormatError(f"{where} has unknown GGML type {code}")
        shape = tuple(reversed(dims))
        count = math.prod(dims)
        if element.dtype is not None:
            dtype, nbytes = element.dtype, count * element.dtype.itemsize
        else:
            block, size = QUANT_SIZES[element.name]
            if dims[0] % block:
                raise CorruptCheckpointError(
                    f"{where} of {element.name} has rows of {dims[0]} elements, not whole blocks of {block}"
                )
            dtype, nbytes = np.dtype(np.uint8), count // block * size
        if max(nbytes, count) >= _NUMPY_MAX_BYTES:
            raise UnsupportedFormatError(f"{where} has shape {list(shape)}, larger than numpy can hold")
        if offset % alignment:
            raise CorruptCheckpointError(f"{where} has offset {offset}, not a multiple of the alignment {alignment}")
        if start + offset + nbytes > self._source.size:
            raise TruncatedFileError(
                f"{where}: bytes {start + offset}..{start + offset + nbytes} lie past the end of the file "
                f"({self._source.size} bytes)"
            )
        return TensorInfo(name, dtype, shape, nbytes, element.name, str(self.path), start + offset, name)

    def _check_overlap(self, infos: list[TensorInfo]) -> None:
        previous: TensorInfo | None = None
        for info in sorted(infos, key=attrgetter("offset", "nbytes")):
            if previous is not None and info.offset < previous.offset + previous.nbytes:
                raise CorruptCheckpointError(
                    f"{self.path}: tensor '{info.name}' (bytes {info.offset}..{info.offset + info.nbytes}) "
                    f"overlaps tensor '{previous.name}' (bytes {previous.offset}..{previous.offset + previous.nbytes})"
                )
            if info.nbytes:
                previous = info

    # -- reading tensors -------------------------------------------------------------
    def _read(self, info: TensorInfo) -> np.ndarray:
        data = self._source.read(info.offset, info.nbytes, f"tensor '{info.name}'")
        if info.type_name not in QUANT_SIZES:
            return np.ndarray(info.shape, info.dtype, buffer=data)  # read-only: the map is
        dequantize = _DEQUANTIZERS.get(info.type_name)
        if dequantize is None:
            raise UnsupportedFormatError(
                f"{self.path}: tensor '{info.name}' is quantised as {info.type_name}, which weightscope cannot "
                f"dequantise (it reads {', '.join(_DEQUANTIZERS)})"
            )
        blocks = np.frombuffer(data, np.uint8).reshape(-1, QUANT_SIZES[info.type_name][1])
        return dequantize(blocks).reshape(info.shape)


# -- dequantisation: ports of gguf-py's numpy code (ggml-quants.c), block by block -------
QK_K = 256
_LOW_HIGH = np.array([0, 4], dtype=np.uint8).reshape((1, 1, 2, 1))


def _scale(blocks: np.ndarray) -> np.ndarray:
    """The float16 at the start of each block, as float32 of shape (blocks, 1)."""
    return blocks[:, :2].copy().view(np.float16).astype(np.float32)


def _nibbles(qs: np.ndarray, width: int) -> np.ndarray:
    """Low nibbles of each ``width`` bytes, then their high nibbles."""
    n_blocks = qs.shape[0]
    return ((qs.reshape((n_blocks, -1, 1, width)) >> _LOW_HIGH) & np.uint8(0x0F)).reshape((n_blocks, -1))


def _high_bits(qh: np.ndarray) -> np.ndarray:
    """The 32 bits of a uint32 (little-endian), one per element, as uint8."""
    n_blocks = qh.shape[0]
    bits = qh.copy().view("<u4").reshape((n_blocks, 1)) >> np.arange(32, dtype=np.uint32).reshape((1, 32))
    return (bits & np.uint32(1)).astype(np.uint8)


def _q8_0(blocks: np.ndarray) -> np.ndarray:
    return blocks[:, 2:].copy().view(np.int8).astype(np.float32) * _scale(blocks)


def _q4_0(blocks: np.ndarray) -> np.ndarray:
    qs = _nibbles(blocks[:, 2:], 16).astype(np.int8) - np.int8(8)
    return _scale(blocks) * qs.astype(np.float32)


def _q4_1(blocks: np.ndarray) -> np.ndarray:
    m = _scale(blocks[:, 2:])
    return _scale(blocks) * _nibbles(blocks[:, 4:], 16).astype(np.float32) + m


def _q5_0(blocks: np.ndarray) -> np.ndarray:
    q = (_nibbles(blocks[:, 6:], 16) | (_high_bits(blocks[:, 2:6]) << np.uint8(4))).astype(np.int8) - np.int8(16)
    return _scale(blocks) * q.astype(np.float32)


def _q5_1(blocks: np.ndarray) -> np.ndarray:
    m = _scale(blocks[:, 2:])
    q = _nibbles(blocks[:, 8:], 16) | (_high_bits(blocks[:, 4:8]) << np.uint8(4))
    return _scale(blocks) * q.astype(np.float32) + m


def _k_scales(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q4_K/Q5_K: the super-block scales (d × 6-bit scale, dmin × 6-bit min), then the rest."""
    n_blocks = blocks.shape[0]
    d, dmin = _scale(blocks), _scale(blocks[:, 2:])
    packed = blocks[:, 4:16].reshape((n_blocks, 3, 4))
    low, high, both = packed[:, 0:1], packed[:, 1:2], packed[:, 2:3]
    sc = np.concatenate([low & 0x3F, (both & 0x0F) | ((low >> 2) & 0x30)], axis=-1).reshape((n_blocks, 8))
    mins = np.concatenate([high & 0x3F, (both >> 4) | ((high >> 2) & 0x30)], axis=-1).reshape((n_blocks, 8))
    scales = (d * sc.astype(np.float32)).reshape((n_blocks, -1, 1))
    offsets = (dmin * mins.astype(np.float32)).reshape((n_blocks, -1, 1))
    return scales, offsets, blocks[:, 16:]


def _q4_k(blocks: np.ndarray) -> np.ndarray:
    n_blocks = blocks.shape[0]
    d, dm, qs = _k_scales(blocks)
    q = _nibbles(qs, 32).reshape((n_blocks, -1, 32)).astype(np.float32)
    return (d * q - dm).reshape((n_blocks, QK_K))


def _q5_k(blocks: np.ndarray) -> np.ndarray:
    n_blocks = blocks.shape[0]
    d, dm, rest = _k_scales(blocks)
    qh, qs = rest[:, : QK_K // 8], rest[:, QK_K // 8 :]
    bits = np.arange(8, dtype=np.uint8).reshape((1, 1, 8, 1))
    high = ((qh.reshape((n_blocks, -1, 1, 32)) >> bits) & np.uint8(0x01)).reshape((n_blocks, -1, 32))
    q = (_nibbles(qs, 32).reshape((n_blocks, -1, 32)) | (high << np.uint8(4))).astype(np.float32)
    return (d * q - dm).reshape((n_blocks, QK_K))


def _q6_k(blocks: np.ndarray) -> np.ndarray:
    n_blocks = blocks.shape[0]
    ql, qh = blocks[:, : QK_K // 2], blocks[:, QK_K // 2 : QK_K // 2 + QK_K // 4]
    scales = blocks[:, QK_K // 2 + QK_K // 4 : -2].copy().view(np.int8).astype(np.float32)
    d = (_scale(blocks[:, -2:]) * scales).reshape((n_blocks, QK_K // 16, 1))
    low = _nibbles(ql, 64).reshape((n_blocks, -1, 32))
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8).reshape((1, 1, 4, 1))
    high = ((qh.reshape((n_blocks, -1, 1, 32)) >> shifts) & np.uint8(0x03)).reshape((n_blocks, -1, 32))
    q = (low | (high << np.uint8(4))).astype(np.int8) - np.int8(32)
    return (d * q.reshape((n_blocks, QK_K // 16, -1)).astype(np.float32)).reshape((n_blocks, QK_K))


_DEQUANTIZERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "q4_0": _q4_0,
    "q4_1": _q4_1,
    "q5_0": _q5_0,
    "q5_1": _q5_1,
    "q8_0": _q8_0,
    "q4_k": _q4_k,
    "q5_k": _q5_k,
    "q6_k": _q6_k,
}
