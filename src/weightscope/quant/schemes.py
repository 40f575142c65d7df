"""Which stored tensors make one quantised weight, by scheme; and that weight's values, as its reference reads them.

A scheme is recognised from the names, types and shapes of the tensors stored beside each other, and from the model's
``config.json`` ``quantization_config`` where a model folder has one (kept by its reader as the metadata value
``config.quantization_config``): the block size of FP8, the bit width of packed integers, GPTQ's checkpoint format.
Each recognised weight is a ``QuantizedWeight``: its logical name and shape, the parts stored for it, the dtype the
reference dequantises to. ``dequantize`` reads the parts, checks that they fit each other (a scale of the wrong shape, a
missing zero point, packed data of the wrong length: ``CorruptCheckpointError`` naming the weight) and hands them to
``weightscope.quant.kernels``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from weightscope.checkpoint import Checkpoint, TensorInfo
from weightscope.errors import CorruptCheckpointError, UnsupportedFormatError
from weightscope.quant import kernels
from weightscope.quant.coreml import DEQUANTIZERS as COREML_DEQUANTIZERS
from weightscope.quant.kernels import BF16, F32

CONFIG_KEY = "config.quantization_config"  # the metadata value a model folder keeps its config's entry under
_BNB_STATE = ".quant_state.bitsandbytes__"
_MAX_STATE = 65536  # bytes of a bitsandbytes quant state's JSON: a few hundred in practice
_DTYPES = {"bfloat16": BF16, "float16": np.dtype(np.float16), "float32": F32}


@dataclass(frozen=True)
class QuantizedWeight:
    """One logical weight stored quantised: the parts stored for it (the packed values first) and how they decode."""

    name: str
    scheme: str  # a name in weightscope.dtypes' table: fp8_block, mxfp4_moe, int_packed, gptq, bnb_nf4, ...
    parts: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: np.dtype  # what the reference dequantises to
    nbytes: int  # the parts' stored bytes
    settings: Mapping[str, Any] = field(default_factory=dict)  # block size, bits, group size, ...

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def bits_per_weight(self) -> float:
        """The parts' stored bits per element of the weight: scales, zero points and index maps included."""
        return self.nbytes * 8 / self.size if self.size else 0.0


def quantization_config(ckpt: Checkpoint) -> dict[str, Any]:
    """The model's ``quantization_config`` (``{}`` where none is known)."""
    text = ckpt.metadata.get(CONFIG_KEY)
    try:
        config = json.loads(text) if text else {}
    except ValueError:
        config = {}
    return config if isinstance(config, dict) else {}


def recognise(ckpt: Checkpoint) -> dict[str, QuantizedWeight]:
    """Every quantised weight of ``ckpt``, by logical name, in the order its packed values are listed: those the file
    records (``Checkpoint.recorded_quantization``), and those recognised by their tensors' names."""
    infos = ckpt.by_name()
    config = quantization_config(ckpt)
    found = dict(ckpt.recorded_quantization())  # a copy: the reader may keep its own
    for name in infos:
        if not name.endswith(_SUFFIXES):  # one C call for the names of no scheme: most, in most files
            continue
        for suffix, make in _RECOGNISERS:
            if name.endswith(suffix):
                weight = make(ckpt, infos, name[: -len(suffix)], config)
                if weight is not None:
                    found[weight.name] = weight
                break
    position = {name: index for index, name in enumerate(infos)}
    return dict(sorted(found.items(), key=lambda item: position[item[1].parts[0]]))


def _weight(
    infos: Mapping[str, TensorInfo], name: str, scheme: str, parts: list[str], shape: tuple[int, ...], **settings: Any
) -> QuantizedWeight:
    dtype = settings.pop("dtype")
    nbytes = sum(infos[part].nbytes for part in parts)
    return QuantizedWeight(name, scheme, tuple(parts), tuple(shape), np.dtype(dtype), nbytes, settings)


