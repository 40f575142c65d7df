"""OpenVINO IR (``model.xml`` + ``model.bin``): every ``Const`` layer's data, read without the openvino package.

Bytes (seen with openvino 2026.4.1 and nncf 3.4.0; ``ov.save_model``): ``model.xml`` is UTF-8 XML,
``<net name=… version="11">`` holding ``<layers>`` and ``<edges>``; ``model.bin``, the file of the same stem beside it,
is raw bytes with no header. Either file opens the pair.

- ``<layer id name type version>``: ``type="Const"`` layers hold the data, in ``<data element_type shape offset
  size/>``: ``offset`` and ``size`` are bytes of the .bin (several Consts may share bytes: ``save_model`` stores
  equal data once); ``shape`` is a comma list (spaces or not; empty for a scalar). Element types: f64 f32 f16 bf16
  f8e4m3 f8e5m2 f8e8m0, i64 … u8, boolean, and the packed ones: u4, i4 (two's complement), nf4 (the 16 NF4 values,
  read as float32 as the runtime's Convert gives them) and f4e2m1 two to a byte, the first in the low nibble; u2
  four to a byte, the first in the low bits; u1 eight to a byte, the first in the high bit (u3, u6 and others:
  refused).
  Other layers' ``<input>``/``<output>`` ``<port id>`` list their ports, with ``<dim>`` sizes;
  ``<rt_info><attribute name="decompression"/>`` marks a Convert the runtime treats as decompression.
- ``<edge from-layer from-port to-layer to-port/>``: an output port feeding an input port (its position is the
  port's place in the layer's ``<input>``).

The graph names the weights: a Const is listed under its layer's ``name``, except that a float Const whose one use
is a decompression ``Convert`` to f32 (``save_model``'s default ``compress_to_fp16=True``: ``fc.weight_compressed``
f16 feeding ``Convert`` ``fc.weight``) is listed under the Convert's name, in its stored type (the Const's name is its
key). A compressed weight (nncf's ``compress_weights``: INT8, INT4, INT2, NF4, FP8, FP4, MXFP4/8, NVFP4, CB4) is a
decompression subgraph (``weightscope.formats._openvino_graph``): Consts feeding ``Convert``, ``Subtract``,
``Multiply``, ``Reshape`` and ``Gather`` layers up to one whose output a layer of another kind takes, the first Const
up the data inputs holding codes (u8 i8 u4 i4 u2 nf4 f4e2m1 f8): ``codes → Convert → [Subtract zero point] → Multiply
scale (itself a product of Consts in NVFP4) → [Reshape] → [Convert]``, or a codebook ``Gather``ed by packed indices
(CB4). Without ``dequantize`` its Consts are listed as stored; ``ws.open(path, dequantize=True)`` (``--dequantize``)
reads it as one tensor under the codes' name (``fc.weight``), computed as the runtime computes it (its constant
folding and the CPU plugin agree): each Convert casts (NF4 values rounded to f16, an NVFP4 scale product too), while
Subtract and Multiply compute in float32, not rounded to the f16 the graph names. Roles come from use: a
``MatMul``'s or a ``Convolution``'s second input is its layer's weight (its layout, as for every format, is what its
name says: ``fc.kernel`` [in, out], ``fc.weight`` [out, in]); the layer is the name's parent (``fc``), else the
using layer's name. INT3's u3 codes (and any other type not above) are refused.

A reader must refuse: XML that does not parse, any DOCTYPE (so no entity is ever declared or expanded, and no
external one fetched: ``RefusedError``), a root other than ``<net>``, an IR version other than 10 or 11, a Const
with no or a malformed ``shape``, ``offset`` or ``size``, an element type it does not know, a ``size`` other than the
shape needs (but 1 for no elements: ``save_model`` writes one byte), bytes past the end of the .bin
(``TruncatedFileError``), a missing .bin, shapes larger than numpy holds,
elements nested over 256 deep, edges naming layers or ports that do not exist, two edges into one input, and edges
that make a cycle; and, dequantising, a subgraph whose shapes do not fit (a scale that does not broadcast, a result of
another shape than its last layer says) or that would make more values than its weight, or its weight more than
eight a byte of its Consts. Only the top-level graph is read: the bodies of ``Loop``, ``TensorIterator`` and ``If``
layers (their own ``<layers>``) are not.
"""

