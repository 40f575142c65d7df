"""TensorFlow Lite / LiteRT models (``.tflite``): every constant tensor of every subgraph, read in place.

Bytes (``tflite/converter/schema/schema.fbs`` in google-ai-edge/LiteRT, read with
``weightscope.flatbuffers``): one flatbuffer whose root table is a ``Model``, file identifier
``TFL3`` at bytes 4-8. Slots (a union takes two, its type first):

- ``Model``: version 0, operator_codes 1, subgraphs 2, description 3, buffers 4,
  metadata_buffer 5, metadata 6 (``Metadata``: name 0, buffer 1), signature_defs 7
  (``SignatureDef``: signature_key 2), external_buffer_groups 8, external_buffers 9.
- ``OperatorCode``: deprecated_builtin_code 0 (byte), custom_code 1, version 2,
  builtin_code 3 (int32); the operator is the larger of the two codes (what the runtime's
  ``GetBuiltinCode`` does: old files fill only the byte, new ones write 127 there past it).
- ``SubGraph``: tensors 0, inputs 1, outputs 2, operators 3 (``Operator``: opcode_index 0,
  inputs 1 ([int], -1 for an optional input left out), outputs 2), name 4.
- ``Tensor``: shape 0 ([int]), type 1 (byte, ``TENSOR_TYPES``), buffer 2 (uint, an index into
  the model's buffers; 0 is the empty sentinel), name 3, quantization 4, is_variable 5,
  sparsity 6, shape_signature 7, has_rank 8, variant_tensors 9, external_buffer 10.
- ``Buffer``: data 0 ([ubyte], 16-aligned), offset 1 (ulong), size 2 (ulong). A model over
  2 GB (or converted with ``_experimental_use_buffer_offset``) keeps its data after the
  flatbuffer: ``offset`` counts from the start of the file, values 0 and 1 are placeholders,
  one region may serve several buffers.
- ``QuantizationParameters``: min 0, max 1, scale 2 ([float]), zero_point 3 ([long]),
  details_type 4, details 5, quantized_dimension 6. ``f = scale * (q - zero_point)``; one scale
  for the tensor, or one per index along ``quantized_dimension`` (per-axis, zero points as
  many or one). With ``details`` set (blockwise, multi-axis, custom) the plain fields are
  ignored: such tensors are read as stored and not dequantised.
- ``SparsityParameters``: traversal_order 0, block_map 1, dim_metadata 2 (``DimensionMetadata``:
  format 0 (DENSE 0, SPARSE_CSR 1), dense_size 1, array_segments 2+3, array_indices 4+5, each a
  union of ``Int32Vector``/``Uint16Vector``/``Uint8Vector`` (values 0)). The buffer holds the
  non-zeros only; reading densifies them as the runtime's ``FormatConverter`` does
  (``weightscope.formats.tflite_sparsity``).

A weight is a tensor whose buffer is not 0 and holds data (inline, or at an offset past 1).
Data is little-endian, row-major; INT4/UINT4 are packed two to a byte, the first element in
the low nibble (INT4 sign-extended). Names are the tensors' own; a tensor of a subgraph other
than the first is named ``<subgraph name>/<tensor name>`` (``subgraph<i>`` where unnamed), and
a name met twice gets ``#<tensor index>``. A tensor's part (weight, bias) comes from the
operators using it: input 1 of a convolution, depthwise convolution, fully connected layer or
batch matmul is its weight, input 2 its bias (TRANSPOSE_CONV and CONV_3D_TRANSPOSE: 1 and
3); a constant going through DEQUANTIZE or DENSIFY plays the part of what comes out. Its
layer is the weight's name up to its last ``/``, of the kind its operator says (``layer_kind``).
Other constants an operator takes are bookkeeping when not floating or 0-d (shapes, axes);
the rest, and constants no operator takes, are classified by their names.

For ``diff`` against the Keras model a TFLite file was converted from, each weight and bias is
named as its Keras layer in PyTorch's convention (``framework_name``): the layer is its
weight's name up to the last ``/`` with the model's scope dropped (``sequential/dense/MatMul``
-> ``dense.weight``); TensorFlow's converter traces a Keras 3 model under scopes suffixed
``_1`` (``small_1/dense_1/MatMul``), a suffix dropped from each scope when the model's scope has
one. Kernels are laid out as PyTorch lays them out: the converter keeps a dense kernel as
``[out, in]`` (Keras' ``[in, out]`` transposed), a convolution's as ``[out, h, w, in]``, a
depthwise one as ``[1, h, w, in * multiplier]`` (``_PYTORCH_AXES``). Constants the converter
merged (two layers' equal biases become one tensor) are matched to the first layer only.

``ws.open(path, dequantize=True)`` reads each quantised tensor as float32, ``scale * (q -
zero_point)`` rounded as the runtime's DEQUANTIZE kernels round it (``quant.kernels.affine``:
per channel one rounding; per tensor, eight at a time, a product and a sum each rounded).

The 2024 schema's ``external_buffer`` (data in files beside the model) is reported in the
metadata, not followed; so are constants of type STRING, RESOURCE, VARIANT and INT2
(``tensors_skipped``): no weights, and no numpy type for the last.

A reader must refuse: a file whose identifier is not ``TFL3``, any
offset the flatbuffer reader refuses, a tensor naming a buffer or a subgraph operator naming a
tensor that does not exist, a negative dimension, an unknown type, data of another size than
the shape needs (sparse: no whole number of values, or another count than its sparsity
places), an offset buffer that starts in the first 8 bytes or runs past the end of the file,
and quantisation parameters whose counts do not fit the tensor's shape.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from weightscope.checkpoint import Extent, FileCheckpoint, Index, TensorInfo
from weightscope.containers.allow_list import ScanReport, nothing_named
from weightscope.dtypes import BY_NAME, check_rank, check_size, little_endian_dtype, unpack_four_bit
from weightscope.errors import CorruptCheckpointError, UnsupportedFormatError
from weightscope.flatbuffers import FlatBuffer, Table
from weightscope.layers import TensorRole

if TYPE_CHECKING:
    from weightscope.layers import Layer
    from weightscope.quant.schemes import QuantizedWeight

IDENTIFIER = b"TFL3"

# TensorType codes -> weightscope's element names (dtypes.BY_NAME); INT2 (19) has no numpy type yet.
TENSOR_TYPES: dict[int, str] = {
    0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool", 7: "int16",
    8: "complex64", 9: "int8", 10: "float64", 11: "complex128", 12: "uint64", 13: "resource", 14: "variant",
    15: "uint32", 16: "uint16", 17: "int4", 18: "bfloat16", 20: "uint4", 21: "float8_e4m3fn", 22: "float8_e5m2",
}  # fmt: skip
_FOUR_BIT = {"int4", "uint4"}
_NOT_READ = {19: "int2", 5: "string", 13: "resource", 14: "variant"}  # no weights: listed in the metadata

# BuiltinOperator codes the reader names (the others are listed as BUILTIN_<code>), and which inputs of the
# weighted ones are their weight and bias.
OPERATORS: dict[int, str] = {
    0: "ADD", 1: "AVERAGE_POOL_2D", 2: "CONCATENATION", 3: "CONV_2D", 4: "DEPTHWISE_CONV_2D", 6: "DEQUANTIZE",
    7: "EMBEDDING_LOOKUP", 9: "FULLY_CONNECTED", 14: "LOGISTIC", 16: "LSTM", 17: "MAX_POOL_2D", 18: "MUL",
    19: "RELU", 21: "RELU6", 22: "RESHAPE", 25: "SOFTMAX", 28: "TANH", 32: "CUSTOM", 34: "PAD", 36: "GATHER",
    39: "TRANSPOSE", 40: "MEAN", 41: "SUB", 42: "DIV", 44: "UNIDIRECTIONAL_SEQUENCE_LSTM", 45: "STRIDED_SLICE",
    53: "CAST", 67: "TRANSPOSE_CONV", 77: "SHAPE", 83: "PACK", 114: "QUANTIZE", 117: "HARD_SWISH", 118: "IF",
    119: "WHILE", 124: "DENSIFY", 126: "BATCH_MATMUL", 132: "CONV_3D", 141: "CONV_3D_TRANSPOSE", 150: "GELU",
}  # fmt: skip
_WEIGHTED: dict[str, dict[int, str]] = {
    "CONV_2D": {1: "weight", 2: "bias"},
    "DEPTHWISE_CONV_2D": {1: "weight", 2: "bias"},
    "FULLY_CONNECTED": {1: "weight", 2: "bias"},
    "BATCH_MATMUL": {1: "weight"},
    "EMBEDDING_LOOKUP": {1: "weight"},
    "TRANSPOSE_CONV": {1: "weight", 3: "bias"},
    "CONV_3D": {1: "weight", 2: "bias"},
    "CONV_3D_TRANSPOSE": {1: "weight", 3: "bias"},
}
# The axes that take a weight from the operator's layout to PyTorch's: CONV_2D [out, h, w, in] -> [out, in, h, w];
# DEPTHWISE_CONV_2D [1, h, w, in * multiplier] -> a grouped convolution's [in * multiplier, 1, h, w]; TRANSPOSE_CONV
# [out, h, w, in] -> ConvTranspose2d's [in, out, h, w]; CONV_3D (and its transpose) keep TensorFlow's [d, h, w, in, out]
# ([.., out, in]). FULLY_CONNECTED's [out, in] is PyTorch's already: the converter transposed Keras' [in, out] kernel.
_PYTORCH_AXES: dict[tuple[str, int], tuple[int, ...]] = {
    ("CONV_2D", 4): (0, 3, 1, 2),
    ("DEPTHWISE_CONV_2D", 4): (3, 0, 1, 2),
    ("TRANSPOSE_CONV", 4): (3, 0, 1, 2),
    ("CONV_3D", 5): (4, 3, 0, 1, 2),
    ("CONV_3D_TRANSPOSE", 5): (4, 3, 0, 1, 2),
}


def _window(sizes: tuple[int, ...]) -> str:
    return "×".join(map(str, sizes))


# (operator, rank of its weight) -> the layer's kind, and its sizes from the weight's shape in the operator's layout.
_KINDS: dict[tuple[str, int], tuple[str, Callable[[tuple[int, ...]], str]]] = {
    ("FULLY_CONNECTED", 2): ("Dense", lambda shape: f"{shape[1]} → {shape[0]}"),
    ("CONV_2D", 4): ("Conv2D", lambda shape: f"{_window(shape[1:3])} {shape[3]} → {shape[0]}"),
    ("DEPTHWISE_CONV_2D", 4): ("DepthwiseConv2D", lambda shape: f"{_window(shape[1:3])} → {shape[3]}"),
    ("TRANSPOSE_CONV", 4): ("Conv2DTranspose", lambda shape: f"{_window(shape[1:3])} {shape[3]} → {shape[0]}"),
    ("CONV_3D", 5): ("Conv3D", lambda shape: f"{_window(shape[:3])} {shape[3]} → {shape[4]}"),
    ("CONV_3D_TRANSPOSE", 5): ("Conv3DTranspose", lambda shape: f"{_window(shape[:3])} {shape[4]} → {shape[3]}"),
    ("EMBEDDING_LOOKUP", 2): ("Embedding", lambda shape: f"{shape[0]} × {shape[1]}"),
}
_TRACED = re.compile(r"_\d+$")
_PASSING = {"DEQUANTIZE", "DENSIFY"}  # a constant through these plays the part of their output
_PLACEHOLDER_OFFSET = 1  # offsets 0 and 1 mean "not placed yet" (flatbuffer_export.cc)


@dataclass(frozen=True)
class Quantization:
    """A tensor's affine quantisation: ``scale * (q - zero_point)``, per tensor or along ``axis``."""

    scale: np.ndarray  # float32
    zero_point: np.ndarray  # int64, as many as scales (or one)
    axis: int


