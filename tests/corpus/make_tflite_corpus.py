"""Write tests/corpus/tflite/: broken and hostile TFLite models, each named <Error>--<why>.tflite.

Most start from a model TensorFlow's converter made (tests/fixtures/tflite/), read into TensorFlow's own schema
objects (``flatbuffer_utils.read_model_from_bytearray``), given one wrong field and packed again by the same code;
damage below the schema (offsets, vtables, identifiers, cuts) is patched into the bytes at positions that
flatbuffers' own ``Table`` reports, and the shared-table bomb is laid out by ``flatbuffers.Builder``. Run from the
repo root with the test env: ``.venv/bin/python tests/corpus/make_tflite_corpus.py``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np
from flatbuffer_vectors import finished_tflite_model, offset_vector
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils

HERE = Path(__file__).resolve().parent
FOLDER = HERE / "tflite"
FIXTURES = HERE.parent / "fixtures" / "tflite"
FLOAT = (FIXTURES / "float32.tflite").read_bytes()
QUANTISED = (FIXTURES / "full_int8.tflite").read_bytes()
SPARSE = (FIXTURES / "sparse.tflite").read_bytes()


def _changed(data: bytes, change: Callable[[Any], None]) -> bytes:
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    change(model)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _weight(model: Any, name: bytes = b"small_1/dense_1/MatMul") -> Any:
    return next(tensor for tensor in model.subgraphs[0].tensors if tensor.name == name)


def _set(target: Any, **fields: Any) -> None:
    for key, value in fields.items():
        setattr(target, key, value)


def _patched(data: bytes, position: int, code: str, value: int) -> bytes:
    patched = bytearray(data)
    struct.pack_into(code, patched, position, value)
    return bytes(patched)


def _root_position(data: bytes) -> int:
    return int(struct.unpack_from("<I", data, 0)[0])


def _root_vtable(data: bytes) -> int:
    root = _root_position(data)
    return root - int(struct.unpack_from("<i", data, root)[0])


def _offset_buffer(model: Any) -> None:
    """The dense kernel's data moved past the flatbuffer (as a >2 GB model keeps it), but past the end of the file."""
    buffer = model.buffers[_weight(model).buffer]
    buffer.data, buffer.offset, buffer.size = None, 1 << 40, 5120


def _segments_past_the_indices(model: Any) -> None:
    level = next(tensor for tensor in model.subgraphs[0].tensors if tensor.sparsity is not None).sparsity.dimMetadata
    sparse = next(dimension for dimension in level if dimension.format == schema.DimensionType.SPARSE_CSR)
    sparse.arraySegments.values = np.asarray(sparse.arraySegments.values) * 4


def _sparse_values_cut(model: Any) -> None:
    tensor = next(tensor for tensor in model.subgraphs[0].tensors if tensor.sparsity is not None)
    buffer = model.buffers[tensor.buffer]
    buffer.data = np.asarray(buffer.data)[:-1]


def _shared_tables(count: int = 2000) -> bytes:
    """``count`` subgraphs, all one table, each listing ``count`` tensors, all one table: count² tensors to visit."""
    builder = flatbuffers.Builder(0)
    name = builder.CreateString("w")
    shape = builder.CreateNumpyVector(np.array([1], np.int32))
    builder.StartObject(4)  # Tensor: shape 0, type 1, buffer 2, name 3
    builder.PrependUOffsetTRelativeSlot(0, shape, 0)
    builder.PrependUint32Slot(2, 1, 0)
    builder.PrependUOffsetTRelativeSlot(3, name, 0)
    tensor = builder.EndObject()
    tensors = offset_vector(builder, [tensor] * count)
    builder.StartObject(1)  # SubGraph: tensors 0
    builder.PrependUOffsetTRelativeSlot(0, tensors, 0)
    subgraph = builder.EndObject()
    subgraphs = offset_vector(builder, [subgraph] * count)
    data = builder.CreateNumpyVector(np.zeros(4, np.uint8))
    builder.StartObject(1)
    empty = builder.EndObject()
    builder.StartObject(1)  # Buffer: data 0
    builder.PrependUOffsetTRelativeSlot(0, data, 0)
    full = builder.EndObject()
    return finished_tflite_model(builder, subgraphs, offset_vector(builder, [empty, full]))


