"""Editing a checkpoint's metadata without rewriting its weights: safetensors' ``__metadata__``, GGUF's key/values.

The file is first opened by its reader, which checks all of it (every rule its format's module lists
under "a reader must refuse"); the edit is then planned whole in memory by the format's editor (the
registry's ``Format.metadata_editor``: ``weightscope.formats.safetensors`` and ``weightscope.formats.gguf``
say what fits in place for their headers), and written one of two ways:

- **in place**, when the new header ends where the tensor data begins, so that no tensor moves: the
  header's bytes are written over the old ones (one ``pwrite``, then ``fsync``), the data is not
  touched;
- **by copy**, otherwise (or when asked): a new file is written beside the old one (the new header,
  then the data section copied as it is) and renamed over it (``weightscope.atomic``): a failure
  part way leaves the original as it was.

An in-place write of a few kilobytes is not atomic against a power loss during that one write
(``--copy`` is).
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from weightscope.atomic import atomic_write
from weightscope.errors import CorruptCheckpointError, UnsupportedFormatError, UsageError
from weightscope.formats import FORMATS, open_checkpoint
from weightscope.sources import AnyPath, local_path
from weightscope.writing import HeaderPlan, MetadataEntry

_COPY_CHUNK = 64 << 20
MAX_KEY_LENGTH = 0xFFFF  # bytes of a key: GGUF's limit on a name, and more than any safetensors header needs


@dataclass(frozen=True)
class EditResult:
    """What ``edit_metadata`` did: ``in_place`` (only the header written) or a new file renamed into place."""

    path: Path
    format: str
    in_place: bool
    written: int  # bytes written: the header's in place, the whole new file's by copy
    reason: str  # why it was done so
    entries: list[MetadataEntry]


class MetadataEditor(Protocol):
    """What a format's module supplies for ``meta`` (the registry's ``Format.metadata_editor``)."""

    def entries(self, path: Path) -> list[MetadataEntry] | None:
        """The metadata, typed; None: the reader's ``metadata`` (strings) is all there is."""

    def plan(
        self, path: Path, assignments: Sequence[tuple[str, str]], deletions: Sequence[str], types: Mapping[str, str]
    ) -> HeaderPlan:
        """The new header, or a ``UsageError`` for an edit the format cannot hold."""


def _editor(format: str) -> MetadataEditor | None:
    entry = FORMATS.get(format)
    return None if entry is None else entry.editor()


# -- reading ---------------------------------------------------------------------------------------


def read_metadata(path: AnyPath) -> tuple[str, list[MetadataEntry]]:
    """The format of the checkpoint at ``path`` and its metadata: typed where its format's editor reads it so
    (GGUF's key/values), else the reader's ``metadata`` as strings."""
    with open_checkpoint(path) as ckpt:
        format, metadata = ckpt.format, ckpt.metadata
    local, editor = local_path(path), _editor(format)
    typed = None if editor is None or local is None else editor.entries(local)
    return format, typed if typed is not None else [MetadataEntry(k, "string", v) for k, v in metadata.items()]


# -- planning ----------------------------------------------------------------------------------------


def _checked_edits(path: Path, assignments: Sequence[tuple[str, str]], deletions: Sequence[str]) -> None:
    keys = [key for key, _ in assignments]
    for key in {*keys, *deletions}:
        if not key:
            raise UsageError(f"{path}: an empty metadata key")
        if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_LENGTH:
            raise UsageError(f"{path}: a metadata key of more than {MAX_KEY_LENGTH} bytes")
    twice = {key for key in keys if keys.count(key) > 1} | (set(keys) & set(deletions))
    if twice:
        raise UsageError(f"{path}: metadata key '{sorted(twice)[0]}' is set or deleted twice")


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
    editor = _editor(format)
    if editor is None:
        editable = ", ".join(entry.title for entry in FORMATS.values() if entry.metadata_editor)
        raise UnsupportedFormatError(f"{path}: a {format} checkpoint; meta edits these formats' files: {editable}")
    before = os.stat(path)
    planned = editor.plan(path, assignments, deletions, types)
    fits = planned.in_place is not None
    if planned.in_place is not None and not copy:
        _write_in_place(path, planned.in_place, before)
        written = len(planned.in_place)
        reason = f"rewrote the header in place ({planned.need}); the tensor data was not touched"
    else:
        written = _write_copy(path, planned.copied, planned.data_start, before)
        why = "as asked (--copy)" if fits else f"the header does not fit ({planned.need})"
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
