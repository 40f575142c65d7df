"""The generic flatbuffer reader, against buffers built by the ``flatbuffers`` package's own Builder (the oracle).

Every table here is laid out by flatbuffers' Builder (vtables shared and deduplicated, defaults omitted,
alignment padding as real writers make it); hostile buffers are those same bytes cut or patched.
"""

from __future__ import annotations

import contextlib
import struct

import flatbuffers
import numpy as np
import pytest
from corpus.flatbuffer_vectors import offset_vector
from flatbuffers import number_types, table

from weightscope.errors import CorruptCheckpointError, LimitExceededError, TruncatedFileError, WeightscopeError
from weightscope.flatbuffers import MAX_DEPTH, FlatBuffer, Table

IDENTIFIER = b"TEST"


def _child(builder: flatbuffers.Builder, name: str, value: int) -> int:
    text = builder.CreateString(name)
    builder.StartObject(2)
    builder.PrependUOffsetTRelativeSlot(0, text, 0)
    builder.PrependInt64Slot(1, value, 0)
    return int(builder.EndObject())


def _sample() -> bytes:
    """A root table with every kind of field: slots 0-12 (slot 7 and 8 a union)."""
    builder = flatbuffers.Builder(0)
    children = [_child(builder, f"child {i}", 10**12 + i) for i in range(3)]
    shared = _child(builder, "shared", -5)
    union_value = _child(builder, "in a union", 7)
    name = builder.CreateString("root ünïcode")
    floats = builder.CreateNumpyVector(np.array([1.5, -2.25, 3e38], dtype=np.float32))
    raw = builder.CreateByteVector(bytes(range(40)))
    words = [builder.CreateString(word) for word in ("alpha", "", "gamma")]
    strings = offset_vector(builder, words)
    tables = offset_vector(builder, [*children, shared, shared])
    builder.StartObject(13)
    builder.PrependInt32Slot(0, -123456, 0)
    builder.PrependUint8Slot(1, 200, 0)
    builder.PrependFloat32Slot(2, 0.5, 0.0)
    builder.PrependUint64Slot(3, 2**63 + 5, 0)
    builder.PrependInt16Slot(4, 77, 77)  # equal to its default: the Builder leaves it out
    builder.PrependUOffsetTRelativeSlot(5, name, 0)
    builder.PrependUOffsetTRelativeSlot(6, floats, 0)
    builder.PrependUint8Slot(7, 3, 0)
    builder.PrependUOffsetTRelativeSlot(8, union_value, 0)
    builder.PrependUOffsetTRelativeSlot(9, raw, 0)
    builder.PrependUOffsetTRelativeSlot(10, strings, 0)
    builder.PrependUOffsetTRelativeSlot(11, tables, 0)
    builder.PrependStructSlot(12, _struct(builder), 0)  # a struct is written inline, as the slot is added
    builder.Finish(builder.EndObject(), file_identifier=IDENTIFIER)
    return bytes(builder.Output())


def _struct(builder: flatbuffers.Builder) -> int:
    builder.Prep(8, 16)
    builder.PrependFloat64(2.5)
    builder.PrependInt32(-9)
    builder.Pad(4)
    return int(builder.Offset())


def _root(data: bytes) -> Table:
    return FlatBuffer(data, "sample", IDENTIFIER).root()


def test_every_field_kind_reads_as_the_builder_wrote_it() -> None:
    root = _root(_sample())
    assert root.integer(0, "int32") == -123456
    assert root.integer(1, "uint8") == 200
    assert root.scalar(2, "float32", 0.0) == 0.5
    assert root.integer(3, "uint64") == 2**63 + 5
    assert not root.has(4) and root.integer(4, "int16", 77) == 77
    assert root.string(5, "name") == "root ünïcode"
    floats = root.scalars(6, "float32", "floats")
    assert floats is not None and floats.tolist() == np.array([1.5, -2.25, 3e38], np.float32).tolist()
    kind, member = root.union(7, "union")
    assert kind == 3 and member is not None and member.string(0, "name") == "in a union"
    extent = root.extent(9, "raw")
    assert extent is not None and bytes(_sample()[extent[0] : extent[0] + extent[1]]) == bytes(range(40))
    assert root.strings(10, "words") == ["alpha", "", "gamma"]
    children = root.tables(11, "children")
    assert [child.string(0, "name") for child in children] == ["child 0", "child 1", "child 2", "shared", "shared"]
    assert [child.integer(1, "int64") for child in children] == [10**12, 10**12 + 1, 10**12 + 2, -5, -5]
    where = root.struct(12, 16)
    assert where is not None and struct.unpack_from("<4xid", _sample(), where) == (-9, 2.5)
    assert root.table(40, "absent") is None and root.scalars(40, "int8", "absent") is None
    assert root.tables(40, "absent") == [] and root.union(40, "absent") == (0, None)


def test_positions_agree_with_the_flatbuffers_package_reader() -> None:
    data = _sample()
    position = flatbuffers.encode.Get(number_types.UOffsetTFlags.packer_type, data, 0)
    oracle = table.Table(bytearray(data), position)
    root = _root(data)
    for slot in range(14):
        offset = oracle.Offset(4 + 2 * slot)
        assert root.field(slot, 0) == (position + offset if offset else None)
    assert root.string(5, "name") == oracle.String(position + oracle.Offset(14)).decode()
    assert root.vector(6, 4, "floats") == (oracle.Vector(oracle.Offset(16)), oracle.VectorLen(oracle.Offset(16)))


