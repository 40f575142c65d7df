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
- the tensor infos, one per tensor: the name as a string; uint32 ``n_dims`` (0..4: ggml
  reads 0 as a scalar, and gguf-py writes a 0-d array so);
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
stored size; reading one returns it dequantised to float32, equal bit for bit to gguf-py's
``gguf.quants.dequantize``: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0; Q2_K, Q3_K, Q4_K, Q5_K, Q6_K;
TQ1_0, TQ2_0; IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ4_NL, IQ4_XS; MXFP4,
NVFP4. The others (Q8_1, Q8_K, Q1_0), which gguf-py does not dequantise either, raise
``UnsupportedFormatError`` naming the type.

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

Layers: a transformer block's tensors (``blk.<N>.*``) are one layer, ``blk.<N>``;
``token_embd`` is the token embedding, ``output`` the LM head (``weightscope.summary``).
"""

from __future__ import annotations

import binascii
import functools
import math
import os
import re
import struct
import sys
from collections import Counter
from collections.abc import Callable
from operator import attrgetter

import numpy as np

from weightscope.checkpoint import FileCheckpoint, TensorInfo
from weightscope.dtypes import BY_GGUF, check_size
from weightscope.errors import CorruptCheckpointError, TruncatedFileError, UnsupportedFormatError
from weightscope.layers import TensorRole
from weightscope.limits import Budget, Limits

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_ARRAY_LENGTH = 100_000_000
MAX_STRING_LENGTH = 64 << 20
MAX_NAME_LENGTH = 0xFFFF
SUMMARY_LENGTH = 16  # arrays longer than this are summarised in ``metadata``

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
# The fewest bytes one tensor info takes: a name length, n_dims, no dimension (a scalar), type, offset.
_MIN_TENSOR_INFO = 8 + 4 + 4 + 8
_MIN_KEY_VALUE = 8 + 4 + 1  # a key length, a value type, a one-byte value
# Memory charged (``weightscope.limits.Budget``) per metadata entry and per tensor beyond
# their names' and values' own ``str`` objects: a dict slot; a TensorInfo with its shape,
# integers and the entry it was made from. A file of the smallest entries costs about
# 10 times its size, so the cap refuses only files made of little else.
_ENTRY_COST = 32
_TENSOR_COST = 320

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


# llama.cpp names a transformer block's tensors ``blk.<N>.<tensor>.weight`` (gguf-py's
# ``TENSOR_NAMES``: ``attn_q``, ``ffn_up``, ``attn_norm``, ...): one layer, ``blk.<N>``, in
# which each tensor plays the part its name gives (``attn_q``; a bias ``attn_q.bias``).
_BLOCK_TENSOR = re.compile(r"blk\.(\d+)\.(.+)")


def _block_role(name: str) -> TensorRole | None:
    match = _BLOCK_TENSOR.fullmatch(name)
    if match is None:
        return None
    return TensorRole("parameter", layer=f"blk.{match[1]}", role=match[2].removesuffix(".weight"))


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
        budget = Budget(Limits.for_size(self._source.size), self.path)
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
            budget.spend(sys.getsizeof(key) + sys.getsizeof(values[key]) + _ENTRY_COST, "the metadata")
        self._metadata = values
        self._count(n_tensors, _MIN_TENSOR_INFO, "the tensor count")
        entries: list[tuple[str, list[int], int, int]] = []
        for _ in range(n_tensors):
            entries.append(self._tensor_info())
            budget.spend(sys.getsizeof(entries[-1][0]) + _TENSOR_COST, "the tensor infos")
        start = -(-self._position // alignment) * alignment
        infos = [self._describe(name, dims, code, offset, start, alignment) for name, dims, code, offset in entries]
        self._check_overlap(infos)
        self._infos = {info.name: info for info in infos}
        self._roles = {name: role for name in self._infos if (role := _block_role(name)) is not None}
        if len(self._infos) != len(infos):
            counts = Counter(name for name, *_ in entries)  # one pass: a list per name was quadratic
            twice = next(name for name, count in counts.items() if count > 1)
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
            # Each element is checked, but only a short array's are kept: a million empty
            # strings (8 MB of lengths) would otherwise become a million views and texts.
            strings = [self._string(f"element {index} of {what}") for index in range(min(count, SUMMARY_LENGTH + 1))]
            if count > SUMMARY_LENGTH:
                for index in range(len(strings), count):
                    self._string(f"element {index} of {what}")
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
        if n_dims > MAX_DIMS:
            raise CorruptCheckpointError(
                f"{self.path}: tensor '{name}' at {at} has {n_dims} dimensions; GGML allows 0 to {MAX_DIMS}"
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
            row = dims[0] if dims else 1  # a scalar: one element, less than any block
            if row % block:
                raise CorruptCheckpointError(
                    f"{where} of {element.name} has rows of {row} elements, not whole blocks of {block}"
                )
            # Read dequantised: its info says float32 (what reading gives), its type_name the stored type.
            dtype, nbytes = np.dtype(np.float32), count // block * size
        # An empty tensor's other dimensions count too: numpy cannot make (2^63, 0) or (2^40, 0, 2^40).
        check_size(shape, dtype.itemsize, where, nbytes)
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
        if not len(blocks):  # a dimension of 0: the dequantisers' reshapes cannot infer a size from nothing
            return np.zeros(info.shape, np.float32)
        return dequantize(blocks).reshape(info.shape)


# -- dequantisation: ports of gguf-py's numpy code (ggml-quants.c), block by block -------
# Each function takes the blocks of one type as uint8 of shape (blocks, bytes per block) and returns
# float32 of shape (blocks, elements per block). The arithmetic follows gguf-py's operation by operation,
# in float32 and in the same order, so that results are equal bit for bit, not merely close.
QK_K = 256


def _scale(blocks: np.ndarray) -> np.ndarray:
    """The float16 at the start of each block, as float32 of shape (blocks, 1)."""
    return blocks[:, :2].copy().view(np.float16).astype(np.float32)


def _fields(data: np.ndarray, width: int, bits: int) -> np.ndarray:
    """The ``bits``-bit fields of each run of ``width`` bytes: every byte's lowest field, then the next ones up.

    ggml packs quants so: the element ``j`` of a run is in field ``j // width`` of byte ``j % width``.
    """
    shifts = np.arange(0, 8, bits, dtype=np.uint8).reshape((1, 1, -1, 1))
    fields = data.reshape((data.shape[0], -1, 1, width)) >> shifts
    return (fields & np.uint8((1 << bits) - 1)).reshape((data.shape[0], -1))


def _nibbles(qs: np.ndarray, width: int) -> np.ndarray:
    """Low nibbles of each ``width`` bytes, then their high nibbles."""
    return _fields(qs, width, 4)


def _high_bits(qh: np.ndarray) -> np.ndarray:
    """The 32 bits of a uint32 (little-endian), one per element, as uint8."""
    return _fields(qh, 1, 1)


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


def _q2_k(blocks: np.ndarray) -> np.ndarray:
    """16 sub-blocks of 16 2-bit quants, each with a 4-bit scale and a 4-bit min (× the fp16 d and dmin)."""
    n_blocks = blocks.shape[0]
    scales, qs = blocks[:, : QK_K // 16], blocks[:, QK_K // 16 : QK_K // 16 + QK_K // 4]
    d, dmin = _scale(blocks[:, -4:]), _scale(blocks[:, -2:])
    dl = (d * (scales & 0x0F).astype(np.float32)).reshape((n_blocks, QK_K // 16, 1))
    ml = (dmin * (scales >> 4).astype(np.float32)).reshape((n_blocks, QK_K // 16, 1))
    q = _fields(qs, 32, 2).reshape((n_blocks, QK_K // 16, 16)).astype(np.float32)
    return (dl * q - ml).reshape((n_blocks, QK_K))


def _q3_k(blocks: np.ndarray) -> np.ndarray:
    """16 sub-blocks of 16 3-bit quants (2 low bits, then a high bit in ``hmask``), 6-bit signed scales."""
    n_blocks = blocks.shape[0]
    hmask, qs = blocks[:, : QK_K // 8], blocks[:, QK_K // 8 : QK_K // 8 + QK_K // 4]
    packed, d = blocks[:, -14:-2], _scale(blocks[:, -2:])
    # The scales' low 4 bits are the nibbles of bytes 0..7, their high 2 bits the 2-bit fields of bytes 8..11.
    scales = _nibbles(packed[:, :8], 8) | (_fields(packed[:, 8:], 4, 2) << np.uint8(4))
    dl = (d * (scales.astype(np.int8) - np.int8(32)).astype(np.float32)).reshape((n_blocks, 16, 1))
    low = _fields(qs, 32, 2).reshape((n_blocks, 16, QK_K // 16))
    # The third bit is stored inverted, as in ggml: a clear bit subtracts 4, so quants run from -4 to 3.
    high = _fields(hmask, 32, 1).reshape((n_blocks, 16, QK_K // 16)) ^ np.uint8(1)
    q = (low.astype(np.int8) - (high << np.uint8(2)).astype(np.int8)).astype(np.float32)
    return (dl * q).reshape((n_blocks, QK_K))


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
    high = _fields(qh, 32, 1).reshape((n_blocks, -1, 32))
    q = (_nibbles(qs, 32).reshape((n_blocks, -1, 32)) | (high << np.uint8(4))).astype(np.float32)
    return (d * q - dm).reshape((n_blocks, QK_K))


def _q6_k(blocks: np.ndarray) -> np.ndarray:
    n_blocks = blocks.shape[0]
    ql, qh = blocks[:, : QK_K // 2], blocks[:, QK_K // 2 : QK_K // 2 + QK_K // 4]
    scales = blocks[:, QK_K // 2 + QK_K // 4 : -2].copy().view(np.int8).astype(np.float32)
    d = (_scale(blocks[:, -2:]) * scales).reshape((n_blocks, QK_K // 16, 1))
    low = _nibbles(ql, 64).reshape((n_blocks, -1, 32))
    high = _fields(qh, 32, 2).reshape((n_blocks, -1, 32))
    q = (low | (high << np.uint8(4))).astype(np.int8) - np.int8(32)
    return (d * q.reshape((n_blocks, QK_K // 16, -1)).astype(np.float32)).reshape((n_blocks, QK_K))


# -- ternary types: quants of -1, 0 or 1 times one fp16 scale per block --------------------
_POWERS_OF_3 = (1, 3, 9, 27, 81)


def _trits(qs: np.ndarray, width: int, count: int) -> np.ndarray:
    """The first ``count`` base-3 digits of each of ``width`` bytes: every byte's first digit, then the next ones.

    TQ1_0 stores 5 digits per byte as a fixed-point fraction of 3**5, rounded up to 256ths: multiplying by
    3**k modulo 256 (uint8 arithmetic wraps on purpose) brings digit k to the front, and × 3 >> 8 reads it.
    """
    powers = np.array(_POWERS_OF_3[:count], dtype=np.uint8).reshape((1, 1, count, 1))
    shifted = (qs.reshape((qs.shape[0], -1, 1, width)) * powers).reshape((qs.shape[0], -1))
    return ((shifted.astype(np.uint16) * 3) >> 8).astype(np.int8)


def _tq1_0(blocks: np.ndarray) -> np.ndarray:
    """256 trits: 5 in each of 48 bytes (32 bytes × 5, then 16 × 5), the last 16 as 4 in each of 4 bytes."""
    trits = [_trits(blocks[:, :32], 32, 5), _trits(blocks[:, 32:48], 16, 5), _trits(blocks[:, 48:52], 4, 4)]
    q = np.concatenate(trits, axis=-1) - np.int8(1)
    return _scale(blocks[:, -2:]) * q.astype(np.float32)


def _tq2_0(blocks: np.ndarray) -> np.ndarray:
    q = _fields(blocks[:, : QK_K // 4], 32, 2).astype(np.int8) - np.int8(1)
    return _scale(blocks[:, -2:]) * q.astype(np.float32)


# -- 4-bit types whose nibbles index a table of 16 values ----------------------------------
# IQ4_NL's non-linear levels (ggml's kvalues_iq4nl), closer together near 0 where weights are dense.
_IQ4_VALUES = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)
# The E2M1 (FP4) values doubled, to be integers (ggml's kvalues_mxfp4): the scales are halved to match.
_E2M1_VALUES = (0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12)


def _lookup(values: tuple[int, ...], q: np.ndarray) -> np.ndarray:
    return np.array(values, dtype=np.int8)[q].astype(np.float32)


def _iq4_nl(blocks: np.ndarray) -> np.ndarray:
    return _scale(blocks) * _lookup(_IQ4_VALUES, _nibbles(blocks[:, 2:], 16))


def _iq4_xs(blocks: np.ndarray) -> np.ndarray:
    """8 sub-blocks of 32, each with a 6-bit signed scale: 2 high bits in a uint16, 4 low bits in a nibble."""
    n_blocks = blocks.shape[0]
    scales = _fields(blocks[:, 4:8], 1, 4) | (_fields(blocks[:, 2:4], 1, 2) << np.uint8(4))
    dl = (_scale(blocks) * (scales.astype(np.int8) - np.int8(32)).astype(np.float32)).reshape((n_blocks, -1, 1))
    q = _lookup(_IQ4_VALUES, _nibbles(blocks[:, 8:], 16)).reshape((n_blocks, -1, 32))
    return (dl * q).reshape((n_blocks, -1))


def _e8m0_half(e: np.ndarray) -> np.ndarray:
    """MXFP4's scales, powers of two 2**(e - 127), halved (ggml_e8m0_to_fp32_half): e < 2 gives a subnormal."""
    e = e.astype(np.uint32)
    bits = np.where(e < 2, np.uint32(0x00200000) << e, (e - np.uint32(1)) << np.uint32(23))
    return bits.view(np.float32)


