"""ExecuTorch programs (``.pte``): the constant tensors of every method, and where each one's bytes go.

Bytes (pytorch/executorch ``schema/program.fbs``, ``schema/scalar_type.fbs``, ``schema/extended_header.cpp`` and
``exir/_serialize/_program.py``), all little-endian:

- a FlatBuffer (``weightscope.flatbuffers``) whose root is a ``Program``: a uint32 offset to it, then the file
  identifier ``ET12`` at bytes 4..8 (a file saying ``ET`` and two other characters is of another schema version).
- optionally, the **extended header** right after the identifier, at byte 8: ``eh00``, a uint32 header length
  (at least 24; 32 now), uint64 ``program_size`` (the flatbuffer's bytes, header included), uint64
  ``segment_base_offset`` (where the segments start; 0 when there are none), and, when the length is 32 or more,
  uint64 ``segment_data_size``. The writer pads the header to the schema's largest alignment (32 bytes) and adds
  that to the root offset. Without the header the flatbuffer is the whole file and there are no segments.
- **segments** follow the flatbuffer, from ``segment_base_offset``: ``Program.segments`` (slot 4) lists each as
  ``DataSegment{offset (uint64), size (uint64)}``, the offset relative to ``segment_base_offset``.

``Program`` slots: version 0, ``execution_plan`` 1, ``constant_buffer`` 2 (``[Buffer{storage: [ubyte]}]``: the
constants inline, the only form before September 2024, which the 1.5 runtime is built to refuse; its index 0 is
reserved), ``backend_delegate_data`` 3
(``[BackendDelegateInlineData{data}]``), ``segments`` 4, ``constant_segment`` 5 (``SubsegmentOffsets{
segment_index (uint32), offsets: [uint64]}``: the constants' segment and each constant's offset in it; offsets[0] is
reserved), ``mutable_data_segments`` 6 (``[SubsegmentOffsets]``: initial values of tensors the program mutates),
``named_data`` 7 (``[NamedData{key, segment_index}]``: blobs a delegate finds by key). A program uses the constant
segment or the inline buffers, never both (the runtime refuses that).

``ExecutionPlan`` (one per method) slots: ``name`` 0, ``values`` 2 (``[EValue]``), ``chains`` 5 (``[Chain]``: its
``instructions``, slot 2), ``operators`` 6 (``[Operator{name, overload}]``), ``delegates`` 7 (``[BackendDelegate{id,
processed: BackendDelegateDataReference{location (0 inline, 1 segment), index}}]``). An ``EValue`` is a union (type
in slot 0, table in slot 1); type 5 is a ``Tensor``, whose slots are: ``scalar_type`` 0 (int8, the ``ScalarType``
codes of ``weightscope.dtypes.EXECUTORCH_SCALAR_TYPES``: c10's numbering, BYTE 0 … FLOAT 6, DOUBLE 7, the complex
types 8-10 that the .fbs comments out but the exporter writes, BOOL 11, BFLOAT16 15, FLOAT8E5M2 23, FLOAT8E4M3FN 24,
UINT16 27 …), ``storage_offset`` 1 (must be 0), ``sizes`` 2
(``[int32]``), ``dim_order`` 3 (``[uint8]``), ``data_buffer_idx`` 5 (uint32), ``allocation_info`` 6 (a table:
memory-planned), ``extra_tensor_info`` 9 (``ExtraTensorInfo{mutable_data_segments_idx (uint64) 0,
fully_qualified_name 1, location 2 (0 segment, 1 external)}``). An ``Instruction`` is a union (slot 0/1): type 1 a
``KernelCall{op_index, args: [int32]}``, 2 a ``DelegateCall{delegate_index, args}``; args index the plan's values.

Which tensors hold data, as the runtime's ``getTensorDataPtr`` decides: ``location`` external — the data is in a
``.ptd`` file under the tensor's ``fully_qualified_name``, which weightscope does not read (such tensors are named in
a note and in the size breakdown, not listed); else ``data_buffer_idx`` > 0 without ``allocation_info`` — a
constant, at ``constant_segment.offsets[data_buffer_idx]`` within its segment (or ``constant_buffer[data_buffer_idx]``
inline); ``data_buffer_idx`` > 0 with ``allocation_info`` — a mutable tensor's initial value, at
``offsets[data_buffer_idx]`` of ``mutable_data_segments[mutable_data_segments_idx]`` (the schema's rule; the 1.5
runtime reads segment 0 whatever the index, and exporters write one). Every other tensor (inputs,
activations, outputs) has no data in the file. A tensor's bytes are prod(sizes) × the element size, laid out in
``dim_order`` (outermost dimension first: (0, 2, 3, 1) is channels-last): weightscope gives the tensor in its logical
``sizes`` order, as the runtime's strides do, a strided view of the stored bytes (``TensorInfo.shape`` = sizes).
``shape_dynamism`` is not read: a tensor with data has its static sizes.

Names: a tensor's ``fully_qualified_name`` where the program records one (external constants, mutable buffers with
``emit_mutable_buffer_names``; the exporter records none for segment constants). Otherwise the program's operators
name it: each call of a convolution, linear (``addmm``/``mm``/``linear``), embedding, batch or layer norm kernel is
a layer ``<method>.<kind><N>`` (``forward.conv0``, ``forward.linear1``) and the constant it takes in a weight's
place is that layer's ``weight``, ``bias``, ``running_mean`` ... (``forward.linear0.weight``), following
``permute_copy`` back to the constant it transposed (``torch.nn.Linear`` exports as ``permute_copy`` + ``addmm``:
that constant is the [out, in] ``weight``; one taken untransposed is a [in, out] ``kernel``). Any other is
``<method>.values.<N>``: the execution plan's name (``plan<I>`` where it is empty or given twice) and the index of
the value in its ``values``, as the runtime indexes it; that name is an alias of every tensor named otherwise. All
are stable for a file. A constant several methods share (the same bytes, type and shape) is listed once, under its
first name; its others are aliases.

Delegated weights (XNNPACK and other backends) live in the delegate's blob (inline or in a segment) or in the
program's named data, in the backend's own layout: they are not tensors here; ``summary``'s size breakdown
(``ExecuTorchCheckpoint.size_breakdown``) counts their bytes per delegate and per named blob.

A reader must refuse (``CorruptCheckpointError``; ``TruncatedFileError`` for bytes past the end): a file of fewer
than 8 bytes or without ``ET12`` (another ``ET`` version: ``UnsupportedFormatError``); an extended header shorter
than 24 bytes or past the end of the file, a ``program_size`` smaller than the header or larger than the file, a
``segment_base_offset`` inside the flatbuffer or past the end, segments running past the end (or holding data with no
header); every flatbuffer fault ``weightscope.flatbuffers`` refuses (offsets out of range, vtables past the end,
visits over its cap); both a constant segment and inline constants; a ``data_buffer_idx``, ``segment_index`` or
``mutable_data_segments_idx`` out of range; a tensor whose bytes run past its segment or buffer; a negative size,
more than 16 dimensions, a ``dim_order`` that is not a permutation of its dimensions; an unknown scalar type
(known types with no numpy dtype — complex32, quint4x2, quint2x4, bits16 — are named in a note, not listed); a
``storage_offset`` other than 0 (``UnsupportedFormatError``, as the runtime); two different tensors of one name.
"""

