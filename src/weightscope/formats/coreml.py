"""Core ML models (``.mlmodel``; ``.mlpackage`` folders): neural networks' and ML programs' weights, read without
coremltools.

Bytes (coremltools ``mlmodel/format/Model.proto``, ``NeuralNetwork.proto``, ``MIL.proto``): a ``.mlmodel`` is one
protocol buffer message, ``Model``, with no magic number; weightscope parses it with its own subset of the messages
(``weightscope/_proto/coreml.proto``). An ``.mlpackage`` is a folder: ``Manifest.json`` (``itemInfoEntries``: id ->
``{path, name, author}``; ``rootModelIdentifier`` names the entry of the model), the model at
``Data/<path>`` (``Data/com.apple.CoreML/model.mlmodel``) and its weights beside it (``weights/weight.bin``).

- ``Model``: ``specificationVersion`` (1), ``description.metadata`` (2.100: ``shortDescription``, ``versionString``,
  ``author``, ``license``, ``userDefined``: metadata), and one of ``neuralNetwork`` (500), ``neuralNetworkClassifier``
  (403), ``neuralNetworkRegressor`` (303), ``mlProgram`` (502), a ``pipeline`` (202; classifier 200, regressor 201:
  ``{pipeline}``) of ``models`` (1) named by ``names`` (2) — a pipeline's models' tensors are named
  ``<its name or index>/<tensor>``. Other model types (trees, GLMs, SVMs, ...; kept unparsed, as bytes) hold no
  tensors weightscope reads: refused by name (``UnsupportedFormatError``), skipped inside a pipeline.
- Neural networks: ``layers`` (1), each ``NeuralNetworkLayer``: ``name`` (1) and its params (the kinds and shapes are
  in ``weightscope.formats._coreml_layers``). Each ``WeightParams`` is named ``<layer>.<field>`` (``weights`` is
  ``weight``: ``dense_1.weight``, ``dense_1.bias``, ``bn.gamma``, ``gru.updateGateWeightMatrix``) and holds its
  values in exactly one of ``floatValue`` (1, float32), ``float16Value`` (2, little-endian bytes), ``rawValue`` (30:
  ``numberOfBits``-bit codes packed most significant bit first, with ``quantization`` (40): ``linearQuantization``
  (101: ``scale`` 1, ``bias`` 2) or ``lookupTableQuantization`` (102: ``floatValue`` 1)), ``int8RawValue`` (31: int8,
  linear). Quantised codes are listed unpacked as uint8 (int8) under the field's name, with
  ``<name>.quantization_scale`` / ``.quantization_bias`` or ``<name>.lut``; ``dequantize=True`` reads the weight as
  coremltools' ``_dequantize_wp`` does (``weightscope.quant.coreml``). An empty WeightParams (no bias) is no tensor.
  Layers inside control flow (``loop``, ``branch``), bidirectional LSTMs and custom layers are not read.
- ML programs (``Program``: ``functions`` 2, map name -> ``Function``: ``opset`` 2, ``block_specializations`` 3; the
  opset's ``Block``'s ``operations`` 3): each ``const`` op's value (its ``val`` attribute), named by its output
  (``fc_weight_to_fp16``); a ``constexpr_*`` op's parameters (in its ``attributes`` (iOS 16) or its ``inputs`` as
  bound values (iOS 18)) as ``<output>.<parameter>`` (``fc_weight_to_fp16_quantized.quantized_data``, ``.scale``,
  ``.zero_point``, ``.lut``, ``.indices``, ``.data``, ``.offset``; a parameter naming a const op is that op's
  tensor), dequantised on request into ``<output>`` (``constexpr_affine_dequantize``,
  ``constexpr_blockwise_shift_scale``, ``constexpr_lut_to_dense``, ``constexpr_sparse_to_dense``; not the ops both
  sparse and quantised (``constexpr_lut_to_sparse``, ``constexpr_sparse_blockwise_shift_scale``), vector palettes,
  nor an op whose axis or shape is not given inline: those are listed as their parameters only). With several
  functions, names start ``<function>/``. String constants (padding modes) are not tensors; ops in nested blocks are
  not read. A ``Value`` (``type`` 2: ``tensorType`` ``dataType`` 1 (MIL's codes: ``MIL_TYPES``), ``dimensions`` 3, each
  ``constant.size``) is ``immediateValue.tensor`` (3.1: ``floats`` 1, ``ints`` 2, ``bools`` 3, ``longInts`` 5,
  ``doubles`` 6, ``bytes`` 7: the elements' little-endian bytes, sub-byte types packed) or ``blobFileValue`` (5:
  ``fileName`` 1 ``@model_path/weights/weight.bin``, relative to the model's folder, and ``offset`` 2).
- ``weight.bin`` (MILBlob ``StorageFormat.hpp``), little-endian: a 64-byte header (``count`` u32, ``version`` u32 = 2,
  reserved); at each value's offset a 64-byte ``blob_metadata``: ``sentinel`` u32 = 0xDEADBEEF, ``mil_dtype`` u32
  (BlobDataType: 1 float16, 2 float32, 3 uint8, 4 int8, 5 bfloat16, 6 int16, 7 uint16, 8 int4, 9 uint1, 10 uint2,
  11 uint4, 12 uint3, 13 uint6, 14 int32, 15 uint32, 16 float8_e4m3fn, 17 float8_e5m2), ``sizeInBytes`` u64,
  ``offset`` u64 (of the data, in the file), ``padding_size_in_bits`` u64, reserved. Sub-byte elements are packed
  from each byte's least significant bit up and read one per byte (int4 as int8, the others as uint8).

A reader must refuse: a model larger than protobuf's 2 GiB limit, bytes that do not parse as a ``Model`` or that
hold no model type (as a cut file may), a manifest that is no JSON object or names no model inside the package,
parsing that would make more objects than the resource budget allows, two tensors of one name, a WeightParams with
values in more than one field or a count its layer's shape does not take, quantised codes of other than 1 to 8 bits
or in fewer bytes than the shape needs, a value whose type is unknown or whose dimensions are not constant, an
immediate value of the wrong count or byte length, a blob file outside the model's folder (``RefusedError``), a
storage header of another version, a blob whose metadata lies past the end of its file, whose sentinel is not
0xDEADBEEF, whose type is not the value's, whose size is not what the shape needs or whose data lie past the end.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from typing import Any

import numpy as np

from weightscope.checkpoint import Checkpoint, Extent, Index, TensorInfo
from weightscope.confine import confined
from weightscope.containers.protobuf import parse_within_budget, parsed_cost
from weightscope.conventions import PARAMETER_ROLES
from weightscope.dtypes import BY_NAME, check_rank, check_size, little_endian_dtype, unpack_bits
from weightscope.errors import CorruptCheckpointError, TruncatedFileError, UnsupportedFormatError
from weightscope.formats._coreml_layers import LAYERS, channel_axis
from weightscope.layers import TensorRole
from weightscope.quant.schemes import QuantizedWeight
from weightscope.sources import AnyPath, AnySource, as_path, open_source

MAX_MODEL_SIZE = (1 << 31) - 1  # protobuf's limit on one message
MAX_MANIFEST = 1 << 20
_MODEL_PATH = "@model_path/"
_HEADER = struct.Struct("<II")  # count, version; then 56 reserved bytes
_BLOB = struct.Struct("<IIQQQ")  # sentinel, mil_dtype, sizeInBytes, offset, padding_size_in_bits; then 32 reserved
_SENTINEL = 0xDEADBEEF
_STRING = 2  # MILSpec.DataType.STRING
# MILSpec.DataType -> weightscope's element name
MIL_TYPES = {
    1: "bool", 10: "float16", 11: "float32", 12: "float64", 13: "bfloat16", 21: "int8", 22: "int16", 23: "int32",
    24: "int64", 25: "int4", 31: "uint8", 32: "uint16", 33: "uint32", 34: "uint64", 35: "uint4", 36: "uint2",
    37: "uint1", 38: "uint6", 39: "uint3", 40: "float8_e4m3fn", 41: "float8_e5m2",
}  # fmt: skip
# MILBlob's BlobDataType -> the element name
BLOB_TYPES = {
    1: "float16", 2: "float32", 3: "uint8", 4: "int8", 5: "bfloat16", 6: "int16", 7: "uint16", 8: "int4", 9: "uint1",
    10: "uint2", 11: "uint4", 12: "uint3", 13: "uint6", 14: "int32", 15: "uint32", 16: "float8_e4m3fn",
    17: "float8_e5m2",
}  # fmt: skip
# Sub-byte elements: their bits, read one per byte (int4 as int8)
SUB_BYTE = {"int4": 4, "uint4": 4, "uint1": 1, "uint2": 2, "uint3": 3, "uint6": 6}
# Where each TensorValue field's values go (numpy dtype of the protobuf field)
_IMMEDIATE = {"floats": np.float32, "ints": np.int32, "bools": np.bool_, "longInts": np.int64, "doubles": np.float64}
# constexpr ops weightscope dequantises: scheme, the parameters it needs and one it may have, in the order it reads them
_CONSTEXPR: dict[str, tuple[str, tuple[str, ...], str]] = {
    "constexpr_affine_dequantize": ("mil_affine", ("quantized_data", "zero_point", "scale"), ""),
    "constexpr_blockwise_shift_scale": ("mil_blockwise", ("data", "scale"), "offset"),
    "constexpr_lut_to_dense": ("mil_lut", ("indices", "lut"), ""),  # iOS 16's, with a shape: mil_lut_packed
    "constexpr_sparse_to_dense": ("mil_sparse", ("nonzero_data", "mask"), ""),  # iOS 16's: mil_sparse_packed
}
_VALUES = ("quantized_data", "data", "indices", "nonzero_data")  # the parameter holding a weight's stored values
_SETTINGS = ("axis", "shape", "vector_axis", "name")  # a constexpr op's parameters that are no tensors
_ROLES = {"mean": "running_mean", "variance": "running_var"}  # the roles PARAMETER_ROLES does not name
# The ML program ops whose parameters are a layer's, by input name
_LAYER_OPS = {"conv", "conv_transpose", "linear", "batch_norm", "instance_norm", "layer_norm", "embedding", "gather"}
_NN_TYPES = ("neuralNetwork", "neuralNetworkClassifier", "neuralNetworkRegressor")
_PIPELINES = {"pipeline": False, "pipelineClassifier": True, "pipelineRegressor": True}  # wrapped in {pipeline}?

Reader = Callable[[], np.ndarray]


def element(name: str) -> np.dtype:
    """What an element type is read as: its numpy dtype, sub-byte ones one per byte."""
    if name in SUB_BYTE:
        return np.dtype(np.int8 if name == "int4" else np.uint8)
    dtype = BY_NAME[name].dtype
    assert dtype is not None
    return dtype


def stored_size(name: str, count: int) -> int:
    return -(-count * SUB_BYTE[name] // 8) if name in SUB_BYTE else count * element(name).itemsize


def from_bytes(data: bytes | memoryview, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Little-endian elements (sub-byte ones packed LSB first) as an array."""
    if name in SUB_BYTE:
        codes = unpack_bits(np.frombuffer(data, np.uint8), SUB_BYTE[name], math.prod(shape)).reshape(shape)
        if name != "int4":
            return codes
        np.bitwise_xor(codes, 8, out=codes)  # two's complement in 4 bits: 0..7 stay, 8..15 are -8..-1
        signed = codes.view(np.int8)
        np.subtract(signed, 8, out=signed)
        return signed
    dtype = element(name)
    array = np.ndarray(shape, little_endian_dtype(dtype), buffer=data)
    return array if array.dtype == dtype else array.astype(dtype)


