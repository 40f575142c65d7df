"""NumPy ``.npy`` arrays and ``.npz`` archives of them.

``.npy`` (``numpy/lib/format.py``, NEP 1):

- 6 bytes of magic ``\\x93NUMPY``, then the version: 2 bytes, major and minor.
- the header length: uint16 little-endian in version 1.0, uint32 in 2.0 and 3.0.
- the header: that many bytes, latin-1 (1.0, 2.0) or UTF-8 (3.0): the text of a Python
  dict literal (Python 2 wrote long integers as ``2L`` in 1.0 and 2.0 headers, which
  ``np.load`` accepts: so does the reader) with exactly the keys ``descr`` (a dtype descriptor: ``'<f4'``, or a list
  of fields for structured types), ``fortran_order`` (bool) and ``shape`` (a tuple of
  ints), padded with spaces and a newline so the data starts at a multiple of 64.
- the data: elements × item size bytes in the descriptor's byte order, column-major
  where ``fortran_order`` is true. Bytes after them are ignored, as ``np.load`` does.

A reader must refuse: a missing magic, a version other than 1.0, 2.0 or 3.0, a header
longer than numpy's limit for untrusted files (10,000 bytes) or running past the end of
the file, a header that is not a literal dict of those three keys (parsed with
``ast.literal_eval``, never ``eval``), a shape that is not a tuple of non-negative ints,
a descriptor numpy does not know, and data shorter than the shape needs. Object arrays
(``descr`` ``'|O'``, or fields holding objects) are stored as pickles: they are refused,
never unpickled (``RefusedError``: loading them would run the pickle).

``.npz`` (``np.savez``, ``np.savez_compressed``): a zip archive of ``.npy`` members, one
per array, named after the array plus ``.npy``. Members are stored (read as views of the
mapped file: their data starts after the member's local header, 30 bytes plus the name
and extra field lengths that header gives) or deflated (inflated into memory when read).
The zip's structure is checked as ``weightscope.containers.zip`` says (an archive that
``zipfile``, which ``np.load`` uses, could read differently is refused). A reader must
also refuse: two members of one name once ``.npy`` is dropped, encrypted members and
other compression methods, a stored member whose sizes differ, a deflated member declaring more bytes than deflate can
produce from its compressed size (a zip bomb: refused before inflating anything), a
deflate stream that does not inflate to exactly the declared size, and (unless
verification is off) a CRC-32 that does not match the member's bytes.

Writing (``save``): an ``.npz`` as ``np.savez`` makes it: a zip of stored ``<name>.npy``
members, each with the header ``np.save`` writes for the array in little-endian C order
(version 1.0, or 2.0 when the header outgrows 1.0's 65,535 bytes), CRC-32s computed while
the data streams, zip64 records when a size or offset needs them. Members' data are
aligned to 64 bytes within the file (an extra field pads the local header, as PyTorch
does), so our reader's views of them are aligned. Names may hold ``/`` (member paths, as
``np.savez`` allows) but no empty, ``.`` or ``..`` component, no leading ``/`` and no
``\\``. Only numbers are written (bool, integers, floats, complex): ``np.save`` records
bfloat16 and the float8 types of ``ml_dtypes`` as raw bytes (descr ``'<V2'``, ``'<V1'``)
that ``np.load`` and our reader return as void, so they are refused; safetensors and
PyTorch hold them.
"""

from __future__ import annotations

import ast
import io
import math
import os
import struct
import tokenize
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np

from weightscope.checkpoint import Extent, FileCheckpoint, Index, TensorInfo
from weightscope.containers.zip import (
    ZIP_NAME_MAX,
    Member,
    ZipWriter,
    check_crc,
    inflate,
    is_deflated,
    read_directory,
)
from weightscope.dtypes import check_rank, check_size
from weightscope.errors import (
    CorruptCheckpointError,
    RefusedError,
    TruncatedFileError,
    UnsupportedFormatError,
    UsageError,
)
from weightscope.writing import Holds, Writer, array_bytes, plan

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from weightscope.writing import Tensors

MAGIC = b"\x93NUMPY"
MAX_HEADER_SIZE = 10_000  # np.load's limit (max_header_size) for files it does not trust
# Version -> the header length's struct and the header's encoding.
_VERSIONS = {(1, 0): ("<H", "latin1"), (2, 0): ("<I", "latin1"), (3, 0): ("<I", "utf8")}
_HEAD_SIZE = len(MAGIC) + 2 + 4 + MAX_HEADER_SIZE  # the most bytes a header can take
# Remote reads: what is fetched of a member at first (np.save pads its headers to 64 or 128 bytes).
_USUAL_HEAD_SIZE = 512
_LOCAL_HEADER_SIZE = 30
_EXTRA_SLACK = 64
_KEYS = {"descr", "fortran_order", "shape"}


