"""OpenVINO IR (``model.xml`` + ``model.bin``): every ``Const`` layer's data, read without the openvino package.

Bytes (seen with openvino 2026.4.1 and nncf 3.4.0; ``ov.save_model``): ``model.xml`` is UTF-8 XML,
``<net name=… version="11">`` holding ``<layers>`` and ``<edges>``; ``model.bin``, the file of the same stem beside it,
is raw bytes with no header. Either file opens the pair.

- ``<layer id name type version>``: ``type="Const"`` layers hold the data, in ``<data element_type shape offset
  size/>``: ``offset`` and ``size`` are bytes of the .bin (several Consts may share bytes: ``save_model`` stores
  equal data once); ``shape`` is a comma list (spaces or not; empty for a scalar). Element types: f64 f32 f16 bf16
  f8e4m3 f8e5m2, i64 … u8, boolean, and the packed ones: u4, i4 (two's complement), nf4 (the 16 NF4 values, read as
  float32 as the runtime's Convert gives them) and f4e2m1 two to a byte, the first in the low nibble; u2 four to a
  byte, the first in the low bits; u1 eight to a byte, the first in the high bit (u3, u6 and the others: refused).
  Other layers' ``<input>``/``<output>`` ``<port id>`` list their ports, with ``<dim>`` sizes;
  ``<rt_info><attribute name="decompression"/>`` marks a Convert the runtime treats as decompression.
- ``<edge from-layer from-port to-layer to-port/>``: an output port feeding an input port (its position is the
  port's place in the layer's ``<input>``).

The graph names the weights: a Const is listed under its layer's ``name``, except that a float Const whose one use
is a decompression ``Convert`` to f32 (``save_model``'s default ``compress_to_fp16=True``: ``fc.weight_compressed``
f16 feeding ``Convert`` ``fc.weight``) is listed under the Convert's name, in its stored type (the Const's name is its
key). A compressed weight (nncf's ``compress_weights``) is the decompression subgraph a Const of codes starts:
``Const`` codes (u8 i8 u4 i4 u2 nf4 f4e2m1 f8) → ``Convert`` → [``Subtract`` a zero point: a Const, or a Convert of
one] → ``Multiply`` a scale (the same) → [``Reshape`` by a Const] → [``Convert``]: without ``dequantize`` its parts are
listed as stored; ``ws.open(path, dequantize=True)`` (``--dequantize``) reads it as one tensor under the codes'
name (``fc.weight``), computed as the runtime computes it (constant folding and the CPU plugin agree): the codes
through the first Convert's type (NF4 values rounded to f16), the zero point subtracted and the scale multiplied in
float32, not rounded to the f16 the graph names, then reshaped and cast to the last Convert's type. Roles come from
use: a ``MatMul``'s or a ``Convolution``'s second input is its layer's weight (its layout, as for every format, is
what its name says: ``fc.kernel`` [in, out], ``fc.weight`` [out, in]); the layer is the name's parent (``fc``), else
the using layer's name. nncf's other modes are listed as stored, not dequantised: NVFP4 (its scale is itself a
product of two Consts), CB4 (a codebook ``Gather``), MXFP4 (e8m0 scales) and INT3 (u3 codes, refused).

A reader must refuse: XML that does not parse, any DOCTYPE (so no entity is ever declared or expanded, and no
external one fetched: ``RefusedError``), a root other than ``<net>``, an IR version other than 10 or 11, a Const
with no or a malformed ``shape``, ``offset`` or ``size``, an element type it does not know, a ``size`` other than the
shape needs, bytes past the end of the .bin (``TruncatedFileError``), a missing .bin, shapes larger than numpy holds,
edges naming layers or ports that do not exist, two edges into one input, and edges that make a cycle.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from xml.parsers import expat

import numpy as np

from weightscope.checkpoint import Extent, FileCheckpoint, Index, TensorInfo
from weightscope.dtypes import BY_NAME, check_rank, check_size, little_endian_dtype, numeric_kind
from weightscope.errors import (
    CheckpointNotFoundError,
    CorruptCheckpointError,
    RefusedError,
    TruncatedFileError,
    UnsupportedFormatError,
)
from weightscope.layers import TensorRole, classify
from weightscope.limits import Budget, Limits
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
CODE_TYPES = frozenset({"u8", "i8", "u4", "i4", "u2", "nf4", "f4e2m1", "f8e4m3", "f8e5m2"})
WEIGHT_USERS = {"MatMul", "Convolution", "GroupConvolution", "ConvolutionBackpropData"}
_VERSIONS = {"10", "11"}
_COSTS = {"layer": 768, "edge": 160, "port": 96, "dim": 48, "data": 256}  # bytes of what parsing keeps, per element
MAX_XML_SIZE = 1 << 30


@dataclass
class Layer:
    """One ``<layer>`` as parsing keeps it."""

    id: str
    name: str
    type: str
    data: dict[str, str] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)  # input port ids, in order
    output_dims: list[int] | None = None  # the first output port's dims
    decompression: bool = False


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
        dtype = _OWN_DTYPES[type_name] if type_name in _OWN_DTYPES else BY_NAME[type_name].dtype
        assert dtype is not None
        count = math.prod(shape)
        needed = -(-count * bits // 8)
        if size != needed:
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
        info = TensorInfo(name, dtype, shape, size, type_name, self._bin_file, offset, layer.name)
        index.infos[name] = info
        return info

    def _add_roles(self, graph: Graph, keys: dict[str, str], index: Index) -> None:
        for layer_id, name in keys.items():
            info = index.infos[name]
            chain = graph.decompression(layer_id) if graph.layers[layer_id].data["element_type"] in CODE_TYPES else None
            if chain is not None:
                weight = self._compressed(chain, keys, index, graph)
                if weight is not None:
                    end = graph.layers[chain.end]
                    index.roles[name] = _use_role(graph, end, name, "weight_packed")
                    for part, role in zip(weight.parts[1:], ("weight_scale", "weight_zero_point"), strict=False):
                        index.roles[part] = TensorRole("parameter", index.roles[name].layer, role)
                    continue
            if name in index.roles:
                continue
            start = graph.through_conversions(layer_id)
            index.roles[name] = _plain_role(info, graph, start, name)

    def _compressed(self, chain: Chain, keys: dict[str, str], index: Index, graph: Graph) -> QuantizedWeight | None:
        """The quantised weight a decompression subgraph makes, recorded for ``dequantize``."""
        codes = index.infos[keys[chain.codes]]
        scale = keys.get(chain.scale)
        zero = keys.get(chain.zero_point or "")
        if scale is None or (chain.zero_point is not None and zero is None):
            return None
        end = graph.layers[chain.end]
        shape = tuple(end.output_dims) if end.output_dims is not None else codes.shape
        if math.prod(shape) != codes.size:
            raise CorruptCheckpointError(
                f"{graph.where}: compressed weight '{codes.name}' of {codes.size} values is reshaped to {list(shape)}"
            )
        parts = [codes.name, scale] + ([zero] if zero is not None else [])
        nbytes = sum(index.infos[part].nbytes for part in parts)
        settings = {"compute": chain.compute, "codes": codes.type_name}
        weight = QuantizedWeight(
            codes.name, "ov_compressed", tuple(parts), shape, np.dtype(chain.output), nbytes, settings
        )
        self._quantized[codes.name] = weight
        return weight

    def stored_quantized(self) -> dict[str, QuantizedWeight]:
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


def unpack(packed: np.ndarray, type_name: str, count: int) -> np.ndarray:
    """``count`` packed elements as the runtime reads them: 4- and 2-bit ones from the low bits of each byte up,
    1-bit ones from the high bit down."""
    if type_name == "uint1":
        return np.unpackbits(packed, count=count)
    bits = 2 if type_name == "uint2" else 4
    codes = np.empty((packed.size, 8 // bits), np.uint8)
    for slot in range(8 // bits):
        np.bitwise_and(np.right_shift(packed, slot * bits), (1 << bits) - 1, out=codes[:, slot])
    codes = codes.reshape(-1)[:count]
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


class _Parsing:
    """expat's handlers: the top-level layers and edges, kept as ``Layer``s and tuples; a DOCTYPE refused."""

    def __init__(self, where: AnyPath, budget: Budget) -> None:
        self.where, self.budget = where, budget
        self.stack: list[str] = []
        self.layers: dict[str, Layer] = {}
        self.edges: list[Edge] = []
        self.root: dict[str, str] = {}
        self.text: list[str] = []
        self.output_port = False

    def doctype(self, *args: Any) -> int:
        raise RefusedError(f"{self.where}: a DOCTYPE in an IR's XML (entities are never declared nor expanded)")

    def start(self, tag: str, attributes: dict[str, str]) -> None:
        self.stack.append(tag)
        depth, path = len(self.stack), self.stack
        self.budget.spend(_COSTS.get(tag, 16) + sum(map(len, attributes.values())), "parsing the IR's XML")
        if depth == 1:
            if tag != "net":
                raise CorruptCheckpointError(f"{self.where}: not an OpenVINO IR: the root is <{tag[:40]}>, not <net>")
            self.root = dict(attributes)
        elif depth == 3 and path[1] == "layers" and tag == "layer":
            layer = Layer(attributes.get("id", ""), attributes.get("name", ""), attributes.get("type", ""))
            if not layer.id:
                raise CorruptCheckpointError(f"{self.where}: a layer has no id")
            if layer.id in self.layers:
                raise CorruptCheckpointError(f"{self.where}: two layers have id {layer.id[:40]!r}")
            self.layers[layer.id] = layer
        elif depth == 3 and path[1] == "edges" and tag == "edge":
            keys = ("from-layer", "from-port", "to-layer", "to-port")
            if any(key not in attributes for key in keys):
                raise CorruptCheckpointError(f"{self.where}: an edge lacks one of {', '.join(keys)}")
            self.edges.append(tuple(attributes[key] for key in keys))  # type: ignore[arg-type]
        elif depth > 3 and path[1:3] == ["layers", "layer"]:
            self._layer_part(tag, attributes)

    def _layer_part(self, tag: str, attributes: dict[str, str]) -> None:
        layer = self.layers[next(reversed(self.layers))]
        path = self.stack[3:]
        if path == ["data"]:
            layer.data = dict(attributes)
        elif path == ["input", "port"]:
            layer.inputs.append(attributes.get("id", ""))
        elif path == ["output", "port"]:
            self.output_port = layer.output_dims is None
            if self.output_port:
                layer.output_dims = []
        elif path == ["output", "port", "dim"]:
            self.text = []
        elif path == ["rt_info", "attribute"] and attributes.get("name") == "decompression":
            layer.decompression = True

    def end(self, tag: str) -> None:
        if self.stack[1:3] == ["layers", "layer"] and self.stack[3:] == ["output", "port", "dim"] and self.output_port:
            dims = self.layers[next(reversed(self.layers))].output_dims
            assert dims is not None
            text = "".join(self.text).strip()
            dims.append(int(text) if text.isascii() and text.isdigit() and len(text) < 20 else -1)  # -1: dynamic
        elif self.stack[3:] == ["output", "port"]:
            self.output_port = False
        self.stack.pop()

    def characters(self, text: str) -> None:
        if self.stack[3:] == ["output", "port", "dim"]:
            self.text.append(text)


