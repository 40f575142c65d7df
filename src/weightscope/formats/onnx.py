"""ONNX models (``.onnx``): the graph's initializers and constants, read as tensors without the onnx package.

Bytes (``onnx/onnx.proto``): the whole file is one protocol buffer message, ``ModelProto``,
with no magic number. weightscope parses it with its own subset of the messages
(``weightscope/_proto/onnx.proto``) and reads:

- ``ModelProto``: ``ir_version`` (1), ``producer_name`` (2), ``producer_version`` (3),
  ``domain`` (4), ``model_version`` (5), ``graph`` (7), ``opset_import`` (8:
  ``{domain, version}``), ``metadata_props`` (14) — all but the graph become metadata.
- ``GraphProto``: ``initializer`` (5, repeated ``TensorProto``): the weights, listed in
  file order under their names; ``sparse_initializer`` (15) is not read: such tensors
  are skipped and named in the metadata (``sparse_initializers_skipped``); ``node`` (1,
  ``NodeProto``: ``input`` 1, ``output`` 2, ``name`` 3, ``op_type`` 4, ``attribute`` 5,
  ``domain`` 7): a ``Constant`` node's ``value`` attribute (``AttributeProto``: ``name``
  1, ``t`` 5) is a tensor too, which exporters often hold weights in. It is listed after
  the initializers under the node's output name. A floating tensor of rank 1 or more is a
  parameter, playing the part its use gives (the second input of a ``Gemm``, ``Conv``,
  ``ConvTranspose`` or ``MatMul`` is that node's weight, the third its bias); any other
  constant (int64 shapes and axes, scalars, masks) is a graph constant, counted as
  bookkeeping: no parameter, no layer. Constants given as ``value_float``, ``value_ints``
  and the like, and those inside subgraphs, are not read.
- ``TensorProto``: ``dims`` (1), ``data_type`` (2, the ``onnx`` column of
  ``weightscope.dtypes``), ``name`` (8), and the data in exactly one of:

  - ``raw_data`` (9): the elements' bytes, little-endian, row-major; 4-bit types packed
    two to a byte, the first element in the low nibble;
  - a typed field, one entry per element: ``float_data`` (4: float32; complex64 as
    real/imaginary pairs), ``double_data`` (10: float64, complex128), ``int64_data`` (7),
    ``uint64_data`` (11: uint32, uint64), ``string_data`` (6), and ``int32_data`` (5) for
    int32, int16, int8, uint16, uint8 and bool values, and for float16, bfloat16 and the
    float8 types as their bit patterns (4-bit types: two elements per entry);
  - external data (``data_location`` 14 = 1, ``external_data`` 13: key/value pairs):
    ``location`` (a file relative to the model's folder), ``offset`` and ``length`` (bytes,
    default 0 and the rest of the file), ``checksum`` (optional SHA1 hex digest of the file).

A message larger than protobuf's 2 GiB limit cannot be parsed: bigger models keep their
weights as external data, which weightscope maps read-only and never copies. Tensors
inside the model are copies held by the parsed message (their ``offset`` is -1).

A reader must refuse: a file larger than 2 GiB, bytes that do not parse as a
``ModelProto`` or that hold no graph (as a cut file may), an initializer with no
name or a name given twice, negative dims, an unknown or unsupported data type, data in
no field or in a field the type does not use, a count or byte length other than the
shape needs, external data with no ``location``, a location that is absolute or escapes
the model's folder (after ``..`` and symlinks are resolved, and for a model read over HTTP
after percent-decoding, as the URL is requested: ``%2e%2e/x`` is ``../x``; ``RefusedError``), an offset
or length that is not a non-negative integer or lies past the end of the external file,
and string tensors stored externally. ``verify`` checks each external file's SHA1
``checksum`` where one is given (the digest of the tensor's own bytes is accepted too,
as some exporters write that).
"""

from __future__ import annotations

