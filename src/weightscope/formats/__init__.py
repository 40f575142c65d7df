"""The format registry: every fact about a format, by name; its reader imported on first use.

Each ``Format`` says what a format is (its magic bytes and where they sit, the endings of
its files' names, the zip members that identify it), what reads and writes it (module and
class or function, imported only when used), what it needs (an optional dependency and its
install hint, local files only), and what ``convert`` and ``scan`` ask of it. Sniffing,
``convert``'s choice from a destination's name, ``runs``, ``weightscope formats`` and the
command line's choices are all derived from these entries (fsspec's ``known_implementations``).

Another package adds a format with ``register_format(Format(...))``, or by naming a
``Format`` in the entry point group ``weightscope.formats`` (read on the registry's first use).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weightscope.errors import (
    CheckpointNotFoundError,
    CorruptCheckpointError,
    UnsupportedFormatError,
    UsageError,
)
from weightscope.formats._format import Format, Staging, _import, _magic_or_suffix
from weightscope.formats._sniffing import (
    file_head,
    first_member,
    refuse_recognised,
    sniff_dcp,
    sniff_deepspeed,
    sniff_flax,
    sniff_openvino,
    sniff_orbax,
    sniff_pytorch,
    sniff_tensorflow,
    sniff_torchscript,
    zip_members,
)
from weightscope.sources import AnyPath, as_path, local_path, opening, plus

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from weightscope.checkpoint import Checkpoint
    from weightscope.remote import RemotePath
    from weightscope.shards import ShardNames
    from weightscope.writing import Tensors, Writer


def _sniff_folder(path: AnyPath, entry: Format) -> bool:
    return path.is_dir()  # after TensorFlow's: a folder no other format claims (the reader says what is in it)


def _sniff_coreml(path: AnyPath, entry: Format) -> bool:
    """A Core ML ending, or a folder holding an .mlpackage's Manifest.json (no magic: a .mlmodel is bare protobuf)."""
    return path.suffix in entry.suffixes or (path.is_dir() and (path / "Manifest.json").is_file())


def _sniff_set(path: AnyPath, entry: Format) -> bool:
    from weightscope.formats._folder_choice import is_set  # its patterns: asked of folders only

    return is_set(path)


def _sniff_safetensors(path: AnyPath, entry: Format) -> bool:
    head = file_head(path, 9)  # the header length, then the JSON object's "{"
    if len(head) == 9 and head[8:] == b"{" and int.from_bytes(head[:8], "little") <= path.stat().st_size - 9:
        return True
    return path.suffix in entry.suffixes


def _sniff_npz(path: AnyPath, entry: Format) -> bool:
    if path.suffix in entry.suffixes:
        return True
    from weightscope.containers.zip import LOCAL_SIGNATURE  # the zip reader: files of formats sniffed after it

    head = file_head(path, 30 + 0xFFFF)
    return head.startswith(LOCAL_SIGNATURE) and first_member(head).endswith(b".npy")