def _name_without_its_nul(data: bytes) -> bytes:
    model = schema.Model.GetRootAs(data, 0)
    tensor = model.Subgraphs(0).Tensors(0)
    start = tensor._tab.String(tensor._tab.Offset(10) + tensor._tab.Pos)  # the name's bytes
    at = data.index(start + b"\0")
    return _patched(data, at + len(start), "<B", 0x41)


CASES: dict[str, bytes] = {
    "CorruptCheckpointError--wrong-file-identifier": FLOAT[:4] + b"TFL2" + FLOAT[8:],
    "TruncatedFileError--cut-inside-the-flatbuffer": FLOAT[: len(FLOAT) // 2],
    "TruncatedFileError--cut-after-six-bytes": FLOAT[:6],
    "TruncatedFileError--root-offset-past-the-end": _patched(FLOAT, 0, "<I", 0x7FFF0000),
    "CorruptCheckpointError--root-offset-over-2-GiB": _patched(FLOAT, 0, "<I", 0x80000010),
    "CorruptCheckpointError--vtable-of-odd-size": _patched(FLOAT, _root_vtable(FLOAT), "<H", 7),
    "TruncatedFileError--vtable-past-the-end": _patched(FLOAT, _root_position(FLOAT), "<i", -len(FLOAT)),
    "CorruptCheckpointError--vtable-at-its-own-table": _patched(FLOAT, _root_position(FLOAT), "<i", 0),
    "CorruptCheckpointError--field-outside-its-table": _patched(FLOAT, _root_vtable(FLOAT) + 2, "<H", 4),
    "CorruptCheckpointError--name-without-its-nul": _name_without_its_nul(FLOAT),
    "LimitExceededError--one-subgraph-and-one-tensor-listed-4-million-times": _shared_tables(),
    "CorruptCheckpointError--tensor-names-a-missing-buffer": _changed(FLOAT, lambda m: _set(_weight(m), buffer=999)),
    "CorruptCheckpointError--buffer-not-the-size-of-the-shape": _changed(
        FLOAT, lambda m: _set(_weight(m), shape=[10, 129])
    ),
    "CorruptCheckpointError--negative-dimension": _changed(FLOAT, lambda m: _set(_weight(m), shape=[-10, -128])),
    "UnsupportedFormatError--unknown-tensor-type": _changed(FLOAT, lambda m: _set(_weight(m), type=99)),
    "CorruptCheckpointError--offset-buffer-past-the-end": _changed(FLOAT, _offset_buffer),
    "CorruptCheckpointError--operator-input-past-the-tensors": _changed(
        FLOAT, lambda m: _set(m.subgraphs[0].operators[0], inputs=np.array([0, 9999, -1], np.int32))
    ),
    "CorruptCheckpointError--operator-code-past-the-codes": _changed(
        FLOAT, lambda m: _set(m.subgraphs[0].operators[0], opcodeIndex=77)
    ),
    "CorruptCheckpointError--three-scales-for-ten-channels": _changed(
        QUANTISED, lambda m: _set(_weight(m).quantization, scale=np.array([0.1, 0.2, 0.3], np.float32))
    ),
    "CorruptCheckpointError--sparse-segments-past-the-indices": _changed(SPARSE, _segments_past_the_indices),
    "CorruptCheckpointError--sparse-values-not-whole-floats": _changed(SPARSE, _sparse_values_cut),
}


def main() -> None:
    FOLDER.mkdir(exist_ok=True)
    for name, data in CASES.items():
        (FOLDER / f"{name}.tflite").write_bytes(data)


if __name__ == "__main__":
    main()
