"""Model folders and sharded sets: a folder, an index, any one shard or a GGUF split, opened as one checkpoint.

What is opened (facts: huggingface_hub ``serialization/_base.py``, transformers ``modeling_utils.py``
``_get_resolved_checkpoint_files`` and ``utils/hub.py`` ``get_checkpoint_shard_files``, llama.cpp
``gguf-split``; restated in ``shared/formats/next-formats.md`` section 1):

- **An index**, ``<stem>.safetensors.index.json`` or ``<stem>.bin.index.json`` (a variant
  ``<stem>.safetensors.index.fp16.json``): a UTF-8 JSON object ``{"metadata": {...},
  "weight_map": {tensor: shard}}``. The index is the authority, as transformers loads: the
  tensors are its ``weight_map``'s names, in its order, each read from the shard it names
  (``model-00001-of-00005.safetensors``, ``pytorch_model-00001-of-00005.bin``, diffusers'
  ``diffusion_pytorch_model-…``, a variant ``model.fp16-00001-of-00006.safetensors``).
  ``metadata.total_size`` is the shards' storage bytes (informational: shared storage is
  counted once); other string values that name a stored tensor are huggingface_hub's
  record of a shared tensor it dropped (``"lm_head.weight": "embed.weight"``): aliases.
- **A shard** of such a set: the set, found through the index its name implies (``<stem>
  [.variant]-NNNNN-of-MMMMM.ext`` -> ``<stem>.ext.index[.variant].json``) or else the one
  index in its folder that names it. A shard with no index is just a file.
- **A GGUF split** ``<prefix>-NNNNN-of-MMMMM.gguf`` (any part): every part, each a complete
  GGUF file whose ``split.no`` (0-based) is its place, ``split.count`` the parts and
  ``split.tensors.count`` (in every part) the tensors of them all; the other metadata
  (architecture, tokenizer) is the first part's.
- **A folder**: the file transformers (or diffusers) would load, first that exists:
  ``model.safetensors``, ``model.safetensors.index.json``, ``pytorch_model.bin``,
  ``pytorch_model.bin.index.json`` (``diffusion_pytorch_model.*`` likewise) — safetensors is
  preferred over bin and a note says so; else one variant's (``model.fp16.safetensors``);
  else the folder's one weights file (or set). ``config.json`` beside it is read as JSON
  (never run: an ``auto_map`` naming remote code is reported): its facts are metadata
  ``config.<key>``. Where ``tie_word_embeddings`` is not false and ``lm_head.weight`` is not
  stored (transformers ties it at load), metadata ``tied.lm_head.weight`` names the input
  embeddings it is tied to, and it reads under its name as that array (an alias: not listed).

Shards open lazily: opening reads the index (and checks every shard it names is there);
a shard's header is read the first time one of its tensors (or every tensor, for a
listing) is asked for; ``verify`` opens and checks every shard. Every shard closes with
the checkpoint.

A reader must refuse: an index that is not a JSON object with a ``weight_map`` of strings,
or names a tensor twice; a shard path that is absolute or climbs out of the folder
(``RefusedError``, as ONNX external data: ``weightscope.confine``), or ends otherwise than
the index (a ``.bin`` in a safetensors set); a shard the index names that is missing
(``CheckpointNotFoundError`` naming it); a shard that lacks a tensor the index puts in it
(found when that tensor, or every tensor, is asked for: a shard holding as many tensors as
the index puts in it is taken as holding them, each name checked as it is looked up),
or holds one the index puts in another; GGUF parts missing, out of place (``split.no``), of
another count, holding a tensor twice, or fewer or more tensors than ``split.tensors.count``.
A folder with several unrelated weight files (or variants) is a ``UsageError`` listing them.
Notes, not errors: shards in the folder the index does not name, a ``total_size`` other
than the shards' bytes, tensors a shard holds that the index does not list (left out).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from itertools import compress, repeat
from operator import attrgetter, getitem
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from weightscope.checkpoint import Checkpoint, Extent, StridedView, TensorInfo
from weightscope.confine import confined
from weightscope.errors import CheckpointNotFoundError, CorruptCheckpointError, WeightscopeError, kept
from weightscope.formats import FORMATS, model_file_names, open_checkpoint
from weightscope.formats._folder_choice import INDEX, SHARD, SPLIT, choose_weights, index_of, read_json
from weightscope.infos import collection_paused
from weightscope.layers import Layer, TensorRole
from weightscope.sources import AnyPath, as_path, local_path

if TYPE_CHECKING:
    from weightscope.remote import RemotePath
    from weightscope.slicing import TensorSlice

# The keys of config.json kept as metadata ``config.<key>`` (the names vary by model family).
_CONFIG_KEYS = (
    "architectures",
    "model_type",
    "hidden_size",
    "n_embd",
    "d_model",
    "num_hidden_layers",
    "n_layer",
    "num_layers",
    "num_attention_heads",
    "n_head",
    "num_heads",
    "num_key_value_heads",
    "num_kv_heads",  # Falcon's; it and the three below tell weightscope.spectra how a fused QKV is laid out
    "head_dim",
    "multi_query",
    "new_decoder_architecture",
    "intermediate_size",
    "vocab_size",
    "dtype",
    "torch_dtype",
    "tie_word_embeddings",
    "auto_map",
    "quantization_config",  # weightscope.quant reads the scheme's settings from it
)
_TIED_HEAD = "lm_head.weight"
_NBYTES = attrgetter("nbytes")
# The model classes with an ``lm_head`` transformers ties to the input embeddings (a base model has none).
_LM_HEAD = re.compile(r"(ForCausalLM|LMHeadModel|ForConditionalGeneration)$")
# The input embeddings an LM head is tied to, by the names transformers' models give them, most likely first.
_EMBEDDING_NAMES = ("embed_tokens", "wte", "word_embeddings", "shared", "embed_in", "tok_embeddings")
_EMBEDDINGS = re.compile(rf"(^|\.)({'|'.join(_EMBEDDING_NAMES)})\.weight$")
# The endings of their weights' names: ``str.endswith`` mapped over the names is a C call per name, where the pattern's
# search is ten times that (100,000 names), a methodcaller's twice.
_EMBEDDING_ENDINGS = tuple(f"{name}.weight" for name in _EMBEDDING_NAMES)
# Where transformers' models keep them (Llama, Qwen; GPT-2, Bloom; GPT-NeoX; T5, BART): looked up before a scan.
_LIKELY_EMBEDDINGS = tuple(
    f"{prefix}{name}.weight" for prefix in ("", "model.", "transformer.", "gpt_neox.") for name in _EMBEDDING_NAMES
)


class ModelFolderCheckpoint(Checkpoint):
    """A model folder, a sharded set (by its index or any shard) or a GGUF split, read through each shard's reader."""

    format = "sharded"

    def __init__(self, path: str | os.PathLike[str] | RemotePath, *, verify: bool = True) -> None:
        super().__init__(as_path(path))
        self.verify_checksums = verify
        self._shards: dict[str, AnyPath] = {}  # each shard, by its name in the index, -> its path
        self._opened: dict[str, Checkpoint] = {}
        self._where: dict[str, str] = {}  # tensor -> the name of its shard, in the index's order
        self._counts: Counter[str] | None = None  # shard name -> how many tensors the index puts in it, once asked
        self._taken: dict[str, Mapping[str, TensorInfo]] = {}  # shard name -> the infos of its tensors, once opened
        self._shard_format: str | None = None  # the shards' format, None: each sniffed
        self._index: AnyPath | None = None
        self._total_size: int | None = None
        self._complete = False
        self._in_order: list[TensorInfo] | None = None  # every tensor's info in the index's order, once complete
        try:
            folder = self.path
            if self.path.is_dir():
                self.format = "model-folder"
                chosen, notes = choose_weights(self.path, FORMATS.file_suffixes(), model_file_names(), _claimed)
                self._notes += notes
            elif not self.path.is_file():
                raise CheckpointNotFoundError(f"{self.path}: no such file or folder")
            else:
                chosen, folder = self.path, self.path.parent
            self._open_chosen(chosen)
            self._read_config(folder)
        except BaseException:
            self._close()
            raise

    # -- opening -------------------------------------------------------------------------
    def _open_chosen(self, file: AnyPath) -> None:
        if INDEX.match(file.name):
            self._load_index(file)
        elif SPLIT.match(file.name):
            self._load_split(file)
        elif SHARD.match(file.name) and (index := index_of(file)) is not None:
            self._load_index(index)
        else:  # one file: the set of one
            self._shards[file.name] = file
            ckpt = open_checkpoint(file, verify=self.verify_checksums)
            self._add_opened(file.name, ckpt)
            self._metadata.update(ckpt.metadata)
            self._add_tensors(file.name, ckpt)
            self._complete = True

    def _load_index(self, index: AnyPath) -> None:
        self._index = index
        document, weight_map = _read_index(index)
        found = INDEX.match(index.name)
        self._shard_format = shard_format(found["ext"]) if found else None
        self._shards = _shard_paths(index, weight_map)
        self._where = weight_map
        metadata = document.get("metadata", {})
        for key, value in metadata.items() if isinstance(metadata, dict) else ():
            self._metadata[str(key)] = value if isinstance(value, str) else json.dumps(value)
            if key == "total_size" and isinstance(value, int | str) and str(value).isdigit():
                self._total_size = int(value)
            elif isinstance(value, str) and value in weight_map and key not in weight_map:
                self._aliases[key] = value  # huggingface_hub's record of a shared tensor it dropped
        self._note_unlisted(index, found)

    def _note_unlisted(self, index: AnyPath, found: re.Match[str] | None) -> None:
        """A note naming the shards of this set's name in the folder that the index does not name."""
        if found is None:
            return
        variant = f".{found['variant']}" if found["variant"] else ""
        pattern = f"{found['stem']}{variant}-*-of-*{found['ext']}"
        unlisted = sorted(file.name for file in index.parent.glob(pattern) if file.name not in self._shards)
        if unlisted:
            self._notes.append(
                f"{index.parent}: {len(unlisted)} shard(s) the index does not name, not read: {', '.join(unlisted)}"
            )

    def _load_split(self, file: AnyPath) -> None:
        """Every part of the GGUF split ``file`` is one of, checked as llama.cpp's loader checks them."""
        found = SPLIT.match(file.name)
        assert found is not None
        count = int(found["count"])
        self._shard_format = "gguf"
        for number in range(1, count + 1):
            part = file.with_name(f"{found['prefix']}-{number:05d}-of-{count:05d}.gguf")
            if not part.is_file():
                raise CheckpointNotFoundError(f"{file}: part {number} of the split is missing (no {part})")
            self._shards[part.name] = part
            ckpt = open_checkpoint(part, format=self._shard_format, verify=self.verify_checksums)
            self._add_opened(part.name, ckpt)
            keys = ckpt.metadata
            if keys.get("split.no") != str(number - 1) or keys.get("split.count") != str(count):
                raise CorruptCheckpointError(
                    f"{part}: split.no {keys.get('split.no')!r} of split.count {keys.get('split.count')!r}; "
                    f"its name makes it part {number - 1} (0-based) of {count}"
                )
            self._add_tensors(part.name, ckpt)
            if number == 1:
                self._metadata.update(keys)
        declared = self._metadata.get("split.tensors.count")
        if declared != str(len(self._where)):
            raise CorruptCheckpointError(
                f"{file}: split.tensors.count is {declared!r}, but the {count} parts hold {len(self._where)} tensors"
            )
        self._complete = True

    def _add_tensors(self, shard: str, ckpt: Checkpoint) -> None:
        """Every tensor of ``ckpt`` (shard ``shard``, opened whole: there is no index), in its order."""
        for name in ckpt:
            if name in self._where:
                raise CorruptCheckpointError(f"{self._shards[shard]}: tensor '{name}' is in {self._where[name]} too")
            self._where[name] = shard
            self._infos[name] = ckpt.info(name)

    def _add_opened(self, shard: str, ckpt: Checkpoint) -> None:
        self._opened[shard] = ckpt
        self.checksums = ckpt.checksums

    def _shard(self, shard: str) -> Checkpoint:
        """The reader of ``shard``, opened (and checked against the index) on first use."""
        ckpt = self._opened.get(shard)
        if ckpt is not None:
            return ckpt
        ckpt = open_checkpoint(self._shards[shard], format=self._shard_format, verify=self.verify_checksums)
        try:
            self._take(shard, ckpt)
        except BaseException:
            ckpt.close()
            raise
        self._opened[shard] = ckpt
        self.checksums = ckpt.checksums
        return ckpt

    def _take(self, shard: str, ckpt: Checkpoint) -> None:
        """The infos of the tensors the index puts in ``shard``, from its reader ``ckpt``, checked against it."""
        infos = ckpt.by_name()  # a reader's infos by name, in its order
        if self._counts is None:
            self._counts = Counter(self._where.values())
        if self._counts[shard] == len(infos):
            # As many tensors as the index puts in it: the same ones unless one it lists is missing, which looking
            # its names up finds (``info``, ``_complete_infos``) and ``_check_names`` then names.
            self._taken[shard] = infos
            return
        self._taken[shard] = self._check_names(shard, infos)

    def _check_names(self, shard: str, infos: Mapping[str, TensorInfo]) -> dict[str, TensorInfo]:
        """The infos of the tensors the index puts in ``shard`` (which holds ``infos``): an error naming one it
        lists that the shard lacks, or one the shard holds that the index puts in another; a note of the others."""
        where = self._shards[shard]
        listed = [name for name, other in self._where.items() if other == shard]
        missing = [name for name in listed if name not in infos]
        if missing:
            raise CorruptCheckpointError(
                f"{where}: holds no tensor '{missing[0]}', which the index {self._index} puts in it"
                + (f" ({len(missing)} such tensors)" if len(missing) > 1 else "")
            )
        unlisted = []
        for name in infos:
            other = self._where.get(name)
            if other is None:
                unlisted.append(name)
            elif other != shard:
                raise CorruptCheckpointError(
                    f"{where}: holds tensor '{name}', which the index {self._index} puts in {other}: "
                    "the same tensor in two shards"
                )
        if unlisted:
            self._notes.append(
                f"{where}: {len(unlisted)} tensor(s) the index does not list, left out as transformers leaves them: "
                + ", ".join(unlisted[:5])
            )
        return {name: infos[name] for name in listed}

    def unopened_parts(self) -> int:
        return 0 if self._complete else len(self._shards.keys() - self._opened.keys())

    def open_parts(self, advance: Callable[[int, int], None]) -> None:
        self._complete_infos(advance)

    def _complete_infos(self, advance: Callable[[int, int], None] | None = None) -> None:
        """Open every shard (headers only), so that every tensor's info is known, in the index's order;
        ``advance(1, 0)`` told of each shard opened."""
        if self._complete:
            return
        with collection_paused():  # 100,000 infos of 200 shards
            for shard in self._shards:
                if shard not in self._opened:
                    self._shard(shard)
                    if advance is not None:
                        advance(1, 0)
        # Each tensor's info from its shard's, in the index's order: C loops, no shared dict updated then rebuilt.
        shard_infos = map(self._taken.__getitem__, self._where.values())
        try:
            found = list(map(getitem, shard_infos, self._where))
        except KeyError:  # a shard lacks a tensor the index puts in it: which, and where
            for shard, infos in self._taken.items():
                self._check_names(shard, infos)
            raise
        self._in_order = found  # ``_infos`` made of them when first asked for: ``infos()`` lists them as they are
        self._complete = True
        stored = sum(map(_NBYTES, found))
        if self._total_size is not None and self._total_size != stored:
            self._notes.append(
                f"{self._index}: total_size says {self._total_size:,} bytes; the tensors it lists take {stored:,}"
            )

    # -- config.json ---------------------------------------------------------------------
    def _read_config(self, folder: AnyPath) -> None:
        config = folder / "config.json"
        if not config.is_file():
            return
        try:
            document = read_json(config, "config.json")
        except WeightscopeError as error:
            self._notes.append(f"config.json not read: {error}")
            return
        if not isinstance(document, dict):
            self._notes.append(f"{config}: not a JSON object; not read")
            return
        for key in _CONFIG_KEYS:
            if key in document:
                value = document[key]
                shown = ", ".join(map(str, value)) if key == "architectures" and isinstance(value, list) else value
                self._metadata[f"config.{key}"] = shown if isinstance(shown, str) else json.dumps(shown)
        if "auto_map" in document:
            self._notes.append(
                f"{config}: auto_map names custom code ({self._metadata['config.auto_map']}), which "
                "transformers runs only with trust_remote_code; weightscope runs nothing"
            )
        heads = [
            name for name in document.get("architectures") or () if isinstance(name, str) and _LM_HEAD.search(name)
        ]
        if heads and document.get("tie_word_embeddings", True) is not False:  # True: PretrainedConfig's default
            self._tie_head()

    def _tie_head(self) -> None:
        """``lm_head.weight`` as an alias of the input embeddings, where it is not stored (transformers ties it)."""
        if _TIED_HEAD in self._where or _TIED_HEAD in self._aliases:
            return
        sources = [name for name in _LIKELY_EMBEDDINGS if name in self._where] or [
            name
            for name in compress(self._where, map(str.endswith, self._where, repeat(_EMBEDDING_ENDINGS)))
            if _EMBEDDINGS.search(name)
        ]
        if not sources:
            return
        source = min(sources, key=lambda name: (name.count("."), name))  # model.embed_tokens before deeper ones
        self._aliases[_TIED_HEAD] = source
        self._metadata[f"tied.{_TIED_HEAD}"] = source  # what ls shows: reported as metadata, not a note every time

    # -- the mapping ---------------------------------------------------------------------
    def _located(self, name: str) -> tuple[Checkpoint, str, str]:
        """The reader of the shard that holds tensor ``name``, that shard and the name it has there: checked to
        be there (``_take`` took a shard's names on trust where their count was the index's)."""
        actual = name if name in self._where else self._aliases.get(name, "")
        shard = self._where.get(actual)
        if shard is None:
            raise self._not_found(name)
        ckpt = self._shard(shard)
        taken = self._taken.get(shard)
        if taken is not None and actual not in taken:
            self._check_names(shard, taken)  # which raises: the index puts it there
        return ckpt, shard, actual

    def info(self, name: str) -> TensorInfo:
        _, shard, actual = self._located(name)
        return self._taken[shard][actual] if shard in self._taken else self._infos[actual]

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, name: object) -> bool:
        return name in self._where or name in self._aliases

    def infos(self) -> Iterator[TensorInfo]:
        self._complete_infos()
        return iter(self._infos.values() if self._in_order is None else self._in_order)

    @property
    def _infos(self) -> dict[str, TensorInfo]:
        """Every tensor's info by name: once every shard is read, in the index's order, made when first asked for
        (listing them needs no map: 100,000 in 10 ms); before, those of the files read whole (no index)."""
        if self._in_order is not None:
            # A copy of the index (its table copied whole: no resizing as it grows), each value then set in place.
            ordered = cast("dict[str, TensorInfo]", self._where.copy())
            ordered.update(zip(self._where, self._in_order, strict=True))
            self._by_name, self._in_order = ordered, None
        return self._by_name

    @_infos.setter
    def _infos(self, infos: Mapping[str, TensorInfo]) -> None:  # (the empty index ``Checkpoint`` starts with)
        self._by_name = dict(infos)  # a dict it fills as shards open, never a reader's InfoColumns

    def layers(self) -> dict[str, Layer]:
        self._complete_infos()
        return super().layers()

    def role(self, name: str) -> TensorRole:
        ckpt, _, actual = self._located(name)
        return ckpt.role(actual)

    def view(self, name: str) -> StridedView | None:
        ckpt, _, actual = self._located(name)
        return ckpt.view(actual)

    def slice(self, name: str) -> TensorSlice:
        ckpt, _, actual = self._located(name)
        return ckpt.slice(actual)

    def _extent(self, info: TensorInfo) -> Extent | None:
        return self._shard(self._where[info.name]).extent(info.name)

    def _read(self, info: TensorInfo) -> np.ndarray:
        return self._shard(self._where[info.name])[info.name]

    @property
    def files(self) -> list[AnyPath]:
        """The files the weights are read from: each shard (not the index or config.json)."""
        return list(self._shards.values())

    def verify(self, advance: Callable[[int, int], None] | None = None) -> list[WeightscopeError]:
        """Every shard opened, checked against the index, and verified; the problems found, if any."""
        problems: list[WeightscopeError] = []
        for shard in self._shards:
            try:
                problems += self._shard(shard).verify(advance)
            except WeightscopeError as error:
                problems.append(kept(error))
        if not problems:
            self._complete_infos()
        return problems

    def checked_files(self) -> list[tuple[AnyPath, str, str]]:
        """Each shard opened so far (all of them once verified), with its format and checksums."""
        return [(self._shards[shard], ckpt.format, ckpt.checksums) for shard, ckpt in self._opened.items()]

    def _close(self) -> None:
        # Kept, closed: what their indexes say (views, roles) is still answered after closing, as a
        # file's is, instead of each shard being opened again (and left open) to answer it.
        for ckpt in self._opened.values():
            ckpt.close()


