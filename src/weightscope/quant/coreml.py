"""Core ML's quantised weights, dequantised step for step as coremltools 9 does it (``weightscope.formats.coreml``
records them; ``weightscope.quant.schemes`` dispatches here by scheme):

- ``coreml_linear``: a neural network's ``rawValue`` (or ``int8RawValue``) with ``linearQuantization``:
  ``quantization_utils._dequantize_linear``, ``float64(q) * scale + bias`` per channel (one scale and bias for the
  whole field, or one a channel along the field's axis: 0, or 1 for a deconvolution's weights; a rank-1 field is one
  channel), stored as float32 (``floatValue``) as ``_dequantize_wp`` does.
- ``coreml_lut``: ``lookupTableQuantization``: ``lut[q]``, float32.
- ``mil_affine``: ``constexpr_affine_dequantize`` (iOS 16): ``optimize._utils.dequantize_by_scale_and_zp``,
  ``(float32(q) - float32(zero_point)) * scale`` with scale and zero point along ``axis`` (or one value), in the
  scale's dtype.
- ``mil_blockwise``: ``constexpr_blockwise_shift_scale`` (iOS 18): ``scale * (data.astype(scale.dtype) - offset)``
  with scale and offset repeated over blocks (each of data's sizes a multiple of theirs), numpy's arithmetic as
  coremltools' ``decompress`` does it.
- ``mil_lut``: ``constexpr_lut_to_dense`` (iOS 18): ``lut[block..., indices]`` where the lut is ``[blocks...,
  palette, 1]`` (the reader records no vector palettes, whose last size is above 1).
- ``mil_lut_packed``: ``constexpr_lut_to_dense`` (iOS 16): indices packed LSB first, ``log2(len(lut))`` bits each,
  into a ``shape`` of the attribute's.
- ``mil_sparse``: ``constexpr_sparse_to_dense`` (iOS 18): zeros where the mask (uint1, of the weight's shape) is 0,
  ``nonzero_data`` in order where it is 1; ``mil_sparse_packed`` (iOS 16): the mask's bits packed LSB first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from weightscope.dtypes import unpack_bits

if TYPE_CHECKING:
    from weightscope.quant.schemes import QuantizedWeight, _Broken


def _coreml_linear(weight: QuantizedWeight, parts: list[np.ndarray], broken: _Broken) -> np.ndarray:
    codes, scale = parts[0], parts[1].reshape(-1)
    bias = parts[2].reshape(-1) if len(parts) == 3 else np.zeros(1, np.float32)
    axis = weight.settings["axis"]
    channels = codes.shape[axis] if axis is not None and codes.ndim > 1 else 1
    for name, values in (("scale", scale), ("bias", bias)):
        broken.expect(
            values.size in (1, channels), f"{values.size} quantisation {name} values; expected 1 or {channels}"
        )
    shape = [1] * codes.ndim
    if channels > 1:
        shape[axis] = channels
    widened = codes.astype(np.float64)
    values = widened * scale.astype(np.float64).reshape(shape or ()) + bias.astype(np.float64).reshape(shape or ())
    return values.astype(np.float32)


def _coreml_lut(weight: QuantizedWeight, parts: list[np.ndarray], broken: _Broken) -> np.ndarray:
    codes, lut = parts[0], parts[1].reshape(-1)
    broken.expect(
        int(codes.max(initial=0)) < lut.size, f"codes reach {int(codes.max(initial=0))}; the lut holds {lut.size}"
    )
    return lut.astype(np.float32)[codes]


def _promoted(param: np.ndarray, data: np.ndarray, axis: int, broken: _Broken, what: str) -> np.ndarray:
    """coremltools' ``promote_rank_to_same_as_data``, then ``repeat_data_as`` where broadcasting does not fit."""
    if param.ndim != data.ndim:
        broken.expect(param.ndim <= 1, f"{what} has rank {param.ndim}; expected 0, 1 or {data.ndim}")
        broken.expect(-data.ndim <= axis < data.ndim, f"axis {axis} of a rank-{data.ndim} weight")
        axis = axis % data.ndim
        param = param.reshape([param.size if index == axis else 1 for index in range(data.ndim)])
    return _repeated(param, data.shape, broken, what)


