"""What torch's pickles name, as this reader rebuilds it: ``TorchAllowList`` (the globals
``torch.load(weights_only=True)`` allows, reimplemented over inert values) and the unpickler under it.

Shared by the zip and legacy readers (``weightscope.formats.pytorch``) and the writer's tables.
See ``weightscope.formats.pytorch``'s docstring for the security model.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from weightscope.containers.allow_list import AllowList
from weightscope.containers.allow_list import Global as _Global
from weightscope.containers.allow_list import ints as _ints
from weightscope.containers.allow_list import is_int as _is_int
from weightscope.containers.allow_list import show as _show
from weightscope.containers.unpickler import Unpickler
from weightscope.errors import CorruptCheckpointError, RefusedError, UnsupportedFormatError
from weightscope.limits import Budget

# Legacy storage classes (torch.<Name>) -> element type.
STORAGE_TYPES: dict[str, str] = {
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
}
# torch.<dtype> values that numpy (or ml_dtypes) holds -> element type.
TORCH_DTYPES: dict[str, str] = {
    name: name
    for name in (
        "float32", "float64", "float16", "bfloat16", "int8", "int16", "int32", "int64", "uint8", "uint16",
        "uint32", "uint64", "bool", "complex64", "complex128", "float8_e5m2", "float8_e4m3fn",
        "float8_e5m2fnuz", "float8_e4m3fnuz", "float8_e8m0fnu",
    )
}  # fmt: skip
_UNTYPED_STORAGES = {("torch.storage", "UntypedStorage"), ("torch", "UntypedStorage")}


# -- what torch's pickles name -------------------------------------------------------------


@dataclass(frozen=True)
class _Storage:
    key: str
    element: str  # uint8 for an untyped storage
    numel: int  # in elements of ``element``


@dataclass(frozen=True)
class _Tensor:
    storage: _Storage
    element: str
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


_REBUILD_TENSOR = ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3")
# What torch.load(weights_only=True) allows (torch/_weights_only_unpickler.py) and this reader
# rebuilds as data: the tensor rebuild functions, parameters, dicts, sets, sizes, ...
_CALLS = [
    *[("torch._utils", name) for name in (*_REBUILD_TENSOR, "_rebuild_parameter", "_rebuild_parameter_with_state")],
    ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch.nn.parameter", "Parameter"),
    ("collections", "OrderedDict"),
    ("collections", "Counter"),
    ("torch", "Size"),
    ("torch", "device"),
    ("_codecs", "encode"),
    ("builtins", "set"),
    ("builtins", "complex"),
    ("builtins", "bytearray"),
]
# What torch allows too but that holds no plain tensor (quantised, sparse, nested, meta, on a
# device): no code would run, but calling them is unsupported, by name.
_UNREAD = [
    *[
        ("torch._utils", f"_rebuild_{name}")
        for name in (
            "qtensor", "sparse_tensor", "meta_tensor_no_storage", "nested_tensor", "wrapper_subclass",
            "device_tensor_from_numpy", "device_tensor_from_cpu_tensor",
        )
    ],
    ("torch.serialization", "_get_layout"),
    ("torch", "Tensor"),  # made bare and given its data by BUILD (set_): the old way, not read
    *[("torch", name) for name in ("per_tensor_affine", "per_tensor_symmetric", "per_channel_affine")],
    *[("torch", name) for name in ("per_channel_symmetric", "per_channel_affine_float_qparams")],
    *[("torch", f"{kind}Tensor") for kind in ("Double", "Float", "Half", "BFloat16", "Long", "Int", "Short")],
    *[("torch", f"{kind}Tensor") for kind in ("Char", "Byte", "Bool")],
    *[("torch", f"{kind}Storage") for kind in ("QInt8", "QUInt8", "QInt32", "QUInt4x2", "QUInt2x4")],
]  # fmt: skip


def _allow_list() -> dict[tuple[str, str], _Global]:
    table = {(module, name): _Global(module, name, "call") for module, name in _CALLS}
    table.update({(module, name): _Global(module, name, "unread") for module, name in _UNREAD})
    table.update(
        {("torch", name): _Global("torch", name, "storage", element) for name, element in STORAGE_TYPES.items()}
    )
    table.update({key: _Global(*key, "storage", "uint8") for key in _UNTYPED_STORAGES})
    table.update({("torch", name): _Global("torch", name, "dtype", kind) for name, kind in TORCH_DTYPES.items()})
    return table


ALLOWED_GLOBALS: dict[tuple[str, str], _Global] = _allow_list()


class TorchAllowList(AllowList):
    """``torch.load(weights_only=True)``'s allow-list, its functions rebuilt over inert values.

    ``pid_length`` is 5 in a zip's pickle and 6 in the legacy format; ``storages`` keeps
    the storages the persistent ids named, by key, as first named."""

    globals: ClassVar[Mapping[tuple[str, str], _Global]] = ALLOWED_GLOBALS

    def __init__(self, pid_length: int = 5) -> None:
        self.pid_length = pid_length
        self.storages: dict[str, _Storage] = {}

    def call(self, function: _Global, args: tuple[Any, ...], unpickler: Unpickler) -> Any:
        name, where = function.qualname, unpickler.where
        if function.kind == "unread":
            raise UnsupportedFormatError(
                f"{where}: calls {name}: torch loads it, but weightscope does not read quantised, sparse, nested, "
                "meta or device tensors"
            )
        if function.kind != "call":
            raise RefusedError(f"{where}: refused to load: the file wants to call {name}")
        if function.module == "torch._utils" and function.name in _REBUILD_TENSOR:
            return _rebuild_tensor(function.name, args, where)
        made = _MAKERS.get(name, _nothing)(args, unpickler)
        if made is _NOTHING:
            raise CorruptCheckpointError(f"{where}: {name} called with arguments {_show(args, 200)}")
        return made

    def new(self, cls: _Global, args: tuple[Any, ...], unpickler: Unpickler) -> Any:
        # NEWOBJ is cls.__new__(cls, *args): dicts and sets start empty whatever the arguments;
        # torch makes a Parameter by calling it.
        name = cls.qualname
        if name in ("collections.OrderedDict", "collections.Counter"):
            return {}
        if name == "builtins.set":
            return set()
        if name in ("torch.nn.parameter.Parameter", "torch.Size", "builtins.complex"):
            return self.call(cls, args, unpickler)
        if cls.kind in ("call", "unread"):
            raise UnsupportedFormatError(f"{unpickler.where}: makes a {name} (NEWOBJ), which weightscope does not read")
        return super().new(cls, args, unpickler)

    def persistent(self, pid: Any, unpickler: Unpickler) -> _Storage:
        storage = _storage(pid, unpickler.where, self.pid_length)
        first = self.storages.setdefault(storage.key, storage)
        if self.pid_length == 6 and first != storage:
            # torch's legacy loader types a storage by its first persistent id; so must this reader.
            raise CorruptCheckpointError(
                f"{unpickler.where}: storage '{storage.key}' is named as {first} and {storage}"
            )
        return storage


_NOTHING: Any = object()  # what a maker returns for arguments it does not take


def _nothing(args: tuple[Any, ...], unpickler: Unpickler) -> Any:
    return _NOTHING


def _parameter(args: tuple[Any, ...], unpickler: Unpickler) -> Any:
    # Parameter(data, requires_grad=True); _rebuild_parameter(data, requires_grad, hooks[, state])
    valid = bool(args) and isinstance(args[0], _Tensor) and all(isinstance(flag, bool) for flag in args[1:2])
    return args[0] if valid else _NOTHING


def _ordered_dict(args: tuple[Any, ...], unpickler: Unpickler) -> Any:
    # Python 3 pickles OrderedDict() and sets its items; Python 2 passes [[key, value], ...]
    if args == ():
        return {}
    if len(args) == 1 and isinstance(args[0], list | tuple):
        return unpickler.dict_of(args[0])
    if len(args) == 1 and isinstance(args[0], dict):
        return unpickler.dict_of(list(args[0].items()))
    return _NOTHING


def _counter(args: tuple[Any, ...], unpickler: Unpickler) -> Any:
    if len(args) == 1 and isinstance(args[0], list | tuple):
        counts: dict[Any, int] = unpickler.dict_of([(item, 0) for item in args[0]])
        for item in args[0]:
            counts[item] += 1
        return counts
    return _ordered_dict(args, unpickler)


def _set(args: tuple[Any, ...], unpickler: Unpickler) -> Any:
    if args == ():
        return set()
    return unpickler.set_of(args[0]) if len(args) == 1 and isinstance(args[0], list | tuple) else _NOTHING


def _complex(args: tuple[Any, ...], unpickler: Unpickler) -> Any:
    numbers = len(args) in (1, 2) and all(type(arg) in (int, float) for arg in args)
    return complex(*args) if numbers else _NOTHING


def _bytearray(args: tuple[Any, ...], unpickler: Unpickler) -> Any:
    if args == ():
        return b""
    if len(args) == 1 and isinstance(args[0], bytes):
        return args[0]
    return _encode(args, unpickler)


def _encode(args: tuple[Any, ...], unpickler: Unpickler) -> Any:
    # How protocol 2 pickles bytes: _codecs.encode(text, "latin1"); the only codec torch.save uses.
    latin1 = len(args) == 2 and isinstance(args[0], str) and args[1] in ("latin1", "latin-1")
    if not latin1:
        return _NOTHING
    try:
        return args[0].encode("latin1")
    except UnicodeEncodeError:
        return _NOTHING


def _device(args: tuple[Any, ...], unpickler: Unpickler) -> Any:
    if len(args) == 1 and isinstance(args[0], str):
        return args[0]
    if len(args) == 2 and isinstance(args[0], str) and _is_int(args[1]):
        return f"{args[0]}:{args[1]}"
    return _NOTHING


def _from_type(args: tuple[Any, ...], unpickler: Unpickler) -> Any:
    # _rebuild_from_type_v2(func, new_type, args, state): a tensor (or Parameter) with Python
    # attributes; the attributes (state) hold no weights and are not applied.
    if len(args) != 4 or not isinstance(args[0], _Global) or not isinstance(args[2], tuple):
        return _NOTHING
    if not isinstance(args[1], _Global) or args[1].qualname not in ("torch.Tensor", "torch.nn.parameter.Parameter"):
        return _NOTHING
    return unpickler.allow.call(args[0], args[2], unpickler)


_MAKERS: dict[str, Callable[[tuple[Any, ...], Unpickler], Any]] = {
    "torch._utils._rebuild_parameter": lambda args, unpickler: (
        _parameter(args, unpickler) if len(args) == 3 else _NOTHING
    ),
    "torch._utils._rebuild_parameter_with_state": lambda args, unpickler: (
        _parameter(args, unpickler) if len(args) == 4 else _NOTHING
    ),
    "torch.nn.parameter.Parameter": lambda args, unpickler: _parameter(args, unpickler) if len(args) <= 2 else _NOTHING,
    "torch._tensor._rebuild_from_type_v2": _from_type,
    "collections.OrderedDict": _ordered_dict,
    "collections.Counter": _counter,
    "torch.Size": lambda args, unpickler: args[0] if len(args) == 1 and _ints(args[0]) else _NOTHING,
    "torch.device": _device,
    "_codecs.encode": _encode,
    "builtins.set": _set,
    "builtins.complex": _complex,
    "builtins.bytearray": _bytearray,
}


def _storage(pid: object, where: str, length: int = 5) -> _Storage:
    """The storage a persistent id names: ``('storage', class, key, location, numel)``, and in
    the legacy format a sixth item, the view metadata, which torch has written as None since 1.0."""
    if isinstance(pid, tuple) and len(pid) > 1 and isinstance(pid[1], _Global) and pid[1].kind == "unread":
        raise UnsupportedFormatError(
            f"{where}: a storage of {pid[1].qualname}: torch loads it, but weightscope does not read quantised tensors"
        )
    if isinstance(pid, tuple) and len(pid) == length == 6 and pid[5] is not None:
        raise UnsupportedFormatError(
            f"{where}: a legacy storage view ({_show(pid[5], 100)}); torch writes none since 1.0"
        )
    if not (
        isinstance(pid, tuple)
        and len(pid) == length
        and pid[0] == "storage"
        and isinstance(pid[1], _Global)
        and pid[1].kind == "storage"
        and isinstance(pid[2], str)
        and isinstance(pid[3], str)
        and _is_int(pid[4])
        and pid[4] >= 0
    ):
        raise CorruptCheckpointError(f"{where}: a persistent id that is not a storage: {_show(pid, 200)}")
    assert pid[1].element is not None
    return _Storage(pid[2], pid[1].element, pid[4])


def _rebuild_tensor(name: str, args: tuple[Any, ...], where: str) -> _Tensor:
    """``_rebuild_tensor(storage, offset, size, stride)``; ``_v2`` adds requires_grad,
    backward_hooks and optional metadata; ``_v3`` adds a dtype after the hooks."""
    lengths = {"_rebuild_tensor": (4,), "_rebuild_tensor_v2": (6, 7), "_rebuild_tensor_v3": (7, 8)}[name]
    storage, offset, shape, stride = args[:4] if len(args) >= 4 else (None,) * 4
    valid = (
        len(args) in lengths
        and isinstance(storage, _Storage)
        and _is_int(offset)
        and _ints(shape)
        and _ints(stride)
        and len(shape) == len(stride)
        and (len(args) == 4 or (isinstance(args[4], bool) and isinstance(args[5], dict)))
    )
    element = storage.element if isinstance(storage, _Storage) else ""
    if valid and name == "_rebuild_tensor_v3":
        dtype = args[6]
        valid = isinstance(dtype, _Global) and dtype.kind == "dtype"
        element = dtype.element if valid else element
    if not valid:
        raise CorruptCheckpointError(f"{where}: {name} called with arguments {_show(args, 200)}")
    return _Tensor(storage, element, offset, shape, stride)


class _Unpickler(Unpickler):
    """The unpickler under torch's allow-list (``pid_length``: 5 in a zip's pickle, 6 in the legacy format), or
    under ``allow``, a wider one (DeepSpeed's pickles)."""

    def __init__(
        self,
        data: bytes | mmap.mmap,
        where: str,
        *,
        scan: bool = False,
        start: int = 0,
        pid_length: int = 5,
        budget: Budget | None = None,
        allow: TorchAllowList | None = None,
    ) -> None:
        self.torch = allow or TorchAllowList(pid_length)
        super().__init__(data, where, self.torch, scan=scan, start=start, budget=budget)

    @property
    def storages(self) -> dict[str, _Storage]:
        """The storages the pickle's persistent ids named, by key."""
        return self.torch.storages