def test_a_wrong_or_missing_identifier_is_refused_only_when_one_is_required() -> None:
    data = _sample()
    assert FlatBuffer(data, "x").identifier == IDENTIFIER
    with pytest.raises(CorruptCheckpointError, match=r"identifier b'TEST' at 4, expected b'TFL3'"):
        FlatBuffer(data, "x", b"TFL3")
    with pytest.raises(TruncatedFileError, match="at least 8"):
        FlatBuffer(data[:7], "x")


def _read_everything(data: bytes) -> None:
    root = _root(data)
    root.string(5, "name")
    root.scalars(6, "float32", "floats")
    root.union(7, "union")
    root.strings(10, "words")
    for child in root.tables(11, "children"):
        child.string(0, "name")
        child.integer(1, "int64")
    root.struct(12, 16)


def test_every_cut_of_the_buffer_is_a_typed_error_naming_an_offset() -> None:
    data = _sample()
    for length in range(8, len(data)):
        try:
            _read_everything(data[:length])
        except (TruncatedFileError, CorruptCheckpointError) as error:
            assert " at " in str(error)


def test_every_flipped_byte_reads_or_is_a_typed_error() -> None:
    data = _sample()
    for position in range(len(data)):
        for value in (0x00, 0x7F, 0x80, 0xFF):
            patched = bytearray(data)
            patched[position] = value
            with contextlib.suppress(WeightscopeError):
                _read_everything(bytes(patched))


def _patched(data: bytes, position: int, code: str, value: int) -> bytes:
    patched = bytearray(data)
    struct.pack_into(code, patched, position, value)
    return bytes(patched)


def test_offsets_and_vtables_out_of_range_are_refused_with_their_positions() -> None:
    data = _sample()
    root = _root(data)
    name_field = root.field(5, 4)
    assert name_field is not None
    with pytest.raises(CorruptCheckpointError, match=rf"name at {name_field}: offset 0"):
        _root(_patched(data, name_field, "<I", 0)).string(5, "name")
    past = rf"name at {name_field}: offset {len(data)} points to {name_field + len(data)}, past the end"
    with pytest.raises(TruncatedFileError, match=past):
        _root(_patched(data, name_field, "<I", len(data))).string(5, "name")
    with pytest.raises(CorruptCheckpointError, match="offset 2147483648"):
        _root(_patched(data, name_field, "<I", 1 << 31)).string(5, "name")
    with pytest.raises(CorruptCheckpointError, match=r"vtable at \d+: size 5"):
        _root(_patched(data, root.vtable, "<H", 5))
    with pytest.raises(TruncatedFileError, match="vtable"):
        _root(_patched(data, root.position, "<i", -len(data)))
    with pytest.raises(CorruptCheckpointError, match=r"inline size 3 \(>= 4\)"):
        _root(_patched(data, root.vtable + 2, "<H", 3))
    with pytest.raises(CorruptCheckpointError, match=r"field 5 at \+\d+ \(4 bytes\) outside its 4-byte"):
        _root(_patched(data, root.vtable + 2, "<H", 4)).string(5, "name")
    name = root.buffer.follow(name_field, "name")
    length = struct.unpack_from("<I", data, name)[0]
    with pytest.raises(CorruptCheckpointError, match="no NUL"):
        _root(_patched(data, name + 4 + length, "<B", 0x41)).string(5, "name")


def test_shared_tables_cannot_multiply_the_work_past_the_visit_cap() -> None:
    """A vector of N offsets to one table, under each of N parents: N^2 visits from O(N) bytes."""
    builder = flatbuffers.Builder(0)
    leaf = _child(builder, "leaf", 1)
    count = 3000
    leaves = offset_vector(builder, [leaf] * count)
    builder.StartObject(1)
    builder.PrependUOffsetTRelativeSlot(0, leaves, 0)
    middle = builder.EndObject()
    middles = offset_vector(builder, [middle] * count)
    builder.StartObject(1)
    builder.PrependUOffsetTRelativeSlot(0, middles, 0)
    builder.Finish(builder.EndObject())
    data = bytes(builder.Output())
    root = FlatBuffer(data, "shared").root()
    with pytest.raises(LimitExceededError, match="flatbuffer visits, over the cap"):
        for parent in root.tables(0, "middles"):
            parent.tables(0, "leaves")


def test_tables_nested_deeper_than_the_cap_are_refused() -> None:
    builder = flatbuffers.Builder(0)
    inner = 0
    for level in range(MAX_DEPTH + 5):
        builder.StartObject(1)
        if level:
            builder.PrependUOffsetTRelativeSlot(0, inner, 0)
        inner = builder.EndObject()
    builder.Finish(inner)
    node: Table | None = FlatBuffer(bytes(builder.Output()), "deep").root()
    with pytest.raises(CorruptCheckpointError, match=f"nest over {MAX_DEPTH} deep"):
        while node is not None:
            node = node.table(0, "next")
