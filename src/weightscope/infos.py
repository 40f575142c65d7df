"""What a checkpoint's index says of its tensors: a ``TensorInfo`` each, held as columns by a large index's
reader (``InfoColumns``), and made with the garbage collector paused (``collection_paused``)."""

from __future__ import annotations

import contextlib
import gc
import math
from collections.abc import Iterator, Mapping, ValuesView
from itertools import repeat
from typing import Any, NamedTuple

import numpy as np

from weightscope.dtypes import BY_NAME

try:
    from weightscope import _tables
except ImportError:  # built without a C compiler: rows made by map and zip
    _tables = None  # type: ignore[assignment]


class TensorInfo(NamedTuple):
    """What the index says of one tensor, without reading its data.

    An immutable named tuple, equal by value, because a checkpoint makes one per tensor
    as it opens: made from a row of columns (``tuple.__new__(TensorInfo, row)``) one
    costs about 100 ns, a frozen dataclass about 640 ns (measured on 100,000).
    """

    name: str
    dtype: np.dtype  # what reading gives (object for strings, float32 for a dequantised GGUF tensor)
    shape: tuple[int, ...]
    nbytes: int  # bytes the tensor occupies in its file
    type_name: str  # the stored element type, format-neutral: float32, bfloat16, string, q4_k, ...
    file: str  # where the bytes live
    offset: int
    key: str  # the name the file stores it under; TF2 object-graph keys differ from ``name``

    @property
    def size(self) -> int:
        """The number of elements."""
        return math.prod(self.shape)

    @property
    def type_label(self) -> str:
        """The stored type, and the type reading gives where no numpy type holds it (``q4_k → float32``)."""
        element = BY_NAME.get(self.type_name)
        if element is not None and element.dtype is None:
            return f"{self.type_name} → {self.dtype.name}"
        return self.type_name


class InfoColumns(Mapping[str, TensorInfo]):
    """Tensors' infos by name, held as columns (a list per ``TensorInfo`` field, in field order; an int field's may be
    a one-dimensional int64 array, whose items become ints as each row is made) and made into ``TensorInfo`` tuples
    as they are asked for.

    A listing (iteration, ``values()``) makes each tuple as it goes and the caller frees it: the garbage collector
    never walks them. (Made at open and kept, 100,000 infos cost ~30 ms to make and ~30 ms of collections walking
    them, most of a TensorFlow checkpoint's open and list.) The first lookup by name makes them all, in a dict, as a
    reader filling one would have: lookups then cost what a dict's do. ``unique=False``: names may repeat; each
    name's last row then stands for it, at its first one's place, as ``dict(zip(names, infos))`` keeps them.
    """

    def __init__(self, columns: list[list[Any] | np.ndarray], *, unique: bool = True) -> None:
        self._columns = columns
        self._by_name: dict[str, TensorInfo] | None = None
        if not unique and len(self._made()) != len(columns[0]):
            self._columns = [list(column) for column in zip(*self._made().values(), strict=True)]

    def _made(self) -> dict[str, TensorInfo]:
        if self._by_name is None:
            self._by_name = dict(zip(self._columns[0], self.rows(), strict=True))  # a name repeated: its last row
            self.get = self._by_name.get  # type: ignore[method-assign, assignment]  # the dict's own, at C speed
        return self._by_name

    def __len__(self) -> int:
        return len(self._columns[0])

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns[0])

    def __contains__(self, name: object) -> bool:
        return name in self._made()

    def __getitem__(self, name: str) -> TensorInfo:
        return self._made()[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self._made().get(name, default)

    def values(self) -> ValuesView[TensorInfo]:
        return _InfoValues(self)

    def rows(self) -> Iterator[TensorInfo]:
        """Every info, in order: ``tuple.__new__`` is ``TensorInfo._make`` without its check of the field count; the
        compiled ``rows`` (``weightscope._tables``) makes each in one allocation, not two (~45 ns a row less)."""
        if _tables is not None:
            return _tables.rows(TensorInfo, self._columns)
        columns = (column if isinstance(column, list) else column.tolist() for column in self._columns)
        return map(tuple.__new__, repeat(TensorInfo), zip(*columns, strict=True))


class _InfoValues(ValuesView[TensorInfo]):
    """``InfoColumns.values()``: the rows made in one pass, not looked up name by name."""

    _mapping: InfoColumns

    def __iter__(self) -> Iterator[TensorInfo]:
        return self._mapping.rows()


@contextlib.contextmanager
def collection_paused() -> Iterator[None]:
    """No garbage collection inside: an index's tens of thousands of new tuples (parsed, then made infos) would set
    off collections that walk every object alive and find nothing to free (none of them makes a cycle)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