@dataclass(frozen=True)
class Stored:
    """Where one tensor is: its subgraph and index, its bytes' extent, and how they decode."""

    subgraph: int
    index: int
    offset: int
    nbytes: int
    sparsity: Table | None
    quantization: Quantization | None
    operator: str  # the operator using it as a weight or bias ("" where none does)


class TFLiteCheckpoint(FileCheckpoint):
    """A TFLite model's constant tensors, in subgraph and tensor order, as read-only views of the file."""

    format = "tflite"
    _stored: dict[str, Stored]

    def _load(self) -> Index:
        self._stored = {}
        size = self._source.size
        buffer = FlatBuffer(self._source.read(0, size, "the model"), self.path, IDENTIFIER)
        model = buffer.root()
        codes = [_operator_name(code) for code in model.tables(1, "operator_codes")]
        buffers = model.tables(4, "buffers")
        index = Index(metadata=self._describe_model(model, buffers, codes))
        external = 0
        for number, subgraph in enumerate(model.tables(2, "subgraphs")):
            external += self._add_subgraph(index, number, subgraph, buffers, codes)
        if external:
            index.metadata["external_buffers_skipped"] = (
                f"{external} tensors keep their data in files outside the model (external_buffer): not read"
            )
        return index

    def _describe_model(self, model: Table, buffers: list[Table], codes: list[str]) -> dict[str, str]:
        metadata = {"schema_version": str(model.integer(0, "uint32"))}
        description = model.string(3, "the model's description")
        if description:
            metadata["description"] = description
        for entry in model.tables(6, "metadata"):
            name = entry.string(0, "a metadata entry's name") or "?"
            number = entry.integer(1, "uint32")
            metadata[f"metadata.{name}"] = self._metadata_text(buffers, number, name)
        keys = [signature.string(2, "a signature's key") or "" for signature in model.tables(7, "signature_defs")]
        if keys:
            metadata["signatures"] = ", ".join(keys)
        if codes:
            metadata["operator_codes"] = ", ".join(codes)
        return metadata

    def _metadata_text(self, buffers: list[Table], number: int, name: str) -> str:
        """A metadata buffer as text where it is printable UTF-8 (``min_runtime_version``), else its size."""
        if number >= len(buffers):
            raise CorruptCheckpointError(f"{self.path}: metadata '{name}' names buffer {number} of {len(buffers)}")
        offset, nbytes = self._buffer_extent(buffers[number], f"metadata '{name}'")
        data = bytes(self._source.read(offset, min(nbytes, 4096), f"metadata '{name}'")).rstrip(b"\0")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = "\n"  # not printable: shown by its size
        return text if text.isprintable() and nbytes <= 4096 else f"<{nbytes} bytes>"

    def _buffer_extent(self, buffer: Table, what: str) -> tuple[int, int]:
        """(offset in the file, bytes) of a buffer's data, inline or after the flatbuffer; (0, 0) where empty."""
        inline = buffer.extent(0, f"{what}'s buffer")
        if inline is not None and inline[1]:
            return inline
        offset, nbytes = buffer.integer(1, "uint64"), buffer.integer(2, "uint64")
        if offset <= _PLACEHOLDER_OFFSET:
            return 0, 0
        if offset < 8 or offset + nbytes > self._source.size:
            raise CorruptCheckpointError(
                f"{self.path}: {what}'s data at {offset} ({nbytes} bytes) lies outside the file "
                f"({self._source.size} bytes)"
            )
        return offset, nbytes

    def _add_subgraph(self, index: Index, number: int, subgraph: Table, buffers: list[Table], codes: list[str]) -> int:
        """List the subgraph's constant tensors; the number of tensors whose data is in external files."""
        where = f"subgraph {number}"
        tensors = subgraph.tables(0, f"{where}'s tensors")
        prefix = "" if number == 0 else (subgraph.string(4, f"{where}'s name") or f"subgraph{number}") + "/"
        names = [tensor.string(3, f"{where} tensor {i}'s name") or f"tensor{i}" for i, tensor in enumerate(tensors)]
        parts, used = _parts(self.path, subgraph, len(tensors), codes, where)
        external = 0
        for position, tensor in enumerate(tensors):
            external += tensor.integer(10, "uint32") != 0
            number_of_buffer = tensor.integer(2, "uint32")
            if number_of_buffer == 0:
                continue
            if tensor.integer(1, "int8") in _NOT_READ:
                kind = _NOT_READ[tensor.integer(1, "int8")]
                skipped = index.metadata.get("tensors_skipped", "")
                index.metadata["tensors_skipped"] = f"{skipped}, {prefix}{names[position]} ({kind})".lstrip(", ")
                continue
            if number_of_buffer >= len(buffers):
                raise CorruptCheckpointError(
                    f"{self.path}: {where} tensor {position} names buffer {number_of_buffer}; the model has "
                    f"{len(buffers)}"
                )
            name = prefix + names[position]
            if name in index.infos:
                name = f"{name}#{position}"
            offset, nbytes = self._buffer_extent(buffers[number_of_buffer], f"tensor '{name}'")
            if not nbytes:
                continue
            operator, part, weight = parts.get(position, ("", "", -1))
            info, stored = self._describe(tensor, name, (number, position), (offset, nbytes), operator)
            index.infos[name] = info
            self._stored[name] = stored
            if part:
                layer = _layer_of(prefix + names[weight])
                index.roles[name] = TensorRole("parameter", layer=layer, role=part)
            elif position in used and (not info.type_name.startswith(("float", "bfloat")) or not info.shape):
                index.roles[name] = TensorRole("bookkeeping")  # shapes, axes, scalars the graph's operators take
        return external

    def _describe(
        self, tensor: Table, name: str, place: tuple[int, int], extent: tuple[int, int], operator: str
    ) -> tuple[TensorInfo, Stored]:
        """A tensor's info and where it is stored: ``place`` (subgraph, index), ``extent`` (offset, bytes)."""
        offset, nbytes = extent
        where = f"{self.path}: tensor '{name}'"
        shape_array = tensor.scalars(0, "int32", f"tensor '{name}''s shape")
        shape = () if shape_array is None else tuple(int(size) for size in shape_array)
        check_rank(shape, where)
        if any(size < 0 for size in shape):
            raise CorruptCheckpointError(f"{where} has shape {list(shape)}; expected non-negative sizes")
        code = tensor.integer(1, "int8")
        type_name = TENSOR_TYPES.get(code)
        element = BY_NAME.get(type_name or "")
        if element is None or element.dtype is None:
            raise UnsupportedFormatError(f"{where} has TFLite type {type_name or code}, which weightscope cannot read")
        dtype = element.dtype
        count = math.prod(shape)
        check_size(shape, dtype.itemsize, where)
        sparsity = tensor.table(6, f"tensor '{name}''s sparsity")
        expected = (count + 1) // 2 if type_name in _FOUR_BIT else count * dtype.itemsize
        if sparsity is None and nbytes != expected:
            raise CorruptCheckpointError(
                f"{where}: its buffer holds {nbytes} bytes; shape {list(shape)} of {type_name} needs {expected}"
            )
        if sparsity is not None and type_name in _FOUR_BIT:
            raise UnsupportedFormatError(f"{where}: a sparse {type_name} tensor (sparse 4-bit tensors are not read)")
        if sparsity is not None and nbytes % dtype.itemsize:
            raise CorruptCheckpointError(f"{where}: sparse, its {nbytes} bytes are no whole number of {type_name}")
        quantization = _quantization(tensor.table(4, f"tensor '{name}''s quantization"), shape, where)
        info = TensorInfo(name, dtype, shape, nbytes, type_name, str(self.path), offset, name)  # type: ignore[arg-type]
        return info, Stored(*place, offset, nbytes, sparsity, quantization, operator)

    # -- reading -------------------------------------------------------------------------
    def _extent(self, info: TensorInfo) -> Extent | None:
        """A dense tensor's bytes (4-bit types two to a byte); None for a sparse one, which is densified."""
        stored = self._stored[info.name]
        if stored.sparsity is not None:
            return None
        if info.type_name in _FOUR_BIT:
            return Extent(info.file, info.offset, info.nbytes, np.dtype(np.uint8), compression=info.type_name)
        return Extent(info.file, info.offset, info.nbytes, little_endian_dtype(info.dtype))

    def _read(self, info: TensorInfo) -> np.ndarray:
        stored = self._stored[info.name]
        if stored.sparsity is None and info.type_name not in _FOUR_BIT:
            return super()._read(info)
        data = self._source.read(info.offset, info.nbytes, f"tensor '{info.name}'")
        if stored.sparsity is None:
            return unpack_four_bit(np.frombuffer(data, np.uint8), info.type_name, info.shape)
        from weightscope.formats.tflite_sparsity import densify

        values = np.frombuffer(data, little_endian_dtype(info.dtype))
        return densify(values, info.shape, stored.sparsity, f"{self.path}: tensor '{info.name}'")

    # -- what the model says of its tensors ----------------------------------------------
    def tensor_index(self, name: str) -> tuple[int, int]:
        """(subgraph, tensor index) of tensor ``name``: what the runtime's interpreter numbers it by."""
        stored = self._stored[self.info(name).name]
        return stored.subgraph, stored.index

    def quantization(self, name: str) -> Quantization | None:
        """Tensor ``name``'s affine quantisation (scales, zero points, axis), or None where it has none."""
        return self._stored[self.info(name).name].quantization

    def operator(self, name: str) -> str:
        """The operator using tensor ``name`` as its weight or bias (``CONV_2D``, ``FULLY_CONNECTED``), or ""."""
        return self._stored[self.info(name).name].operator

    def framework_name(self, name: str) -> tuple[str, tuple[int, ...] | None] | None:
        """A weight or bias as the Keras model it was converted from names it, in PyTorch's convention, with the
        axes from the operator's layout to PyTorch's (see the module's docstring); None for other tensors."""
        info = self.info(name)
        role, operator = self.role(info.name), self._stored[info.name].operator
        if role.kind != "parameter" or role.role not in ("weight", "bias") or not operator or role.layer is None:
            return None
        order = _PYTORCH_AXES.get((operator, len(info.shape))) if role.role == "weight" else None
        return f"{_framework_layer(role.layer)}.{role.role}", order

    def layer_kind(self, layer: Layer) -> tuple[str, str] | None:
        """The kind of the layer whose weight an operator uses (``Conv2D 3×3 3 → 8 (CONV_2D)``), from its layout."""
        weight = layer.parameters.get("weight")
        if weight is None or weight.name not in self._stored:
            return None
        operator, shape = self._stored[weight.name].operator, weight.shape
        found = _KINDS.get((operator, len(shape)))
        if found is None:
            return None
        kind, describe = found
        return kind, f"{kind} {describe(shape)} ({operator})"

    def recorded_quantization(self) -> dict[str, QuantizedWeight]:
        """The tensors stored quantised, as ``weightscope.quant`` dequantises them (``tflite_affine``)."""
        from weightscope.quant.schemes import QuantizedWeight

        found = {}
        for name, stored in self._stored.items():
            info = self._infos[name]
            if stored.quantization is None or (info.dtype.kind not in "iu" and info.type_name not in _FOUR_BIT):
                continue
            settings = {"scale": stored.quantization.scale, "zero_point": stored.quantization.zero_point,
                        "axis": stored.quantization.axis}  # fmt: skip
            found[name] = QuantizedWeight(
                name, "tflite_affine", (name,), info.shape, np.dtype(np.float32), info.nbytes, settings
            )
        return found


