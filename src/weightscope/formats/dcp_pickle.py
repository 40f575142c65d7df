"""What a DCP ``.metadata`` pickle names, as this reader rebuilds it: ``DcpAllowList`` (DCP's metadata classes as
inert records, ``torch.Size``, dtypes, layouts and paths) and the unpickler under it.

The pickle's layout, and the security model, are in ``weightscope.formats.dcp``'s docstring.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from weightscope.containers.allow_list import AllowList, Global, ints, show
from weightscope.containers.unpickler import Unpickler
from weightscope.errors import CorruptCheckpointError
from weightscope.formats.pytorch_pickle import TORCH_DTYPES

_METADATA_MODULE = "torch.distributed.checkpoint.metadata"
_CLASSES = (
    *[(_METADATA_MODULE, name) for name in ("Metadata", "TensorStorageMetadata", "BytesStorageMetadata")],
    *[(_METADATA_MODULE, name) for name in ("ChunkStorageMetadata", "TensorProperties", "MetadataIndex")],
    (_METADATA_MODULE, "StorageMeta"),
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch.distributed._shard.sharded_tensor.metadata", "TensorProperties"),  # where torch 2.0-2.1 kept it
)
_PATHS = [(module, name) for module in ("pathlib", "pathlib._local") for name in ("PosixPath", "WindowsPath", "Path")]
_CALLS = [("torch", "Size"), ("torch.serialization", "_get_layout"), (_METADATA_MODULE, "_MEM_FORMAT_ENCODING")]
MEMORY_FORMATS = ("contiguous_format", "channels_last", "preserve_format")  # _MEM_FORMAT_ENCODING's values 0, 1, 2


@dataclass(eq=False, repr=False)  # hashed by identity: a MetadataIndex is a dict key; nothing in the file chooses it
class _Record:
    """An instance of one of DCP's metadata classes, as inert attributes."""

    kind: str
    attributes: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:  # not its attributes': records nest as deep as the pickle makes them
        return f"{self.kind}({', '.join(map(str, self.attributes))})"

    def get(self, name: str, default: Any = None) -> Any:
        return self.attributes.get(name, default)


class DcpAllowList(AllowList):
    """DCP's metadata classes as records, ``torch.Size`` as tuples, dtypes, layouts and paths as names."""

    globals: ClassVar[dict[tuple[str, str], Global]] = {
        **{key: Global(*key, "class") for key in _CLASSES},
        **{key: Global(*key, "call") for key in _CALLS},
        **{key: Global(*key, "path") for key in _PATHS},
        **{("torch", name): Global("torch", name, "dtype", element) for name, element in TORCH_DTYPES.items()},
    }

    def call(self, function: Global, args: tuple[Any, ...], unpickler: Unpickler) -> Any:
        name = function.name
        if name == "Size" and len(args) == 1 and ints(args[0]):
            return args[0]
        if name == "_get_layout" and len(args) == 1 and isinstance(args[0], str):
            return args[0]
        if name == "_MEM_FORMAT_ENCODING" and len(args) == 1 and args[0] in range(len(MEMORY_FORMATS)):
            return MEMORY_FORMATS[args[0]]
        if function.kind == "path" and all(isinstance(part, str) for part in args):
            return "/".join(args)
        if function.kind == "class":  # called, not made by NEWOBJ: not how pickle makes a dataclass
            return super().call(function, args, unpickler)
        raise CorruptCheckpointError(f"{unpickler.where}: {function.qualname} called with arguments {show(args, 200)}")

    def new(self, cls: Global, args: tuple[Any, ...], unpickler: Unpickler) -> Any:
        if cls.kind == "class" and args == ():
            return _Record(cls.name)
        if cls.kind == "path":
            return self.call(cls, args, unpickler)
        return super().new(cls, args, unpickler)

    def build(self, target: Any, state: Any, unpickler: Unpickler) -> bool:
        if not isinstance(target, _Record):
            return super().build(target, state, unpickler)
        if target.kind == "TensorProperties" and isinstance(state, tuple) and len(state) == 5:
            names = ("dtype", "layout", "requires_grad", "memory_format", "pin_memory")
            state = dict(zip(names, state, strict=True))
        if not isinstance(state, dict) or not all(isinstance(key, str) for key in state):
            raise CorruptCheckpointError(f"{unpickler.where}: a {target.kind} given the state {show(state, 200)}")
        target.attributes.update(state)
        return True


class _MetadataUnpickler(Unpickler):
    """The unpickler of ``.metadata``: ``storage_data`` is keyed by ``MetadataIndex`` records."""

    def check_key(self, container: object, key: object) -> None:
        if not isinstance(key, _Record):  # hashed by identity: no collisions to craft
            super().check_key(container, key)