from __future__ import annotations

import math
import os
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from weightscope.checkpoint import Extent, FileCheckpoint, Index, TensorInfo
from weightscope.containers.allow_list import ScanReport, nothing_named
from weightscope.dtypes import BY_EXECUTORCH, check_size, little_endian_dtype
from weightscope.errors import CorruptCheckpointError, TruncatedFileError, UnsupportedFormatError
from weightscope.flatbuffers import FlatBuffer, Table

IDENTIFIER = b"ET12"
HEADER_MAGIC = b"eh00"
HEADER_AT = 8
MIN_HEADER_LENGTH = 24  # magic, length, program_size, segment_base_offset
MAX_DIMS = 16  # the runtime's kTensorDimensionLimit
_HEADER = struct.Struct("<4sIQQ")
_U64 = struct.Struct("<Q")

# Slots of the tables read (their fields' ids in program.fbs; a union takes two).
PROGRAM_PLANS, PROGRAM_CONSTANT_BUFFER, PROGRAM_DELEGATE_DATA, PROGRAM_SEGMENTS = 1, 2, 3, 4
PROGRAM_CONSTANT_SEGMENT, PROGRAM_MUTABLE_SEGMENTS, PROGRAM_NAMED_DATA = 5, 6, 7
PLAN_NAME, PLAN_VALUES, PLAN_CHAINS, PLAN_OPERATORS, PLAN_DELEGATES = 0, 2, 5, 6, 7
TENSOR_VALUE = 5  # KernelTypes: NONE 0, Null, Int, Bool, Double, Tensor 5, ...
TENSOR_SCALAR_TYPE, TENSOR_STORAGE_OFFSET, TENSOR_SIZES, TENSOR_DIM_ORDER = 0, 1, 2, 3
TENSOR_DATA_BUFFER, TENSOR_ALLOCATION, TENSOR_EXTRA = 5, 6, 9
EXTRA_MUTABLE_SEGMENT, EXTRA_NAME, EXTRA_LOCATION = 0, 1, 2
EXTERNAL = 1  # TensorDataLocation
KERNEL_CALL, DELEGATE_CALL = 1, 2  # InstructionArguments
CHAIN_INSTRUCTIONS = 2
DELEGATE_SEGMENT = 1  # DataLocation: INLINE 0, SEGMENT 1


