"""Quantised weights stored as several tensors (issue 20): recognised, grouped, and dequantised as their makers do.

``ws.open(path, dequantize=True)`` (or ``Dequantized(ckpt)``) gives a checkpoint whose quantised weights are each one
tensor under its logical name, read dequantised bit for bit as the reference implementation does it, in that
reference's output dtype (``dtype=`` casts it, rounding to nearest even); the tensors of no scheme stay as they are.
Its ``quantized`` maps each logical name to its ``QuantizedWeight`` (scheme, stored parts, effective bits per weight),
and ``raw`` is the checkpoint as stored: without ``dequantize`` every part is read as stored, as before. This is what
GGUF's reader does for its block types, one level up: listing says ``fp8_block → float32`` as it says ``q4_k →
float32``.

Schemes and references (checked against their source; ``weightscope.quant.kernels`` holds the arithmetic):

- ``fp8_block``: DeepSeek-V3 ``X.weight`` F8_E4M3 + ``X.weight_scale_inv`` F32, blocks of the config's
  ``weight_block_size`` (128x128), edge blocks partial. transformers' ``Fp8Dequantize`` returns float32 when the
  scales are float32 (the note said bfloat16: that is DeepSeek's converter's default dtype); ``dtype="bfloat16"``
  gives the converter's values. transformers refuses shapes the grid does not divide; DeepSeek's kernel and this
  read them. uint8 scales are E8M0 exponents.
- ``fp8_scaled``: compressed-tensors float-quantized, ``X.weight`` FP8 + ``X.weight_scale`` (one value or one a row):
  ``w.to(s.dtype) * s``, in the scale's dtype.
- ``mxfp4_moe``: gpt-oss ``*_blocks`` + ``*_scales``, transformers ``_convert_moe_packed_tensors``: bfloat16
  ``[E, G*32, R]``. ``torch.ldexp`` is a true ldexp, not ``x * 2.0**e``: a scale byte of 255 makes ``0.5 * 2**128 =
  2**127`` and ``0 * 2**128 = 0`` (the note's ``ldexp`` said as much; a float32 ``2**128`` factor would give inf
  and NaN), checked on such bytes.
- ``nvfp4_packed``: compressed-tensors NVFP4 (``weight_packed`` U8, ``weight_scale`` F8_E4M3,
  ``weight_global_scale``): bfloat16.
- ``int_packed``: compressed-tensors pack-quantized (0.20.1's dense packing, ``weight_zero_point`` packed along dim
  0): in the scale's dtype.
- ``gptq`` (AutoGPTQ ``qlinear_cuda``'s torch path, with ``g_idx``; v1 stores zero - 1, read back as the masked
  field plus one, so a stored 15 is 16 at 4 bits, not ``(z + 1) & 15`` as the note has it;
  ``checkpoint_format: gptq_v2`` the zero; 2/4/8 bits, 3-bit refused) and ``awq`` (AutoAWQ ``dequantize_gemm``,
  gemm layout only): float16, the reference's ``[in, out]`` values transposed to ``[out, in]`` as ``nn.Linear``
  (and the model before quantisation) holds them, so that ``diff --dequantize`` aligns them with the original.
- ``bnb_nf4`` / ``bnb_fp4`` (nested or not) and ``bnb_int8``: bitsandbytes' serialized state (checked with
  bitsandbytes 0.50.2 on CPU, which the note left unverified); 4-bit values high nibble first, in the quant state's
  dtype; int8 ``q * SCB * float32(1/127)`` in float32 (a product, as ``int8_vectorwise_dequant`` has it: not a
  division by 127, which rounds otherwise).

Formats that record their quantised weights as such give them by ``Checkpoint.recorded_quantization`` rather than
by name: Core ML's ``coreml_linear``, ``coreml_lut``, ``mil_affine``, ``mil_blockwise``, ``mil_lut``,
``mil_lut_packed``, ``mil_sparse`` and ``mil_sparse_packed`` (``weightscope.quant.coreml``, as coremltools computes
them).

``weightscope.quant.error`` measures what quantising cost (``diff ORIGINAL QUANTISED``), GGUF's block types included.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from weightscope.checkpoint import Checkpoint, Extent, Index, TensorInfo
from weightscope.errors import UsageError
from weightscope.layers import Layer, TensorRole
from weightscope.quant.schemes import SCHEMES, QuantizedWeight, dequantize, recognise
from weightscope.sources import AnyPath, AnySource

__all__ = [
    "SCHEMES",
    "Dequantized",
    "QuantizedWeight",
    "grouped",
    "quantized_parts",
    "recognise",
    "scheme_totals",
]


class Dequantized(Checkpoint):
    """``raw`` with each quantised weight one tensor, read dequantised (``dtype``: cast to it; None: the
    reference's own)."""

    def __init__(
        self,
        raw: Checkpoint,
        dtype: np.dtype | str | None = None,
        *,
        quantized: dict[str, QuantizedWeight] | None = None,
    ) -> None:
        super().__init__(raw.path)
        self.raw = raw
        self.format, self.title, self.checksums = raw.format, raw.title, raw.checksums
        self.verify_checksums = raw.verify_checksums
        self.dtype = None if dtype is None else _float_dtype(dtype)
        self.quantized = recognise(raw) if quantized is None else quantized
        owner = {part: weight for weight in self.quantized.values() for part in weight.parts}
        infos: dict[str, TensorInfo] = {}
        for info in raw.infos():
            weight = owner.get(info.name)
            if weight is None:
                infos[info.name] = info
            elif info.name == weight.parts[0]:
                infos[weight.name] = self._logical(weight, info)
        # A weight the file records as quantised plays the part its stored values do (a Core ML layer's weight, a
        # TFLite tensor's found from its operators), but where those are a packed part (OpenVINO's codes,
        # ``weight_packed``), which its own name then tells.
        stored_roles = {name: raw.role(weight.parts[0]) for name, weight in raw.recorded_quantization().items()}
        roles = {name: role for name, role in stored_roles.items() if not (role.role or "").endswith("_packed")}
        self._install(Index(infos, metadata=raw.metadata, roles=roles))

    def _logical(self, weight: QuantizedWeight, packed: TensorInfo) -> TensorInfo:
        dtype = self.dtype or weight.dtype
        return packed._replace(name=weight.name, dtype=dtype, shape=weight.shape, nbytes=weight.nbytes,
                               type_name=weight.scheme)  # fmt: skip

    def _read(self, info: TensorInfo) -> np.ndarray:
        weight = self.quantized.get(info.name)
        if weight is None:
            return self.raw._read(info)
        values = dequantize(self.raw, weight)
        return values if values.dtype == info.dtype else values.astype(info.dtype)

    def _extent(self, info: TensorInfo) -> Extent | None:
        return None if info.name in self.quantized else self.raw._extent(info)

    def _source_of(self, file: str) -> AnySource | None:
        return self.raw._source_of(file)

    def role(self, name: str) -> TensorRole:
        name = self.info(name).name
        # A logical weight: the part its stored values play where the file records it (the index's roles, made above),
        # else what its name says.
        return super().role(name) if name in self.quantized else self.raw.role(name)

    def checked_files(self) -> list[tuple[AnyPath, str, str]]:
        return self.raw.checked_files()

    def framework_name(self, name: str) -> tuple[str, tuple[int, ...] | None] | None:
        return self.raw.framework_name(name)

    def layer_kind(self, layer: Layer) -> tuple[str, str] | None:
        return self.raw.layer_kind(layer)

    def size_breakdown(self) -> dict[str, Any] | None:
        return self.raw.size_breakdown()

    @property
    def notes(self) -> list[str]:
        return self.raw.notes

    def _close(self) -> None:
        self.raw.close()


def _float_dtype(dtype: np.dtype | str) -> np.dtype:
    from weightscope.dtypes import BY_NAME, numeric_kind

    element = BY_NAME.get(str(dtype))
    try:
        resolved = element.dtype if element is not None else np.dtype(dtype)
    except TypeError:
        resolved = None
    if resolved is None or numeric_kind(resolved) != "f":
        raise UsageError(f"dequantising gives floating-point values; {dtype} is no float dtype")
    return resolved


def quantized_parts(ckpt: Checkpoint) -> dict[str, str]:
    """Each stored part of a quantised weight in ``ckpt`` -> that weight's name; none where ``ckpt`` dequantises."""
    if isinstance(ckpt, Dequantized):
        return {}
    return {part: weight.name for weight in recognise(ckpt).values() for part in weight.parts}


def grouped(ckpt: Checkpoint) -> Checkpoint:
    """``ckpt`` with its quantised weights each one tensor (a ``Dequantized`` view), or itself where it has none."""
    found = recognise(ckpt)
    return Dequantized(ckpt, quantized=found) if found else ckpt


def scheme_totals(ckpt: Checkpoint) -> dict[str, dict[str, float]]:
    """Per scheme of ``ckpt``'s quantised weights: how many weights, their values, stored bytes and effective bits
    per weight (scales, zero points and index maps included)."""
    totals: dict[str, dict[str, float]] = {}
    weights = ckpt.quantized if isinstance(ckpt, Dequantized) else recognise(ckpt)
    for weight in weights.values():
        entry = totals.setdefault(weight.scheme, {"weights": 0, "values": 0, "bytes": 0})
        entry["weights"] += 1
        entry["values"] += weight.size
        entry["bytes"] += weight.nbytes
    for entry in totals.values():
        entry["bits_per_weight"] = round(entry["bytes"] * 8 / entry["values"], 3) if entry["values"] else 0.0
    return totals
