"""Keras weight files: HDF5 files read with ``h5py`` (the optional ``keras`` extra).

Layouts (paths inside the HDF5 file):

- legacy tf-keras ``.h5``: ``model.save("m.h5")`` writes the group ``model_weights``
  (root attributes ``model_config``, ``training_config``: JSON), ``save_weights("w.h5")``
  writes the same content at the root. That group's attribute ``layer_names`` lists the
  layers in model order (long lists are split into ``layer_names0``, ``layer_names1``, …);
  each layer's group has the attribute ``weight_names`` (``layer1/kernel:0``, …) naming
  datasets relative to it, in ``get_weights()`` order. Optimizer state of a whole-model
  file is in ``optimizer_weights``, listed by its own ``weight_names``.
- Keras 3 ``.weights.h5`` (``model.save_weights("m.weights.h5")``): one group per saved
  object, ``layers/<snake_case_class>[_N]/vars`` holding datasets ``0``, ``1``, … in the
  layer's ``weights`` order; ``vars`` carries the attribute ``name``, the layer's user
  name (Keras 3.x writes it; older files lack it). Nested models nest the same way
  (``layers/functional/layers/dense/vars``). The optimizer is ``optimizer/vars``. A
  bfloat16 dataset carries the attribute ``dtype="bfloat16"``.
- Keras 3 ``.keras``: a zip of ``metadata.json``, ``config.json`` (the model's
  ``class_name``/``config`` tree) and ``model.weights.h5`` (the layout above), plus
  ``assets/``. The config gives each layer's class and flags, which name its variables.

Names: legacy tensors are named by their ``weight_names`` without ``:0``
(``layer1/kernel``; the stored path is the ``key``), optimizer state as
``optimizer/<weight name>``. Keras 3 variables are ``<layer name>/<weight name>`` where
the ``.keras`` config names them (``Dense``: kernel, bias; ``BatchNormalization``: gamma,
beta, moving_mean, moving_variance, as ``scale``/``center`` say), else
``<layer name>/vars/<i>``; optimizer state is ``optimizer/vars/<i>``.

Arrays of contiguous, unfiltered datasets are views of the file's bytes (found at
``dataset.id.get_offset()``); others are read by ``h5py``. There are no checksums beyond
HDF5's own filters, which ``h5py`` checks as it reads.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from weightscope.checkpoint import FileCheckpoint, TensorInfo
from weightscope.containers.zip import inflate, is_deflated, member_start, read_directory
from weightscope.dtypes import BY_NAME
from weightscope.errors import CorruptCheckpointError, UnsupportedFormatError

if TYPE_CHECKING:
    import h5py

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
CONFIG_MEMBER = "config.json"
WEIGHTS_MEMBER = "model.weights.h5"
# Keras 3 layer classes -> their variables in ``weights`` order, with the config flag
# (``None``: always present) each depends on.
_LAYER_WEIGHTS: dict[str, tuple[tuple[str, str | None], ...]] = {
    "Dense": (("kernel", None), ("bias", "use_bias")),
    "Embedding": (("embeddings", None),),
    "LayerNormalization": (("gamma", "scale"), ("beta", "center")),
    "BatchNormalization": (("gamma", "scale"), ("beta", "center"), ("moving_mean", None), ("moving_variance", None)),
    "DepthwiseConv1D": (("depthwise_kernel", None), ("bias", "use_bias")),
    "DepthwiseConv2D": (("depthwise_kernel", None), ("bias", "use_bias")),
    "SeparableConv1D": (("depthwise_kernel", None), ("pointwise_kernel", None), ("bias", "use_bias")),
    "SeparableConv2D": (("depthwise_kernel", None), ("pointwise_kernel", None), ("bias", "use_bias")),
    **{
        f"Conv{rank}D{kind}": (("kernel", None), ("bias", "use_bias"))
        for rank in (1, 2, 3)
        for kind in ("", "Transpose")
    },
}


def _h5py() -> Any:
    try:
        import h5py
    except ImportError:
        raise UnsupportedFormatError("reading Keras files needs h5py: pip install 'weightscope[keras]'") from None
    return h5py


class KerasCheckpoint(FileCheckpoint):
    """A Keras ``.h5`` / ``.weights.h5`` file or a ``.keras`` zip, tensors in Keras' order."""

    format = "keras"

    def __init__(self, path: str | os.PathLike[str], *, verify: bool = True) -> None:
        """Open ``path``; ``verify`` is accepted for the common signature (there are no checksums)."""
        self._file: h5py.File | None = None
        self._bytes: memoryview | bytes = b""  # the HDF5 file's bytes: dataset offsets index them
        super().__init__(path, verify=verify)

    # -- opening ---------------------------------------------------------------------------
    def _load(self) -> None:
        h5py = _h5py()
        head = bytes(self._source.read(0, min(len(HDF5_MAGIC), self._source.size), "magic"))
        config: dict[str, Any] | None = None
        if head == HDF5_MAGIC:
            self._bytes = self._source.read(0, self._source.size, "the HDF5 file")
            opened: Any = self.path
        elif head.startswith(b"PK\x03\x04"):
            config, self._bytes = self._open_zip()
            opened = io.BytesIO(self._bytes)
        else:
            raise CorruptCheckpointError(f"{self.path}: neither an HDF5 file nor a .keras zip (bad magic {head!r})")
        try:
            self._file = h5py.File(opened, "r")
            self._metadata = {key: _text(value) for key, value in self._file.attrs.items() if _is_text(value)}
            if config is not None:
                self._metadata[CONFIG_MEMBER] = json.dumps(config)
            self._infos = {info.name: info for info in self._describe_all(config)}
        except (OSError, KeyError, ValueError, RuntimeError) as error:
            if self._file is not None:
                self._file.close()
            raise CorruptCheckpointError(f"{self.path}: not a readable Keras HDF5 file ({error})") from None

    def _open_zip(self) -> tuple[dict[str, Any], memoryview | bytes]:
        """The ``.keras`` zip's config and the bytes of its weights file."""
        members = {entry.filename: entry for entry in read_directory(self._source, self.path)}
        missing = [name for name in (CONFIG_MEMBER, WEIGHTS_MEMBER) if name not in members]
        if missing:
            raise UnsupportedFormatError(f"{self.path}: a zip without {', '.join(missing)}; not a .keras file")
        try:
            config = json.loads(bytes(self._member(members[CONFIG_MEMBER])))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
            raise CorruptCheckpointError(f"{self.path}: {CONFIG_MEMBER} is not JSON ({error})") from None
        if not isinstance(config, dict):
            raise CorruptCheckpointError(f"{self.path}: {CONFIG_MEMBER} is a JSON {type(config).__name__}")
        return config, self._member(members[WEIGHTS_MEMBER])

    def _member(self, entry: zipfile.ZipInfo) -> memoryview | bytes:
        """A member's bytes: a view of the file if stored, else inflated into memory after a size check."""
        what = f"{self.path}: member '{entry.filename}'"
        deflated = is_deflated(entry, what)
        stored = self._source.read(member_start(self._source, entry, what), entry.compress_size, what)
        return inflate(stored, entry.file_size, what) if deflated else stored

    def _describe_all(self, config: dict[str, Any] | None) -> Iterator[TensorInfo]:
        assert self._file is not None
        root = self._file
        if "layers" in root or "optimizer" in root:  # Keras 3
            yield from self._describe_keras3(root, config)
            return
        weights = root.get("model_weights", root)
        if not _attribute_list(weights, "layer_names"):
            raise UnsupportedFormatError(f"{self.path}: an HDF5 file with no Keras layout (no layer_names, no layers/)")
        seen: set[str] = set()
        for layer_name in _attribute_list(weights, "layer_names"):
            group = weights[layer_name]
            for weight_name in _attribute_list(group, "weight_names"):
                name = weight_name.removesuffix(":0")
                if name in seen:
                    name = f"{layer_name}/{name}"
                seen.add(name)
                yield self._describe(name, group[weight_name])
        if "optimizer_weights" in root:
            group = root["optimizer_weights"]
            for weight_name in _attribute_list(group, "weight_names"):
                yield self._describe(f"optimizer/{weight_name.removesuffix(':0')}", group[weight_name])

    def _describe_keras3(self, root: h5py.Group, config: dict[str, Any] | None) -> Iterator[TensorInfo]:
        layer_configs = dict(_layer_configs(config)) if config is not None else {}
        for path, variables in _vars_groups(root):
            indices = sorted((key for key in variables if key.isdigit()), key=int)
            if path.split("/")[0] == "optimizer" or not path:
                prefix = f"{path}/vars" if path else "vars"
                for index in indices:
                    yield self._describe(f"{prefix}/{index}", variables[index])
                continue
            layer = _display_name(root, path)
            names = _weight_names(layer_configs.get(_text(variables.attrs.get("name", ""))), len(indices))
            for index, weight in zip(indices, names or [f"vars/{index}" for index in indices], strict=True):
                yield self._describe(f"{layer}/{weight}", variables[index])

    def _describe(self, name: str, dataset: Any) -> TensorInfo:
        h5py = _h5py()
        if not isinstance(dataset, h5py.Dataset):
            raise CorruptCheckpointError(f"{self.path}: '{name}' ({dataset.name}) is not a dataset")
        if dataset.file != self._file or dataset.external or dataset.is_virtual:
            raise UnsupportedFormatError(
                f"{self.path}: tensor '{name}' ({dataset.name}) keeps its data in another file; not read"
            )
        dtype = dataset.dtype
        if _text(dataset.attrs.get("dtype", "")) == "bfloat16" and dtype.itemsize == 2:
            dtype = BY_NAME["bfloat16"].dtype
        element = BY_NAME.get(dtype.name)
        if element is None:
            raise UnsupportedFormatError(f"{self.path}: tensor '{name}' has HDF5 type {dataset.dtype}, not numeric")
        offset = dataset.id.get_offset()
        contiguous = dataset.chunks is None and offset is not None
        return TensorInfo(
            name,
            dtype,
            tuple(dataset.shape),
            dataset.size * dtype.itemsize if contiguous else dataset.id.get_storage_size(),
            element.name,
            str(self.path),
            offset if contiguous else -1,
            dataset.name.lstrip("/"),
        )

    # -- reading -----------------------------------------------------------------------------
    def _read(self, info: TensorInfo) -> np.ndarray:
        if info.offset >= 0:
            end = info.offset + info.nbytes
            if end > len(self._bytes):
                raise CorruptCheckpointError(
                    f"{self.path}: tensor '{info.name}' (bytes {info.offset}..{end}) lies past the end of the "
                    f"HDF5 file ({len(self._bytes)} bytes)"
                )
            return np.frombuffer(self._bytes, info.dtype, info.size, info.offset).reshape(info.shape)
        assert self._file is not None
        try:
            data = self._file[info.key][()]
        except (OSError, KeyError, ValueError) as error:
            raise CorruptCheckpointError(f"{self.path}: cannot read tensor '{info.name}' ({error})") from None
        return np.asarray(data).view(info.dtype).reshape(info.shape)

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._bytes = b""
        super()._close()


