"""The one table of element types: every format's type codes, mapped to numpy dtypes.

A row per element type: our canonical name, the numpy (or ml_dtypes) dtype that holds
it, and each format's own code for it. Readers and writers look codes up here instead
of keeping chains of ``if`` statements of their own. ``string`` elements are Python
``bytes`` in an ``object`` array; types with no numpy equivalent (TensorFlow's
``variant``, ``resource``) have no dtype and cannot be read as arrays.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from weightscope.errors import UnsupportedFormatError


@dataclass(frozen=True)
class ElementType:
    name: str
    numpy_name: str | None  # a numpy name, "ml_dtypes.NAME", "object", or None
    tensorflow: int | None
    safetensors: str | None  # the header's "dtype" string
    gguf: int | None = None  # the GGML type code (ggml.h ``ggml_type``)
    onnx: int | None = None  # the ONNX ``TensorProto.DataType`` code (onnx/onnx.proto)

    @functools.cached_property
    def dtype(self) -> np.dtype | None:
        if self.numpy_name is None:
            return None
        if self.numpy_name.startswith("ml_dtypes."):
            import ml_dtypes  # only files that hold these types pay for the import

            return np.dtype(getattr(ml_dtypes, self.numpy_name.removeprefix("ml_dtypes.")))
        return np.dtype(self.numpy_name)


# fmt: off
ELEMENT_TYPES: tuple[ElementType, ...] = (
    # name                       numpy                              TF DataType  safetensors
    #                                                               (types.proto) (packed sub-byte types: no numpy)
    ElementType("float32",               "float32",                         1,           "F32", gguf=0, onnx=1),
    ElementType("float64",               "float64",                         2,           "F64", gguf=28, onnx=11),
    ElementType("int32",                 "int32",                           3,           "I32", gguf=26, onnx=6),
    ElementType("uint8",                 "uint8",                           4,           "U8", onnx=2),
    ElementType("int16",                 "int16",                           5,           "I16", gguf=25, onnx=5),
    ElementType("int8",                  "int8",                            6,           "I8", gguf=24, onnx=3),
    ElementType("string",                "object",                          7,           None, onnx=8),
    ElementType("complex64",             "complex64",                       8,           "C64", onnx=14),
    ElementType("int64",                 "int64",                           9,           "I64", gguf=27, onnx=7),
    ElementType("bool",                  "bool",                            10,          "BOOL", onnx=9),
    ElementType("qint8",                 "int8",                            11,          None),
    ElementType("quint8",                "uint8",                           12,          None),
    ElementType("qint32",                "int32",                           13,          None),
    ElementType("bfloat16",              "ml_dtypes.bfloat16",              14,          "BF16", gguf=30, onnx=16),
    ElementType("qint16",                "int16",                           15,          None),
    ElementType("quint16",               "uint16",                          16,          None),
    ElementType("uint16",                "uint16",                          17,          "U16", onnx=4),
    ElementType("complex128",            "complex128",                      18,          None, onnx=15),
    ElementType("float16",               "float16",                         19,          "F16", gguf=1, onnx=10),
    ElementType("resource",              None,                              20,          None),
    ElementType("variant",               None,                              21,          None),
    ElementType("uint32",                "uint32",                          22,          "U32", onnx=12),
    ElementType("uint64",                "uint64",                          23,          "U64", onnx=13),
    ElementType("float8_e5m2",           "ml_dtypes.float8_e5m2",           24,          "F8_E5M2", onnx=19),
    ElementType("float8_e4m3fn",         "ml_dtypes.float8_e4m3fn",         25,          "F8_E4M3", onnx=17),
    ElementType("float8_e4m3fnuz",       "ml_dtypes.float8_e4m3fnuz",       26,          "F8_E4M3FNUZ", onnx=18),
    ElementType("float8_e4m3b11fnuz",    "ml_dtypes.float8_e4m3b11fnuz",    27,          None),
    ElementType("float8_e5m2fnuz",       "ml_dtypes.float8_e5m2fnuz",       28,          "F8_E5M2FNUZ", onnx=20),
    ElementType("int4",                  "ml_dtypes.int4",                  29,          None, onnx=22),
    ElementType("uint4",                 "ml_dtypes.uint4",                 30,          None, onnx=21),
    ElementType("float8_e8m0fnu",        "ml_dtypes.float8_e8m0fnu",        None,        "F8_E8M0", onnx=24),
    # safetensors' sub-byte types, packed in its files (PACKED_BITS), read one element a byte as ml_dtypes holds them
    ElementType("float4_e2m1fn",         "ml_dtypes.float4_e2m1fn",         None,        "F4"),
    ElementType("float6_e2m3fn",         "ml_dtypes.float6_e2m3fn",         None,        "F6_E2M3"),
    ElementType("float6_e3m2fn",         "ml_dtypes.float6_e3m2fn",         None,        "F6_E3M2"),
    # ExecuTorch's packed and opaque types (``EXECUTORCH_SCALAR_TYPES``): no numpy dtype
    ElementType("complex32",             None,                              None,        None),
    ElementType("quint4x2",              None,                              None,        None),
    ElementType("quint2x4",              None,                              None,        None),
    ElementType("bits16",                None,                              None,        None),
    # GGML's block-quantised types (sizes in weightscope.containers.quants): no numpy dtype
    ElementType("q4_0",                  None,                              None,        None, gguf=2),
    ElementType("q4_1",                  None,                              None,        None, gguf=3),
    ElementType("q5_0",                  None,                              None,        None, gguf=6),
    ElementType("q5_1",                  None,                              None,        None, gguf=7),
    ElementType("q8_0",                  None,                              None,        None, gguf=8),
    ElementType("q8_1",                  None,                              None,        None, gguf=9),
    ElementType("q2_k",                  None,                              None,        None, gguf=10),
    ElementType("q3_k",                  None,                              None,        None, gguf=11),
    ElementType("q4_k",                  None,                              None,        None, gguf=12),
    ElementType("q5_k",                  None,                              None,        None, gguf=13),
    ElementType("q6_k",                  None,                              None,        None, gguf=14),
    ElementType("q8_k",                  None,                              None,        None, gguf=15),
    ElementType("iq2_xxs",               None,                              None,        None, gguf=16),
    ElementType("iq2_xs",                None,                              None,        None, gguf=17),
    ElementType("iq3_xxs",               None,                              None,        None, gguf=18),
    ElementType("iq1_s",                 None,                              None,        None, gguf=19),
    ElementType("iq4_nl",                None,                              None,        None, gguf=20),
    ElementType("iq3_s",                 None,                              None,        None, gguf=21),
    ElementType("iq2_s",                 None,                              None,        None, gguf=22),
    ElementType("iq4_xs",                None,                              None,        None, gguf=23),
    ElementType("iq1_m",                 None,                              None,        None, gguf=29),
    ElementType("tq1_0",                 None,                              None,        None, gguf=34),
    ElementType("tq2_0",                 None,                              None,        None, gguf=35),
    ElementType("mxfp4",                 None,                              None,        None, gguf=39),
    ElementType("nvfp4",                 None,                              None,        None, gguf=40),
    ElementType("q1_0",                  None,                              None,        None, gguf=41),
    # Quantisation schemes stored as several tensors (weightscope.quant): the type a logical weight is listed as
    *(ElementType(scheme, None, None, None) for scheme in (
        "fp8_block", "fp8_scaled", "mxfp4_moe", "nvfp4_packed", "int_packed", "gptq", "awq", "bnb_nf4", "bnb_fp4",
        "bnb_int8", "ov_compressed", "coreml_linear", "coreml_lut", "mil_affine", "mil_blockwise", "mil_lut",
        "mil_lut_packed", "mil_sparse", "mil_sparse_packed", "tflite_affine",
    )),
)
# fmt: on

BY_TENSORFLOW: dict[int, ElementType] = {t.tensorflow: t for t in ELEMENT_TYPES if t.tensorflow is not None}
BY_SAFETENSORS: dict[str, ElementType] = {t.safetensors: t for t in ELEMENT_TYPES if t.safetensors is not None}
BY_GGUF: dict[int, ElementType] = {t.gguf: t for t in ELEMENT_TYPES if t.gguf is not None}
BY_ONNX: dict[int, ElementType] = {t.onnx: t for t in ELEMENT_TYPES if t.onnx is not None}


def from_tensorflow(code: int) -> ElementType | None:
    """The element type of a TensorFlow ``DataType`` code; ``_REF`` codes (+100) too."""
    return BY_TENSORFLOW.get(code - 100 if code > 100 else code)


def element_for(dtype: np.dtype, accepts: Callable[[ElementType], bool]) -> ElementType | None:
    """The first element type ``accepts`` takes whose numpy dtype is ``dtype`` (byte order aside), or None.

    ml_dtypes' types are skipped while ml_dtypes is not imported: no array can be of one
    yet, and a writer need not import it to learn so.
    """
    native = np.dtype(dtype).newbyteorder("=")
    for element in ELEMENT_TYPES:
        if element.numpy_name is None or not accepts(element):
            continue
        if element.numpy_name.startswith("ml_dtypes.") and "ml_dtypes" not in sys.modules:
            continue
        if element.dtype == native:
            return element
    return None


def little_endian_dtype(dtype: np.dtype) -> np.dtype:
    """``dtype`` stored little-endian: numpy's numeric types wider than a byte get the order, others
    (one byte, ml_dtypes' types, bytes) have none to get."""
    if dtype.isnative and sys.byteorder == "little":
        return dtype  # as it is: a new dtype would be made at every read
    return dtype.newbyteorder("<") if dtype.itemsize > 1 and dtype.kind in "biufc" else dtype


def tensorflow_code(dtype: np.dtype) -> int:
    """The TensorFlow ``DataType`` code a writer stores for a numpy dtype."""
    # Quantized types share their numpy dtype with the plain integers (int8 with qint8,
    # uint16 with quint16); an array is written as the plain integer type.
    element = element_for(dtype, lambda e: e.tensorflow is not None and not e.name.startswith(("qint", "quint")))
    if element is None or element.tensorflow is None:
        raise ValueError(f"no TensorFlow type holds numpy dtype {np.dtype(dtype)}")
    return element.tensorflow


BY_NAME: dict[str, ElementType] = {t.name: t for t in ELEMENT_TYPES}
# ExecuTorch's ``ScalarType`` codes (c10's numbering: exir/scalar_type.py, schema/scalar_type.fbs, where the complex
# types 8-10 are commented out though the exporter writes them), a column of the table kept by name: its rows are
# too wide for another.
EXECUTORCH_SCALAR_TYPES = {
    0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "float16", 6: "float32", 7: "float64",
    8: "complex32", 9: "complex64", 10: "complex128", 11: "bool", 12: "qint8", 13: "quint8", 14: "qint32",
    15: "bfloat16", 16: "quint4x2", 17: "quint2x4", 22: "bits16", 23: "float8_e5m2", 24: "float8_e4m3fn",
    25: "float8_e5m2fnuz", 26: "float8_e4m3fnuz", 27: "uint16", 28: "uint32", 29: "uint64",
}  # fmt: skip
BY_EXECUTORCH: dict[int, ElementType] = {code: BY_NAME[name] for code, name in EXECUTORCH_SCALAR_TYPES.items()}

# The element types stored packed, by their bits: element k at bits k*b..k*b+b-1 of a little-endian bit stream (two
# FP4 codes a byte, the first in the low nibble, as torch's float4_e2m1fn_x2 and the OCP MX formats lay them; four FP6
# codes in three bytes: an order for FP6 no reference here writes, the same rule carried on). safetensors (0.8) stores
# the bytes as given, counting ``elements * bits / 8`` of them, and refuses a count of bits that is no whole number of
# bytes.
PACKED_BITS = {"float4_e2m1fn": 4, "float6_e2m3fn": 6, "float6_e3m2fn": 6}


_UNPACK_GROUPS = 1 << 16  # groups of 8 codes (``bits`` bytes each) unpacked at a time by the general path


def unpack_bits(data: np.ndarray, bits: int, count: int, *, msb_first: bool = False) -> np.ndarray:
    """The ``count`` ``bits``-bit codes (1 to 8) of the bytes ``data``, one a uint8: a little-endian bit stream
    (element k at bits ``k*bits`` up), or with ``msb_first`` one read from each byte's most significant bit down
    (Core ML's neural-network ``rawValue``); no temporary larger than the result, or than a slice of
    ``_UNPACK_GROUPS`` groups (a file of one such tensor stays within the memory a file may make)."""
    data = data.reshape(-1).view(np.uint8)
    if msb_first or not ((bits == 4 and count % 2 == 0) or (bits == 6 and count % 4 == 0)):
        return _unpack_any(data, bits, count, msb_first)
    if bits == 4:
        codes = np.empty(count, np.uint8)
        np.bitwise_and(data, 0x0F, out=codes[0::2])
        np.right_shift(data, 4, out=codes[1::2])
        return codes
    b0, b1, b2 = data[0::3], data[1::3], data[2::3]  # four 6-bit codes in each three bytes
    codes = np.empty((count // 4, 4), np.uint8)
    np.bitwise_and(b0, 0x3F, out=codes[:, 0])
    np.bitwise_or(b0 >> 6, (b1 & 0x0F) << 2, out=codes[:, 1])
    np.bitwise_or(b1 >> 4, (b2 & 0x03) << 4, out=codes[:, 2])
    np.right_shift(b2, 2, out=codes[:, 3])
    return codes.reshape(count)


def _unpack_any(data: np.ndarray, bits: int, count: int, msb_first: bool) -> np.ndarray:
    codes = np.empty(count, np.uint8)
    order: Literal["big", "little"] = "big" if msb_first else "little"
    step = _UNPACK_GROUPS * 8
    for start in range(0, count, step):  # start * bits is a whole number of bytes: 8 codes take ``bits`` bytes
        stop = min(start + step, count)
        stream = np.unpackbits(data[start * bits // 8 : -(-stop * bits // 8)], bitorder=order)
        fields = stream[: (stop - start) * bits].reshape(-1, bits)
        packed = np.packbits(fields, axis=-1, bitorder=order)[:, 0]  # each code padded to a byte at its end
        codes[start:stop] = packed >> (8 - bits) if msb_first else packed
    return codes


def pack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """``unpack_bits`` undone: the low ``bits`` bits (4 or 6) of each uint8 of ``codes``, a little-endian bit stream."""
    codes = codes.reshape(-1) & ((1 << bits) - 1)
    if bits == 4:
        return codes[0::2] | (codes[1::2] << 4)
    c0, c1, c2, c3 = codes[0::4], codes[1::4], codes[2::4], codes[3::4]
    return np.stack([c0 | (c1 << 6), (c1 >> 2) | (c2 << 4), (c2 >> 4) | (c3 << 2)], axis=-1).reshape(-1)


# numpy's own limits, which a file's shape must fit before any array is made: sizes are
# signed 64-bit (even of arrays with no elements), and arrays hold at most NPY_MAXDIMS
# dimensions (32 before numpy 2).
NUMPY_MAX_BYTES = 1 << 63
NUMPY_MAX_RANK = 64 if np.lib.NumpyVersion(np.__version__) >= "2.0.0b1" else 32


def check_rank(shape: Sequence[int], what: str) -> None:
    """Refuse more dimensions than numpy holds; ``what`` names the tensor."""
    if len(shape) > NUMPY_MAX_RANK:
        raise UnsupportedFormatError(f"{what} has {len(shape)} dimensions; numpy arrays hold {NUMPY_MAX_RANK}")


def check_size(shape: Sequence[int], itemsize: int, what: str, nbytes: int = 0) -> None:
    """Refuse a shape (or a byte count) larger than numpy can hold, counting only non-zero sizes."""
    if max(nbytes, math.prod(size for size in shape if size) * itemsize) >= NUMPY_MAX_BYTES:
        raise UnsupportedFormatError(f"{what} has shape {list(shape)}, larger than numpy can hold")


def numeric_kind(dtype: np.dtype) -> str | None:
    """'f' (floating, bfloat16 and float8 included), 'c', 'i' (integers, int4 included), 'b', or None."""
    if dtype.names is not None:
        return None  # TF's quantized types are records
    if dtype.kind == "V" and dtype.type.__module__.startswith("ml_dtypes"):
        return "i" if "int" in dtype.name else "f"
    return {"f": "f", "c": "c", "i": "i", "u": "i", "b": "b"}.get(dtype.kind)


def native_order(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``values`` in native byte order as ``dtype`` (a swapped copy when the file's order is not native)."""
    if values.dtype.itemsize == 1 or values.dtype.isnative:
        return values.view(dtype)
    if values.dtype.kind in "biufc":
        return values.byteswap().view(values.dtype.newbyteorder("=")).view(dtype)
    # ml_dtypes (bfloat16, float8 ...): swap the bytes as unsigned integers of their width
    unsigned = np.dtype(f"u{values.dtype.itemsize}")
    return values.view(unsigned).byteswap().view(dtype)


# The element types PyTorch holds, under the names this table gives them (``torch.bfloat16``): what
# ``ws.open(path, framework="torch")`` hands out and ``ws.save`` takes. The others (int4, float4, strings) it has not.
# fmt: off
TORCH_TYPES = frozenset((
    "bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "float16", "bfloat16", "float32",
    "float64", "complex64", "complex128", "float8_e5m2", "float8_e4m3fn", "float8_e5m2fnuz", "float8_e4m3fnuz",
    "float8_e8m0fnu",
))
# fmt: on
# What the bits of an ml_dtypes type (bfloat16, float8) are viewed as on the way to or from PyTorch: an integer type
# of its width that both numpy and PyTorch hold.
INTEGER_OF_WIDTH = {1: "uint8", 2: "int16", 4: "int32", 8: "int64"}


def unpack_four_bit(packed: np.ndarray, type_name: str, shape: tuple[int, ...]) -> np.ndarray:
    """INT4/UINT4 elements two to a byte, the first in the low nibble (ONNX's and TFLite's packing; INT4
    sign-extended), as ml_dtypes' int4/uint4 of ``shape``."""
    values = unpack_bits(packed, 4, math.prod(shape)).view(np.int8)  # codes below 16: the same values
    if type_name == "int4":
        values = (values ^ 8) - 8
    element = BY_NAME[type_name].dtype
    assert element is not None
    return values.astype(element).reshape(shape)
