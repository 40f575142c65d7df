"""The reader protocol every format gives: a ``Checkpoint``.

A checkpoint is a context manager and a read-only mapping from tensor name to numpy
array. ``info(name)`` answers from the index alone; arrays are read (and, where the
format has checksums, verified) only when asked for. A format implements the small
core — ``_load()`` returning the ``Index`` found at open, ``_extent(info)`` (where a tensor's stored bytes are:
an ``Extent``), ``_close`` (and ``_source_of`` where its tensors' bytes lie in a file other
than ``path``) — and inherits the rest: one read path turns a plain extent into a verified
read-only view, and dask chunks and slices read the same extents by range. A reader
overrides ``_read`` only for the tensors it must decode (inflate, dequantise, reassemble).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from weightscope.dtypes import native_order
from weightscope.errors import ChecksumMismatchError, TensorNotFoundError, WeightscopeError, kept
from weightscope.infos import InfoColumns, TensorInfo
from weightscope.limits import check_view
from weightscope.sources import AnyPath, AnySource, as_path, open_source, reading_many
from weightscope.span_checks import Checksum, Combine, SpanChecks

if TYPE_CHECKING:
    from weightscope.layers import Layer, TensorRole
    from weightscope.quant.schemes import QuantizedWeight
    from weightscope.remote import RemotePath
    from weightscope.slicing import TensorSlice


class Extent(NamedTuple):
    """Where one tensor's stored bytes are, from the index alone: what the base class reads (``Checkpoint._read``),
    and what dask chunks (``weightscope.lazy``) and slices (``weightscope.slicing``) read by range.

    Plain bytes (``compression == ""``) are ``nbytes`` bytes of ``dtype`` at ``offset`` of ``file``: in C order
    one after another when ``strides`` is None, else laid out by those element strides (a PyTorch view).
    """

    file: str
    offset: int
    nbytes: int  # the bytes stored: compressed or quantised ones as they are in the file
    dtype: np.dtype  # the stored element type, in the file's byte order (uint8 for compressed or quantised bytes)
    strides: tuple[int, ...] | None = None  # in elements, as torch's ``Tensor.stride()``; None: C order, in a row
    compression: str = ""  # how the bytes decode: "" (plain), "deflate", "strings", a quantisation type ("q4_k")
    checksum: str = ""  # what the index checks the bytes by: "" (nothing), "crc32c" (masked), "crc32"
    expected: int | None = None  # the checksum the index holds (of the decoded bytes where compressed)
    checked: tuple[int, int] | None = None  # (offset, nbytes) the checksum covers when more than these bytes:
    # a zip member holding a header, or a PyTorch storage several tensors view


CHECKSUM_LABELS = {"crc32c": "checksum", "crc32": "CRC-32", "sha1": "SHA1"}  # a checksum kind, as errors name it


@functools.cache
def checksum_function(kind: str) -> Callable[[bytes | memoryview], int]:
    """The function of the bytes a checksum kind is: imported when first asked for (listing checks nothing)."""
    if kind == "crc32c":  # TensorFlow's, masked as LevelDB masks it
        from weightscope._crc32c import crc32c
        from weightscope.containers.table import mask_crc

        return lambda data: mask_crc(crc32c(data))
    if kind == "crc32":  # a zip member's, zlib-ng's (7x zlib's)
        from weightscope.containers.zip import crc32

        return crc32
    if kind == "sha1":  # ONNX's external files', the digest as a number
        import hashlib  # here: OpenSSL's libraries add ~3 MiB to every command's resident size otherwise

        return lambda data: int.from_bytes(hashlib.sha1(data).digest(), "big")
    raise KeyError(kind)


@functools.cache
def checksum_combine(kind: str) -> Callable[[int, int, int], int] | None:
    """``combine(first, second, length of the second's bytes)``: the checksum of two spans one after the other from
    theirs, where the kind has one (a span is then checksummed in pieces on several threads)."""
    if kind == "crc32":
        from weightscope.containers.zip import crc32_combine

        return crc32_combine
    return None


def _damaged(name: str, extent: Extent, actual: int) -> ChecksumMismatchError:
    """Tensor ``name``'s error when ``actual`` is not the checksum ``extent`` expects."""
    start, length = extent.checked or (extent.offset, extent.nbytes)
    where = f"bytes {start}..{start + length}" if extent.checked is None else f"its zip member at {start}"
    return ChecksumMismatchError(
        f"{extent.file}: tensor '{name}' is damaged: stored {CHECKSUM_LABELS[extent.checksum]} "
        f"{extent.expected:#010x}, computed {actual:#010x} over {where}"
    )


class StridedView(NamedTuple):
    """How a tensor's values lie in the bytes stored for it when not one after another in C order: a PyTorch
    view (transposed, sliced, or expanded: a stride of 0 repeats one stored value along its axis)."""

    strides: tuple[int, ...]  # in elements, as torch's ``Tensor.stride()``
    stored_nbytes: int  # the bytes its values span: less than its ``nbytes`` when they overlap


@functools.cache
def _classify() -> Callable[[str], TensorRole]:
    """``layers.classify``, imported on first use (with its naming conventions): reading values needs no roles."""
    from weightscope.layers import classify

    return classify


@dataclass
class Index:
    """What a reader finds when it opens a checkpoint (its ``_load`` returns one), from the index alone."""

    infos: dict[str, TensorInfo] = field(default_factory=dict)  # by name, in the order listed
    columns: InfoColumns | None = None  # the infos held as columns instead (a large index's reader): then these
    aliases: dict[str, str] = field(default_factory=dict)  # stored key -> name, where the two differ
    metadata: dict[str, str] = field(default_factory=dict)  # free-form strings the file carries
    roles: dict[str, TensorRole] = field(default_factory=dict)  # where the format knows better than the name
    lazy_roles: Callable[[], dict[str, TensorRole]] | None = None  # more roles, found on first use


# ``arrays``' threads: one more than the cores, as a thread waits on page faults while the others decode
_READ_AHEAD = min(4, (os.cpu_count() or 1) + 1)


class Checkpoint(Mapping[str, np.ndarray]):
    """A read-only mapping from tensor name to array, opened from one checkpoint."""

    format: str = ""
    title: str = ""  # what people call the format ("PyTorch checkpoint"): ``Format.title``, set by ``ws.open``
    # What ``verify()`` checks each tensor's bytes against: "" where the file has no checksums
    # (then it can only find tensors out of the file's bounds or not of their declared size).
    checksums: str = ""
    # Whether tensors may be read on several threads at once, each decoded off the GIL (``arrays`` reads ahead).
    concurrent_reads: bool = False
    # Whether ``self[name]`` may run on several threads at once: ``arrays`` of a remote checkpoint then keeps several
    # reads in flight (each a range request waiting on the network; ``sources.reading_many`` says how many).
    threadsafe_reads: bool = False

    def __init__(self, path: AnyPath) -> None:
        self.path = path
        self._install(Index())
        self._verified_spans: set[tuple[str, int, int]] = set()  # checked spans (file, offset, nbytes) found sound
        self._span_checks = SpanChecks()  # the checked spans' checksums, read ahead on other threads
        self._deferred: dict[tuple[str, int, int], tuple[Callable[[], int], Extent, str]] | None = None  # see below
        self._listing: tuple[list[str], dict[str, int]] | None = None  # names in order and positions: read-ahead
        self.verify_checksums = True
        self._notes: list[str] = []  # what the reader found worth saying that is no error

    def _install(self, index: Index) -> None:
        """Answer listing, ``info``, ``metadata`` and ``role`` from ``index`` (what a reader's ``_load`` found)."""
        self._infos: Mapping[str, TensorInfo] = index.infos if index.columns is None else index.columns
        self._aliases = index.aliases
        self._metadata = index.metadata
        self._roles = index.roles
        self._lazy_roles = index.lazy_roles

    # -- the per-format core ---------------------------------------------------------
    def _extent(self, info: TensorInfo) -> Extent | None:
        """Where ``info``'s stored bytes are; None where no single extent describes them."""
        return None

    def _read(self, info: TensorInfo) -> np.ndarray:
        """The tensor's values from its plain extent: a read-only view of the source's bytes (a native-order copy
        where the file's byte order is not), checked against the extent's checksum when ``verify_checksums``.
        Readers whose tensors must be decoded (inflated, dequantised, reassembled) override this for those."""
        extent = self._extent(info)
        if extent is None or extent.compression:
            raise NotImplementedError(f"{type(self).__name__} reads no tensor of {extent}")
        return self._read_extent(info, extent)

    def _read_extent(self, info: TensorInfo, extent: Extent) -> np.ndarray:
        """``info``'s values from the plain bytes of ``extent``: see ``_read``."""
        source = self._source_of(extent.file)
        assert source is not None, extent.file
        data = self._checked(info, extent, source) if extent.checksum and self.verify_checksums else None
        if data is None:
            data = source.read(extent.offset, extent.nbytes, f"tensor '{info.name}'") if extent.nbytes else b""
        if not extent.nbytes:  # an empty tensor (no other takes no bytes): its strides and offset are moot
            return np.ndarray(info.shape, info.dtype, buffer=data[:0])
        if extent.strides is None:
            array = np.ndarray(info.shape, extent.dtype, buffer=data)  # read-only: the map is
        else:
            strides = tuple(step * extent.dtype.itemsize for step in extent.strides)
            array = np.ndarray(info.shape, extent.dtype, buffer=data, strides=strides)
        if extent.dtype is not info.dtype and extent.dtype != info.dtype:
            array = native_order(np.ascontiguousarray(array), info.dtype)
        return array

    def _checked(self, info: TensorInfo, extent: Extent, source: AnySource) -> memoryview | bytes | None:
        """The extent's bytes, read with the span its checksum covers and found to match it (within
        ``checks_deferred``, a shared span's checksum under way); None where that span (shared by the tensors viewing
        one storage) was checked, or its check begun, before."""
        start, length = extent.checked or (extent.offset, extent.nbytes)
        span = (extent.file, start, length)
        if extent.checked is not None and (span in self._verified_spans or span in (self._deferred or ())):
            return None
        data = source.read(start, length, f"tensor '{info.name}'")
        function = checksum_function(extent.checksum)
        if extent.checked is None:
            if (actual := function(data)) != extent.expected:
                raise _damaged(info.name, extent, actual)
            return data
        # A span several tensors share, found sound once: its checksum is computed on the other cores
        if source.local_path is not None:
            self._span_checks.read_ahead(self._listed()[1][info.name], self._span_at)
        combine = checksum_combine(extent.checksum)
        if self._deferred is not None and source.local_path is not None:  # found sound or not when the block ends
            self._deferred[span] = (self._span_checks.later(span, data, function, combine), extent, info.name)
        elif (actual := self._span_checks.value(span, data, function, combine)) != extent.expected:
            raise _damaged(info.name, extent, actual)
        else:
            self._verified_spans.add(span)
        inner = extent.offset - start
        return data[inner : inner + extent.nbytes] if 0 <= inner <= length - extent.nbytes else None

    @contextlib.contextmanager
    def checks_deferred(self) -> Iterator[None]:
        """Within the block, a tensor whose checksum covers a span beside it (``Extent.checked``: its storage's zip
        member) in a mapped file is handed out before the span is found to match, its checksum computed on other
        threads meanwhile (``SpanChecks.later``); the block's end waits for them and raises the
        ``ChecksumMismatchError`` the first read of a damaged span would have raised. For a caller that makes
        nothing of the values before the end: ``convert`` writes them into a hidden folder it renames into place
        only after. A remote file's spans are checked when read, as outside the block: their bytes, fetched into
        memory, are not kept to its end. Nested: the outer block's."""
        if self._deferred is not None:
            yield
            return
        deferred: dict[tuple[str, int, int], tuple[Callable[[], int], Extent, str]] = {}
        self._deferred = deferred
        try:
            yield
        finally:
            self._deferred = None
        found = {span: value() for span, (value, _, _) in reversed(deferred.items())}  # the last first: see later
        for span, (_, extent, name) in deferred.items():
            if found[span] != extent.expected:
                raise _damaged(name, extent, found[span])
            self._verified_spans.add(span)

    def _listed(self) -> tuple[list[str], dict[str, int]]:
        if self._listing is None:
            self._listing = list(self._infos), {name: position for position, name in enumerate(self._infos)}
        return self._listing

    def _span_at(self, position: int) -> tuple[tuple[str, int, int], memoryview, Checksum, Combine | None] | None:
        """The checked span of the tensor at ``position`` in the listing, its bytes (mapped), checksum and combine,
        for ``SpanChecks.read_ahead``: None where there is none to check ahead; ``IndexError`` past the end."""
        name = self._listed()[0][position]
        try:
            extent = self._extent(self._infos[name])
            if extent is None or extent.checked is None or not extent.checksum or extent.compression:
                return None
            span = (extent.file, *extent.checked)
            source = self._source_of(extent.file)
            begun = span in self._verified_spans or span in (self._deferred or ())
            if begun or source is None or source.local_path is None:
                return None
            data = source.read(*extent.checked, f"tensor '{name}'")
        except WeightscopeError:  # its read will say so, when it is read
            return None
        return span, memoryview(data), checksum_function(extent.checksum), checksum_combine(extent.checksum)

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

    def parts(self, name: str) -> list[np.ndarray]:
        """Tensor ``name``'s values as arrays whose elements, each's in C order, one after another are the tensor's in
        C order: ``[self[name]]``, except from a reader that reassembles a tensor from pieces (DeepSpeed's ZeRO
        partitions), which gives the pieces, each a read-only view of its file checked as ``self[name]`` checks it,
        so that a writer streams them without joining them into one copy."""
        return [self[name]]

    def arrays(self, names: Iterable[str] | None = None) -> Iterator[tuple[str, np.ndarray]]:
        """Each named tensor (every one, by default) with its values, in order, as ``self[name]`` gives them. Where
        the reader decodes its tensors on threads of its own (``concurrent_reads``: zstd and zlib release the GIL)
        the next few are read ahead while one is used (one per thread, besides the one in use), and so they are from
        a remote checkpoint whose reads are ``threadsafe_reads`` (``sources.reading_many``: a bounded number of range
        requests in flight, each fetching exactly its tensor's bytes); an error is raised where its tensor comes in
        the order."""
        wanted = list(self if names is None else names)
        with reading_many(self.path) as in_flight:
            workers = _READ_AHEAD if self.concurrent_reads else 1
            if self.concurrent_reads or self.threadsafe_reads:
                workers = max(workers, in_flight)
            workers = min(workers, len(wanted))
            if workers < 2:
                yield from ((name, self[name]) for name in wanted)
                return
            from collections import deque
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(workers) as pool:
                pending = deque(pool.submit(self.__getitem__, name) for name in wanted[:workers])
                for number, name in enumerate(wanted):
                    array = pending.popleft().result()
                    if number + workers < len(wanted):
                        pending.append(pool.submit(self.__getitem__, wanted[number + workers]))
                    yield name, array

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

    def extent(self, name: str) -> Extent | None:
        """Where tensor ``name``'s stored bytes are (file, offset, stored type and byte order, strides, compression,
        checksum), from the index alone. None where no single extent describes them: a TensorFlow variable
        partitioned in slices, a tensor inside an HDF5 or ONNX model's structure, an unpickled array."""
        return self._extent(self.info(name))

    def view(self, name: str) -> StridedView | None:
        """The strides and stored bytes of tensor ``name`` when its values are not stored one after another in C
        order (a PyTorch view, a Fortran-order npy array), from the index alone; None when they are."""
        extent = self.extent(name)
        if extent is None or extent.strides is None:
            return None
        return StridedView(extent.strides, extent.nbytes)

    def slice(self, name: str) -> TensorSlice:
        """Tensor ``name``, to be indexed: ``ckpt.slice(name)[0:10, :]`` reads only the bytes those rows take where
        the tensor is plain bytes (unverified: see ``weightscope.slicing``), and equals ``ckpt[name][0:10, :]``."""
        info = self.info(name)
        from weightscope.slicing import TensorSlice  # lazy, and what it needs: listing never slices

        extent = self._extent(info)
        return TensorSlice(self, info, extent, None if extent is None else self._source_of(extent.file))

    def _source_of(self, file: str) -> AnySource | None:
        """The open byte source holding ``file`` (an extent's), where the reader keeps one."""
        return None

    def role(self, name: str) -> TensorRole:
        """What the tensor is for: a layer's weight, optimizer state of a variable, bookkeeping."""
        name = self.info(name).name
        if self._lazy_roles is not None:
            self._roles.update(self._lazy_roles())
            self._lazy_roles = None
        return self._roles.get(name) or _classify()(name)

    def infos(self) -> Iterator[TensorInfo]:
        return iter(self._infos.values())

    def by_name(self) -> Mapping[str, TensorInfo]:
        """Every tensor's info by its name, in the order listed: a read-only view of the index, not a copy."""
        return MappingProxyType(self._infos)

    def resolve(self, name: str) -> str:
        """The tensor ``name`` means: itself, or the tensor playing the role it names.

        ``layer1/weight`` resolves to ``layer1/kernel`` in a TensorFlow checkpoint.
        """
        if name in self:
            return self.info(name).name
        from weightscope.layers import find_by_role

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
        from weightscope.layers import explain_role_name, find_by_role

        found = find_by_role(name, self.layers())
        if found is not None:
            return TensorNotFoundError(f"{where}; {explain_role_name(name, found)}")
        import difflib  # a name not found is the only use: not imported at every start of the command line

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
        """The parameters grouped by layer, with their optimizer state attached (``Layers``: a table in a notebook)."""
        from weightscope.layers import group_layers

        return group_layers(self._infos.values(), self.role)

    def recorded_quantization(self) -> dict[str, QuantizedWeight]:
        """The quantised weights the file itself records as such, with parameters outside the names of any scheme
        (a TFLite tensor's scales and zero points, an OpenVINO decompression subgraph, Core ML's quantisation
        parameters and constexpr ops), by logical name: what ``dequantize`` reads them by beside the schemes
        ``weightscope.quant`` recognises by their tensors' names; {} for most formats."""
        return {}

    def framework_name(self, name: str) -> tuple[str, tuple[int, ...] | None] | None:
        """Tensor ``name`` as the framework it was converted from names it in PyTorch's convention (``conv.weight``),
        with the axes that lay it out as PyTorch does, where the format records it (a TFLite model's operators);
        None where the layer model decides from names and shapes (``analysis.canonical_names``)."""
        return None

    def layer_kind(self, layer: Layer) -> tuple[str, str] | None:
        """(kind, description) of ``layer`` where the format records what it is (a TFLite model's operators); None
        where ``conventions.describe`` tells it from its parameters' names and shapes."""
        return None

    def sharding(self) -> dict[str, Any] | None:
        """How a checkpoint saved by several ranks is split: ``ranks``, ``chunks_per_tensor`` (chunk count -> tensors),
        ``bytes_per_file``; None for one saved whole."""
        return None

    def unopened_parts(self) -> int:
        """How many parts (a model folder's shards) are still to be opened before every tensor's info is known:
        0 but for readers that open their parts when first asked (``open_parts`` opens them)."""
        return 0

    def open_parts(self, advance: Callable[[int, int], None]) -> None:
        """Open the parts ``unopened_parts`` counts, telling ``advance(1, 0)`` of each (a command's progress bar);
        a reader that opens everything as it opens has none."""

    def size_breakdown(self) -> dict[str, Any] | None:
        """Where a program's bytes go, by tensor and by the operators using them (an ExecuTorch program's: see its
        reader); None for a checkpoint that holds no program."""
        return None

    def checked_files(self) -> list[tuple[AnyPath, str, str]]:
        """Each file ``verify()`` reads, with its format and the checksums it checks there ("" none)."""
        return [(self.path, self.format, self.checksums)]

    def verify(self, advance: Callable[[int, int], None] | None = None) -> list[WeightscopeError]:
        """Read every tensor with its checksum checked; the problems found, if any. ``advance(1, nbytes)`` is
        told of each tensor read (a command's progress bar)."""
        problems: list[WeightscopeError] = []
        for info in self._infos.values():
            try:
                self._read(info)
            except WeightscopeError as error:
                problems.append(kept(error))
            if advance is not None:
                advance(1, info.nbytes)
        return problems

    def to_dask(self, name: str | None = None, *, chunk_bytes: int | None = None) -> Any:
        """Tensor ``name`` (all, by name, if None) as dask arrays whose chunks read only their own bytes.

        Needs dask (``pip install 'weightscope[dask]'``); see ``weightscope.lazy.to_dask``.
        """
        from weightscope.lazy import to_dask

        return to_dask(self, name, chunk_bytes=chunk_bytes)

    # -- lifetime ----------------------------------------------------------------------
    def close(self) -> None:
        self._span_checks.close()
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
        from weightscope.notebook import checkpoint_title  # (html, base64...): not imported at every start

        return f"<{checkpoint_title(self)}>"

    def _repr_html_(self) -> str:
        from weightscope.notebook import checkpoint_html

        return checkpoint_html(self)


class FolderCheckpoint(Checkpoint):
    """A checkpoint that is a local folder of files its reader opens as it reads the index: ``_prepare`` sets up what
    ``_close`` releases, ``_load`` reads the index (opening files as it goes) and returns it; when it fails, what it
    opened is closed."""

    def __init__(self, path: str | os.PathLike[str] | RemotePath, *, verify: bool = True) -> None:
        super().__init__(as_path(path))
        self.verify_checksums = verify
        self._prepare()
        try:
            self._install(self._load())
        except BaseException:
            self._close()
            raise

    def _prepare(self) -> None:
        """Set the attributes ``_load`` fills and ``_close`` releases: nothing is open yet."""

    def _load(self) -> Index:
        raise NotImplementedError


class FileCheckpoint(Checkpoint):
    """A checkpoint that is one file, mapped (or, remote, read by range) as ``self._source``; ``_load`` reads its index
    (setting the reader's own attributes as it goes) and returns it."""

    def __init__(self, path: str | os.PathLike[str] | RemotePath, *, verify: bool = True) -> None:
        super().__init__(as_path(path))
        self.verify_checksums = verify
        self._source = open_source(self.path)
        try:
            self._install(self._load())
        except BaseException:
            self._source.close()
            raise

    def _load(self) -> Index:
        raise NotImplementedError

    def _source_of(self, file: str) -> AnySource | None:
        return self._source if file == str(self.path) else None

    def _close(self) -> None:
        self._source.close()