def _read_index(index: AnyPath) -> tuple[dict[str, Any], dict[str, str]]:
    """The index's JSON object and its weight map, which must map names to strings."""
    document = read_json(index, "the index", strings="weight_map")
    weight_map = document.get("weight_map") if isinstance(document, dict) else None
    if not isinstance(weight_map, dict) or not set(map(type, weight_map.values())) <= {str}:  # JSON's are exact
        raise CorruptCheckpointError(f"{index}: not an index: no 'weight_map' object of tensor names to shards")
    return document, weight_map


def _shard_paths(index: AnyPath, weight_map: dict[str, str]) -> dict[str, AnyPath]:
    """Each shard the index names, in the order it first names them, -> its path: confined to the index's folder,
    of the index's ending, and there."""
    found = INDEX.match(index.name)
    ending = found["ext"] if found else None
    folder = index.parent.resolve()  # the index's folder, not its link's (a Hugging Face cache's blobs/)
    blobs = _cache_blobs(folder)
    paths: dict[str, AnyPath] = {}
    for shard in dict.fromkeys(weight_map.values()):
        confined(folder, shard, str(index), "shard path", also=blobs)
        if ending and not shard.endswith(ending):
            raise CorruptCheckpointError(f"{index}: shard '{shard}' does not end {ending}, as its index does")
        file = index.parent / shard  # as the user named the folder, in messages and infos
        if not file.is_file():
            raise CheckpointNotFoundError(f"{index}: shard '{shard}' is missing (no {file})")
        paths[shard] = file
    return paths


