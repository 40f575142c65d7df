"""Where a TensorFlow checkpoint is: a directory's ``checkpoint`` state file (read without protobuf's text
parser where TensorFlow wrote it), the prefix a path, a directory or an ``.index``/``.data-*`` file names,
and the files of a prefix. Used by the reader (``weightscope.formats.tensorflow``), ``history`` and ``convert``.
"""

from __future__ import annotations

import codecs
import os
import re
import sys
from pathlib import Path
from typing import Any, NamedTuple

from weightscope.containers.table import FOOTER_SIZE, MAGIC_BYTES
from weightscope.errors import CheckpointNotFoundError, CorruptCheckpointError, UnsupportedFormatError, UsageError
from weightscope.sources import AnyPath, file_ends_with, local_path, plus

STATE_FILE = "checkpoint"
# The index key of a TF2 checkpoint's object graph: looked up at every open, its graph read by
# ``weightscope.formats.tf_object_graph`` (imported only when the key is there).
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"


SAVED_MODEL_FILE = "saved_model.pb"
_DATA_SUFFIX = re.compile(r"\.data-\d{5}-of-\d{5}$")


class CheckpointState(NamedTuple):
    """A directory's ``checkpoint`` file: the newest prefix, and the ones the saver keeps."""

    model_checkpoint_path: str
    all_model_checkpoint_paths: list[str]
    all_model_checkpoint_timestamps: list[float]


# One field a line, as TensorFlow writes the file: a C-escaped string or a number. Compiled on first use (re caches
# it): a prefix or an .index path reads no state file.
_STATE_LINE = r'\s*(\w+)\s*:\s*(?:"((?:[^"\\]|\\.)*)"|([-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?))\s*'
_STATE_STRINGS = ("model_checkpoint_path", "all_model_checkpoint_paths")
_STATE_NUMBERS = ("all_model_checkpoint_timestamps", "last_preserved_timestamp")


def read_checkpoint_state(directory: AnyPath) -> CheckpointState | None:
    """The directory's ``checkpoint`` file, or None where there is none.

    The lines TensorFlow writes are read directly (importing protobuf's text parser costs
    ~20 ms of a command's start); anything else goes to protobuf's parser, which knows
    the whole text format.
    """
    path = directory / STATE_FILE
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise CorruptCheckpointError(f"{path}: not a CheckpointState text proto ({error})") from None
    fields: dict[str, list[Any]] = {name: [] for name in (*_STATE_STRINGS, *_STATE_NUMBERS)}
    for line in text.splitlines():
        match = re.fullmatch(_STATE_LINE, line)
        if not line.strip():
            continue
        if match is None or match[1] not in fields or (match[2] is None) != (match[1] in _STATE_NUMBERS):
            return _parse_checkpoint_state(text, path)
        if match[2] is not None:
            try:
                value: Any = codecs.escape_decode(match[2].encode("utf-8"))[0].decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                return _parse_checkpoint_state(text, path)
        else:
            value = float(match[3])
        fields[match[1]].append(value)
    if len(fields["model_checkpoint_path"]) > 1 or len(fields["last_preserved_timestamp"]) > 1:
        return _parse_checkpoint_state(text, path)
    return CheckpointState(
        (fields["model_checkpoint_path"] or [""])[0],
        fields["all_model_checkpoint_paths"],
        fields["all_model_checkpoint_timestamps"],
    )


def _parse_checkpoint_state(text: str, path: AnyPath) -> CheckpointState:
    from google.protobuf import text_format

    from weightscope import _proto

    state = _proto.CheckpointState()
    try:
        text_format.Parse(text, state)
    except text_format.ParseError as error:
        raise CorruptCheckpointError(f"{path}: not a CheckpointState text proto ({error})") from None
    return CheckpointState(
        state.model_checkpoint_path,
        list(state.all_model_checkpoint_paths),
        list(state.all_model_checkpoint_timestamps),
    )