class ArrayHeader(NamedTuple):
    dtype: np.dtype
    shape: tuple[int, ...]
    fortran_order: bool
    size: int  # bytes from the magic to the array data


def read_array_header(head: bytes | memoryview, what: str) -> ArrayHeader:
    """The ``.npy`` header at the start of ``head``; ``what`` names the array in errors."""
    head = memoryview(head)
    if head[: len(MAGIC)] != MAGIC[: len(head)]:
        raise CorruptCheckpointError(f"{what} is not a .npy array (no \\x93NUMPY magic)")
    if len(head) < len(MAGIC) + 2:
        raise TruncatedFileError(f"{what}: EOF in the .npy magic and version")
    version = (head[6], head[7])
    if version not in _VERSIONS:
        major, minor = version
        raise UnsupportedFormatError(f"{what}: .npy format version {major}.{minor}; weightscope reads 1.0-3.0")
    length_format, encoding = _VERSIONS[version]
    start = len(MAGIC) + 2 + struct.calcsize(length_format)
    if len(head) < start:
        raise TruncatedFileError(f"{what}: EOF in the .npy header length")
    (length,) = struct.unpack_from(length_format, head, start - struct.calcsize(length_format))
    if length > MAX_HEADER_SIZE:
        raise CorruptCheckpointError(f"{what}: a .npy header of {length} bytes, over the limit of {MAX_HEADER_SIZE}")
    if len(head) < start + length:
        raise TruncatedFileError(f"{what}: EOF in the .npy header: {length} bytes declared, {len(head) - start} stored")
    try:
        fields = _header_literal(bytes(head[start : start + length]).decode(encoding), version)
    except (UnicodeDecodeError, SyntaxError, ValueError, TypeError, MemoryError, RecursionError) as error:
        raise CorruptCheckpointError(f"{what}: the .npy header is not a Python literal ({error})") from None
    if not isinstance(fields, dict) or fields.keys() != _KEYS:
        raise CorruptCheckpointError(f"{what}: the .npy header is not a dict of descr, fortran_order and shape")
    shape, fortran_order = fields["shape"], fields["fortran_order"]
    if not isinstance(shape, tuple) or not all(type(size) is int and size >= 0 for size in shape):
        raise CorruptCheckpointError(f"{what} has shape {shape!r}; expected a tuple of non-negative integers")
    if not isinstance(fortran_order, bool):
        raise CorruptCheckpointError(f"{what} has fortran_order {fortran_order!r}; expected True or False")
    descr = fields["descr"]
    try:
        dtype = np.lib.format.descr_to_dtype(descr)
    except Exception as error:  # hostile descriptors make numpy raise all kinds of errors
        raise UnsupportedFormatError(f"{what} has descr {descr!r}, not a dtype numpy knows ({error})") from None
    if dtype.hasobject:
        raise RefusedError(f"{what} holds Python objects (pickle); weightscope never unpickles")
    shape += dtype.shape  # a subarray dtype adds its dimensions, as in any numpy array
    check_rank(shape, what)
    return ArrayHeader(dtype.base, shape, fortran_order, start + length)


def _header_literal(text: str, version: tuple[int, int]) -> object:
    """The header's dict literal, as ``np.load`` parses it: a 1.0 or 2.0 header that Python 2
    wrote may have long integers (``(2L, 3L)``), whose ``L`` numpy's ``_filter_header`` drops
    token by token before a second ``literal_eval``; still literals only, never ``eval``."""
    try:
        return ast.literal_eval(text)
    except SyntaxError:
        if version > (2, 0):
            raise
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, IndentationError) as error:
        raise SyntaxError(str(error)) from None
    kept = []
    after_number = False
    for token in tokens:
        if after_number and token.type == tokenize.NAME and token.string == "L":
            continue  # numpy's filter keeps looking after a number's dropped L: so does this one
        kept.append(token)
        after_number = token.type == tokenize.NUMBER
    return ast.literal_eval(tokenize.untokenize(kept))


class _Member(NamedTuple):
    """Where one array's ``.npy`` bytes are: a whole ``.npy`` file, or a member of a zip."""

    start: int  # file offset of the stored (maybe deflated) bytes
    stored_size: int
    size: int  # once inflated
    deflated: bool
    crc: int | None  # the zip's CRC-32 of the inflated bytes
    header: ArrayHeader