@dataclass(frozen=True)
class Header:
    """The extended header (``eh00``), or what a file without one implies (the flatbuffer is the file)."""

    program_size: int
    segment_base_offset: int
    segment_data_size: int
    length: int  # 0 when the file has none


class _Stored:
    """Where a program's stored data are: segments (file offset, size), the constants, mutable initial values."""

    def __init__(self, path: object, segments: list[tuple[int, int]]) -> None:
        self.path = path
        self.segments = segments
        self.constants: tuple[tuple[int, int], np.ndarray] | list[tuple[int, int]] = []
        self.mutable: list[tuple[tuple[int, int], np.ndarray] | None] = []

    def subsegment(self, table: Table | None, what: str) -> tuple[tuple[int, int], np.ndarray] | None:
        """A ``SubsegmentOffsets``: its segment's (file offset, size) and the offsets in it; None when it lists none."""
        offsets = None if table is None else table.scalars(1, "uint64", f"{what}'s offsets")
        if table is None or offsets is None or not len(offsets):
            return None
        number = table.integer(0, "uint32")
        if number >= len(self.segments):
            raise CorruptCheckpointError(f"{self.path}: {what} names segment {number} of {len(self.segments)}")
        return self.segments[number], offsets

    def locate(self, mutable: int | None, number: int, nbytes: int, what: str) -> tuple[int, tuple[int, ...]]:
        """The file offset of ``nbytes`` at ``data_buffer_idx`` ``number`` (of mutable data segment ``mutable``, or
        of the constants when None), and a key that is the same for the same stored bytes."""
        found = self.constants
        kind = "constant segment" if isinstance(found, tuple) else "constant buffers"
        if mutable is not None:
            kind = f"mutable data segment {mutable}"
            listed = self.mutable[mutable] if mutable < len(self.mutable) else None
            if listed is None:
                raise CorruptCheckpointError(f"{self.path}: {what} is in {kind}, which the program does not list")
            found = listed
        if isinstance(found, list):  # inline buffers: (position, length) each
            if number >= len(found):
                raise CorruptCheckpointError(f"{self.path}: {what}: constant buffer {number} of {len(found)}")
            start, length = found[number]
        else:
            (segment_start, segment_size), offsets = found
            if number >= len(offsets):
                raise CorruptCheckpointError(f"{self.path}: {what}: {kind} offset {number} of {len(offsets)}")
            start, length = segment_start + int(offsets[number]), segment_size - int(offsets[number])
        if nbytes > length:
            raise TruncatedFileError(
                f"{self.path}: {what}: {nbytes} bytes at {start} run past the end of its {kind} ({max(length, 0)} left)"
            )
        return start, (-1 if mutable is None else mutable, number)


