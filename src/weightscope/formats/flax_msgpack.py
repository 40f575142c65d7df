"""Flax msgpack: ``flax.serialization.to_bytes`` / ``msgpack_serialize``, and the Hub's ``flax_model.msgpack``.

Bytes (``flax/serialization.py``): the whole file is one MessagePack value (``weightscope.containers.msgpack``),
``msgpack.packb(state_dict)`` of the state dict flax makes of the object: a map from string keys to maps, arrays
and leaves (``to_state_dict`` turns lists, tuples and named tuples into maps keyed ``"0"``, ``"1"``, … or by field;
``msgpack_serialize`` of a plain tree keeps lists as msgpack arrays). Leaves:

- **ext type 1, ndarray**: the payload is itself msgpack, an array of three: the shape (an array of ints), the
  dtype's numpy name (a str: ``float32``, ``bfloat16``, ``int8``, …) and the C-order bytes (a bin), in the writing
  machine's byte order (little-endian in practice: flax writes no byte order);
- **ext type 3, numpy scalar**: the same, of shape ``[]`` (restored as a numpy scalar);
- **ext type 2, Python complex**: the payload is msgpack ``[real, imag]`` (two floats);
- any other msgpack value: ints, floats, strings, booleans, nil (a ``TrainState``'s ``step``).

A file holding one array (``msgpack_serialize(array)``) names it after the file, as a ``.npy`` file is.

An array over ``MAX_CHUNK_SIZE`` (2**30) bytes is written as a map ``{"__msgpack_chunked_array__": true, "shape":
{"0": d0, …}, "chunks": {"0": ndarray, …}}`` of flat pieces of at most that size; ``msgpack_restore`` joins them
(``np.concatenate``, then ``reshape``) wherever such a map is the top level or a value in a map.

Names are the keys' path joined by ``/``, as ``flax.traverse_util.flatten_dict(sep="/")`` makes them:
``params/Dense_0/kernel``, ``opt_state/0/mu/Dense_0/kernel``; a list's arrays are named by their place
(``layers/0``), and a list of plain values is one leaf (as ``flatten_dict`` keeps it). Arrays are read-only views of
the file's bytes (their offsets are recorded as the tree is walked; nothing is copied); a chunked array is joined
when read. Every other leaf, and an empty map or array, is metadata (its ``repr``, as msgpack_restore gives it).

Layers: a name's last component is the tensor's role in the layer its path names, and Flax's collections
(``params``, ``batch_stats``) name no layer: ``params/Dense_0/kernel`` is the weight of
layer ``Dense_0`` (a kernel [in, out], as TensorFlow's), ``batch_stats/BatchNorm_0/mean`` its running mean; a
``scale`` and ``bias`` are a norm's scale and offset. Optax's state (``opt_state/<i>/<slot>/<path>``: Adam's ``mu``
and ``nu``, momentum's ``trace``) is optimizer state of the parameter whose path ends with ``<path>``
(``weightscope.layers.jax_tree_roles``, as for Orbax).

A reader must refuse (beyond the container's refusals): a top level that is no map or array; an ndarray payload
that is not ``[shape, dtype name, bin]`` or has bytes left after it; a negative or non-integer dimension; a dtype
name outside the allow-list below (an object or structured dtype above all: ``np.dtype`` is never called on the
file's string); bytes that are not the shape's size; a chunked array whose shape or chunks are not numbered maps of
the right kind, whose chunks differ in dtype or trailing dimensions, or add up to another size; a name given twice.
There are no checksums: ``verify`` reads every tensor, which checks bounds only.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from weightscope.checkpoint import Extent, FileCheckpoint, Index, TensorInfo
from weightscope.containers.allow_list import ScanReport, nothing_named
from weightscope.containers.msgpack import Bin, Ext, decode_all
from weightscope.conventions import PARAMETER_ROLES
from weightscope.dtypes import (
    BY_NAME,
    ElementType,
    check_rank,
    check_size,
    element_for,
    little_endian_dtype,
    native_order,
)
from weightscope.errors import CorruptCheckpointError, UnsupportedFormatError, UsageError
from weightscope.layers import TensorRole, classify, jax_tree_roles
from weightscope.limits import Budget, Limits
from weightscope.writing import Holds, Spec, Tensors, Writer, array_bytes, plan

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

NDARRAY, NATIVE_COMPLEX, NPSCALAR = 1, 2, 3  # flax's _MsgpackExtType
_NESTED = frozenset({NDARRAY, NATIVE_COMPLEX, NPSCALAR})  # their payloads are msgpack
_ARRAYS = frozenset({NDARRAY, NPSCALAR})
CHUNKED = "__msgpack_chunked_array__"
SEPARATOR = "/"
# The dtype names flax writes (``arr.dtype.name``) that read as what they say: those of the dtype table whose dtype
# numpy names so (TensorFlow's qint8, stored as int8, and object strings are left out).
DTYPES: dict[str, ElementType] = {
    name: element
    for name, element in BY_NAME.items()
    if element.numpy_name not in (None, "object") and element.dtype is not None and element.dtype.name == name
}
# Flax's collections: the first component of a variable's name, naming no layer.
COLLECTIONS = frozenset({"params", "batch_stats"})
# Flax's parameter names whose role is not PARAMETER_ROLES' (BatchNorm's statistics, Embed's table).
FLAX_ROLES = {"scale": "scale", "mean": "running_mean", "var": "running_var", "embedding": "weight"}
_SCALARS = frozenset({int, float, str, bool, type(None)})
_SHOWN = 16  # the values of a longer list of scalars shown in its metadata
_INFO_COST = 320  # a TensorInfo with its shape, the tuples of its chunks, a dict slot (as gguf's)


@dataclass(frozen=True)
class _Array:
    """An ndarray leaf: its element type, shape, and bytes in the file."""

    element: ElementType
    shape: tuple[int, ...]
    offset: int
    nbytes: int


class FlaxMsgpackCheckpoint(FileCheckpoint):
    """A Flax msgpack file: its arrays, named by their path in the tree, as read-only views of the file."""

    format = "flax-msgpack"

    def _load(self) -> Index:
        size = self._source.size
        self._file = str(self.path)  # made once: each tensor's info and errors name it
        self._budget = Budget(Limits.for_size(size), self.path)
        tree = decode_all(self._source, 0, size, self.path, self._budget, "the msgpack tree", _NESTED)
        if not isinstance(tree, (dict, list)) and not (isinstance(tree, Ext) and tree.code in _ARRAYS):
            raise UnsupportedFormatError(f"{self.path}: a msgpack file holding {_kind(tree)}, not a tree of arrays")
        self._chunks: dict[str, list[_Array]] = {}
        infos: dict[str, TensorInfo] = {}
        metadata: dict[str, str] = {}
        self._walk(tree, "", True, infos, metadata)
        return Index(infos, metadata=metadata, lazy_roles=lambda: _roles(list(infos)))

    def _walk(
        self, value: Any, name: str, in_map: bool, infos: dict[str, TensorInfo], metadata: dict[str, str]
    ) -> None:
        """Record ``value`` at ``name`` (a map's value, or the top level, where ``in_map``) and what is under it."""
        if isinstance(value, dict) and value and not (in_map and CHUNKED in value):
            for key, item in value.items():
                kind = type(item)
                if kind in _SCALARS or (kind is Ext and item.code in _ARRAYS):  # most leaves: no call to walk each
                    self._leaf(item, f"{name}{key}", infos, metadata)
                else:
                    self._walk(item, f"{name}{key}{SEPARATOR}", True, infos, metadata)
            return
        if isinstance(value, list) and not _SCALARS.issuperset(map(type, value)):
            for number, item in enumerate(value):
                self._walk(item, f"{name}{number}{SEPARATOR}", False, infos, metadata)
            return
        # a leaf; a lone array, the top level, is named as its file
        self._leaf(value, name[: -len(SEPARATOR)] or self.path.name.removesuffix(".msgpack"), infos, metadata)

    def _leaf(self, value: Any, name: str, infos: dict[str, TensorInfo], metadata: dict[str, str]) -> None:
        """Record the leaf ``value`` at ``name``: a tensor, or metadata."""
        if name in infos or name in metadata:
            raise CorruptCheckpointError(f"{self._file}: '{name}' is given twice")
        if isinstance(value, Ext) and value.code in _ARRAYS:
            array = self._array(value, f"{self._file}: '{name}'")
        elif isinstance(value, dict) and value:  # a chunked array (an empty map is metadata)
            pieces = self._pieces(value, name)
            shape = _chunked_shape(value, pieces, f"{self._file}: '{name}'")
            array = _Array(pieces[0].element, shape, pieces[0].offset, sum(piece.nbytes for piece in pieces))
            self._chunks[name] = pieces
        else:
            metadata[name] = self._text(value, name)
            return
        self._budget.spend(_INFO_COST + sys.getsizeof(name), "the tensor infos")
        element = array.element
        assert element.dtype is not None  # DTYPES holds numpy's types only
        infos[name] = TensorInfo(
            name, element.dtype, array.shape, array.nbytes, element.name, self._file, array.offset, name
        )

    def _array(self, ext: Ext, where: str) -> _Array:
        """The ndarray an ext of type 1 or 3 holds: ``[shape, dtype name, bytes]``, itself msgpack."""
        inner = ext.value
        if not (isinstance(inner, list) and len(inner) == 3 and isinstance(inner[2], Bin)):
            raise CorruptCheckpointError(f"{where}: its ndarray payload is no [shape, dtype, bytes] but {inner!r:.80}")
        shape, dtype_name, data = inner
        if not isinstance(shape, list) or not all(type(size) is int and size >= 0 for size in shape):
            raise CorruptCheckpointError(f"{where}: shape {shape!r:.80} is not a list of sizes")
        if isinstance(dtype_name, Bin):  # flax reads the name as bytes: a bin serves as well as a str
            text = self._source.read(dtype_name.offset, min(dtype_name.length, 64), f"the dtype of {where}")
            dtype_name = str(text, "utf-8", "replace")
        element = DTYPES.get(dtype_name) if isinstance(dtype_name, str) else None
        if element is None:
            raise UnsupportedFormatError(f"{where}: dtype {dtype_name!r:.80} is none weightscope reads")
        assert element.dtype is not None
        check_rank(shape, where)
        check_size(shape, element.dtype.itemsize, where)
        expected = math.prod(shape) * element.dtype.itemsize
        if data.length != expected:
            raise CorruptCheckpointError(
                f"{where}: {data.length} bytes for shape {shape} of {dtype_name}, which takes {expected}"
            )
        return _Array(element, tuple(shape), data.offset, data.length)

    def _pieces(self, chunked: dict[Any, Any], name: str) -> list[_Array]:
        where = f"{self._file}: chunked array '{name}'"
        chunks = _numbered(chunked.get("chunks"), f"{where}: its chunks")
        if not chunks or not all(isinstance(chunk, Ext) and chunk.code in _ARRAYS for chunk in chunks):
            raise CorruptCheckpointError(f"{where}: its chunks are no ndarrays")
        pieces = [self._array(chunk, f"{where}, chunk {number}") for number, chunk in enumerate(chunks)]
        first = pieces[0]
        for number, piece in enumerate(pieces):
            if piece.element != first.element or not piece.shape or piece.shape[1:] != first.shape[1:]:
                raise CorruptCheckpointError(
                    f"{where}: chunk {number} is {piece.element.name} {list(piece.shape)}, which does not join "
                    f"chunk 0's {first.element.name} {list(first.shape)}"
                )
        return pieces

    def _text(self, value: Any, name: str) -> str:
        """What msgpack_restore gives for a leaf that is no array, as text."""
        if isinstance(value, Ext) and value.code == NATIVE_COMPLEX:
            parts = value.value
            if not (isinstance(parts, list) and len(parts) == 2 and all(_real(part) for part in parts)):
                raise CorruptCheckpointError(f"{self.path}: complex '{name}' is no [real, imag] but {parts!r:.80}")
            return repr(complex(parts[0], parts[1]))
        if isinstance(value, Ext):
            return f"ExtType(code={value.code}, data=<{value.length} bytes>)"
        if isinstance(value, Bin):
            return f"<{value.length} bytes>"
        if isinstance(value, list) and len(value) > _SHOWN:  # scalars, as flatten_dict keeps a list: one leaf
            return f"[{', '.join(map(repr, value[:_SHOWN]))}, … ({len(value):,} values)]"
        return repr(value)

    # -- reading tensors -------------------------------------------------------------
    def _extent(self, info: TensorInfo) -> Extent | None:
        if info.name in self._chunks:
            return None  # joined from its chunks
        return Extent(info.file, info.offset, info.nbytes, little_endian_dtype(info.dtype))

    def _read(self, info: TensorInfo) -> np.ndarray:
        pieces = self._chunks.get(info.name)
        if pieces is None:
            return super()._read(info)
        joined = np.empty(info.nbytes, np.uint8)
        at = 0
        for piece in pieces:
            joined[at : at + piece.nbytes] = self._source.read(piece.offset, piece.nbytes, f"tensor '{info.name}'")
            at += piece.nbytes
        array = native_order(joined.view(little_endian_dtype(info.dtype)).reshape(info.shape), info.dtype)
        array.flags.writeable = False
        return array


def scan(path: str | os.PathLike[str]) -> ScanReport:
    """``weightscope scan``: a msgpack tree names no global and calls nothing, so nothing is listed; the verdict is
    what opening the file raises, as for a pickle (a file of this format is never read as a pickle)."""
    return nothing_named(FlaxMsgpackCheckpoint, path)


def _kind(value: Any) -> str:
    """What a msgpack value is, with its article: 'an int', 'a bin'."""
    kind = {Bin: "bin", Ext: "ext value", type(None): "nil"}.get(type(value), type(value).__name__)
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def _real(value: Any) -> bool:
    return type(value) in (int, float)


def _numbered(value: Any, where: str) -> list[Any]:
    """The values of a map keyed ``"0"``, ``"1"``, … in that order (flax's ``_dict_to_tuple``)."""
    if not isinstance(value, dict) or set(value) != {str(number) for number in range(len(value))}:
        raise CorruptCheckpointError(f"{where} are no map keyed 0, 1, …")
    return [value[str(number)] for number in range(len(value))]


def _chunked_shape(chunked: dict[Any, Any], pieces: list[_Array], where: str) -> tuple[int, ...]:
    shape = _numbered(chunked.get("shape"), f"{where}: its shape's sizes")
    if not all(type(size) is int and size >= 0 for size in shape):
        raise CorruptCheckpointError(f"{where}: shape {shape!r:.80} is not a list of sizes")
    element = pieces[0].element
    assert element.dtype is not None
    check_rank(shape, where)
    check_size(shape, element.dtype.itemsize, where)
    stored = sum(piece.nbytes for piece in pieces)
    if stored != math.prod(shape) * element.dtype.itemsize:
        raise CorruptCheckpointError(
            f"{where}: its chunks hold {stored} bytes; shape {shape} of {element.name} takes "
            f"{math.prod(shape) * element.dtype.itemsize}"
        )
    return tuple(shape)


def _roles(names: list[str]) -> dict[str, TensorRole]:
    """The roles optax's and Flax's names give (see the module's docstring)."""
    roles = jax_tree_roles(names)
    known = set(names)
    for name in names:
        parts = name.split(SEPARATOR)
        if name in roles:
            continue
        if len(parts) > 1 + (parts[0] in COLLECTIONS):
            roles[name] = _parameter_role(parts[parts[0] in COLLECTIONS : -1], parts[-1], known, name)
        else:
            roles[name] = classify(name)  # once: listings and layers ask each name's role again
    return roles


def _parameter_role(layer: list[str], last: str, known: set[str], name: str) -> TensorRole:
    role = FLAX_ROLES.get(last) or PARAMETER_ROLES.get(last, last)
    if role == "bias" and name.removesuffix(last) + "scale" in known:
        role = "offset"  # a norm's
    return TensorRole("parameter", layer=SEPARATOR.join(layer), role=role)


# -- writing -------------------------------------------------------------------------
# What flax's msgpack_restore reads back: numpy's own types by their names, and bfloat16 (``_dtype_from_name``);
# np.dtype knows no other ml_dtypes name, so float8s and int4 are left out.
WRITTEN_DTYPES = frozenset(
    {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}
    | {"float16", "float32", "float64", "complex64", "complex128", "bfloat16"}
)
HOLDS = Holds("Flax msgpack", "flax_model.msgpack", dtypes=WRITTEN_DTYPES)
MAX_CHUNK_SIZE = 1 << 30  # flax's: a larger array is written as a chunked map of flat pieces of at most this size
_Tree = dict[str, "_Tree | Spec"]


def _packed_length(head: int, length: int, widths: tuple[tuple[int, int], ...]) -> bytes:
    """The head of a str, bin, ext, map or array of ``length``: its first byte and big-endian length of the
    smallest width that holds it (``widths``: (largest length, byte) pairs, smallest first; a fix- form's byte
    is ``head`` plus the length)."""
    for largest, byte in widths:
        if length <= largest:
            size = {0xFF: 1, 0xFFFF: 2, 0xFFFFFFFF: 4, 2**64 - 1: 8}.get(largest, 0)
            return bytes([head + length]) if size == 0 else bytes([byte]) + length.to_bytes(size, "big")
    raise UsageError(f"a msgpack value of {length:,} entries or bytes is over msgpack's limit")


def _text(text: str) -> bytes:
    data = text.encode("utf-8")
    return _packed_length(0xA0, len(data), ((31, 0), (0xFF, 0xD9), (0xFFFF, 0xDA), (0xFFFFFFFF, 0xDB))) + data


def _map_head(count: int) -> bytes:
    return _packed_length(0x80, count, ((15, 0), (0xFFFF, 0xDE), (0xFFFFFFFF, 0xDF)))


def _int(value: int) -> bytes:
    """A size as msgpack packs it: in the fewest bytes."""
    return _packed_length(0, value, ((0x7F, 0), (0xFF, 0xCC), (0xFFFF, 0xCD), (0xFFFFFFFF, 0xCE), (2**64 - 1, 0xCF)))


def _ndarray_head(dtype_name: str, shape: tuple[int, ...], nbytes: int) -> bytes:
    """An ndarray ext's head and its payload up to the data: ``packb((shape, dtype name, data))`` less the data."""
    dims = _packed_length(0x90, len(shape), ((15, 0), (0xFFFF, 0xDC), (0xFFFFFFFF, 0xDD)))
    payload = b"\x93" + dims + b"".join(_int(size) for size in shape) + _text(dtype_name)
    payload += _packed_length(0, nbytes, ((0xFF, 0xC4), (0xFFFF, 0xC5), (0xFFFFFFFF, 0xC6)))
    size = len(payload) + nbytes
    head = {1: b"\xd4", 2: b"\xd5", 4: b"\xd6", 8: b"\xd7", 16: b"\xd8"}.get(size)
    if head is None:
        head = _packed_length(0, size, ((0xFF, 0xC7), (0xFFFF, 0xC8), (0xFFFFFFFF, 0xC9)))
    return head + bytes([NDARRAY]) + payload


def _unflatten(specs: list[Spec]) -> _Tree:
    """The tree ``params/Dense_0/kernel`` names make (``flax.traverse_util.unflatten_dict(sep="/")``)."""
    tree: _Tree = {}
    for spec in specs:
        *path, last = spec.name.split(SEPARATOR)
        node = tree
        for depth, part in enumerate(path):
            child = node.setdefault(part, {})
            if isinstance(child, Spec):
                raise UsageError(f"tensor '{spec.name}': '{SEPARATOR.join(path[: depth + 1])}' is a tensor too")
            node = child
        if last in node:
            raise UsageError(f"tensor '{spec.name}': its name is also the path of other tensors")
        node[last] = spec
    return tree


def write(tensors: Tensors | Mapping[str, ArrayLike], path: str | os.PathLike[str]) -> list[Path]:
    """Write ``tensors`` as ``flax.serialization.to_bytes`` writes their tree (names split at ``/``): what
    ``msgpack_restore`` reads back. Arrays over flax's chunk size are written chunked, as flax writes them."""
    from weightscope.atomic import atomic_write

    target = Path(path)
    source, specs = plan(tensors, target, HOLDS)
    tree = _unflatten(specs)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(target) as handle:

        def put(node: _Tree) -> None:
            handle.write(_map_head(len(node)))
            for key, value in node.items():
                handle.write(_text(key))
                if isinstance(value, dict):
                    put(value)
                else:
                    _put_array(handle, value, array_bytes(source.array(value.name), value))

        put(tree)
    return [target]


def _put_array(handle: BinaryIO, spec: Spec, data: np.ndarray) -> None:
    element = element_for(spec.dtype, lambda element: element.name in WRITTEN_DTYPES)
    assert element is not None  # planned
    if spec.nbytes <= MAX_CHUNK_SIZE:
        handle.write(_ndarray_head(element.name, spec.shape, spec.nbytes))
        handle.write(data.data)
        return
    step = max(1, MAX_CHUNK_SIZE // spec.dtype.itemsize) * spec.dtype.itemsize  # flax's chunk, in bytes
    handle.write(_map_head(3) + _text(CHUNKED) + b"\xc3" + _text("shape") + _map_head(len(spec.shape)))
    for number, size in enumerate(spec.shape):
        handle.write(_text(str(number)) + _int(size))
    starts = range(0, spec.nbytes, step)
    handle.write(_text("chunks") + _map_head(len(starts)))
    for number, start in enumerate(starts):
        piece = data[start : start + step]
        handle.write(_text(str(number)) + _ndarray_head(element.name, (len(piece) // spec.dtype.itemsize,), len(piece)))
        handle.write(piece.data)


WRITER = Writer(HOLDS, write)