def state_path(directory: AnyPath, recorded: str) -> AnyPath:
    """Where a path recorded in a ``checkpoint`` file is now.

    TF records paths relative to the directory, or absolute ones. A prefix of that name
    beside the state file wins, so a copied or moved directory opens its own files. (In
    a remote directory an absolute path names the machine that saved it: only the prefix
    beside the state file is looked for.)
    """
    if not os.path.isabs(recorded):
        return directory / recorded
    beside = directory / Path(recorded).name
    if local_path(directory) is None:
        return beside
    return beside if bundle_file(beside, ".index").is_file() else Path(recorded)


def bundle_file(prefix: AnyPath, suffix: str) -> AnyPath:
    """A bundle's file, ``PREFIX`` + ``suffix``; for a local prefix that is a directory holding
    ``.index`` and no ``PREFIX.index`` beside it, the file inside it (TF1's ``DIR/`` prefixes)."""
    if local_path(prefix) is not None and not plus(prefix, ".index").is_file() and (prefix / ".index").is_file():
        return prefix / suffix
    return plus(prefix, suffix)


def _note_moved(directory: AnyPath, recorded: str, prefix: AnyPath) -> None:
    """Say on stderr when the state file names a checkpoint elsewhere (another machine's absolute
    path, a folder since moved) and the one of that name beside it is read instead."""
    local = local_path(prefix)
    elsewhere = os.path.isabs(recorded) and local is not None and local != Path(recorded)
    if elsewhere and not bundle_file(Path(recorded), ".index").is_file():
        print(
            f"weightscope: {directory / STATE_FILE} names {recorded}, which is not here; "
            f"reading {prefix}, the checkpoint of that name in this folder",
            file=sys.stderr,
        )


def _is_v1_checkpoint(path: AnyPath) -> bool:
    """A single file ending with the table magic: what TF1's V1 ``Saver`` wrote."""
    return path.is_file() and path.stat().st_size >= FOOTER_SIZE and file_ends_with(path, MAGIC_BYTES)


def _drop_tail(path: AnyPath, count: int) -> AnyPath:
    """``path`` less the last ``count`` characters of its name."""
    return path.parent / path.name[:-count]


def resolve_prefix(path: AnyPath) -> tuple[AnyPath, AnyPath]:
    """The checkpoint prefix meant by a prefix, ``.index``, ``.data-…`` or directory path (local or a URL), and its
    index file (``bundle_file``'s)."""
    if path.name == STATE_FILE and path.is_file():
        path = path.parent
    is_dir = path.is_dir()  # each question a stat, or a request for a URL: asked once
    if is_dir and (path / SAVED_MODEL_FILE).is_file():
        prefix = path / "variables" / "variables"  # a SavedModel keeps its weights here
    elif is_dir:
        state = read_checkpoint_state(path)
        if state is not None and state.model_checkpoint_path:
            prefix = state_path(path, state.model_checkpoint_path)
            _note_moved(path, state.model_checkpoint_path, prefix)
        else:
            indexes: list[AnyPath] = sorted(path.glob("*.index"), key=str)  # one folder: as by name
            if not indexes:
                raise CheckpointNotFoundError(
                    f"{path}: a directory with no checkpoint in it (no '{STATE_FILE}' file, no *.index)"
                )
            if len(indexes) > 1:
                names = ", ".join(index.name[: -len(".index")] for index in indexes[:5])
                raise UsageError(
                    f"{path}: holds {len(indexes)} checkpoints and no '{STATE_FILE}' file "
                    f"naming the newest; name one of: {names}"
                )
            prefix = _drop_tail(indexes[0], len(".index"))
    elif path.name.endswith(".index"):
        prefix = _drop_tail(path, len(".index"))
    elif match := _DATA_SUFFIX.search(path.name):
        prefix = _drop_tail(path, len(path.name) - match.start())
    else:
        prefix = path
    index = plus(prefix, ".index")  # bundle_file's answer wherever it is a file: one stat, not three
    if not index.is_file():
        index = bundle_file(prefix, ".index")
    if not index.is_file():
        if _is_v1_checkpoint(prefix):
            raise UnsupportedFormatError(
                f"{prefix}: a TensorFlow V1 checkpoint (the single-file format of before 2017), which weightscope "
                "does not read; convert it with TensorFlow: restore it with tf.compat.v1.train.Saver and save it "
                "again (V2 is the default)"
            )
        raise CheckpointNotFoundError(f"{index}: no such file (checkpoint prefix {prefix})")
    return prefix, index