def scan(path: str | os.PathLike[str]) -> ScanReport:
    """``weightscope scan``: a TFLite model names operators the runtime's own kernels implement (a custom one's name
    is only a name) and holds no code to run; nothing is listed, the verdict is what opening it raises."""
    return nothing_named(TFLiteCheckpoint, path)


def _framework_layer(layer: str) -> str:
    """``small_1/dense_1`` -> ``dense``: the model's scope dropped and, where the converter traced a Keras 3 model
    (which suffixes every scope it opens again: ``small`` -> ``small_1``), each scope's suffix too."""
    scope, _, rest = layer.partition("/")
    if not rest:
        return layer
    parts = rest.split("/")
    if _TRACED.search(scope):
        parts = [_TRACED.sub("", part) for part in parts]
    return ".".join(parts)


def _operator_name(code: Table) -> str:
    custom = code.string(1, "a custom operator's name")
    if custom:
        return custom
    number = max(code.integer(0, "int8"), code.integer(3, "int32"))
    return OPERATORS.get(number, f"BUILTIN_{number}")


def _parts(
    path: object, subgraph: Table, count: int, codes: list[str], where: str
) -> tuple[dict[int, tuple[str, str, int]], set[int]]:
    """Tensor index -> (operator, part, its weight's index) for the tensors the subgraph's operators use as weights
    and biases (a bias's layer is named after its weight, whose name says it); and the tensors any operator takes."""
    uses: list[tuple[str, np.ndarray, np.ndarray]] = []
    for number, operator in enumerate(subgraph.tables(3, f"{where}'s operators")):
        code = operator.integer(0, "uint32")
        if code >= len(codes):
            raise CorruptCheckpointError(f"{path}: {where} operator {number} has opcode {code} of {len(codes)}")
        inputs = _indices(operator, 1, count, f"{where} operator {number}'s inputs", path)
        outputs = _indices(operator, 2, count, f"{where} operator {number}'s outputs", path)
        uses.append((codes[code], inputs, outputs))
    consumer: dict[int, tuple[str, int, np.ndarray]] = {}
    for name, inputs, _ in uses:
        for position, tensor in enumerate(inputs.tolist()):
            if tensor >= 0 and name in _WEIGHTED and position in _WEIGHTED[name]:
                consumer.setdefault(tensor, (name, position, inputs))
    for name, inputs, outputs in uses:
        if name in _PASSING and inputs.size and outputs.size and int(outputs[0]) in consumer:
            consumer.setdefault(int(inputs[0]), consumer[int(outputs[0])])
    parts: dict[int, tuple[str, str, int]] = {}
    for tensor, (name, position, inputs) in consumer.items():
        weight = int(inputs[1]) if inputs.size > 1 and inputs[1] >= 0 else tensor
        parts[tensor] = (name, _WEIGHTED[name][position], weight)
    return parts, {int(tensor) for _, inputs, _ in uses for tensor in inputs.tolist()}