Edge = tuple[str, str, str, str]  # from-layer, from-port, to-layer, to-port


def parse_ir(data: bytes, where: AnyPath) -> tuple[dict[str, str], dict[str, Layer], list[Edge]]:
    """The ``<net>``'s attributes, its top-level layers (by id, in order) and edges, parsed with no DTD nor entity
    allowed."""
    parsing = _Parsing(where, Budget(Limits.for_size(len(data)), where))
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = parsing.doctype
    parser.EntityDeclHandler = parsing.doctype
    parser.ExternalEntityRefHandler = parsing.doctype
    parser.StartElementHandler = parsing.start
    parser.EndElementHandler = parsing.end
    parser.CharacterDataHandler = parsing.characters
    parser.buffer_text = True
    try:
        parser.Parse(data, True)
    except expat.ExpatError as error:
        raise CorruptCheckpointError(f"{where}: not an OpenVINO IR: the XML does not parse ({error})") from None
    except RecursionError:
        raise CorruptCheckpointError(f"{where}: XML nested too deeply") from None
    version = parsing.root.get("version", "")
    if version not in _VERSIONS:
        raise UnsupportedFormatError(f"{where}: IR version {version[:40]!r}; weightscope reads versions 10 and 11")
    return parsing.root, parsing.layers, parsing.edges