def _mxfp4(blocks: np.ndarray) -> np.ndarray:
    return _e8m0_half(blocks[:, :1]) * _lookup(_E2M1_VALUES, _nibbles(blocks[:, 1:], 16))


def _ue4m3_half(x: np.ndarray) -> np.ndarray:
    """NVFP4's scales, unsigned E4M3 (bias 7; gguf-py ignores the top bit and reads 0x7F, NaN, as 0), halved."""
    exponent, mantissa = (x >> 3) & np.uint8(0x0F), x & np.uint8(0x07)
    # Normal: (8 + m) / 8 × 2**(e - 7); subnormal (e = 0): m / 8 × 2**-6; both halved. All exact in float32.
    significand = np.where(exponent == 0, mantissa, mantissa + np.uint8(8)).astype(np.float32)
    value = np.ldexp(significand, np.maximum(exponent, 1).astype(np.int32) - 11)
    return np.where(x == 0x7F, np.float32(0), value)


def _nvfp4(blocks: np.ndarray) -> np.ndarray:
    """4 sub-blocks of 16 E2M1 values, each with an E4M3 scale; a sub-block's 8 bytes: low nibbles, then high."""
    n_blocks = blocks.shape[0]
    d = _ue4m3_half(blocks[:, :4]).reshape((n_blocks, 4, 1))
    q = _lookup(_E2M1_VALUES, _nibbles(blocks[:, 4:], 8)).reshape((n_blocks, 4, 16))
    return (d * q).reshape((n_blocks, -1))


