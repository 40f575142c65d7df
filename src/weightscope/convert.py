"""Move weights between formats and frameworks: plan every tensor, stream, verify, then rename.

A conversion first plans each output tensor from the source's index alone: which source
tensor it comes from, its new name (``--names``), and the axis permutation that takes it
to the target framework's layout (``--layout``). Layouts are decided per tensor from its
name and shape, never guessed: TensorFlow and Keras call a layer's weight ``kernel``
(dense ``[in, out]``, convolution ``[..spatial, in, out]``, transposed convolution
``[..spatial, out, in]``, depthwise ``[..spatial, in, multiplier]``), PyTorch calls it
``weight`` (``[out, in]``, ``[out, in, ..spatial]``, ``[in, out, ..spatial]``).
A Keras 3 DepthwiseConv calls its weight ``kernel`` like a convolution's, so only a
layer name with "depthwise" in it (Keras's default) tells them apart. A
tensor whose layout cannot be decided (an LSTM's ``recurrent_kernel``, a ``w`` of an
unknown framework) is written as it is and listed as ambiguous in the result. The layouts
and names are ``weightscope.conventions``'.

The data is streamed from the source's memory-mapped views into the format's writer, one
tensor (and at most one permuted copy) at a time. Everything is written into a hidden
directory beside the destination, read back and compared tensor by tensor (CRC32C of
the values that were handed to the writer, plus the format's own checksums) and only
then renamed into place, in the order the writer committed its files (data files before
index files): a conversion killed part way leaves nothing at the destination that a
reader accepts. The source's checksums that cover a span shared by tensors (a PyTorch
storage's zip member) are computed on other threads while the writer writes
(``Checkpoint.checks_deferred``), and all found matching before the read-back: a damaged
source fails the conversion as before, only once its tensors are written to the hidden
directory rather than at the first of them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import functools
import mmap
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from weightscope import conventions
from weightscope._crc32c import crc32c
from weightscope.atomic import atomic_folder, interruptible
from weightscope.checkpoint import Checkpoint
from weightscope.conventions import CONVENTIONS
from weightscope.dtypes import BY_NAME, numeric_kind
from weightscope.errors import ChecksumMismatchError, UnsupportedFormatError, UsageError
from weightscope.layers import TensorRole
from weightscope.renames import Renames
from weightscope.shards import model_files, parse_size, plan_set
from weightscope.span_checks import Pending
from weightscope.writing import Writer, check_folder, check_target, little_endian

if TYPE_CHECKING:
    from weightscope.formats import Staging

LAYOUTS = NAMINGS = CONVENTIONS
CASTS = ("float16", "bfloat16", "float32")  # what ``dtype`` casts floating tensors to
FOLDER_SHARD_SIZE = "5GB"  # huggingface_hub's save_torch_state_dict default: the shards of a folder named "out/"

# Progress: (tensors written, tensors in all, bytes written, bytes in all).
Progress = Callable[[int, int, int, int], None]


@dataclass(frozen=True)
class PlannedTensor:
    """One tensor of the output: where it comes from and what is done to it."""

    name: str
    source: str
    dtype: np.dtype
    shape: tuple[int, ...]
    permutation: tuple[int, ...] | None = None  # axes of the source, in output order
    reshape: tuple[int, ...] | None = None  # applied after the permutation
    layout: str = "kept"  # what was decided, in words
    cast_from: np.dtype | None = None  # the source's type, when cast to ``dtype`` on the way

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def transform(self, array: np.ndarray) -> np.ndarray:
        if self.permutation is not None:
            array = array.transpose(self.permutation)
        if self.reshape is not None:
            array = np.ascontiguousarray(array).reshape(self.reshape)
        if self.cast_from is not None:
            array = array.astype(self.dtype)  # one copy, as a permutation's: the tensor at hand only
        return array


@dataclass
class Conversion:
    """What a conversion wrote: its plan, what it left out, and what it could not decide."""

    source: str
    destination: str
    format: str
    layout: str
    names: str
    tensors: list[PlannedTensor]
    skipped: dict[str, str] = field(default_factory=dict)  # source name -> why
    ambiguous: dict[str, str] = field(default_factory=dict)  # source name -> why kept as is
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # what else the user should know (a state file not written)
    dtype: str | None = None  # what floating tensors were cast to, if anything
    files: list[str] = field(default_factory=list)  # the files written, in the order they were moved into place

    @property
    def nbytes(self) -> int:
        return sum(tensor.nbytes for tensor in self.tensors)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "destination": self.destination,
            "format": self.format,
            "layout": self.layout,
            "names": self.names,
            "dtype": self.dtype,
            "nbytes": self.nbytes,
            "seconds": round(self.seconds, 3),
            "tensors": [
                {
                    "name": tensor.name,
                    "source": tensor.source,
                    "dtype": str(tensor.dtype),
                    "shape": list(tensor.shape),
                    "layout": tensor.layout,
                    "cast_from": None if tensor.cast_from is None else str(tensor.cast_from),
                }
                for tensor in self.tensors
            ],
            "skipped": self.skipped,
            "ambiguous": self.ambiguous,
            "notes": self.notes,
            "files": self.files,
        }


# -- the plan --------------------------------------------------------------------------------


def plan(
    ckpt: Checkpoint,
    *,
    layout: str = "keep",
    names: str = "keep",
    include_optimizer: bool = False,
    pattern: str | None = None,
    dtype: str | None = None,
) -> tuple[list[PlannedTensor], dict[str, str], dict[str, str]]:
    """The output tensors, what is left out (and why), and what was kept for want of a layout.

    With ``dtype`` (float16, bfloat16 or float32) every floating tensor of another type
    is cast to it; integers, booleans, complex numbers and strings are written as they are.
    The stored parts of a quantised weight (``weightscope.quant``: packed values, scales, zero points) are written
    as they are, under their names, neither cast nor permuted; a checkpoint opened with ``dequantize`` has each as
    one tensor of float values instead, which is cast and permuted as any other.
    """
    if layout not in LAYOUTS or names not in NAMINGS:
        raise UsageError(f"layout and names are one of {', '.join(LAYOUTS)}; not {layout!r}, {names!r}")
    if dtype is not None and dtype not in CASTS:
        raise UsageError(f"dtype is one of {', '.join(CASTS)}; not {dtype!r}")
    cast = None if dtype is None else BY_NAME[dtype].dtype
    from weightscope.quant import quantized_parts

    parts = quantized_parts(ckpt)
    skipped: dict[str, str] = {}
    chosen: list[str] = []
    for name in ckpt:
        role: TensorRole = ckpt.role(name)
        if pattern is not None and not fnmatch.fnmatchcase(name, pattern):
            skipped[name] = f"not matched by {pattern}"
        elif name in parts:
            chosen.append(name)
        elif role.kind == "bookkeeping":
            skipped[name] = "bookkeeping"
        elif role.kind == "optimizer" and not include_optimizer:
            skipped[name] = "optimizer state (--include-optimizer keeps it)"
        else:
            chosen.append(name)
    norm_layers = set()
    if names == "tensorflow":
        norm_layers = conventions.norm_layers(chosen, lambda name: ckpt.info(name).shape)
    planned: list[PlannedTensor] = []
    ambiguous: dict[str, str] = {}
    for name in chosen:
        info = ckpt.info(name)
        role = ckpt.role(name)
        decision: tuple[Any, Any, str] | str = (None, None, "kept")
        if name in parts:
            decision = (None, None, f"kept: part of quantised '{parts[name]}'")
        elif layout != "keep" and role.kind == "optimizer":
            # A slot is laid out like its variable, when it has the variable's shape.
            owner = ckpt.info(role.owner) if role.owner is not None and role.owner in ckpt else None
            if owner is not None and owner.shape == info.shape:
                decision = conventions.layout(owner.name, owner.shape, layout)
            elif len(info.shape) >= 2:
                decision = "optimizer state whose variable is not known"
        elif layout != "keep":
            decision = conventions.layout(name, info.shape, layout)
        if isinstance(decision, str):
            ambiguous[name] = decision
            decision = (None, None, "kept (ambiguous)")
        permutation, reshape, what = decision
        shape = tuple(info.shape[axis] for axis in permutation) if permutation else info.shape
        keep_name = names == "keep" or role.kind == "optimizer" or name in parts
        new_name = name if keep_name else conventions.rename(name, names, norm_layers)
        output = info.dtype
        cast_from: np.dtype | None = None
        native = info.dtype.newbyteorder("=") if info.dtype.kind in "biufc" else info.dtype
        if cast is not None and numeric_kind(info.dtype) == "f" and native != cast and name not in parts:
            output, cast_from = cast, info.dtype
        shape = tuple(reshape or shape)
        planned.append(PlannedTensor(new_name, name, output, shape, permutation, reshape, what, cast_from))
    _check_unique(planned)
    return planned, skipped, ambiguous


def _check_unique(planned: list[PlannedTensor]) -> None:
    seen: dict[str, str] = {}
    for tensor in planned:
        if tensor.name in seen:
            raise UsageError(
                f"'{seen[tensor.name]}' and '{tensor.source}' would both be named '{tensor.name}'; "
                "convert them separately (--filter) or keep the names"
            )
        seen[tensor.name] = tensor.source


def renamed(planned: list[PlannedTensor], renames: Renames, notes: list[str]) -> list[PlannedTensor]:
    """``planned`` under the names ``renames`` gives (after ``--names``); a key map's names that no tensor has
    are said in ``notes``, two tensors given one name refused."""
    unused = renames.unused(tensor.name for tensor in planned)
    if unused:
        more = f" and {len(unused) - 3} more" if len(unused) > 3 else ""
        shown = ", ".join(f"'{name}'" for name in unused[:3]) + more
        notes.append(f"the key map names {len(unused)} tensors there are not: {shown}")
    result = [dataclasses.replace(tensor, name=renames.apply(tensor.name)) for tensor in planned]
    _check_unique(result)
    return result


def skipped_kinds(skipped: dict[str, str]) -> list[str]:
    """Why each tensor was left out, without the hint: ``optimizer state``, ``bookkeeping``, ``not matched by …``."""
    return [reason.split(" (")[0] for reason in skipped.values()]


def left_out(skipped: dict[str, str]) -> str:
    """What the plan left out, counted by reason: ``1 bookkeeping, 10 optimizer state``."""
    counts = Counter(skipped_kinds(skipped))
    return ", ".join(f"{count} {kind}" for kind, count in sorted(counts.items()))


# -- streaming -------------------------------------------------------------------------------


def _checksum(parts: Sequence[np.ndarray]) -> int:
    """The CRC32C of the arrays' elements one after another (of an array of strings: of its text)."""
    value = 0
    for array in parts:
        if array.dtype.kind == "O":
            value = crc32c(repr(array.tolist()).encode("utf-8", "surrogateescape"), value)
        else:
            value = crc32c(little_endian(array).reshape(-1).view(np.uint8), value)
    return value


