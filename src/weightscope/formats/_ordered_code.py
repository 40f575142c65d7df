"""TensorFlow's OrderedCode keys (tensorflow/core/lib/strings/ordered_code.cc): where a partitioned
variable's slices are in a bundle's index, ``name`` then each extent's start and length, sorting as numbers do.
"""

from __future__ import annotations

import re

# OrderedCode escapes the bytes 00 and FF inside a string (in one pass).
_ESCAPE = re.compile(rb"[\x00\xff]")
_ESCAPES = {b"\x00": b"\x00\xff", b"\xff": b"\xff\x00"}


def _slice_key(name: bytes, extents: list[tuple[int, int]]) -> bytes:
    """TensorFlow's OrderedCode key of one slice of a partitioned variable."""
    escaped = _ESCAPE.sub(lambda match: _ESCAPES[match.group()], name)
    key = bytearray(b"\x00" + escaped + b"\x00\x01")
    rank = len(extents)
    rank_bytes = rank.to_bytes((rank.bit_length() + 7) // 8, "big")
    key += bytes([len(rank_bytes)]) + rank_bytes
    for start, length in extents:
        key += _signed_increasing(start) + _signed_increasing(length)
    return bytes(key)


_HEADER_BITS = ((0, 0), (0x80, 0), (0xC0, 0), (0xE0, 0), (0xF0, 0), (0xF8, 0), (0xFC, 0),
                (0xFE, 0), (0xFF, 0), (0xFF, 0x80), (0xFF, 0xC0))  # fmt: skip


def _signed_increasing(value: int) -> bytes:
    """OrderedCode's WriteSignedNumIncreasing."""
    magnitude = ~value if value < 0 else value
    length = (magnitude.bit_length() + 7) // 7
    encoded = bytearray((value & ((1 << (8 * length)) - 1)).to_bytes(length, "big"))
    if value < 0 and length > 8:
        encoded = bytearray(b"\xff" * (length - 8)) + encoded[length - 8 :]
    first, second = _HEADER_BITS[length]
    encoded[0] ^= first
    if length > 1:
        encoded[1] ^= second
    return bytes(encoded)
