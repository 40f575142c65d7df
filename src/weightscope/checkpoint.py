"""The reader protocol every format gives: a ``Checkpoint``.

A checkpoint is a context manager and a read-only mapping from tensor name to numpy
array. ``info(name)`` answers from the index alone; arrays are read (and, where the
format has checksums, verified) only when asked for. A format implements the small
core — ``_infos`` filled at open, ``_read``, ``_close`` (and ``_source_of`` where its
tensors' bytes lie in a file other than ``path``, for slice reads) — and inherits the rest.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from weightscope.dtypes import BY_NAME
from weightscope.errors import TensorNotFoundError, WeightscopeError, kept
from weightscope.layers import Layer, TensorRole, classify, explain_role_name, find_by_role, group_layers
from weightscope.limits import check_view
from weightscope.sources import AnyPath, AnySource, as_path, open_source

if TYPE_CHECKING:
    from weightscope.remote import RemotePath
    from weightscope.slicing import TensorSlice


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


class StridedView(NamedTuple):
    """How a tensor's values lie in the bytes stored for it when not one after another in C order: a PyTorch
    view (transposed, sliced, or expanded: a stride of 0 repeats one stored value along its axis)."""

    strides: tuple[int, ...]  # in elements, as torch's ``Tensor.stride()``
    stored_nbytes: int  # the bytes its values span: less than its ``nbytes`` when they overlap


class Checkpoint(Mapping[str, np.ndarray]):
    """A read-only mapping from tensor name to array, opened from one checkpoint."""

    format: str = ""
    # What ``verify()`` checks each tensor's bytes against: "" where the file has no checksums
    # (then it can only find tensors out of the file's bounds or not of their declared size).
    checksums: str = ""

    def __init__(self, path: AnyPath) -> None:
        self.path = path
        self._infos: dict[str, TensorInfo] = {}
        self._aliases: dict[str, str] = {}  # stored key -> name, where the two differ
        self._metadata: dict[str, str] = {}  # filled by formats that carry any
        self._roles: dict[str, TensorRole] = {}  # where the format knows better than the name
        self._lazy_roles: Callable[[], dict[str, TensorRole]] | None = None  # fills _roles on first use
        self._notes: list[str] = []  # what the reader found worth saying that is no error

    # -- the per-format core ---------------------------------------------------------
    def _read(self, info: TensorInfo) -> np.ndarray:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    # -- the mapping -------------------------------------------------------------------
    def __getitem__(self, name: str) -> np.ndarray:
        """Tensor ``name``'s values; a view repeating its stored bytes past the expansion cap is refused
        (``LimitExceededError``, ``weightscope.limits``) before anything copies it."""
        info = self.info(name)
        # Read-only here, once for every format: a view of a mapped file must not be written
        # through, and a copy (inflated, dequantised, reassembled) must behave the same.
        array = self._read(info)
        array.flags.writeable = False
        check_view(array, f"tensor '{info.name}'", self.path)
        return array

    def without_repeats(self, name: str) -> np.ndarray:
        """Tensor ``name`` with each axis along which it repeats one value (a stride of 0, what ``torch.expand``
        saves) cut to length 1. Each value stands for ``info(name).size // result.size`` of the tensor's alike, so
        its statistics follow from these, however large the view; what still overlaps is held to the cap."""
        info = self.info(name)
        array = self._read(info)
        if 0 in array.strides:
            array = array[tuple(slice(0, 1) if step == 0 else slice(None) for step in array.strides)]
        check_view(array, f"tensor '{info.name}'", self.path)
        return array

    def __iter__(self) -> Iterator[str]:
        return iter(self._infos)

    def __len__(self) -> int:
        return len(self._infos)

    def __contains__(self, name: object) -> bool:
        return name in self._infos or name in self._aliases

    def info(self, name: str) -> TensorInfo:
        """What the index says of the tensor called ``name`` (or stored under the key ``name``)."""
        info = self._infos.get(name) or self._infos.get(self._aliases.get(name, ""))
        if info is None:
            raise self._not_found(name)
        return info

    def view(self, name: str) -> StridedView | None:
        """The strides and stored bytes of tensor ``name`` when it is a view (from the index alone); None when its
        values are stored one after another, as in every format but PyTorch's."""
        self.info(name)
        return None

    def slice(self, name: str) -> TensorSlice:
        """Tensor ``name``, to be indexed: ``ckpt.slice(name)[0:10, :]`` reads only the bytes those rows take where
        the tensor is plain bytes (unverified: see ``weightscope.slicing``), and equals ``ckpt[name][0:10, :]``."""
        info = self.info(name)
        from weightscope.slicing import TensorSlice  # lazy, and what it needs: listing never slices

        return TensorSlice(self, info, self._source_of(info))

    def _source_of(self, info: TensorInfo) -> AnySource | None:
        """The open byte source holding ``info.file``, where the reader keeps one."""
        return None

    def stored_dtype(self, name: str) -> np.dtype | None:
        """The element type, in the file's byte order, of tensor ``name`` when its values lie one after another
        as plain bytes at ``info(name).offset`` in ``info(name).file`` (what a lazy chunk reads by range);
        None when they do not (compressed, quantised, strided, split in parts) or the format does not say."""
        self.info(name)
        return None

    def role(self, name: str) -> TensorRole:
        """What the tensor is for: a layer's weight, optimizer state of a variable, bookkeeping."""
        name = self.info(name).name
        if self._lazy_roles is not None:
            self._roles.update(self._lazy_roles())
            self._lazy_roles = None
        return self._roles.get(name) or classify(name)

    def infos(self) -> Iterator[TensorInfo]:
        return iter(self._infos.values())

    def resolve(self, name: str) -> str:
        """The tensor ``name`` means: itself, or the tensor playing the role it names.

        ``layer1/weight`` resolves to ``layer1/kernel`` in a TensorFlow checkpoint.
        """
        if name in self:
            return self.info(name).name
        found = find_by_role(name, self.layers()) or self._by_shown_name(name)
        if found is None:
            raise self._not_found(name)
        return found

    def _by_shown_name(self, name: str) -> str | None:
        """The one tensor whose name reads as ``name`` once both are escaped as printed (``safe_text``).

        A name holding a lone surrogate (JSON's ``"\\ud800"``) or a control character can be
        neither typed nor sent in a URL; the escaped form the tools print opens it instead.
        """
        from weightscope.output import safe_text

        shown = safe_text(name)
        matches = [other for other in self._infos if safe_text(other) == shown]
        return matches[0] if len(matches) == 1 else None

    def _not_found(self, name: str) -> TensorNotFoundError:
        where = f"no tensor '{name}' in {self.path}"
        found = find_by_role(name, self.layers())
        if found is not None:
            return TensorNotFoundError(f"{where}; {explain_role_name(name, found)}")
        close = difflib.get_close_matches(name, list(self._infos), n=3)
        if close:
            return TensorNotFoundError(f"{where}; did you mean {', '.join(map(repr, close))}?")
        return TensorNotFoundError(f"{where} ({len(self._infos)} tensors)")

    @property
    def metadata(self) -> dict[str, str]:
        """Free-form strings the file carries beside its tensors (safetensors' ``__metadata__``,
        GGUF's key/values, a PyTorch checkpoint's scalars, Keras' attributes)."""
        return dict(self._metadata)

    @property
    def notes(self) -> list[str]:
        """What the reader found worth telling that is no error, so far (a model folder's choice among its weight
        files, shards its index does not list); the command line prints them on stderr."""
        return list(self._notes)

    def layers(self) -> dict[str, Layer]:
        """The parameters grouped by layer, with their optimizer state attached."""
        return group_layers(self._infos.values(), self.role)

    def verify(self) -> list[WeightscopeError]:
        """Read every tensor with its checksum checked; the problems found, if any."""
        problems: list[WeightscopeError] = []
        for info in self._infos.values():
            try:
                self._read(info)
            except WeightscopeError as error:
                problems.append(kept(error))
        return problems

    def to_dask(self, name: str | None = None, *, chunk_bytes: int | None = None) -> Any:
        """Tensor ``name`` (all, by name, if None) as dask arrays whose chunks read only their own bytes.

        Needs dask (``pip install 'weightscope[dask]'``); see ``weightscope.lazy.to_dask``.
        """
        from weightscope.lazy import to_dask

        return to_dask(self, name, chunk_bytes=chunk_bytes)

    # -- lifetime ----------------------------------------------------------------------
    def close(self) -> None:
        self._close()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {str(self.path)!r}: {len(self)} tensors>"


class FileCheckpoint(Checkpoint):
    """A checkpoint that is one file, mapped (or, remote, read by range) as ``self._source``; ``_load`` reads its index.

    Subclasses set their own attributes before calling this ``__init__``, which loads.
    """

    def __init__(self, path: str | os.PathLike[str] | RemotePath, *, verify: bool = True) -> None:
        super().__init__(as_path(path))
        self.verify_checksums = verify
        self._source = open_source(self.path)
        try:
            self._load()
        except BaseException:
            self._source.close()
            raise

    def _load(self) -> None:
        raise NotImplementedError

    def _source_of(self, info: TensorInfo) -> AnySource | None:
        return self._source if info.file == str(self.path) else None

    def _close(self) -> None:
        self._source.close()