def read_header(head: bytes | memoryview, size: int, where: object) -> Header:
    """The extended header in ``head`` (the file's first 40 bytes or all) of a ``size``-byte file; refused if faulty."""
    if size < HEADER_AT:
        raise TruncatedFileError(f"{where}: {size} bytes: an ExecuTorch program has at least 8 (root offset, ET12)")
    identifier = bytes(head[4:8])
    if identifier != IDENTIFIER:
        if identifier[:2] == b"ET":
            raise UnsupportedFormatError(f"{where}: ExecuTorch schema {identifier!r}; weightscope reads {IDENTIFIER!r}")
        raise CorruptCheckpointError(f"{where}: file identifier {identifier!r} at 4, expected {IDENTIFIER!r}")
    if bytes(head[HEADER_AT : HEADER_AT + 4]) != HEADER_MAGIC:
        return Header(size, 0, 0, 0)
    if len(head) < HEADER_AT + MIN_HEADER_LENGTH:
        raise TruncatedFileError(f"{where}: the extended header at 8 runs past the end of the {size}-byte file")
    _, length, program_size, base = _HEADER.unpack_from(head, HEADER_AT)
    if length < MIN_HEADER_LENGTH:
        raise CorruptCheckpointError(f"{where}: extended header length {length} at 12 (at least {MIN_HEADER_LENGTH})")
    if HEADER_AT + length > size:
        raise TruncatedFileError(f"{where}: the {length}-byte extended header at 8 runs past the {size}-byte file")
    data_size = _U64.unpack_from(head, HEADER_AT + 24)[0] if length >= 32 else 0
    if not HEADER_AT + length <= program_size <= size:
        raise CorruptCheckpointError(
            f"{where}: program_size {program_size} in the extended header: must hold the header and fit the "
            f"{size}-byte file"
        )
    if base and not program_size <= base <= size:
        raise CorruptCheckpointError(
            f"{where}: segment_base_offset {base}: must lie between the program's end ({program_size}) and the "
            f"file's ({size})"
        )
    if base and base + data_size > size:
        raise TruncatedFileError(f"{where}: {data_size} bytes of segments at {base} run past the {size}-byte file")
    return Header(program_size, base, data_size, length)


def _strides(sizes: tuple[int, ...], dim_order: tuple[int, ...]) -> tuple[int, ...] | None:
    """The element strides of a tensor of ``sizes`` stored in ``dim_order``; None for the default (C) order."""
    if dim_order == tuple(range(len(sizes))):
        return None
    strides = [0] * len(sizes)
    step = 1
    for dim in reversed(dim_order):
        strides[dim] = step
        step *= sizes[dim]
    return tuple(strides)


def _operator(table: Table, number: int) -> str:
    name = table.string(0, f"operators[{number}].name") or "?"
    overload = table.string(1, f"operators[{number}].overload")
    return f"{name}.{overload}" if overload else name


# The constants an operator takes by position, and what each is to the layer the call is (``_operator_roles``).
_WEIGHT_ARGS: dict[str, tuple[str, tuple[tuple[int, str], ...]]] = {
    "aten::convolution.out": ("conv", ((1, "weight"), (2, "bias"))),
    "aten::linear.out": ("linear", ((1, "weight"), (2, "bias"))),
    "aten::addmm.out": ("linear", ((2, "kernel"), (0, "bias"))),  # addmm(bias, input, mat2)
    "aten::mm.out": ("linear", ((1, "kernel"),)),
    "aten::embedding.out": ("embedding", ((0, "weight"),)),
    "aten::_native_batch_norm_legit_no_training.out": (
        "batch_norm",
        ((1, "weight"), (2, "bias"), (3, "running_mean"), (4, "running_var")),
    ),
    "aten::native_layer_norm.out": ("layer_norm", ((2, "weight"), (3, "bias"))),
}