def _indices(operator: Table, slot: int, count: int, what: str, path: object) -> np.ndarray:
    found = operator.scalars(slot, "int32", what)
    if found is None:
        return np.zeros(0, np.int32)
    if found.size and (int(found.min()) < -1 or int(found.max()) >= count):
        raise CorruptCheckpointError(f"{path}: {what} name tensors outside 0..{count - 1}: {found.tolist()}")
    return found


def _layer_of(name: str) -> str:
    return name.rpartition("/")[0] or name


def _quantization(table: Table | None, shape: tuple[int, ...], where: str) -> Quantization | None:
    """A tensor's plain affine quantisation, checked against its shape; None where it has none (or ``details``)."""
    if table is None or table.union(4, "quantization details")[0]:
        return None
    scale = table.scalars(2, "float32", "quantization scales")
    if scale is None or not scale.size:
        return None
    zero_point = table.scalars(3, "int64", "quantization zero points")
    zero_point = np.zeros(1, np.int64) if zero_point is None or not zero_point.size else zero_point
    axis = table.integer(6, "int32")
    if scale.size > 1 and (not 0 <= axis < len(shape) or shape[axis] != scale.size):
        raise CorruptCheckpointError(f"{where}: {scale.size} scales along quantized_dimension {axis} of {list(shape)}")
    if zero_point.size not in (1, scale.size):
        raise CorruptCheckpointError(f"{where}: {zero_point.size} zero points for {scale.size} scales")
    return Quantization(scale, zero_point, axis)
