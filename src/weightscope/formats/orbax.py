"""Orbax (JAX) checkpoints, read without JAX or tensorstore: an item folder, a step of a ``CheckpointManager``, or
the manager's folder of steps (its newest step; ``--step`` and ``history`` pick and list the others).

An item (``default/`` of a ``StandardSave``, a named item, or a ``Checkpointer``'s folder itself) holds
``_METADATA``, the tree Orbax saved: for each leaf its key path and value type. Its arrays are zarr arrays
(``weightscope.containers.zarr``) named by the keys joined with ``.`` (``params.Dense_0.kernel``), stored in an
OCDBT database (``manifest.ocdbt``, or ``ocdbt.process_*/`` when the merge did not happen:
``weightscope.containers.ocdbt``) or, written with ``use_ocdbt=False``, in a folder per array. Tensors are named
by the key path joined with ``/`` (``params/Dense_0/kernel``, a list's items by index). The leaves under an
optax state (a top-level ``opt_state``) are optimizer state, attached to the parameter whose key path they end
with (``opt_state/0/mu/params/Dense_0/kernel`` is slot ``mu`` of ``params/Dense_0/kernel``). Not read: string
leaves (``_strings.json``), the pre-2023 layout (a msgpack ``checkpoint`` file with ``PLACEHOLDER://`` leaves),
numbered OCDBT manifests (multi-host commits), and checkpoints at a URL.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from weightscope.checkpoint import FolderCheckpoint, Index, TensorInfo
from weightscope.confine import confined
from weightscope.containers import zarr
from weightscope.containers.allow_list import ScanReport, nothing_named
from weightscope.containers.ocdbt import MANIFEST, Database, open_databases
from weightscope.errors import CheckpointNotFoundError, CorruptCheckpointError
from weightscope.formats._folder_choice import read_json
from weightscope.layers import jax_tree_roles
from weightscope.limits import Budget, Limits
from weightscope.sources import AnyPath, local_path

TREE = "_METADATA"
STEP = "_CHECKPOINT_METADATA"
_TMP = ".orbax-checkpoint-tmp"
_STEP_NAME = re.compile(r"(?:.*_)?(\d+)")
_ARRAY_TYPES = ("jax.Array", "np.ndarray", "scalar")
_META = (zarr.METADATA_V2, zarr.METADATA_V3)


def is_item(path: Path) -> bool:
    """Whether ``path`` is an Orbax item: its tree metadata beside an OCDBT database or zarr folders."""
    if not (path / TREE).is_file():
        return False
    return (path / MANIFEST).is_file() or any(path.glob("ocdbt.process_*")) or any(path.glob(f"*/{zarr.METADATA_V2}"))


def is_step(path: Path) -> bool:
    """Whether ``path`` is one checkpoint: an item, or a manager's step folder (``_CHECKPOINT_METADATA``)."""
    return path.is_dir() and ((path / STEP).is_file() or is_item(path))


def steps(path: Path) -> list[tuple[int, Path]]:
    """A ``CheckpointManager`` folder's finished steps, oldest first (unfinished ``*.orbax-checkpoint-tmp*`` left
    out); none for any other folder."""
    if not path.is_dir() or is_step(path):
        return []
    found = []
    for child in path.iterdir():
        match = _STEP_NAME.fullmatch(child.name)
        if match and _TMP not in child.name and is_step(child):
            found.append((int(match[1]), child))
    return sorted(found)


def sniff(path: AnyPath, entry: object) -> bool:
    local = local_path(path)
    return local is not None and (is_step(local) or bool(steps(local)))


class _Array(NamedTuple):
    meta: zarr.ZarrArray
    read: zarr.ChunkReader


