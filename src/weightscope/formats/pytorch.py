"""PyTorch checkpoints, zip (``torch.save``'s default since 1.6) or legacy, read without unpickling.

The file is a zip archive (see ``weightscope.containers.zip``) with one top-level folder
(the file's stem, or ``archive``) holding:

- ``data.pkl``: the saved object, a pickle (protocol 2). Tensors in it are calls of
  ``torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride,
  requires_grad, backward_hooks[, metadata])`` (``_rebuild_tensor_v3`` adds a dtype
  after the hooks, for types with no legacy storage class: uint16, float8, ...).
- ``data/<key>``: one storage's raw bytes. The pickle names a storage by a persistent id
  ``('storage', <storage class>, key, location, numel)``; the class (``torch.FloatStorage``,
  ..., or ``torch.storage.UntypedStorage`` with numel in bytes) gives the element type.
  Several tensors may view one storage, each at its own offset and strides (counted in
  elements; a transposed tensor is not contiguous). Strides may overlap: ``torch.expand``
  saves a stride of 0, so 4 stored bytes can be a tensor of 2^40 values. Such a view is
  listed as what it is (``view()``: strides, stored bytes), read as a numpy view of the
  same strides, and refused past the expansion cap (``weightscope.limits``) when read whole.
- ``byteorder`` (``little`` or ``big``; little when missing), ``version``,
  ``.format_version``, ``.storage_alignment``, ``.data/serialization_id``.

Members are stored uncompressed and 64-byte aligned, so storages are memory-mapped.

Security model: the pickles are read by ``weightscope.containers.unpickler``, which never
imports or calls anything, under ``TorchAllowList``: the globals ``torch.load(weights_only=True)``
allows (torch/_weights_only_unpickler.py), its functions reimplemented over inert values —
the tensor rebuild functions, ``Parameter``, ``collections.OrderedDict`` and ``Counter``
(with Python 2's list of pairs too), ``torch.Size``, ``torch.device``, ``_codecs.encode``
(latin1), ``set``, ``complex``, ``bytearray``, the storage classes and the ``torch.<dtype>``
values. What torch allows but holds no plain tensor (quantised, sparse, nested, meta
tensors) resolves, and calling it is ``UnsupportedFormatError`` by name; any other global is
``RefusedError`` as soon as its opcode is read, and so is ``BUILD`` on anything but a dict
(the way to an object's ``__setstate__``). A tensor's offset, shape and strides are checked
with Python ints against its storage before numpy sees them, and arrays are read-only views
of the mapped file.

The zip is read as ``torch.load`` reads it (see ``weightscope.formats._torch_kind`` for
how it tells a zip from the legacy format, and ``weightscope.containers.zip`` for the
archives refused because zip readers could read them differently): the folder is the first
member's, every member must be in it, and records are looked up by their UTF-8 bytes with
ASCII case ignored, as miniz looks them up. A reader must also refuse: a member name that
is absolute or holds a ``..`` part, no ``<folder>/data.pkl``, a TorchScript archive
(``constants.pkl``: ``torch.load`` hands it to ``torch.jit.load``), compressed members,
a persistent id naming a missing member or a storage of another size than its member, a
``byteorder`` other than exactly ``little`` or ``big``, a pickle that ends early, and two
tensors reached by the same dotted name. ``scan`` lists the globals and calls a pickle names,
without evaluating anything, for a look before opening.

The legacy format (``torch.save(..., _use_new_zipfile_serialization=False)``, the only one
before 1.6) is one file of consecutive pickles, each with its own memo: the magic number
``0x1950a86a20f9469cfc6c``, the protocol version ``1001``, a system-info dict
(``protocol_version``, ``little_endian``, ``type_sizes``), the saved object, and the sorted
list of storage keys. Then, for each key in that order, the storage: its element count as
an 8-byte int64 (in the file's byte order), then ``count`` x element-size raw bytes. In the
saved object a storage's persistent id has a sixth item, the view metadata, always None
since PyTorch 1.0. A file is read as legacy when ``torch.load`` would: it does not start
with ``PK\\x03\\x04`` and ``tarfile`` does not open it (a tar is refused). The sniffer
claims one only by torch's exact first 15 bytes (``PROTO 2``, the magic as ``LONG1``,
``STOP``). All five pickles go through the same allow-list unpickler
(the same globals, no others; a storage named in any pickle but the saved object is refused),
storages are memory-mapped read-only at their offsets, and a reader refuses: a magic number
or protocol version that is not torch's, a system info without ``little_endian``, storage
keys that are not distinct strings, a key no persistent id types, one key named with two
types or sizes, non-None view metadata (``UnsupportedFormatError``), an element count that
differs from the pickle's numel, and a storage or pickle that runs past the end of the file.
Legacy files hold no checksums. The older tar format (PyTorch before 0.4) and whole pickled
``nn.Module`` objects (``'module'`` persistent ids, which name classes) are not read.
"""