class NumpyCheckpoint(FileCheckpoint):
    """Arrays in the ``.npy`` format: a format lists its members in ``_load``."""

    _members: dict[str, _Member]  # by tensor name: where its .npy bytes are

    def _add(self, index: Index, name: str, member: _Member) -> None:
        header = member.header
        nbytes = math.prod(header.shape) * header.dtype.itemsize
        if header.size + nbytes > member.size:
            raise TruncatedFileError(
                f"{self.path}: tensor '{name}' has {member.size - header.size} bytes of data; "
                f"shape {list(header.shape)} of {header.dtype} needs {nbytes}"
            )
        # Only a shape with a zero in it gets here with more bytes than a file holds.
        check_size(header.shape, header.dtype.itemsize, f"{self.path}: tensor '{name}'")
        offset = member.start if member.deflated else member.start + header.size
        info = TensorInfo(name, header.dtype, header.shape, nbytes, header.dtype.name, str(self.path), offset, name)
        index.infos[name] = info
        self._members[name] = member

    def _extent(self, info: TensorInfo) -> Extent:
        member = self._members[info.name]
        checksum = "" if member.crc is None else "crc32"
        if member.deflated:  # the CRC-32 is of the inflated member: its .npy header, then the array
            return Extent(
                info.file, member.start, member.stored_size, np.dtype(np.uint8), None, "deflate", checksum, member.crc
            )
        header = member.header
        strides = None
        if header.fortran_order and len(header.shape) > 1:
            strides = tuple(math.prod(header.shape[:axis]) for axis in range(len(header.shape)))
        checked = None if member.crc is None else (member.start, member.stored_size)  # the member, header too
        offset = member.start + header.size
        return Extent(info.file, offset, info.nbytes, header.dtype, strides, "", checksum, member.crc, checked)

    def _read(self, info: TensorInfo) -> np.ndarray:
        member = self._members[info.name]
        if not member.deflated:
            return super()._read(info)
        data: bytes | memoryview = self._source.read(member.start, member.stored_size, f"tensor '{info.name}'")
        data = inflate(data, member.size, f"{self.path}: tensor '{info.name}'")
        if self.verify_checksums and member.crc is not None:
            where = f" over its zip member at {member.start}"
            check_crc(data, member.crc, f"{self.path}: tensor '{info.name}'", where)
        order: Literal["F", "C"] = "F" if member.header.fortran_order else "C"
        return np.ndarray(info.shape, info.dtype, buffer=data, offset=member.header.size, order=order)


class NpyCheckpoint(NumpyCheckpoint):
    """A ``.npy`` file: one tensor, named after the file's stem."""

    format = "npy"

    def _load(self) -> Index:
        head = self._source.read(0, min(self._source.size, _HEAD_SIZE), "the .npy header")
        header = read_array_header(head, f"{self.path}: tensor '{self.path.stem}'")
        index, self._members = Index(), {}
        self._add(index, self.path.stem, _Member(0, self._source.size, self._source.size, False, None, header))
        return index


class NpzCheckpoint(NumpyCheckpoint):
    """A ``.npz`` archive: a tensor per member, named as ``np.load`` names it (without ``.npy``)."""

    format = "npz"
    checksums = "zip CRC-32"

    def _load(self) -> Index:
        entries = read_directory(self._source, self.path)
        index, self._members = Index(), {}
        # Remote: every member's local header and the start of its .npy header at once.
        span = _LOCAL_HEADER_SIZE + _EXTRA_SLACK + _USUAL_HEAD_SIZE
        self._source.prefetch([(entry.header_offset, span + len(entry.raw_name)) for entry in entries])
        for entry in entries:
            name = entry.filename.removesuffix(".npy")
            if name in self._members:
                raise CorruptCheckpointError(f"{self.path}: two members named '{entry.filename}'")
            self._add(index, name, self._locate(entry))
        return index

    def _locate(self, entry: Member) -> _Member:
        """Where the member's bytes are, and its ``.npy`` header; checked against its local header."""
        what = f"{self.path}: member '{entry.filename}'"
        deflated = is_deflated(entry, what)
        start = entry.start
        # Mapped, the whole member is a view; remote, the header's usual size is fetched, then more if it says so.
        limit = _USUAL_HEAD_SIZE
        while True:
            data = self._source.read_head(start, entry.compress_size, limit, f"member '{entry.filename}'")
            head: bytes | memoryview = data[:_HEAD_SIZE]
            if deflated:
                try:
                    head = zlib.decompressobj(-zlib.MAX_WBITS).decompress(data, _HEAD_SIZE)
                except zlib.error as error:
                    if len(data) < entry.compress_size:  # the stream cut short here, maybe mid-symbol
                        limit = entry.compress_size
                        continue
                    raise CorruptCheckpointError(f"{what}: damaged deflate stream ({error})") from None
            if len(data) == entry.compress_size or len(head) >= min(_header_length(head), _HEAD_SIZE):
                break  # (a header claiming more than _HEAD_SIZE is refused by read_array_header)
            limit = _HEAD_SIZE if not deflated else entry.compress_size
        header = read_array_header(head, what)
        return _Member(start, entry.compress_size, entry.file_size, deflated, entry.CRC, header)


