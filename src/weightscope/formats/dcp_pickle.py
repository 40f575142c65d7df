"""What a DCP ``.metadata`` pickle names, as this reader rebuilds it: ``DcpAllowList`` (DCP's metadata classes as
inert records, ``torch.Size``, dtypes, layouts and paths), the unpickler under it, and ``_merged``: the one
``Metadata`` of the ranks' own ``__{rank}.metadata`` (saved without collectives).

The pickle's layout, and the security model, are in ``weightscope.formats.dcp``'s docstring.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from weightscope.containers.allow_list import AllowList, Global, ints, show
from weightscope.containers.unpickler import Unpickler
from weightscope.errors import CorruptCheckpointError
from weightscope.formats.pytorch_pickle import TORCH_DTYPES
from weightscope.sources import AnyPath

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


def _merged(records: list[Any], folder: AnyPath) -> _Record:
    """One ``Metadata`` of the ranks' own (each lists the chunks it wrote): each tensor's chunks gathered, a chunk or
    bytes entry several ranks saved (a replicated value: not deduplicated without collectives) taken from the first."""
    entries: dict[Any, Any] = {}
    paths: dict[Any, Any] = {}
    storage: dict[Any, Any] = {}  # keyed by records: every rank's kept; the reader takes the first rank's
    held_by: dict[Any, set[Any]] = {}  # each tensor's chunk offsets so far
    for rank, record in enumerate(records):
        mine = [
            record.get(key) if isinstance(record, _Record) else None for key in ("state_dict_metadata", "storage_data")
        ]
        planned = record.get("planner_data") or {} if isinstance(record, _Record) else None
        if not (isinstance(mine[0], dict) and isinstance(mine[1], dict) and isinstance(planned, dict)):
            raise CorruptCheckpointError(f"{folder}/__{rank}.metadata: not a DCP Metadata but {show(record, 100)}")
        paths |= {key: path for key, path in planned.items() if key not in paths}
        storage |= mine[1]
        for fqn, entry in mine[0].items():
            first = entries.setdefault(fqn, entry)
            chunks, more = (item.get("chunks") if isinstance(item, _Record) else None for item in (first, entry))
            if not (isinstance(chunks, list) and isinstance(more, list)):
                continue  # a bytes entry (the first rank's), or a malformed one the reader refuses
            if fqn not in held_by:  # the first rank's chunks
                held_by[fqn] = {place for chunk in chunks if ints(place := _offsets(chunk))}
            for chunk in more if first is not entry else []:
                place = _offsets(chunk)
                if ints(place) and place in held_by[fqn]:
                    continue  # saved by an earlier rank too
                chunks.append(chunk)
                if ints(place):
                    held_by[fqn].add(place)
    return _Record("Metadata", {"state_dict_metadata": entries, "planner_data": paths, "storage_data": storage})


def _offsets(chunk: Any) -> Any:
    return chunk.get("offsets") if isinstance(chunk, _Record) else None