from __future__ import annotations

import math
import mmap
import os
from typing import Any, ClassVar, Literal, NamedTuple

from weightscope.bounds import check_range
from weightscope.checkpoint import Extent, FileCheckpoint, Index, TensorInfo
from weightscope.containers.allow_list import Global as _Global
from weightscope.containers.allow_list import ScanEntry, ScanReport
from weightscope.containers.allow_list import is_int as _is_int
from weightscope.containers.allow_list import show as _show
from weightscope.containers.unpickler import size_of
from weightscope.containers.zip import STORED, Member, check_crc, escapes, is_deflated, read_directory
from weightscope.dtypes import BY_NAME, ElementType, check_rank, check_size
from weightscope.errors import (
    CorruptCheckpointError,
    LimitExceededError,
    TruncatedFileError,
    UnsupportedFormatError,
    WeightscopeError,
    kept,
)
from weightscope.formats._torch_kind import torch_kind
from weightscope.formats.pytorch_pickle import TorchAllowList, _Storage, _Tensor, _Unpickler
from weightscope.layers import TensorRole
from weightscope.limits import Budget, Limits, span_nbytes
from weightscope.sources import AnyPath, AnySource, as_path, open_source

MAX_CONTAINERS = 10_000_000
MAX_NESTING = 200  # dict and list levels between the saved object and a tensor
# Values the walk over the saved object may visit, per byte of its pickle (plus a floor): a
# value reached twice through the memo is walked twice, so 30 lists each holding the one
# before twice would make 2^30 visits from 850 bytes. A torch.save file spends tens of
# bytes per tensor; even a state dict saved under ten keys stays far below this.
VISITS_PER_BYTE = 8
MIN_VISITS = 10_000
TENSOR_BYTES = 2048  # what one listed tensor costs: its records, its role, its row in a listing
_SCALARS = (str, int, float, bool, type(None), complex)


# -- the reader ----------------------------------------------------------------------------

# Where a training checkpoint keeps the model's state dict, to choose among several.
MODEL_KEYS = frozenset({"model", "state_dict", "model_state_dict", "model_state", "net", "network", "module"})
# Buffers ``state_dict()`` lists but ``parameters()`` does not (BatchNorm's).
BUFFER_NAMES = frozenset({"running_mean", "running_var", "num_batches_tracked"})


def _is_optimizer(value: object) -> bool:
    """Whether ``value`` looks like ``optimizer.state_dict()``."""
    return isinstance(value, dict) and {"state", "param_groups"} <= value.keys() and isinstance(value["state"], dict)


def _is_state_dict(value: object) -> bool:
    """Whether ``value`` looks like ``model.state_dict()``: a dict of tensors by dotted name."""
    return (
        isinstance(value, dict)
        and bool(value)
        and all(isinstance(key, str) and isinstance(item, _Tensor) for key, item in value.items())
    )


class _Stored(NamedTuple):
    start: int  # file offset of the member's bytes
    size: int
    crc: int


class _Archive(NamedTuple):
    """A PyTorch zip's members as ``torch.load`` finds them: ``<folder>/<record>``, the folder
    the first member's, looked up by UTF-8 bytes with ASCII case ignored (miniz's lookup)."""

    folder: bytes
    members: dict[bytes, _Stored]  # by lowercased name
    entries: tuple[Member, ...] = ()  # a TorchScript archive's: every member, compressed ones (code/) too

    def name(self, record: str) -> str:
        return f"{self.folder.decode('utf-8', 'replace')}/{record}"

    def find(self, record: str, path: AnyPath) -> _Stored | None:
        try:
            key = self.folder + b"/" + record.encode("utf-8")
        except UnicodeEncodeError:
            raise CorruptCheckpointError(f"{path}: a record name PyTorch cannot look up: {record!r}") from None
        return self.members.get(key.lower())