# -- IQ types: groups of 4 or 8 quants as one index into a grid of vectors (a lattice codebook) --
# The grids, ggml's iq2xxs_grid … iq1s_grid: each row is a vector of 8 (or 4) values among a grid's few
# levels. As in gguf-py, each value is stored as its level's index, in 2-bit fields when there are 3 levels
# and in 4-bit fields when there are 8, low fields first; here those bytes in base64. Name -> (values per
# row, levels, packed rows). They are unpacked on first use (``_grid``) so that importing stays cheap.
# fmt: off
_GRIDS: dict[str, tuple[int, tuple[int, ...], str]] = {
    "iq2_xxs": (
        8,
        (8, 25, 43),
        "AAACAAUACAAKABEAFAAgACIAKAAqAEEARABQAFgAYQBkAIAAggCKAKIAAQEEARABFQFAAYQBmAEAAgICIgKCAgEEBAQQBCEEJARABEIESARg"
        "BIEEhASQBKQEAAUCBQgFIAVGBWkFgAWRBQkGEAZABoQGpAYACAUICAgUCCgIQQhECFAIUgiICAQJQAkCChQKARAEEBAQIRBAEGAQhBCQEJUQ"
        "ABEIESARUBFaEYARJBJFEgAUCBQgFCUUSRSAFBgVYhUAFhYWARgEGBAYQBiBGAAZBRmgGVEaACACIAogRCBhIIAggiApIUghACICIgEkBCQQ"
        "JEAkViQAJUElZCWQJggoICiUKEQqAUAEQBBAGEAhQCRAQEBIQFZAYECBQIRAkEAAQSBBYUGAQYVBAUIQQkhCVkJoQgBECEQgRIBEmUQSRSRF"
        "AEYBSARIEEhASEVIAElYSWFJgklFSpBKAFAIUBFQGVAgUIBQiFAEUUJRpFGRUpBUklQKVQFWVFYAWBFYGVhkWEBZCFoEYBBgQGBoYABhVWEY"
        "YmBiAGQFZBBlEmWEZUJoAIACgAqAQYCCgASBGIFAgRGCAYQEhBCEFYRAhGCEAIVGhZSFCYZAhmCGAogEiRGKBJAQkCSQQJChkBaRgJFFkgCU"
        "IpRElFGVgZggmQKgUKCFoAmhAKIYpFCoBKk="
    ),
    "iq2_xs": (
        8,
        (8, 25, 43),
        "AAACAAUACAAKABEAFAAWABkAIAAiACUAKABBAEQARgBJAFAAUgBVAFgAYQBkAIAAggCFAIgAkQCUAJkAoAABAQQBBgEJARABEgEVARgBGgEh"
        "ASQBQAFCAUUBSAFRAVQBYAFoAYEBhAGQAQACAgIFAggCEQIUAiACQQJEAlACVQKAAooCAQQEBAYECQQQBBIEFQQYBCEEJARABEIERQRIBFEE"
        "VARWBGAEgQSEBJAEAAUCBQUFCAURBRQFIAVBBUQFUAVhBYAFAQYEBhAGJgZABkIGhAYACAIIBQgICAoIEQgUCCAIJQhBCEQIUAhYCIAIoAiq"
        "CAEJBAkQCUAJgQmJCQAKIAooCpYKoAoBEAQQBhAJEBAQEhAVEBgQIRAkEEAQQhBFEEgQURBUEGAQahCBEIQQkBAAEQIRBREIERERFBEgEUER"
        "RBFQEYARlBGWEQESBBIGEhASQBJgEgAUAhQFFAgUERQUFCAUQRREFEkUUBRkFIAUARUEFRAVQBUAFhQWSRYBGAQYEBgSGEAYVBiGGAAZBRlm"
        "GVEaqRoAIAIgBSAIIAogESAUICAgQSBEIFAggCCgIAEhBCEQIUAhSCFlIQAiIiKAIqgiASQEJBAkKSRAJAAlQSVSJZklASYaJqYmACgIKAoo"
        "IChVKIgooihoKZApCCogKoIqiCqKKgFABEAGQAlAEEASQBVAGEAhQCRAQEBCQEVASEBKQFFAVEBgQGVAgUCEQJBAAEECQQVBCEERQRRBIEFB"
        "QURBUEGAQYVBokEBQgRCEEISQilCQEIARAJEBUQIRBFEFEQZRCBEQURERFBEgESURAFFBEUQRSRFQEWaRQBGCkZERlBGAUgESBBIQEhFSFRI"
        "YkgASRFJRElQSWlJBEoAUAJQBVAIUBFQFFAgUChQQVBEUFBQgFABUQRREFEVUUBRQlEAUkRSqlIBVARUEFQhVEBUYFSBVKFUAFUIVYBViFUh"
        "VmhWoVYAWBRYQVhQWJlYGllAWUJZhVoBYARgEGBAYFRgYmCGYKlgAGEkYkpikmIAZBZkEGVAZUVlpGUBaGpoJWkGalRqYmoAgAKABYAIgBGA"
        "FIAggCqAQYBEgFCAgICCgKiAqoABgQSBBoEQgUCBUYFZgQCCIIKAgoKCoIKoggGEBIQQhBKEFYRAhGCEiYQAhUSFpYUYhmqGAIgIiCWIWoiA"
        "iIKIqIgGiSKKgIqIipaKqIoBkASQEJBAkFaQhJAAkSKRZJFWkomSAJQFlESUUJRYlCmVkJWSlUGWUZimmEmZFZpgmgCgAqAIoAqgIKAqoKCg"
        "UaFZoaahAKICogiiKqKAoqCiQKSVpGWmmKYKqCCoIqgoqKCoqKgEqYSphqkoqiqqkaqqqg=="
    ),
    "iq2_s": (
        8,
        (8, 25, 43),
        "AAACAAUACAAKABEAFAAWABkAIAAiACUAKABBAEQARgBJAFAAUgBVAFgAYQBkAGYAaQCAAIIAhQCIAJEAlACgAKUAqgABAQQBBgEJARABEgEV"
        "ARgBIQEkAUABQgFFAUgBUQFUAVYBWQFgAWUBaAGBAYQBkAGSAZUBoQGkAQACAgIFAggCEQIUAiACKgJBAkQCRgJJAlACVQKAAoUCigKUAqIC"
        "AQQEBAYECQQQBBIEFQQYBCEEJAQmBCkEQARCBEUESARKBFEEVARWBFkEYARiBGUEgQSEBIYEiQSQBJUEmAShBKQEAAUCBQUFCAUKBREFFAUW"
        "BRkFIAUlBSgFQQVEBUYFSQVQBVIFVQVYBWEFZAWABYIFhQWIBZEFlAWgBQEGBAYGBgkGEAYVBkAGRQZIBlEGVAZgBoEGhAaQBgAIAggFCAgI"
        "EQgUCBYIGQggCCUIKghBCEQIRghJCFAIUghVCFgIYQhkCIAIhQiUCKoIAQkECRAJEgkVCRgJIQlACUUJSAlRCVQJYAmBCZAJAAoRChQKIgoo"
        "CioKUAqZCgEQBBAGEAkQEBASEBUQGBAhECQQJhBAEEIQRRBIEFEQVBBWEFkQYBBiEGUQaBCBEIQQhhCQEJUQmBChEKQQABECEQURCBEKERER"
        "FBEWERkRIBEiESURKBFBEUQRRhFJEVARUhFVEVgRYRFkEYARghGFEYgRkRGUEQESBBIJEhASFRIhEiQSQBJFElESVBKBEoQSkBIAFAIUBRQI"
        "FBEUFBQWFBkUIBQlFCgUQRREFEYUSRRQFFIUVRRYFGEUZBSAFIIUhRSIFJEUlBSgFAEVBBUGFQkVEBUSFRUVGBUhFSQVQBVCFUUVSBVRFVQV"
        "YBWBFYQVkBUAFgUWCBYRFhQWIBZBFkQWUBaAFqoWARgEGAYYCRgQGBUYGBghGEAYQhhFGEgYURhUGGAYgRiEGAAZAhkFGQgZERkUGSAZQRlE"
        "GVAZaRmiGQQaEBpAGlYaACACIAUgCCARIBQgFiAZICAgJSAqIEEgRCBQIFIgVSBkIIAgiiCUIKogASEEIRAhEiEVISEhQCFCIUUhUSFUIWAh"
        "gSGEIZAhACIKIiIiKCIqIkQiUCKIIooiqCIBJAQkBiQJJBAkFSQYJCEkJCRAJEIkRSRIJFEkVCRgJIEkhCSQJAAlBSUIJRElFCUgJUElRCVQ"
        "JWYlgCUBJgQmECZAJlkmACgFKBEoFChBKEQoUCiKKKooASkEKRAplSkKKiIqZCqIKooqAUAEQAZACUAQQBJAFUAYQBpAIUAkQCZAQEBCQEVA"
        "SEBKQFFAVEBWQFlAYEBiQGVAgUCEQJBAlUCYQKFApEAAQQJBBUEIQRFBFEEWQRlBIEEiQSVBQUFEQUZBSUFQQVJBVUFYQWFBZEGAQYJBhUGI"
        "QZFBlEGgQQFCBEIQQhJCFUIYQiRCQEJFQkhCUUJUQmBCgUKEQgBEAkQFRAhECkQRRBREFkQZRCBEIkQlRChEQUREREZESURQRFJEVURYRGFE"
        "ZESARIJEhUSIRJFElESgRAFFBEUGRQlFEEUSRRVFGEUhRSRFQEVCRUVFSEVRRVRFYEVqRYFFhEWQRQBGAkYFRghGEUYURiBGQUZERlBGgEal"
        "RgFIBEgJSBBIEkgVSBhIIUgkSEBIQkhFSEhIUUhUSGBIhEiQSABJAkkFSQhJEUkUSSBJQUlESVBJgEmWSQFKBEoQSkBKAFACUAVQCFARUBRQ"
        "FlAZUCBQIlAlUChQQVBEUEZQSVBQUFJQVVBYUGFQZFCAUIJQhVCIUJFQlFABUQRRBlEJURBRElEVURhRIVEkUUBRQlFFUUhRUVFUUWBRgVGE"
        "UZBRAFIFUghSEVIUUiBSQVJEUlBSaVKAUgFUBFQGVAlUEFQSVBVUGFQhVCRUQFRCVEVUSFRRVFRUYFSBVIRUkFQAVQJVBVUIVRFVFFUgVUFV"
        "RFVQVYBVAVYEVhBWJlZAVgBYAlgFWAhYEVgUWCBYQVhEWFBYWliAWAFZBFkQWUBZAFoZWoVaqFoBYARgBmAQYBJgFWAYYCFgJGBAYEVgSGBR"
        "YFRgYGCEYJBgAGECYQVhCGERYRRhIGFBYURhUGGAYZlhBGIQYkBiVmKhYgBkBWQIZBFkFGQgZEFkRGRQZIBkAWUEZRBlQGVKZWhlkmUAZpRm"
        "AWgEaBBoZWiYaABpKmlCaqFqAIACgAWACIARgBSAGYAggCWAQYBEgFCAUoBVgFiAYYCAgIWAkYCUgAGBBIEJgRCBEoEVgRiBIYEkgUCBQoFF"
        "gUiBUYFUgYGBhIGQgamBAIIFggqCEYIUgkGCRIJQggGEBIQGhAmEEIQShBWEGIQhhECEQoRFhEiEUYRUhGCEgYSEhJCEAIUChQWFCIURhRSF"
        "IIVBhUSFUIWAhYqFAYYEhhCGKYZAhgCIBYgRiBSIQYhEiFCIoogBiQSJQIlliSKKWIpaioKKoooBkASQCZAQkBKQFZAYkCSQQJBCkEWQSJBR"
        "kFSQYJCBkISQkJAAkQWREZEUkUGRRJFQkVqRAZIEkhCSQJKmkgCUApQFlAiUEZQUlCCUQZRElFCUgJSWlAGVBJUQlUCVmJWhlQCWRpZklgGY"
        "BJgQmCaYQJipmACZSZlSmZCaAKAFoAqgFKAioCqgQaBEoFCgoqCqoEChZaECogqiIqIooiqigqKIooqiqKIBpASkEKRApImkpKQApRmlUaYK"
        "qCiooqhUqYapCKoKqiCqIqooqoiqqqo="
    ),
    "iq3_xxs": (
        4,
        (4, 12, 20, 28, 36, 44, 52, 62),
        "AAACAAQAEQATABcAIAAiADEAQgBzAHUAAQEDARABEgEhASUBMAEyAUEBVAFwAQACAgIEAhECIAIiAjECMwI3AlECVwJ1AgEDBwMQAxIDJQNw"
        "AxMENwREBFcEcwR1BAEFBwUyBVIFNQZkBhAHFAcWB0MHYQcBEAMQEBASECEQIxAwEDIQNBBHEFAQABECERERIBEiEQESAxIQEhISIRIwEnIS"
        "ABMCEyATMRNGE2YTARQFFFAUIBUkFUYVcRUFFiIXQBcAIAIgESATICAgIiAmIDEgQiABIQMhBSEQIRIhISEwIWMhZyFwIQAiAiIRIhciICIi"
        "IjciQCJVIgEjECMUI3AjdCM1JFMkAyUnJUEldCUBJwMnFidFJwEwEDASMCEwIzBQMGUwcjAAMQIxIDExMUQxRjEBMgMyEDIlMlIycjIRMzMz"
        "MDRHNHI0ADUGNSI1VTUUNjY2YzYzN2A3BEAXQDVAN0BTQFdAdEEgQjdCQEJgQmZCB0NFQwREUURkRCVFQ0VwRQVHEEcSRzBHElBBUHBQAFEG"
        "USZRVVEUUjJSclICU1NTEFQjVCdUclQCVTFVUFYkV0JXJGBEYEZgZGAhYWFhF2JkYjBjNmNEZAVlUmUzZgNnIWcDcAVwB3AQcDJwUnAmcUBx"
        "EnJFclJyAHMVczNzYHMhdEF0AHUCdSR1MHY="
    ),
    "iq3_s": (
        4,
        (1, 3, 5, 7, 9, 11, 13, 15),
        "AAABAAIABQAHABAAEQASABQAFgAgACEAJQAzAEAAQgBFAEcAUQBTAGAAYgBxAHQAdwAAAQEBAgEEARABEQEVASABIwEnATEBNQFEAWEBZQFy"
        "AQACAQIFAgcCEAITAhYCIQIlAjACNAJCAkUCRwJRAlMCcAJzAgMDEQMVAyADIgMxAzMDNgNEA1ADUgNnA3EDdQMABBMEFwQhBCQEMgRABEME"
        "UQRwBAIFBAUgBSIFJgUzBUEFRQVHBWYFcwUGBhEGEwYxBlIGcQYABwIHBAcgByIHJgczB1AHVAcAEAEQAhAEEBAQERATEBUQFxAgECIQMRA0"
        "EDYQVBBWEGEQchAAEQERAxEGERARFBEhETARMxFBEVARUhFwEXYRABISEhUSFxIgEiQSMhJAEkMSVRJgEnISARMEEwcTEBMTEyETJxMwEzQT"
        "QRNiE3ATAxQFFBIUFBQxFDMUQhRGFFAUVBQBFRAVExUhFTAVMhVRFSAWJBYnFkQWRhYBFwMXEBcSFyEXNRdBF2IXcBcAIAEgAyAFIAcgECAS"
        "IBQgFiAhICMgJyAwIDIgQSBDIEUgUCBSIGcgcCBzIHUgACECIRAhEyEXISIhJSExITQhQiFRIQEiBCIHIiEiIyIwIjciQSJTIlcicSJ0IgAj"
        "AiMFIxEjIiMkIzEjMyNCI1AjZiMBJAckICQjJDIkNSRBJHIkdSQEJRElIiU3JUAlUyVwJQAmAiYHJiEmVSZhJgUnEScmJzAnQydQJwIwETAT"
        "MBUwFzAiMDEwMzA1MEIwRDBHMFEwYzBxMAExAzEFMRQxITEjMUAxYDFyMXYxADISMiAyMjI0MlAyATMQMxQzITMjMyczMDNBM0MzRzNVM3Mz"
        "AzQRNBY0IjQxNFI0YDRkNAE1EDUSNSU1MjVENVY1czUWNkE2ATcDNyA3Ijc1NwBABEASQCBAJEAnQDJAQUBQQHBAAkEHQRFBE0EiQTBBNUFD"
        "QVFBVUEBQgNCEEIVQiFCM0JAQldCYkJwQgRDEUMTQyBDIkMxQzVDAEQCRCREN0RARHFEBUUHRSFFYkUTRjRGYEYQRxVHMEdDR1FHAlAQUBRQ"
        "IlBAUERQR1BSUGZQdFABUQNRBVESUSFRMlFyUQBSEVIjUjBSNlJTUgJTB1MQUydTRFNRU2VTc1MBVARUIFQyVEZUElUmVVFVU1VCVgJXBFci"
        "VxFgE2AVYDFgM2BgYABhIGEnYWRhEmI0YkJiVWJiYnBiAGMUYyFjQGMlZENkYmQAZQNlNGVgZQVmQGYRZxNnAHAEcAdwIHAicDZwQHBUcGJw"
        "AnERcSRxQ3FFcQFyBHIQchZyIXIwclFyAnMyczVzU3MBdAV0E3QgdFB0InVCdQJ2MXYAdw=="
    ),
    "iq1_s": (
        8,
        (-1, 0, 1),
        "AAACAAUACAAKABEAFQAgACIAKAAqAEUAUQBUAFYAZQCAAIIAiACKAJUAoACiAKgAqgAEAQUBEQEUARYBGQEaASUBQQFGAUkBUgFVAVoBYQFk"
        "AWYBaAGFAZEBlAGWAaUBAAICAggCCgIVAiACIgIoAioCRQJRAlkCZAJpAoACggKIAooCkQKVApkCoAKiAqgCqgIRBBQEFgQlBEEESQRVBFoE"
        "ZARlBJEEmQSlBAEFBAUFBQYFFQUYBRoFKQVABUUFSgVQBVEFVAVVBVYFWQVgBWIFZQVoBWoFgQWRBZUFmAWaBaEFpAWlBaYFqQUUBhkGQQZE"
        "BlAGUgZVBlgGYAZhBmYGaQaFBpEGlAaZBgAIAggICAoIFQggCCIIKAgqCEUIUQhWCGUIgAiCCIgIigiVCKAIogioCKoIBQkRCRQJGQkkCSUJ"
        "QQlQCVEJVQlhCWQJaQmRCZQJlgmZCaUJAAoCCggKCgoVCiAKIgooCioKRQpRClkKYQplCoAKggqFCogKigqVCqAKogqoCqoKEBAREBQQGRAk"
        "ECUQQRBEEFAQVRBYEGEQZBBlEGkQkRCUEJYQoRClEAERBBEGEQkREBESERURGBEhESQRKRFFEUoRUBFREVIRVBFVEVYRWRFgEWURhBGSEZUR"
        "oRGkERESFBIWEiUSQBJGEkkSUhJVElgSWhJkEmYShRKREpQSlhKlEgEUBhQJFBQUFRQYFBkUIRQmFEEURRRGFEgUShRRFFQUVRRWFFkUYhRl"
        "FGgUhBSJFJAUlBSVFJgUmRSaFKEUpBSlFKkUAhUFFQoVERUUFRUVFhUZFSAVIhUlFSgVKhVBFUQVRRVGFVEVUhVUFVUVVhVZFVoVYRVkFWUV"
        "ZhVpFYAVghWEFYUViBWKFZAVkRWUFZUVlhWZFZoVoBWiFaUVARYEFgUWBhYVFhYWGBYaFiEWJhZAFkIWRBZFFkgWShZRFlUWVhZYFlkWYRZk"
        "FmUWaBZpFmoWhhaKFpIWlRakFqkWERgWGCUYQRhEGEYYSRhQGFUYWBhaGGAYYRhkGGYYaRiFGJEYlBilGBAZEhkVGRoZIRklGUIZRBlFGUgZ"
        "URlUGVUZVhlZGVoZYBllGWoZiRmRGZIZlRmYGaEZphmpGQkaFhokGiYaRBpGGkkaUBpSGlUaWBphGmYaaRqFGpEalhqaGgAgAiAIIAogFSAg"
        "ICIgJSAoICogRSBRIFkgYSBlIIAggiCIIIoglSCgIKIgpSCoIKogBSERIRQhGSElIUIhRCFJIVUhWCFaIWEhZCFlIWYhhSGQIZYhmSGlIQEi"
        "CCIKIhEiFSIgIiIiKCIqIkUiUSJWIlkiZSKBIogiiiKRIpUioCKiIqgiqiIFJBQkFiQZJCUkRCRFJEYkSSRSJFUkWCRaJGYkhSSRJJQkmSSh"
        "JKUkCSUVJSElKSVAJUUlSCVRJVQlVSVZJWIlZSVoJYklkCWUJZUlmCWaJaElpCWmJaklBSYQJhImGSYlJkEmSSZVJmAmYSZpJoQmhiaQJpom"
        "ACgCKAgoCigVKCAoIigoKCooRShRKFQoZSiAKIIoiCiKKKAooiioKKooCSkRKRQpGSklKUYpSSlSKVUpYSlkKWYpaSmFKZAplimZKaQppSkA"
        "KgIqCCoKKiAqIiooKioqRSpRKlYqWSplKoAqgiqIKooqlSqgKqIqqCqqKgVAEUAWQCVASUBSQFVAWEBaQGFAZEBmQJRAmUChQKZAAEEBQQRB"
        "BkEJQRJBFUEWQRhBGkEhQSZBKUFFQUhBSkFRQVRBVUFWQVlBWkFlQWhBakGBQYRBhkGQQZJBlUGgQaFBokEFQhFCFEIWQiVCQUJSQlVCWkJk"
        "QmlCiUKUQqVCAUQVRBlEKURFREhESkRRRFREVURWRGFEYkRlRGhEakSBRIZEiUSQRJJElUSgRKFEqUQBRQJFBUUKRRFFFEUVRRZFGUUgRSVF"
        "KkVBRURFRUVGRUlFUEVRRVRFVUVWRVhFWUVhRWRFZUVmRWlFgkWERYVFiEWRRZRFlUWWRZlFmkWlRahFqkUBRgVGCUYURhVGGEYaRiFGJEYp"
        "RkBGQkZFRkhGUEZRRlJGVUZWRllGYkZlRmhGgUaFRopGlEaVRqFGpEamRgVIEUgVSBpIJUhCSElIUEhVSFhIYUhkSGZIaUiFSJFIlEiWSJlI"
        "pUgBSQVJBkkKSRBJFEkVSRhJIUkkSSZJQElFSUpJUUlSSVRJVUlWSVlJYEliSWVJZklqSYZJiUmSSZVJlkmYSaFJpEmmSalJFkpESkZKSUpV"
        "SlhKWkpkSmlKlEqlSgFQBFAFUAZQCVASUBVQGlAhUCRQKVBAUEVQSFBRUFRQVVBWUFlQZVBoUIZQiVCVUJhQoFChUKZQqVAFUQhRCVEKURFR"
        "FFEVURZRGFEZUSBRJVEmUShRKlFBUURRRVFGUUlRUFFRUVJRVFFVUVZRWFFZUVpRYVFkUWVRZlFpUYJRhVGRUZRRlVGWUZlRoFGlUapRAVIG"
        "UhJSFVIaUiFSJFJCUkVSSlJRUlRSVVJWUllSYlJlUoVSkFKSUpVSmVKaUqRSBFQFVBFUFFQVVBZUGFQZVCFUJVQoVCpUQVREVEVURlRJVEpU"
        "UFRRVFRUVVRWVFhUWVRaVGFUYlRkVGVUZlRpVIBUiFSKVJFUlFSVVJZUmVShVKRUpVSqVAFVAlUEVQVVBlUJVRBVEVUSVRRVFVUWVRlVGlUh"
        "VSRVJVUmVSlVQFVBVUJVRFVFVUZVSFVJVVBVUVVSVVRVVVVWVVhVWVVaVWBVYVVkVWVVZlVoVWlValWBVYRVhVWJVYpVkFWRVZRVlVWWVZhV"
        "mVWhVaRVpVWmValVAFYBVgJWBFYGVghWCVYRVhRWFVYYVhlWIFYhViJWJFYlViZWKFYpVkFWRVZGVkhWSVZKVlBWUVZSVlRWVVZWVlhWWVZa"
        "VmFWZFZlVmlWglaFVoZWiFaJVopWkVaVVppWolalVqZWqFapVgRYBVgGWAlYEFgVWBhYIVgqWEVYSFhKWFFYVFhVWFZYWFhZWGBYYlhkWGVY"
        "gliJWJBYkliVWJhYoVipWAFZAlkFWQpZEVkUWRVZFlkZWSVZQVlEWUVZRllJWVBZUVlSWVRZVVlWWVhZWVlaWWFZZFllWWZZaVmBWYVZiVmR"
        "WZRZlVmWWZhZmVmlWQRaCFoVWhpaIFolWiZaKVpFWkhaSVpRWlVaVlpYWllaYlplWmhaalqBWopaklqVWpZamFqaWqFaBWAUYBZgGWAlYERg"
        "UGBVYFZgWGBaYGFgZGBmYGlggWCWYKVgAWEEYQZhCWESYRVhIWEiYSZhKWFFYUlhUWFVYVZhWWFlYWZhamGEYYphkmGVYaFhpmGpYRFiFmIZ"
        "YkBiQWJGYlViVmJYYmBihWKRYpZipWIRZBJkFWQWZBpkIWQmZClkQGRCZEVkSGRKZFFkVGRVZFZkWWRaZGBkYmRlZIRkhWSJZJBkkmSUZJVk"
        "lmSYZJpkoWSkZKlkBWUIZQplEWUVZRZlGWVEZUVlRmVJZVBlUWVUZVVlVmVZZWFlZGVlZWZlaWWGZYllimWRZZVllmWZZZplomWlZaZlqGUC"
        "ZglmFWYgZiZmKGYpZkBmRWZIZkpmUWZUZlVmVmZYZlpmYGZlZmhmgGaCZoVmimaUZpZmmGaZZqBmpGamZqpmFmgZaCVoQWhSaFVoWmhhaGlo"
        "hWiRaJhopmgBaQRpEGkVaSFpJGkmaSlpQGlBaUVpRmlIaVFpVGlVaVZpWWlgaWVpammCaYRpimmVaaFppGmlaalpEWoWahhqQWpEaklqUGpV"
        "alhqWmpkamVqaWqGapRqmGqaaqZqAIACgAiACoAggCKAKIAqgEWAUIBRgFSAVoBZgGWAgICCgIiAioCVgKCAooCogKqABYERgRSBFoEZgSWB"
        "QYFEgUmBUIFSgVWBVoFYgVmBZIFmgWmBhYGJgZSBloGZgaWBAIICggiCCoIVgiCCIoIogiqCUYJUglmCZYKAgoKCiIKKgpWCoIKigqiCqoIU"
        "hBmEQYREhFGEVYRahGGEZIRphJSEmYQBhQmFEoUVhRqFJoUphUCFQYVFhUiFUYVUhVWFVoVZhVqFZYVmhWiFaoWBhYSFhoWJhZCFkoWVhZiF"
        "poURhhaGGYYlhkGGRIZJhkqGUIZVhlmGWoZhhmaGaoaFhpGGmoakhgCIAogIiAqIFYggiCKIKIgqiEGIRYhRiFSIWYhliGmIgIiCiIiIioiV"
        "iKCIooioiKqIBYkGiRGJFIkWiSWJQYlEiUaJSYlQiVKJVYlaiWGJZImFiZaJmYmliQCKAooIigqKFYogiiKKKIoqikWKUYpUilaKgIqCioiK"
        "ioqViqCKooqoiqqKBZARkBaQGJAZkCWQQZBGkEmQVZBYkFqQaZBqkIWQkZCUkJaQmZClkAGRBJEGkQmREJEVkRiRGpEhkSSRJpEpkUCRRZFQ"
        "kVGRVJFVkVaRWZFikWWRhJGGkZKRlZGYkaGRpJGmkamRBZIRkhSSGZIlkkSSRpJJklCSUpJVkliSZpJpkoWSlJKWkqmSAZQElAaUEJQVlBiU"
        "JpRAlEqUUZRUlFWUVpRYlFmUYJRhlGKUZZSElIaUkpSUlJWUmJShlKmUAJUFlQiVCpUQlRGVFJUVlRaVGZUhlSWVKZUqlUGVRJVFlUaVSZVQ"
        "lVGVUpVUlVWVVpVYlVmVWpVhlWSVZZVmlWmVgZWFlYiVkZWSlZSVlZWWlZmVmpWglaKVpZWolaqVAZYElhCWFZYZliCWJpYplkWWSJZJllGW"
        "UpZVllaWWZZllmiWgpaElomWipaSlpSWlZaklqaWqZYFmBaYGZglmEGYRphQmFKYVZhWmFqYZJhlmIWYkZiWmJmYpZgEmQaZCZkQmRKZFZkY"
        "mRqZIJkhmSSZJplAmUKZRZlImUqZUZlUmVWZVplZmWKZZZlmmWqZgZmEmZCZkpmVmZqZoZmmmQWaFZolmkSaRppJmlCaVZpYmmGahZqRmpSa"
        "lZqWmgCgAqAIoAqgFaAgoCKgKKAqoEWgUaBUoFagWaCAoIKgiKCKoJWgoKCioKigqqAFoQmhEaEUoRahGaEaoUahSaFRoVWhWKFaoWGhZKGF"
        "oZChkqGWoZmhAqIIogqiEKIZoiKiKKIqokWiUaJWolmiZaKAooKiiKKKopWioKKioqiiqqIZpCWkQaREpFCkVKRVpFikWqRhpGWkZqRopGmk"
        "haQGpQmlEKUSpRWlGKUmpSmlQqVFpVGlVKVVpValWaVlpWqlgaWEpYWlhqWJpZKllaWYpQWmEaYWphqmIaYlpkSmRqZKplKmVaZWplimYKZi"
        "poamkKaVppammaahpqSmpqYAqAKoCKgKqCCoIqgoqCqoUahUqFaoWaiAqIKoiKiKqJWooKiiqKioqqgFqRSpGakhqSWpQalQqVWpWqlhqWap"
        "aamQqZapAKoCqgiqCqogqiKqKKoqqlGqVKpWqoCqgqqIqoqqlaqgqqKqqKqqqg=="
    ),
}
# fmt: on