def _mapped(array: np.ndarray) -> bool:
    """Whether ``array`` views a mapped file's bytes (numpy keeps the ``mmap`` as the last of its bases)."""
    base: object = array
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    return isinstance(base, mmap.mmap)


class PlannedTensors:
    """The plan as a ``writing.PiecewiseTensors``: each array read from the source when the writer asks (a tensor
    written as stored in the pieces the source holds it in, ``Checkpoint.parts``), its CRC32C computed on another
    thread while the writer writes it (``span_checks.Pending``)."""

    def __init__(self, ckpt: Checkpoint, tensors: list[PlannedTensor], progress: Progress | None) -> None:
        self._ckpt = ckpt
        self._tensors = {tensor.name: tensor for tensor in tensors}
        self._progress = progress
        self._total = sum(tensor.nbytes for tensor in tensors)
        self._done = self._handed = 0
        self._checksums = Pending()

    @property
    def checksums(self) -> dict[str, int]:
        """The CRC32C of the values of each tensor handed to the writer."""
        return self._checksums.values()

    def names(self) -> list[str]:
        return list(self._tensors)

    def spec(self, name: str) -> tuple[np.dtype, tuple[int, ...]]:
        tensor = self._tensors[name]
        return tensor.dtype, tensor.shape

    def array(self, name: str) -> np.ndarray:
        tensor = self._tensors[name]
        return self._hand(tensor, [tensor.transform(self._ckpt[tensor.source])])[0]

    def pieces(self, name: str) -> list[np.ndarray]:
        tensor = self._tensors[name]
        if tensor.permutation is not None or tensor.reshape is not None or tensor.cast_from is not None:
            return [self.array(name)]
        return self._hand(tensor, self._ckpt.parts(tensor.source))

    def _hand(self, tensor: PlannedTensor, parts: list[np.ndarray]) -> list[np.ndarray]:
        """``parts`` as the writer streams them (little-endian: one copy at most), their checksum under way."""
        parts = [part if part.dtype.kind == "O" else little_endian(part) for part in parts]
        mapped = all(map(_mapped, parts))
        self._checksums.add(tensor.name, functools.partial(_checksum, parts), tensor.nbytes, mapped)
        self._done += tensor.nbytes
        self._handed += 1
        if self._progress is not None:
            self._progress(self._handed, len(self._tensors), self._done, self._total)
        return parts


