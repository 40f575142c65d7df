"""The format registry: formats by name, imported on first use, chosen by content.

Each entry names the module and class that read a format and a cheap ``sniff`` that
looks at the path (and at most a few bytes) without importing the reader.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weightscope.errors import CheckpointNotFoundError, UnsupportedFormatError
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
_ZIP_MAGIC = b"PK\x03\x04"  # a zip's first local file header
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
    return head.startswith(_ZIP_MAGIC) and head[30:name_end].endswith(b".npy")


_PYTORCH_MEMBERS = (b"/data.pkl", b"/.format_version", b"/byteorder", b"/version")


# The legacy format (torch.save before 1.6) starts with its magic number 0x1950a86a20f9469cfc6c
# pickled at protocol 2: PROTO 2, LONG1 of 10 bytes, STOP.
_PYTORCH_LEGACY_HEAD = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little") + b"."


def _sniff_pytorch(path: AnyPath) -> bool:
    head = _head(path, 30 + 0xFFFF)
    if head.startswith(_PYTORCH_LEGACY_HEAD):
        return True
    name = head[30 : 30 + int.from_bytes(head[_ZIP_NAME_LENGTH], "little")]
    return head.startswith(_ZIP_MAGIC) and name.count(b"/") == 1 and name.endswith(_PYTORCH_MEMBERS)


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
    if not head.startswith(_ZIP_MAGIC):
        return False
    if not isinstance(path, Path):
        return False  # a remote .keras zip: h5py reads local files only, so it is no format to offer
    try:
        with zipfile.ZipFile(path) as archive:
            return set(archive.namelist()) >= _KERAS_MEMBERS
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return False


def _sniff_onnx(path: AnyPath) -> bool:
    # ONNX has no magic, and a ModelProto's usual first byte (0x08: field 1, ir_version) is
    # too weak to claim a file by: the suffix decides, and the reader refuses what does not parse.
    return path.suffix == ".onnx"


@dataclass(frozen=True)
class Format:
    name: str
    description: str
    target: str  # "module:Class"
    sniff: Callable[[AnyPath], bool]
    writer: str | None = None  # "module:function", for formats weightscope can write
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
    ),
    "safetensors": Format(
        "safetensors",
        "safetensors (.safetensors): a JSON header, then raw little-endian tensors",
        "weightscope.formats.safetensors:SafetensorsCheckpoint",
        _sniff_safetensors,
        writer="weightscope.formats.safetensors:save",
    ),
    "npy": Format(
        "npy",
        "NumPy array (.npy): one tensor, named after the file",
        "weightscope.formats.numpy_files:NpyCheckpoint",
        _sniff_npy,
    ),
    "npz": Format(
        "npz",
        "NumPy archive (.npz, np.savez): a zip of .npy arrays, stored or deflated",
        "weightscope.formats.numpy_files:NpzCheckpoint",
        _sniff_npz,
        writer="weightscope.formats.numpy_files:save",
    ),
    "pytorch": Format(
        "pytorch",
        "PyTorch checkpoint (torch.save, .pt/.pth/.bin; zip or legacy): pickles read by an allow-list, never run",
        "weightscope.formats.pytorch:PyTorchCheckpoint",
        _sniff_pytorch,
        writer="weightscope.formats.pytorch_writer:save",
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
        requires="h5py",
        extra="keras",
    ),
    "gguf": Format(
        "gguf",
        "GGUF (llama.cpp, .gguf): typed metadata, then aligned tensors, quantised ones dequantised on read",
        "weightscope.formats.gguf:GgufCheckpoint",
        _sniff_gguf,
    ),
    "onnx": Format(
        "onnx",
        "ONNX model (.onnx): the graph's initializers, inline or as external data beside the model",
        "weightscope.formats.onnx:OnnxCheckpoint",
        _sniff_onnx,
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
            return _reader(candidate, path)(path, verify=verify)  # type: ignore[call-arg]
    if not path.exists() and not plus(path, ".index").exists():
        raise CheckpointNotFoundError(f"{path}: no such file or checkpoint prefix")
    if path.is_dir():
        raise CheckpointNotFoundError(f"{path}: a directory with no checkpoint in it that weightscope knows")
    raise UnsupportedFormatError(f"{path}: not a checkpoint format weightscope knows ({', '.join(FORMATS)})")


def _reader(entry: Format, path: AnyPath) -> type[Checkpoint]:
    if entry.name == "keras" and not isinstance(path, Path):
        raise UnsupportedFormatError(
            f"{path}: Keras files are read through h5py, which reads local files only; download it first"
        )
    return entry.load()


def save_checkpoint(
    tensors: Tensors | Mapping[str, ArrayLike], path: str | os.PathLike[str], *, format: str = "tensorflow"
) -> Path:
    """Write ``tensors`` (name -> array, or a ``writing.Tensors``) as a checkpoint of ``format`` at ``path``."""
    written: Path = load_writer(format)(tensors, path)
    return written


def load_writer(format: str) -> Callable[..., Path]:
    """The function that writes ``format``: ``writer(tensors, path) -> Path``."""
    writable = [name for name, entry in FORMATS.items() if entry.writer]
    if format not in writable:
        raise UnsupportedFormatError(f"cannot write format {format!r}; writable: {', '.join(writable)}")
    writer: Callable[..., Path] = _import(FORMATS[format].writer)  # type: ignore[arg-type]
    return writer