def _fp8_block(ckpt: Checkpoint, infos: Mapping[str, TensorInfo], base: str, config: dict[str, Any]) -> Any:
    """DeepSeek-V3's ``X.weight`` (1-byte float) + ``X.weight_scale_inv``; the block from the config, else 128x128
    where the rounded-up grid fits, else what divides (transformers derives it so), else the power of two whose
    rounded-up grid fits (a ragged weight with no config, which weightscope itself writes by ``convert``)."""
    weight, scale = infos.get(base), infos[base + "_scale_inv"]
    if weight is None or weight.dtype.itemsize != 1 or len(weight.shape) < 2 or len(scale.shape) < 2:
        return None
    rows, cols = weight.shape[-2:]
    block = config.get("weight_block_size")
    if not (isinstance(block, list) and len(block) == 2 and all(type(b) is int and b > 0 for b in block)):
        block = [_block_side(rows, scale.shape[-2]), _block_side(cols, scale.shape[-1])]
    dtype = scale.dtype if scale.dtype.kind == "f" and scale.dtype.itemsize >= 2 else BF16
    return _weight(infos, base, "fp8_block", [base, base + "_scale_inv"], weight.shape, dtype=dtype, block=block)


def _block_side(size: int, blocks: int) -> int:
    """The side of the blocks ``blocks`` scales a row (or column) of ``size`` values stand for (see ``_fp8_block``)."""
    if blocks <= 0 or -(-size // 128) == blocks:
        return 128
    if size % blocks == 0:
        return size // blocks
    side = next((1 << power for power in range(31) if -(-size // (1 << power)) == blocks), None)
    return side or max(size // blocks, 1)  # none fits: dequantising names the scale's shape


def _fp8_scaled(ckpt: Checkpoint, infos: Mapping[str, TensorInfo], base: str, config: dict[str, Any]) -> Any:
    """compressed-tensors' float-quantized ``X.weight`` (FP8) + ``X.weight_scale`` per tensor or per channel."""
    weight, scale = infos.get(base), infos[base + "_scale"]
    if weight is None or not weight.type_name.startswith("float8") or base + "_packed" in infos:
        return None
    return _weight(infos, base, "fp8_scaled", [base, base + "_scale"], weight.shape, dtype=scale.dtype)


def _mxfp4(ckpt: Checkpoint, infos: Mapping[str, TensorInfo], base: str, config: dict[str, Any]) -> Any:
    """gpt-oss's ``…_proj_blocks`` U8 ``[E, R, G, 16]`` + ``…_proj_scales`` U8 ``[E, R, G]``: ``[E, G*32, R]``."""
    blocks, scales = infos[base + "_blocks"], infos.get(base + "_scales")
    if scales is None or blocks.dtype != np.uint8 or scales.dtype != np.uint8 or len(blocks.shape) != 4:
        return None
    experts, rows, groups, _ = blocks.shape
    parts = [base + "_blocks", base + "_scales"]
    return _weight(infos, base, "mxfp4_moe", parts, (experts, groups * 32, rows), dtype=BF16)


def _packed(ckpt: Checkpoint, infos: Mapping[str, TensorInfo], base: str, config: dict[str, Any]) -> Any:
    """compressed-tensors' ``X.weight_packed`` + ``X.weight_scale``: NVFP4 with ``X.weight_global_scale`` (U8, two
    codes a byte), else pack-quantized integers (I32, ``X.weight_shape``, asymmetric: ``X.weight_zero_point``)."""
    packed, scale = infos[base + "_packed"], infos.get(base + "_scale")
    if scale is None or len(packed.shape) != 2:
        return None
    parts = [base + "_packed", base + "_scale"]
    if base + "_global_scale" in infos:
        if packed.dtype != np.uint8:
            return None
        rows, cols = packed.shape[0], packed.shape[1] * 2
        group = cols // scale.shape[-1] if scale.shape and scale.shape[-1] else 16
        parts.append(base + "_global_scale")
        return _weight(infos, base, "nvfp4_packed", parts, (rows, cols), dtype=BF16, group=group)
    if base + "_shape" not in infos or infos[base + "_shape"].size != 2:
        return None
    parts.append(base + "_shape")
    shape = tuple(int(size) for size in np.asarray(ckpt[base + "_shape"]).reshape(-1))
    if len(shape) != 2 or min(shape) < 0:
        raise CorruptCheckpointError(f"{ckpt.path}: quantised weight '{base}': weight_shape {list(shape)} is no matrix")
    groups = _weight_args(config)
    bits = groups.get("num_bits")
    width = packed.shape[-1]
    if not isinstance(bits, int):
        candidates = [b for b in range(1, 9) if -(-shape[1] * b // 32) == width]
        if len(candidates) != 1:
            raise UnsupportedFormatError(
                f"{ckpt.path}: quantised weight '{base}': {width} int32 words a row of {shape[1]} values fit "
                f"{candidates or 'no'} bit widths; the config's quantization_config names none"
            )
        bits = candidates[0]
    if not 1 <= bits <= 8:
        raise UnsupportedFormatError(f"{ckpt.path}: quantised weight '{base}': {bits}-bit packing (1 to 8 are known)")
    symmetric = groups.get("symmetric", base + "_zero_point" not in infos)
    if base + "_zero_point" in infos:
        parts.append(base + "_zero_point")
    return _weight(infos, base, "int_packed", parts, shape, dtype=scale.dtype, bits=bits, symmetric=symmetric)


def _weight_args(config: dict[str, Any]) -> dict[str, Any]:
    """compressed-tensors' first ``config_groups`` entry's ``weights`` arguments (``{}`` where none)."""
    groups = config.get("config_groups")
    if isinstance(groups, dict):
        for group in groups.values():
            weights = group.get("weights") if isinstance(group, dict) else None
            if isinstance(weights, dict):
                return weights
    return {}


def _gptq_awq(ckpt: Checkpoint, infos: Mapping[str, TensorInfo], base: str, config: dict[str, Any]) -> Any:
    """``X.qweight`` + ``X.qzeros`` + ``X.scales`` (+ ``X.g_idx``): AWQ's gemm packs along output columns
    (``qweight [in, out/8]``), GPTQ along input rows (``[in*b/32, out]``). The logical weight is ``X.weight``, as
    nn.Linear holds it, ``[out, in]``: the reference's ``[in, out]`` values, transposed."""
    qweight, qzeros, scales = infos[base + "qweight"], infos.get(base + "qzeros"), infos.get(base + "scales")
    if qzeros is None or scales is None or len(qweight.shape) != 2 or len(scales.shape) != 2:
        return None
    parts = [base + "qweight", base + "qzeros", base + "scales"]
    method = config.get("quant_method")
    out = scales.shape[1]
    if method == "awq" or (method != "gptq" and qweight.shape[1] * 8 == out and base + "g_idx" not in infos):
        version = str(config.get("version", "gemm")).lower()
        if version != "gemm":
            raise UnsupportedFormatError(f"{ckpt.path}: quantised weight '{base}qweight': AWQ {version} layout")
        rows = qweight.shape[0]
        group = rows // scales.shape[0] if scales.shape[0] else 0
        return _weight(infos, base + "weight", "awq", parts, (out, rows), dtype=scales.dtype, group=group)
    bits = config.get("bits")
    if base + "g_idx" in infos:
        parts.append(base + "g_idx")
        inputs = infos[base + "g_idx"].size
    else:
        bits = bits if isinstance(bits, int) else 4
        inputs = qweight.shape[0] * 32 // bits
    if not isinstance(bits, int):
        bits = qweight.shape[0] * 32 // inputs if inputs else 4
    if bits not in (2, 4, 8):
        raise UnsupportedFormatError(f"{ckpt.path}: quantised weight '{base}qweight': GPTQ {bits}-bit packing")
    v1 = config.get("checkpoint_format", "gptq") != "gptq_v2"
    return _weight(infos, base + "weight", "gptq", parts, (out, inputs), dtype=scales.dtype, bits=bits, v1=v1)


def _bnb_4bit(kind: str, ckpt: Checkpoint, infos: Mapping[str, TensorInfo], weight: str) -> Any:
    """bitsandbytes' ``X.weight`` U8 + ``X.weight.absmax`` + ``X.weight.quant_map`` (+ nested) and the quant state:
    a U8 tensor of UTF-8 JSON named ``X.weight.quant_state.bitsandbytes__nf4`` (or ``fp4``)."""
    base = weight + _BNB_STATE + kind
    if weight not in infos or weight + ".absmax" not in infos or weight + ".quant_map" not in infos:
        return None
    if infos[weight].dtype != np.uint8:
        return None
    where = f"{ckpt.path}: quantised weight '{weight}'"
    if infos[base].nbytes > _MAX_STATE:
        raise CorruptCheckpointError(f"{where}: a quant state of {infos[base].nbytes} bytes (at most {_MAX_STATE})")
    try:
        state = json.loads(bytes(np.asarray(ckpt[base]).astype(np.uint8)).decode())
        shape, block, dtype = tuple(int(s) for s in state["shape"]), int(state["blocksize"]), _DTYPES[state["dtype"]]
        nested = None
        if "nested_blocksize" in state:
            nested = (int(state["nested_blocksize"]), float(state.get("nested_offset", 0.0)))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise CorruptCheckpointError(f"{where}: its quant state: {error!r}") from None
    if min(shape, default=0) < 0 or block <= 0:
        raise CorruptCheckpointError(f"{where}: its quant state gives shape {list(shape)}, blocks of {block}")
    parts = [weight, weight + ".absmax", weight + ".quant_map"]
    if nested is not None:
        parts += [weight + ".nested_absmax", weight + ".nested_quant_map"]
    missing = [part for part in parts if part not in infos]
    if missing:
        raise CorruptCheckpointError(f"{where}: its quant state is nested, but no {missing[0]} is stored")
    parts.append(base)
    return _weight(infos, weight, f"bnb_{kind}", parts, shape, dtype=dtype, block=block, nested=nested)


def _bnb_int8(ckpt: Checkpoint, infos: Mapping[str, TensorInfo], base: str, config: dict[str, Any]) -> Any:
    """bitsandbytes' LLM.int8: ``X.weight`` I8 + ``X.SCB`` F32 per row."""
    weight = infos.get(base + "weight")
    if weight is None or weight.dtype != np.int8 or len(weight.shape) != 2:
        return None
    return _weight(infos, base + "weight", "bnb_int8", [base + "weight", base + "SCB"], weight.shape, dtype=F32)


Recogniser = Callable[[Checkpoint, Mapping[str, TensorInfo], str, dict[str, Any]], QuantizedWeight | None]
# The suffix of the tensor that gives each scheme away, and what reads the rest from there.
_RECOGNISERS: tuple[tuple[str, Recogniser], ...] = (
    ("_scale_inv", _fp8_block),
    ("_blocks", _mxfp4),
    ("_packed", _packed),
    ("_scale", _fp8_scaled),
    ("qweight", _gptq_awq),
    (_BNB_STATE + "nf4", lambda ckpt, infos, base, config: _bnb_4bit("nf4", ckpt, infos, base)),
    (_BNB_STATE + "fp4", lambda ckpt, infos, base, config: _bnb_4bit("fp4", ckpt, infos, base)),
    ("SCB", _bnb_int8),
)
_SUFFIXES = tuple(suffix for suffix, _ in _RECOGNISERS)


class _Broken:
    """Raises ``CorruptCheckpointError`` naming the weight where its parts do not fit each other."""

    def __init__(self, ckpt: Checkpoint, weight: QuantizedWeight) -> None:
        self.where = f"{ckpt.path}: quantised weight '{weight.name}' ({weight.scheme})"

    def expect(self, holds: bool, what: str) -> None:
        if not holds:
            raise CorruptCheckpointError(f"{self.where}: {what}")

    def shape(self, name: str, array: np.ndarray, expected: tuple[int, ...]) -> None:
        self.expect(array.shape == expected, f"{name} has shape {list(array.shape)}; expected {list(expected)}")


def dequantize(ckpt: Checkpoint, weight: QuantizedWeight) -> np.ndarray:
    """``weight``'s values as its reference implementation dequantises them: ``weight.dtype``, ``weight.shape``."""
    parts = [np.asarray(ckpt[part]) for part in weight.parts]
    return _DEQUANTIZERS[weight.scheme](weight, parts, _Broken(ckpt, weight))


def _fp8_block_values(weight: QuantizedWeight, parts: list[np.ndarray], broken: _Broken) -> np.ndarray:
    values, scale = parts
    (bm, bn), (rows, cols) = weight.settings["block"], values.shape[-2:]
    broken.shape("weight_scale_inv", scale, (*values.shape[:-2], -(-rows // bm), -(-cols // bn)))
    return kernels.fp8_block(values, scale, (bm, bn)).astype(weight.dtype)


def _fp8_scaled_values(weight: QuantizedWeight, parts: list[np.ndarray], broken: _Broken) -> np.ndarray:
    values, scale = parts
    fits = scale.size == 1 or scale.shape == (values.shape[0], 1)
    broken.expect(fits, f"weight_scale has shape {list(scale.shape)}; expected one value or [{values.shape[0]}, 1]")
    return kernels.fp8_scaled(values, scale if scale.size != 1 else scale.reshape(()))


def _mxfp4_values(weight: QuantizedWeight, parts: list[np.ndarray], broken: _Broken) -> np.ndarray:
    blocks, scales = parts
    broken.expect(blocks.shape[-1] == 16, f"blocks hold {blocks.shape[-1]} bytes a block; expected 16 (32 FP4 codes)")
    broken.shape("scales", scales, blocks.shape[:-1])
    return kernels.gpt_oss_mxfp4(blocks, scales)


def _nvfp4_values(weight: QuantizedWeight, parts: list[np.ndarray], broken: _Broken) -> np.ndarray:
    packed, scale, global_scale = parts
    rows, cols = weight.shape
    group = weight.settings["group"]
    broken.expect(group > 0 and cols % group == 0, f"{cols} columns are no whole number of groups of {group}")
    broken.shape("weight_scale", scale, (rows, cols // group))
    broken.expect(global_scale.size == 1, f"weight_global_scale holds {global_scale.size} values; expected 1")
    return kernels.nvfp4(packed, scale, global_scale, group)


def _int_packed_values(weight: QuantizedWeight, parts: list[np.ndarray], broken: _Broken) -> np.ndarray:
    packed, scale = parts[:2]
    rows, cols = weight.shape
    bits = weight.settings["bits"]
    broken.shape("weight_packed", packed, (rows, -(-cols * bits // 32)))
    broken.expect(packed.dtype == np.int32, f"weight_packed is {packed.dtype}; expected int32 words")
    groups = scale.shape[-1] if scale.ndim == 2 else 0
    fits = scale.size == 1 or (scale.ndim == 2 and scale.shape[0] == rows and groups and cols % groups == 0)
    broken.expect(
        bool(fits), f"weight_scale has shape {list(scale.shape)}; a [{rows}, {cols}] weight has no such groups"
    )
    zero = None
    if not weight.settings["symmetric"]:
        broken.expect(len(parts) == 4, "asymmetric (the config says so) but no weight_zero_point is stored")
        broken.shape("weight_zero_point", parts[3], (-(-rows * bits // 32), max(groups, 1)))
        zero = kernels.unpack_dense(parts[3].T, bits, rows).T
    q = kernels.unpack_dense(packed, bits, cols)
    return kernels.pack_quantized(q, scale if scale.size != 1 else scale.reshape(()), zero)


def _gptq_values(weight: QuantizedWeight, parts: list[np.ndarray], broken: _Broken) -> np.ndarray:
    qweight, qzeros, scales = parts[:3]
    (out, inputs), bits = weight.shape, weight.settings["bits"]
    per_word = 32 // bits
    broken.shape("qweight", qweight, (-(-inputs // per_word), out))
    broken.expect(inputs % per_word == 0, f"{inputs} input rows do not fill {bits}-bit words")
    groups = scales.shape[0]
    broken.shape("qzeros", qzeros, (groups, -(-out // per_word)))
    if len(parts) == 4:
        g_idx = parts[3].reshape(-1)
        broken.expect(g_idx.dtype.kind in "iu", f"g_idx is {g_idx.dtype}; expected integers")
        broken.expect(bool(((g_idx >= 0) & (g_idx < groups)).all()), f"g_idx names groups outside 0..{groups - 1}")
    else:
        broken.expect(groups > 0 and inputs % groups == 0, f"{inputs} input rows make no {groups} equal groups")
        g_idx = np.arange(inputs) // (inputs // groups)
    return np.ascontiguousarray(kernels.gptq(qweight, qzeros, scales, g_idx, bits, weight.settings["v1"]).T)


def _awq_values(weight: QuantizedWeight, parts: list[np.ndarray], broken: _Broken) -> np.ndarray:
    qweight, qzeros, scales = parts
    (out, inputs), group = weight.shape, weight.settings["group"]
    broken.expect(out % 8 == 0 and group > 0 and inputs % group == 0, f"scales {list(scales.shape)} fit no groups")
    broken.shape("qweight", qweight, (inputs, out // 8))
    broken.shape("qzeros", qzeros, (inputs // group, out // 8))
    return np.ascontiguousarray(kernels.awq(qweight, qzeros, scales, group).T)


def _bnb_4bit_values(weight: QuantizedWeight, parts: list[np.ndarray], broken: _Broken) -> np.ndarray:
    packed, absmax, code = parts[:3]
    count, block = weight.size, weight.settings["block"]
    broken.expect(
        packed.size == (count + 1) // 2, f"weight holds {packed.size} bytes; {count} codes need {(count + 1) // 2}"
    )
    broken.expect(code.size == 16, f"quant_map holds {code.size} values; expected 16")
    blocks = -(-count // block) if block > 0 else -1
    broken.expect(
        absmax.size == blocks, f"absmax holds {absmax.size} values; {count} codes in blocks of {block} need {blocks}"
    )
    nested = weight.settings["nested"]
    if nested is not None:
        nested_absmax, nested_code = parts[3:5]
        broken.expect(nested_code.size == 256, f"nested_quant_map holds {nested_code.size} values; expected 256")
        needed = -(-blocks // nested[0]) if nested[0] > 0 else -1
        broken.expect(
            nested_absmax.size == needed, f"nested_absmax holds {nested_absmax.size} values; expected {needed}"
        )
        broken.expect(absmax.dtype == np.uint8, f"absmax is {absmax.dtype}; nested maxima are uint8 codes")
        scales = kernels.bnb_absmax(absmax, (nested_code, nested_absmax, nested[0], nested[1]), blocks)
    else:
        scales = kernels.bnb_absmax(absmax, None, blocks)
    return kernels.bnb_4bit(packed, scales, code, block, count).reshape(weight.shape).astype(weight.dtype)


def _tflite_affine_values(weight: QuantizedWeight, parts: list[np.ndarray], broken: _Broken) -> np.ndarray:
    (values,) = parts
    scale, zero_point, axis = weight.settings["scale"], weight.settings["zero_point"], weight.settings["axis"]
    broken.expect(values.shape == weight.shape, f"values of shape {list(values.shape)}; expected {list(weight.shape)}")
    return kernels.affine(values, scale, zero_point, axis)


def _bnb_int8_values(weight: QuantizedWeight, parts: list[np.ndarray], broken: _Broken) -> np.ndarray:
    values, scb = parts
    broken.expect(scb.size == values.shape[0], f"SCB holds {scb.size} values; expected one per row ({values.shape[0]})")
    return kernels.int8_rows(values, scb)


def _openvino_values(weight: QuantizedWeight, parts: list[np.ndarray], broken: _Broken) -> np.ndarray:
    """An OpenVINO decompression subgraph (``weightscope.formats._openvino_graph``) run as the runtime folds it: each
    Convert casts (rounding as its type does), Subtract and Multiply compute in float32 without rounding to the type
    the graph names (constant folding and the CPU plugin agree), Reshape and Gather move values; the result is cast
    to the subgraph's type. No step may make more values than the weight has, nor the weight more than eight a byte
    of its Consts (u2 codes make four): a broadcast or a Gather cannot blow a small file up."""
    limit = weight.size
    broken.expect(limit <= 8 * weight.nbytes, f"{limit} values from {weight.nbytes} bytes of Consts")

    def sized(shape: tuple[int, ...], what: str) -> None:
        broken.expect(math.prod(shape) <= limit, f"{what} makes {list(shape)}, more values than the weight's {limit}")

    def run(step: tuple[Any, ...]) -> np.ndarray:
        kind, *args = step
        if kind == "part":
            return parts[args[0]]
        if kind == "convert":
            return run(args[1]).astype(args[0])
        if kind == "reshape":
            values = run(args[1])
            broken.expect(values.size == math.prod(args[0]), f"{values.size} values are reshaped to {list(args[0])}")
            return values.reshape(args[0])
        if kind == "gather":
            data, indices, axis = (run(arg) for arg in args)
            broken.expect(axis.size == 1 and -data.ndim <= int(axis.reshape(-1)[0]) < data.ndim, "a Gather's axis")
            where = int(axis.reshape(-1)[0]) % data.ndim
            sized((*data.shape[:where], *indices.shape, *data.shape[where + 1 :]), "a Gather")
            indices = indices.astype(np.int64)
            along = data.shape[where]
            broken.expect(bool(((indices >= -along) & (indices < along)).all()), f"Gather indices past {along}")
            return np.take(data, indices, axis=where)
        first, second = (run(arg).astype(F32) for arg in args)
        shape = _broadcast(first.shape, second.shape)
        broken.expect(
            shape is not None, f"{kind} of {list(first.shape)} and {list(second.shape)}, which do not broadcast"
        )
        sized(shape or (), kind)
        return first - second if kind == "subtract" else first * second

    with np.errstate(invalid="ignore", over="ignore"):  # inf x 0 and overflow give NaN and inf, as the runtime's do
        values = run(weight.settings["program"])
        broken.shape("the subgraph's result", values, weight.shape)
        return values.astype(weight.dtype)


def _broadcast(first: tuple[int, ...], second: tuple[int, ...]) -> tuple[int, ...] | None:
    try:
        return np.broadcast_shapes(first, second)
    except ValueError:
        return None


_DEQUANTIZERS: dict[str, Callable[[QuantizedWeight, list[np.ndarray], _Broken], np.ndarray]] = {
    "fp8_block": _fp8_block_values,
    "fp8_scaled": _fp8_scaled_values,
    "mxfp4_moe": _mxfp4_values,
    "nvfp4_packed": _nvfp4_values,
    "int_packed": _int_packed_values,
    "gptq": _gptq_values,
    "awq": _awq_values,
    "bnb_nf4": _bnb_4bit_values,
    "bnb_fp4": _bnb_4bit_values,
    "bnb_int8": _bnb_int8_values,
    "ov_compressed": _openvino_values,
    **COREML_DEQUANTIZERS,
    "tflite_affine": _tflite_affine_values,
}
SCHEMES = tuple(_DEQUANTIZERS)
