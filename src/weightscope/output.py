"""Text and JSON for people and programs: tables, sizes, terminal-safe names."""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np

# C0 and C1 control characters and DEL, and the lone surrogates that stand for bytes
# which were not UTF-8: printed raw, they could rewrite the user's terminal.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def safe_text(text: str) -> str:
    """``text`` with control characters shown as escapes (``\\x1b``) instead of acted on."""
    return _UNSAFE.sub(lambda match: _escape(match.group()), text)


def _escape(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape of an undecodable byte
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def width(text: str) -> int:
    """Terminal columns ``text`` takes: wide (East Asian, emoji) characters take two."""
    if text.isascii():
        return len(text)
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


def format_shape(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(size) for size in shape) + "]"


def format_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{count} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """A plain aligned table; columns listed in ``right`` are right-aligned."""
    widths = [max([width(header[i])] + [width(row[i]) for row in rows]) for i in range(len(header))]

    def pad(cell: str, column: int) -> str:
        fill = " " * (widths[column] - width(cell))
        return fill + cell if column in right else cell + fill

    def line(cells: Sequence[str]) -> str:
        return "  ".join(pad(cell, i) for i, cell in enumerate(cells)).rstrip()

    return "\n".join([line(header), line(["-" * width for width in widths])] + [line(row) for row in rows])


def json_values(array: np.ndarray) -> Any:
    """Array values as JSON-ready nested lists.

    Non-finite floats become the strings "NaN", "Infinity", "-Infinity" (JSON has no
    such numbers); complex numbers become [real, imag]; strings are decoded as UTF-8
    with undecodable bytes escaped; bfloat16 and float8 values become Python floats.
    """
    if array.dtype.kind == "O":
        return np.vectorize(_json_bytes, otypes=[object])(array).tolist() if array.size else array.tolist()
    if array.dtype.kind == "c":
        return json_values(np.stack([array.real, array.imag], axis=-1))
    if array.dtype.kind in "biu":
        return array.tolist()
    with np.errstate(invalid="ignore"):  # NaNs are expected here, and spelled out below
        values = array.astype(np.float64)
        if np.isfinite(values).all():
            return values.tolist()
        return np.vectorize(json_float, otypes=[object])(values).tolist()


def _json_bytes(value: bytes) -> str:
    return value.decode("utf-8", "backslashreplace")


def json_float(value: float) -> float | str:
    """A float for JSON: NaN and the infinities spelled as strings, the way ``json_values`` does."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def dumps_json(document: Any, indent: int | None = 2) -> str:
    return json.dumps(document, indent=indent, ensure_ascii=False, allow_nan=False)
