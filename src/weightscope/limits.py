"""Resource caps: how much a file may make weightscope allocate, relative to its size.

The rule (README, security model): reading a file — opening, listing, ``scan``,
``verify``, ``stats``, ``summary`` — uses at most ``64 MiB + 8 × the file's size`` of
memory, and no tensor is materialised at more than ``expansion`` times the bytes it
stores (a stride-0 view of one value, a compressed chunk) unless the user raises the cap.
Every reader takes its caps from here, so a cap is one number with one name, and a
refusal names the variable that raises it:

- ``WEIGHTSCOPE_MAX_MEMORY``: bytes (``4GiB``, ``512MiB``, ``1000000``) a reader may
  build from one file, replacing ``64 MiB + 8 × size``;
- ``WEIGHTSCOPE_MAX_EXPANSION``: how many times its stored bytes one tensor may become
  when materialised (default 1024, above zip's and snappy's best ratios).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

from weightscope.errors import LimitExceededError

if TYPE_CHECKING:
    import numpy as np

MEMORY_BASE = 64 << 20
MEMORY_PER_FILE_BYTE = 8
DEFAULT_EXPANSION = 1024
MEMORY_VARIABLE = "WEIGHTSCOPE_MAX_MEMORY"
EXPANSION_VARIABLE = "WEIGHTSCOPE_MAX_EXPANSION"
# The most ``json.loads`` builds per byte of text (CPython 3.11, measured): ``[[{}],[{}],...]``
# makes a list, a dict and a slot, 136 bytes, of every 5 bytes. Readers charge it for a
# JSON header or config before parsing one.
JSON_BYTE_COST = 32

# What ``json.loads`` builds, at most, per separator (``{ [ , :``: each starts an object, entry or element):
# measured (CPython 3.11, tracemalloc) ``[[],...]`` 32 bytes, ``[{"a":1},...]`` 64, ``{"k1":1,...}`` 108 with an
# ``object_pairs_hook`` refusing duplicates (its pairs, the dict, each key's text); strings' text on top.
JSON_SEPARATOR_COST = 96
_NOT_MARKS = bytes(sorted(set(range(256)) - set(b'[{,:"')))  # every byte but those json_cost counts


def json_marks(text: bytes) -> bytes:
    """The bytes of ``text`` that ``json_cost`` counts (``[{,:"``), in order: one pass, the counts then run on these."""
    return text.translate(None, _NOT_MARKS)


def json_cost(text: bytes, separator: int = JSON_SEPARATOR_COST, array: int | None = None, string: int = 0) -> int:
    """An upper bound of the memory parsing ``text`` takes: the bytes, their decoded copy, the strings' text, and
    each object, entry and element at ``separator`` bytes (what the parse builds for one, measured), each array
    (``[``) at ``array`` where that differs, each string (two quotes) at ``string`` where not in ``separator``.
    ``JSON_BYTE_COST`` per byte holds for any JSON, but charges an index (long names, few separators: some 3.5
    bytes built per byte, measured) nine times what it takes: a 100,000-tensor index of 6.5 MB would need 200 MB."""
    return marks_cost(len(text), json_marks(text), separator, array, string)


def marks_cost(
    length: int, marks: bytes, separator: int = JSON_SEPARATOR_COST, array: int | None = None, string: int = 0
) -> int:
    """``json_cost`` of a text of ``length`` bytes whose ``json_marks`` are ``marks`` (kept to count more there)."""
    arrays = marks.count(b"[")
    others = marks.count(b"{") + marks.count(b",") + marks.count(b":")
    strings = marks.count(b'"') // 2 if string else 0
    return 4 * length + separator * others + (separator if array is None else array) * arrays + string * strings


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS.update({"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40})
_SIZE = r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*"  # compiled on first use (re caches it): most commands parse no size


def parse_size(text: str) -> int:
    """``4GiB``, ``512MB``, ``1000`` as bytes; a ``ValueError`` for anything else."""
    match = re.fullmatch(_SIZE, text)
    unit = match and _UNITS.get(match.group(2).lower())
    if not match or unit is None:
        raise ValueError(f"not a size: {text!r} (a number of bytes, or with KiB, MiB, GiB, KB, MB, GB)")
    return int(float(match.group(1)) * unit)


class Limits(NamedTuple):  # (not a frozen dataclass: its decorator costs every command ~0.35 ms of its start)
    """The caps in force for one file of ``file_size`` bytes."""

    memory: int
    expansion: int

    @classmethod
    def for_size(cls, file_size: int) -> Limits:
        """The caps for a file of ``file_size`` bytes: the rule, or the environment's override."""
        memory = MEMORY_BASE + MEMORY_PER_FILE_BYTE * max(0, file_size)
        expansion = DEFAULT_EXPANSION
        if os.environ.get(MEMORY_VARIABLE):
            memory = _from_environment(MEMORY_VARIABLE, parse_size)
        if os.environ.get(EXPANSION_VARIABLE):
            expansion = _from_environment(EXPANSION_VARIABLE, int)
        return cls(memory, expansion)

    def check_memory(self, needed: int, what: str, where: object) -> None:
        """Refuse building ``needed`` bytes for ``what`` from ``where`` beyond the memory cap."""
        if needed > self.memory:
            raise LimitExceededError(
                f"{where}: {what} needs {needed:,} bytes, over the cap of {self.memory:,} for this file "
                f"(64 MiB + 8 x its size); set {MEMORY_VARIABLE} (or weightscope --max-memory) to raise it"
            )

    def check_expansion(self, materialised: int, stored: int, what: str, where: object) -> None:
        """Refuse making ``materialised`` bytes out of ``stored`` ones beyond the expansion cap."""
        if materialised > self.expansion * max(stored, 1):
            raise LimitExceededError(
                f"{where}: {what} would become {materialised:,} bytes from {stored:,} stored, over "
                f"{self.expansion}x; set {EXPANSION_VARIABLE} (or weightscope --max-expansion) to raise the cap"
            )


class Budget:
    """Memory spent while parsing one file, charged as structures are built."""

    def __init__(self, limits: Limits, where: object) -> None:
        self.limits = limits
        self.where = where
        self.spent = 0

    def spend(self, nbytes: int, what: str) -> None:
        self.spent += nbytes
        self.limits.check_memory(self.spent, what, self.where)


def _from_environment(variable: str, parse: Callable[[str], int]) -> int:
    text = os.environ[variable]
    try:
        value = parse(text)
    except ValueError as error:
        raise LimitExceededError(f"{variable}={text!r} is not a number: {error}") from None
    if value <= 0:
        raise LimitExceededError(f"{variable}={text!r} must be positive")
    return int(value)


def span_nbytes(shape: Sequence[int], strides: Sequence[int], itemsize: int) -> int:
    """The bytes a view of ``shape`` and ``strides`` (in bytes) spans, from its first element to the end of its
    last: what it stores. Less than its size x ``itemsize`` when elements overlap (a stride of 0 repeats one value)."""
    if 0 in shape:
        return 0
    return itemsize + sum((length - 1) * abs(step) for length, step in zip(shape, strides, strict=True))


def check_view(array: np.ndarray, what: str, where: object) -> None:
    """Refuse an array whose values (each walked or copied) are more than the expansion cap times the bytes it views.

    A contiguous array's values are its bytes; a view (``torch.expand``'s stride 0, ``as_strided`` windows) may
    repeat a few stored bytes 2^40 times: that is refused, naming its shape and strides, before anything copies it.
    """
    if array.flags.c_contiguous or array.flags.f_contiguous:
        return
    stored = span_nbytes(array.shape, array.strides, array.itemsize)
    if array.nbytes > stored:
        strides = [step // array.itemsize for step in array.strides]
        what = f"{what}, a view of shape {list(array.shape)} and strides {strides}"
        Limits.for_size(0).check_expansion(array.nbytes, stored, what, where)