def _header_length(head: bytes | memoryview) -> int:
    """How many bytes the ``.npy`` header at the start of ``head`` takes, as far as its first
    bytes say (magic, version, then its length as 2 bytes in version 1, 4 after); only how
    much to fetch is decided by it: ``read_array_header`` checks the header."""
    if len(head) < len(MAGIC) + 2 + 4:
        return len(MAGIC) + 2 + 4
    if head[len(MAGIC)] == 1:
        return len(MAGIC) + 4 + int.from_bytes(head[len(MAGIC) + 2 : len(MAGIC) + 4], "little")
    return len(MAGIC) + 6 + int.from_bytes(head[len(MAGIC) + 2 : len(MAGIC) + 6], "little")


# -- writing -------------------------------------------------------------------------------


def _member_name(name: str) -> str:
    """The ``.npz`` member holding ``name``, refused when it is no safe relative path."""
    parts = name.split("/")
    if name.startswith("/") or "\\" in name or "\0" in name or any(part in ("", ".", "..") for part in parts):
        raise UsageError(
            f"tensor '{name}': not a safe .npz member path (no leading '/', no empty, '.' or '..' "
            "components, no '\\' or NUL)"
        )
    return f"{name}.npy"


# What the files hold: names as zip members. Types are checked as ``npy_header`` lays each one out (whether
# np.load reads back the type np.save records), which says why one is not held.
HOLDS = Holds(".npz", "weights.npz", stored_as=_member_name, max_name_bytes=ZIP_NAME_MAX, names="zip member names")


def npy_header(name: str, dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """The ``.npy`` header ``np.save`` writes for a little-endian C-order array of ``dtype`` and ``shape``."""
    if dtype.kind not in "biufcV" or dtype.fields is not None or dtype.subdtype is not None:
        raise UnsupportedFormatError(
            f"tensor '{name}': .npz holds no {dtype}; it holds bool, integers, floats and complex"
        )
    descr = np.lib.format.dtype_to_descr(dtype.newbyteorder("<"))
    try:
        loaded = np.lib.format.descr_to_dtype(descr)
    except TypeError:
        loaded = None
    if dtype.kind == "V" or loaded != dtype.newbyteorder("<"):  # ml_dtypes' types: '<V2', '<f1', ...
        raise UnsupportedFormatError(
            f"tensor '{name}': .npz holds no {dtype}: np.save records it as {descr!r}, which np.load "
            "reads back as another type; write safetensors or pytorch, or cast"
        )
    fields = {"descr": descr, "fortran_order": False, "shape": shape}
    header = io.BytesIO()
    try:
        np.lib.format.write_array_header_1_0(header, fields)
    except ValueError:  # over 65,535 bytes: np.save moves to 2.0
        header = io.BytesIO()
        np.lib.format.write_array_header_2_0(header, fields)
    return header.getvalue()


def save(tensors: Tensors | Mapping[str, ArrayLike], path: str | os.PathLike[str]) -> Path:
    """Write ``tensors`` as an ``.npz`` archive at ``path`` (what ``np.savez`` writes); returns the path.

    The members are laid out from the tensors' specs, then each array is streamed in
    turn; the file appears at ``path`` only once complete.
    """
    write(tensors, path)
    return Path(path)


def write(tensors: Tensors | Mapping[str, ArrayLike], path: str | os.PathLike[str]) -> list[Path]:
    """``save``, returning the one file written (the registry's ``Writer``)."""
    from weightscope.atomic import atomic_write

    target = Path(path)
    source, specs = plan(tensors, target, HOLDS)
    members = [(spec, npy_header(spec.name, spec.dtype, spec.shape)) for spec in specs]
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(target) as handle:
        archive = ZipWriter(handle, align=64)
        for spec, header in members:
            data = array_bytes(source.array(spec.name), spec)
            archive.add(_member_name(spec.name), len(header) + spec.nbytes, (header, data))
            del data
        archive.close()
    return [target]


WRITER = Writer(HOLDS, write)