def _check_written(path: Path, format: str, expected: dict[str, int], planned: list[PlannedTensor]) -> None:
    """Read the written file back (the format's own checksums are checked as each tensor is read):
    the same names, dtypes, shapes, and values by CRC32C (computed on other threads as the next are read)."""
    from weightscope.formats import open_checkpoint

    with open_checkpoint(path, format=format) as written:
        if sorted(written) != sorted(expected):
            missing = sorted(set(expected) - set(written))
            extra = sorted(set(written) - set(expected))
            raise ChecksumMismatchError(f"{path}: read back, it lacks {missing[:5]} and has {extra[:5]}")
        found = Pending()
        for tensor in planned:
            info = written.info(tensor.name)
            array = written[tensor.name]
            if info.shape != tensor.shape or (
                array.dtype.kind != "O" and array.dtype.newbyteorder("=") != tensor.dtype.newbyteorder("=")
            ):
                raise ChecksumMismatchError(
                    f"{path}: '{tensor.name}' reads back as {array.dtype} {list(info.shape)}, "
                    f"written as {tensor.dtype} {list(tensor.shape)}"
                )
            found.add(tensor.name, functools.partial(_checksum, [array]), tensor.nbytes, _mapped(array))
        values = found.values()
        for tensor in planned:
            if values[tensor.name] != expected[tensor.name]:
                raise ChecksumMismatchError(f"{path}: '{tensor.name}' reads back with other values than were written")


