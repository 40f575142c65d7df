"""Write tests/corpus/executorch/: broken and hostile ExecuTorch programs, each named <Error>--<why>.pte.

Each is a fixture exported by ExecuTorch (tests/fixtures/executorch/) with one thing wrong: a header field, or a
field of a table found by walking the program with weightscope's flatbuffer reader, overwritten in place; or a
program laid out by the ``flatbuffers`` package's Builder (``shared_plans``, also a crafted input of
tests/test_resources.py). Run from the repository root: ``.venv/bin/python tests/corpus/make_executorch_corpus.py``
(``make fixtures-executorch`` runs it after remaking the fixtures).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from flatbuffer_vectors import offset_vector

from weightscope.flatbuffers import FlatBuffer, Table

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "executorch"
FOLDER = Path(__file__).resolve().parent / "executorch"
MLP = (FIXTURES / "mlp.pte").read_bytes()


def _root(data: bytes) -> Table:
    (program_size,) = struct.unpack_from("<Q", data, 16)
    return FlatBuffer(data[:program_size], "fixture", b"ET12").root()


def _patched(data: bytes, position: int, layout: str, value: int) -> bytes:
    raw = bytearray(data)
    struct.pack_into(layout, raw, position, value)
    return bytes(raw)


def patched_field(find: Callable[[Table], tuple[Table, int, int]], layout: str, value: int, data: bytes = MLP) -> bytes:
    """``data`` with the field ``find`` picks (a table, its slot, the field's width) set to ``value``."""
    table, slot, width = find(_root(data))
    position = table.field(slot, width)
    assert position is not None, slot
    return _patched(data, position, layout, value)


def tensor_of(root: Table, value: int) -> Table:
    plan = root.tables(1, "plans")[0]
    tensor = plan.tables(2, "values")[value].table(1, "tensor")
    assert tensor is not None
    return tensor


def _vector_element(find: Callable[[Table], tuple[Table, int]], index: int, layout: str, value: int) -> bytes:
    """``MLP`` with element ``index`` of the scalar vector ``find`` picks (a table and slot) set to ``value``."""
    table, slot = find(_root(MLP))
    found = table.vector(slot, struct.calcsize(layout), "vector")
    assert found is not None
    start, count = found
    assert index < count
    return _patched(MLP, start + index * struct.calcsize(layout), layout, value)


def shared_plans(count: int, values: int) -> bytes:
    """A program whose ``execution_plan`` lists one plan ``count`` times, that plan's ``values`` one tensor EValue
    ``values`` times: count × values tensors described in a few bytes (the flatbuffer reader's visit cap refuses)."""
    import flatbuffers

    builder = flatbuffers.Builder(0)
    sizes = builder.CreateNumpyVector(np.array([2, 2], "<i4"))
    builder.StartObject(10)
    builder.PrependUOffsetTRelativeSlot(2, sizes, 0)
    builder.PrependInt8Slot(0, 6, 0)
    tensor = builder.EndObject()
    builder.StartObject(2)
    builder.PrependUOffsetTRelativeSlot(1, tensor, 0)
    builder.PrependUint8Slot(0, 5, 0)
    value = builder.EndObject()
    listed = offset_vector(builder, [value] * values)
    name = builder.CreateString("forward")
    builder.StartObject(10)
    builder.PrependUOffsetTRelativeSlot(2, listed, 0)
    builder.PrependUOffsetTRelativeSlot(0, name, 0)
    plan = builder.EndObject()
    plans = offset_vector(builder, [plan] * count)
    builder.StartObject(8)
    builder.PrependUOffsetTRelativeSlot(1, plans, 0)
    builder.Finish(builder.EndObject(), file_identifier=b"ET12")
    return bytes(builder.Output())


def _value(builder: Any, data_index: int, name: str | None = None, mutable: bool = False) -> int:
    """An EValue holding a float32 tensor of 4 elements at ``data_index``, perhaps named, perhaps memory-planned."""
    sizes = builder.CreateNumpyVector(np.array([4], "<i4"))
    extra = allocation = 0
    if name is not None:
        text = builder.CreateString(name)
        builder.StartObject(5)
        builder.PrependUOffsetTRelativeSlot(1, text, 0)
        extra = builder.EndObject()
    if mutable:
        builder.StartObject(3)
        builder.PrependUint32Slot(0, 1, 0)
        allocation = builder.EndObject()
    builder.StartObject(10)
    builder.PrependUOffsetTRelativeSlot(2, sizes, 0)
    builder.PrependUint32Slot(5, data_index, 0)
    if allocation:
        builder.PrependUOffsetTRelativeSlot(6, allocation, 0)
    if extra:
        builder.PrependUOffsetTRelativeSlot(9, extra, 0)
    builder.PrependInt8Slot(0, 6, 0)  # FLOAT
    tensor = builder.EndObject()
    builder.StartObject(2)
    builder.PrependUOffsetTRelativeSlot(1, tensor, 0)
    builder.PrependUint8Slot(0, 5, 0)  # KernelTypes.Tensor
    return int(builder.EndObject())


def built_program(
    values: list[tuple[int, str | None, bool]], offsets: list[int], inline: list[bytes], segment: bytes
) -> bytes:
    """A program laid out by the flatbuffers package: one plan ``forward`` of ``values`` ((data index, name,
    mutable) each), the constant segment's ``offsets`` into ``segment`` (its one segment, after an ``eh00`` header
    inserted as ExecuTorch's ``_insert_flatbuffer_header`` does), and inline constant buffers."""
    import flatbuffers

    builder = flatbuffers.Builder(0)
    listed = offset_vector(builder, [_value(builder, *value) for value in values])
    name = builder.CreateString("forward")
    builder.StartObject(10)
    builder.PrependUOffsetTRelativeSlot(2, listed, 0)
    builder.PrependUOffsetTRelativeSlot(0, name, 0)
    plans = offset_vector(builder, [builder.EndObject()])
    storages = [builder.CreateByteVector(data) for data in inline]
    buffers = []
    for storage in storages:
        builder.StartObject(1)
        builder.PrependUOffsetTRelativeSlot(0, storage, 0)
        buffers.append(builder.EndObject())
    constant_buffer = offset_vector(builder, buffers)
    builder.StartVector(8, len(offsets), 8)
    for offset in reversed(offsets):
        builder.PrependUint64(offset)
    offsets_vector = builder.EndVector()
    builder.StartObject(2)
    builder.PrependUOffsetTRelativeSlot(1, offsets_vector, 0)
    constant_segment = builder.EndObject()
    builder.StartObject(2)
    builder.PrependUint64Slot(1, len(segment), 0)
    segments = offset_vector(builder, [builder.EndObject()])
    builder.StartObject(8)
    builder.PrependUOffsetTRelativeSlot(1, plans, 0)
    builder.PrependUOffsetTRelativeSlot(2, constant_buffer, 0)
    builder.PrependUOffsetTRelativeSlot(4, segments, 0)
    builder.PrependUOffsetTRelativeSlot(5, constant_segment, 0)
    builder.Finish(builder.EndObject(), file_identifier=b"ET12")
    flat = bytes(builder.Output())
    program_size = len(flat) + 32
    base = -(-program_size // 128) * 128
    header = struct.pack("<4sIQQQ", b"eh00", 32, program_size, base, len(segment))
    program = struct.pack("<I", struct.unpack_from("<I", flat)[0] + 32) + flat[4:8] + header + flat[8:]
    return program.ljust(base, b"\0") + segment


CASES: dict[str, Callable[[], bytes]] = {
    "TruncatedFileError--cut-after-the-identifier": lambda: MLP[:8],
    "TruncatedFileError--cut-inside-the-header": lambda: MLP[:20],
    "UnsupportedFormatError--another-schema-version-et11": lambda: MLP[:4] + b"ET11" + MLP[8:],
    "CorruptCheckpointError--eh00-length-below-24": lambda: _patched(MLP, 12, "<I", 16),
    "TruncatedFileError--eh00-length-past-the-end": lambda: _patched(MLP, 12, "<I", 2**31),
    "CorruptCheckpointError--program-size-past-the-end": lambda: _patched(MLP, 16, "<Q", len(MLP) + 1),
    "CorruptCheckpointError--segment-base-inside-the-program": lambda: _patched(MLP, 24, "<Q", 64),
    "TruncatedFileError--segment-data-past-the-end": lambda: _patched(MLP, 32, "<Q", 2**40),
    "TruncatedFileError--segments-cut-off": lambda: MLP[: struct.unpack_from("<Q", MLP, 24)[0] + 100],
    "TruncatedFileError--root-offset-past-the-end": lambda: _patched(MLP, 0, "<I", 2**30),
    "CorruptCheckpointError--root-vtable-at-its-own-table": lambda: _patched(
        MLP, struct.unpack_from("<I", MLP, 0)[0], "<i", 0
    ),
    "TruncatedFileError--segment-size-past-the-end": lambda: patched_field(
        lambda root: (root.tables(4, "segments")[0], 1, 8), "<Q", 2**40
    ),
    "CorruptCheckpointError--constant-segment-index-out-of-range": lambda: patched_field(
        lambda root: (tensor_of(root, 2), 5, 4), "<I", 99
    ),
    "TruncatedFileError--constant-offset-past-its-segment": lambda: _vector_element(
        lambda root: (_constant_segment(root), 1), 3, "<Q", 2**20
    ),
    "UnsupportedFormatError--sizes-2-31-squared": lambda: _huge_sizes(),
    "CorruptCheckpointError--negative-size": lambda: _vector_element(lambda root: (tensor_of(root, 1), 2), 0, "<i", -8),
    "CorruptCheckpointError--dim-order-not-a-permutation": lambda: _vector_element(
        lambda root: (tensor_of(root, 0), 3), 0, "<B", 1
    ),
    "CorruptCheckpointError--unknown-scalar-type": lambda: patched_field(
        lambda root: (tensor_of(root, 0), 0, 1), "<b", 99
    ),
    "CorruptCheckpointError--kernel-call-operator-out-of-range": lambda: patched_field(_second_call, "<i", 50),
    "LimitExceededError--one-plan-listed-4096-times": lambda: shared_plans(4096, 64),
    "CorruptCheckpointError--constants-both-inline-and-in-a-segment": lambda: built_program(
        [(1, None, False)], [0, 0], [b"", bytes(16)], bytes(16)
    ),
    "CorruptCheckpointError--two-tensors-of-one-name": lambda: built_program(
        [(1, "w", False), (2, "w", False)], [0, 0, 16], [], bytes(32)
    ),
    "CorruptCheckpointError--mutable-tensor-in-no-mutable-segment": lambda: built_program(
        [(1, "state", True)], [0, 0], [], bytes(16)
    ),
}


def _constant_segment(root: Table) -> Table:
    found = root.table(5, "constant_segment")
    assert found is not None
    return found


def _huge_sizes() -> bytes:
    """Both sizes of the first weight 2^31 - 1: 2^62 elements, past what numpy holds."""
    once = _vector_element(lambda root: (tensor_of(root, 0), 2), 0, "<i", 2**31 - 1)
    root = _root(once)
    found = tensor_of(root, 0).vector(2, 4, "sizes")
    assert found is not None
    return _patched(once, found[0] + 4, "<i", 2**31 - 1)


def _second_call(root: Table) -> tuple[Table, int, int]:
    """The second instruction's KernelCall (its op_index is 1: stored, not a default) and its op_index slot."""
    chain = root.tables(1, "plans")[0].tables(5, "chains")[0]
    call = chain.tables(2, "instructions")[1].table(1, "call")
    assert call is not None
    return call, 0, 4


def main() -> None:
    FOLDER.mkdir(exist_ok=True)
    for old in FOLDER.glob("*.pte"):
        old.unlink()
    for name, make in CASES.items():
        (FOLDER / f"{name}.pte").write_bytes(make())


if __name__ == "__main__":
    main()
