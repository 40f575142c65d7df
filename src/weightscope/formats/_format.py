"""A format's registry entry (``Format``) and what ``convert`` does around its writer (``Staging``).

The registry itself, and the built-in formats' entries, are in ``weightscope.formats``.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

from weightscope.formats._sniffing import file_head
from weightscope.sources import AnyPath

if TYPE_CHECKING:
    from weightscope.checkpoint import Checkpoint
    from weightscope.metadata_edit import MetadataEditor


@dataclass(frozen=True)
class Format:
    """Every fact about one format; the registry's entry for it (``register_format``)."""

    name: str
    description: str
    target: str  # the reader, "module:Class" (a ``Checkpoint``), imported on first use
    magic: tuple[tuple[int, bytes], ...] = ()  # (offset, bytes): a file holding any one of them is of this format
    suffixes: tuple[str, ...] = ()  # how its files' names end (lower case); a file named so is claimed too
    members: tuple[str, ...] = ()  # the zip members that identify it (how, ``sniffer`` says)
    # For what magic and endings cannot say: decides from the path and this entry's facts.
    sniffer: Callable[[AnyPath, Format], bool] | None = None
    local_only: str = ""  # why it reads local files only (never URLs); "" when it reads remote sources too
    # A checkpoint at a prefix naming several files, not one file: the ending of the one readers look for
    # beside the prefix (``.index``), and a pattern matching the endings of all of them (index, data shards).
    index: str = ""
    parts: str = ""
    writer: str | None = None  # "module:object", a ``writing.Writer``, for formats weightscope can write
    writes: tuple[str, ...] = ()  # the endings its writer writes: a destination's name chooses the writer by them
    requires: str | None = None  # an optional module the reader needs, installed by ``weightscope[<extra>]``
    extra: str | None = None
    scanner: str | None = None  # "module:function" listing the globals its pickles name (``weightscope scan``)
    # "module:function" ``(destination, names) -> Staging``: what ``convert`` tells the writer and adds beside it.
    staging: str | None = None
    # The weights file of a Hugging Face model folder kept in this format; its shards and index are named after it
    # (``weightscope.shards``). "" for a format no model folder is kept in. A folder holding several is read as
    # transformers reads it: the first format's in this registry's order (safetensors before pytorch).
    model_file: str = ""
    # Whether a checkpoint of this format is a folder that a training run keeps one of per step (DCP's
    # ``step-100/``, DeepSpeed's ``global_stepN/``, an Orbax manager's ``N/``): ``runs``, ``history`` and ``--step``
    # take such folders of a run folder as its checkpoints, ``scan`` the folder whole.
    step_folders: bool = False
    # "module:object" with ``entries`` and ``plan`` (``metadata_edit.MetadataEditor``): ``meta`` edits its metadata.
    metadata_editor: str | None = None

    @property
    def title(self) -> str:
        """What people call it, the description's start: "PyTorch checkpoint", "GGUF", "Keras weights"."""
        return re.split(r" \(|:", self.description, maxsplit=1)[0]

    def sniff(self, path: AnyPath) -> bool:
        """Whether ``path`` is of this format, from its name and at most a few of its bytes (no reader imported)."""
        return _magic_or_suffix(path, self) if self.sniffer is None else self.sniffer(path, self)

    @property
    def prefix(self) -> bool:
        """Whether a checkpoint of this format is a prefix naming several files, not one file."""
        return bool(self.index)

    def missing(self) -> str | None:
        """How to install what this format needs, or None when it is there (nothing is imported)."""
        if self.requires is None or importlib.util.find_spec(self.requires) is not None:
            return None
        return f"needs {self.requires}: pip install 'weightscope[{self.extra}]'"

    def load(self) -> type[Checkpoint]:
        reader: type[Checkpoint] = _import(self.target)
        return reader

    def editor(self) -> MetadataEditor | None:
        """Its metadata editor (imported now), or None when ``meta`` cannot edit it."""
        return None if self.metadata_editor is None else _import(self.metadata_editor)


class Staging(NamedTuple):  # (not a frozen dataclass: its decorator cost every command ~0.25 ms of its start)
    """What ``convert`` does for a format around its writer: keyword options it passes, files it adds beside the
    output once read back (name -> bytes, moved into place after the writer's own), and notes for the user."""

    options: Mapping[str, Any] = MappingProxyType({})
    files: Mapping[str, bytes] = MappingProxyType({})
    notes: tuple[str, ...] = ()


def _magic_or_suffix(path: AnyPath, entry: Format) -> bool:
    """Whether ``path`` holds one of ``entry``'s magic byte strings where it sits, or ends with one of its suffixes."""
    if entry.magic:
        head = file_head(path, max(offset + len(magic) for offset, magic in entry.magic))
        if any(head[offset : offset + len(magic)] == magic for offset, magic in entry.magic):
            return True
    return path.suffix in entry.suffixes


def _import(target: str) -> Any:
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)