@functools.cache
def _grid(name: str) -> np.ndarray:
    """The grid of ``name`` as float32 of shape (rows, values per row)."""
    width, levels, packed = _GRIDS[name]
    bits = 2 if len(levels) <= 4 else 4  # 8 levels take 3 bits, but gguf-py packs them 2 to a byte
    fields = _fields(np.frombuffer(binascii.a2b_base64(packed), np.uint8).reshape((-1, 1)), 1, bits)
    return np.array(levels, dtype=np.float32)[fields].reshape((-1, width))


@functools.cache
def _sign_patterns() -> np.ndarray:
    """ggml's ksigns_iq2xs as ±1: 8 signs from 7 bits, the eighth making the count of minus signs even."""
    low = np.arange(128, dtype=np.uint8)
    odd = np.unpackbits(low.reshape((-1, 1)), axis=-1).sum(axis=-1, dtype=np.uint8) & np.uint8(1)
    return _signs((low | (odd << np.uint8(7))).reshape((-1, 1)))[:, 0]


def _signs(bits: np.ndarray) -> np.ndarray:
    """The 8 bits of each byte, lowest first, as 1 (bit clear) or -1 (set): shape ``bits.shape + (8,)``."""
    unpacked = (bits[..., np.newaxis] >> np.arange(8, dtype=np.uint8)) & np.uint8(1)
    return np.where(unpacked == 0, np.float32(1), np.float32(-1))


