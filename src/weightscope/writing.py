"""What every writer reads from: tensors planned by dtype and shape, then streamed one at a time.

A writer first lays out its whole file from ``spec(name)`` (dtype and shape, no data
touched), then asks ``array(name)`` once per tensor, in the order it writes them, and lets
each array go before asking for the next. Conversions hand writers a ``Tensors`` whose
arrays are memory-mapped views of the source (or one transposed copy at a time), so no
two full copies of a checkpoint are ever in memory. ``as_tensors`` wraps a plain mapping
of name to array-like, which is what ``weightscope.save`` is usually given.

Every writer declares what its files hold as data (``Holds``: the element types, names it
keeps for itself, how long a stored name may be, the largest header) and plans with
``plan``: the one output-path check (a directory is no file to write), then each name once
and valid, each dtype one the format holds, all refused before a file is made. It checks
each array against its plan with ``checked`` (or ``array_bytes``) before writing its bytes:
a ``Tensors`` whose arrays are not what it promised writes nothing. A writer (``Writer``,
what the registry names) returns the files it wrote in the order it committed them, data
before the index that names it, so that ``convert`` moves and reports any format's files
the same way.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from weightscope.dtypes import BY_NAME, INTEGER_OF_WIDTH, TORCH_TYPES, element_for
from weightscope.errors import UnsupportedFormatError, UsageError

if TYPE_CHECKING:
    from numpy.typing import ArrayLike


@runtime_checkable
class Tensors(Protocol):
    """Named tensors a writer can plan from and then stream."""

    def names(self) -> list[str]:
        """The names, in the order the writer should write them."""
        ...

    def spec(self, name: str) -> tuple[np.dtype, tuple[int, ...]]:
        """The dtype and shape of ``name``, without reading its data."""
        ...

    def array(self, name: str) -> np.ndarray:
        """The values of ``name``; asked once, when the writer writes it."""
        ...


@runtime_checkable
class PiecewiseTensors(Tensors, Protocol):
    """``Tensors`` that also give a tensor in pieces, as its source holds it (``byte_pieces`` writes them)."""

    def pieces(self, name: str) -> list[np.ndarray]:
        """What ``array(name)`` gives, as arrays whose elements one after another are its own in C order: one array
        of its shape, or flat pieces; asked instead of ``array(name)``, once."""
        ...


class MappingTensors:
    """``Tensors`` over a mapping of name to array-like (numpy arrays, views, lists, PyTorch tensors, JAX arrays)."""

    def __init__(self, tensors: Mapping[str, ArrayLike]) -> None:
        self._tensors = tensors

    def names(self) -> list[str]:
        return list(self._tensors)

    def spec(self, name: str) -> tuple[np.dtype, tuple[int, ...]]:
        array = as_array(self._tensors[name])
        return array.dtype, array.shape

    def array(self, name: str) -> np.ndarray:
        return as_array(self._tensors[name])


def as_array(value: ArrayLike) -> np.ndarray:
    """``value`` as a numpy array: a PyTorch tensor detached and on the CPU (its bfloat16 and float8 viewed as
    ml_dtypes' types of the same bits), anything else through ``np.asarray`` (JAX arrays, bfloat16 included)."""
    torch = sys.modules.get("torch")  # a tensor of a framework never imported is no tensor of it
    if torch is None or not isinstance(value, torch.Tensor):
        return np.asarray(value)
    name = str(value.dtype).removeprefix("torch.")
    if name not in TORCH_TYPES:
        raise UnsupportedFormatError(f"a torch.{name} tensor has no numpy type weightscope writes")
    tensor = value.detach().cpu().resolve_conj().resolve_neg()
    element = BY_NAME[name].dtype
    assert element is not None, name
    if element.type.__module__ == "numpy":
        return np.asarray(tensor.numpy())
    return np.asarray(tensor.view(getattr(torch, INTEGER_OF_WIDTH[element.itemsize])).numpy()).view(element)


def as_tensors(tensors: Tensors | Mapping[str, ArrayLike]) -> Tensors:
    """``tensors`` as a ``Tensors``: itself if it is one, else the mapping wrapped."""
    if isinstance(tensors, Tensors):
        return tensors
    return MappingTensors(tensors)


@dataclass(frozen=True)
class Spec:
    """One tensor as a writer plans it, before any of its data is read."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


@dataclass(frozen=True)
class Holds:
    """What a format's files can hold, declared by its writer as data; ``plan`` checks every tensor against it."""

    format: str  # the format as a refusal names it: "safetensors holds no complex128"
    example: str  # a name the writer writes, offered when given a directory: "model.safetensors"
    target: str = "a file name"  # what the writer is given: a file name, a checkpoint prefix
    dtypes: frozenset[str] | None = None  # the element types it holds (``weightscope.dtypes`` names); None: any
    reserved: Mapping[str, str] = field(default_factory=dict)  # names the format keeps for itself -> for what
    name_errors: str = "strict"  # how a name is encoded to UTF-8 ("surrogateescape": bytes read from a file)
    stored_as: Callable[[str], Hashable] | None = None  # what a name is stored under (an .npz member, an index key)
    max_name_bytes: int | None = None  # of a name as stored, in UTF-8
    names: str = "names"  # what those stored names are, for a refusal: "zip member names"
    max_header: int | None = None  # bytes of the header the writer lays out

    def check_header(self, target: Path, size: int) -> None:
        """Refuse a header of ``size`` bytes over the format's limit."""
        if self.max_header is not None and size > self.max_header:
            raise UsageError(f"{target}: a header of {size} bytes, over the format's limit of {self.max_header}")


def check_target(target: Path, holds: Holds) -> None:
    """The one check of where a writer writes: a directory is no file (or checkpoint prefix) to write."""
    if target.is_dir():
        raise UsageError(f"{target} is a directory; give {holds.target} such as {target / holds.example}")


def check_folder(target: Path) -> None:
    """The one check of where a model folder is written: not a file, and no folder with files in it already (the
    folder is written whole, or not at all)."""
    if target.exists() and not target.is_dir():
        raise UsageError(f"{target} is a file; give the folder to write the model folder as")
    if target.is_dir() and any(target.iterdir()):
        raise UsageError(f"{target} is a folder with files in it; give a new or empty folder to write the model in")


def plan(tensors: Tensors | Mapping[str, ArrayLike], target: Path, holds: Holds) -> tuple[Tensors, list[Spec]]:
    """The tensors as a ``Tensors``, and every tensor's planned dtype and shape, before a byte is written.

    ``target`` must be no directory; each name is a non-empty string given once, encodable as
    the format stores it, not one the format keeps for itself, not longer than it holds, and
    not stored like another's (``holds.stored_as``: the second would hide the first); each
    dtype is one the format holds.
    """
    check_target(target, holds)
    source = as_tensors(tensors)
    specs: list[Spec] = []
    seen: dict[Hashable, str] = {}
    for name in source.names():
        if not isinstance(name, str) or not name:
            raise UsageError(f"tensor names must be non-empty strings, not {name!r}")
        if name in holds.reserved:
            raise UsageError(f"tensor '{name}': the name is reserved for {holds.reserved[name]}")
        try:
            name.encode("utf-8", holds.name_errors)
        except UnicodeEncodeError:
            raise UsageError(f"tensor {name!r}: the name is not valid UTF-8 text") from None
        key = name if holds.stored_as is None else holds.stored_as(name)
        if key in seen and seen[key] == name:
            raise UsageError(f"{target}: tensor '{name}' is given twice")
        if key in seen:
            raise UsageError(f"{target}: tensors '{seen[key]}' and '{name}' would be stored under one name")
        seen[key] = name
        if holds.max_name_bytes is not None and isinstance(key, str | bytes):
            size = len(key.encode("utf-8", holds.name_errors) if isinstance(key, str) else key)
            if size > holds.max_name_bytes:
                raise UsageError(
                    f"tensor '{name[:40]}...': a name of {size} bytes; {holds.names} hold {holds.max_name_bytes}"
                )
        dtype, shape = source.spec(name)
        spec = Spec(name, np.dtype(dtype), tuple(int(size) for size in shape))
        if holds.dtypes is not None and not _any_of(holds.dtypes, spec.dtype):
            raise UnsupportedFormatError(
                f"tensor '{name}': {holds.format} holds no {spec.dtype} ({', '.join(sorted(holds.dtypes))})"
            )
        specs.append(spec)
    return source, specs


def _any_of(names: frozenset[str], dtype: np.dtype) -> bool:
    """Whether ``dtype`` is that of one of the element types ``names``."""
    return element_for(dtype, lambda element: element.name in names) is not None


@dataclass(frozen=True)
class Writer:
    """A format's writer, as the registry names it: what its files hold, and ``write(tensors, path, **options)``,
    which plans with ``plan`` and returns the files it wrote in the order it committed them (an index after the
    data it names, so a reader never finds an index before its data)."""

    holds: Holds
    write: Callable[..., Sequence[Path]]


def checked(array: ArrayLike, spec: Spec) -> np.ndarray:
    """``array`` as numpy, refused unless it has the dtype (in any byte order) and shape ``spec`` planned."""
    array = np.asarray(array)
    if array.shape != spec.shape or array.dtype.newbyteorder("=") != spec.dtype.newbyteorder("="):
        raise UsageError(
            f"tensor '{spec.name}': planned as {spec.dtype} of shape {list(spec.shape)}, "
            f"but its array is {array.dtype} of shape {list(array.shape)}"
        )
    return array


def array_bytes(array: ArrayLike, spec: Spec) -> np.ndarray:
    """``array``'s elements as flat little-endian C-order bytes, once checked against ``spec``.

    A contiguous little-endian array is viewed, not copied; a non-contiguous or big-endian
    one is copied (one tensor at a time, see ``little_endian``).
    """
    return little_endian(checked(array, spec)).reshape(-1).view(np.uint8)


def byte_pieces(source: Tensors, spec: Spec) -> list[np.ndarray]:
    """``array_bytes`` of ``spec``'s array, in the pieces the source gives it in (``PiecewiseTensors``; a whole array
    otherwise): each a view where it can be. One array is checked as ``checked`` checks it; flat pieces each by their
    dtype, and together by their number of elements."""
    parts = source.pieces(spec.name) if isinstance(source, PiecewiseTensors) else [source.array(spec.name)]
    if len(parts) == 1:
        return [array_bytes(parts[0], spec)]
    arrays = [np.asarray(part) for part in parts]
    if any(part.ndim != 1 or part.dtype.newbyteorder("=") != spec.dtype.newbyteorder("=") for part in arrays):
        raise UsageError(f"tensor '{spec.name}': planned as {spec.dtype}, but its pieces are not all flat {spec.dtype}")
    if sum(part.size for part in arrays) != math.prod(spec.shape):
        raise UsageError(
            f"tensor '{spec.name}': planned as {list(spec.shape)}, but its pieces hold "
            f"{sum(part.size for part in arrays)} elements"
        )
    return [little_endian(part).view(np.uint8) for part in arrays]


_TILE = 64  # rows and columns of a transpose tile: two 64x64 float32 tiles stay in L1


def little_endian(array: np.ndarray) -> np.ndarray:
    """The values as C-order little-endian elements: a view when they already are, else one copy.

    A transposed matrix copied whole reads memory across its rows (0.6 GiB/s here); it is
    copied tile by tile instead, each tile's rows staying in cache (2.1 GiB/s).
    """
    dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder != "|" else array.dtype
    if array.ndim == 2 and array.size >= _TILE * _TILE and not array.flags.c_contiguous:
        out = np.empty(array.shape, dtype)
        rows, columns = array.shape
        for row in range(0, rows, _TILE):
            for column in range(0, columns, _TILE):
                out[row : row + _TILE, column : column + _TILE] = array[row : row + _TILE, column : column + _TILE]
        return out
    return array.astype(dtype, order="C", copy=False)  # keeps 0-d arrays 0-d


# -- metadata edits: what a format's editor hands weightscope.metadata_edit ---------------------------------------
@dataclass(frozen=True)
class MetadataEntry:
    """One metadata value: its key, type (``string``, a GGUF scalar type, ``array[T]``) and value (an array's
    elements when it has at most ``SUMMARY_LENGTH``, else None: ``length`` says how many)."""

    key: str
    type: str
    value: Any
    length: int | None = None  # an array's element count


@dataclass(frozen=True)
class HeaderPlan:
    """A format's new header for an edit: ``in_place`` the bytes that replace the old header exactly (the data
    does not move), None when they do not fit; ``copied`` the header a new file starts with, its data section
    (the old file's from ``data_start``) after it; ``need`` the sizes that decided it, in words."""

    in_place: bytes | None
    copied: bytes
    data_start: int
    need: str
