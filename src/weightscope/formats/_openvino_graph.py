"""An OpenVINO IR's graph (``weightscope.formats.openvino`` describes the bytes): the XML parsed by expat with no
DTD allowed, its layers and edges checked, and the decompression subgraphs that compute a weight from Consts found.

A decompression subgraph is what the runtime's constant folding folds: layers of the kinds in ``FOLDED`` whose every
input is a Const or another such layer, ending where a layer that is none of these (a MatMul, a Gather of token ids)
takes its output. It is kept as a program of steps over its Consts (``Folded``), which
``weightscope.quant.schemes`` runs as the runtime does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from xml.parsers import expat

import numpy as np

from weightscope.dtypes import NUMPY_MAX_RANK
from weightscope.errors import CorruptCheckpointError, RefusedError, UnsupportedFormatError
from weightscope.limits import Budget, Limits
from weightscope.sources import AnyPath

Edge = tuple[str, str, str, str]  # from-layer, from-port, to-layer, to-port
_VERSIONS = {"10", "11"}
_COSTS = {"layer": 768, "edge": 160, "port": 96, "dim": 48, "data": 256}  # bytes of what parsing keeps, per element
FOLDED = {"Convert", "Subtract", "Multiply", "Reshape", "Gather"}
MAX_FOLDED = 32  # layers in one decompression subgraph (nncf's have 4 to 9)
MAX_DEPTH = 256  # elements nested (an IR's are 6 deep, a loop's body a few times more); expat keeps each open one


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
        if depth > MAX_DEPTH:
            raise CorruptCheckpointError(f"{self.where}: XML elements nested more than {MAX_DEPTH} deep")
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
        elif 3 < depth <= 6 and path[1] == "layers" and path[2] == "layer":  # no slice of a deep stack (quadratic)
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
        if len(self.stack) == 6 and self.stack[1:] == ["layers", "layer", "output", "port", "dim"] and self.output_port:
            dims = self.layers[next(reversed(self.layers))].output_dims
            assert dims is not None
            text = "".join(self.text).strip()
            dims.append(int(text) if text.isascii() and text.isdigit() and len(text) < 20 else -1)  # -1: dynamic
        elif len(self.stack) == 5 and self.stack[3:] == ["output", "port"]:
            self.output_port = False
        self.stack.pop()

    def characters(self, text: str) -> None:
        if len(self.stack) == 6 and self.stack[3:] == ["output", "port", "dim"]:
            self.text.append(text)


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
    version = parsing.root.get("version", "")
    if version not in _VERSIONS:
        raise UnsupportedFormatError(f"{where}: IR version {version[:40]!r}; weightscope reads versions 10 and 11")
    return parsing.root, parsing.layers, parsing.edges


class Graph:
    """The layers and edges: who uses each output, who feeds each input; checked to make no cycle."""

    def __init__(self, layers: dict[str, Layer], edges: list[Edge], where: str) -> None:
        self.layers, self.where = layers, where
        self.users: dict[str, list[tuple[str, int]]] = {}  # layer id -> (user id, input position), any output port
        self.feeds: dict[tuple[str, int], str] = {}  # (layer id, input position) -> the layer feeding it
        self.order: list[str] = []  # every layer after those feeding it
        positions = {layer.id: {port: place for place, port in enumerate(layer.inputs)} for layer in layers.values()}
        for source, _, target, port in edges:
            if source not in layers or target not in layers:
                raise CorruptCheckpointError(
                    f"{where}: an edge joins layers {source[:40]!r}, {target[:40]!r}: no such layer"
                )
            position = positions[target].get(port)
            if position is None:
                raise CorruptCheckpointError(
                    f"{where}: an edge ends at port {port[:40]!r} of layer {target[:40]!r}: no input"
                )
            if (target, position) in self.feeds:
                raise CorruptCheckpointError(f"{where}: two edges feed port {port[:40]!r} of layer {target[:40]!r}")
            self.feeds[target, position] = source
            self.users.setdefault(source, []).append((target, position))
        self._check_acyclic()

    def _check_acyclic(self) -> None:
        """Order the layers so that each comes after those feeding it (Kahn's), or refuse a cycle."""
        waiting = {layer: 0 for layer in self.layers}
        for target, _ in self.feeds:
            waiting[target] += 1
        ready = [layer for layer, count in waiting.items() if count == 0]
        while ready:
            layer = ready.pop()
            self.order.append(layer)
            for user, _ in self.users.get(layer, []):
                waiting[user] -= 1
                if waiting[user] == 0:
                    ready.append(user)
        if len(self.order) != len(self.layers):
            left = len(self.layers) - len(self.order)
            raise CorruptCheckpointError(f"{self.where}: the edges make a cycle ({left} layers)")

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

    def folded(self, dtype_of: Callable[[str], np.dtype | None]) -> Iterator[Folded]:
        """Each decompression subgraph (``dtype_of``: the numpy type of an element type, None where it has none)."""
        constant: set[str] = set()
        for layer_id in self.order:
            layer = self.layers[layer_id]
            fed = [self.feeds.get((layer_id, position)) for position in range(len(layer.inputs))]
            if layer.type == "Const" or (layer.type in FOLDED and fed and all(source in constant for source in fed)):
                constant.add(layer_id)
        for layer_id in self.order:
            users = self.users.get(layer_id, [])
            if self.layers[layer_id].type == "Const" or layer_id not in constant:
                continue
            if all(user in constant for user, _ in users):
                continue  # inside a subgraph (or used by none)
            program = _Program(self, dtype_of)
            try:
                steps, dtype = program.step(layer_id)
            except _NotFoldedError:
                continue
            dims = self.layers[layer_id].output_dims
            if dims is not None and _static(dims):
                yield Folded(layer_id, tuple(program.parts), steps, dtype, tuple(dims))

    def users_of(self, layer: str) -> Iterator[tuple[Layer, int]]:
        for user, position in self.users.get(layer, []):
            yield self.layers[user], position


@dataclass(frozen=True)
class Folded:
    """A weight a decompression subgraph computes from Consts."""

    end: str  # its last layer's id: the weight as its users take it
    parts: tuple[str, ...]  # the Consts' layer ids, the codes (the first Const up the data inputs) first
    program: tuple[Any, ...]  # ("part", i) | ("convert", dtype, step) | ("subtract" | "multiply", step, step)
    # | ("reshape", shape, step) | ("gather", data, indices, axis)
    dtype: np.dtype  # the type the graph gives it
    shape: tuple[int, ...]  # as its last layer's output port says


class _NotFoldedError(Exception):
    """A subgraph this module does not fold (an attribute it does not know, too many layers): its Consts are listed."""


class _Program:
    """The steps of one subgraph, its Consts collected as they are met, depth first along the data inputs."""

    def __init__(self, graph: Graph, dtype_of: Callable[[str], np.dtype | None]) -> None:
        self.graph, self.dtype_of = graph, dtype_of
        self.parts: list[str] = []
        self.left = MAX_FOLDED

    def step(self, layer_id: str) -> tuple[tuple[Any, ...], np.dtype]:
        """The program computing ``layer_id``'s output, and the type the graph gives that output."""
        self.left -= 1
        layer = self.graph.layers[layer_id]
        if self.left < 0:
            raise _NotFoldedError
        if layer.type == "Const":
            if layer_id not in self.parts:
                self.parts.append(layer_id)
            return ("part", self.parts.index(layer_id)), self._type(layer.data.get("element_type", ""))
        inputs = [self.graph.feeds[layer_id, position] for position in range(len(layer.inputs))]
        if layer.type == "Convert" and len(inputs) == 1:
            dtype = self._type(layer.data.get("destination_type", ""))
            return ("convert", dtype, self.step(inputs[0])[0]), dtype
        if layer.type in ("Subtract", "Multiply") and len(inputs) == 2:
            if layer.data.get("auto_broadcast", "numpy") != "numpy":
                raise _NotFoldedError
            first, dtype = self.step(inputs[0])
            return (layer.type.lower(), first, self.step(inputs[1])[0]), dtype
        if layer.type == "Reshape" and len(inputs) == 2:  # to its output's dims (the target shape's Const aside)
            dims = layer.output_dims
            if dims is None or not _static(dims):
                raise _NotFoldedError
            program, dtype = self.step(inputs[0])
            return ("reshape", tuple(dims), program), dtype
        if layer.type == "Gather" and len(inputs) == 3 and layer.data.get("batch_dims", "0") == "0":
            data, dtype = self.step(inputs[0])
            return ("gather", data, self.step(inputs[1])[0], self.step(inputs[2])[0]), dtype
        raise _NotFoldedError

    def _type(self, element_type: str) -> np.dtype:
        dtype = self.dtype_of(element_type)
        if dtype is None:
            raise _NotFoldedError
        return dtype


def _static(dims: list[int]) -> bool:
    """Whether an output port's dims are known sizes (no dynamic one) that numpy can hold as a shape."""
    return min(dims, default=0) >= 0 and len(dims) <= NUMPY_MAX_RANK