from __future__ import annotations

import math

import numpy as np

from weightscope.checkpoint import Extent, FileCheckpoint, Index, TensorInfo
from weightscope.dtypes import BY_NAME, check_rank, check_size, little_endian_dtype, numeric_kind, unpack_bits
from weightscope.errors import (
    CheckpointNotFoundError,
    CorruptCheckpointError,
    TruncatedFileError,
    UnsupportedFormatError,
)
from weightscope.formats._openvino_graph import Folded, Graph, Layer, parse_ir
from weightscope.layers import TensorRole, classify
from weightscope.quant.schemes import QuantizedWeight
from weightscope.sources import AnyPath, AnySource, open_source

# An IR element type -> (the type's name in weightscope.dtypes, else in _OWN_DTYPES; its bits).
ELEMENT_TYPES: dict[str, tuple[str, int]] = {
    "f64": ("float64", 64),
    "f32": ("float32", 32),
    "f16": ("float16", 16),
    "bf16": ("bfloat16", 16),
    "f8e4m3": ("float8_e4m3fn", 8),
    "f8e5m2": ("float8_e5m2", 8),
    "f8e8m0": ("float8_e8m0fnu", 8),
    "i64": ("int64", 64),
    "i32": ("int32", 32),
    "i16": ("int16", 16),
    "i8": ("int8", 8),
    "u64": ("uint64", 64),
    "u32": ("uint32", 32),
    "u16": ("uint16", 16),
    "u8": ("uint8", 8),
    "boolean": ("bool", 8),
    "u4": ("uint4", 4),
    "i4": ("int4", 4),
    "u2": ("uint2", 2),
    "f4e2m1": ("float4_e2m1fn", 4),
    "nf4": ("nf4", 4),
    "u1": ("uint1", 1),
}
# The packed types' dtypes where weightscope.dtypes has none: NF4's values, two bits or one a byte.
_OWN_DTYPES: dict[str, np.dtype] = {
    "nf4": np.dtype(np.float32),
    "uint2": np.dtype(np.uint8),
    "uint1": np.dtype(np.uint8),
}
# bitsandbytes' NF4 table, which the runtime's Convert from nf4 gives (checked against openvino 2026.4.1).
NF4_VALUES = np.array(
    [
        -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
        -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
        0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
    ],
    np.float32,
)  # fmt: skip
# What a compressed weight's codes are stored as.
CODE_TYPES = frozenset({"u8", "i8", "u4", "i4", "u2", "nf4", "f4e2m1", "f8e4m3", "f8e5m2", "f8e8m0"})
WEIGHT_USERS = {"MatMul", "Convolution", "GroupConvolution", "ConvolutionBackpropData"}
MAX_XML_SIZE = 1 << 30


