"""A safe reader of FlatBuffers tables, for the formats built on them (TFLite, ExecuTorch).

Bytes (``flatbuffers/include/flatbuffers/verifier.h`` and the format's own docs): all
little-endian. The buffer starts with a ``uoffset`` (uint32) to the root table, then an
optional 4-byte file identifier (``TFL3``, ``ET12``). Every ``uoffset`` is relative to
where it is stored and points forward.

- **Table** at position ``t``: an ``soffset`` (int32) ``s`` at ``t``; its vtable is at
  ``t - s`` (before or after the table). The vtable is uint16s: its own size in bytes
  (4 + 2 per slot, even), the table's inline size in bytes (at least the 4 of ``s``),
  then one entry per field slot: the field's offset from ``t``, 0 when the field is absent
  (the reader then uses the schema's default). Slots past the vtable's end are absent too
  (an old writer that did not know the field).
- **Scalars** sit inline in the table; **structs** too (fixed size, by value).
- **Offset fields** (tables, vectors, strings, union values) hold a ``uoffset`` to the
  object, from the field's own position.
- **Vector**: a uint32 element count, then the elements (scalars or structs by value,
  tables and strings by ``uoffset`` from each element's position).
- **String**: a vector of bytes followed by a NUL that the count does not include.
- **Union** field ``u`` takes two slots: its type (a ubyte, 0 = none) in slot ``i`` and the
  value (an offset to a table) in slot ``i + 1``.

This reader is schema-driven by its caller: it only follows the offsets the caller asks for,
so a file cannot make it recurse on its own, and as ``uoffset``s only point forward no chain of
them loops (a vtable's ``soffset`` may point anywhere, but a vtable points to nothing). Every
position is checked with Python ints before it is read, and the work a file can cause is
capped: each table opened and each vector element listed is one visit, and a buffer allows
``max(4096, len / 2)`` visits (a vector of a million offsets to one shared table, asked for
again under each of a million parents, would be 10^12 visits otherwise); tables nest at most
``MAX_DEPTH`` deep.

A reader must refuse (``CorruptCheckpointError``, ``TruncatedFileError`` for positions past
the end, each naming the offset): a buffer smaller than 8 bytes, a missing or wrong file
identifier when one is required, an offset of 0 or of 2^31 and more, any object or vtable
extending past the end of the buffer, a vtable whose size is odd or below 4, a table's
inline size below 4, a field whose bytes lie outside its table's inline size, a string
without its NUL, and more visits than the cap (``LimitExceededError``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from weightscope.errors import CorruptCheckpointError, LimitExceededError, TruncatedFileError

Buffer = bytes | bytearray | memoryview
"""What a reader walks: any object with the buffer protocol (``mmap`` too) — typed as the common ones."""

MAX_DEPTH = 64
MIN_VISITS = 4096
_OFFSET_LIMIT = 1 << 31  # uoffsets are read as uint32 but must be below 2^31 (flatbuffers' verifier)
_SCALAR = {
    "bool": "<?",
    "int8": "<b",
    "uint8": "<B",
    "int16": "<h",
    "uint16": "<H",
    "int32": "<i",
    "uint32": "<I",
    "int64": "<q",
    "uint64": "<Q",
    "float32": "<f",
    "float64": "<d",
}
"""Scalar kinds by their schema names, as ``struct`` formats."""

_T = TypeVar("_T")


class FlatBuffer:
    """One flatbuffer over ``data`` (bytes, memoryview, mmap), bounds and visits checked; ``where`` names it."""

    def __init__(
        self, data: Buffer, where: object, identifier: bytes | None = None, max_visits: int | None = None
    ) -> None:
        self.data = memoryview(data).cast("B")
        self.size = len(self.data)
        self.where = where
        self.visits = 0
        self.max_visits = max(MIN_VISITS, self.size // 2) if max_visits is None else max_visits
        if self.size < 8:
            raise TruncatedFileError(f"{where}: a flatbuffer of {self.size} bytes: needs at least 8 (root offset, id)")
        if identifier is not None and bytes(self.data[4:8]) != identifier:
            found = bytes(self.data[4:8])
            raise CorruptCheckpointError(f"{where}: file identifier {found!r} at 4, expected {identifier!r}")

    @property
    def identifier(self) -> bytes:
        """The 4 bytes where a file identifier would be (whatever they hold)."""
        return bytes(self.data[4:8])

    def root(self) -> Table:
        """The root table."""
        return self.table_at(self.follow(0, "root offset"), "root table", 0)

    def check(self, position: int, length: int, what: str) -> None:
        """Refuse ``length`` bytes at ``position`` unless they lie inside the buffer."""
        if position < 0 or length < 0:
            raise CorruptCheckpointError(f"{self.where}: {what} at {position}: negative position or length {length}")
        if position + length > self.size:
            raise TruncatedFileError(
                f"{self.where}: {what} at {position}: {length} bytes run past the end of the {self.size}-byte buffer"
            )

    def scalar(self, position: int, kind: str, what: str) -> int | float | bool:
        """The scalar of ``kind`` (a schema name: ``int32``, ``float32`` ...) at ``position``."""
        code = _SCALAR[kind]
        self.check(position, struct.calcsize(code), what)
        value: int | float | bool = struct.unpack_from(code, self.data, position)[0]
        return value

    def follow(self, position: int, what: str) -> int:
        """Where the ``uoffset`` stored at ``position`` points."""
        offset = int(self.scalar(position, "uint32", what))
        if offset == 0 or offset >= _OFFSET_LIMIT:
            raise CorruptCheckpointError(f"{self.where}: {what} at {position}: offset {offset} (must be 1 .. 2^31-1)")
        target = position + offset
        if target + 4 > self.size:
            raise TruncatedFileError(
                f"{self.where}: {what} at {position}: offset {offset} points to {target}, "
                f"past the end of the {self.size}-byte buffer"
            )
        return target

    def visit(self, count: int, what: str) -> None:
        """Charge ``count`` visits for ``what``; refuse past the cap."""
        self.visits += count
        if self.visits > self.max_visits:
            raise LimitExceededError(
                f"{self.where}: reading {what} makes {self.visits:,} flatbuffer visits, over the cap of "
                f"{self.max_visits:,} for a {self.size:,}-byte buffer (shared or looping offsets?)"
            )

    def table_at(self, position: int, what: str, depth: int) -> Table:
        """The table at ``position`` (its vtable checked), nested ``depth`` tables below the root."""
        if depth > MAX_DEPTH:
            raise CorruptCheckpointError(f"{self.where}: {what} at {position}: tables nest over {MAX_DEPTH} deep")
        self.visit(1, what)
        back = int(self.scalar(position, "int32", f"{what}'s vtable offset"))
        vtable = position - back
        self.check(vtable, 4, f"{what}'s vtable")
        vtable_size, table_size = struct.unpack_from("<HH", self.data, vtable)
        if vtable_size < 4 or vtable_size % 2:
            raise CorruptCheckpointError(f"{self.where}: {what}'s vtable at {vtable}: size {vtable_size} (even, >= 4)")
        self.check(vtable, vtable_size, f"{what}'s vtable")
        if table_size < 4:
            raise CorruptCheckpointError(f"{self.where}: {what} at {position}: inline size {table_size} (>= 4)")
        self.check(position, table_size, what)
        return Table(self, position, vtable, vtable_size, table_size, what, depth)

    def vector_at(self, position: int, element_size: int, what: str) -> tuple[int, int]:
        """The vector at ``position``: (where its elements start, their count), all its bytes in the buffer."""
        count = int(self.scalar(position, "uint32", f"{what}'s length"))
        self.check(position + 4, count * element_size, what)
        return position + 4, count

    def string_at(self, position: int, what: str) -> str:
        """The string at ``position`` (UTF-8; undecodable bytes replaced)."""
        start, length = self.vector_at(position, 1, what)
        self.check(start + length, 1, f"{what}'s NUL")
        if self.data[start + length] != 0:
            raise CorruptCheckpointError(f"{self.where}: {what} at {position}: no NUL after its {length} bytes")
        return bytes(self.data[start : start + length]).decode("utf-8", "replace")


class Table:
    """One table: fields by slot number (the ``id`` in declaration order; a union takes two)."""

    __slots__ = ("buffer", "depth", "position", "size", "vtable", "vtable_size", "what")

    def __init__(
        self, buffer: FlatBuffer, position: int, vtable: int, vtable_size: int, size: int, what: str, depth: int
    ) -> None:
        self.buffer = buffer
        self.position = position
        self.vtable = vtable
        self.vtable_size = vtable_size
        self.size = size
        self.what = what
        self.depth = depth

    def field(self, slot: int, width: int) -> int | None:
        """Where slot ``slot``'s ``width`` inline bytes are, or None when the field is absent."""
        entry = 4 + 2 * slot
        if slot < 0 or entry + 2 > self.vtable_size:
            return None
        offset = struct.unpack_from("<H", self.buffer.data, self.vtable + entry)[0]
        if offset == 0:
            return None
        if offset + width > self.size:
            raise CorruptCheckpointError(
                f"{self.buffer.where}: {self.what} at {self.position}: field {slot} at +{offset} ({width} bytes) "
                f"outside its {self.size}-byte table"
            )
        return self.position + offset

    def has(self, slot: int) -> bool:
        """Whether slot ``slot`` is present (``has_rank``-style questions; presence of offsets)."""
        return self.field(slot, 0) is not None

    def scalar(self, slot: int, kind: str, default: _T) -> int | float | bool | _T:
        """Slot ``slot`` as a scalar of ``kind`` (``int8`` ... ``float64``, ``bool``), or ``default`` when absent."""
        position = self.field(slot, struct.calcsize(_SCALAR[kind]))
        if position is None:
            return default
        return self.buffer.scalar(position, kind, f"{self.what} field {slot}")

    def integer(self, slot: int, kind: str, default: int = 0) -> int:
        """Slot ``slot`` as an integer scalar (``int8`` ... ``uint64``, ``bool``)."""
        return int(self.scalar(slot, kind, default))

    def _target(self, slot: int, what: str) -> int | None:
        position = self.field(slot, 4)
        return None if position is None else self.buffer.follow(position, what)

    def table(self, slot: int, what: str) -> Table | None:
        """The table slot ``slot`` points to, or None."""
        target = self._target(slot, what)
        return None if target is None else self.buffer.table_at(target, what, self.depth + 1)

    def string(self, slot: int, what: str) -> str | None:
        """The string slot ``slot`` points to, or None."""
        target = self._target(slot, what)
        return None if target is None else self.buffer.string_at(target, what)

    def union(self, type_slot: int, what: str) -> tuple[int, Table | None]:
        """A union: its type (slot ``type_slot``, 0 = none) and its table (slot ``type_slot + 1``)."""
        kind = self.integer(type_slot, "uint8")
        return kind, (self.table(type_slot + 1, what) if kind else None)

    def struct(self, slot: int, size: int) -> int | None:
        """Where the ``size``-byte struct stored inline in slot ``slot`` starts, or None."""
        return self.field(slot, size)

    def vector(self, slot: int, element_size: int, what: str) -> tuple[int, int] | None:
        """Slot ``slot``'s vector as (where its elements start, count), or None (structs, raw bytes)."""
        target = self._target(slot, what)
        return None if target is None else self.buffer.vector_at(target, element_size, what)

    def extent(self, slot: int, what: str) -> tuple[int, int] | None:
        """A ``[ubyte]`` vector as (position, length) in the buffer: bytes to view, never copied here."""
        return self.vector(slot, 1, what)

    def scalars(self, slot: int, kind: str, what: str) -> np.ndarray | None:
        """A vector of scalars as a read-only little-endian numpy array (a copy), or None when absent."""
        code = _SCALAR[kind]
        dtype = np.dtype(code if kind != "bool" else "?")
        found = self.vector(slot, dtype.itemsize, what)
        if found is None:
            return None
        start, count = found
        self.buffer.visit(count // 64, what)  # a numpy copy: cheap per element, but not free
        array = np.frombuffer(self.buffer.data, dtype, count, start).copy()
        array.flags.writeable = False
        return array

    def _elements(self, slot: int, what: str, read: Callable[[int, str], _T]) -> list[_T]:
        found = self.vector(slot, 4, what)
        if found is None:
            return []
        start, count = found
        self.buffer.visit(count, what)
        return [read(start + 4 * i, f"{what}[{i}]") for i in range(count)]

    def tables(self, slot: int, what: str) -> list[Table]:
        """Slot ``slot``'s vector of tables (empty when absent)."""
        buffer, depth = self.buffer, self.depth + 1
        return self._elements(slot, what, lambda at, name: buffer.table_at(buffer.follow(at, name), name, depth))

    def strings(self, slot: int, what: str) -> list[str]:
        """Slot ``slot``'s vector of strings (empty when absent)."""
        buffer = self.buffer
        return self._elements(slot, what, lambda at, name: buffer.string_at(buffer.follow(at, name), name))