def _members(source: AnySource, path: AnyPath, *, torchscript: bool = False) -> _Archive:
    """The archive's folder and stored members, refused where torch.load would read others or none.

    With ``torchscript`` (``torch.jit.load``'s reading): ``constants.pkl`` is expected, every directory entry is
    kept in ``entries``, and deflated members (``code/``) are allowed but left out of ``members``, except pickles
    and storages, which must be stored."""
    members: dict[bytes, _Stored] = {}
    entries = read_directory(source, path)
    if not entries:
        raise CorruptCheckpointError(f"{path}: an empty zip; a PyTorch zip holds data.pkl")
    folder, slash, _ = entries[0].raw_name.partition(b"/")
    for entry in entries:
        what = f"{path}: member '{entry.filename}'"
        if escapes(entry.filename):
            raise CorruptCheckpointError(f"{what}: a member name outside the archive's folder")
        if not slash or not entry.raw_name.startswith(folder + b"/"):
            raise CorruptCheckpointError(
                f"{what} is outside the archive's folder (that of the first member): torch.load refuses the file"
            )
        if entry.compress_type != STORED or entry.compress_size != entry.file_size:
            record = entry.raw_name[len(folder) + 1 :]
            data = record.endswith(b".pkl") or record.startswith((b"data/", b"constants/"))
            if torchscript and not data and is_deflated(entry, what):
                continue
            raise UnsupportedFormatError(f"{what} is compressed; PyTorch stores its members uncompressed")
        members[entry.raw_name.lower()] = _Stored(entry.start, entry.file_size, entry.CRC)
    if not torchscript and any(entry.raw_name == folder + b"/constants.pkl" for entry in entries):
        raise UnsupportedFormatError(
            f"{path}: a TorchScript archive (torch.jit.save): torch.load hands it to torch.jit.load; "
            "open it with format='torchscript'"
        )
    archive = _Archive(folder, members, tuple(entries) if torchscript else ())
    if archive.find("data.pkl", path) is None:
        raise CorruptCheckpointError(f"{path}: no '{archive.name('data.pkl')}' member; a PyTorch zip has one")
    return archive


def _read_member(source: AnySource, path: AnyPath, name: str, member: _Stored, verify: bool) -> memoryview:
    data = source.read(member.start, member.size, f"member '{name}'")
    if verify:
        check_crc(data, member.crc, f"{path}: member '{name}'")
    return data


# -- the legacy format ---------------------------------------------------------------------

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
LEGACY_PROTOCOL = 1001  # torch.serialization.PROTOCOL_VERSION
# How torch.save(..., _use_new_zipfile_serialization=False) begins: the magic number pickled
# at protocol 2 (PROTO 2, LONG1 of 10 bytes, STOP). The sniffer checks these 15 bytes.
LEGACY_HEAD = b"\x80\x02\x8a\x0a" + LEGACY_MAGIC.to_bytes(10, "little") + b"."
LEGACY_PICKLES = ("magic number", "protocol version", "system info", "saved object", "storage keys")


def _is_legacy(source: AnySource, path: AnyPath) -> bool:
    """Whether torch.load reads the file as the legacy format (a stream of pickles) rather than as a zip."""
    kind = torch_kind(source, path)
    if kind == "tar":
        raise UnsupportedFormatError(
            f"{path}: a tar archive, which torch.load reads as the format of PyTorch before 0.4; weightscope does not"
        )
    return kind == "legacy"


def _whole(source: AnySource) -> bytes | mmap.mmap:
    """The whole mapped file, for an unpickler to read the pickles at its start without copying the rest."""
    if source.size == 0:
        return b""
    whole = source.read(0, source.size, "the file").obj
    assert isinstance(whole, bytes | mmap.mmap)
    return whole


class _Legacy(NamedTuple):
    saved: Any
    little_endian: bool
    storages: dict[str, _Stored]  # by key: the raw bytes after each one's element count
    pickled: int  # bytes of the saved object's pickle


