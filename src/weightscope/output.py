"""Text and JSON for people and programs: tables, sizes, terminal-safe names."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np

# What must never reach a terminal raw: C0 and C1 control characters and DEL (escape
# sequences, OSC hyperlinks, CSI), the lone surrogates that stand for bytes which were not
# UTF-8 (no terminal encoding can write them), the bidirectional overrides, embeddings and
# isolates (text shown in another order than it is stored: "Trojan Source") and the
# Unicode line and paragraph separators. Strings read from a file can hold any of them.
_UNSAFE_BEYOND_C0 = "\x7f-\x9f\ud800-\udfff\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069"
_UNSAFE = re.compile(f"[\x00-\x1f{_UNSAFE_BEYOND_C0}]")
# json.dumps escapes C0 itself. Compiled on first use (re caches it): its ranges cost ~0.25 ms, most commands print
# no JSON.
_UNSAFE_IN_JSON = f"[{_UNSAFE_BEYOND_C0}]"


_SURROGATE_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")


def safe_text(text: str) -> str:
    """``text`` with every character a terminal would act on shown as an escape (``\\x1b``, ``\\u202e``).

    The one escaping function for terminals: the command line passes everything it writes
    through it (``terminal_text``), names from files included. Idempotent: escapes are ASCII.
    A high surrogate followed by a low one is shown as the character the pair encodes, as
    JSON reads them.
    """
    return _UNSAFE.sub(lambda match: _escape(match.group()), _paired(text))


def _paired(text: str) -> str:
    """``text`` with each pair of surrogates (a pickle may hold them as two characters) made
    the one character it encodes in UTF-16, which is what JSON's ``"\\ud83d\\ude00"`` means."""
    if _SURROGATE_PAIR.search(text) is None:
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


def terminal_text(text: str) -> str:
    """Lines for a terminal: each through ``safe_text``, the newlines between them kept."""
    if _UNSAFE.search(text) is None:
        return text
    return "\n".join(safe_text(line) for line in text.split("\n"))


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


def format_count(count: int, noun: str) -> str:
    """``count`` of ``noun`` as people read a model's size: ``1 value``, ``999 values``, ``11.7 M values``."""
    if count < 1000:
        return f"{count} {noun}{'s' * (count != 1)}"
    scaled = float(count)
    for unit in ("k", "M", "G", "T"):
        scaled /= 1000
        if scaled < 999.95 or unit == "T":
            return f"{scaled:.1f} {unit} {noun}s"
    raise AssertionError("unreachable")


def finite_figures(document: dict[str, Any]) -> dict[str, Any]:
    """Float figures JSON can hold: NaN and the infinities as strings (``json_float``)."""
    return {key: json_float(value) if isinstance(value, float) else value for key, value in document.items()}


def _cell(text: str) -> str:
    # Printable ASCII (most cells: figures, shapes, most names) holds nothing to escape.
    return text if text.isascii() and text.isprintable() else safe_text(text)


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """A plain aligned table; columns listed in ``right`` are right-aligned. Every cell is shown
    through ``safe_text`` (names from a file among them), so escapes keep the columns aligned."""
    header = [_cell(cell) for cell in header]
    rows = [[_cell(cell) for cell in row] for row in rows]
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
    such numbers); complex numbers become [real, imag]; strings (bytes or text) are
    decoded as UTF-8 with undecodable bytes escaped; bfloat16 and float8 values become
    Python floats; raw bytes (numpy's void) become hex strings; a structured element
    becomes an object of its fields, each converted by these rules; datetimes become ISO
    8601 strings and timedeltas whole counts of their unit (the dtype names it), "NaT"
    where not a time.
    """
    kind = array.dtype.kind
    if array.dtype.names is not None:
        fields = {name: json_values(array[name]) for name in array.dtype.names}
        return _by_element(fields, array.shape)
    if kind in "OSU":
        return np.vectorize(_json_text, otypes=[object])(array).tolist() if array.size else array.tolist()
    if array.dtype.type is np.void:  # raw bytes; ml_dtypes' floats are of kind V too, but not np.void
        return np.vectorize(lambda value: bytes(value).hex(), otypes=[object])(array).tolist()
    if kind == "M":
        return np.datetime_as_string(array).tolist()
    if kind == "m":
        counts = array.astype(np.int64).astype(object)
        counts[np.isnat(array)] = "NaT"
        return counts.tolist()
    if kind == "c":
        return json_values(np.stack([array.real, array.imag], axis=-1))
    if kind in "biu":
        return array.tolist()
    with np.errstate(invalid="ignore"):  # NaNs are expected here, and spelled out below
        values = array.astype(np.float64)
        if np.isfinite(values).all():
            return values.tolist()
        return np.vectorize(json_float, otypes=[object])(values).tolist()


def _by_element(fields: dict[str, Any], shape: tuple[int, ...]) -> Any:
    """Nested lists of ``shape`` whose items are objects {field: value}, from each field's nested lists."""
    if not shape:
        return fields
    return [_by_element({name: values[i] for name, values in fields.items()}, shape[1:]) for i in range(shape[0])]


def _json_text(value: bytes | str) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", "backslashreplace")


def json_float(value: float) -> float | str:
    """A float for JSON: NaN and the infinities spelled as strings, the way ``json_values`` does."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def dumps_json(document: Any, indent: int | None = 2) -> str:
    """JSON text that is valid UTF-8 and safe on a terminal, and loads back to the same strings.

    Non-ASCII text stays as it is, except the characters ``safe_text`` escapes, which are
    written as JSON's ``\\uXXXX`` escapes. A lone surrogate in a name (a safetensors
    header's ``"\\ud800"``, or a byte that was not UTF-8, held as U+DC80..U+DCFF) becomes
    the escape ``"\\ud800"``: the text stays valid UTF-8, and ``json.loads`` gives back
    the very string that names the tensor. A pair of surrogates is written as the
    character it encodes (JSON cannot tell the two apart); that character's name, as
    ``safe_text`` shows it too, resolves to the tensor (``Checkpoint.resolve``).
    """
    import json  # here: json's modules cost ~1 ms of every command's start, and most print no JSON

    text = _paired(json.dumps(document, indent=indent, ensure_ascii=False, allow_nan=False))
    # Outside strings JSON is ASCII, and json.dumps has escaped quotes and backslashes, so
    # each such character is inside a string, where \uXXXX means exactly it.
    return re.sub(_UNSAFE_IN_JSON, lambda match: f"\\u{ord(match.group()):04x}", text)