import hashlib
import math
import string
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from weightscope.checkpoint import Extent, FileCheckpoint, Index, TensorInfo
from weightscope.confine import confined
from weightscope.containers.protobuf import MESSAGE_COST, PACKED_VARINT_COST, length_delimited, parse_within_budget
from weightscope.dtypes import BY_ONNX, ElementType, check_rank, check_size, little_endian_dtype, unpack_four_bit
from weightscope.errors import (
    ChecksumMismatchError,
    CorruptCheckpointError,
    TruncatedFileError,
    UnsupportedFormatError,
    WeightscopeError,
    kept,
)
from weightscope.layers import TensorRole, classify
from weightscope.sources import AnyPath, AnySource, open_source

MAX_MODEL_SIZE = (1 << 31) - 1  # protobuf's limit on one message
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL
_FOUR_BIT = {"int4", "uint4"}

# The typed field that holds each element type's values when there is no raw_data.
_FIELDS: dict[str, str] = {
    "float32": "float_data",
    "complex64": "float_data",
    "float64": "double_data",
    "complex128": "double_data",
    "int64": "int64_data",
    "uint32": "uint64_data",
    "uint64": "uint64_data",
    "string": "string_data",
}
# Everything else is in int32_data: integers narrower than 64 bits, bool, and the
# 16- and 8-bit floats as bit patterns (4-bit types two to an entry).
_INT32_FIELD = "int32_data"


