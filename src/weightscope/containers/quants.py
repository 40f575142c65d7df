"""Block quantisation: the table of quantised element types and the kernels that dequantise them.

A quantised tensor is stored as blocks, each a fixed number of bytes (its type size) holding a fixed number
of elements (its block size): scales, then packed quants. ``QUANT_SIZES`` is the one table of those sizes
(gguf-py's ``GGML_QUANT_SIZES``); a kernel registers itself for a type with ``@kernel(name)``, which takes
its sizes from that table, as gguf-py's ``quants.py`` classes do with ``__init_subclass__(qtype=...)``.
Nothing here knows a file format: GGUF's reader, and any other format that stores such blocks, asks
``stored_nbytes`` how many bytes a tensor takes and ``dequantize`` for its values.

The kernels are ports of gguf-py's numpy code (ggml-quants.c), block by block. Each takes the blocks of
one type as uint8 of shape (blocks, bytes per block) and returns float32 of shape (blocks, elements per
block). The arithmetic follows gguf-py's operation by operation, in float32 and in the same order, so that
results are equal bit for bit, not merely close. Types without a kernel (Q8_1, Q8_K, Q1_0, which gguf-py
does not dequantise either) are refused with ``UnsupportedFormatError`` naming the type.
"""

from __future__ import annotations

import binascii
import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from weightscope.errors import CorruptCheckpointError, UnsupportedFormatError

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


class QuantType(NamedTuple):
    """One quantised element type: its sizes (from ``QUANT_SIZES``) and its dequantising kernel."""

    name: str
    block_size: int  # elements per block
    type_size: int  # bytes per block
    dequantize_blocks: Callable[[np.ndarray], np.ndarray]


Kernel = Callable[[np.ndarray], np.ndarray]
# Type name -> its QuantType, for each type with a kernel; filled by ``@kernel`` as this module loads.
QUANT_TYPES: dict[str, QuantType] = {}


def kernel(name: str) -> Callable[[Kernel], Kernel]:
    """Register the decorated function as the kernel dequantising blocks of type ``name`` (a key of ``QUANT_SIZES``)."""

    def register(dequantize_blocks: Kernel) -> Kernel:
        QUANT_TYPES[name] = QuantType(name, *QUANT_SIZES[name], dequantize_blocks)
        return dequantize_blocks

    return register


def stored_nbytes(type_name: str, shape: tuple[int, ...], where: str) -> int:
    """The bytes a tensor of ``shape`` quantised as ``type_name`` takes; its innermost axis must be whole blocks."""
    block, size = QUANT_SIZES[type_name]
    row = shape[-1] if shape else 1
    if row % block:
        raise CorruptCheckpointError(f"{where} of {type_name} has rows of {row} elements, not whole blocks of {block}")
    return math.prod(shape) // block * size