class OpenVinoCheckpoint(FileCheckpoint):
    """The Consts of an OpenVINO IR, by name, in the order the XML lists them; read as views of the .bin."""

    format = "openvino"

    _bin: AnySource | None
    _extra: AnySource | None  # the file of the pair that is not ``path``
    _quantized: dict[str, QuantizedWeight]

    def _load(self) -> Index:
        self._bin = self._extra = None
        self._quantized = {}
        xml_path, bin_path = pair(self.path)
        if xml_path == self.path:
            xml_source = self._source
            if bin_path.exists():
                self._bin = self._extra = open_source(bin_path)
        else:
            if not xml_path.exists():
                raise CheckpointNotFoundError(f"{self.path}: no {xml_path.name} beside it: an IR's graph is missing")
            self._bin, xml_source = self._source, open_source(xml_path)
            self._extra = xml_source
        if xml_source.size > MAX_XML_SIZE:
            raise UnsupportedFormatError(f"{xml_path}: an XML of {xml_source.size} bytes (at most {MAX_XML_SIZE})")
        root, layers, edges = parse_ir(bytes(xml_source.read(0, xml_source.size, "the IR's XML")), xml_path)
        graph = Graph(layers, edges, str(xml_path))
        constants = [layer for layer in layers.values() if layer.type == "Const"]
        if constants and self._bin is None:
            raise CheckpointNotFoundError(f"{bin_path}: missing: the weights of {xml_path.name}")
        self._bin_file = str(bin_path)
        facts = {"ir_version": root["version"], "model_name": root.get("name", "")}
        index = Index(metadata={key: value for key, value in facts.items() if value})
        keys: dict[str, str] = {}  # layer id -> the tensor's name
        for layer in constants:
            info = self._describe(layer, graph, index)
            keys[layer.id] = info.name
        self._add_roles(graph, keys, index)
        return index

    def _describe(self, layer: Layer, graph: Graph, index: Index) -> TensorInfo:
        where = f"{graph.where}: Const '{layer.name}' (layer {layer.id})"
        element_type = layer.data.get("element_type")
        if element_type is None:
            raise CorruptCheckpointError(f"{where} has no element_type")
        if element_type not in ELEMENT_TYPES:
            raise UnsupportedFormatError(f"{where} has element type {element_type!r}, which weightscope does not know")
        type_name, bits = ELEMENT_TYPES[element_type]
        shape = parse_shape(layer.data.get("shape"), where)
        offset, size = (_count(layer.data.get(key), key, where) for key in ("offset", "size"))
        dtype = dtype_of(element_type)
        assert dtype is not None
        count = math.prod(shape)
        needed = -(-count * bits // 8)
        if size != needed and not (count == 0 and size == 1):  # save_model writes one byte for a Const of none
            raise CorruptCheckpointError(
                f"{where}: size {size} bytes; shape {list(shape)} of {element_type} needs {needed}"
            )
        check_size(shape, dtype.itemsize, where)
        assert self._bin is not None
        if offset + size > self._bin.size:
            raise TruncatedFileError(
                f"{where}: bytes {offset}..{offset + size} lie past the end of the .bin ({self._bin.size} bytes)"
            )
        decompressed = graph.decompressed_name(layer)
        name = decompressed or layer.name or f"Const_{layer.id}"
        while name in index.infos:
            name = f"{name}#{layer.id}"  # friendly names need not be unique: the layer id tells them apart
        if decompressed and layer.name and layer.name not in index.infos:
            index.aliases.setdefault(layer.name, name)
        info = TensorInfo(name, dtype, shape, needed, type_name, self._bin_file, offset, layer.name)
        index.infos[name] = info
        return info

    def _add_roles(self, graph: Graph, keys: dict[str, str], index: Index) -> None:
        """Roles from use; and each decompression subgraph starting from codes, recorded for ``dequantize``."""
        for folded in graph.folded(dtype_of):
            codes = graph.layers[folded.parts[0]]
            if codes.data.get("element_type") in CODE_TYPES and len(folded.parts) > 1 and folded.dtype.kind == "f":
                self._compressed(folded, [keys[part] for part in folded.parts], graph, index)
        for layer_id, name in keys.items():
            if name not in index.roles:
                index.roles[name] = _plain_role(index.infos[name], graph, graph.through_conversions(layer_id), name)

    def _compressed(self, folded: Folded, parts: list[str], graph: Graph, index: Index) -> None:
        name = parts[0]
        nbytes = sum(index.infos[part].nbytes for part in set(parts))
        settings = {"program": folded.program}
        weight = QuantizedWeight(name, "ov_compressed", tuple(parts), folded.shape, folded.dtype, nbytes, settings)
        self._quantized[name] = weight
        role = _use_role(graph, graph.layers[folded.end], name, "weight_packed")
        index.roles[name] = role
        for part in parts[1:]:
            kind = next((word for word in ("zero_point", "scale") if part.endswith(word)), "quantization")
            index.roles[part] = TensorRole("parameter", role.layer, f"weight_{kind}")

    def recorded_quantization(self) -> dict[str, QuantizedWeight]:
        return dict(self._quantized)

    # -- reading -------------------------------------------------------------------------
    def _extent(self, info: TensorInfo) -> Extent:
        if info.type_name in _PACKED:
            return Extent(info.file, info.offset, info.nbytes, np.dtype(np.uint8), None, info.type_name)
        return Extent(info.file, info.offset, info.nbytes, little_endian_dtype(info.dtype))

    def _read(self, info: TensorInfo) -> np.ndarray:
        if info.type_name not in _PACKED:
            return super()._read(info)
        assert self._bin is not None
        packed = np.frombuffer(self._bin.read(info.offset, info.nbytes, f"tensor '{info.name}'"), np.uint8)
        return unpack(packed, info.type_name, info.size).reshape(info.shape)

    def _source_of(self, file: str) -> AnySource | None:
        return self._bin if file == self._bin_file else None

    def _close(self) -> None:
        super()._close()
        if self._extra is not None:
            self._extra.close()


_PACKED = {"uint4", "int4", "float4_e2m1fn", "nf4", "uint2", "uint1"}


def dtype_of(element_type: str) -> np.dtype | None:
    """The numpy type an IR element type is read as; None for one weightscope does not know."""
    if element_type not in ELEMENT_TYPES:
        return None
    type_name = ELEMENT_TYPES[element_type][0]
    return _OWN_DTYPES[type_name] if type_name in _OWN_DTYPES else BY_NAME[type_name].dtype


def unpack(packed: np.ndarray, type_name: str, count: int) -> np.ndarray:
    """``count`` packed elements as the runtime reads them: 4- and 2-bit ones from the low bits of each byte up,
    1-bit ones from the high bit down."""
    if type_name == "uint1":
        return unpack_bits(packed, 1, count, msb_first=True)
    codes = unpack_bits(packed, 2 if type_name == "uint2" else 4, count)
    if type_name == "nf4":
        return NF4_VALUES[codes]
    if type_name == "uint2":
        return codes
    dtype = BY_NAME[type_name].dtype
    assert dtype is not None
    return ((codes ^ 8).astype(np.int8) - 8).astype(dtype) if type_name == "int4" else codes.view(dtype)


def pair(path: AnyPath) -> tuple[AnyPath, AnyPath]:
    """The .xml and the .bin of the IR ``path`` (either of them) names."""
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    if path.suffix.lower() == ".bin":
        return path.with_name(stem + ".xml"), path
    return path, path.with_name(stem + ".bin")


def parse_shape(text: str | None, where: str) -> tuple[int, ...]:
    if text is None:
        raise CorruptCheckpointError(f"{where} has no shape")
    if not text.strip():
        return ()
    shape = tuple(_count(part, "shape", where) for part in text.split(","))
    check_rank(shape, where)
    return shape


def _count(text: str | None, what: str, where: str) -> int:
    """A non-negative decimal integer attribute."""
    if text is None:
        raise CorruptCheckpointError(f"{where} has no {what}")
    stripped = text.strip()
    if not stripped.isascii() or not stripped.isdigit() or len(stripped) > 20:
        raise CorruptCheckpointError(f"{where}: {what} {text[:40]!r} is not a non-negative integer")
    return int(stripped)


def _use_role(graph: Graph, end: Layer, name: str, role: str) -> TensorRole:
    """A weight's role, where ``end`` is the layer whose output is the weight as its user takes it."""
    layer = classify(name).layer if classify(name).layer != name else None
    for user, position in graph.users_of(end.id):
        if user.type in WEIGHT_USERS and position == 1:
            return TensorRole("parameter", layer=layer or user.name or name, role=role)
    return TensorRole("parameter", layer=layer or name, role=role)


def _plain_role(info: TensorInfo, graph: Graph, end: str, name: str) -> TensorRole:
    """A Const read as stored: a float of rank 1 or more is a parameter (the weight of its layer when a MatMul's or
    convolution's second input; its name says its layout, as everywhere), anything else a graph constant."""
    if numeric_kind(info.dtype) != "f" or not info.shape:
        return TensorRole("bookkeeping")
    if any(user.type in WEIGHT_USERS and position == 1 for user, position in graph.users_of(end)):
        return _use_role(graph, graph.layers[end], name, "weight")
    return classify(name)