class OnnxCheckpoint(FileCheckpoint):
    """An ONNX model's initializers, in file order; external ones as read-only views of their files."""

    format = "onnx"

    # With ``verify``, reading an external tensor checks its file's SHA1 checksum.
    _tensors: dict[str, Any]  # name -> TensorProto, for tensors inside the model
    _external: dict[str, AnySource]  # resolved path -> its source
    _checksums: dict[str, str]  # tensor name -> expected SHA1 hex digest
    _verified: set[tuple[str, str]]  # (file, digest) pairs found good
    _digests: dict[str, str]  # external file -> the SHA1 of all of it, hashed once

    # -- loading -----------------------------------------------------------------------
    def _load(self) -> Index:
        self._tensors, self._external, self._checksums, self._verified, self._digests = {}, {}, {}, set(), {}

        from weightscope._proto import OnnxModelProto

        size = self._source.size
        if size > MAX_MODEL_SIZE:
            raise UnsupportedFormatError(
                f"{self.path}: {size} bytes exceed protobuf's 2 GiB limit on one message; "
                "models that large must keep their weights as external data"
            )
        data = bytes(self._source.read(0, size, "the model"))
        # Before parsing: two bytes of protobuf can make a message of 150 (an empty initializer).
        model = parse_within_budget(data, OnnxModelProto, _parsed_cost(data), self.path, "an ONNX model")
        del data
        if not model.HasField("graph"):  # onnx.save writes it after ir_version, producer...: 2 bytes parse as a model
            raise CorruptCheckpointError(f"{self.path}: not an ONNX model, or one cut short: it holds no graph")
        index = Index(metadata=self._describe_model(model))
        for tensor in model.graph.initializer:
            info = self._describe(tensor)
            if info.name in index.infos:
                raise CorruptCheckpointError(f"{self.path}: two initializers are named '{info.name}'")
            index.infos[info.name] = info
        self._add_constants(index, model.graph)
        if index.infos and self._checksums.keys() >= index.infos.keys():
            self.checksums = "SHA1"
        skipped = [
            _text(sparse.values.name, f"{self.path}: a sparse initializer") for sparse in model.graph.sparse_initializer
        ]
        if skipped:
            index.metadata["sparse_initializers_skipped"] = (
                f"{len(skipped)} not read (sparse tensors are unsupported): {', '.join(skipped)}"
            )
        return index

    def _add_constants(self, index: Index, graph: Any) -> None:
        """The tensors of the graph's ``Constant`` nodes, named by their output, with their roles."""
        users: dict[str, tuple[Any, int]] = {}  # tensor name -> (the first node using it, as which input)
        for node in graph.node:
            for position, used in enumerate(node.input):
                users.setdefault(used, (node, position))
        for node in graph.node:
            if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or len(node.output) != 1:
                continue
            value = next((entry.t for entry in node.attribute if entry.name == "value" and entry.HasField("t")), None)
            if value is None:
                continue
            name = _text(node.output[0], f"{self.path}: a Constant node's output")
            if not name:
                raise CorruptCheckpointError(f"{self.path}: a Constant node has no output name")
            if name in index.infos:
                raise CorruptCheckpointError(f"{self.path}: two tensors are named '{name}' (a Constant node's output)")
            info = self._describe(value, name)
            index.infos[name] = info
            op_type, position, layer = "", 0, name
            if name in users:
                user, position = users[name]
                where = f"{self.path}: the node using constant '{name}'"
                op_type = _text(user.op_type, where)
                layer = _text(user.name, where) or (_text(user.output[0], where) if user.output else "") or name
            index.roles[name] = _constant_role(info, op_type, position, layer)

    def _describe_model(self, model: Any) -> dict[str, str]:
        where = f"{self.path}: the model's metadata"
        imports = [f"{_text(entry.domain, where) or 'ai.onnx'}={entry.version}" for entry in model.opset_import]
        metadata = {
            "ir_version": str(model.ir_version),
            "producer_name": _text(model.producer_name, where),
            "producer_version": _text(model.producer_version, where),
            "domain": _text(model.domain, where),
            "model_version": str(model.model_version),
            "opset_imports": ", ".join(imports),
        }
        metadata = {key: value for key, value in metadata.items() if value}
        for entry in model.metadata_props:
            metadata.setdefault(_text(entry.key, where), _text(entry.value, where))
        return metadata

    def _describe(self, tensor: Any, constant: str | None = None) -> TensorInfo:
        """An initializer's info, or (``constant``: its output's name) a Constant node's tensor's."""
        name = constant or _text(tensor.name, f"{self.path}: an initializer's name")
        if not name:
            raise CorruptCheckpointError(f"{self.path}: an initializer has no name")
        where = f"{self.path}: {'constant' if constant else 'initializer'} '{name}'"
        shape = tuple(tensor.dims)
        check_rank(shape, where)
        if any(size < 0 for size in shape):
            raise CorruptCheckpointError(f"{where} has dims {list(shape)}; expected non-negative sizes")
        element = BY_ONNX.get(tensor.data_type)
        if element is None:
            raise UnsupportedFormatError(f"{where} has unknown or unsupported ONNX data type {tensor.data_type}")
        dtype = element.dtype
        if dtype is None:
            raise UnsupportedFormatError(f"{where} has data type {element.name}, which numpy holds no type for")
        count = math.prod(shape)
        check_size(shape, dtype.itemsize, where)
        nbytes = _stored_size(element, count)
        if tensor.data_location == _EXTERNAL:
            return self._describe_external(tensor, name, element, shape, nbytes, where)
        if tensor.data_location != 0:
            raise CorruptCheckpointError(f"{where} has data_location {tensor.data_location}; expected 0 or 1")
        fields = [
            field.name
            for field, _ in tensor.ListFields()
            if field.name.endswith("_data") and field.name != "external_data"
        ]
        if tensor.external_data:
            raise CorruptCheckpointError(f"{where} has external_data but data_location is not EXTERNAL")
        if tensor.HasField("raw_data"):
            if element.name == "string":
                raise CorruptCheckpointError(f"{where}: a string tensor cannot be given as raw_data")
            if len(tensor.raw_data) != nbytes:
                raise CorruptCheckpointError(
                    f"{where}: raw_data holds {len(tensor.raw_data)} bytes; "
                    f"shape {list(shape)} of {element.name} needs {nbytes}"
                )
            extra = [field for field in fields if field != "raw_data"]
            if extra:
                raise CorruptCheckpointError(f"{where} has both raw_data and {', '.join(extra)}")
        else:
            field = _FIELDS.get(element.name, _INT32_FIELD)
            wrong = [other for other in fields if other != field]
            if wrong:
                raise CorruptCheckpointError(f"{where}: {element.name} data given in {', '.join(wrong)}, not {field}")
            expected = _entries(element, count)
            found = len(getattr(tensor, field))
            if found != expected:
                raise CorruptCheckpointError(
                    f"{where}: {field} holds {found} values; shape {list(shape)} of {element.name} needs {expected}"
                )
        self._tensors[name] = tensor
        return TensorInfo(name, dtype, shape, nbytes, element.name, str(self.path), -1, name)

    def _describe_external(
        self, tensor: Any, name: str, element: ElementType, shape: tuple[int, ...], nbytes: int, where: str
    ) -> TensorInfo:
        entries: dict[str, str] = {}
        for entry in tensor.external_data:
            key, value = _text(entry.key, f"{where}: external_data"), _text(entry.value, f"{where}: external_data")
            if key in entries:
                raise CorruptCheckpointError(f"{where}: external_data gives '{key}' twice")
            entries[key] = value
        if element.name == "string":
            raise UnsupportedFormatError(f"{where}: string tensors stored as external data are unsupported")
        location = entries.get("location")
        if not location:
            raise CorruptCheckpointError(f"{where}: external data with no location")
        file = self._resolve(location, where)
        source = self._external.get(str(file))
        if source is None:
            source = self._external[str(file)] = open_source(file)
        offset = _non_negative(entries.get("offset", "0"), "offset", where)
        available = source.size - offset
        length = _non_negative(entries["length"], "length", where) if "length" in entries else max(available, 0)
        if offset + length > source.size:
            raise TruncatedFileError(
                f"{where}: external bytes {offset}..{offset + length} lie past the end of {file} ({source.size} bytes)"
            )
        if length != nbytes:
            raise CorruptCheckpointError(
                f"{where}: external data of {length} bytes; shape {list(shape)} of {element.name} needs {nbytes}"
            )
        if "checksum" in entries:
            self._checksums[name] = entries["checksum"].strip().lower()
        return TensorInfo(name, element.dtype, shape, nbytes, element.name, str(file), offset, name)  # type: ignore[arg-type]

    def _resolve(self, location: str, where: str) -> AnyPath:
        """The external file ``location`` names, which must lie inside the model's folder."""
        return confined(self.path.resolve().parent, location, where, "external data path")

    # -- reading -------------------------------------------------------------------------
    def _extent(self, info: TensorInfo) -> Extent | None:
        """An external tensor's bytes (raw, little-endian; 4-bit types two to a byte); None for a tensor inside
        the model, whose bytes protobuf parsing copied. A SHA1 recorded is of the whole external file."""
        if info.name in self._tensors:
            return None
        digest = self._checksums.get(info.name)
        checksum, expected, checked = "", None, None
        if digest is not None:
            checksum, checked = "sha1", (0, self._external[info.file].size)
            expected = int(digest, 16) if len(digest) == 40 and set(digest) <= set(string.hexdigits) else None
        if info.type_name in _FOUR_BIT:
            dtype, compression = np.dtype(np.uint8), info.type_name
        else:
            dtype, compression = little_endian_dtype(info.dtype), ""
        return Extent(info.file, info.offset, info.nbytes, dtype, None, compression, checksum, expected, checked)

    def _source_of(self, file: str) -> AnySource | None:
        return self._external.get(file) or super()._source_of(file)

    def _read(self, info: TensorInfo) -> np.ndarray:
        return self._read_checked(info, self.verify_checksums)

    def _read_checked(self, info: TensorInfo, check: bool) -> np.ndarray:
        element = BY_ONNX_NAME[info.type_name]
        if info.name not in self._tensors:
            source = self._external[info.file]
            data = source.read(info.offset, info.nbytes, f"tensor '{info.name}'")
            if check and info.name in self._checksums:
                self._check(info, source, data)
            return _from_bytes(data, element, info)
        tensor = self._tensors[info.name]
        if tensor.HasField("raw_data"):
            return _from_bytes(memoryview(tensor.raw_data), element, info)
        return _from_typed(tensor, element, info)

    def _check(self, info: TensorInfo, source: AnySource, data: memoryview) -> None:
        expected = self._checksums[info.name]
        if (info.file, expected) in self._verified:
            return
        whole = self._digests.get(info.file)
        if whole is None:
            whole = self._digests[info.file] = hashlib.sha1(source.read(0, source.size, "external data")).hexdigest()
        if whole == expected or hashlib.sha1(data).hexdigest() == expected:
            self._verified.add((info.file, expected))
            return
        raise ChecksumMismatchError(
            f"{self.path}: tensor '{info.name}': SHA1 of {info.file} is {whole}, but the model records {expected}"
        )

    def verify(self, advance: Callable[[int, int], None] | None = None) -> list[WeightscopeError]:
        """Read every tensor, checking external files' SHA1 checksums; the problems found, if any."""
        problems: list[WeightscopeError] = []
        for info in self._infos.values():
            try:
                self._read_checked(info, True)
            except WeightscopeError as error:
                problems.append(kept(error))
            if advance is not None:
                advance(1, info.nbytes)
        return problems

    def _close(self) -> None:
        super()._close()
        for source in self._external.values():
            source.close()