@dataclass(frozen=True)
class Chain:
    """A decompression subgraph: its layers' ids, and the types it computes in and gives."""

    codes: str
    scale: str
    zero_point: str | None
    end: str  # the last layer: the weight as its user takes it
    compute: str  # the numpy name of the first Convert's type
    output: str  # of the last layer's


class Graph:
    """The layers and edges: who uses each output, who feeds each input; checked to make no cycle."""

    def __init__(self, layers: dict[str, Layer], edges: list[Edge], where: str) -> None:
        self.layers, self.where = layers, where
        self.users: dict[str, list[tuple[str, int]]] = {}  # layer id -> (user id, input position), any output port
        self.feeds: dict[tuple[str, int], str] = {}  # (layer id, input position) -> the layer feeding it
        for source, _, target, port in edges:
            if source not in layers or target not in layers:
                raise CorruptCheckpointError(
                    f"{where}: an edge joins layers {source[:40]!r}, {target[:40]!r}: no such layer"
                )
            inputs = layers[target].inputs
            if port not in inputs:
                raise CorruptCheckpointError(
                    f"{where}: an edge ends at port {port[:40]!r} of layer {target[:40]!r}: no input"
                )
            position = inputs.index(port)
            if (target, position) in self.feeds:
                raise CorruptCheckpointError(f"{where}: two edges feed port {port[:40]!r} of layer {target[:40]!r}")
            self.feeds[target, position] = source
            self.users.setdefault(source, []).append((target, position))
        self._check_acyclic()

    def _check_acyclic(self) -> None:
        waiting = {layer: 0 for layer in self.layers}
        for target, _ in self.feeds:
            waiting[target] += 1
        ready = [layer for layer, count in waiting.items() if count == 0]
        done = 0
        while ready:
            layer = ready.pop()
            done += 1
            for user, _ in self.users.get(layer, []):
                waiting[user] -= 1
                if waiting[user] == 0:
                    ready.append(user)
        if done != len(self.layers):
            raise CorruptCheckpointError(f"{self.where}: the edges make a cycle ({len(self.layers) - done} layers)")

    def only_user(self, layer: str) -> tuple[Layer, int] | None:
        users = self.users.get(layer, [])
        return (self.layers[users[0][0]], users[0][1]) if len(users) == 1 else None

    def decompressed_name(self, const: Layer) -> str | None:
        """The Convert's name a float Const is known by when its one use is a decompression Convert to f32."""
        if const.data.get("element_type") not in ("f16", "bf16"):
            return None
        use = self.only_user(const.id)
        if use is None or use[0].type != "Convert" or not use[0].decompression:
            return None
        return use[0].name if use[0].data.get("destination_type") == "f32" and use[0].name else None

    def through_conversions(self, layer: str) -> str:
        """The last of the Converts (each the one use of the one before) that ``layer``'s output goes through."""
        for _ in range(len(self.layers)):
            use = self.only_user(layer)
            if use is None or use[0].type != "Convert":
                return layer
            layer = use[0].id
        return layer

    def _const_input(self, layer: str, position: int) -> str | None:
        """The Const feeding input ``position`` of ``layer``, directly or through one Convert."""
        source = self.feeds.get((layer, position))
        if source is not None and self.layers[source].type == "Convert":
            source = self.feeds.get((source, 0))
        return source if source is not None and self.layers[source].type == "Const" else None

    def decompression(self, codes: str) -> Chain | None:
        """The decompression subgraph Const ``codes`` starts, or None where its uses make none."""
        use = self.only_user(codes)
        if use is None or use[0].type != "Convert" or use[1] != 0:
            return None
        compute = _numpy_name(use[0].data.get("destination_type", ""))
        current, zero_point, scale = use[0], None, None
        use = self.only_user(current.id)
        if use is not None and use[0].type == "Subtract" and use[1] == 0:
            zero_point = self._const_input(use[0].id, 1)
            current, use = use[0], self.only_user(use[0].id)
        if use is None or use[0].type != "Multiply" or (zero_point is None and current.type == "Subtract"):
            return None
        scale = self._const_input(use[0].id, 1 - use[1])
        current, output = use[0], compute
        use = self.only_user(current.id)
        if use is not None and use[0].type == "Reshape" and use[1] == 0 and self._const_input(use[0].id, 1):
            current, use = use[0], self.only_user(use[0].id)
        if use is not None and use[0].type == "Convert":
            current, output = use[0], _numpy_name(use[0].data.get("destination_type", ""))
        if scale is None or compute is None or output is None:
            return None
        return Chain(codes, scale, zero_point, current.id, compute, output)

    def users_of(self, layer: str) -> Iterator[tuple[Layer, int]]:
        for user, position in self.users.get(layer, []):
            yield self.layers[user], position


def _numpy_name(element_type: str) -> str | None:
    """A float element type's numpy name (what a decompression Convert gives), else None."""
    names = {"f32": "float32", "f16": "float16", "f64": "float64"}
    return names.get(element_type)


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
