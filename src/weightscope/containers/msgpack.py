"""MessagePack (https://github.com/msgpack/msgpack/blob/master/spec.md), decoded without copying payloads.

Every value starts with one byte that says its type; numbers that follow are big-endian:

- ``0x00..0x7f`` positive fixint, ``0xe0..0xff`` negative fixint (the byte itself);
- ``0x80..0x8f`` fixmap of ``byte & 0x0f`` key/value pairs, ``0xde``/``0xdf`` map16/map32;
- ``0x90..0x9f`` fixarray of ``byte & 0x0f`` values, ``0xdc``/``0xdd`` array16/array32;
- ``0xa0..0xbf`` fixstr of ``byte & 0x1f`` UTF-8 bytes, ``0xd9``/``0xda``/``0xdb`` str8/16/32;
- ``0xc0`` nil, ``0xc2`` false, ``0xc3`` true (``0xc1`` is never used);
- ``0xc4``/``0xc5``/``0xc6`` bin8/16/32: a length, then that many bytes;
- ``0xc7``/``0xc8``/``0xc9`` ext8/16/32: a length, a signed type byte, then the payload; ``0xd4..0xd8`` fixext of
  1, 2, 4, 8, 16 bytes: the type byte, then the payload;
- ``0xca`` float32, ``0xcb`` float64; ``0xcc..0xcf`` uint8..64; ``0xd0..0xd3`` int8..64.

``decode`` returns maps as dicts (in file order), arrays as lists, strings as ``str``, and bin and ext payloads as
``Bin``/``Ext`` byte ranges of the source: nothing large is copied, so a tensor stays where the file holds it. An
ext type whose payload is itself msgpack (flax's ndarrays) is decoded in place when asked for.

A reader must refuse: a value past the end of its bounds; ``0xc1``; a string that is not UTF-8; a map or array
counting more entries than the bytes left could hold (each value takes at least one byte), checked before anything
is allocated; nesting deeper than ``MAX_DEPTH``; a map key that is a map, an array or a payload, or one given twice;
an ext decoded in place whose value does not fill its payload exactly.
Memory is charged to a ``weightscope.limits.Budget`` as each map or array is opened, by the entries it counts.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

from weightscope.errors import CorruptCheckpointError, TruncatedFileError
from weightscope.limits import Budget
from weightscope.sources import AnySource

MAX_DEPTH = 64  # flax's trees are a few levels deep; Python's recursion is not spent by a hostile file
# Memory charged per byte a map's or array's entries take at least (one a value): a dict or list slot and the object
# in it (an int, a float, a small str or tuple). A string's characters take no more than its bytes in the file.
_VALUE_COST = 96


class Bin(NamedTuple):
    """A bin value: ``length`` bytes at ``offset`` of the source."""

    offset: int
    length: int


class Ext(NamedTuple):
    """An extension value: type ``code`` (-128..127) and its ``length`` bytes of payload at ``offset``; ``value``, the
    payload decoded as one msgpack value where the decoder was told that type's payloads are msgpack, else None."""

    code: int
    offset: int
    length: int
    value: Any = None


# Fixed-size heads: the struct of the number that follows the type byte.
_LENGTHS = {
    0xC4: ">B", 0xC5: ">H", 0xC6: ">I",  # bin
    0xC7: ">B", 0xC8: ">H", 0xC9: ">I",  # ext
    0xD9: ">B", 0xDA: ">H", 0xDB: ">I",  # str
    0xDC: ">H", 0xDD: ">I",  # array
    0xDE: ">H", 0xDF: ">I",  # map
}  # fmt: skip
_NUMBERS = {
    0xCA: ">f", 0xCB: ">d",  # float32, float64
    0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q",  # uint8..64
    0xD0: ">b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q",  # int8..64
}  # fmt: skip
_FIXEXT = {0xD4: 1, 0xD5: 2, 0xD6: 4, 0xD7: 8, 0xD8: 16}
_CONSTANTS = {0xC0: None, 0xC2: False, 0xC3: True}
_STRUCTS = {layout: struct.Struct(layout) for layout in (*_LENGTHS.values(), *_NUMBERS.values(), ">b")}


_CHARGED_AT_ONCE = 1 << 20  # memory charged to the budget a batch at a time: a call per map or array costs 5%
_WINDOW = 1 << 16  # bytes read at a time: the tree's heads lie between payloads that are skipped, never read


