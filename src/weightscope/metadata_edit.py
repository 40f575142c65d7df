"""Editing a checkpoint's metadata without rewriting its weights: safetensors' ``__metadata__``, GGUF's key/values.

The file is first opened by its reader, which checks all of it (every rule its format's module lists
under "a reader must refuse"); the edit is then planned whole in memory, and written one of two ways:

- **in place**, when the new header ends where the tensor data begins, so that no tensor moves: the
  header's bytes are written over the old ones (one ``pwrite``, then ``fsync``), the data is not
  touched. safetensors: the JSON header may be padded with spaces, so any header no longer than the
  old one fits (padded to its length); a header that had to be copied is given ``SAFETENSORS_HEADROOM``
  bytes of spaces, so the next edits fit in place. GGUF: the data starts at the first multiple of
  ``general.alignment`` after the tensor infos, and llama.cpp requires the first tensor at offset 0
  of it, so the new key/values and tensor infos must end within the last ``alignment`` bytes before
  the data (padded with zeros to it): a value of the same size, or a change smaller than the
  padding there was.
- **by copy**, otherwise (or when asked): a new file is written beside the old one (the new header,
  then the data section copied as it is) and renamed over it (``weightscope.atomic``): a failure
  part way leaves the original as it was.

An in-place write of a few kilobytes is not atomic against a power loss during that one write
(``--copy`` is). safetensors' metadata maps strings to strings. GGUF values are typed as gguf-py's
``gguf_new_metadata`` types them: a key that exists keeps its type (its value parsed as that type),
a new key is a string unless a type is given; arrays can be deleted, not set; ``general.alignment``
is neither set nor deleted here (it places the data: ``weightscope convert`` rewrites a file).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np

from weightscope.atomic import atomic_write
from weightscope.errors import CorruptCheckpointError, UnsupportedFormatError, UsageError
from weightscope.formats import open_checkpoint
from weightscope.formats.gguf import (
    ARRAY_TYPE,
    DEFAULT_ALIGNMENT,
    HEADER,
    MAX_NAME_LENGTH,
    SCALAR_TYPES,
    STRING_TYPE,
    SUMMARY_LENGTH,
)
from weightscope.formats.safetensors import METADATA_KEY
from weightscope.sources import AnyPath, FileSource, local_path

EDITABLE = ("safetensors", "gguf")
GGUF_TYPES = {name: code for code, (name, _) in SCALAR_TYPES.items()} | {"string": STRING_TYPE}
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_COPY_CHUNK = 64 << 20
SAFETENSORS_HEADROOM = 1024  # spaces a copied safetensors header keeps, so that the next edits fit in place


@dataclass(frozen=True)
class MetadataEntry:
    """One metadata value: its key, type (``string``, a GGUF scalar type, ``array[T]``) and value (an array's
    elements when it has at most ``SUMMARY_LENGTH``, else None: ``length`` says how many)."""

    key: str
    type: str
    value: Any
    length: int | None = None  # an array's element count


@dataclass(frozen=True)
class EditResult:
    """What ``edit_metadata`` did: ``in_place`` (only the header written) or a new file renamed into place."""

    path: Path
    format: str
    in_place: bool
    written: int  # bytes written: the header's in place, the whole new file's by copy
    reason: str  # why it was done so
    entries: list[MetadataEntry]


class _RawEntry(NamedTuple):
    key: str
    key_bytes: bytes  # as stored (re-written as they were, whatever their encoding)
    kind: int
    value: bytes  # the bytes after the type code: a scalar, a string's length and bytes, an array's all


class _GgufLayout(NamedTuple):
    version: int
    tensor_count: int
    entries: list[_RawEntry]
    tensor_infos: bytes
    data_start: int
    alignment: int


# -- reading ---------------------------------------------------------------------------------------


def read_metadata(path: AnyPath) -> tuple[str, list[MetadataEntry]]:
    """The format of the checkpoint at ``path`` and its metadata: GGUF's typed, any other format's as strings."""
    with open_checkpoint(path) as ckpt:
        format, metadata = ckpt.format, ckpt.metadata
    local = local_path(path)
    if format == "gguf" and local is not None:
        return format, [_gguf_entry(entry) for entry in _parse_gguf(local).entries]
    return format, [MetadataEntry(key, "string", value) for key, value in metadata.items()]


def _gguf_entry(entry: _RawEntry) -> MetadataEntry:
    if entry.kind == STRING_TYPE:
        return MetadataEntry(entry.key, "string", entry.value[8:].decode("utf-8", "replace"))
    if entry.kind in SCALAR_TYPES:
        name, dtype = SCALAR_TYPES[entry.kind]
        return MetadataEntry(entry.key, name, np.frombuffer(entry.value, dtype)[0].item())
    element, count = struct.unpack_from("<IQ", entry.value)
    if element == STRING_TYPE:
        values: list[Any] = []
        position = 12
        for _ in range(min(count, SUMMARY_LENGTH)):
            (length,) = _U64.unpack_from(entry.value, position)
            values.append(entry.value[position + 8 : position + 8 + length].decode("utf-8", "replace"))
            position += 8 + length
        name = "string"
    else:
        name, dtype = SCALAR_TYPES[element]
        values = np.frombuffer(entry.value, dtype, min(count, SUMMARY_LENGTH), 12).tolist()
    return MetadataEntry(entry.key, f"array[{name}]", values if count <= SUMMARY_LENGTH else None, count)


def _parse_gguf(path: Path) -> _GgufLayout:
    """The key/values (raw), tensor infos (raw bytes) and data start of a GGUF file its reader has accepted."""
    source = FileSource(path)
    position = 0

    def take(length: int, what: str) -> memoryview:
        nonlocal position
        data = source.read(position, length, what)
        position += length
        return data

    def number(layout: struct.Struct, what: str) -> int:
        value: int = layout.unpack(take(layout.size, what))[0]
        return value

    try:
        _, version, tensor_count, value_count = HEADER.unpack(take(HEADER.size, "the GGUF header"))
        entries = []
        alignment = DEFAULT_ALIGNMENT
        for _ in range(value_count):
            key_bytes = bytes(take(number(_U64, "a key's length"), "a metadata key"))
            key = key_bytes.decode("utf-8", "replace")
            kind = number(_U32, f"the type of '{key}'")
            start = position
            if kind == STRING_TYPE:
                take(number(_U64, f"the length of '{key}'"), f"metadata '{key}'")
            elif kind == ARRAY_TYPE:
                element, count = number(_U32, f"the element type of '{key}'"), number(_U64, f"the length of '{key}'")
                if element == STRING_TYPE:
                    for _ in range(count):
                        take(number(_U64, f"a string's length in '{key}'"), f"a string in '{key}'")
                else:
                    take(count * SCALAR_TYPES[element][1].itemsize, f"metadata '{key}'")
            else:
                take(SCALAR_TYPES[kind][1].itemsize, f"metadata '{key}'")
            value = bytes(source.read(start, position - start, f"metadata '{key}'"))
            if key == "general.alignment":
                (alignment,) = _U32.unpack(value)
            entries.append(_RawEntry(key, key_bytes, kind, value))
        infos_start = position
        for _ in range(tensor_count):
            take(number(_U64, "a tensor name's length"), "a tensor name")
            take(8 * number(_U32, "a tensor's dimension count") + 4 + 8, "a tensor info")
        tensor_infos = bytes(source.read(infos_start, position - infos_start, "the tensor infos"))
    except KeyError as error:  # a type the reader accepted cannot be unknown here unless the file changed since
        raise CorruptCheckpointError(f"{path}: unknown GGUF value type {error} (did the file change?)") from None
    finally:
        source.close()
    return _GgufLayout(version, tensor_count, entries, tensor_infos, _aligned(position, alignment), alignment)


def _aligned(offset: int, alignment: int) -> int:
    return -(-offset // alignment) * alignment


# -- planning ----------------------------------------------------------------------------------------


def _checked_edits(path: Path, assignments: Sequence[tuple[str, str]], deletions: Sequence[str]) -> None:
    keys = [key for key, _ in assignments]
    for key in {*keys, *deletions}:
        if not key:
            raise UsageError(f"{path}: an empty metadata key")
        if len(key.encode("utf-8", "surrogatepass")) > MAX_NAME_LENGTH:
            raise UsageError(f"{path}: a metadata key of more than {MAX_NAME_LENGTH} bytes")
    twice = {key for key in keys if keys.count(key) > 1} | (set(keys) & set(deletions))
    if twice:
        raise UsageError(f"{path}: metadata key '{sorted(twice)[0]}' is set or deleted twice")


def _safetensors_header(
    path: Path, assignments: Sequence[tuple[str, str]], deletions: Sequence[str], types: Mapping[str, str]
) -> tuple[bytes, int]:
    """The new JSON header (unpadded) and the old header's length."""
    if types:
        raise UsageError(f"{path}: safetensors metadata maps strings to strings; --type is for GGUF")
    source = FileSource(path)
    try:
        (length,) = _U64.unpack(source.read(0, 8, "the header length"))
        header = json.loads(bytes(source.read(8, length, "the header")))
    finally:
        source.close()
    metadata = dict(header.pop(METADATA_KEY, None) or {})
    for key in deletions:
        if key not in metadata:
            raise UsageError(f"{path}: no metadata key '{key}' to delete")
        del metadata[key]
    metadata.update(assignments)
    edited = ({METADATA_KEY: metadata} if metadata else {}) | header  # first, as the reference writer puts it
    try:
        text = json.dumps(edited, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate in a name ("\ud800" in the file): kept as its escape
        text = json.dumps(edited, separators=(",", ":")).encode("ascii")
    return text, length


def _gguf_value(path: Path, key: str, text: str, type_name: str) -> tuple[int, bytes]:
    """``text`` as a GGUF value of ``type_name``: its type code and bytes."""
    if type_name not in GGUF_TYPES:
        raise UsageError(f"{path}: unknown GGUF type '{type_name}'; known: {', '.join(GGUF_TYPES)}")
    kind = GGUF_TYPES[type_name]
    if kind == STRING_TYPE:
        data = text.encode("utf-8", "surrogateescape")
        return kind, _U64.pack(len(data)) + data
    dtype = SCALAR_TYPES[kind][1]
    wrong = UsageError(f"{path}: '{key}' is a {type_name}; '{text}' is not one")
    if dtype.kind == "b":
        truth = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(text.lower())
        if truth is None:
            raise wrong
        return kind, bytes([truth])
    try:
        if dtype.kind in "iu":
            number = int(text, 0)
            if not np.iinfo(dtype).min <= number <= np.iinfo(dtype).max:
                raise wrong
            return kind, np.array(number, dtype).tobytes()
        value = float(text)
    except ValueError:
        raise wrong from None
    with np.errstate(over="ignore"):
        stored = np.array(value, dtype)
    if math.isfinite(value) and not np.isfinite(stored):
        raise UsageError(f"{path}: '{key}' = {text} does not fit a {type_name}")
    return kind, stored.tobytes()


def _gguf_prefix(
    path: Path,
    layout: _GgufLayout,
    assignments: Sequence[tuple[str, str]],
    deletions: Sequence[str],
    types: Mapping[str, str],
) -> bytes:
    """The new header, key/values and tensor infos (unpadded)."""
    entries = {entry.key: entry for entry in layout.entries}
    for key in [*deletions, *(key for key, _ in assignments)]:
        if key == "general.alignment":
            raise UsageError(f"{path}: general.alignment places the tensor data; convert the file to change it")
    for key in deletions:
        if entries.pop(key, None) is None:
            raise UsageError(f"{path}: no metadata key '{key}' to delete")
    for key, text in assignments:
        old = entries.get(key)
        type_name = types.get(key) or types.get("")
        if type_name is None and old is not None and old.kind == ARRAY_TYPE:
            raise UsageError(f"{path}: '{key}' is an array; meta sets scalars and strings (--delete it, or --type)")
        if type_name is None:
            type_name = "string" if old is None else _gguf_entry(old).type
        kind, value = _gguf_value(path, key, text, type_name)
        key_bytes = old.key_bytes if old is not None else key.encode("utf-8", "surrogateescape")
        entries[key] = _RawEntry(key, key_bytes, kind, value)
    pieces = [HEADER.pack(b"GGUF", layout.version, layout.tensor_count, len(entries))]
    for entry in entries.values():
        pieces += [_U64.pack(len(entry.key_bytes)), entry.key_bytes, _U32.pack(entry.kind), entry.value]
    return b"".join([*pieces, layout.tensor_infos])


# -- writing -----------------------------------------------------------------------------------------


def edit_metadata(
    path: str | os.PathLike[str],
    assignments: Sequence[tuple[str, str]] = (),
    deletions: Sequence[str] = (),
    types: Mapping[str, str] | None = None,
    *,
    copy: bool = False,
) -> EditResult:
    """Set (``assignments``: key, value as text) and delete metadata of the safetensors or GGUF file at ``path``.

    ``types`` maps a key to its GGUF type (``uint32``, ``float32``, ``bool``, ``string``, ...), or ``""`` to
    the type of every key set without one of its own. Writes the header in place when the tensor data need not
    move (unless ``copy``), else a new file renamed into place; see the module's docstring.
    """
    path = Path(os.path.realpath(path))  # a symlink (a Hugging Face cache's snapshot) stays one: its file is edited
    types = dict(types or {})
    _checked_edits(path, assignments, deletions)
    untyped = set(types) - {"", *(key for key, _ in assignments)}
    if untyped:
        raise UsageError(f"{path}: a type for '{sorted(untyped)[0]}', which no --set sets")
    with open_checkpoint(path) as ckpt:  # checks the whole file before anything is planned
        format = ckpt.format
    if format not in EDITABLE:
        raise UnsupportedFormatError(f"{path}: a {format} checkpoint; meta edits safetensors and GGUF files")
    before = os.stat(path)
    if format == "safetensors":
        text, length = _safetensors_header(path, assignments, deletions, types)
        data_start = 8 + length
        fits = len(text) <= length
        if fits and not copy:
            header = _U64.pack(length) + text.ljust(length, b" ")
        else:
            padded = _aligned(len(text) + SAFETENSORS_HEADROOM, 8)
            header = _U64.pack(padded) + text.ljust(padded, b" ")
        need = f"the new header is {len(text)} bytes, the old one {length}"
    else:
        layout = _parse_gguf(path)
        prefix = _gguf_prefix(path, layout, assignments, deletions, types)
        data_start = layout.data_start
        fits = _aligned(len(prefix), layout.alignment) == data_start
        if fits and not copy:
            header = prefix.ljust(data_start, b"\0")
        else:
            header = prefix.ljust(_aligned(len(prefix), layout.alignment), b"\0")
        need = (
            f"the new key/values and tensor infos end at byte {len(prefix)}, "
            f"the data starts at {data_start} (alignment {layout.alignment})"
        )
    if fits and not copy:
        _write_in_place(path, header, before)
        written, reason = len(header), f"rewrote the header in place ({need}); the tensor data was not touched"
    else:
        written = _write_copy(path, header, data_start, before)
        why = "as asked (--copy)" if fits else f"the header does not fit ({need})"
        reason = f"wrote a new file of {written} bytes and renamed it into place: {why}"
    return EditResult(path, format, fits and not copy, written, reason, read_metadata(path)[1])


def _unchanged(path: Path, before: os.stat_result, now: os.stat_result) -> None:
    if (now.st_size, now.st_mtime_ns, now.st_ino) != (before.st_size, before.st_mtime_ns, before.st_ino):
        raise UsageError(f"{path}: the file changed while its metadata was being edited; nothing written")


def _write_in_place(path: Path, header: bytes, before: os.stat_result) -> None:
    descriptor = os.open(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise UnsupportedFormatError(f"{path}: not a regular file")
        _unchanged(path, before, status)
        view = memoryview(header)
        while view:
            view = view[os.pwrite(descriptor, view, len(header) - len(view)) :]
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _write_copy(path: Path, header: bytes, data_start: int, before: os.stat_result) -> int:
    """Write ``header`` and then the data section of ``path`` (from ``data_start``) to a new file renamed over it."""
    with open(path, "rb") as original, atomic_write(path) as target:
        _unchanged(path, before, os.fstat(original.fileno()))
        os.chmod(target.name, stat.S_IMODE(before.st_mode))  # the file keeps its mode
        target.write(header)
        target.flush()
        original.seek(data_start)
        copy_data(original, target, before.st_size - data_start)
        return target.tell()


def copy_data(source: BinaryIO, target: BinaryIO, count: int) -> None:
    """``count`` bytes from ``source``'s position to ``target``'s: by the kernel where it can (no copy through
    Python, and a reflink on file systems that share blocks), else in chunks."""
    source_position, target_position = source.tell(), target.tell()
    try:
        done = 0
        while done < count:
            moved = os.copy_file_range(
                source.fileno(),
                target.fileno(),
                min(count - done, _COPY_CHUNK),
                source_position + done,
                target_position + done,
            )
            if moved == 0:
                raise CorruptCheckpointError(f"{source.name}: the file ended {count - done} bytes early while copied")
            done += moved
        target.seek(target_position + count)
    except (AttributeError, OSError):  # no copy_file_range here (or across these file systems): through Python
        source.seek(source_position)
        target.seek(target_position)
        target.truncate()
        shutil.copyfileobj(source, target, _COPY_CHUNK)