BY_ONNX_NAME: dict[str, ElementType] = {element.name: element for element in BY_ONNX.values()}

# What parsing makes beyond the bytes it keeps (weightscope.containers.protobuf): a message per element of the
# repeated message fields below, an 8-byte value per byte of a packed varint field (int64 from one byte).
_MODEL_MESSAGES = {8, 14}  # ModelProto: opset_import, metadata_props
_GRAPH = 7
_GRAPH_TENSORS = {5: False, 15: True}  # GraphProto: initializer, sparse_initializer (sparse?)
_SPARSE_TENSORS = {1, 2}  # SparseTensorProto: values, indices
_TENSOR_MESSAGES = {6, 13}  # TensorProto: string_data, external_data
_PACKED_VARINTS = {1, 5, 7, 11}  # TensorProto: dims, int32_data, int64_data, uint64_data


def _parsed_cost(data: bytes) -> int:
    """Bytes of objects parsing ``data`` as a ModelProto makes beyond it, from a walk of its fields."""
    cost = 0
    for number, start, end in length_delimited(data, 0, len(data)):
        if number in _MODEL_MESSAGES:
            cost += MESSAGE_COST
        elif number == _GRAPH:
            for kind, tensor_start, tensor_end in length_delimited(data, start, end):
                if kind in _GRAPH_TENSORS:
                    cost += MESSAGE_COST
                    if _GRAPH_TENSORS[kind]:
                        for part, part_start, part_end in length_delimited(data, tensor_start, tensor_end):
                            if part in _SPARSE_TENSORS:
                                cost += MESSAGE_COST + _tensor_cost(data, part_start, part_end)
                    else:
                        cost += _tensor_cost(data, tensor_start, tensor_end)
    return cost


