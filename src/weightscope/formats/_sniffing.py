"""The bytes sniffing looks at (a file's head, a zip's members), and the files weightscope recognises but
does not read: what each is, and how to get its weights out. Imports no reader, and the zip container only when a
sniffer of zips runs (TensorFlow's, safetensors' and the folders' are asked before them)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from weightscope.errors import UnsupportedFormatError, WeightscopeError
from weightscope.sources import AnyPath, file_ends_with, local_path, open_source, plus

if TYPE_CHECKING:
    from weightscope.formats import Format


def file_head(path: AnyPath, length: int) -> bytes:
    """The first ``length`` bytes of a regular file (fewer if it is shorter, none if it is no file)."""
    if not path.is_file():
        return b""
    source = open_source(path)
    try:
        return bytes(source.read(0, min(length, source.size), "magic"))
    finally:
        source.close()


def zip_members(path: AnyPath) -> set[str]:
    """The member names of the zip at ``path``; none when it is no zip weightscope reads."""
    from weightscope.containers.zip import LOCAL_SIGNATURE, read_directory  # (the zip reader: zips only)

    if not file_head(path, len(LOCAL_SIGNATURE)).startswith(LOCAL_SIGNATURE):
        return set()
    source = open_source(path)
    try:
        return {member.filename for member in read_directory(source, path)}
    except WeightscopeError:
        return set()  # a zip weightscope refuses is no file of a format it reads
    finally:
        source.close()


MAX_TAG = 255  # the longest tag a DeepSpeed ``latest`` file is read for (a folder's name)


def latest_tag(folder: AnyPath) -> str | None:
    """The tag ``folder/latest`` holds (DeepSpeed's newest step: ``global_step1000``); None without one. A tag that
    could name no folder beside it (empty, a path, too long) is returned for the reader to refuse."""
    latest = folder / "latest"
    if not latest.is_file():
        return None
    return file_head(latest, MAX_TAG + 1).decode("utf-8", "replace").strip()


def is_tag(text: str) -> bool:
    """Whether ``text`` can name a folder beside ``latest``: one path component, not ``.`` or ``..``."""
    return 0 < len(text) <= MAX_TAG and text not in (".", "..") and not any(mark in text for mark in "/\\\0")


# flax.training.checkpoints.save_checkpoint without Orbax: ``<dir>/checkpoint_<step>``, to_bytes of the state.
_FLAX_CHECKPOINT = re.compile(r"^checkpoint_[-+]?\d+(?:\.\d+)?$")


def sniff_flax(path: AnyPath, entry: Format) -> bool:
    """A ``.msgpack`` file; or (msgpack has no magic) one named as Flax's legacy checkpoints are whose first byte
    starts a msgpack map."""
    if path.suffix in entry.suffixes:
        return True
    if not _FLAX_CHECKPOINT.match(path.name):
        return False
    head = file_head(path, 1)
    return len(head) == 1 and (0x80 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF))


def sniff_openvino(path: AnyPath, entry: Format) -> bool:
    """Any ``.xml`` (the reader says whether it is an IR), or a ``.bin`` with an ``.xml`` beside it."""
    if path.suffix.lower() == ".bin":
        return path.with_name(path.name[: -len(path.suffix)] + ".xml").is_file()
    return path.suffix.lower() in entry.suffixes


_ZIP_NAME_LENGTH = slice(26, 28)  # in a zip's first local header; the name follows its 30 bytes
_ZIP_EXTRA_LENGTH = slice(28, 30)  # and the extra field the name, then the data


def first_member(head: bytes) -> bytes:
    """The name of the first member of the zip whose first bytes are ``head``."""
    return head[30 : 30 + int.from_bytes(head[_ZIP_NAME_LENGTH], "little")]


# A TorchScript archive's data.pkl starts with its module's class: PROTO 2, GLOBAL '__torch__...'. No torch.save
# pickle does (weightscope would refuse that global in one).
_TORCHSCRIPT_PICKLE = b"\x80\x02c__torch__"


def _torchscript_first(head: bytes) -> bool:
    """Whether the zip whose first bytes are ``head`` starts as only ``torch.jit.save`` starts one: with an extra
    file ``<folder>/extra/<name>`` or a storage ``<folder>/data/<key>`` (``torch.save`` writes its pickle first;
    TorchScript writes the extra files, then a module's storages, before it), or, for a module with no tensors,
    ``<folder>/data.pkl`` stored and starting as TorchScript's pickles do."""
    parts = first_member(head).split(b"/")
    if (len(parts) == 3 and parts[1] == b"data" and parts[2]) or (len(parts) >= 3 and parts[1] == b"extra"):
        return True
    start = 30 + int.from_bytes(head[_ZIP_NAME_LENGTH], "little") + int.from_bytes(head[_ZIP_EXTRA_LENGTH], "little")
    return parts[1:] == [b"data.pkl"] and head[start : start + len(_TORCHSCRIPT_PICKLE)] == _TORCHSCRIPT_PICKLE


def sniff_torchscript(path: AnyPath, entry: Format) -> bool:
    """A ``torch.jit.save`` archive, by its first member alone (no directory read; see ``_torchscript_first``)."""
    from weightscope.containers.zip import LOCAL_SIGNATURE

    head = file_head(path, 30 + 0xFFFF)
    return head.startswith(LOCAL_SIGNATURE) and _torchscript_first(head)


_MAX_BARE_TENSOR = 1 << 31  # protobuf's limit on one message


def _is_onnx_tensor(path: AnyPath) -> bool:
    if path.suffix != ".pb" or not path.is_file() or path.stat().st_size > _MAX_BARE_TENSOR:
        return False
    from weightscope.formats.onnx import is_bare_tensor

    return is_bare_tensor(file_head(path, _MAX_BARE_TENSOR))


RECOGNISED: tuple[tuple[Callable[[AnyPath], bool], str], ...] = (
    (
        _is_onnx_tensor,
        "a bare ONNX TensorProto (one tensor, as onnx.save_tensor and ONNX's test data write), not a model; "
        "with onnx: onnx.numpy_helper.to_array(onnx.load_tensor(PATH)); np.save that to read it here",
    ),
)


def refuse_recognised(path: AnyPath) -> None:
    """Raise ``UnsupportedFormatError`` saying what ``path`` is, if it is a file ``RECOGNISED`` knows."""
    if path.is_dir():
        return
    for recognise, what in RECOGNISED:
        if recognise(path):
            raise UnsupportedFormatError(f"{path}: {what.replace('PATH', repr(str(path)))}")


# -- sniffers the registry's entries name ---------------------------------------------------------------------


# The last 8 bytes of a TensorFlow index (and of a TF1 V1 single-file checkpoint).
_TABLE_MAGIC = bytes.fromhex("57fb808b247547db")


def sniff_tensorflow(path: AnyPath, entry: Format) -> bool:
    if path.is_dir():
        return any((path / name).is_file() for name in ("checkpoint", "saved_model.pb")) or any(path.glob("*.index"))
    if path.name == "checkpoint" and path.is_file():
        return True
    if file_ends_with(path, _TABLE_MAGIC):
        return True  # an index, or a V1 checkpoint, which the reader refuses by name
    text = str(path)
    return text.endswith(".index") or ".data-" in path.name or plus(path, ".index").is_file()


# The legacy format (torch.save before 1.6) starts with its magic number 0x1950a86a20f9469cfc6c
# pickled at protocol 2: PROTO 2, LONG1 of 10 bytes, STOP.
_PYTORCH_LEGACY_HEAD = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little") + b"."


def sniff_pytorch(path: AnyPath, entry: Format) -> bool:
    """A zip whose first member is one of ``entry.members`` in the archive's one folder (not a TorchScript archive's
    data.pkl), or the legacy head."""
    if not path.is_file():
        return False
    from weightscope.formats._torch_kind import torch_kind  # (with the zip reader)

    source = open_source(path)
    try:
        try:
            kind = torch_kind(source, path)  # torch.load's own decision
        except WeightscopeError:
            kind = "legacy"  # torch.load fails on it too: claimed by the legacy head, the reader says why
        if kind != "zip":  # (a tar starting as torch.save's pickles is claimed, to be refused)
            return bytes(source.read(0, min(source.size, len(_PYTORCH_LEGACY_HEAD)), "magic")) == _PYTORCH_LEGACY_HEAD
        head = bytes(source.read(0, min(source.size, 30 + 0xFFFF), "the first local header"))
    finally:
        source.close()
    name = first_member(head)
    members = tuple(b"/" + member.encode() for member in entry.members)
    return name.count(b"/") == 1 and name.endswith(members) and not _torchscript_first(head)


# -- folder formats' sniffers (the registry's entries name them) ------------------------------------------


def sniff_orbax(path: AnyPath, entry: Format) -> bool:
    if local_path(path) is None or not path.is_dir():
        return False  # a file: no reader module imported to say so
    from weightscope.formats.orbax import sniff  # a few stats of a folder's names; nothing read

    return sniff(path, entry)


def sniff_deepspeed(path: AnyPath, entry: Format) -> bool:
    """A local folder holding ``*_model_states.pt`` (a tag's, ``global_stepN/``), or whose ``latest`` names one
    (a remote folder is not listed for it: the reader reads local files only)."""
    if local_path(path) is None or not path.is_dir():
        return False
    tag = latest_tag(path)
    folder = path / tag if tag is not None and is_tag(tag) and not any(path.glob(entry.members[0])) else path
    return folder.is_dir() and any(folder.glob(entry.members[0]))


# PyTorch DCP (weightscope.formats.dcp): its metadata file, its data files' ending, and the shards of its
# safetensors storage (HuggingFaceStorageWriter with save_distributed).
_DCP_METADATA, _DCP_DATA = ".metadata", ".distcp"
_DCP_SHARD = re.compile(r"^shard-\d{5}-model-\d{5}-of-\d{5}\.safetensors$")


def sniff_dcp(path: AnyPath, entry: Format) -> bool:
    """A folder holding ``.metadata`` (or rank 0's ``__0.metadata``) and ``*.distcp`` files, or one of those files;
    or DCP's safetensors shards."""
    folder = path.parent if path.name == _DCP_METADATA or path.suffix in (_DCP_METADATA, _DCP_DATA) else path
    if not folder.is_dir():
        return False
    local = local_path(folder)
    if (folder / _DCP_METADATA).is_file() or (folder / f"__0{_DCP_METADATA}").is_file():
        return path is not folder or local is None or any(local.glob(f"*{_DCP_DATA}"))
    return path is folder and local is not None and any(_DCP_SHARD.match(name) for name in os.listdir(local))