def _operator_names(method: str, calls: list[tuple[str, list[int]]]) -> dict[int, str]:
    """Names for the values operators take as weights (``_WEIGHT_ARGS``), by value index: each call of one is a
    layer ``<method>.<kind><N>`` (``forward.conv0``), the value its role there (``forward.conv0.weight``); the first
    call taking a value names it. A weight reaching ``addmm``/``mm`` through ``permute_copy`` is a
    ``torch.nn.Linear`` weight [out, in] (``weight``), one taken as it is a kernel [in, out] (``kernel``)."""
    names: dict[int, str] = {}
    transposed: dict[int, int] = {}  # a value permute_copy made -> the value it was made of
    counts: Counter[str] = Counter()
    for operator, args in calls:
        if operator == "aten::permute_copy.out" and len(args) > 1:
            transposed[args[-1]] = args[0]
            continue
        if operator not in _WEIGHT_ARGS:
            continue
        kind, positions = _WEIGHT_ARGS[operator]
        layer = f"{method}.{kind}{counts[kind]}"
        counts[kind] += 1
        for position, role in positions:
            value = args[position] if position < len(args) else -1
            if value in transposed:
                value, role = transposed[value], "weight" if role == "kernel" else role
            names.setdefault(value, f"{layer}.{role}")
    return names