def _repeated(param: np.ndarray, shape: tuple[int, ...], broken: _Broken, what: str) -> np.ndarray:
    """``param`` repeated along each axis to ``shape`` (each size of ``shape`` a multiple of the param's)."""
    for axis, (size, target) in enumerate(zip(param.shape, shape, strict=True)):
        broken.expect(
            size > 0 and target % size == 0, f"{what} has shape {list(param.shape)}; not blocks of {list(shape)}"
        )
        if 1 < size < target:
            param = np.repeat(param, target // size, axis=axis)
    return param


def _mil_affine(weight: QuantizedWeight, parts: list[np.ndarray], broken: _Broken) -> np.ndarray:
    data, zero_point, scale = parts
    axis = weight.settings["axis"]
    scale = _promoted(scale, data, axis, broken, "scale")
    zero_point = _promoted(zero_point, data, axis, broken, "zero_point")
    values = data.astype(np.float32) - zero_point.astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # what the stored values make, inf and NaN included
        values *= scale
        return values.astype(scale.dtype)


def _mil_blockwise(weight: QuantizedWeight, parts: list[np.ndarray], broken: _Broken) -> np.ndarray:
    data, scale = parts[:2]
    broken.expect(scale.ndim == data.ndim, f"scale has rank {scale.ndim}; data has rank {data.ndim}")
    values = data.astype(scale.dtype)
    if len(parts) == 3:
        broken.expect(
            parts[2].shape == scale.shape, f"offset has shape {list(parts[2].shape)}, scale {list(scale.shape)}"
        )
        values = values - _repeated(parts[2], data.shape, broken, "offset")
    with np.errstate(over="ignore", invalid="ignore"):
        return _repeated(scale, data.shape, broken, "scale") * values


def _mil_lut(weight: QuantizedWeight, parts: list[np.ndarray], broken: _Broken) -> np.ndarray:
    indices, lut = parts
    broken.expect(indices.dtype.kind == "u", f"indices are {indices.dtype}; expected unsigned integers")
    broken.expect(
        lut.ndim == indices.ndim + 2, f"lut has rank {lut.ndim}; indices of rank {indices.ndim} need {indices.ndim + 2}"
    )
    palette = lut.shape[-2]
    broken.expect(
        int(indices.max(initial=0)) < palette, f"indices reach {int(indices.max(initial=0))}; a palette holds {palette}"
    )
    table = lut[..., 0]
    blocks = []
    for axis, (size, groups) in enumerate(zip(indices.shape, table.shape[:-1], strict=True)):
        broken.expect(groups > 0 and size % groups == 0, f"lut has {groups} palettes along axis {axis} of {size}")
        shape = [1] * indices.ndim
        shape[axis] = size
        blocks.append((np.arange(size) // (size // groups)).reshape(shape))
    return table[(*blocks, indices.astype(np.intp))]


def _mil_lut_packed(weight: QuantizedWeight, parts: list[np.ndarray], broken: _Broken) -> np.ndarray:
    packed, lut = parts
    lut = lut.reshape(-1)
    bits = int(lut.size).bit_length() - 1
    broken.expect(
        lut.size == 1 << bits and bits in (1, 2, 4, 6, 8), f"a lut of {lut.size} entries; expected 2, 4, 16, 64 or 256"
    )
    count = weight.size
    broken.expect(
        packed.size == -(-count * bits // 8),
        f"indices hold {packed.size} bytes; {count} of {bits} bits need {-(-count * bits // 8)}",
    )
    return lut[unpack_bits(packed, bits, count)].reshape(weight.shape)


def _mil_sparse(weight: QuantizedWeight, parts: list[np.ndarray], broken: _Broken) -> np.ndarray:
    values, mask = parts
    if weight.scheme == "mil_sparse_packed":
        count = weight.size
        broken.expect(mask.size == -(-count // 8), f"mask holds {mask.size} bytes; {count} bits need {-(-count // 8)}")
        mask = unpack_bits(mask, 1, count).reshape(weight.shape)
    kept = mask != 0
    found = int(np.count_nonzero(kept))
    broken.expect(found == values.size, f"mask keeps {found} values; nonzero_data holds {values.size}")
    dense = np.zeros(mask.shape, values.dtype)
    dense[kept] = values.reshape(-1)
    return dense


Dequantizer = Callable[["QuantizedWeight", list[np.ndarray], "_Broken"], np.ndarray]


def _shaped(dequantize: Dequantizer) -> Dequantizer:
    """``dequantize``, its values held to the shape the file declares for the weight (a constexpr op's output)."""

    def checked(weight: QuantizedWeight, parts: list[np.ndarray], broken: _Broken) -> np.ndarray:
        values = dequantize(weight, parts, broken)
        broken.expect(
            values.shape == weight.shape, f"values of shape {list(values.shape)}; declared {list(weight.shape)}"
        )
        return values

    return checked


DEQUANTIZERS: dict[str, Dequantizer] = {
    scheme: _shaped(function)
    for scheme, function in (
        ("coreml_linear", _coreml_linear),
        ("coreml_lut", _coreml_lut),
        ("mil_affine", _mil_affine),
        ("mil_blockwise", _mil_blockwise),
        ("mil_lut", _mil_lut),
        ("mil_lut_packed", _mil_lut_packed),
        ("mil_sparse", _mil_sparse),
        ("mil_sparse_packed", _mil_sparse),
    )
}