def _read_legacy(source: AnySource, path: AnyPath, budget: Budget) -> _Legacy:
    """Read the five pickles of a legacy file, then locate its storages after them."""
    data, position = _whole(source), 0
    values: list[Any] = []
    storages: dict[str, _Storage] = {}
    pickled = 0
    for index, label in enumerate(LEGACY_PICKLES):
        unpickler = _Unpickler(data, f"{path}: the {label} pickle", start=position, pid_length=6, budget=budget)
        value = unpickler.load()
        if index == 3:
            pickled = unpickler.position - position
        position = unpickler.position
        if unpickler.storages and index != 3:
            raise CorruptCheckpointError(f"{path}: the {label} pickle names a storage")
        storages = storages or unpickler.storages
        if index == 0 and (not _is_int(value) or value != LEGACY_MAGIC):
            raise UnsupportedFormatError(f"{path}: a pickle, but not torch.save's: it starts with {_show(value, 80)}")
        if index == 1 and (not _is_int(value) or value != LEGACY_PROTOCOL):
            raise UnsupportedFormatError(f"{path}: legacy protocol version {_show(value, 80)}; weightscope reads 1001")
        if index == 2 and not (isinstance(value, dict) and isinstance(value.get("little_endian"), bool)):
            raise CorruptCheckpointError(
                f"{path}: the system info is not a dict with little_endian: {_show(value, 200)}"
            )
        values.append(value)
    keys = values[4]
    if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys) or len(set(keys)) != len(keys):
        raise CorruptCheckpointError(f"{path}: the storage keys are not a list of distinct strings: {_show(keys, 200)}")
    order: Literal["little", "big"] = "little" if values[2]["little_endian"] else "big"
    located: dict[str, _Stored] = {}
    for key in keys:
        storage = storages.get(key)
        if storage is None:
            raise CorruptCheckpointError(f"{path}: storage '{key}' is listed but no persistent id names its type")
        header = bytes(source.read(position, 8, f"storage '{key}'s element count"))
        count = int.from_bytes(header, order, signed=True)
        if count != storage.numel:
            raise CorruptCheckpointError(
                f"{path}: storage '{key}' holds {count} elements; the pickle says {storage.numel}"
            )
        size = count * BY_NAME[storage.element].dtype.itemsize  # type: ignore[union-attr]
        # TruncatedFileError past the end, from the size alone: reading would fetch every storage of a remote file
        check_range(path, position + 8, size, source.size, f"storage '{key}'")
        located[key] = _Stored(position + 8, size, 0)
        position += 8 + size
    return _Legacy(values[3], order == "little", located, pickled)


def scan(
    path: str | os.PathLike[str],
    *,
    allow: type[TorchAllowList] = TorchAllowList,
    reader: type[PyTorchCheckpoint] | None = None,
) -> ScanReport:
    """The globals and calls the checkpoint's pickles name, each marked allowed or refused, and the verdict.

    Nothing is imported or called. The pickles are followed past refusals (and past a
    stream that leaves values under its result) to the end or to where they cannot be
    read, so every name before damage is listed; the verdict is what opening the file
    raises (as ``ls`` does), so the two always agree. ``allow`` and ``reader`` are a wider allow-list and the
    reader under it (DeepSpeed's rank files, TorchScript archives: the reader says which pickles a zip holds and
    what else of it to list).
    """
    location = as_path(path)
    report = ScanReport()
    source = open_source(location)
    found: dict[tuple[str, str, bool], int] = {}
    budget = Budget(Limits.for_size(source.size), location)
    opener = reader or PyTorchCheckpoint
    try:
        if _is_legacy(source, location):
            data, position = _whole(source), 0
            for _ in LEGACY_PICKLES:
                unpickler = _Unpickler(data, f"{location}", scan=True, start=position, pid_length=6, budget=budget)
                unpickler.load()
                for key, count in unpickler.found.items():
                    found[key] = found.get(key, 0) + count
                report.verdict = report.verdict or _over_budget(unpickler)
                if unpickler.stopped:
                    break
                position = unpickler.position
        else:
            archive = _members(source, location, torchscript=opener.torchscript)
            report.notes = opener.contents(archive)
            for record in opener.pickles:
                member = archive.find(record, location)
                if member is None:
                    continue  # (data.pkl: _members checked it)
                data = bytes(_read_member(source, location, archive.name(record), member, True))
                where = f"{location}: {record}" if opener.torchscript else f"{location}"
                unpickler = _Unpickler(data, where, scan=True, budget=budget, allow=allow())
                unpickler.load()
                for key, count in unpickler.found.items():
                    found[key] = found.get(key, 0) + count
                report.verdict = report.verdict or _over_budget(unpickler)
    except WeightscopeError as error:  # no pickle to follow: a broken zip, a member missing
        report.verdict = kept(error)
    finally:
        source.close()
    report.extend(ScanEntry(opcode, name, allowed, count) for (opcode, name, allowed), count in found.items())
    if report.verdict is None:
        try:
            opener(path).close()
        except WeightscopeError as error:
            report.verdict = kept(error)
    return report