class ExecuTorchCheckpoint(FileCheckpoint):
    """A ``.pte`` program: its constant tensors (and mutable tensors' initial values) as read-only views."""

    format = "executorch"

    def _load(self) -> Index:
        size = self._source.size
        header = read_header(self._source.read(0, min(size, HEADER_AT + 32), "the header"), size, self.path)
        data = self._source.read(0, header.program_size, "the program flatbuffer")
        root = FlatBuffer(data, self.path, IDENTIFIER).root()
        stored = _Stored(self.path, self._segments(root, header))
        constant_segment = root.table(PROGRAM_CONSTANT_SEGMENT, "Program.constant_segment")
        segment = stored.subsegment(constant_segment, "the constant segment")
        buffers = root.tables(PROGRAM_CONSTANT_BUFFER, "Program.constant_buffer")
        if segment is not None and buffers:
            raise CorruptCheckpointError(
                f"{self.path}: constants both in a segment and inline ({len(buffers)} buffers): only one may be used"
            )
        layout = "segment" if segment is not None else "inline" if buffers else "none"
        stored.constants = segment or [
            buffer.extent(0, f"constant_buffer[{number}]") or (0, 0) for number, buffer in enumerate(buffers)
        ]
        stored.mutable = [
            stored.subsegment(table, f"mutable_data_segments[{number}]")
            for number, table in enumerate(root.tables(PROGRAM_MUTABLE_SEGMENTS, "Program.mutable_data_segments"))
        ]
        plans = root.tables(PROGRAM_PLANS, "Program.execution_plan")
        names = [plan.string(PLAN_NAME, f"execution_plan[{number}].name") or "" for number, plan in enumerate(plans)]
        counts = Counter(names)
        methods = [name if name and counts[name] == 1 else f"plan{number}" for number, name in enumerate(names)]
        self._strides: dict[str, tuple[int, ...]] = {}
        self._breakdown: dict[str, Any] = {
            "file_bytes": size,
            "program_bytes": header.program_size,
            "segment_bytes": header.segment_data_size,
            "constants": layout,
            "methods": methods,
        }
        self._calls: list[tuple[str, str, list[str]]] = []  # (method, operator, names of the tensors it takes)
        self._external: dict[str, TensorInfo] = {}
        self._delegates: list[dict[str, Any]] = []
        index = Index(metadata={"executorch.constants": layout, "executorch.methods": ", ".join(methods)})
        listed: dict[tuple[Any, ...], str] = {}
        delegate_data = [
            table.extent(0, f"backend_delegate_data[{n}]")
            for n, table in enumerate(root.tables(PROGRAM_DELEGATE_DATA, "Program.backend_delegate_data"))
        ]
        for method, plan in zip(methods, plans, strict=True):
            calls = self._plan_calls(method, plan, self._plan_delegates(method, plan, stored.segments, delegate_data))
            taken = self._plan_tensors(method, plan, stored, index, listed, _operator_names(method, calls))
            for operator, args in calls:
                self._calls.append((method, operator, list(dict.fromkeys(taken[a] for a in args if a in taken))))
        self._breakdown["named_data"] = [
            {"key": key, "bytes": stored.segments[number][1]} for key, number in self._named_data(root, stored)
        ]
        self._note_unread()
        return index

    def _segments(self, root: Table, header: Header) -> list[tuple[int, int]]:
        """Each segment's (file offset, size), all inside the file."""
        found = []
        for number, table in enumerate(root.tables(PROGRAM_SEGMENTS, "Program.segments")):
            offset, length = table.integer(0, "uint64"), table.integer(1, "uint64")
            if length and not header.segment_base_offset:  # empty ones are written so (external constants)
                raise CorruptCheckpointError(
                    f"{self.path}: segment {number} holds data, but no extended header places it"
                )
            start = header.segment_base_offset + offset
            if start + length > self._source.size:
                raise TruncatedFileError(
                    f"{self.path}: segment {number} (bytes {start}..{start + length}) runs past the end of the "
                    f"{self._source.size}-byte file"
                )
            found.append((start, length))
        return found

    def _named_data(self, root: Table, stored: _Stored) -> Iterator[tuple[str, int]]:
        for number, table in enumerate(root.tables(PROGRAM_NAMED_DATA, "Program.named_data")):
            key = table.string(0, f"named_data[{number}].key") or ""
            segment = table.integer(1, "uint32")
            if segment >= len(stored.segments):
                raise CorruptCheckpointError(
                    f"{self.path}: named data '{key}' names segment {segment} of {len(stored.segments)}"
                )
            yield key, segment

    # -- tensors -------------------------------------------------------------------------
    def _plan_tensors(
        self,
        method: str,
        plan: Table,
        stored: _Stored,
        index: Index,
        listed: dict[tuple[Any, ...], str],
        derived: dict[int, str],
    ) -> dict[int, str]:
        """List the plan's tensors that hold data (named as ``derived`` says where no name is recorded); their names
        by value index (external ones too)."""
        taken: dict[int, str] = {}
        for number, value in enumerate(plan.tables(PLAN_VALUES, f"{method}.values")):
            if value.integer(0, "uint8") != TENSOR_VALUE:
                continue
            tensor = value.table(1, f"{method}.values[{number}]")
            if tensor is not None:
                name = self._tensor(method, number, tensor, stored, index, listed, derived.get(number))
                if name is not None:
                    taken[number] = name
        return taken

    def _tensor(
        self,
        method: str,
        number: int,
        tensor: Table,
        stored: _Stored,
        index: Index,
        listed: dict[tuple[Any, ...], str],
        derived: str | None,
    ) -> str | None:
        """The name tensor ``number`` of ``method`` is listed (or noted) under: its recorded name, else ``derived``,
        else ``<method>.values.<N>`` (which names it too, as an alias); None when it holds no data."""
        what = f"tensor {method}.values[{number}]"
        extra = tensor.table(TENSOR_EXTRA, f"{what}.extra_tensor_info")
        recorded = None if extra is None else extra.string(EXTRA_NAME, f"{what}'s name")
        external = extra is not None and extra.integer(EXTRA_LOCATION, "int8") == EXTERNAL
        data_index = tensor.integer(TENSOR_DATA_BUFFER, "uint32")
        if data_index == 0 and not external:
            return None
        by_index = f"{method}.values.{number}"
        name = recorded or derived or by_index
        what = f"tensor '{name}'"
        code = tensor.integer(TENSOR_SCALAR_TYPE, "int8")
        element = BY_EXECUTORCH.get(code)
        if element is None:
            raise CorruptCheckpointError(f"{self.path}: {what} has unknown scalar type {code}")
        sizes, dim_order = self._shape(tensor, what)
        if tensor.integer(TENSOR_STORAGE_OFFSET, "int32"):
            raise UnsupportedFormatError(f"{self.path}: {what} has a storage_offset (the runtime reads only 0)")
        if element.dtype is None:
            self._notes.append(f"{what} of type {element.name} not listed: no numpy type holds it")
            return None
        nbytes = math.prod(sizes) * element.dtype.itemsize
        check_size(sizes, element.dtype.itemsize, f"{self.path}: {what}")
        if external:
            if recorded is None:
                raise CorruptCheckpointError(f"{self.path}: {what} is external but has no name to find it by")
            self._external[name] = TensorInfo(name, element.dtype, sizes, nbytes, element.name, "", -1, name)
            return name
        mutable = None  # a constant; else the mutable data segment holding its initial value
        if tensor.has(TENSOR_ALLOCATION):
            mutable = 0 if extra is None else extra.integer(EXTRA_MUTABLE_SEGMENT, "uint64")
        offset, where = stored.locate(mutable, data_index, nbytes, what)
        key = (where, code, sizes, dim_order)
        if key not in listed:
            if name in index.infos:
                raise CorruptCheckpointError(f"{self.path}: two different tensors are named '{name}'")
            listed[key] = name
            index.infos[name] = TensorInfo(
                name, element.dtype, sizes, nbytes, element.name, str(self.path), offset, name
            )
            strides = _strides(sizes, dim_order)
            if strides is not None:
                self._strides[name] = strides
        for alias in {name, by_index} - {listed[key]}:
            index.aliases[alias] = listed[key]
        return listed[key]

    def _shape(self, tensor: Table, what: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The tensor's sizes and dim order (the default order where none is stored), both checked."""
        found = tensor.scalars(TENSOR_SIZES, "int32", f"{what}'s sizes")
        sizes = () if found is None else tuple(int(size) for size in found[: MAX_DIMS + 1])
        if len(sizes) > MAX_DIMS or any(size < 0 for size in sizes):
            raise CorruptCheckpointError(
                f"{self.path}: {what} has sizes {list(sizes)[:MAX_DIMS]} (0..{MAX_DIMS} dimensions, none negative)"
            )
        order = tensor.scalars(TENSOR_DIM_ORDER, "uint8", f"{what}'s dim_order")
        dim_order = tuple(range(len(sizes))) if order is None or not len(order) else tuple(int(d) for d in order)
        if sorted(dim_order) != list(range(len(sizes))):
            raise CorruptCheckpointError(
                f"{self.path}: {what} has dim_order {list(dim_order)}, no order of its {len(sizes)} dimensions"
            )
        return sizes, dim_order

    def _extent(self, info: TensorInfo) -> Extent:
        return Extent(
            info.file, info.offset, info.nbytes, little_endian_dtype(info.dtype), self._strides.get(info.name)
        )

    # -- what the program does with them ---------------------------------------------------
    def _plan_delegates(
        self, method: str, plan: Table, segments: list[tuple[int, int]], delegate_data: list[tuple[int, int] | None]
    ) -> list[str]:
        """Record each delegate's blob bytes; their labels, as calls name them."""
        labels = []
        for number, table in enumerate(plan.tables(PLAN_DELEGATES, f"{method}.delegates")):
            backend = table.string(0, f"{method}.delegates[{number}].id") or "?"
            reference = table.table(1, f"{method}.delegates[{number}].processed")
            location = 0 if reference is None else reference.integer(0, "int8")
            at = 0 if reference is None else reference.integer(1, "uint32")
            blobs: list[Any] = segments if location == DELEGATE_SEGMENT else delegate_data
            if at >= len(blobs):
                raise CorruptCheckpointError(
                    f"{self.path}: delegate '{backend}' of {method} names blob {at} of {len(blobs)}"
                )
            where = "segment" if location == DELEGATE_SEGMENT else "inline"
            bytes_ = 0 if blobs[at] is None else blobs[at][1]
            self._delegates.append({"method": method, "id": backend, "location": where, "bytes": bytes_})
            labels.append(f"delegate {backend}")
        return labels

    def _plan_calls(self, method: str, plan: Table, delegates: list[str]) -> list[tuple[str, list[int]]]:
        """Each kernel or delegate call of the plan: what it calls (an operator, a delegate) and its args."""
        operators = [_operator(table, n) for n, table in enumerate(plan.tables(PLAN_OPERATORS, f"{method}.operators"))]
        calls = []
        for chain_number, chain in enumerate(plan.tables(PLAN_CHAINS, f"{method}.chains")):
            instructions = chain.tables(CHAIN_INSTRUCTIONS, f"{method}.chains[{chain_number}].instructions")
            for number, instruction in enumerate(instructions):
                kind = instruction.integer(0, "uint8")
                call = (
                    instruction.table(1, f"{method} instruction {number}")
                    if kind in (KERNEL_CALL, DELEGATE_CALL)
                    else None
                )
                if call is None:
                    continue
                targets = operators if kind == KERNEL_CALL else delegates
                target = call.integer(0, "int32")
                if not 0 <= target < len(targets):
                    raise CorruptCheckpointError(
                        f"{self.path}: {method} instruction {number} calls {target} of {len(targets)}"
                    )
                args = call.scalars(1, "int32", f"{method} instruction {number}'s args")
                calls.append((targets[target], [] if args is None else args.tolist()))
        return calls

    def _note_unread(self) -> None:
        if self._external:
            shown = ", ".join(list(self._external)[:4]) + (", ..." if len(self._external) > 4 else "")
            self._notes.append(f"{len(self._external)} tensors' data lie in an external .ptd file, not read: {shown}")
        delegated = sum(entry["bytes"] for entry in self._delegates)
        if delegated:
            backends = ", ".join(sorted({entry["id"] for entry in self._delegates}))
            named = sum(entry["bytes"] for entry in self._breakdown["named_data"])
            self._notes.append(
                f"{delegated + named:,} bytes of delegate data ({backends}): weights in the backends' own layout, "
                "not listed as tensors (summary's size breakdown counts them)"
            )

    def size_breakdown(self) -> dict[str, Any]:
        """Where the program's bytes go (``summary --json``'s ``size_breakdown``)::

            {"file_bytes", "program_bytes" (the flatbuffer, header included), "segment_bytes": int,
             "constants": "segment" | "inline" | "none", "methods": [str],
             "totals": {"tensor_bytes", "external_bytes", "delegate_bytes", "named_data_bytes",
                        "unused_tensor_bytes" (tensors no call takes): int},
             "tensors": [{"name", "dtype", "shape", "bytes", "where": "program" | "external",
                          "operators": [the operators and delegates taking it]}],     # largest first
             "operators": [{"operator": "aten::addmm.out" | "delegate <id>", "calls": int,
                            "tensors": [names], "bytes": the bytes of those tensors}],  # largest first
             "delegates": [{"method", "id", "location": "segment" | "inline", "bytes"}],
             "named_data": [{"key", "bytes"}]}

        A tensor several operators take counts in each one's bytes; a delegate's weights are in its blob or in
        named data, which no call names."""
        users: dict[str, list[str]] = {}
        by_operator: dict[str, dict[str, Any]] = {}
        for _method, operator, names in self._calls:
            entry = by_operator.setdefault(operator, {"operator": operator, "calls": 0, "tensors": []})
            entry["calls"] += 1
            for name in names:
                users.setdefault(name, [])
                if operator not in users[name]:
                    users[name].append(operator)
                if name not in entry["tensors"]:
                    entry["tensors"].append(name)
        infos = {**self.by_name(), **self._external}
        tensors = [
            {
                "name": info.name,
                "dtype": info.type_name,
                "shape": list(info.shape),
                "bytes": info.nbytes,
                "where": "external" if info.name in self._external else "program",
                "operators": users.get(info.name, []),
            }
            for info in infos.values()
        ]
        for entry in by_operator.values():
            entry["bytes"] = sum(infos[name].nbytes for name in entry["tensors"])
        in_file = sum(info.nbytes for info in self.by_name().values())
        delegated = sum(entry["bytes"] for entry in self._delegates)
        named = sum(entry["bytes"] for entry in self._breakdown["named_data"])
        return {
            **self._breakdown,
            "totals": {
                "tensor_bytes": in_file,
                "external_bytes": sum(info.nbytes for info in self._external.values()),
                "delegate_bytes": delegated,
                "named_data_bytes": named,
                "unused_tensor_bytes": sum(info.nbytes for name, info in self.by_name().items() if name not in users),
            },
            "tensors": sorted(tensors, key=lambda entry: (-entry["bytes"], entry["name"])),
            "operators": sorted(by_operator.values(), key=lambda entry: (-entry["bytes"], entry["operator"])),
            "delegates": list(self._delegates),
        }


def scan(path: str | os.PathLike[str]) -> ScanReport:
    """``weightscope scan``: a program names operators by name (run by the runtime's kernels), never Python code;
    nothing is listed, the verdict is what opening it raises."""
    return nothing_named(ExecuTorchCheckpoint, path)