def weight_files(path: AnyPath) -> list[AnyPath]:
    """The files the weights at ``path`` are in: a folder's (the one chosen as ``ModelFolderCheckpoint`` chooses
    it), a set's shards (by its index, or any shard), a GGUF split's parts, else ``path`` itself; found from names
    and the index alone, nothing else read (what ``weightscope scan`` scans)."""
    chosen = choose_weights(path, FORMATS.file_suffixes(), model_file_names(), _claimed)[0] if path.is_dir() else path
    if SHARD.match(chosen.name) and (index := index_of(chosen)) is not None:
        chosen = index
    if INDEX.match(chosen.name):
        return list(_shard_paths(chosen, _read_index(chosen)[1]).values())
    if found := SPLIT.match(chosen.name):
        count = int(found["count"])
        return [
            chosen.with_name(f"{found['prefix']}-{number:05d}-of-{count:05d}.gguf") for number in range(1, count + 1)
        ]
    return [chosen]


def _cache_blobs(folder: AnyPath) -> Path | None:
    """The ``blobs/`` folder of the Hugging Face cache ``folder`` is a snapshot (or a subfolder) of, if it is one:
    ``models--org--name/snapshots/<revision>/`` holds links to ``models--org--name/blobs/<hash>``."""
    local = local_path(folder)
    if local is None:
        return None
    for parent in local.parents:
        if parent.name == "snapshots":
            blobs = parent.parent / "blobs"
            return blobs if blobs.is_dir() else None
    return None


def _own(target: str) -> bool:
    """Whether a registry entry's reader ``target`` is this module's (the model-folder and sharded entries)."""
    return target == f"{__name__}:{ModelFolderCheckpoint.__name__}"


def _claimed(file: AnyPath) -> bool:
    """Whether a format other than this module's claims ``file`` by its content (or name, where that decides)."""
    return any(entry.sniff(file) for entry in FORMATS.values() if not _own(entry.target))


def shard_format(ending: str) -> str:
    """The format of a set's shards by their ending (``.bin``: PyTorch's): the first registered that claims it."""
    return next(entry.name for entry in FORMATS.values() if ending in entry.suffixes and not _own(entry.target))