def _is_text(value: object) -> bool:
    return isinstance(value, str | bytes)


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _attribute_list(group: h5py.Group, name: str) -> list[str]:
    """A list attribute, joined from ``name0``, ``name1``… when Keras split a long one."""
    if name in group.attrs:
        return [_text(value) for value in np.atleast_1d(group.attrs[name])]
    values: list[str] = []
    chunk = 0
    while f"{name}{chunk}" in group.attrs:
        values.extend(_text(value) for value in np.atleast_1d(group.attrs[f"{name}{chunk}"]))
        chunk += 1
    return values


def _vars_groups(root: h5py.Group) -> Iterator[tuple[str, h5py.Group]]:
    """(object path, its ``vars`` group) for every saved object holding variables, in Keras' order.

    HDF5 lists links by name (``dense_10`` before ``dense_2``); Keras writes objects in
    model order, so the file offset of each object's first contiguous dataset restores it.
    """
    found: list[tuple[float, str, h5py.Group]] = []

    def visit(path: str, item: Any) -> None:
        if path.rsplit("/", 1)[-1] == "vars" and len(item):
            offsets = [item[key].id.get_offset() for key in item if key.isdigit()]
            first = min((offset for offset in offsets if offset is not None), default=float("inf"))
            found.append((first, path.removesuffix("vars").rstrip("/"), item))

    root.visititems(visit)
    return ((path, item) for _, path, item in sorted(found, key=lambda entry: entry[0]))


