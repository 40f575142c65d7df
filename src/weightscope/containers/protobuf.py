"""The protocol buffer wire format, walked without parsing: what parsing a message would make, known before it does.

A serialized message is a run of fields, each a varint tag (field number << 3 | wire type) and a value: a varint
(wire type 0), 8 or 4 bytes (1, 5), or a varint length and that many bytes (2: a message, a string or bytes, or a
packed run of numbers). Parsing turns every nested message into an object of some 160 bytes (measured with upb on
ONNX's: an empty TensorProto of 2 bytes on the wire takes about 150) and every packed varint of one byte into a
value of 8: a few bytes of a hostile file can ask for a hundred times as much memory. The readers that parse
protobuf (ONNX, Core ML) count that first, and refuse what their budget does not allow.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

from weightscope.containers.table import read_varint
from weightscope.errors import CorruptCheckpointError
from weightscope.limits import Budget, Limits

MESSAGE_COST = 160  # bytes of one parsed message object beyond the bytes it keeps
PACKED_VARINT_COST = 8  # bytes of one parsed value per byte of a packed varint field (an int64 from one byte)
# FieldDescriptor types whose values are varints: packed, one byte on the wire can be 8 once parsed
_Message = TypeVar("_Message")

_VARINT_TYPES = frozenset({3, 4, 5, 8, 13, 14, 17, 18})  # int64, uint64, int32, bool, uint32, enum, sint32, sint64


def length_delimited(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(field number, start, end) of each length-delimited field in ``data[start:end]``, the others skipped; stops
    where the bytes stop making sense (parsing will say why)."""
    pos = start
    try:
        while pos < end:
            tag, pos = read_varint(data, pos, "a protobuf tag")
            wire = tag & 7
            if wire == 0:
                _, pos = read_varint(data, pos, "a protobuf varint")
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            elif wire == 2:
                length, pos = read_varint(data, pos, "a protobuf length")
                if pos + length > end:
                    return
                yield tag >> 3, pos, pos + length
                pos += length
            else:
                return
    except CorruptCheckpointError:
        return


def parsed_cost(data: bytes, descriptor: Any) -> int:
    """Bytes of objects parsing ``data`` as ``descriptor``'s message makes beyond it, from a walk of the bytes with
    the schema: a message's worth for each message found, and the packed varints' widening."""
    cost = 0
    stack = [(0, len(data), descriptor)]
    while stack:
        start, end, message = stack.pop()
        cost += MESSAGE_COST
        for number, field_start, field_end in length_delimited(data, start, end):
            field = message.fields_by_number.get(number)
            if field is None:
                continue
            if field.message_type is not None:
                stack.append((field_start, field_end, field.message_type))
            elif field.type in _VARINT_TYPES:
                cost += PACKED_VARINT_COST * (field_end - field_start)
    return cost


def parse_within_budget(data: bytes, message: type[_Message], cost: int, path: object, what: str) -> _Message:
    """``data`` parsed as ``message`` (a generated class of ``weightscope._proto``), once what parsing makes (the
    bytes twice over, and ``cost`` beyond them: ``parsed_cost``'s walk) fits the memory a file of its size may take;
    a protobuf that does not parse is ``{path}: not {what}: the protobuf does not parse (...)``."""
    from google.protobuf.message import DecodeError

    Budget(Limits.for_size(len(data)), path).spend(2 * len(data) + cost, "parsing the model's protocol buffer")
    try:
        return message.FromString(data)  # type: ignore[attr-defined]
    except (DecodeError, RuntimeError, ValueError) as error:
        raise CorruptCheckpointError(f"{path}: not {what}: the protobuf does not parse ({error})") from None
