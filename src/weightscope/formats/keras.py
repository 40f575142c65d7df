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
(``layer1/kernel``; the stored path is the ``key``), under their layer's name where TF1's
graph made the variable scope unique (layer ``conv``, weight ``conv_1/kernel``: ``conv/kernel``), optimizer state as
``optimizer/<weight name>``. Keras 3 variables are ``<layer name>/<weight name>``, as
Keras 3 names them (``variable.path``): by the layer's class and its variable order
(``KERAS_LAYER_WEIGHTS``: ``Dense``: kernel, bias; ``BatchNormalization``: gamma, beta,
moving_mean, moving_variance; an LSTM's cell: kernel, recurrent_kernel, bias; ...), the
class and its settings (``use_bias``, ``scale``, ``center``) from the ``.keras`` config, or
in a ``.weights.h5`` the class from the group's name (``layers/dense_1``; a sublayer's
from its attribute, ``query_dense``, ``cell``; a ``TimeDistributed`` layer's from its
default name, ``dense_2``) with the optional variables the count
leaves; where that is ambiguous (a BatchNormalization without one of gamma, beta) or the
class unknown, ``<layer name>/vars/<i>``. Optimizer state is ``optimizer/vars/<i>``.

Optimizer state is tied to its variable where that can be decided. A Keras 3 optimizer
saves ``iteration``, ``learning_rate`` (not when a schedule gives it), then its slots in
the order its class creates them over the model's trainable variables (see
``_OPTIMIZER_BLOCKS``). When the ``.keras`` config names the class and settings (or, in a
``.weights.h5``, the optimizer's default name allows exactly one layout) and the count and
every slot's shape fit the trainable variables (all float layer variables less BatchNorm's
moving statistics and frozen layers' ones), the state is renamed
``optimizer/<variable>/<slot>`` (``optimizer/layer1/kernel/momentum``; the stored
``optimizer/vars/<i>`` stays its key and still reaches it) with its variable as owner.
tf-keras names its optimizer weights after their variable (``Adam/m/layer1/kernel``, the
legacy optimizers' ``Adam/layer1/kernel/m``): those keep their names and get the
variable of that name and shape as owner.

Writing (``save``) makes a Keras 3 ``.weights.h5`` as ``model.save_weights`` does: an empty
root ``vars`` group (attribute ``name``: the model's name, when the tensor names share one
as their prefix), and ``layers/<snake_case_class>[_N]/vars`` per layer (attribute ``name``:
the layer's name) holding contiguous, unfiltered datasets ``0``, ``1``, … in the order the
layer's ``build()`` creates them; bfloat16 as Keras writes it. Keras finds a layer's group by
its class and its place among the model's layers of that class, never by its name, so the
writer tells the class from the variables (a convolution's from its name and bias, as
Keras's default names do) and refuses layers that share a class unless it is given the
model's layers in order. Each layer's ``vars`` also lists its tensors' full names in the
attribute ``weight_names`` (Keras ignores it), which names them when read back; a Keras 3
file without it is read as above.

Arrays of contiguous, unfiltered datasets are views of the file's bytes (found at
``dataset.id.get_offset()``); others are read by ``h5py``. A ``.keras`` zip's members are
checked against their CRC-32 (``verify``, the default) before ``json`` or ``h5py`` reads them;
inside HDF5 there are no checksums beyond its own filters, which ``h5py`` checks as it reads.
HDF5 files are parsed by the HDF5 C library, which some damaged files send into an endless
loop or crash with a segmentation fault (HDF5 1.14.6 under h5py 3.14.0, both while reading a
variable-length string attribute: a global heap object's size, or the string's type bits,
changed by one byte): weightscope cannot bound that from Python, so untrusted ``.h5`` files
(and HDF5 inside a ``.keras`` zip, whose CRC only catches accidents) are not fuzzed and not
promised.
"""

from __future__ import annotations

import functools
import io
import json
import math
import re
import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from weightscope.checkpoint import Extent, FileCheckpoint, Index, TensorInfo
from weightscope.containers.zip import Member, check_crc, escapes, inflate, is_deflated, read_directory
from weightscope.conventions import (
    KERAS_LAYER_WEIGHTS,
    KERAS_SUBLAYER_CLASSES,
    snake_case,
)
from weightscope.dtypes import BY_NAME
from weightscope.errors import CorruptCheckpointError, UnsupportedFormatError, WeightscopeError, reason
from weightscope.formats.keras_h5 import (
    _attribute_list,
    _display_name,
    _is_text,
    _layer_weight_name,
    _text,
    _vars_groups,
)
from weightscope.layers import TensorRole
from weightscope.limits import JSON_BYTE_COST, Budget, Limits

if TYPE_CHECKING:
    import h5py

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
CONFIG_MEMBER = "config.json"
WEIGHTS_MEMBER = "model.weights.h5"
# The attribute of a ``vars`` group in which weightscope's writer records its variables' names.
WRITTEN_NAMES = "weight_names"
# A dataset h5py reads (chunked, filtered, or never written) is allocated whole at its
# logical size, which a few stored bytes can claim without limit (gzip of zeros, a
# scale-offset constant, chunks never written read as the fill value): beyond this many
# bytes it is refused past the expansion cap (``weightscope.limits``). Each chunk is
# inflated whole, whatever part of it the dataset uses: its declared size is checked too
# (against the memory cap, and past this many bytes against the expansion cap).
INFLATION_SLACK = 1 << 20
# Groups within groups a file may nest (``layers/functional/layers/dense/vars`` is 5): HDF5
# finds an object by its path from the root, so each lookup costs its depth.
MAX_NESTING = 64
# Memory charged per attribute element beyond its bytes: a Python object and a slot.
_ATTRIBUTE_ELEMENT_COST = 64
_GLOBAL_HEAP = b"GCOL"  # the signature of a global heap collection, where variable-length data lives


def _h5py() -> Any:
    try:
        import h5py
    except ImportError:
        raise UnsupportedFormatError("reading Keras files needs h5py: pip install 'weightscope[keras]'") from None
    return h5py


class KerasCheckpoint(FileCheckpoint):
    """A Keras ``.h5`` / ``.weights.h5`` file or a ``.keras`` zip, tensors in Keras' order."""

    format = "keras"

    # With ``verify``, a ``.keras`` zip's members are checked against their CRC-32.
    _file: h5py.File | None = None
    _bytes: memoryview | bytes = b""  # the HDF5 file's bytes: dataset offsets index them
    _largest_heap: int | None = None  # the largest global heap collection, once looked for
    _in_zip = False  # the HDF5 file is a .keras zip's member: dataset offsets are the member's, not the file's

    # -- opening ---------------------------------------------------------------------------
    def _load(self) -> Index:
        h5py = _h5py()
        self._limits = Limits.for_size(self._source.size)
        self._budget = Budget(self._limits, self.path)
        head = bytes(self._source.read(0, min(len(HDF5_MAGIC), self._source.size), "magic"))
        config: dict[str, Any] | None = None
        if head == HDF5_MAGIC:
            self._bytes = self._source.read(0, self._source.size, "the HDF5 file")
            opened: Any = self.path
        elif head.startswith(b"PK\x03\x04"):
            config, self._bytes = self._open_zip()
            self._in_zip = True
            self.checksums = "zip CRC-32"
            opened = io.BytesIO(self._bytes)
        else:
            raise CorruptCheckpointError(f"{self.path}: neither an HDF5 file nor a .keras zip (bad magic {head!r})")
        try:
            self._file = h5py.File(opened, "r")
            self._check_structure(self._file)
            index = Index(metadata=self._root_texts(self._file))
            if config is not None:
                index.metadata[CONFIG_MEMBER] = json.dumps(config)
            index.infos = {info.name: info for info in self._describe_all(config, index.roles)}
            index.aliases = {info.key: info.name for info in index.infos.values() if info.key != info.name}
            return index
        except WeightscopeError:  # already says what is wrong (and is a ValueError: not rewrapped below)
            if self._file is not None:
                self._file.close()
            raise
        except (OSError, KeyError, ValueError, RuntimeError, TypeError) as error:
            # h5py raises TypeError for some damaged metadata (an attribute's unknown string encoding).
            if self._file is not None:
                self._file.close()
            raise CorruptCheckpointError(f"{self.path}: not a readable Keras HDF5 file ({reason(error)})") from None

    def _open_zip(self) -> tuple[dict[str, Any], memoryview | bytes]:
        """The ``.keras`` zip's config and the bytes of its weights file."""
        members = {entry.filename: entry for entry in read_directory(self._source, self.path)}
        unsafe = [name for name in members if escapes(name)]
        if unsafe:
            raise CorruptCheckpointError(
                f"{self.path}: member '{unsafe[0]}' lies outside the archive (a .. or absolute name)"
            )
        missing = [name for name in (CONFIG_MEMBER, WEIGHTS_MEMBER) if name not in members]
        if missing:
            raise UnsupportedFormatError(f"{self.path}: a zip without {', '.join(missing)}; not a .keras file")
        text = self._member(members[CONFIG_MEMBER])
        self._budget.spend(len(text) * JSON_BYTE_COST, f"parsing {CONFIG_MEMBER}")
        try:
            config = json.loads(bytes(text))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
            raise CorruptCheckpointError(f"{self.path}: {CONFIG_MEMBER} is not JSON ({error})") from None
        if not isinstance(config, dict):
            raise CorruptCheckpointError(f"{self.path}: {CONFIG_MEMBER} is a JSON {type(config).__name__}")
        return config, self._member(members[WEIGHTS_MEMBER])

    def _member(self, entry: Member) -> memoryview | bytes:
        """A member's bytes: a view of the file if stored, else inflated into memory after a size check."""
        what = f"{self.path}: member '{entry.filename}'"
        deflated = is_deflated(entry, what)
        stored = self._source.read(entry.start, entry.compress_size, what)
        if deflated:
            self._budget.spend(entry.file_size, f"inflating member '{entry.filename}'")
        data = inflate(stored, entry.file_size, what) if deflated else stored
        if self.verify_checksums:  # before h5py or json sees a damaged member
            check_crc(data, entry.CRC, what)
        return data

    def _describe_all(self, config: dict[str, Any] | None, roles: dict[str, TensorRole]) -> Iterator[TensorInfo]:
        """Each tensor's info, in Keras' order; the roles of those whose role their place says, into ``roles``."""
        assert self._file is not None
        root = self._file
        if "layers" in root or "optimizer" in root:  # Keras 3
            yield from self._describe_keras3(root, config, roles)
            return
        weights = root.get("model_weights", root)
        if not _attribute_list(weights, "layer_names"):
            top = ", ".join(repr(name) for name in list(root)[:5]) + (", ..." if len(root) > 5 else "") or "nothing"
            raise UnsupportedFormatError(
                f"{self.path}: an HDF5 file, but not a Keras weights file (no layer_names attribute, no layers/ "
                f"group; at the top: {top}); weightscope reads Keras's layouts only. With h5py: "
                f"h5py.File('{self.path}')[NAME][()] reads a dataset"
            )
        seen: set[str] = set()
        shapes: dict[str, tuple[int, ...]] = {}  # parameter's weight name -> shape, to tie optimizer state to
        names: dict[str, str] = {}  # parameter's weight name -> its name here
        for layer_name in _attribute_list(weights, "layer_names"):
            group = weights[layer_name]
            for weight_name in _attribute_list(group, "weight_names"):
                name = _layer_weight_name(layer_name, weight_name.removesuffix(":0"))
                if name in seen:
                    name = f"{layer_name}/{name}"
                seen.add(name)
                info = self._describe(name, group[weight_name])
                shapes[weight_name.removesuffix(":0")] = info.shape
                names[weight_name.removesuffix(":0")] = name
                yield info
        if "optimizer_weights" in root:
            group = root["optimizer_weights"]
            for weight_name in _attribute_list(group, "weight_names"):
                info = self._describe(f"optimizer/{weight_name.removesuffix(':0')}", group[weight_name])
                owner = _legacy_slot_owner(weight_name.removesuffix(":0"), info.shape, shapes)
                if owner is not None:
                    roles[info.name] = TensorRole("optimizer", role=owner[1], owner=names[owner[0]])
                yield info

    def _describe_keras3(
        self, root: h5py.Group, config: dict[str, Any] | None, roles: dict[str, TensorRole]
    ) -> Iterator[TensorInfo]:
        layer_configs = dict(_layer_configs(config)) if config is not None else {}
        infos: list[TensorInfo] = []
        trainable: list[TensorInfo] = []  # the layer variables an optimizer may train, in model order
        optimizer: list[TensorInfo] = []
        shown: dict[str, tuple[str, ...]] = {}  # object path -> its display name's parts, for _display_name
        for path, variables in _vars_groups(root):
            indices = sorted((key for key in variables if key.isdigit()), key=int)
            if path.split("/")[0] == "optimizer" or not path:
                prefix = f"{path}/vars" if path else "vars"
                found = [self._describe(f"{prefix}/{index}", variables[index]) for index in indices]
                optimizer.extend(found if path == "optimizer" else [])
                infos.extend(found)
                continue
            layer = _display_name(root, path, shown)
            user_name = _text(variables.attrs.get("name", ""))
            layer_config = layer_configs.get(user_name)
            written = _written_names(variables, len(indices)) if layer_config is None else []
            # From the config's class and settings, or without one (Keras 3's own save_weights)
            # from the class its group is named after.
            names: list[str] = []
            if layer_config is not None:
                names = _weight_names(layer_config["class_name"], layer_config["config"], len(indices))
            names = names or _weight_names(_keras3_class(path, user_name), None, len(indices))
            labels = written or [f"{layer}/{name}" for name in names] or [f"{layer}/vars/{index}" for index in indices]
            frozen = layer_config is not None and layer_config["config"].get("trainable") is False
            for index, label in zip(indices, labels, strict=True):
                info = self._describe(label, variables[index])
                infos.append(info)
                floating = info.dtype.kind in "fc" or info.type_name == "bfloat16"
                if floating and not frozen and label.rsplit("/", 1)[-1] not in _NON_TRAINABLE:
                    trainable.append(info)
        renamed: dict[str, str] = {}
        for info, name, role in _name_keras3_slots(optimizer, trainable, _optimizer_layouts(root, config)) or []:
            renamed[info.name] = name
            if role is not None:
                roles[name] = role
        for info in infos:
            yield info._replace(name=renamed[info.name]) if info.name in renamed else info

    def _describe(self, name: str, dataset: Any) -> TensorInfo:
        h5py = _h5py()
        if not isinstance(dataset, h5py.Dataset):
            raise CorruptCheckpointError(f"{self.path}: '{name}' ({dataset.name}) is not a dataset")
        if dataset.file != self._file or dataset.external or dataset.is_virtual:
            raise UnsupportedFormatError(
                f"{self.path}: tensor '{name}' ({dataset.name}) keeps its data in another file; not read"
            )
        dtype = dataset.dtype
        if dtype.itemsize == 2 and _text(dataset.attrs.get("dtype", "")) == "bfloat16":
            dtype = BY_NAME["bfloat16"].dtype
        element = BY_NAME.get(dtype.name)
        if element is None:
            raise UnsupportedFormatError(f"{self.path}: tensor '{name}' has HDF5 type {dataset.dtype}, not numeric")
        offset = dataset.id.get_offset()
        contiguous = dataset.chunks is None and offset is not None
        stored, logical = dataset.id.get_storage_size(), dataset.size * dtype.itemsize
        what = f"tensor '{name}' ({dataset.name})"
        if not contiguous and logical > INFLATION_SLACK:
            self._limits.check_expansion(logical, stored, what, self.path)
        if dataset.chunks is not None:
            self._check_chunks(dataset, what)
        return TensorInfo(
            name,
            dtype,
            tuple(dataset.shape),
            logical if contiguous else stored,
            element.name,
            str(self.path),
            offset if contiguous else -1,
            dataset.name.lstrip("/"),
        )

    def _check_chunks(self, dataset: Any, what: str) -> None:
        """Refuse a chunk that inflates past the caps: HDF5 inflates each chunk whole, even for
        10 values of a dataset whose one chunk declares 512 MiB."""
        chunk = math.prod(dataset.chunks) * dataset.dtype.itemsize
        self._limits.check_memory(chunk, f"a chunk of {what}", self.path)
        if chunk <= INFLATION_SLACK or not dataset.id.get_create_plist().get_nfilters():
            return  # small, or stored as it is read

        def check(info: Any) -> None:
            self._limits.check_expansion(chunk, info.size, f"the chunk at {info.chunk_offset} of {what}", self.path)

        dataset.id.chunk_iter(check)

    def _check_structure(self, root: h5py.File) -> None:
        """Before anything is read: refuse a link out of the file (HDF5 would open the file it
        names, which may be anything, a FIFO that never answers included), and any attribute
        whose variable-length elements could make more than the caps allow."""
        h5py = _h5py()
        objects: list[bytes] = []

        def visit(name: bytes, link: Any) -> bytes | None:
            # Low level, names as bytes: h5py's own visit fails on a name that is not UTF-8, and an
            # exception raised in here reaches Python as a SystemError; returning stops the visit.
            if link.type not in (h5py.h5l.TYPE_HARD, h5py.h5l.TYPE_SOFT) or name.count(b"/") >= MAX_NESTING:
                return name
            if link.type == h5py.h5l.TYPE_HARD:
                objects.append(name)
            return None

        outside = root.id.links.visit(visit, info=True)
        if outside is not None and outside.count(b"/") >= MAX_NESTING:
            raise UnsupportedFormatError(
                f"{self.path}: '{_text(outside)[:200]}...' is nested over {MAX_NESTING} groups deep; Keras nests "
                "a group per model and layer, and HDF5 looks every path up from the root (deeper is quadratic)"
            )
        if outside is not None:
            value = root.id.links.get_val(outside)
            target = f" to {_text(value[0])!r}" if isinstance(value, tuple) else ""
            raise UnsupportedFormatError(
                f"{self.path}: '{_text(outside)}' is a link out of the file{target}; weightscope reads one file only"
            )
        self._check_attributes(root)
        for name in objects:
            self._check_attributes(root[name])

    def _check_attributes(self, item: Any) -> None:
        """Charge ``item``'s attributes of variable-length elements before anything reads them.

        HDF5 keeps each element in the global heap and copies it out per element: thousands
        of elements naming one stored string of 300 KB make a gigabyte. Nothing says how
        long an element is before reading it, but none is longer than the largest global
        heap collection: an array attribute is charged that much per element. (One value
        can be no larger than the file.)
        """
        for name in item.attrs:
            attribute = item.attrs.get_id(name)
            objects = attribute.get_space().get_simple_extent_npoints() * _objects_per_element(attribute.dtype)
            if objects < 0:
                raise UnsupportedFormatError(
                    f"{self.path}: attribute '{_text(name)}' of {item.name} holds variable-length data within "
                    "variable-length data; not read"
                )
            if objects > 1:
                each = self._largest_heap_collection() + _ATTRIBUTE_ELEMENT_COST
                self._budget.spend(objects * each, f"attribute '{_text(name)}' of {item.name}")

    def _largest_heap_collection(self) -> int:
        """The size of the largest global heap collection in the file (bounded by the file's end)."""
        if self._largest_heap is None:
            largest = 0
            for match in re.finditer(_GLOBAL_HEAP, self._bytes):  # signature, version, 3 reserved, size
                if match.start() + 16 <= len(self._bytes):
                    (size,) = struct.unpack_from("<Q", self._bytes, match.start() + 8)
                    largest = max(largest, min(size, len(self._bytes) - match.start()))
            self._largest_heap = largest
        return self._largest_heap

    def _root_texts(self, root: h5py.File) -> dict[str, str]:
        """The root's text attributes (a ``.h5``'s ``model_config``, ``keras_version``...), charged as read."""
        texts: dict[str, str] = {}
        for key in root.attrs:
            if root.attrs.get_id(key).get_space().get_simple_extent_npoints() != 1:
                continue  # an array: never text
            value = root.attrs[key]
            if _is_text(value):
                texts[key] = _text(value)
                self._budget.spend(len(texts[key]) * 4 + _ATTRIBUTE_ELEMENT_COST, f"root attribute '{key}'")
        return texts

    # -- reading -----------------------------------------------------------------------------
    def _extent(self, info: TensorInfo) -> Extent | None:
        """A contiguous dataset's bytes in an HDF5 file; None for a chunked one (h5py reads it, through its
        filters) and inside a ``.keras`` zip (its bytes are the member's, maybe inflated)."""
        if info.offset < 0 or self._in_zip:
            return None
        return Extent(info.file, info.offset, info.nbytes, info.dtype)

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
        except MemoryError:
            raise UnsupportedFormatError(
                f"{self.path}: tensor '{info.name}' of shape {list(info.shape)} does not fit in memory"
            ) from None
        except (OSError, KeyError, ValueError, TypeError) as error:
            raise CorruptCheckpointError(f"{self.path}: cannot read tensor '{info.name}' ({reason(error)})") from None
        return np.asarray(data).view(info.dtype).reshape(info.shape)

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._bytes = b""
        super()._close()


def _objects_per_element(dtype: np.dtype) -> int:
    """How many variable-length values (h5py's object fields) one element of ``dtype`` holds;
    -1 if one holds more variable-length values itself (a list of strings)."""
    if dtype.fields:
        counts = [_objects_per_element(field[0]) for field in dtype.fields.values()]
        return -1 if -1 in counts else sum(counts)
    if dtype.subdtype is not None:
        base, shape = dtype.subdtype
        return math.prod(shape) * _objects_per_element(base)
    if dtype.kind != "O":
        return 0
    base = _h5py().check_vlen_dtype(dtype)
    return -1 if isinstance(base, np.dtype) and base.hasobject else 1


def _written_names(variables: h5py.Group, count: int) -> list[str]:
    """The full names weightscope's writer lists in a ``vars`` group's ``weight_names``
    (Keras never writes it), when there is one per variable; else none."""
    names = _attribute_list(variables, WRITTEN_NAMES)
    return names if len(names) == count and len(set(names)) == count else []


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


def _keras3_class(path: str, name: str) -> str:
    """The Keras class of the object saved at ``path`` in a Keras 3 weights file: a model's
    layer's group is its class in snake case (``layers/dense_1``: the second Dense), a
    layer's sublayer's the attribute holding it (``layers/lstm/cell``); a wrapped layer's
    (``TimeDistributed``'s ``layer``) only its default ``name`` (``dense_2``) tells; "" if unknown."""
    parent, _, group = path.rpartition("/")
    if parent.rsplit("/", 1)[-1] != "layers":
        if group != "layer":
            return KERAS_SUBLAYER_CLASSES.get(group, "")
        group = name
    by_group = _classes_by_group()
    return by_group.get(group) or by_group.get(re.sub(r"_\d+$", "", group), "")


@functools.cache
def _classes_by_group() -> dict[str, str]:
    """Keras 3 group name (the class in snake case) -> the class, for the classes ``KERAS_LAYER_WEIGHTS`` knows."""
    return {snake_case(name): name for name in KERAS_LAYER_WEIGHTS}


def _weight_names(class_name: str, settings: dict[str, Any] | None, count: int) -> list[str]:
    """The names of a layer's ``count`` variables: those its config's ``settings`` give it, or
    without a config the one choice of its optional variables that makes ``count``; else none."""
    variables = KERAS_LAYER_WEIGHTS.get(class_name, ())
    if settings is not None:
        names = [name for name, setting in variables if setting is None or _has(settings, setting)]
        return names if len(names) == count else []
    optional = [name for name, setting in variables if setting is not None]
    dropped = len(variables) - count
    if dropped not in (0, len(optional)):  # too many, too few, or more than one way to drop some
        return []
    return [name for name, setting in variables if setting is None or dropped == 0]


def _has(settings: dict[str, Any], setting: str) -> bool:
    """Whether a layer's config turns on a variable: a flag (on by default), or ``setting=value``."""
    key, equals, value = setting.partition("=")
    return settings.get(key) == value if equals else bool(settings.get(key, True))


# -- optimizer state -------------------------------------------------------------------------

# Keras 3 layer variables no optimizer trains.
_NON_TRAINABLE = frozenset({"moving_mean", "moving_variance", "mean", "variance", "count"})
# A Keras 3 optimizer's ``variables``: ``iteration``, ``learning_rate`` (unless a schedule
# gives it), then what its ``build`` adds with ``add_optimizer_variables(var_list, names)``:
# for each trainable variable in order, one of each name (Adam: momentum, velocity of the
# first variable, then of the second, ...); each further call adds another such block
# (RMSprop: every velocity, then every momentum). Class -> its blocks, from its config.
_OPTIMIZER_BLOCKS: dict[str, Any] = {
    "Adam": lambda c: [("momentum", "velocity")] + [("velocity_hat",)] * bool(c.get("amsgrad")),
    "AdamW": lambda c: [("momentum", "velocity")] + [("velocity_hat",)] * bool(c.get("amsgrad")),
    "SGD": lambda c: [("momentum",)] * bool(c.get("momentum")),
    "RMSprop": lambda c: (
        [("velocity",)] + [("momentum",)] * bool(c.get("momentum")) + [("average_gradient",)] * bool(c.get("centered"))
    ),
    "Adagrad": lambda c: [("accumulator",)],
    "Adadelta": lambda c: [("accumulated_grad", "accumulated_delta_var")],
    "Adamax": lambda c: [("momentum", "norm")],
    "Lion": lambda c: [("momentum",)],
    "Lamb": lambda c: [("momentum", "velocity")],
}
# Without a config (``.weights.h5``): the optimizer's default name (``optimizer/vars``'
# ``name`` attribute, ``adam``, ``adam_1``, ...) -> its class and the configs it may have had.
_DEFAULT_NAMES: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "adam": ("Adam", [{}, {"amsgrad": True}]),
    "adam_w": ("AdamW", [{}, {"amsgrad": True}]),
    "sgd": ("SGD", [{}, {"momentum": 0.9}]),
    "rm_sprop": ("RMSprop", [{}, {"momentum": 0.9}, {"centered": True}, {"momentum": 0.9, "centered": True}]),
    "adagrad": ("Adagrad", [{}]),
    "adadelta": ("Adadelta", [{}]),
    "adamax": ("Adamax", [{}]),
    "lion": ("Lion", [{}]),
    "lamb": ("Lamb", [{}]),
}

Layout = tuple[tuple[str, ...], list[tuple[str, ...]]]  # leading scalars, blocks of slots


def _optimizer_layouts(root: h5py.Group, config: dict[str, Any] | None) -> list[Layout]:
    """The layouts the saved optimizer's variables may have: one from a ``.keras`` config,
    the few its default name allows in a ``.weights.h5``, none when it cannot be told."""
    if config is not None:
        compiled = config.get("compile_config")
        optimizer = compiled.get("optimizer") if isinstance(compiled, dict) else None
        if not isinstance(optimizer, dict) or not isinstance(optimizer.get("config"), dict):
            return []
        settings = optimizer["config"]
        blocks = _OPTIMIZER_BLOCKS.get(optimizer.get("class_name"))  # type: ignore[arg-type]
        if blocks is None or settings.get("use_ema") or settings.get("gradient_accumulation_steps"):
            return []
        schedule = isinstance(settings.get("learning_rate"), dict)
        return [(("iteration",) if schedule else ("iteration", "learning_rate"), blocks(settings))]
    variables = root.get("optimizer/vars")
    name = _text(variables.attrs.get("name", "")) if variables is not None else ""
    known = _DEFAULT_NAMES.get(name.rstrip("0123456789").removesuffix("_") if name[-1:].isdigit() else name)
    if known is None:
        return []
    blocks = _OPTIMIZER_BLOCKS[known[0]]
    return [
        (leading, blocks(settings))
        for settings in known[1]
        for leading in (("iteration",), ("iteration", "learning_rate"))
    ]


def _name_keras3_slots(
    optimizer: list[TensorInfo], trainable: list[TensorInfo], layouts: list[Layout]
) -> list[tuple[TensorInfo, str, TensorRole | None]] | None:
    """Each optimizer variable with its name (``optimizer/layer1/kernel/momentum``) and role,
    when exactly one layout fits their count and every slot has its variable's shape."""
    fits: list[list[tuple[TensorInfo, str, TensorRole | None]]] = []
    for leading, blocks in layouts:
        slots = [(slot, variable) for block in blocks for variable in trainable for slot in block]
        if len(optimizer) != len(leading) + len(slots) or not slots:
            continue
        heads, rest = optimizer[: len(leading)], optimizer[len(leading) :]
        if any(info.shape != () for info in heads) or heads[0].dtype.kind not in "iu":
            continue
        if any(info.shape != variable.shape for info, (_, variable) in zip(rest, slots, strict=True)):
            continue
        fits.append(
            [(info, f"optimizer/{name}", None) for info, name in zip(heads, leading, strict=True)]
            + [
                (info, f"optimizer/{variable.name}/{slot}", TensorRole("optimizer", role=slot, owner=variable.name))
                for info, (slot, variable) in zip(rest, slots, strict=True)
            ]
        )
    return fits[0] if len(fits) == 1 else None


def _legacy_slot_owner(
    name: str, shape: tuple[int, ...], parameters: dict[str, tuple[int, ...]]
) -> tuple[str, str] | None:
    """(parameter, slot) of a tf-keras optimizer weight named ``Adam/m/layer1/kernel`` (the
    optimizer of tf-keras 2.11+) or ``Adam/layer1/kernel/m`` (``optimizers.legacy``), under
    any name scope (``training/Adam/...`` in TF1 graphs), when the name holds exactly one
    parameter of the file and the shapes agree."""
    parts = name.split("/")
    found = set()
    for start in range(1, len(parts) - 1):  # the optimizer's name (and its scopes) first
        rest = parts[start:]
        for owner, slot in (("/".join(rest[1:]), rest[0]), ("/".join(rest[:-1]), rest[-1])):
            if parameters.get(owner) == shape:
                found.add((owner, slot))
    return found.pop() if len(found) == 1 else None