def _display_name(root: h5py.Group, path: str) -> str:
    """``layers/dense`` -> ``layer1``: each object by its user name, collections (``layers``) left out."""
    parts: list[str] = []
    prefix = ""
    for part in path.split("/"):
        prefix = f"{prefix}/{part}" if prefix else part
        variables = root.get(f"{prefix}/vars")
        if variables is None:
            if part != "layers":
                parts.append(part)
            continue
        parts.append(_text(variables.attrs.get("name", part)))
    return "/".join(parts)


def _layer_configs(node: object) -> Iterator[tuple[str, dict[str, Any]]]:
    """(layer name, {"class_name": ..., "config": ...}) for every layer in a config tree."""
    if isinstance(node, dict):
        inner = node.get("config")
        if isinstance(node.get("class_name"), str) and isinstance(inner, dict) and isinstance(inner.get("name"), str):
            yield inner["name"], node
        for value in node.values():
            yield from _layer_configs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _layer_configs(value)


def _weight_names(layer: dict[str, Any] | None, count: int) -> list[str]:
    """The names of a layer's ``count`` variables from its config; empty if they cannot be told."""
    if layer is None:
        return []
    settings = layer["config"]
    names = [
        name for name, flag in _LAYER_WEIGHTS.get(layer["class_name"], ()) if flag is None or settings.get(flag, True)
    ]
    return names if len(names) == count else []
