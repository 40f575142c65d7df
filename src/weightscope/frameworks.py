"""Tensors of a framework, on request: ``ws.open(path, framework="torch")``, ``ws.load``, and ``ws.save`` of them.

A checkpoint reads numpy arrays; ``FrameworkCheckpoint`` wraps one and hands out the
tensors of PyTorch or JAX instead, as ``safetensors.safe_open(framework="pt")`` does.
weightscope imports neither framework unless asked: a framework that is not installed is
an ``UnsupportedFormatError`` with the command that installs it.

PyTorch tensors share memory with the file where its bytes are plain values in a local
file (safetensors, npy, stored npz members, TensorFlow bundles, PyTorch's own storages,
GGUF's unquantised types): the file is mapped once by PyTorch itself, copy-on-write
(``torch.UntypedStorage.from_file(shared=False)``, as safetensors does), and each tensor
is a view of that map at the tensor's offset, with its strides. Nothing is copied until a
page is written, and a write changes the tensor, never the file; the tensors stay valid
after the checkpoint is closed. (``torch.from_numpy`` over weightscope's own read-only
map would share it too, but a write through it would crash the process: PyTorch has no
read-only tensors.) Tensors whose values must be decoded, byte-swapped or fetched (zlib,
quantised types, big-endian files, URLs) and offsets not a multiple of their element size
are copied once into a tensor of their own. bfloat16 and the float8 types keep their type.

JAX arrays are immutable device buffers: ``jax.numpy.asarray`` copies each tensor into
one (JAX's own bfloat16 and float8 are ml_dtypes', as numpy's here are).

``ws.load(path, framework=...)`` is ``safetensors.torch.load_file`` for any format. ``ws.save`` takes
PyTorch tensors and JAX arrays as well as numpy's (``weightscope.writing.as_array``).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np

from weightscope.dtypes import INTEGER_OF_WIDTH, TORCH_TYPES
from weightscope.errors import UnsupportedFormatError, UsageError
from weightscope.sources import local_path

if TYPE_CHECKING:
    import os

    from weightscope.checkpoint import Checkpoint
    from weightscope.remote import RemotePath

# framework -> (the module to import, what installs it)
FRAMEWORKS = {"numpy": ("numpy", ""), "torch": ("torch", "pip install torch"), "jax": ("jax", "pip install jax")}


def framework_module(framework: str) -> Any:
    """The framework's module, imported now; a name not known is a ``UsageError``, a framework not installed an
    ``UnsupportedFormatError`` saying how to install it."""
    if framework not in FRAMEWORKS:
        raise UsageError(f"framework must be one of {', '.join(map(repr, FRAMEWORKS))}, not {framework!r}")
    module, install = FRAMEWORKS[framework]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UnsupportedFormatError(
            f"framework={framework!r} needs {module}, which is not installed: {install}"
        ) from None


class FrameworkCheckpoint(Mapping[str, Any]):
    """``checkpoint`` handing out ``framework``'s tensors by name; everything else (``info``, ``layers``,
    ``metadata``, ``role``...) is the checkpoint's own, and ``checkpoint[name]`` still gives the numpy array."""

    def __init__(self, checkpoint: Checkpoint, framework: str) -> None:
        self.module = framework_module(framework)
        self.checkpoint = checkpoint
        self.framework = framework
        self._storages: dict[str, Any] = {}  # a local file -> PyTorch's copy-on-write map of it

    def __getitem__(self, name: str) -> Any:
        array = self.checkpoint[name]  # read, checked against its checksum, its view's size held to the cap
        if self.framework == "jax":
            return self.module.numpy.asarray(array)
        if array.dtype.name not in TORCH_TYPES:
            stored = self.checkpoint.info(name).type_name
            raise UnsupportedFormatError(
                f"{self.checkpoint.path}: tensor '{name}' holds {stored} values, which PyTorch has no type for"
            )
        if not array.dtype.isnative:  # a big-endian file's view: PyTorch's types are the machine's order
            return torch_tensor(self.module, array.astype(array.dtype.newbyteorder("=")))
        mapped = self._mapped(name, array)
        return torch_tensor(self.module, array.copy()) if mapped is None else mapped

    def _mapped(self, name: str, array: np.ndarray) -> Any:
        """Tensor ``name`` as a view of PyTorch's map of its file, where it is plain values there; else None."""
        extent = self.checkpoint.extent(name)
        if extent is None or extent.compression or not extent.nbytes or local_path(self.checkpoint.path) is None:
            return None
        if extent.dtype != array.dtype or extent.offset % array.dtype.itemsize or not Path(extent.file).is_file():
            return None  # stored in another byte order (converted), or not aligned for a view of its type
        storage = self._storages.get(extent.file)
        if storage is None:
            size = Path(extent.file).stat().st_size
            storage = self._storages[extent.file] = self.module.UntypedStorage.from_file(extent.file, False, size)
        if extent.offset + extent.nbytes > storage.nbytes():
            return None
        strides = extent.strides or tuple(step // array.dtype.itemsize for step in array.strides)
        tensor = self.module.empty(0, dtype=getattr(self.module, array.dtype.name))
        return tensor.set_(storage, extent.offset // array.dtype.itemsize, array.shape, strides)

    def __iter__(self) -> Iterator[str]:
        return iter(self.checkpoint)

    def __len__(self) -> int:
        return len(self.checkpoint)

    def __contains__(self, name: object) -> bool:
        return name in self.checkpoint

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("__") or attribute in ("checkpoint", "module", "framework", "_storages"):
            raise AttributeError(attribute)
        return getattr(self.checkpoint, attribute)

    def close(self) -> None:
        """Close the checkpoint; PyTorch's tensors keep their own map of the file."""
        self.checkpoint.close()

    def __enter__(self) -> FrameworkCheckpoint:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{self.checkpoint!r} as {self.framework} tensors"


def torch_tensor(torch: Any, array: np.ndarray) -> Any:
    """A writable array (a copy) as a tensor sharing its memory: ml_dtypes' types through integers of their width."""
    if array.dtype.type.__module__ == "numpy":
        return torch.from_numpy(array)
    integers = array.view(INTEGER_OF_WIDTH[array.dtype.itemsize])
    return torch.from_numpy(integers).view(getattr(torch, array.dtype.name))


@overload
def open_checkpoint(
    path: str | os.PathLike[str] | RemotePath, *, framework: Literal["numpy"] = "numpy", **options: Any
) -> Checkpoint: ...


@overload
def open_checkpoint(
    path: str | os.PathLike[str] | RemotePath, *, framework: Literal["torch", "jax"], **options: Any
) -> FrameworkCheckpoint: ...


@overload
def open_checkpoint(
    path: str | os.PathLike[str] | RemotePath, *, framework: str, **options: Any
) -> Checkpoint | FrameworkCheckpoint: ...


def open_checkpoint(
    path: str | os.PathLike[str] | RemotePath, *, framework: str = "numpy", **options: Any
) -> Checkpoint | FrameworkCheckpoint:
    """``ws.open``: the checkpoint at ``path`` (``options``: ``format``, ``verify``, ``storage_options``,
    ``dequantize``, as ``weightscope.formats.open_checkpoint`` takes them), handing out numpy arrays, or with
    ``framework="torch"`` or ``"jax"`` that framework's tensors (a ``FrameworkCheckpoint``)."""
    from weightscope.formats import open_checkpoint as open_numpy

    if framework == "numpy":
        return open_numpy(path, **options)
    framework_module(framework)  # refused before the file is opened
    ckpt = open_numpy(path, **options)
    try:
        return FrameworkCheckpoint(ckpt, framework)
    except BaseException:
        ckpt.close()
        raise


def load_checkpoint(
    path: str | os.PathLike[str] | RemotePath, *, framework: str = "numpy", **options: Any
) -> dict[str, Any]:
    """``ws.load``: every tensor of the checkpoint at ``path`` by name, as ``framework``'s tensors (``options``: as
    ``open_checkpoint`` takes them), as ``safetensors.torch.load_file`` gives them for any format. numpy's are
    read-only views and PyTorch's copy-on-write ones of a local file's map, which outlive the checkpoint."""
    with open_checkpoint(path, framework=framework, **options) as ckpt:
        return {name: ckpt[name] for name in ckpt}
