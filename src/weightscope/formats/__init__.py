"""The format registry: formats by name, imported on first use, chosen by content.

Each entry names the module and class that read a format and a cheap ``sniff`` that
looks at the path (and at most a few bytes) without importing the reader.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weightscope.containers.zip import LOCAL_SIGNATURE, read_directory
from weightscope.errors import (
    CheckpointNotFoundError,
    CorruptCheckpointError,
    UnsupportedFormatError,
    UsageError,
    WeightscopeError,
)
from weightscope.formats._torch_kind import torch_kind
from weightscope.sources import AnyPath, as_path, file_ends_with, open_source, plus

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from weightscope.checkpoint import Checkpoint
    from weightscope.remote import RemotePath
    from weightscope.writing import Tensors


# The last 8 bytes of a TensorFlow index (and of a TF1 V1 single-file checkpoint).
_TABLE_MAGIC = bytes.fromhex("57fb808b247547db")


def _sniff_tensorflow(path: AnyPath) -> bool:
    if path.is_dir():
        return any((path / name).is_file() for name in ("checkpoint", "saved_model.pb")) or any(path.glob("*.index"))
    if path.name == "checkpoint" and path.is_file():
        return True
    if file_ends_with(path, _TABLE_MAGIC):
        return True  # an index, or a V1 checkpoint, which the reader refuses by name
    text = str(path)
    return text.endswith(".index") or ".data-" in path.name or plus(path, ".index").is_file()


# The readers' magic numbers, here so that sniffing imports no reader.
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_NAME_LENGTH = slice(26, 28)  # in that header; the name follows its 30 bytes


def _head(path: AnyPath, length: int) -> bytes:
    """The first ``length`` bytes of a regular file (fewer if it is shorter, none if it is no file)."""
    if not path.is_file():
        return b""
    source = open_source(path)
    try:
        return bytes(source.read(0, min(length, source.size), "magic"))
    finally:
        source.close()


def _sniff_safetensors(path: AnyPath) -> bool:
    head = _head(path, 9)  # the header length, then the JSON object's "{"
    if len(head) == 9 and head[8:] == b"{" and int.from_bytes(head[:8], "little") <= path.stat().st_size - 9:
        return True
    return path.suffix == ".safetensors"


def _sniff_npy(path: AnyPath) -> bool:
    return _head(path, len(_NPY_MAGIC)) == _NPY_MAGIC or path.suffix == ".npy"


def _sniff_npz(path: AnyPath) -> bool:
    if path.suffix == ".npz":
        return True
    head = _head(path, 30 + 0xFFFF)
    name_end = 30 + int.from_bytes(head[_ZIP_NAME_LENGTH], "little")
    return head.startswith(LOCAL_SIGNATURE) and head[30:name_end].endswith(b".npy")


_PYTORCH_MEMBERS = (b"/data.pkl", b"/.format_version", b"/byteorder", b"/version")


# The legacy format (torch.save before 1.6) starts with its magic number 0x1950a86a20f9469cfc6c
# pickled at protocol 2: PROTO 2, LONG1 of 10 bytes, STOP.
_PYTORCH_LEGACY_HEAD = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little") + b"."


def _sniff_pytorch(path: AnyPath) -> bool:
    if not path.is_file():
        return False
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
    name = head[30 : 30 + int.from_bytes(head[_ZIP_NAME_LENGTH], "little")]
    return name.count(b"/") == 1 and name.endswith(_PYTORCH_MEMBERS)


_PICKLE_SUFFIXES = (".pkl", ".pickle")


def _sniff_pickle(path: AnyPath) -> bool:
    # A pickle of protocol 2 or later starts with PROTO and its version; older ones have no
    # magic, so the suffix decides. (PyTorch's legacy files, pickles too, are claimed first.)
    head = _head(path, 2)
    return path.suffix in _PICKLE_SUFFIXES or (len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


_GGUF_MAGIC = b"GGUF"


def _sniff_gguf(path: AnyPath) -> bool:
    return _head(path, len(_GGUF_MAGIC)) == _GGUF_MAGIC or path.suffix == ".gguf"


_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_KERAS_MEMBERS = {"config.json", "model.weights.h5"}


def _sniff_keras(path: AnyPath) -> bool:
    head = _head(path, len(_HDF5_MAGIC))
    if head == _HDF5_MAGIC or path.suffix in (".h5", ".hdf5", ".keras"):
        return True
    if not head.startswith(LOCAL_SIGNATURE):
        return False
    if not isinstance(path, Path):
        return False  # a remote .keras zip: h5py reads local files only, so it is no format to offer
    source = open_source(path)
    try:
        return {member.filename for member in read_directory(source, path)} >= _KERAS_MEMBERS
    except WeightscopeError:
        return False  # a zip weightscope refuses is no .keras file it reads
    finally:
        source.close()


def _sniff_onnx(path: AnyPath) -> bool:
    # ONNX has no magic, and a ModelProto's usual first byte (0x08: field 1, ir_version) is
    # too weak to claim a file by: the suffix decides, and the reader refuses what does not parse.
    return path.suffix == ".onnx"


# Files weightscope recognises but does not read: what each is, and how to get its weights out.


def _is_torchscript(path: AnyPath) -> bool:
    """A ``torch.jit.save`` archive: a zip whose folder holds ``code/`` and ``constants.pkl``."""
    if not isinstance(path, Path) or not _head(path, 4).startswith(LOCAL_SIGNATURE):
        return False
    source = open_source(path)
    try:
        names = [member.filename for member in read_directory(source, path)]
    except WeightscopeError:
        return False
    finally:
        source.close()
    return any(name.count("/") == 1 and name.endswith("/constants.pkl") for name in names) and any(
        name.split("/")[1:2] == ["code"] for name in names
    )


_TFLITE_MAGIC = b"TFL3"  # the flatbuffer's file identifier, after its 4-byte root offset


def _is_tflite(path: AnyPath) -> bool:
    return _head(path, 8)[4:] == _TFLITE_MAGIC


_MAX_BARE_TENSOR = 1 << 31  # protobuf's limit on one message


def _is_onnx_tensor(path: AnyPath) -> bool:
    if path.suffix != ".pb" or not path.is_file() or path.stat().st_size > _MAX_BARE_TENSOR:
        return False
    from weightscope.formats.onnx import is_bare_tensor

    return is_bare_tensor(_head(path, _MAX_BARE_TENSOR))


RECOGNISED: tuple[tuple[Callable[[AnyPath], bool], str], ...] = (
    (
        _is_torchscript,
        "a TorchScript archive (torch.jit.save: code/ and constants.pkl beside the weights), not a torch.save "
        "checkpoint; weightscope does not rebuild TorchScript modules. With torch: "
        "torch.save(torch.jit.load(PATH).state_dict(), 'weights.pt') writes a checkpoint weightscope reads",
    ),
    (
        _is_tflite,
        "a TensorFlow Lite model (a TFL3 flatbuffer), which weightscope does not read; with TensorFlow, "
        "tf.lite.Interpreter(model_path=PATH) lists its tensors (get_tensor_details) and reads them (get_tensor)",
    ),
    (
        _is_onnx_tensor,
        "a bare ONNX TensorProto (one tensor, as onnx.save_tensor and ONNX's test data write), not a model; "
        "with onnx: onnx.numpy_helper.to_array(onnx.load_tensor(PATH)); np.save that to read it here",
    ),
)


@dataclass(frozen=True)
class Format:
    name: str
    description: str
    target: str  # "module:Class"
    sniff: Callable[[AnyPath], bool]
    writer: str | None = None  # "module:function", for formats weightscope can write
    suffixes: tuple[str, ...] = ()  # how its files' names end (lower case)
    writes: tuple[str, ...] = ()  # the endings its writer writes: a destination's name chooses the writer by them
    requires: str | None = None  # an optional module the reader needs, installed by ``weightscope[<extra>]``
    extra: str | None = None

    def missing(self) -> str | None:
        """How to install what this format needs, or None when it is there (nothing is imported)."""
        if self.requires is None or importlib.util.find_spec(self.requires) is not None:
            return None
        return f"needs {self.requires}: pip install 'weightscope[{self.extra}]'"

    def load(self) -> type[Checkpoint]:
        reader: type[Checkpoint] = _import(self.target)
        return reader


def _import(target: str) -> Any:
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


FORMATS: dict[str, Format] = {
    "tensorflow": Format(
        "tensorflow",
        "TensorFlow tensor bundle (prefix.index + prefix.data-*): TF1 Saver, TF2 Checkpoint",
        "weightscope.formats.tensorflow:TensorFlowCheckpoint",
        _sniff_tensorflow,
        writer="weightscope.formats.tensorflow:save",
        suffixes=(".ckpt",),
        writes=(".ckpt",),  # and a prefix with no suffix, or ending .ckpt-<step>: see format_to_write
    ),
    "safetensors": Format(
        "safetensors",
        "safetensors (.safetensors): a JSON header, then raw little-endian tensors",
        "weightscope.formats.safetensors:SafetensorsCheckpoint",
        _sniff_safetensors,
        writer="weightscope.formats.safetensors:save",
        suffixes=(".safetensors",),
        writes=(".safetensors",),
    ),
    "npy": Format(
        "npy",
        "NumPy array (.npy): one tensor, named after the file",
        "weightscope.formats.numpy_files:NpyCheckpoint",
        _sniff_npy,
        suffixes=(".npy",),
    ),
    "npz": Format(
        "npz",
        "NumPy archive (.npz, np.savez): a zip of .npy arrays, stored or deflated",
        "weightscope.formats.numpy_files:NpzCheckpoint",
        _sniff_npz,
        writer="weightscope.formats.numpy_files:save",
        suffixes=(".npz",),
        writes=(".npz",),
    ),
    "pytorch": Format(
        "pytorch",
        "PyTorch checkpoint (torch.save, .pt/.pth/.bin; zip or legacy): pickles read by an allow-list, never run",
        "weightscope.formats.pytorch:PyTorchCheckpoint",
        _sniff_pytorch,
        writer="weightscope.formats.pytorch_writer:save",
        suffixes=(".pt", ".pth", ".bin"),
        writes=(".pt", ".pth", ".bin"),
    ),
    "pickle": Format(
        "pickle",
        "Pickled NumPy arrays (.pkl, .pickle; JAX/Haiku params.pkl): read by an allow-list, never unpickled",
        "weightscope.formats.pickle_files:PickleCheckpoint",
        _sniff_pickle,
    ),
    "keras": Format(
        "keras",
        "Keras weights (.h5, .weights.h5, .keras zip; needs h5py): tf-keras and Keras 3 layouts",
        "weightscope.formats.keras:KerasCheckpoint",
        _sniff_keras,
        writer="weightscope.formats.keras:save",
        suffixes=(".weights.h5", ".h5", ".hdf5", ".keras"),
        writes=(".weights.h5",),  # Keras 3's layout; Keras reads a plain .h5 as tf-keras's
        requires="h5py",
        extra="keras",
    ),
    "gguf": Format(
        "gguf",
        "GGUF (llama.cpp, .gguf): typed metadata, then aligned tensors, quantised ones dequantised on read",
        "weightscope.formats.gguf:GgufCheckpoint",
        _sniff_gguf,
        suffixes=(".gguf",),
    ),
    "onnx": Format(
        "onnx",
        "ONNX model (.onnx): the graph's initializers and Constant nodes, inline or as external data beside the model",
        "weightscope.formats.onnx:OnnxCheckpoint",
        _sniff_onnx,
        suffixes=(".onnx",),
    ),
}


def open_checkpoint(
    path: str | os.PathLike[str] | RemotePath,
    *,
    format: str | None = None,
    verify: bool = True,
    storage_options: dict[str, Any] | None = None,
) -> Checkpoint:
    """Open the checkpoint at ``path``, choosing its format from its content.

    ``path`` may be a URL (``s3://bucket/run/ckpt-1000``, ``gs://…``, ``https://…``: any
    fsspec protocol, with ``pip install 'weightscope[remote]'``): then the index is
    fetched, and later only the byte ranges of the tensors read. ``storage_options``
    go to the fsspec filesystem (credentials, endpoint, ...).
    """
    path = as_path(path, storage_options)
    if isinstance(path, Path):
        return _open(path, format, verify)
    path.store.pin()  # the blocks read to sniff the format serve the reader too
    try:
        return _open(path, format, verify)
    finally:
        path.store.unpin()


def _open(path: AnyPath, format: str | None, verify: bool) -> Checkpoint:
    if format is not None:
        if format not in FORMATS:
            raise UnsupportedFormatError(f"unknown format {format!r}; known: {', '.join(sorted(FORMATS))}")
        return _reader(FORMATS[format], path)(path, verify=verify)  # type: ignore[call-arg]
    for candidate in FORMATS.values():
        if candidate.sniff(path):
            try:
                return _reader(candidate, path)(path, verify=verify)  # type: ignore[call-arg]
            except (CorruptCheckpointError, UnsupportedFormatError):
                _refuse_recognised(path)  # a TorchScript zip whose first member is data.pkl looks like torch.save's
                raise
    if not path.exists() and not plus(path, ".index").exists():
        raise CheckpointNotFoundError(f"{path}: no such file or checkpoint prefix")
    if path.is_dir():
        raise CheckpointNotFoundError(f"{path}: a directory with no checkpoint in it that weightscope knows")
    _refuse_recognised(path)
    raise UnsupportedFormatError(f"{path}: not a checkpoint format weightscope knows ({', '.join(FORMATS)})")


def _refuse_recognised(path: AnyPath) -> None:
    """Raise ``UnsupportedFormatError`` saying what ``path`` is, if it is a file ``RECOGNISED`` knows."""
    if path.is_dir():
        return
    for recognise, what in RECOGNISED:
        if recognise(path):
            raise UnsupportedFormatError(f"{path}: {what.replace('PATH', repr(str(path)))}")


def _reader(entry: Format, path: AnyPath) -> type[Checkpoint]:
    if entry.name == "keras" and not isinstance(path, Path):
        raise UnsupportedFormatError(
            f"{path}: Keras files are read through h5py, which reads local files only; download it first"
        )
    return entry.load()


def save_checkpoint(
    tensors: Tensors | Mapping[str, ArrayLike],
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
) -> Path:
    """Write ``tensors`` (name -> array, or a ``writing.Tensors``) as a checkpoint at ``path``; returns its path.

    The format is ``format``, else the one ``path``'s name ends with (``.safetensors``,
    ``.pt``/``.pth``/``.bin``, ``.npz``, ``.weights.h5``; a TensorFlow prefix has no suffix
    or ends ``.ckpt``): any other ending is refused (see ``format_to_write``).
    """
    written: Path = load_writer(format_to_write(Path(path), format))(tensors, path)
    return written


# A TensorFlow checkpoint's prefix as TensorFlow's savers name it: ``model.ckpt``, ``model.ckpt-1000``.
_TENSORFLOW_PREFIX = re.compile(r"\.ckpt(-\d+)?$")
_TENSORFLOW_FILE = re.compile(r"\.index$|\.data-\d{5}-of-\d{5}$")


def format_to_write(path: Path, format: str | None = None) -> str:
    """The format to write ``path`` in: ``format`` when given, else the one its name's ending says.

    A TensorFlow checkpoint is written at a prefix: a name with no suffix (``ckpt-1000``),
    or ending ``.ckpt`` or ``.ckpt-<step>``. Any other ending must be one a writer writes:
    one of a format weightscope only reads (``.onnx``, ``.gguf``, a Keras ``.h5``), a
    TensorFlow file's own (``.index``) or an unknown one (``.safetensor``) is refused with
    a UsageError that lists the endings written, rather than guessed.
    """
    if format is not None:
        load_writer(format)  # refused now when it is no format weightscope writes
        return format
    name = path.name.lower()
    endings = sorted(
        ((suffix, entry) for entry in FORMATS.values() for suffix in entry.suffixes), key=lambda item: -len(item[0])
    )
    for suffix, entry in endings:
        if name.endswith(suffix) and suffix in entry.writes:
            return entry.name
        if name.endswith(suffix):
            also = f" (its writer writes {', '.join(entry.writes)})" if entry.writes else ""
            raise UsageError(
                f"{path}: weightscope reads {entry.name} files ending {suffix} but does not write them{also}; "
                f"{_written()}"
            )
    if found := _TENSORFLOW_FILE.search(name):
        raise UsageError(
            f"{path}: a TensorFlow checkpoint is written at its prefix; give the name without {found[0]}, or "
            f"{_written()}"
        )
    suffix = Path(name).suffix
    if not suffix or _TENSORFLOW_PREFIX.search(name):
        return "tensorflow"
    written = [ending for entry in FORMATS.values() for ending in entry.writes]
    close = difflib.get_close_matches(suffix, written, n=1, cutoff=0.7)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise UsageError(f"{path}: '{suffix}' names no format weightscope writes{hint}; {_written()}")


def _written() -> str:
    """The endings the writers write, for a refusal."""
    endings = [
        "/".join(entry.writes) + ("" if entry.name in entry.writes[0] else f" ({entry.name})")
        for entry in FORMATS.values()
        if entry.writer and entry.name != "tensorflow"
    ]
    return (
        f"write {', '.join(endings)}, or a TensorFlow checkpoint at a prefix with no suffix or ending .ckpt; "
        "or name the format (--to, or format= in Python)"
    )


def load_writer(format: str) -> Callable[..., Path]:
    """The function that writes ``format``: ``writer(tensors, path) -> Path``."""
    writable = [name for name, entry in FORMATS.items() if entry.writer]
    if format not in writable:
        raise UnsupportedFormatError(f"cannot write format {format!r}; writable: {', '.join(writable)}")
    writer: Callable[..., Path] = _import(FORMATS[format].writer)  # type: ignore[arg-type]
    return writer