def _tree(item: Path, document: dict[str, Any]) -> list[tuple[list[str], str]]:
    """Each leaf of an item's ``_METADATA``: its key path and value type, in the file's order."""
    tree = document.get("tree_metadata")
    if not isinstance(tree, dict):
        raise CorruptCheckpointError(f"{item / TREE}: no 'tree_metadata' object")
    leaves = []
    for text, leaf in tree.items():
        keys = leaf.get("key_metadata") if isinstance(leaf, dict) else None
        value = leaf.get("value_metadata") if isinstance(leaf, dict) else None
        if not isinstance(keys, list) or not isinstance(value, dict) or not keys:
            raise CorruptCheckpointError(f"{item / TREE}: leaf {text} has no key_metadata or value_metadata")
        path = [key.get("key") if isinstance(key, dict) else None for key in keys]
        if not all(isinstance(key, str | int) for key in path):
            raise CorruptCheckpointError(f"{item / TREE}: leaf {text} has a key that is no string")
        leaves.append(([str(key) for key in path], str(value.get("value_type"))))
    return leaves


class OrbaxCheckpoint(FolderCheckpoint):
    """An Orbax checkpoint: every array of its items, named by their key paths (see the module's text)."""

    format = "orbax"
    checksums = "crc32c"  # OCDBT's nodes and manifests (at open), zarr3 shard indices
    concurrent_reads = True  # the tree is read at open; a chunk's zstd frame decodes off the GIL

    def _prepare(self) -> None:
        self._databases: list[Database] = []
        self._arrays: dict[str, _Array] = {}

    def _load(self) -> Index:
        folder = local_path(self.path)
        if folder is None or not folder.is_dir():
            raise CheckpointNotFoundError(f"{self.path}: not an Orbax checkpoint folder")
        folder = folder.resolve()
        found = steps(folder)
        if found:
            step, folder = found[-1]
            listed = ", ".join(str(number) for number, _ in found)
            self._notes.append(f"{self.path}: the newest of steps {listed}, step {step}; --step picks another")
        items = [("", folder)] if is_item(folder) else [(child.name, child) for child in sorted(folder.iterdir())
                                                         if child.is_dir() and is_item(child)]  # fmt: skip
        if not items:
            raise CheckpointNotFoundError(f"{folder}: an Orbax step with no item (no {TREE} beside its arrays)")
        if len(items) == 1:
            items = [("", items[0][1])]
        self._storage: dict[str, str] = {}
        self._limits = Limits.for_size(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()))
        budget = Budget(self._limits, folder)
        index = Index()
        for prefix, item in items:
            self._load_item(index, prefix, item, budget)
        index.roles = jax_tree_roles(list(index.infos))
        index.metadata = self._step_metadata(folder) | self._storage
        return index

    def _load_item(self, index: Index, prefix: str, item: Path, budget: Budget) -> None:
        document = read_json(item / TREE, "Orbax's tree metadata")
        if not isinstance(document, dict):
            raise CorruptCheckpointError(f"{item / TREE}: no JSON object")
        ocdbt = document.get("use_ocdbt", True)
        stored: dict[str, tuple[Database, str]] = {}
        if ocdbt:
            for database in open_databases(item, budget):
                self._databases.append(database)
                stored.update((key, (database, key)) for key in database.values)
        chunk_bytes = self._chunk_bytes(stored)
        self._describe(prefix, item, document, stored)
        skipped = []
        for keys, value_type in _tree(item, document):
            name = "/".join([prefix, *keys] if prefix else keys)
            param = ".".join(keys)
            if value_type not in _ARRAY_TYPES:
                if value_type != "None":
                    skipped.append(f"{name} ({value_type})")
                continue
            if name in index.infos:
                raise CorruptCheckpointError(f"{item / TREE}: two leaves are named '{name}'")
            read = self._ocdbt_reader(stored, param) if ocdbt else self._folder_reader(item, param)
            text = read(zarr.METADATA_V3 if document.get("use_zarr3") else zarr.METADATA_V2)
            if text is None:
                raise CorruptCheckpointError(f"{item}: array '{param}' has no zarr metadata")
            meta = zarr.parse(text, f"{item}: array '{param}'")
            self._arrays[name] = _Array(meta, read)
            if ocdbt:
                file, offset, nbytes = chunk_bytes.get(param, (str(item / MANIFEST), 0, 0))
            else:
                file, offset = str(item / param), 0
                chunks = [path for path in (item / param).rglob("*") if path.is_file() and path.name not in _META]
                nbytes = sum(path.stat().st_size for path in chunks)
            index.infos[name] = TensorInfo(name, meta.dtype.newbyteorder("="), meta.shape, nbytes, meta.type_name,
                                           file, offset, param)  # fmt: skip
        if skipped:
            self._notes.append(f"{item}: not read: {', '.join(skipped)}")

    def _describe(
        self, prefix: str, item: Path, document: dict[str, Any], stored: dict[str, tuple[Database, str]]
    ) -> None:
        """What ``summary``'s sharding facts say of an item: its storage, databases, chunks and data files."""
        label = f"orbax.{prefix}." if prefix else "orbax."
        layout = "zarr3" if document.get("use_zarr3") else "zarr v2"
        databases = [database for database in self._databases if any(found[0] is database for found in
                                                                      stored.values())]  # fmt: skip
        if not document.get("use_ocdbt", True):
            self._storage[f"{label}storage"] = f"{layout}, a folder per array (no OCDBT)"
            return
        names = [str(database.manifest.relative_to(item)) for database in databases]
        processes = len([path for path in item.glob("ocdbt.process_*") if path.is_dir()])
        self._storage[f"{label}storage"] = (
            f"OCDBT, {layout}: written by {processes} process{'es' * (processes != 1)}, read from "
            f"{', '.join(names)}; {sum(1 for key in stored if key.rpartition('/')[2] not in _META)} chunks"
        )
        files = {str(file): size for database in databases for file, size in database.files.items()}
        if files:
            shown = sorted(files.items(), key=lambda pair: -pair[1])
            listed = ", ".join(f"{file} {size:,} B" for file, size in shown[:8])
            self._storage[f"{label}data_files"] = f"{len(files)}: {listed}" + (", ..." if len(files) > 8 else "")

    @staticmethod
    def _ocdbt_reader(stored: dict[str, tuple[Database, str]], param: str) -> zarr.ChunkReader:
        def read(key: str) -> bytes | memoryview | None:
            found = stored.get(f"{param}/{key}")
            return None if found is None else found[0].read(found[1])

        return read

    @staticmethod
    def _folder_reader(item: Path, param: str) -> zarr.ChunkReader:
        def read(key: str) -> bytes | memoryview | None:
            path = confined(item, f"{param}/{key}", str(item / TREE), "array chunk")
            local = local_path(path)
            return local.read_bytes() if local is not None and local.is_file() else None

        return read

    @staticmethod
    def _chunk_bytes(stored: dict[str, tuple[Database, str]]) -> dict[str, tuple[str, int, int]]:
        """Per array (its param name): the file holding its first chunk stored out of line (else the manifest), the
        offset there, and the bytes its chunks take."""
        found: dict[str, tuple[str, int, int]] = {}
        for key, (database, _) in stored.items():
            param, _, chunk = key.partition("/")
            if chunk in _META:
                continue
            value = database.values[key]
            file, offset, nbytes = found.get(param, (str(database.manifest), 0, 0))
            if value.file is not None and file == str(database.manifest):
                file, offset = str(value.file), value.offset
            found[param] = (file, offset, nbytes + value.length)
        return found

    def _step_metadata(self, folder: Path) -> dict[str, str]:
        if not (folder / STEP).is_file():
            return {}
        document = read_json(folder / STEP, "Orbax's checkpoint metadata")
        if not isinstance(document, dict):
            return {}
        found = {key: json.dumps(value) for key, value in document.items() if key in ("metrics", "custom_metadata")}
        found.update((key, str(value)) for key, value in document.items() if key.endswith("timestamp_nsecs"))
        return {key: value for key, value in found.items() if value not in ("{}", "null")}

    def _read(self, info: TensorInfo) -> np.ndarray:
        array = self._arrays[info.name]
        self._limits.check_memory(info.dtype.itemsize * info.size, f"tensor '{info.name}'", self.path)
        return zarr.assemble(array.meta, array.read, f"{self.path}: tensor '{info.name}'")

    def _close(self) -> None:
        for database in self._databases:
            database.close()


def scan(path: str | os.PathLike[str]) -> ScanReport:
    """``weightscope scan``: an Orbax checkpoint is arrays and JSON, and names no code; nothing is listed, the
    verdict is what opening it raises."""
    return nothing_named(OrbaxCheckpoint, path)