class Decoder:
    """Reads msgpack values from ``source`` within ``[start, end)``; ``where`` names the file in errors."""

    def __init__(
        self, source: AnySource, start: int, end: int, where: object, budget: Budget, nested: frozenset[int]
    ) -> None:
        self.source = source
        self.nested = nested  # the ext types whose payload is itself one msgpack value, decoded in place
        self.position = start
        self.end = end
        self.where = where
        self.budget = budget
        self._unspent = 0  # memory of the values decoded, not yet charged to the budget
        self._window = memoryview(b"")  # the source's bytes from ``_window_start`` on
        self._window_start = start

    def _take(self, length: int, what: str) -> memoryview:
        """The next ``length`` bytes, from the window (refilled from the source where it falls short)."""
        at = self.position
        if length > self.end - at:
            raise TruncatedFileError(f"{self.where}: {what} at {at} needs {length} bytes; {self.end - at} remain")
        offset = at - self._window_start
        if offset + length > len(self._window):
            self._window = self.source.read(at, min(max(length, _WINDOW), self.end - at), what)
            self._window_start, offset = at, 0
        self.position = at + length
        return self._window[offset : offset + length]

    def _skip(self, length: int, what: str) -> int:
        """Pass over a payload of ``length`` bytes without reading it; where it starts."""
        at = self.position
        if length > self.end - at:
            raise TruncatedFileError(f"{self.where}: {what} at {at} needs {length} bytes; {self.end - at} remain")
        self.position = at + length
        return at

    def _number(self, layout: str, what: str) -> Any:
        unpacker = _STRUCTS[layout]
        return unpacker.unpack(self._take(unpacker.size, what))[0]

    def _count(self, count: int, least: int, what: str, at: int) -> None:
        """Refuse ``count`` entries of at least ``least`` bytes each that the bytes left cannot hold; charge them
        (a batch at a time: ``flush``)."""
        if count * least > self.end - self.position:
            raise TruncatedFileError(
                f"{self.where}: {what} at {at} holds {count:,} entries, at least {count * least:,} bytes; "
                f"{self.end - self.position:,} remain"
            )
        self._unspent += count * least * _VALUE_COST
        if self._unspent > _CHARGED_AT_ONCE:
            self.flush()

    def flush(self) -> None:
        """Charge the memory of the values decoded so far to the budget."""
        self.budget.spend(self._unspent, "the msgpack tree")
        self._unspent = 0

    def decode(self, depth: int = 0) -> Any:
        """The value at the current position (and past it)."""
        at = self.position
        window, offset = self._window, at - self._window_start
        if at < self.end and offset < len(window):  # the window holds the head (most are): no call to take it
            head = window[offset]
            self.position = at + 1
        else:
            head = self._take(1, "a msgpack value")[0]
        if head <= 0x7F:
            return head
        if head >= 0xE0:
            return head - 0x100
        if 0xA0 <= head <= 0xBF:
            return self._text(head & 0x1F, at)
        if head in _CONSTANTS:
            return _CONSTANTS[head]
        if head in _NUMBERS:
            return self._number(_NUMBERS[head], "a number")
        if head in (0xD9, 0xDA, 0xDB):
            return self._text(self._number(_LENGTHS[head], "a string's length"), at)
        if head in (0xC4, 0xC5, 0xC6):
            length = self._number(_LENGTHS[head], "a bin's length")
            return Bin(self._skip(length, "a bin"), length)
        if head == 0xC7 and at + 3 <= self.end and offset + 3 <= len(window):  # ext8, the usual: read in place
            length, code = window[offset + 1], window[offset + 2]
            code, self.position = code - 256 if code > 127 else code, at + 3
            if code in self.nested:
                return self._nested(code, length, depth)
            return Ext(code, self._skip(length, f"an ext of type {code}"), length)
        if head in (0xC7, 0xC8, 0xC9) or head in _FIXEXT:
            length = _FIXEXT[head] if head in _FIXEXT else self._number(_LENGTHS[head], "an ext's length")
            code = self._number(">b", "an ext's type")
            if code in self.nested:
                return self._nested(code, length, depth)
            return Ext(code, self._skip(length, f"an ext of type {code}"), length)
        if depth >= MAX_DEPTH:
            raise CorruptCheckpointError(f"{self.where}: msgpack values at {at} nest deeper than {MAX_DEPTH} levels")
        if 0x90 <= head <= 0x9F or head in (0xDC, 0xDD):
            count = head & 0x0F if head <= 0x9F else self._number(_LENGTHS[head], "an array's length")
            self._count(count, 1, "an array", at)
            return [self.decode(depth + 1) for _ in range(count)]
        if 0x80 <= head <= 0x8F or head in (0xDE, 0xDF):
            count = head & 0x0F if head <= 0x8F else self._number(_LENGTHS[head], "a map's length")
            self._count(count, 2, "a map", at)
            return self._map(count, depth, at)
        raise CorruptCheckpointError(f"{self.where}: byte 0x{head:02x} at {at} starts no msgpack value")

    def _nested(self, code: int, length: int, depth: int) -> Ext:
        """An ext whose payload is one msgpack value, filling it exactly."""
        start, end = self.position, self._skip(length, f"an ext of type {code}") + length
        self.position, self.end, outer_end = start, end, self.end
        try:
            value = self.decode(depth + 1)
            if self.position != end:
                raise CorruptCheckpointError(
                    f"{self.where}: the ext of type {code} at {start} holds {end - self.position} bytes after its value"
                )
        finally:
            self.end = outer_end
        return Ext(code, start, length, value)

    def _text(self, length: int, at: int) -> str:
        data = self._take(length, "a string")
        try:
            return str(data, "utf-8")
        except UnicodeDecodeError:
            raise CorruptCheckpointError(f"{self.where}: the string at {at} is not UTF-8") from None

    def _map(self, count: int, depth: int, at: int) -> dict[Any, Any]:
        mapping: dict[Any, Any] = {}
        for _ in range(count):
            key_at = self.position
            key = self.decode(depth + 1)
            if isinstance(key, (dict, list, Bin, Ext)):
                raise CorruptCheckpointError(f"{self.where}: the map at {at} has a key at {key_at} that is no scalar")
            if key in mapping:
                raise CorruptCheckpointError(f"{self.where}: the map at {at} gives key {key!r} twice")
            mapping[key] = self.decode(depth + 1)
        return mapping


def decode_all(
    source: AnySource, start: int, end: int, where: object, budget: Budget, what: str, nested: frozenset[int]
) -> Any:
    """The one value ``[start, end)`` holds (``what`` it is, for errors), with the payloads of the ext types
    ``nested`` decoded too (``Ext.value``); bytes left after it are refused."""
    decoder = Decoder(source, start, end, where, budget, nested)
    value = decoder.decode()
    decoder.flush()
    if decoder.position != end:
        raise CorruptCheckpointError(
            f"{where}: {what} ends at {decoder.position}, {end - decoder.position} bytes before its end at {end}"
        )
    return value