@contextlib.contextmanager
def _folder_for(destination: Path) -> Iterator[None]:
    """``destination``'s folder, made (with its parents) for the block, and removed again if the block fails."""
    made = [folder for folder in (destination.parent, *destination.parent.parents) if not folder.exists()]
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for folder in made:  # deepest first, and only while empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def _move_into_place(work: Path, written: Sequence[Path], destination: Path, staged: Staging) -> list[Path]:
    """Rename the written files beside ``destination`` in the order the writer committed them (data before the
    index readers look for), then the staging's own files (TensorFlow's state file); when one cannot be, those
    already moved are removed again. The files at their new places, in that order."""
    for name, data in staged.files.items():
        (work / name).write_bytes(data)
    moved: list[Path] = []
    try:
        for path in [*written, *(work / name for name in staged.files)]:
            os.replace(path, destination.parent / path.name)
            moved.append(destination.parent / path.name)
    except BaseException:
        for path in moved:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        raise
    return moved


@dataclass(frozen=True)
class _ModelFolder:
    """A conversion's model folder: written whole into a hidden folder, read back shard by shard, the source
    model's own files copied in, then renamed into place."""

    writer: Writer
    model_file: str
    format: str
    max_shard_size: int | str
    staged: Staging

    def write(
        self,
        ckpt: Checkpoint,
        tensors: PlannedTensors,
        planned: list[PlannedTensor],
        destination: Path,
        notes: list[str],
    ) -> list[Path]:
        from weightscope.formats import model_file_names

        copied, not_copied = model_files(ckpt.path, model_file_names())
        by_name = {tensor.name: tensor for tensor in planned}
        shards = plan_set(self.writer, self.model_file, tensors, destination, self.max_shard_size)
        with atomic_folder(destination) as work:
            with ckpt.checks_deferred():
                written = shards.write(work, **self.staged.options)
            for shard, names in written.shards.items():
                expected = {name: tensors.checksums[name] for name in names}
                _check_written(shard, self.format, expected, [by_name[name] for name in names])
            for name, data in copied.items():
                (work / name).write_bytes(data)
        if len(written.shards) > 1:
            notes.append(f"a model folder of {len(written.shards)} shards and their index, {written.files[-1].name}")
        if copied:
            notes.append(f"copied {', '.join(copied)} from the source model")
        if not_copied:
            notes.append(f"not copied (the model's weights only, and its config): {', '.join(not_copied)}")
        return [destination / path.name for path in written.files] + [destination / name for name in copied]