def _iq2_xxs(blocks: np.ndarray) -> np.ndarray:
    """8 groups of 32 as two uint32: 4 grid indices (bytes), then 4 × 7 sign bits and a 4-bit scale."""
    n_blocks = blocks.shape[0]
    words = blocks[:, 2:].copy().view("<u4").reshape((n_blocks, -1, 2))
    scales = (words[..., 1] >> np.uint32(28)).astype(np.float32)
    db = (_scale(blocks) * (np.float32(0.5) + scales) * np.float32(0.25)).reshape((n_blocks, -1, 1, 1))
    sign_index = (words[..., 1:] >> np.array([0, 7, 14, 21], dtype=np.uint32)) & np.uint32(0x7F)
    signs = _sign_patterns()[sign_index]
    grid = _grid("iq2_xxs")[blocks[:, 2:].reshape((n_blocks, -1, 8))[..., :4]]
    return (db * grid * signs).reshape((n_blocks, -1))


def _iq2_xs(blocks: np.ndarray) -> np.ndarray:
    """32 groups of 8 as a uint16: a 9-bit grid index and a 7-bit sign index; 16 4-bit scales."""
    n_blocks = blocks.shape[0]
    qs = blocks[:, 2 : 2 + QK_K // 4].copy().view("<u2")
    scales = _fields(blocks[:, 2 + QK_K // 4 :], 1, 4)
    db = (_scale(blocks) * (np.float32(0.5) + scales) * np.float32(0.25)).reshape((n_blocks, -1, 1, 1))
    signs = _sign_patterns()[qs >> np.uint16(9)].reshape((n_blocks, -1, 2, 8))
    grid = _grid("iq2_xs")[qs & np.uint16(511)].reshape((n_blocks, -1, 2, 8))
    return (db * grid * signs).reshape((n_blocks, -1))


def _iq2_s(blocks: np.ndarray) -> np.ndarray:
    """32 groups of 8: a 10-bit grid index (a byte and 2 bits of ``qh``), 8 explicit sign bits; 16 scales."""
    n_blocks = blocks.shape[0]
    qs, signs, qh = blocks[:, 2:34], blocks[:, 34:66], blocks[:, 66:74]
    scales = _fields(blocks[:, 74:], 1, 4)
    db = (_scale(blocks) * (np.float32(0.5) + scales) * np.float32(0.25)).reshape((n_blocks, -1, 1, 1))
    index = qs.astype(np.uint16) | (_fields(qh, 1, 2).astype(np.uint16) << np.uint16(8))
    grid = _grid("iq2_s")[index].reshape((n_blocks, -1, 2, 8))
    return (db * grid * _signs(signs).reshape((n_blocks, -1, 2, 8))).reshape((n_blocks, -1))


def _iq3_xxs(blocks: np.ndarray) -> np.ndarray:
    """64 grid indices (bytes) of 4 values; 8 uint32 of 4 × 7 sign bits and a 4-bit scale."""
    n_blocks = blocks.shape[0]
    words = blocks[:, 2 + QK_K // 4 :].copy().view("<u4")
    scales = (words >> np.uint32(28)).astype(np.float32)
    db = (_scale(blocks) * (np.float32(0.5) + scales) * np.float32(0.5)).reshape((n_blocks, -1, 1, 1))
    sign_index = (words[..., np.newaxis] >> np.array([0, 7, 14, 21], dtype=np.uint32)) & np.uint32(0x7F)
    signs = _sign_patterns()[sign_index]
    grid = _grid("iq3_xxs")[blocks[:, 2 : 2 + QK_K // 4]].reshape((n_blocks, -1, 4, 8))
    return (db * grid * signs).reshape((n_blocks, -1))


def _iq3_s(blocks: np.ndarray) -> np.ndarray:
    """64 9-bit grid indices of 4 values (a byte and a bit of ``qh``), explicit sign bits, 8 odd scales."""
    n_blocks = blocks.shape[0]
    qs, qh, signs = blocks[:, 2:66], blocks[:, 66:74], blocks[:, 74:106]
    scales = _fields(blocks[:, 106:], 1, 4)
    db = (_scale(blocks) * (np.uint8(1) + np.uint8(2) * scales)).reshape((n_blocks, -1, 1, 1))
    index = qs.astype(np.uint16) | (_fields(qh, 1, 1).astype(np.uint16) << np.uint16(8))
    grid = _grid("iq3_s")[index].reshape((n_blocks, -1, 4, 8))
    return (db * grid * _signs(signs).reshape((n_blocks, -1, 4, 8))).reshape((n_blocks, -1))


_IQ1_DELTA = np.float32(0.125)  # IQ1_S_DELTA: the grid (levels -1, 0, 1) is shifted by ± this


def _iq1_index(qs: np.ndarray, high: np.ndarray) -> np.ndarray:
    """11-bit indices into the IQ1 grid: a byte of ``qs`` and 3 bits of ``high``."""
    return qs.astype(np.uint16) | (high.astype(np.uint16) << np.uint16(8))


def _iq1_s(blocks: np.ndarray) -> np.ndarray:
    """8 groups of 32, each with a uint16: 4 × 3 high index bits, a 3-bit odd scale and the delta's sign."""
    n_blocks = blocks.shape[0]
    qs, qh = blocks[:, 2 : 2 + QK_K // 8], blocks[:, 2 + QK_K // 8 :].copy().view("<u2")
    odd_scales = np.uint16(2) * ((qh >> np.uint16(12)) & np.uint16(7)) + np.uint16(1)
    dl = (_scale(blocks) * odd_scales).reshape((n_blocks, -1, 1, 1))
    delta = np.where((qh & np.uint16(0x8000)) == 0, _IQ1_DELTA, -_IQ1_DELTA).reshape((n_blocks, -1, 1, 1))
    high = ((qh[..., np.newaxis] >> np.array([0, 3, 6, 9], dtype=np.uint16)) & np.uint16(7)).reshape((n_blocks, -1))
    grid = _grid("iq1_s")[_iq1_index(qs, high)].reshape((n_blocks, -1, 4, 8))
    return (dl * (grid + delta)).reshape((n_blocks, -1))


def _iq1_m(blocks: np.ndarray) -> np.ndarray:
    """32 groups of 8: 3 high index bits and the delta's sign per nibble of ``qh``; 16 3-bit scales.

    The fp16 super-block scale has no bytes of its own: its 4 nibbles are the top nibbles of the 4 uint16
    that hold the 3-bit scales.
    """
    n_blocks = blocks.shape[0]
    qs, qh = blocks[:, : QK_K // 8], _fields(blocks[:, QK_K // 8 : QK_K // 8 + QK_K // 16], 1, 4)
    packed = blocks[:, -8:].copy().view("<u2")
    top = (packed & np.uint16(0xF000)) >> np.array([12, 8, 4, 0], dtype=np.uint16)
    d = np.bitwise_or.reduce(top, axis=-1, keepdims=True).view(np.float16).astype(np.float32)
    scales = (packed[..., np.newaxis] >> np.array([0, 3, 6, 9], dtype=np.uint16)) & np.uint16(7)
    dl = (d * (np.uint16(2) * scales.reshape((n_blocks, -1)) + np.uint16(1))).reshape((n_blocks, -1, 2, 1, 1))
    delta = np.where((qh & np.uint8(0x08)) == 0, _IQ1_DELTA, -_IQ1_DELTA).reshape((n_blocks, -1, 2, 2, 1))
    grid = _grid("iq1_s")[_iq1_index(qs, qh & np.uint8(0x07))].reshape((n_blocks, -1, 2, 2, 8))
    return (dl * (grid + delta)).reshape((n_blocks, -1))


_DEQUANTIZERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "q4_0": _q4_0,
    "q4_1": _q4_1,
    "q5_0": _q5_0,
    "q5_1": _q5_1,
    "q8_0": _q8_0,
    "q2_k": _q2_k,
    "q3_k": _q3_k,
    "q4_k": _q4_k,
    "q5_k": _q5_k,
    "q6_k": _q6_k,
    "tq1_0": _tq1_0,
    "tq2_0": _tq2_0,
    "iq4_nl": _iq4_nl,
    "iq4_xs": _iq4_xs,
    "mxfp4": _mxfp4,
    "nvfp4": _nvfp4,
    "iq2_xxs": _iq2_xxs,
    "iq2_xs": _iq2_xs,
    "iq2_s": _iq2_s,
    "iq3_xxs": _iq3_xxs,
    "iq3_s": _iq3_s,
    "iq1_s": _iq1_s,
    "iq1_m": _iq1_m,
}