def dequantize(data: memoryview | bytes | np.ndarray, type_name: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    """The float32 values of ``shape`` that the blocks in ``data`` (``stored_nbytes`` of them) hold."""
    quant = QUANT_TYPES.get(type_name)
    if quant is None:
        raise UnsupportedFormatError(
            f"{where} is quantised as {type_name}, which weightscope cannot dequantise "
            f"(it reads {', '.join(QUANT_TYPES)})"
        )
    blocks = np.frombuffer(data, np.uint8).reshape(-1, quant.type_size)
    if not len(blocks):  # a dimension of 0: the kernels' reshapes cannot infer a size from nothing
        return np.zeros(shape, np.float32)
    return quant.dequantize_blocks(blocks).reshape(shape)


# -- the kernels -------------------------------------------------------------------------
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


@kernel("q8_0")
def _q8_0(blocks: np.ndarray) -> np.ndarray:
    return blocks[:, 2:].copy().view(np.int8).astype(np.float32) * _scale(blocks)


@kernel("q4_0")
def _q4_0(blocks: np.ndarray) -> np.ndarray:
    qs = _nibbles(blocks[:, 2:], 16).astype(np.int8) - np.int8(8)
    return _scale(blocks) * qs.astype(np.float32)


@kernel("q4_1")
def _q4_1(blocks: np.ndarray) -> np.ndarray:
    m = _scale(blocks[:, 2:])
    return _scale(blocks) * _nibbles(blocks[:, 4:], 16).astype(np.float32) + m


@kernel("q5_0")
def _q5_0(blocks: np.ndarray) -> np.ndarray:
    q = (_nibbles(blocks[:, 6:], 16) | (_high_bits(blocks[:, 2:6]) << np.uint8(4))).astype(np.int8) - np.int8(16)
    return _scale(blocks) * q.astype(np.float32)


@kernel("q5_1")
def _q5_1(blocks: np.ndarray) -> np.ndarray:
    m = _scale(blocks[:, 2:])
    q = _nibbles(blocks[:, 8:], 16) | (_high_bits(blocks[:, 4:8]) << np.uint8(4))
    return _scale(blocks) * q.astype(np.float32) + m


@kernel("q2_k")
def _q2_k(blocks: np.ndarray) -> np.ndarray:
    """16 sub-blocks of 16 2-bit quants, each with a 4-bit scale and a 4-bit min (× the fp16 d and dmin)."""
    n_blocks = blocks.shape[0]
    scales, qs = blocks[:, : QK_K // 16], blocks[:, QK_K // 16 : QK_K // 16 + QK_K // 4]
    d, dmin = _scale(blocks[:, -4:]), _scale(blocks[:, -2:])
    dl = (d * (scales & 0x0F).astype(np.float32)).reshape((n_blocks, QK_K // 16, 1))
    ml = (dmin * (scales >> 4).astype(np.float32)).reshape((n_blocks, QK_K // 16, 1))
    q = _fields(qs, 32, 2).reshape((n_blocks, QK_K // 16, 16)).astype(np.float32)
    return (dl * q - ml).reshape((n_blocks, QK_K))


@kernel("q3_k")
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


@kernel("q4_k")
def _q4_k(blocks: np.ndarray) -> np.ndarray:
    n_blocks = blocks.shape[0]
    d, dm, qs = _k_scales(blocks)
    q = _nibbles(qs, 32).reshape((n_blocks, -1, 32)).astype(np.float32)
    return (d * q - dm).reshape((n_blocks, QK_K))


@kernel("q5_k")
def _q5_k(blocks: np.ndarray) -> np.ndarray:
    n_blocks = blocks.shape[0]
    d, dm, rest = _k_scales(blocks)
    qh, qs = rest[:, : QK_K // 8], rest[:, QK_K // 8 :]
    high = _fields(qh, 32, 1).reshape((n_blocks, -1, 32))
    q = (_nibbles(qs, 32).reshape((n_blocks, -1, 32)) | (high << np.uint8(4))).astype(np.float32)
    return (d * q - dm).reshape((n_blocks, QK_K))


@kernel("q6_k")
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


@kernel("tq1_0")
def _tq1_0(blocks: np.ndarray) -> np.ndarray:
    """256 trits: 5 in each of 48 bytes (32 bytes × 5, then 16 × 5), the last 16 as 4 in each of 4 bytes."""
    trits = [_trits(blocks[:, :32], 32, 5), _trits(blocks[:, 32:48], 16, 5), _trits(blocks[:, 48:52], 4, 4)]
    q = np.concatenate(trits, axis=-1) - np.int8(1)
    return _scale(blocks[:, -2:]) * q.astype(np.float32)


@kernel("tq2_0")
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


@kernel("iq4_nl")
def _iq4_nl(blocks: np.ndarray) -> np.ndarray:
    return _scale(blocks) * _lookup(_IQ4_VALUES, _nibbles(blocks[:, 2:], 16))


@kernel("iq4_xs")
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


@kernel("mxfp4")
def _mxfp4(blocks: np.ndarray) -> np.ndarray:
    return _e8m0_half(blocks[:, :1]) * _lookup(_E2M1_VALUES, _nibbles(blocks[:, 1:], 16))


def _ue4m3_half(x: np.ndarray) -> np.ndarray:
    """NVFP4's scales, unsigned E4M3 (bias 7; gguf-py ignores the top bit and reads 0x7F, NaN, as 0), halved."""
    exponent, mantissa = (x >> 3) & np.uint8(0x0F), x & np.uint8(0x07)
    # Normal: (8 + m) / 8 × 2**(e - 7); subnormal (e = 0): m / 8 × 2**-6; both halved. All exact in float32.
    significand = np.where(exponent == 0, mantissa, mantissa + np.uint8(8)).astype(np.float32)
    value = np.ldexp(significand, np.maximum(exponent, 1).astype(np.int32) - 11)
    return np.where(x == 0x7F, np.float32(0), value)


@kernel("nvfp4")
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


@kernel("iq2_xxs")
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


@kernel("iq2_xs")
def _iq2_xs(blocks: np.ndarray) -> np.ndarray:
    """32 groups of 8 as a uint16: a 9-bit grid index and a 7-bit sign index; 16 4-bit scales."""
    n_blocks = blocks.shape[0]
    qs = blocks[:, 2 : 2 + QK_K // 4].copy().view("<u2")
    scales = _fields(blocks[:, 2 + QK_K // 4 :], 1, 4)
    db = (_scale(blocks) * (np.float32(0.5) + scales) * np.float32(0.25)).reshape((n_blocks, -1, 1, 1))
    signs = _sign_patterns()[qs >> np.uint16(9)].reshape((n_blocks, -1, 2, 8))
    grid = _grid("iq2_xs")[qs & np.uint16(511)].reshape((n_blocks, -1, 2, 8))
    return (db * grid * signs).reshape((n_blocks, -1))


@kernel("iq2_s")
def _iq2_s(blocks: np.ndarray) -> np.ndarray:
    """32 groups of 8: a 10-bit grid index (a byte and 2 bits of ``qh``), 8 explicit sign bits; 16 scales."""
    n_blocks = blocks.shape[0]
    qs, signs, qh = blocks[:, 2:34], blocks[:, 34:66], blocks[:, 66:74]
    scales = _fields(blocks[:, 74:], 1, 4)
    db = (_scale(blocks) * (np.float32(0.5) + scales) * np.float32(0.25)).reshape((n_blocks, -1, 1, 1))
    index = qs.astype(np.uint16) | (_fields(qh, 1, 2).astype(np.uint16) << np.uint16(8))
    grid = _grid("iq2_s")[index].reshape((n_blocks, -1, 2, 8))
    return (db * grid * _signs(signs).reshape((n_blocks, -1, 2, 8))).reshape((n_blocks, -1))


@kernel("iq3_xxs")
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


@kernel("iq3_s")
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


@kernel("iq1_s")
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


@kernel("iq1_m")
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