def convert(
    source: str | os.PathLike[str] | Checkpoint,
    destination: str | os.PathLike[str],
    *,
    to: str | None = None,
    layout: str = "keep",
    names: str = "keep",
    include_optimizer: bool = False,
    pattern: str | None = None,
    dtype: str | None = None,
    progress: Progress | None = None,
    max_shard_size: int | str | None = None,
    renames: Renames | None = None,
) -> Conversion:
    """Write ``source``'s weights to ``destination`` as format ``to`` (by default from its name).

    Weights only unless ``include_optimizer``; ``pattern`` keeps the names matching a glob;
    ``layout`` and ``names`` take tensors to PyTorch's or TensorFlow's conventions; ``dtype``
    (float16, bfloat16, float32) casts the floating tensors on the way. With ``max_shard_size``
    ``destination`` is a Hugging Face model folder (safetensors unless ``to`` says pytorch):
    shards of at most that size and their index, with the source model's ``config.json`` and
    ``generation_config.json`` (see ``weightscope.shards``); so is a ``destination`` ending in ``/``, in shards of
    huggingface_hub's default size (``FOLDER_SHARD_SIZE``). ``renames`` (``weightscope.renames``: a prefix
    stripped, ``FROM=TO`` rules, a key map) renames the tensors after ``names``.
    """
    from weightscope.formats import (
        DEFAULT_TARGET,
        FORMATS,
        format_to_write,
        load_writer,
        open_checkpoint,
        set_writer,
        staging,
    )

    started = time.perf_counter()
    if max_shard_size is None and os.fspath(destination).endswith(("/", os.sep)):
        max_shard_size = FOLDER_SHARD_SIZE  # a folder named ("out/"): a model folder, as huggingface_hub shards it
    destination = Path(destination)
    if max_shard_size is None:
        format = format_to_write(destination, to)
        writer, model_file = load_writer(format), ""
        check_target(destination, writer.holds)
    else:
        format = to or DEFAULT_TARGET
        writer, model_file = set_writer(format)
        parse_size(max_shard_size)  # refused before the source is opened
        check_folder(destination)
    ckpt = source if isinstance(source, Checkpoint) else open_checkpoint(source)
    try:
        index = FORMATS.prefix_index(destination)  # a checkpoint at the prefix: readers open this file
        if ckpt.path.resolve() in {destination.resolve(), (index or destination).resolve()}:
            raise UsageError(f"{destination} is the checkpoint being converted; write to another path")
        planned, skipped, ambiguous = plan(
            ckpt, layout=layout, names=names, include_optimizer=include_optimizer, pattern=pattern, dtype=dtype
        )
        if not planned:
            why = f"left out: {left_out(skipped)}" if skipped else "it holds none"
            raise UnsupportedFormatError(f"{ckpt.path}: no tensors to convert; {why}")
        rename_notes: list[str] = []
        if renames:
            planned = renamed(planned, renames, rename_notes)
        tensors = PlannedTensors(ckpt, planned, progress)
        staged = staging(format, destination, [tensor.name for tensor in planned])
        notes: list[str] = [*rename_notes, *staged.notes]
        with interruptible(), _folder_for(destination):
            if max_shard_size is None:
                with tempfile.TemporaryDirectory(dir=destination.parent, prefix=".weightscope-convert-") as work:
                    with ckpt.checks_deferred():
                        written = writer.write(tensors, Path(work) / destination.name, **staged.options)
                    _check_written(Path(work) / destination.name, format, tensors.checksums, planned)
                    files = _move_into_place(Path(work), written, destination, staged)
            else:
                model = _ModelFolder(writer, model_file, format, max_shard_size, staged)
                files = model.write(ckpt, tensors, planned, destination, notes)
                if dtype is not None and destination / "config.json" in files:
                    notes.append(f"config.json is copied as it was: its dtype is the source's; the weights are {dtype}")
    finally:
        if ckpt is not source:
            ckpt.close()
    return Conversion(
        str(ckpt.path),
        str(destination),
        format,
        layout,
        names,
        planned,
        skipped,
        ambiguous,
        time.perf_counter() - started,
        notes,
        dtype,
        [str(path) for path in files],
    )