class CoreMLCheckpoint(Checkpoint):
    """A Core ML model's weights: neural-network layers' WeightParams, ML-program consts (the package's blobs as
    read-only views of ``weight.bin``); quantised ones as their stored parts, each recorded for ``dequantize``."""

    format = "coreml"

    def __init__(self, path: Any, *, verify: bool = True) -> None:
        super().__init__(as_path(path))
        self.verify_checksums = verify
        self._readers: dict[str, Reader] = {}  # tensors held by the parsed model
        self._blobs: dict[str, tuple[str, int, int]] = {}  # tensor -> (file, data offset, bytes) in a weight file
        self._sources: dict[str, AnySource] = {}
        self._recorded: dict[str, QuantizedWeight] = {}
        self._headers_checked: set[str] = set()
        try:
            self._install(self._load())
        except BaseException:
            self._close()
            raise

    # -- loading -----------------------------------------------------------------------
    def _load(self) -> Index:
        self.model_file = self._model_file()
        source = self._open(self.model_file)

        from weightscope._proto import CoreMLModel

        if source.size > MAX_MODEL_SIZE:
            raise UnsupportedFormatError(f"{self.model_file}: {source.size} bytes exceed protobuf's 2 GiB limit")
        data = bytes(source.read(0, source.size, "the model"))
        cost = parsed_cost(data, CoreMLModel.DESCRIPTOR)
        model = parse_within_budget(data, CoreMLModel, cost, self.model_file, "a Core ML model")
        del data
        kind = model.WhichOneof("Type")
        if kind is None:  # a Model's type is its last field: a cut file may hold only its description
            raise CorruptCheckpointError(f"{self.model_file}: not a Core ML model, or one cut short: it holds no model")
        if kind not in _NN_TYPES and kind not in _PIPELINES and kind != "mlProgram":
            raise UnsupportedFormatError(
                f"{self.model_file}: a Core ML {kind} model; weightscope reads the weights of neural networks, "
                "ML programs and pipelines of them"
            )
        index = Index(metadata=self._describe(model))
        self._model(model, "", index)
        return index

    def _model_file(self) -> AnyPath:
        """The model's protobuf: the file itself, or the one a package's manifest names."""
        if self.path.suffix != ".mlpackage" and not self.path.is_dir():  # over HTTP a folder is no object
            return self.path
        manifest = self.path / "Manifest.json"
        where = f"{self.path}: Manifest.json"
        if not manifest.is_file():
            raise CorruptCheckpointError(f"{self.path}: an .mlpackage with no Manifest.json")
        source = self._open(manifest)
        if source.size > MAX_MANIFEST:
            raise CorruptCheckpointError(f"{where} of {source.size} bytes (at most {MAX_MANIFEST})")
        try:
            text = json.loads(bytes(source.read(0, source.size, "the manifest")))
            location = text["itemInfoEntries"][text["rootModelIdentifier"]]["path"]
        except (ValueError, KeyError, TypeError) as error:
            raise CorruptCheckpointError(f"{where}: names no model ({error!r})") from None
        if not isinstance(location, str):
            raise CorruptCheckpointError(f"{where}: the model's path is {location!r}, not a string")
        return confined((self.path / "Data").resolve(), location, where, "model path")

    def _open(self, file: AnyPath) -> AnySource:
        key = str(file)
        if key not in self._sources:
            self._sources[key] = open_source(file)
        return self._sources[key]

    def _describe(self, model: Any) -> dict[str, str]:
        meta = model.description.metadata
        kind = model.WhichOneof("Type") or ""
        metadata = {
            "specification_version": str(model.specificationVersion),
            "model_type": kind,
            "short_description": meta.shortDescription,
            "version": meta.versionString,
            "author": meta.author,
            "license": meta.license,
        }
        if kind == "mlProgram":
            functions = model.mlProgram.functions
            metadata["functions"] = ", ".join(f"{name} ({functions[name].opset})" for name in sorted(functions))
        metadata = {key: value for key, value in metadata.items() if value}
        for key in sorted(meta.userDefined):
            metadata.setdefault(key, meta.userDefined[key])
        return metadata

    def _model(self, model: Any, prefix: str, index: Index) -> None:
        """The tensors of ``model``: a pipeline's models' under their names (its other models, a scaler or a
        feature vectorizer, hold none weightscope reads)."""
        kind = model.WhichOneof("Type")
        if kind in _NN_TYPES:
            self._network(getattr(model, kind), prefix, index)
        elif kind == "mlProgram":
            self._program(model.mlProgram, prefix, index)
        elif kind in _PIPELINES:
            pipeline = getattr(model, kind)
            pipeline = pipeline.pipeline if _PIPELINES[kind] else pipeline
            for number, inner in enumerate(pipeline.models):
                name = (
                    pipeline.names[number] if number < len(pipeline.names) and pipeline.names[number] else str(number)
                )
                self._model(inner, f"{prefix}{name}/", index)

    def _add(self, index: Index, info: TensorInfo, role: TensorRole) -> None:
        if info.name in index.infos or info.name in self._recorded:
            raise CorruptCheckpointError(f"{self.model_file}: two tensors are named '{info.name}'")
        index.infos[info.name] = info
        index.roles[info.name] = role

    def _info(self, name: str, dtype_name: str, shape: tuple[int, ...], nbytes: int) -> TensorInfo:
        return TensorInfo(name, element(dtype_name), shape, nbytes, dtype_name, str(self.model_file), -1, name)

    # -- neural networks -------------------------------------------------------------------
    def _network(self, network: Any, prefix: str, index: Index) -> None:
        for layer in network.layers:
            kind = layer.WhichOneof("layer")
            if kind not in LAYERS:
                continue
            params = getattr(layer, kind)
            layer_name = prefix + layer.name
            for field, weights, shape in LAYERS[kind](params):
                if weights.ByteSize():
                    role = TensorRole("parameter", layer_name, PARAMETER_ROLES.get(field, _ROLES.get(field, field)))
                    name = f"{layer_name}.{PARAMETER_ROLES.get(field, field) if field == 'weights' else field}"
                    self._weight_params(index, name, weights, shape, role, channel_axis(kind, params, field))

    def _weight_params(
        self, index: Index, name: str, weights: Any, shape: tuple[int, ...] | None, role: TensorRole, axis: int | None
    ) -> None:
        where = f"{self.model_file}: weights '{name}'"
        held = [
            field for field in ("floatValue", "float16Value", "rawValue", "int8RawValue") if getattr(weights, field)
        ]
        if not held:  # settings alone (isUpdatable), or quantisation parameters with no codes: no tensor
            return
        if len(held) > 1:
            raise CorruptCheckpointError(f"{where}: values in {' and '.join(held)}; expected one field")
        (field,) = held
        stored = getattr(weights, field)
        bits = 16 if field == "float16Value" else 8
        if field == "rawValue":
            bits = weights.quantization.numberOfBits
            if not 1 <= bits <= 8:
                raise UnsupportedFormatError(f"{where}: {bits}-bit codes (1 to 8 are known)")
        count = len(stored) if field == "floatValue" else len(stored) * 8 // bits
        shape = self._shape(where, shape, count, field)
        count = math.prod(shape)
        if field == "floatValue":
            self._readers[name] = _floats(stored, shape)
            self._add(index, self._info(name, "float32", shape, 4 * count), role)
            return
        needed = -(-count * bits // 8)
        if len(stored) != needed:
            raise CorruptCheckpointError(
                f"{where}: {field} holds {len(stored)} bytes; shape {list(shape)} of {bits}-bit values needs {needed}"
            )
        if field == "float16Value":
            self._readers[name] = lambda: from_bytes(stored, "float16", shape)
            self._add(index, self._info(name, "float16", shape, needed), role)
            return
        signed = field == "int8RawValue"
        self._readers[name] = lambda: _codes(stored, bits, shape, signed)
        self._add(index, self._info(name, "int8" if signed else "uint8", shape, needed), role)
        self._nn_quantization(index, name, weights.quantization, shape, axis, where)

    def _shape(self, where: str, shape: tuple[int, ...] | None, count: int, field: str) -> tuple[int, ...]:
        """The layer's shape for a field of ``count`` values (a packed field: at most), or flat where it gives none."""
        if not shape:
            return (count,)
        check_rank(shape, where)
        needed = math.prod(shape)
        if needed != count and not (field in ("rawValue", "int8RawValue") and needed <= count):
            raise CorruptCheckpointError(
                f"{where}: {field} holds {count} values; its layer's shape {list(shape)} takes {needed}"
            )
        return shape

    def _nn_quantization(
        self, index: Index, name: str, quantization: Any, shape: tuple[int, ...], axis: int | None, where: str
    ) -> None:
        kind = quantization.WhichOneof("QuantizationType")
        bookkeeping = TensorRole("bookkeeping")
        if kind == "linearQuantization":
            parts = [name]
            for field in ("scale", "bias"):
                values = getattr(quantization.linearQuantization, field)
                if values:
                    part = f"{name}.quantization_{field}"
                    self._readers[part] = _floats(values)
                    self._add(index, self._info(part, "float32", (len(values),), 4 * len(values)), bookkeeping)
                    parts.append(part)
            if len(parts) == 1:
                raise CorruptCheckpointError(f"{where}: linear quantisation with no scale")
            self._record(index, name, "coreml_linear", parts, shape, np.float32, axis=axis)
        elif kind == "lookupTableQuantization":
            values = quantization.lookupTableQuantization.floatValue
            part = f"{name}.lut"
            self._readers[part] = _floats(values)
            self._add(index, self._info(part, "float32", (len(values),), 4 * len(values)), bookkeeping)
            self._record(index, name, "coreml_lut", [name, part], shape, np.float32)
        else:
            raise CorruptCheckpointError(f"{where}: quantised codes with no quantisation parameters")

    def _record(
        self,
        index: Index,
        name: str,
        scheme: str,
        parts: list[str],
        shape: tuple[int, ...],
        dtype: Any,
        **settings: Any,
    ) -> None:
        if name in index.infos and name != parts[0]:
            raise CorruptCheckpointError(f"{self.model_file}: two tensors are named '{name}'")
        nbytes = sum(index.infos[part].nbytes for part in parts)
        self._recorded[name] = QuantizedWeight(name, scheme, tuple(parts), shape, np.dtype(dtype), nbytes, settings)

    # -- ML programs -----------------------------------------------------------------------
    def _program(self, program: Any, prefix: str, index: Index) -> None:
        functions = sorted(program.functions)
        for function_name in functions:
            function = program.functions[function_name]
            block = function.block_specializations.get(function.opset)
            if block is None:
                if len(function.block_specializations) != 1:
                    raise CorruptCheckpointError(
                        f"{self.model_file}: function '{function_name}' has no block for its opset {function.opset!r}"
                    )
                (block,) = function.block_specializations.values()
            scope = prefix + (f"{function_name}/" if len(functions) > 1 else "")
            self._operations(block.operations, scope, index)

    def _operations(self, operations: Any, scope: str, index: Index) -> None:
        users: dict[str, tuple[str, str, str]] = {}  # value -> (op type, input name, op's output) of its first user
        for op in operations:
            output = op.outputs[0].name if op.outputs else ""
            for parameter, argument in op.inputs.items():
                for binding in argument.arguments:
                    if binding.WhichOneof("binding") == "name":
                        users.setdefault(binding.name, (op.type, parameter, output))
        for op in operations:
            if not op.outputs or not (op.type == "const" or op.type.startswith("constexpr_")):
                continue
            output = op.outputs[0]
            if not output.name:
                raise CorruptCheckpointError(f"{self.model_file}: a {op.type} op with no output name")
            name = scope + output.name
            role = _role(users.get(output.name), scope)
            if op.type == "const":
                value = op.attributes.get("val")
                if value is None:
                    raise CorruptCheckpointError(f"{self.model_file}: const '{name}' has no value")
                if value.type.tensorType.dataType != _STRING:
                    self._value(index, name, value, role if _floating(value) else TensorRole("bookkeeping"))
            else:
                self._constexpr(index, op, scope, role)

    def _constexpr(self, index: Index, op: Any, scope: str, role: TensorRole) -> None:
        """A constexpr op's tensor parameters as ``<output>.<parameter>`` (or the const ops they name, by their
        names), recorded for dequantising where the op is one weightscope dequantises."""
        name = scope + op.outputs[0].name
        values = dict(op.attributes.items())
        parts: dict[str, str] = {}
        for parameter, argument in op.inputs.items():
            bound = list(argument.arguments)
            if len(bound) == 1 and bound[0].WhichOneof("binding") == "value":
                values[parameter] = bound[0].value
            elif len(bound) == 1 and scope + bound[0].name in index.infos:
                parts[parameter] = scope + bound[0].name  # a const op's value, by its name
            else:
                parts[parameter] = ""  # bound otherwise: the op is listed, not dequantised
        for parameter in sorted(values, key=lambda key: (key not in _VALUES, key)):
            if parameter in _SETTINGS or values[parameter].type.tensorType.dataType == _STRING:
                continue
            part = f"{name}.{parameter}"
            first = parameter in _VALUES
            self._value(index, part, values[parameter], role if first else TensorRole("bookkeeping"))
            parts[parameter] = part
        shape, dtype_name = self._tensor_type(op.outputs[0].type, f"{self.model_file}: constexpr '{name}'")
        scheme, needed, optional = _CONSTEXPR.get(op.type, ("", (), ""))
        if scheme in ("mil_lut", "mil_sparse") and "shape" in values:
            scheme += "_packed"
        wanted = [parts.get(key, "") for key in needed] + ([parts[optional]] if optional in parts else [])
        settings_bound = all(key in values for key in ("axis", "shape") if key in parts)
        if scheme == "mil_lut" and all(wanted) and index.infos[wanted[1]].shape[-1:] != (1,):
            scheme = ""  # vector palettes (a lut entry of several values): listed, not dequantised
        if scheme and all(wanted) and settings_bound and dtype_name in ("float16", "float32", "bfloat16"):
            index.roles[wanted[0]] = role  # a const op's values too, where the op names one
            settings: dict[str, Any] = {}
            if scheme == "mil_affine":
                axis = self._array(values["axis"], f"{name}.axis").reshape(-1) if "axis" in values else np.zeros(1)
                if axis.size != 1:
                    raise CorruptCheckpointError(
                        f"{self.model_file}: constexpr '{name}' has {axis.size} axes; expected 1"
                    )
                settings["axis"] = int(axis[0])
            self._record(index, name, scheme, wanted, shape, element(dtype_name), **settings)

    def _tensor_type(self, value_type: Any, where: str) -> tuple[tuple[int, ...], str]:
        tensor = value_type.tensorType
        dtype_name = MIL_TYPES.get(tensor.dataType)
        if dtype_name is None:
            raise UnsupportedFormatError(f"{where} has unknown MIL data type {tensor.dataType}")
        if any(dimension.WhichOneof("dimension") != "constant" for dimension in tensor.dimensions):
            raise CorruptCheckpointError(f"{where} has a dimension that is not constant")
        shape = tuple(dimension.constant.size for dimension in tensor.dimensions)
        check_rank(shape, where)
        check_size(shape, element(dtype_name).itemsize, where)
        return shape, dtype_name

    def _value(self, index: Index, name: str, value: Any, role: TensorRole) -> None:
        where = f"{self.model_file}: value '{name}'"
        shape, dtype_name = self._tensor_type(value.type, where)
        nbytes = stored_size(dtype_name, math.prod(shape))
        kind = value.WhichOneof("value")
        if kind == "blobFileValue":
            file, offset = self._blob(value.blobFileValue, dtype_name, nbytes, where)
            self._blobs[name] = (str(file), offset, nbytes)
            info = TensorInfo(name, element(dtype_name), shape, nbytes, dtype_name, str(file), offset, name)
        elif kind == "immediateValue" and value.immediateValue.HasField("tensor"):
            self._readers[name] = _immediate(value.immediateValue.tensor, dtype_name, shape, where)
            info = self._info(name, dtype_name, shape, nbytes)
        else:
            raise CorruptCheckpointError(f"{where} holds no tensor")
        self._add(index, info, role)

    def _array(self, value: Any, name: str) -> np.ndarray:
        """A small value read now (a constexpr op's axis)."""
        where = f"{self.model_file}: value '{name}'"
        shape, dtype_name = self._tensor_type(value.type, where)
        if value.WhichOneof("value") != "immediateValue" or math.prod(shape) > 64:
            raise CorruptCheckpointError(f"{where}: expected a small immediate value")
        return _immediate(value.immediateValue.tensor, dtype_name, shape, where)()

    def _blob(self, blob: Any, dtype_name: str, nbytes: int, where: str) -> tuple[AnyPath, int]:
        """The weight file and data offset of a blob, its metadata checked against the value's type and size."""
        if not blob.fileName.startswith(_MODEL_PATH):
            raise CorruptCheckpointError(f"{where}: blob file {blob.fileName!r} does not start {_MODEL_PATH}")
        file = confined(self.model_file.resolve().parent, blob.fileName[len(_MODEL_PATH) :], where, "blob file")
        source = self._open(file)
        if str(file) not in self._headers_checked:
            header = bytes(source.read(0, _HEADER.size, f"{file}: the storage header")) if source.size >= 64 else b""
            if len(header) < _HEADER.size:
                raise TruncatedFileError(f"{file}: {source.size} bytes; a weight file's header takes 64")
            version = _HEADER.unpack(header)[1]
            if version != 2:
                raise UnsupportedFormatError(f"{file}: storage version {version}; expected 2")
            self._headers_checked.add(str(file))
        offset = blob.offset
        if offset + 64 > source.size:
            raise TruncatedFileError(
                f"{file}: blob metadata at {offset} lies past the end ({source.size} bytes) ({where})"
            )
        sentinel, code, size, data_offset, padding = _BLOB.unpack(
            bytes(source.read(offset, _BLOB.size, f"{file}: blob metadata"))
        )
        if sentinel != _SENTINEL:
            raise CorruptCheckpointError(
                f"{file}: blob metadata at {offset} has sentinel {sentinel:#x}; expected 0xdeadbeef ({where})"
            )
        stored = BLOB_TYPES.get(code)
        if stored != dtype_name:
            raise CorruptCheckpointError(
                f"{file}: blob at {offset} holds {stored or f'type {code}'}; {where} is {dtype_name}"
            )
        if size != nbytes or padding >= 8:
            raise CorruptCheckpointError(f"{file}: blob at {offset} holds {size} bytes; {where} needs {nbytes}")
        if data_offset < offset + 64 or data_offset + size > source.size:
            raise TruncatedFileError(
                f"{file}: blob data {data_offset}..{data_offset + size} lie outside its {source.size} bytes ({where})"
            )
        return file, data_offset

    # -- reading ---------------------------------------------------------------------------
    def recorded_quantization(self) -> dict[str, QuantizedWeight]:
        return dict(self._recorded)

    def _extent(self, info: TensorInfo) -> Extent | None:
        if info.name not in self._blobs or info.type_name in SUB_BYTE:
            return None
        file, offset, nbytes = self._blobs[info.name]
        return Extent(file, offset, nbytes, little_endian_dtype(info.dtype))

    def _source_of(self, file: str) -> AnySource | None:
        return self._sources.get(file)

    def _read(self, info: TensorInfo) -> np.ndarray:
        reader = self._readers.get(info.name)
        if reader is not None:
            return reader()
        if info.type_name in SUB_BYTE:
            file, offset, nbytes = self._blobs[info.name]
            return from_bytes(
                self._sources[file].read(offset, nbytes, f"tensor '{info.name}'"), info.type_name, info.shape
            )
        return super()._read(info)

    def _close(self) -> None:
        for source in self._sources.values():
            source.close()


def _floats(values: Any, shape: tuple[int, ...] | None = None) -> Reader:
    """A reader of a repeated float field (held by the parsed model) as float32."""
    return lambda: np.array(values, np.float32).reshape(shape or (len(values),))


def _codes(stored: bytes, bits: int, shape: tuple[int, ...], signed: bool) -> np.ndarray:
    packed = np.frombuffer(stored, np.int8 if signed else np.uint8)
    if bits == 8:
        return packed[: math.prod(shape)].reshape(shape)
    return unpack_bits(packed, bits, math.prod(shape), msb_first=True).reshape(shape)


def _immediate(tensor: Any, dtype_name: str, shape: tuple[int, ...], where: str) -> Reader:
    """A reader of an immediate TensorValue, its count (or byte length) checked now."""
    kind = tensor.WhichOneof("value")
    count = math.prod(shape)
    if kind == "bytes":
        data = tensor.bytes.values
        needed = stored_size(dtype_name, count)
        if len(data) != needed:
            raise CorruptCheckpointError(
                f"{where}: {len(data)} bytes; shape {list(shape)} of {dtype_name} needs {needed}"
            )
        return lambda: from_bytes(data, dtype_name, shape)
    if kind not in _IMMEDIATE:
        raise CorruptCheckpointError(f"{where}: an immediate value of {kind or 'nothing'}; expected numbers or bytes")
    values = getattr(tensor, kind).values
    if len(values) != count:
        raise CorruptCheckpointError(f"{where}: {len(values)} values; shape {list(shape)} needs {count}")
    return lambda: np.array(values, _IMMEDIATE[kind]).astype(element(dtype_name)).reshape(shape)


def _floating(value: Any) -> bool:
    return MIL_TYPES.get(value.type.tensorType.dataType, "").startswith(("float", "bfloat")) and bool(
        value.type.tensorType.dimensions
    )


def _role(user: tuple[str, str, str] | None, scope: str) -> TensorRole:
    """A value's role from the op that first uses it: a layer op's weight, bias, gamma... or a graph constant."""
    if user is None or user[0] not in _LAYER_OPS:
        return TensorRole("bookkeeping")
    op_type, parameter, output = user
    if op_type in ("embedding", "gather") and parameter == "x":
        parameter = "weight"
    if parameter == "x":
        return TensorRole("bookkeeping")
    return TensorRole("parameter", scope + output, PARAMETER_ROLES.get(parameter, _ROLES.get(parameter, parameter)))