def _over_budget(unpickler: _Unpickler) -> LimitExceededError | None:
    """The scan's verdict when the pickle outgrew the file's memory cap: opening would stop at the same
    opcode, and building all that again only to be told so could overrun what the first build left behind."""
    return unpickler.verdict if isinstance(unpickler.verdict, LimitExceededError) else None


class PyTorchCheckpoint(FileCheckpoint):
    """A ``torch.save`` zip: tensors named by their dotted path in the saved dicts and lists."""

    format = "pytorch"
    checksums = "zip CRC-32"

    _budget: Budget  # what reading the pickle and naming its values may spend
    _tensors: dict[str, tuple[_Tensor, _Stored]]  # name -> the tensor and its storage's bytes
    _verified: set[_Stored]  # records (data.pkl, byteorder) whose CRC-32 was found sound
    _visits = 0
    _max_visits = MAX_CONTAINERS
    _legacy: dict[str, _Stored] | None = None  # a legacy file's storages by key
    _byteorder: Literal["<", ">"] = "<"
    torchscript: ClassVar[bool] = False  # its zips are read as torch.jit.load reads them (see _members)
    pickles: ClassVar[tuple[str, ...]] = ("data.pkl",)  # the zip's pickles, which scan follows

    @staticmethod
    def contents(archive: _Archive) -> tuple[str, ...]:
        """Lines ``scan`` adds on what the zip holds besides what its pickles name: none for ``torch.save``'s."""
        return ()

    def _load(self) -> Index:
        self._budget = Budget(Limits.for_size(self._source.size), self.path)
        self._tensors, self._verified, index = {}, set(), Index()
        if _is_legacy(self._source, self.path):
            legacy = _read_legacy(self._source, self.path, self._budget)
            self.checksums = ""  # the legacy format has none
            self._legacy = legacy.storages
            self._byteorder = "<" if legacy.little_endian else ">"
            self._visits_for(legacy.pickled)
            self._walk(index, legacy.saved, "", 0, optimizer=False)
            return index
        self._open_zip()
        data = bytes(self._member_bytes("data.pkl"))
        saved = self._unpickle(data)
        self._visits_for(len(data))
        self._walk(index, saved, "", 0, optimizer=False)
        return index

    def _open_zip(self) -> None:
        """Find the zip's members and the byte order its record says."""
        self._archive = _members(self._source, self.path, torchscript=self.torchscript)
        # torch.load takes the record's bytes as they are: b"little", b"big", or an error
        order = bytes(self._member_bytes("byteorder")) if self._archive.find("byteorder", self.path) else b"little"
        if order not in (b"little", b"big"):
            raise CorruptCheckpointError(f"{self.path}: byteorder is {order[:80]!r}; expected 'little' or 'big'")
        self._byteorder = "<" if order == b"little" else ">"

    def _visits_for(self, pickled: int) -> None:
        """Let the walk over a pickle of ``pickled`` bytes visit values in proportion to its size."""
        self._max_visits = min(MAX_CONTAINERS, MIN_VISITS + VISITS_PER_BYTE * pickled)

    def _unpickle(self, data: bytes) -> Any:
        """The saved object of a zip's ``data.pkl``, under torch's allow-list."""
        return _Unpickler(data, str(self.path), budget=self._budget).load()

    def _member_bytes(self, record: str) -> memoryview:
        """The bytes of ``<folder>/<record>``, found as torch.load finds it."""
        name, member = self._archive.name(record), self._archive.find(record, self.path)
        if member is None:
            raise CorruptCheckpointError(f"{self.path}: no member '{name}'")
        verify = self.verify_checksums and member not in self._verified
        data = _read_member(self._source, self.path, name, member, verify)
        self._verified.add(member)
        return data

    def _walk(self, index: Index, value: Any, name: str, depth: int, *, optimizer: bool) -> None:
        """Name the tensors in dicts and lists by their dotted path; note scalar leaves as metadata."""
        self._visit(depth)
        # Names, tensor entries and metadata are charged as what listing them will make:
        # one string shared through the memo becomes as many copies as places it is reached.
        spend = self._budget.spend
        if isinstance(value, _Tensor):
            spend(TENSOR_BYTES + size_of(name), "the tensors listed")
            self._add(index, name or self.path.stem, value, optimizer)
        elif isinstance(value, dict):
            is_optimizer = _is_optimizer(value)
            for key, item in value.items():
                spend(len(name) + size_of(key), "the names of the saved values")
                child = f"{name}.{key}" if name else str(key)
                self._walk(index, item, child, depth + 1, optimizer=optimizer or (is_optimizer and key == "state"))
            self._attach_optimizer_state(index, value, name)
        elif isinstance(value, list | tuple) and not all(isinstance(item, _SCALARS) for item in value):
            for position, item in enumerate(value):
                spend(len(name) + size_of(position), "the names of the saved values")
                self._walk(index, item, f"{name}.{position}" if name else str(position), depth + 1, optimizer=optimizer)
        elif isinstance(value, (*_SCALARS, list, tuple, set, frozenset)):
            items = value if isinstance(value, list | tuple | set | frozenset) else (value,)
            # A repr escapes a character in at most 10 (\U0001f600): charged before it is made.
            spend(sum(10 * len(item) if isinstance(item, str) else 32 for item in items), "the metadata shown")
            index.metadata[name] = str(value) if isinstance(value, str) else repr(value)
        elif isinstance(value, _Global):
            index.metadata[name] = value.qualname
        # Storages and bytes saved bare are not tensors: nothing to list.

    def _visit(self, depth: int) -> None:
        """Count one value the walk reaches ``depth`` levels down; refuse past the caps."""
        self._visits += 1
        if depth > MAX_NESTING:
            raise CorruptCheckpointError(f"{self.path}: the saved object nests deeper than {MAX_NESTING} levels")
        if self._visits > self._max_visits:
            raise CorruptCheckpointError(
                f"{self.path}: the saved object reaches more than {self._max_visits} values (shared through the "
                "pickle's memo, a small pickle can name exponentially many)"
            )

    def _attach_optimizer_state(self, found: Index, saved: dict[Any, Any], name: str) -> None:
        """Name the parameter each optimizer state tensor belongs to, where a training
        checkpoint (``{"model": model.state_dict(), "optimizer": optimizer.state_dict()}``)
        lets it be decided; otherwise leave the state without an owner.

        ``optimizer.state_dict()`` keys state by parameter index; its ``param_groups``
        list the indices 0, 1, ... in the order the optimizer was given its parameters,
        for ``model.parameters()`` the state dict's order without buffers. The mapping is
        made only when there is one optimizer and one state dict beside it, the
        parameters (its tensors less BatchNorm's buffers) are as many as the indices, and
        every state tensor has its parameter's shape or is a scalar (``step``).
        """
        optimizers = [key for key, item in saved.items() if _is_optimizer(item)]
        models = [key for key, item in saved.items() if _is_state_dict(item)]
        if len(models) > 1:
            models = [key for key in models if key in MODEL_KEYS]
        if len(optimizers) != 1 or len(models) != 1:
            return
        optimizer, model = saved[optimizers[0]], saved[models[0]]
        parameters = [key for key in model if key.rpartition(".")[2] not in BUFFER_NAMES]
        indices: list[Any] = []
        for group in optimizer["param_groups"] if isinstance(optimizer["param_groups"], list | tuple) else [None]:
            if not isinstance(group, dict) or not isinstance(group.get("params"), list | tuple):
                return
            indices.extend(group["params"])
        if not all(_is_int(index) for index in indices) or indices != list(range(len(parameters))):
            return
        prefix = f"{name}." if name else ""
        state_name, model_name = f"{prefix}{optimizers[0]}.state", f"{prefix}{models[0]}"
        roles: dict[str, TensorRole] = {}
        for index, slots in optimizer["state"].items():
            if not _is_int(index) or not 0 <= index < len(parameters) or not isinstance(slots, dict):
                return
            parameter = model[parameters[index]]
            for slot, tensor in slots.items():
                if not isinstance(tensor, _Tensor):
                    continue  # an int step, older torch: metadata
                tensor_name = f"{state_name}.{index}.{slot}"
                if tensor.shape not in (parameter.shape, ()) or tensor_name not in found.infos:
                    return
                roles[tensor_name] = TensorRole("optimizer", role=str(slot), owner=f"{model_name}.{parameters[index]}")
        found.roles.update(roles)

    def _add(self, index: Index, name: str, tensor: _Tensor, optimizer: bool, folder: str = "data") -> None:
        """List ``tensor`` as ``name``, its storage the member ``<folder>/<key>`` (a TorchScript archive's constants
        are in ``constants/``), once its offset, shape and strides are checked against the storage."""
        if name in self._tensors:
            raise UnsupportedFormatError(f"{self.path}: two tensors are named '{name}'")
        element: ElementType = BY_NAME[tensor.element]
        dtype = element.dtype
        assert dtype is not None
        if dtype.itemsize > 1:
            dtype = dtype.newbyteorder(self._byteorder)
        storage = tensor.storage
        if self._legacy is not None:
            member_name, member = storage.key, self._legacy.get(storage.key)
        else:
            member_name = self._archive.name(f"{folder}/{storage.key}")
            member = self._archive.find(f"{folder}/{storage.key}", self.path)
        what = f"{self.path}: tensor '{name}'"
        check_rank(tensor.shape, what)
        if member is None:
            raise CorruptCheckpointError(f"{what}: its storage '{member_name}' is missing")
        storage_bytes = storage.numel * BY_NAME[storage.element].dtype.itemsize  # type: ignore[union-attr]
        if storage_bytes > member.size:
            raise TruncatedFileError(
                f"{what}: its storage needs {storage_bytes} bytes; '{member_name}' has {member.size}"
            )
        if storage_bytes != member.size:  # torch.load refuses a record of any other size
            raise CorruptCheckpointError(
                f"{what}: its storage is {storage_bytes} bytes; '{member_name}' holds {member.size}"
            )
        size = math.prod(tensor.shape)
        capacity = storage_bytes // dtype.itemsize
        if min(tensor.shape + tensor.stride + (tensor.offset,), default=0) < 0:
            raise CorruptCheckpointError(f"{what}: a negative size, stride or offset")
        last = tensor.offset + sum(
            (length - 1) * step for length, step in zip(tensor.shape, tensor.stride, strict=True)
        )
        if size and last >= capacity:
            raise CorruptCheckpointError(
                f"{what}: offset {tensor.offset}, shape {list(tensor.shape)} and strides {list(tensor.stride)} "
                f"reach element {last} of a storage of {capacity}"
            )
        # A view with zero strides fits any storage; an empty one any shape: numpy holds neither past 2^63 bytes.
        check_size(tensor.shape, dtype.itemsize, what)
        offset = member.start + tensor.offset * dtype.itemsize
        info = TensorInfo(name, dtype, tensor.shape, size * dtype.itemsize, element.name, str(self.path), offset, name)
        index.infos[name] = info
        self._tensors[name] = tensor, member
        if optimizer:
            index.roles[name] = TensorRole("optimizer", role=name.rpartition(".")[2])

    def _extent(self, info: TensorInfo) -> Extent:
        tensor, member = self._tensors[info.name]
        expected = 1  # the stride of C order: a tensor whose every axis longer than 1 has it is stored in order
        contiguous = True
        for length, step in zip(reversed(tensor.shape), reversed(tensor.stride), strict=True):
            contiguous = contiguous and (length == 1 or step == expected)
            expected *= length
        strides, nbytes = None, info.nbytes
        if not info.size:
            nbytes = 0
        elif not contiguous:
            itemsize = info.dtype.itemsize
            strides, nbytes = (
                tensor.stride,
                span_nbytes(tensor.shape, [step * itemsize for step in tensor.stride], itemsize),
            )
        if self._legacy is not None:  # the legacy format has no checksums
            return Extent(info.file, info.offset, nbytes, info.dtype, strides)
        # The zip's CRC-32 covers the whole storage, which views of it share: checked once.
        checked = (member.start, member.size)
        return Extent(info.file, info.offset, nbytes, info.dtype, strides, "", "crc32", member.crc, checked)