def _tensor_cost(data: bytes, start: int, end: int) -> int:
    cost = 0
    for number, field_start, field_end in length_delimited(data, start, end):
        if number in _TENSOR_MESSAGES:
            cost += MESSAGE_COST
        elif number in _PACKED_VARINTS:
            cost += PACKED_VARINT_COST * (field_end - field_start)
    return cost


def _text(value: str | bytes, what: str) -> str:
    """A proto2 ``string`` field: protobuf hands its bytes back undecoded when they are not UTF-8."""
    if isinstance(value, bytes):
        raise CorruptCheckpointError(f"{what}: a string that is not UTF-8 ({value[:40]!r})")
    return value


def _stored_size(element: ElementType, count: int) -> int:
    """Bytes of ``count`` elements in raw_data or an external file."""
    if element.name in _FOUR_BIT:
        return (count + 1) // 2
    assert element.dtype is not None
    return count * element.dtype.itemsize


def _entries(element: ElementType, count: int) -> int:
    """Values of ``count`` elements in their typed field."""
    if element.name in ("complex64", "complex128"):
        return 2 * count
    if element.name in _FOUR_BIT:
        return (count + 1) // 2
    return count


def is_bare_tensor(data: bytes) -> bool:
    """Whether ``data`` is one serialized ``TensorProto`` (ONNX's test data, ``onnx.save_tensor``):
    it parses, its data type is known and its data fill its dims exactly (which protobuf's
    leniency alone would not tell from another message)."""
    from google.protobuf.message import DecodeError

    from weightscope._proto import OnnxTensorProto

    try:
        tensor = OnnxTensorProto.FromString(data)
    except (DecodeError, RuntimeError, ValueError):
        return False
    element = BY_ONNX.get(tensor.data_type)
    if element is None or element.dtype is None or any(size < 0 for size in tensor.dims) or len(tensor.dims) > 64:
        return False
    count = math.prod(tensor.dims)
    if tensor.HasField("raw_data"):
        return len(tensor.raw_data) == _stored_size(element, count) > 0
    return len(getattr(tensor, _FIELDS.get(element.name, _INT32_FIELD))) == _entries(element, count) > 0