def _sniff_pickle(path: AnyPath, entry: Format) -> bool:
    # A pickle of protocol 2 or later starts with PROTO and its version; older ones have no
    # magic, so the suffix decides. (PyTorch's legacy files, pickles too, are claimed first.)
    head = file_head(path, 2)
    return path.suffix in entry.suffixes or (len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def _sniff_keras(path: AnyPath, entry: Format) -> bool:
    """HDF5's magic or a Keras ending; or (a local file only) a zip holding all of ``entry.members``."""
    if _magic_or_suffix(path, entry):
        return True
    if entry.local_only and local_path(path) is None:
        return False  # a remote .keras zip: h5py reads local files only, so it is no format to offer
    return zip_members(path) >= set(entry.members)


_BUILT_IN = (
    Format(
        "orbax",
        "Orbax checkpoint (JAX): an item or step folder, or a CheckpointManager's steps; OCDBT or zarr folders",
        "weightscope.formats.orbax:OrbaxCheckpoint",
        sniffer=sniff_orbax,
        local_only="an Orbax checkpoint is a folder of many files, read on this machine only",
        step_folders=True,
        scanner="weightscope.formats.orbax:scan",  # nothing to list: arrays and JSON name no code
    ),
    Format(
        "tensorflow",
        "TensorFlow tensor bundle (prefix.index + prefix.data-*): TF1 Saver, TF2 Checkpoint",
        "weightscope.formats.tensorflow:TensorFlowCheckpoint",
        sniffer=sniff_tensorflow,
        index=".index",
        parts=r"\.index$|\.data-\d{5}-of-\d{5}$",
        writer="weightscope.formats.tensorflow_writer:WRITER",
        suffixes=(".ckpt",),
        writes=(".ckpt",),  # and a prefix with no suffix, or ending .ckpt-<step>: see format_to_write
        staging="weightscope.formats.tensorflow_writer:staging",
    ),
    Format(
        "deepspeed",
        "DeepSpeed ZeRO checkpoint (stages 1-3: latest + global_stepN/ rank files), consolidated as zero_to_fp32 does",
        "weightscope.formats.deepspeed:DeepSpeedCheckpoint",
        sniffer=sniff_deepspeed,
        members=("*_model_states.pt",),  # what a tag's folder holds (a glob)
        local_only="a DeepSpeed checkpoint is a folder of rank files, read from a local disk",
        step_folders=True,
        scanner="weightscope.formats.deepspeed:scan",
    ),
    Format(
        "dcp",
        "PyTorch Distributed Checkpoint (DCP: FSDP, torchtitan, Megatron torch_dist): .metadata + __R_I.distcp",
        "weightscope.formats.dcp:DcpCheckpoint",
        sniffer=sniff_dcp,
        local_only="a DCP folder is read from local files only (its files are found by listing it)",
        scanner="weightscope.formats.dcp:scan",
        step_folders=True,
    ),
    Format(
        "coreml",
        "Core ML model (.mlmodel, .mlpackage folder): neural-network layer weights and ML-program constants",
        "weightscope.formats.coreml:CoreMLCheckpoint",
        sniffer=_sniff_coreml,
        suffixes=(".mlmodel", ".mlpackage"),
    ),
    Format(
        "model-folder",
        "model folder (save_pretrained, a diffusers component, checkpoint-N/): the weights transformers loads",
        "weightscope.formats.model_folder:ModelFolderCheckpoint",
        sniffer=_sniff_folder,
    ),
    Format(
        "sharded",
        "sharded set (by its index model.safetensors.index.json, ...; or any shard; a GGUF split -00001-of-N.gguf)",
        "weightscope.formats.model_folder:ModelFolderCheckpoint",
        sniffer=_sniff_set,
    ),
    # Before the formats whose sniffers read a .bin's first bytes: an IR's .bin is raw data, claimed by its .xml.
    Format(
        "openvino",
        "OpenVINO IR (.xml + .bin): every Const of the graph, compressed weights dequantised on request",
        "weightscope.formats.openvino:OpenVinoCheckpoint",
        sniffer=sniff_openvino,
        suffixes=(".xml",),
    ),
    Format(
        "safetensors",
        "safetensors (.safetensors): a JSON header, then raw little-endian tensors",
        "weightscope.formats.safetensors:SafetensorsCheckpoint",
        sniffer=_sniff_safetensors,
        writer="weightscope.formats.safetensors:WRITER",
        suffixes=(".safetensors",),
        writes=(".safetensors",),
        staging="weightscope.formats.safetensors:staging",
        model_file="model.safetensors",
        metadata_editor="weightscope.formats.safetensors:METADATA_EDITOR",
    ),
    Format(
        "npy",
        "NumPy array (.npy): one tensor, named after the file",
        "weightscope.formats.numpy_files:NpyCheckpoint",
        magic=((0, b"\x93NUMPY"),),
        suffixes=(".npy",),
    ),
    Format(
        "npz",
        "NumPy archive (.npz, np.savez): a zip of .npy arrays, stored or deflated",
        "weightscope.formats.numpy_files:NpzCheckpoint",
        sniffer=_sniff_npz,
        writer="weightscope.formats.numpy_files:WRITER",
        suffixes=(".npz",),
        writes=(".npz",),
    ),
    Format(
        "pytorch",
        "PyTorch checkpoint (torch.save, .pt/.pth/.bin; zip or legacy): pickles read by an allow-list, never run",
        "weightscope.formats.pytorch:PyTorchCheckpoint",
        sniffer=sniff_pytorch,
        members=("data.pkl", ".format_version", "byteorder", "version"),  # the first, in the archive's one folder
        writer="weightscope.formats.pytorch_writer:WRITER",
        suffixes=(".pt", ".pth", ".bin"),
        writes=(".pt", ".pth", ".bin"),
        scanner="weightscope.formats.pytorch:scan",
        model_file="pytorch_model.bin",
    ),
    Format(
        "torchscript",
        "TorchScript archive (torch.jit.save): the module's tensors and constants; code/ listed, never run",
        "weightscope.formats.torchscript:TorchScriptCheckpoint",
        sniffer=sniff_torchscript,  # pytorch's sniffer leaves its archives, even one starting with data.pkl
        scanner="weightscope.formats.torchscript:scan",
    ),
    Format(
        "pickle",
        "Pickled NumPy arrays (.pkl, .pickle; JAX/Haiku params.pkl): read by an allow-list, never unpickled",
        "weightscope.formats.pickle_files:PickleCheckpoint",
        sniffer=_sniff_pickle,
        suffixes=(".pkl", ".pickle"),
        scanner="weightscope.formats.pickle_files:scan",
    ),
    Format(
        "keras",
        "Keras weights (.h5, .weights.h5, .keras zip; needs h5py): tf-keras and Keras 3 layouts",
        "weightscope.formats.keras:KerasCheckpoint",
        sniffer=_sniff_keras,
        magic=((0, b"\x89HDF\r\n\x1a\n"),),
        members=("config.json", "model.weights.h5"),  # a .keras zip holds both
        local_only="Keras files are read through h5py, which reads local files only",
        writer="weightscope.formats.keras_writer:WRITER",
        suffixes=(".weights.h5", ".h5", ".hdf5", ".keras"),
        writes=(".weights.h5",),  # Keras 3's layout; Keras reads a plain .h5 as tf-keras's
        requires="h5py",
        extra="keras",
    ),
    Format(
        "gguf",
        "GGUF (llama.cpp, .gguf): typed metadata, then aligned tensors, quantised ones dequantised on read",
        "weightscope.formats.gguf:GgufCheckpoint",
        magic=((0, b"GGUF"),),
        suffixes=(".gguf",),
        metadata_editor="weightscope.formats.gguf:METADATA_EDITOR",
    ),
    Format(
        "executorch",
        "ExecuTorch program (.pte): the constant tensors of every method, and a size breakdown by operator",
        "weightscope.formats.executorch:ExecuTorchCheckpoint",
        magic=((4, b"ET12"),),
        suffixes=(".pte",),
        scanner="weightscope.formats.executorch:scan",  # nothing to list: operators are named, never code
    ),
    # ONNX has no magic, and a ModelProto's usual first byte (0x08: field 1, ir_version) is
    # too weak to claim a file by: the suffix decides, and the reader refuses what does not parse.
    Format(
        "onnx",
        "ONNX model (.onnx): the graph's initializers and Constant nodes, inline or as external data beside the model",
        "weightscope.formats.onnx:OnnxCheckpoint",
        suffixes=(".onnx",),
    ),
    Format(
        "tflite",
        "TFLite model (LiteRT, .tflite): the constant tensors of every subgraph, quantised ones dequantised on request",
        "weightscope.formats.tflite:TFLiteCheckpoint",
        magic=((4, b"TFL3"),),
        suffixes=(".tflite",),
        local_only="a TFLite model's flatbuffer is walked in place, in a memory map: local files only",
        scanner="weightscope.formats.tflite:scan",  # nothing to list: operators are the runtime's, no code
    ),
    Format(
        "flax-msgpack",
        "Flax msgpack (flax.serialization.to_bytes, flax_model.msgpack, checkpoint_<step>): flax's tree of arrays",
        "weightscope.formats.flax_msgpack:FlaxMsgpackCheckpoint",
        sniffer=sniff_flax,
        writer="weightscope.formats.flax_msgpack:WRITER",
        suffixes=(".msgpack",),
        writes=(".msgpack",),
        scanner="weightscope.formats.flax_msgpack:scan",  # nothing to list: read as a pickle, its bytes look like one
        model_file="flax_model.msgpack",
    ),
)

ENTRY_POINT_GROUP = "weightscope.formats"


class FormatRegistry(Mapping[str, Format]):
    """The formats by name, in sniffing order: the built-in ones and those registered since, then those named by
    installed packages' ``weightscope.formats`` entry points. These are read the first time the registry is asked
    for more than it holds (a name it lacks, its length, iterating past its last entry): opening a file that a
    format already held claims reads no package metadata (some 30 ms)."""

    def __init__(self, formats: Sequence[Format]) -> None:
        self._formats = {entry.name: entry for entry in formats}
        self._entry_points_read = False

    def _read_entry_points(self) -> list[str]:
        """Add the formats the entry points name (the first time only); the names added."""
        if self._entry_points_read:
            return []
        self._entry_points_read = True
        added = []
        import importlib.metadata  # only when asked: it imports email, csv and more (~2 MiB) at start-up

        for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            try:
                entry = point.load()
                if not isinstance(entry, Format):
                    raise TypeError(f"{point.value} is a {type(entry).__name__}, not a weightscope Format")
            except Exception as error:  # a broken plugin must not break every other format
                warnings.warn(f"weightscope: format entry point {point.name!r} skipped: {error}", stacklevel=3)
                continue
            if entry.name not in self._formats:
                self._formats[entry.name] = entry
                added.append(entry.name)
        return added

    def __getitem__(self, name: str) -> Format:
        if name not in self._formats:
            self._read_entry_points()
        return self._formats[name]

    def __iter__(self) -> Iterator[str]:
        yield from list(self._formats)
        yield from self._read_entry_points()

    def __len__(self) -> int:
        self._read_entry_points()
        return len(self._formats)

    def add(self, entry: Format, *, replace: bool = False) -> None:
        if entry.name in self and not replace:
            raise UsageError(f"a format named {entry.name!r} is registered already; pass replace=True to replace it")
        self._formats[entry.name] = entry

    def remove(self, name: str) -> Format:
        if name not in self:
            raise UsageError(f"no format named {name!r} is registered")
        return self._formats.pop(name)

    def writable(self) -> list[str]:
        """The names of the formats weightscope writes, in registry order."""
        return [entry.name for entry in self.values() if entry.writer]

    def scanners(self) -> list[Format]:
        """The formats whose pickles ``weightscope scan`` lists, in sniffing order."""
        return [entry for entry in self.values() if entry.scanner]

    def prefix_index(self, path: Path) -> Path | None:
        """The file readers look for beside ``path`` when it is a checkpoint prefix (``path.index``); else None.
        The entry points are read only when a file beside ``path`` has a name starting with its name: no other can
        be a format's index of it (``convert`` asks of every destination)."""
        import glob  # convert asks here, not every command

        held = list(self._formats.values())
        if not self._entry_points_read and any(path.parent.glob(glob.escape(path.name) + "*")):
            held += [self._formats[name] for name in self._read_entry_points()]
        for entry in held:
            if entry.index and (index := Path(f"{path}{entry.index}")).is_file():
                return index
        return None

    def prefix_of(self, path: Path) -> Path | None:
        """The prefix of the checkpoint whose file (index, data shard) ``path`` is; None for any other file."""
        for entry in self.values():
            if entry.parts and (found := re.search(entry.parts, path.name)):
                return path.with_name(path.name[: found.start()])
        return None

    def folder_checkpoint(self, path: Path) -> bool:
        """Whether folder ``path`` is one checkpoint of a format whose checkpoints are folders (a DCP step)."""
        return any(entry.step_folders and entry.sniff(path) for entry in self.values())

    def file_suffixes(self) -> tuple[str, ...]:
        """Every ending of a one-file checkpoint's name, longest first (``.weights.h5`` before ``.h5``)."""
        endings = {suffix for entry in self.values() if not entry.prefix for suffix in entry.suffixes}
        return tuple(sorted(endings, key=lambda ending: (-len(ending), ending)))


FORMATS = FormatRegistry(_BUILT_IN)
DEFAULT_TARGET = "safetensors"  # what ``runs convert`` writes unless told


def scanner_for(path: AnyPath) -> Callable[[AnyPath], Any]:
    """The ``scan`` of the first format with one that claims ``path``; else the first one-file format's with one
    (which says what is wrong with the file)."""
    scanners = FORMATS.scanners()
    chosen = next((entry for entry in scanners if entry.sniff(path)), next(e for e in scanners if not e.step_folders))
    return _import(chosen.scanner)  # type: ignore[arg-type]


def register_format(entry: Format, *, replace: bool = False) -> None:
    """Add ``entry`` to the registry: files it sniffs open with its reader, every command reads it, and with a
    ``writer`` it is a target of ``save`` and ``convert``. Sniffed after the formats already registered; a name
    taken already is refused unless ``replace``."""
    FORMATS.add(entry, replace=replace)


def unregister_format(name: str) -> Format:
    """Remove format ``name`` from the registry; returns its entry (``register_format`` adds it back)."""
    return FORMATS.remove(name)


def open_checkpoint(
    path: str | os.PathLike[str] | RemotePath,
    *,
    format: str | None = None,
    verify: bool = True,
    storage_options: dict[str, Any] | None = None,
    dequantize: bool | str = False,
) -> Checkpoint:
    """Open the checkpoint at ``path``, choosing its format from its content.

    ``dequantize=True`` reads each weight stored quantised as several tensors (FP8 with scales, MXFP4, NVFP4,
    compressed-tensors, GPTQ, AWQ, bitsandbytes) as one tensor of its dequantised values, bit for bit as its
    reference implementation gives them (``weightscope.quant``); a dtype name (``"bfloat16"``) casts them to it.

    ``path`` may be a URL (``s3://bucket/run/ckpt-1000``, ``gs://…``, ``https://…``: any
    fsspec protocol, with ``pip install 'weightscope[remote]'``): then the index is
    fetched, and later only the byte ranges of the tensors read. ``storage_options``
    go to the fsspec filesystem (credentials, endpoint, ...).
    """
    path = as_path(path, storage_options)
    with opening(path):  # a URL's blocks read to sniff the format serve the reader too
        ckpt = _open(path, format, verify)
    if dequantize is False:
        return ckpt
    from weightscope.quant import Dequantized

    try:
        return Dequantized(ckpt, None if dequantize is True else dequantize)
    except BaseException:
        ckpt.close()
        raise


def _open(path: AnyPath, format: str | None, verify: bool) -> Checkpoint:
    if format is not None:
        if format not in FORMATS:
            raise UnsupportedFormatError(f"unknown format {format!r}; known: {', '.join(sorted(FORMATS))}")
        return _read(FORMATS[format], path, verify)
    for candidate in FORMATS.values():
        if candidate.sniff(path):
            try:
                return _read(candidate, path, verify)
            except (CorruptCheckpointError, UnsupportedFormatError):
                refuse_recognised(path)  # claimed by its name or first bytes, yet a file RECOGNISED knows: say so
                raise
    if not path.exists() and not plus(path, ".index").exists():
        raise CheckpointNotFoundError(f"{path}: no such file or checkpoint prefix")
    if path.is_dir():
        raise CheckpointNotFoundError(f"{path}: a directory with no checkpoint in it that weightscope knows")
    refuse_recognised(path)
    raise UnsupportedFormatError(f"{path}: not a checkpoint format weightscope knows ({', '.join(FORMATS)})")


def _read(entry: Format, path: AnyPath, verify: bool) -> Checkpoint:
    """``path`` opened by ``entry``'s reader, named by its title."""
    if entry.local_only and local_path(path) is None:
        raise UnsupportedFormatError(f"{path}: {entry.local_only}; download it first")
    ckpt = entry.load()(path, verify=verify)  # type: ignore[call-arg]
    ckpt.title = entry.title
    return ckpt


def save_checkpoint(
    tensors: Tensors | Mapping[str, ArrayLike],
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    max_shard_size: int | str | None = None,
) -> Path:
    """Write ``tensors`` (name -> array, or a ``writing.Tensors``) as a checkpoint at ``path``; returns its path.

    The format is ``format``, else the one ``path``'s name ends with (``.safetensors``,
    ``.pt``/``.pth``/``.bin``, ``.npz``, ``.weights.h5``; a TensorFlow prefix has no suffix
    or ends ``.ckpt``): any other ending is refused (see ``format_to_write``).

    With ``max_shard_size`` (``"5GB"``, ``"500MB"``, ``"2GiB"``, bytes) ``path`` is a folder, written whole or not at
    all, that holds a Hugging Face model: shards of at most that size and their index, named and grouped as
    ``huggingface_hub`` and transformers' ``save_pretrained`` do, in ``format`` (safetensors unless told; or pytorch's
    ``pytorch_model-0000N-of-0000M.bin``); see ``weightscope.shards``.
    """
    if max_shard_size is None:
        load_writer(format_to_write(Path(path), format)).write(tensors, path)
        return Path(path)
    from weightscope.atomic import atomic_folder
    from weightscope.shards import plan_set
    from weightscope.writing import check_folder

    format = format or DEFAULT_TARGET
    writer, model_file = set_writer(format)
    folder = Path(path)
    check_folder(folder)
    planned = plan_set(writer, model_file, tensors, folder, max_shard_size)
    options = staging(format, folder, planned.source.names()).options  # what convert tells the writer: pt's metadata
    folder.parent.mkdir(parents=True, exist_ok=True)
    with atomic_folder(folder) as work:
        planned.write(work, **options)
    return folder


def set_writer(format: str) -> tuple[Writer, str]:
    """The writer of ``format`` and the weights file of a model folder kept in it; refused for a format none is."""
    writer = load_writer(format)
    kept = [entry.name for entry in FORMATS.values() if entry.model_file and entry.writer]
    if not FORMATS[format].model_file:
        raise UsageError(f"no Hugging Face model folder is kept in {format}; a sharded folder is {' or '.join(kept)}")
    return writer, FORMATS[format].model_file


def model_file_names() -> list[ShardNames]:
    """The names of every model folder's weights files (file, shards, index), of the formats that name one."""
    from weightscope.shards import ShardNames

    return [ShardNames(entry.model_file) for entry in FORMATS.values() if entry.model_file]


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
        return _prefix_writer()
    written = [ending for entry in FORMATS.values() for ending in entry.writes]
    import difflib  # only a mistyped name pays for it

    close = difflib.get_close_matches(suffix, written, n=1, cutoff=0.7)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise UsageError(f"{path}: '{suffix}' names no format weightscope writes{hint}; {_written()}")


def _written() -> str:
    """The endings the writers write, for a refusal."""
    endings = [
        "/".join(entry.writes) + ("" if entry.name in entry.writes[0] else f" ({entry.name})")
        for entry in FORMATS.values()
        if entry.writer and not entry.prefix
    ]
    return (
        f"write {', '.join(endings)}, or a TensorFlow checkpoint at a prefix with no suffix or ending .ckpt; "
        "or name the format (--to, or format= in Python)"
    )


def _prefix_writer() -> str:
    """The format written at a checkpoint prefix (a name with no suffix): TensorFlow's."""
    return next(entry.name for entry in FORMATS.values() if entry.prefix and entry.writer)


def staging(format: str, destination: Path, names: Sequence[str]) -> Staging:
    """What ``convert`` does around ``format``'s writer for ``destination`` (tensors ``names``): see ``Staging``."""
    entry = FORMATS[format]
    if entry.staging is None:
        return Staging()
    made: Staging = _import(entry.staging)(destination, names)
    return made


def load_writer(format: str) -> Writer:
    """What writes ``format``: its files' limits, and ``write(tensors, path) -> [files in commit order]``."""
    entry = FORMATS.get(format)  # a format the registry holds: its plugins' entry points are not read
    if entry is None or not entry.writer:
        raise UnsupportedFormatError(f"cannot write format {format!r}; writable: {', '.join(FORMATS.writable())}")
    writer: Writer = _import(entry.writer)
    return writer
