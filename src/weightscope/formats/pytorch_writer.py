"""Writing PyTorch checkpoints: what ``torch.save(state_dict)`` writes, without torch.

The file is the zip ``torch.save`` makes for an ``OrderedDict`` of tensors, its members
stored and their data aligned to 64 bytes (the local headers padded with an ``FB`` extra
field, as PyTorch pads them), in PyTorch's order: ``archive/data.pkl``,
``archive/.format_version`` (``1``), ``archive/.storage_alignment`` (``64``),
``archive/byteorder`` (``little``), ``archive/data/0``, ``archive/data/1``, … (one storage
per tensor, never shared), ``archive/version`` (``3``) and ``archive/.data/serialization_id``.
The folder is ``archive`` whatever the file is called (``torch.save`` uses the file's stem
and writes ``archive`` for buffers; ``torch.load`` accepts any), so the bytes do not depend
on the name they are written under.

``data.pkl`` is the pickle (protocol 2) ``torch.save`` writes, opcode for opcode, memo
included: ``collections.OrderedDict()`` filled by ``SETITEMS`` with, for each tensor,
``torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())`` where
the storage is the persistent id ``('storage', torch.<Type>Storage, key, 'cpu', numel)``.
Dtypes with no typed storage class (uint16/32/64, the float8 types) are written as torch
writes them: ``_rebuild_tensor_v3`` with the dtype (``torch.float8_e4m3fn``, …) as a
seventh argument and a ``torch.storage.UntypedStorage`` whose numel counts bytes. Strides
are those of a contiguous tensor as torch computes them (sizes of 0 count as 1).

The serialization id is 40 decimal digits, as torch writes, here derived from the other
members' names and CRC-32s (torch combines hashes of the same), so equal checkpoints get
equal bytes.
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from weightscope.atomic import atomic_write
from weightscope.containers.zip import ZipWriter
from weightscope.dtypes import ElementType, element_for
from weightscope.formats.pytorch_pickle import STORAGE_TYPES, TORCH_DTYPES
from weightscope.writing import Holds, Tensors, Writer, array_bytes, plan

FOLDER = "archive"
ALIGNMENT = 64  # torch's storage alignment, recorded in .storage_alignment
_TYPED_STORAGES = {element: name for name, element in STORAGE_TYPES.items()}
# The small members, as torch.save writes them.
_FORMAT_VERSION = b"1"
_VERSION = b"3\n"
_BYTEORDER = b"little"


# What the files hold: the types torch has (a typed storage class, or a dtype of their own).
HOLDS = Holds("PyTorch", "model.pt", dtypes=frozenset(TORCH_DTYPES))


def _element(dtype: np.dtype) -> ElementType:
    element = element_for(dtype, lambda e: e.name in TORCH_DTYPES)
    assert element is not None  # planned: a type the format holds
    return element


class _Pickle:
    """Pickle opcodes (protocol 2) written as the standard pickler writes them, memo included."""

    def __init__(self) -> None:
        self.out = bytearray(pickle.PROTO + b"\x02")
        self._memo: dict[object, int] = {}

    def _put(self, key: object) -> None:
        index = self._memo[key] = len(self._memo)
        self.out += pickle.BINPUT + bytes([index]) if index < 256 else pickle.LONG_BINPUT + struct.pack("<I", index)

    def _get(self, key: object) -> bool:
        index = self._memo.get(key)
        if index is None:
            return False
        self.out += pickle.BINGET + bytes([index]) if index < 256 else pickle.LONG_BINGET + struct.pack("<I", index)
        return True

    def global_(self, module: str, name: str) -> None:
        if not self._get(("global", module, name)):
            self.out += pickle.GLOBAL + f"{module}\n{name}\n".encode("ascii")
            self._put(("global", module, name))

    def string(self, text: str, *, shared: bool = False) -> None:
        """A str; ``shared`` ones are one object each time (torch's literals), fetched from the memo."""
        if shared and self._get(("str", text)):
            return
        encoded = text.encode()
        self.out += pickle.BINUNICODE + struct.pack("<I", len(encoded)) + encoded
        self._put(("str", text) if shared else object())

    def integer(self, value: int) -> None:
        if 0 <= value <= 0xFF:
            self.out += pickle.BININT1 + bytes([value])
        elif 0 <= value <= 0xFFFF:
            self.out += pickle.BININT2 + struct.pack("<H", value)
        elif -(1 << 31) <= value < (1 << 31):
            self.out += pickle.BININT + struct.pack("<i", value)
        else:
            encoded = pickle.encode_long(value)
            self.out += pickle.LONG1 + bytes([len(encoded)]) + encoded

    def ints(self, values: tuple[int, ...]) -> None:
        """A tuple of ints (a size or stride)."""
        if not values:
            self.out += pickle.EMPTY_TUPLE
            return
        if len(values) > 3:
            self.out += pickle.MARK
        for value in values:
            self.integer(value)
        self.out += (pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3)[len(values) - 1] if len(values) <= 3 else pickle.TUPLE
        self._put(object())

    def ordered_dict(self) -> None:
        """``collections.OrderedDict()``: its items follow by ``setitems``."""
        self.global_("collections", "OrderedDict")
        self.out += pickle.EMPTY_TUPLE + pickle.REDUCE
        self._put(object())

    def mark(self) -> None:
        self.out += pickle.MARK

    def end_tuple(self) -> None:
        self.out += pickle.TUPLE
        self._put(object())

    def reduce(self) -> None:
        self.out += pickle.REDUCE
        self._put(object())


_BATCH = 1000  # the pickler's batch of dict items per SETITEMS


def _stride(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The strides of a contiguous tensor as torch computes them: sizes of 0 count as 1."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def _data_pkl(plan: list[tuple[str, ElementType, tuple[int, ...]]]) -> bytes:
    """The pickle torch.save writes for an OrderedDict of these tensors, storage ``i`` for the ``i``-th."""
    writer = _Pickle()
    writer.ordered_dict()
    for batch in range(0, len(plan), _BATCH):
        items = plan[batch : batch + _BATCH]
        if len(items) > 1:
            writer.mark()
        for key, (name, element, shape) in enumerate(items, start=batch):
            writer.string(name)
            storage = _TYPED_STORAGES.get(element.name)
            writer.global_("torch._utils", "_rebuild_tensor_v2" if storage else "_rebuild_tensor_v3")
            writer.mark()
            writer.mark()  # the storage's persistent id
            writer.string("storage", shared=True)
            if storage:
                writer.global_("torch", storage)
            else:
                writer.global_("torch.storage", "UntypedStorage")
            writer.string(str(key))
            writer.string("cpu", shared=True)
            numel = math.prod(shape)
            assert element.dtype is not None
            writer.integer(numel if storage else numel * element.dtype.itemsize)
            writer.end_tuple()
            writer.out += pickle.BINPERSID
            writer.integer(0)  # storage offset
            writer.ints(shape)
            writer.ints(_stride(shape))
            writer.out += pickle.NEWFALSE  # requires_grad
            writer.ordered_dict()  # backward hooks
            if not storage:
                writer.global_("torch", element.name)
            writer.end_tuple()
            writer.reduce()
        writer.out += pickle.SETITEMS if len(items) > 1 else pickle.SETITEM
    writer.out += pickle.STOP
    return bytes(writer.out)


def _serialization_id(records: list[tuple[str, int]]) -> bytes:
    """40 digits from the records' names and CRC-32s: equal checkpoints, equal ids."""
    names, crcs = hashlib.blake2b(digest_size=8), hashlib.blake2b(digest_size=8)
    for name, crc in records:
        names.update(name.encode("utf-8") + b"\0")
        crcs.update(struct.pack("<I", crc))
    first, second = (int.from_bytes(digest.digest(), "little") for digest in (names, crcs))
    return f"{first:020d}{second:020d}".encode("ascii")


def save(tensors: Tensors | Mapping[str, ArrayLike], path: str | os.PathLike[str]) -> Path:
    """Write ``tensors`` as a PyTorch checkpoint (``torch.save`` of an ``OrderedDict``) at ``path``.

    The pickle is planned from the tensors' specs, then each array is streamed into its
    storage member; the file appears at ``path`` only once complete. Returns the path.
    """
    write(tensors, path)
    return Path(path)


def write(tensors: Tensors | Mapping[str, ArrayLike], path: str | os.PathLike[str]) -> list[Path]:
    """``save``, returning the one file written (the registry's ``Writer``)."""
    target = Path(path)
    source, specs = plan(tensors, target, HOLDS)
    pickled = _data_pkl([(spec.name, _element(spec.dtype), spec.shape) for spec in specs])

    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(target) as handle:
        archive = ZipWriter(handle, align=ALIGNMENT)
        records: list[tuple[str, int]] = []

        def add(member: str, size: int, *chunks: bytes | np.ndarray) -> None:
            records.append((member, archive.add(f"{FOLDER}/{member}", size, chunks)))

        add("data.pkl", len(pickled), pickled)
        add(".format_version", len(_FORMAT_VERSION), _FORMAT_VERSION)
        add(".storage_alignment", len(str(ALIGNMENT)), str(ALIGNMENT).encode("ascii"))
        add("byteorder", len(_BYTEORDER), _BYTEORDER)
        for key, spec in enumerate(specs):
            data = array_bytes(source.array(spec.name), spec)
            add(f"data/{key}", data.nbytes, data)
            del data
        add("version", len(_VERSION), _VERSION)
        identifier = _serialization_id(records)
        add(".data/serialization_id", len(identifier), identifier)
        archive.close()
    return [target]


WRITER = Writer(HOLDS, write)