# The inputs (after the first) through which a node takes a layer's weight and bias.
_WEIGHT_INPUTS: dict[str, tuple[str, ...]] = {
    "Gemm": ("weight", "bias"),
    "Conv": ("weight", "bias"),
    "ConvTranspose": ("weight", "bias"),
    "MatMul": ("weight",),
}


def _constant_role(info: TensorInfo, op_type: str, position: int, layer: str) -> TensorRole:
    """A Constant's tensor: a parameter if floating and not a scalar, as the ``position``-th input of the
    first node using it (an ``op_type`` named ``layer``) makes it, else a graph constant (bookkeeping)."""
    if not info.type_name.startswith(("float", "bfloat", "complex")) or not info.shape:
        return TensorRole("bookkeeping")
    roles = _WEIGHT_INPUTS.get(op_type, ())
    if 1 <= position <= len(roles):
        return TensorRole("parameter", layer=layer, role=roles[position - 1])
    return classify(info.name)


def _non_negative(text: str, key: str, where: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0 or not text.strip().isdigit():
        raise CorruptCheckpointError(f"{where}: external data {key} {text!r} is not a non-negative integer")
    return value


def _from_bytes(data: memoryview, element: ElementType, info: TensorInfo) -> np.ndarray:
    """A tensor's raw little-endian bytes as an array (a read-only view where no unpacking is needed)."""
    if element.name in _FOUR_BIT:
        return unpack_four_bit(np.frombuffer(data, np.uint8), element.name, info.shape)
    if sys.byteorder == "little" or info.dtype.itemsize == 1:
        return np.ndarray(info.shape, info.dtype, buffer=data)  # read-only: the map (or the bytes) is
    return np.ndarray(info.shape, info.dtype.newbyteorder("<"), buffer=data).astype(info.dtype)


def _from_typed(tensor: Any, element: ElementType, info: TensorInfo) -> np.ndarray:
    """A tensor given in a typed field, converted per ONNX's rules."""
    name = element.name
    dtype = info.dtype
    if name == "string":
        array = np.empty(info.size, object)
        array[:] = list(tensor.string_data)
        return array.reshape(info.shape)
    field = _FIELDS.get(name, _INT32_FIELD)
    if field == "float_data":
        values = np.array(tensor.float_data, np.float32)
    elif field == "double_data":
        values = np.array(tensor.double_data, np.float64)
    elif field == "int64_data":
        values = np.array(tensor.int64_data, np.int64)
    elif field == "uint64_data":
        values = np.array(tensor.uint64_data, np.uint64)
    else:
        ints = np.array(tensor.int32_data, np.int64)
        if name in _FOUR_BIT:
            return unpack_four_bit((ints & 0xFF).astype(np.uint8), element.name, info.shape)
        if name == "bool":
            return (ints != 0).reshape(info.shape)
        if dtype.kind in "iu":
            return ints.astype(dtype).reshape(info.shape)
        # float16, bfloat16, float8: the bit patterns, in the low bits of each entry
        bits = np.dtype(f"<u{dtype.itemsize}")
        return (ints & ((1 << (8 * dtype.itemsize)) - 1)).astype(bits).view(dtype).reshape(info.shape)
    if name.startswith("complex"):
        return values.view(dtype).reshape(info.shape)
    return values.astype(dtype).reshape(info.shape)
