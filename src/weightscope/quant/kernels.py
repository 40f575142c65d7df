"""The dequantising arithmetic of each scheme, in numpy, step for step as its reference implementation does it.

Each function takes the stored parts as numpy arrays (as read) and returns the values in the reference's output
dtype, equal bit for bit: a product the reference computes in float32 and rounds to bfloat16 is computed in float32
here and rounded once (ml_dtypes' cast rounds to nearest even, as torch's ``.to`` does); a product the reference
computes in float16 or bfloat16 is exact in float32 (both factors have at most 11 significant bits) and rounded once,
which is what torch's CPU kernels give. Shapes are checked by the caller (``weightscope.quant.schemes``).
"""

from __future__ import annotations

import functools

import ml_dtypes
import numpy as np

F32 = np.dtype(np.float32)
BF16 = np.dtype(ml_dtypes.bfloat16)


@functools.cache
def e2m1_values() -> np.ndarray:
    """The 16 FP4 (E2M1) codes' values as float32, ``-0.0`` included: bit 3 the sign, 2 exponent bits, 1 mantissa."""
    return np.arange(16, dtype=np.uint8).view(ml_dtypes.float4_e2m1fn).astype(F32)


def exact_product(a: np.ndarray, b: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``a * b`` as torch computes it in ``dtype`` (float16/bfloat16/float32): in float32, rounded once to ``dtype``."""
    product = np.multiply(a, b, dtype=F32)
    return product if dtype == F32 else product.astype(dtype)


def nibbles(packed: np.ndarray, low_first: bool) -> np.ndarray:
    """Each byte's two 4-bit codes, in the order they stand for consecutive elements: the last axis doubled."""
    low, high = packed & 0x0F, packed >> 4
    pair = (low, high) if low_first else (high, low)
    return np.stack(pair, axis=-1).reshape(*packed.shape[:-1], packed.shape[-1] * 2)


def fp8_block(weight: np.ndarray, scale_inv: np.ndarray, block: tuple[int, int]) -> np.ndarray:
    """DeepSeek-V3 FP8 (``weight_dequant``; transformers ``Fp8Dequantize``): ``float32(w) * s[i//bm, j//bn]`` in
    float32; a partial block at the edge has its own scale. uint8 scales are E8M0 exponents (``2**(b - 127)``)."""
    scales = _e8m0(scale_inv) if scale_inv.dtype == np.uint8 else scale_inv.astype(F32)
    rows, cols = weight.shape[-2:]
    block = (min(block[0], max(rows, 1)), min(block[1], max(cols, 1)))  # a block past the edge: the edge's
    out = as_float32(weight)
    flat, grid = out.reshape(-1, rows, cols), scales.reshape(-1, *scales.shape[-2:])
    for matrix, matrix_scales in zip(flat, grid, strict=True):  # a block row at a time: one row of scales, widened
        for index, scale_row in enumerate(matrix_scales):
            rows_of_block = matrix[index * block[0] : (index + 1) * block[0]]
            np.multiply(rows_of_block, np.repeat(scale_row, block[1])[:cols], out=rows_of_block)
    return out


def as_float32(values: np.ndarray) -> np.ndarray:
    """A one-byte float type's values as float32, by a table of its 256 codes (a gather: several times ml_dtypes'
    element-wise cast), NaNs as that cast makes them."""
    if values.dtype.itemsize != 1:
        return values.astype(F32)
    return _codes_table(values.dtype)[values.view(np.uint8)]


@functools.cache
def _codes_table(dtype: np.dtype) -> np.ndarray:
    return np.arange(256, dtype=np.uint8).view(dtype).astype(F32)


def _e8m0(exponents: np.ndarray) -> np.ndarray:
    """E8M0 bytes as float32 powers of two, ``(b - 127).exp2()`` as transformers computes them (255: 2**128 = inf)."""
    with np.errstate(over="ignore"):
        return np.ldexp(np.float32(1), exponents.astype(np.int32) - 127).astype(F32)


def fp8_scaled(weight: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """compressed-tensors' float-quantized FP8 per tensor or per channel (``_dequantize``): ``w.to(s.dtype) * s``,
    in the scale's dtype; a per-channel scale ``[out, 1]`` broadcasts along each row."""
    return exact_product(as_float32(weight), scale.astype(F32), scale.dtype)


def gpt_oss_mxfp4(blocks: np.ndarray, scales: np.ndarray, dtype: np.dtype = BF16) -> np.ndarray:
    """transformers' ``_convert_moe_packed_tensors``: blocks ``[E, R, G, 16]`` of FP4 codes, low nibble first, each
    32 sharing one E8M0 scale ``[E, R, G]``; ``torch.ldexp(LUT[code], scale - 127)`` in ``dtype`` — a true ldexp
    (``0.5 * 2**128`` is ``2**127``, ``0 * 2**128`` is 0; only what exceeds the type's range is ``inf``), exact in
    float32 for every code and scale, then reshaped ``[E, R, G*32]`` and transposed to ``[E, G*32, R]``."""
    # Each byte's two values (low nibble first) from one table; ldexp as two exact products, v * 2**(e-1) * 2: only
    # the second can overflow, to inf exactly where ldexp does (2**128 itself is no float32: v * inf would be NaN).
    experts, rows, groups, _ = blocks.shape
    out = np.empty((experts, groups * 32, rows), dtype)
    powers = np.ldexp(np.float32(1), np.arange(-128, 128, dtype=np.int32)).astype(F32)
    for expert in range(experts):  # one expert's float32 values at a time: memory of the output's order, not 2x it
        values = _pairs_table()[blocks[expert]].reshape(rows, groups, 32)
        with np.errstate(over="ignore"):
            np.multiply(values, powers[scales[expert]][..., None], out=values)
            np.multiply(values, np.float32(2), out=values)
        matrix = values.reshape(rows, groups * 32)
        if dtype == BF16 and np.little_endian:  # exact in bfloat16 (two significant bits, float32's exponents)
            out[expert] = matrix.view(np.uint16)[:, 1::2].view(BF16).T
        else:
            out[expert] = matrix.T
    return out


@functools.cache
def _pairs_table() -> np.ndarray:
    """Byte -> the float32 values of its two FP4 codes, low nibble first."""
    codes = np.arange(256, dtype=np.uint8)
    return e2m1_values()[np.stack([codes & 0x0F, codes >> 4], axis=-1)]


def nvfp4(packed: np.ndarray, scale: np.ndarray, global_scale: np.ndarray, group: int) -> np.ndarray:
    """compressed-tensors' NVFP4 (``NVFP4PackedCompressor.decompress``): codes low nibble first, unpacked to bfloat16;
    ``scale.to(bf16) / global_scale`` promotes to float32 (the global scale is a 1-D tensor), the product is float32,
    and ``_process_group`` casts it to bfloat16."""
    values = e2m1_values()[nibbles(packed, low_first=True)]
    local = np.divide(scale.astype(BF16).astype(F32), global_scale.astype(F32).reshape(()), dtype=F32)
    expanded = np.repeat(local, group, axis=-1)
    return np.multiply(values, expanded, dtype=F32).astype(BF16)


def unpack_dense(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """compressed-tensors' ``unpack_from_int32`` along the last axis: element k at bit ``k * bits`` of the row's
    little-endian int32 words (crossing words), stored as ``q + 2**(bits-1)``; returns the signed ``q`` as int16."""
    words = np.ascontiguousarray(packed.astype("<i4")).view(np.uint8)
    row_bits = np.unpackbits(words, axis=-1, bitorder="little")[..., : count * bits]
    codes = np.packbits(
        row_bits.reshape(*packed.shape[:-1], count, bits), axis=-1, bitorder="little"
    )  # pads each code to a byte
    return codes[..., 0].astype(np.int16) - (1 << (bits - 1))


def pack_quantized(q: np.ndarray, scale: np.ndarray, zero: np.ndarray | None) -> np.ndarray:
    """compressed-tensors' ``_dequantize``: ``(q.to(s.dtype) - zp.to(s.dtype)) * s`` in the scale's dtype, each
    column of a group with its group's scale (``scale [out, groups]``; a channel's ``[out, 1]``)."""
    columns = q.shape[-1]
    repeat = columns // scale.shape[-1] if scale.ndim else 1
    dtype = scale.dtype
    values = q.astype(dtype)
    if zero is not None:  # the difference of two small integers: exact in any float dtype
        values = np.subtract(values, np.repeat(zero, repeat, axis=-1).astype(dtype), dtype=F32).astype(dtype)
    return exact_product(values, np.repeat(scale, repeat, axis=-1) if scale.ndim else scale, dtype)


def _shifted(words: np.ndarray, bits: int, axis: int) -> np.ndarray:
    """The ``32 // bits`` fields of each int32 word (field j at bits ``bits * j``), as a new axis after ``axis``."""
    shifts = np.arange(0, 32, bits, dtype=np.uint32)
    shape = [1] * (words.ndim + 1)
    shape[axis + 1] = shifts.size
    fields = (words.astype(np.uint32)[(slice(None),) * (axis + 1) + (None,)] >> shifts.reshape(shape)) & (2**bits - 1)
    return fields.astype(np.int16)


def gptq(
    qweight: np.ndarray, qzeros: np.ndarray, scales: np.ndarray, g_idx: np.ndarray, bits: int, v1: bool
) -> np.ndarray:
    """AutoGPTQ's ``QuantLinear`` (``qlinear_cuda``'s torch path): ``qweight [in*b/32, out]`` packed along input
    rows, ``qzeros [groups, out*b/32]`` along columns; v1 stores ``zero - 1``, read back as the field plus one,
    after masking (a stored 15 is 16); ``W[k, n] = scales[g_idx[k], n] * (q[k, n] - z[g_idx[k], n])`` in float16,
    ``[in, out]``."""
    q = _shifted(qweight, bits, 0).reshape(-1, qweight.shape[1])
    z = _shifted(qzeros, bits, 1).reshape(qzeros.shape[0], -1)
    if v1:
        z = z + 1
    groups = g_idx.astype(np.int64)
    return exact_product((q - z[groups]).astype(F32), scales[groups], scales.dtype)


AWQ_ORDER = np.array([0, 4, 1, 5, 2, 6, 3, 7])  # AutoAWQ's AWQ_REVERSE_ORDER: column 8w + k sits in slot ORDER[k]


def awq(qweight: np.ndarray, qzeros: np.ndarray, scales: np.ndarray, group: int) -> np.ndarray:
    """AutoAWQ's ``dequantize_gemm``: int4 packed along output columns, 8 per word in the slot order ``AWQ_ORDER``;
    ``(q - z) * scales`` (int8 difference times float16), ``[in, out]``; no ``+1`` on the zeros."""

    def columns(words: np.ndarray) -> np.ndarray:
        return _shifted(words, 4, 1)[:, :, AWQ_ORDER].reshape(words.shape[0], -1)

    z = np.repeat(columns(qzeros), group, axis=0)
    return exact_product((columns(qweight) - z).astype(F32), np.repeat(scales, group, axis=0), scales.dtype)


def bnb_absmax(absmax: np.ndarray, nested: tuple[np.ndarray, np.ndarray, int, float] | None, count: int) -> np.ndarray:
    """bitsandbytes' block maxima; nested (double quantisation): ``nested_quant_map[absmax] * nested_absmax[i //
    nested_blocksize] + nested_offset`` in float32."""
    if nested is None:
        return absmax.astype(F32).reshape(-1)
    code, nested_absmax, block, offset = nested
    looked = code.astype(F32)[absmax.reshape(-1).astype(np.intp)]
    widened = np.repeat(nested_absmax.astype(F32).reshape(-1), min(block, looked.size))[: looked.size]
    scaled = np.multiply(looked, widened, dtype=F32)
    return np.add(scaled, np.float32(offset), dtype=F32)[:count]


def bnb_4bit(packed: np.ndarray, absmax: np.ndarray, code: np.ndarray, block: int, count: int) -> np.ndarray:
    """bitsandbytes' ``dequantize_4bit`` (NF4/FP4): codes high nibble first, ``quant_map[code] * absmax[i // block]``
    in float32, the first ``count`` values."""
    codes = nibbles(packed.reshape(-1, 1), low_first=False).reshape(-1)[:count]
    scales = np.repeat(absmax, min(block, count))[:count]
    return np.multiply(code.astype(F32)[codes], scales, dtype=F32)


def int8_rows(weight: np.ndarray, scb: np.ndarray) -> np.ndarray:
    """bitsandbytes' LLM.int8 weight: ``q * SCB[row] / 127`` in float32 (``int8_vectorwise_dequant``)."""
    product = np.multiply(weight.astype(F32), scb.astype(F32).reshape(-1, 1), dtype=F32)
    return np.multiply(product, np.float32(1 / 127), dtype=F32)


def affine(values: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int) -> np.ndarray:
    """TFLite's DEQUANTIZE, ``scale * (q - zero_point)`` to float32, as its kernels round it.

    Several scales (one per index along ``axis``; zero points as many, or one): ``reference_ops::
    PerChannelDequantize``, a float product of the scale and the int32 difference, rounded once. One scale:
    ``optimized_ops::Dequantize`` (the builtin resolver's kernel; on x86 its NEON code runs through NEON_2_SSE):
    eight values at a time ``float(q) * scale + float(-zero_point * scale)`` in float32, the product and the sum each
    rounded, the last ``size % 8`` as ``float(double(scale) * (q - zero_point))``. (An ARM build with FMA fuses the
    first into one rounding: at most one unit in the last place apart where the zero point is not 0.)
    """
    if scale.size > 1:
        shape = [1] * values.ndim
        shape[axis] = scale.size
        zero = zero_point.reshape(shape) if zero_point.size > 1 else zero_point.reshape(())
        return (scale.reshape(shape).astype(np.float64) * (values.astype(np.int64) - zero)).astype(F32)
    one_scale, zero_at = float(scale.reshape(-1)[0]), int(zero_point.reshape(-1)[0])
    flat = values.reshape(-1).astype(np.int64)
    out = np.empty(flat.size, F32)
    lanes = flat.size // 8 * 8
    out[:lanes] = flat[:lanes].astype(F32) * np.float32(one_scale) + np.float32(-zero_at * one_scale)
    out[lanes:] = (one_scale * (flat[lanes:] - zero_at)).astype(F32)
    return out.reshape(values.shape)
