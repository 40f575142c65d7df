"""Which file of a model folder holds its weights, as transformers and diffusers choose; the names of sets.

Imports no reader: the registry's sniffers use it (``weightscope.formats.model_folder`` is the reader).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from weightscope.errors import CheckpointNotFoundError, CorruptCheckpointError, UsageError, WeightscopeError
from weightscope.limits import Limits, json_marks, marks_cost
from weightscope.sources import AnyPath, open_source

try:  # the C parser of an index's weight map (optional: built where the install had a C compiler)
    from weightscope import _headers
except ImportError:  # an install without a C compiler: json's path
    _headers = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from weightscope.shards import ShardNames

# ``model.safetensors.index.json``, ``pytorch_model.bin.index.json``, ``model.safetensors.index.fp16.json``.
INDEX = re.compile(r"^(?P<stem>.+?)(?P<ext>\.safetensors|\.bin|\.msgpack)\.index(?:\.(?P<variant>[^.]+))?\.json$")
# ``model-00001-of-00005.safetensors``, ``model.fp16-00001-of-00006.safetensors``, ``pytorch_model-00001-of-00002.bin``,
# transformers 4's ``flax_model-00001-of-00002.msgpack``.
SHARD = re.compile(
    r"^(?P<stem>.+?)(?:\.(?P<variant>[^.-]+))?-(?P<number>\d{5})-of-(?P<count>\d{5})"
    r"(?P<ext>\.safetensors|\.bin|\.msgpack)$"
)
# llama.cpp's gguf-split: ``<prefix>-00001-of-00003.gguf``.
SPLIT = re.compile(r"^(?P<prefix>.+)-(?P<number>\d{5})-of-(?P<count>\d{5})\.gguf$")

# diffusers names its weights transformers' names with this prefix (``diffusion_flax_model.msgpack``), and calls
# transformers' ``model.safetensors`` ``diffusion_pytorch_model.safetensors``.
_DIFFUSERS_PREFIX = "diffusion_"


def load_order(weights: Sequence[ShardNames]) -> list[tuple[str, ...]]:
    """What transformers loads from a folder, first that exists (``_get_resolved_checkpoint_files``): each of
    ``weights`` (the registry's ``model_file_names()``, safetensors' first) and its index; then diffusers' alike."""
    from weightscope.shards import ShardNames  # (the writers' module: not imported at start-up)

    diffusers = [ShardNames(_diffusers_name(names.model_file)) for names in weights]
    return [tuple(name for names in kind for name in (names.model_file, names.index)) for kind in (weights, diffusers)]


def _diffusers_name(model_file: str) -> str:
    stem, _, ending = model_file.rpartition(".")
    return f"{_DIFFUSERS_PREFIX}{stem if stem.endswith('_model') else 'pytorch_model'}.{ending}"


def _variant(order: list[tuple[str, ...]]) -> re.Pattern[str]:
    """A variant's weights file or index (``model.fp16.safetensors``, ``pytorch_model.bin.index.fp16.json``) of
    the files of ``load_order``."""
    files = [name for names in order for name in names[::2]]
    stems = "|".join(sorted({re.escape(name.rpartition(".")[0]) for name in files}))
    endings = "|".join(sorted({re.escape(name.rpartition(".")[2]) for name in files}))
    return re.compile(
        rf"^(?:{stems})(?:\.(?P<single>[^.-]+)\.(?:{endings})|\.(?:{endings})\.index\.(?P<index>[^.]+)\.json)$"
    )


# What a Trainer's ``checkpoint-N/`` holds beside the model: never its weights.
_NOT_WEIGHTS = re.compile(r"^(optimizer\.pt|scheduler\.pt|scaler\.pt|training_args\.bin|rng_state(_\d+)?\.pth)$")
MAX_JSON = 256 << 20  # an index of a million tensors is some 100 MB


def read_json(path: AnyPath, what: str, strings: str | None = None) -> Any:
    """The JSON document at ``path`` (``what`` it is, for errors), a name given twice in an object refused.
    ``strings``: the name of a member that maps names to strings and holds most of the text (an index's
    ``weight_map``), parsed in one pass of C where the package has it (``weightscope._headers``)."""
    source = open_source(path)
    try:
        if source.size > MAX_JSON:
            raise CorruptCheckpointError(f"{path}: {what} of {source.size:,} bytes, over the limit of {MAX_JSON:,}")
        text = bytes(source.read(0, source.size, what))
    finally:
        source.close()
    marks = json_marks(text)
    Limits.for_size(len(text)).check_memory(marks_cost(len(text), marks), f"parsing {what}", path)
    if strings is not None and _headers is not None and (cut := _headers.string_map(text, strings)) is not None:
        begin, end, found = cut
        # The rest parsed as before, the member an empty object there: where that fails, the whole text is
        # parsed again, so that the message names what is wrong where it is.
        rest = text[:begin] + b"{}" + text[end:]
        with contextlib.suppress(CorruptCheckpointError):
            document = _parsed(rest, json_marks(rest), path, what)
            if isinstance(document, dict) and document.get(strings) == {}:
                document[strings] = found
                return document
    return _parsed(text, marks, path, what)


def _parsed(text: bytes, marks: bytes, path: AnyPath, what: str) -> Any:
    """``read_json``'s document of ``text``, whose ``json_marks`` are ``marks``."""

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        document = dict(pairs)
        if len(document) != len(pairs):
            twice = next(key for number, (key, _) in enumerate(pairs) if key in dict(pairs[:number]))
            raise CorruptCheckpointError(f"{path}: {what} names '{twice}' twice")
        return document

    import json  # here: a folder's JSON index is its first need

    try:
        decoded = text.decode("utf-8")
        document = json.loads(decoded)
        if _entries(document) == marks.count(b":"):  # each entry has its own ':', so no name given twice
            return document
        del document  # a ':' inside a string, or a name given twice: the hook finds which, if any
        return json.loads(decoded, object_pairs_hook=unique)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        if isinstance(error, CorruptCheckpointError):
            raise
        raise CorruptCheckpointError(f"{path}: {what} is not UTF-8 JSON ({error})") from None


_SCALARS = {str, int, float, bool, type(None)}


def _entries(document: Any) -> int:
    """How many entries the objects in a parsed JSON ``document`` hold, a loop in C over a container of scalars."""
    count = 0
    pending = [document]
    while pending:
        value = pending.pop()
        items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        count += len(value) if isinstance(value, dict) else 0
        if not _SCALARS.issuperset(map(type, items)):
            pending.extend(item for item in items if isinstance(item, (dict, list)))
    return count


def _files(folder: AnyPath, order: list[tuple[str, ...]]) -> list[str]:
    """The names of the files in ``folder``; over HTTP, which lists nothing, those of ``order`` that exist."""
    listed: list[AnyPath] = list(folder.glob("*"))
    if listed:
        return sorted(path.name for path in listed if path.is_file())
    return [name for names in order for name in names if (folder / name).is_file()]


def choose_weights(
    folder: AnyPath, endings: tuple[str, ...], weights: Sequence[ShardNames], readable: Callable[[AnyPath], bool]
) -> tuple[AnyPath, list[str]]:
    """The file (or index) holding ``folder``'s weights, and notes on the choice; ``endings`` are those of weight
    files' names, ``weights`` the names transformers looks for (see ``load_order``), and ``readable`` tells a file a
    format claims by its content among several (an ONNX model's external data ``weights.bin`` is no PyTorch file).
    Raises ``UsageError`` when several unrelated weight files are there, ``CheckpointNotFoundError`` when none is."""
    order = load_order(weights)
    names = _files(folder, order)
    present = set(names)
    for kind in order:
        found = [name for name in kind if name in present]
        if found:
            notes = []
            if len(found) > 1:
                notes.append(
                    f"{folder}: read {found[0]}, as transformers loads it first; not read: {', '.join(found[1:])}"
                )
            return folder / found[0], notes
    variants: dict[str, list[str]] = {}
    variant_name = _variant(order)
    for name in names:
        if found_variant := variant_name.match(name):
            variants.setdefault(found_variant["single"] or found_variant["index"], []).append(name)
    if len(variants) == 1:
        ((variant, files),) = variants.items()
        chosen = min(files, key=lambda name: (".bin" in name, ".index" in name))
        notes = [f"{folder}: read the {variant} variant, {chosen}"]
        return folder / chosen, notes
    if len(variants) > 1:
        listed = ", ".join(f"{variant} ({', '.join(files)})" for variant, files in sorted(variants.items()))
        raise UsageError(f"{folder}: weights in several variants: {listed}; name the file (or index) to read")
    candidates = _weight_files(names, endings)
    if len(candidates) > 1:
        candidates = [name for name in candidates if readable(folder / name)] or candidates
    if len(candidates) == 1:
        return folder / candidates[0], []
    if candidates:
        raise UsageError(
            f"{folder}: several weight files, none of them the one transformers loads: {', '.join(candidates)}; "
            "name the one to read"
        )
    if "model_index.json" in present:
        parts = sorted(path.name for path in folder.glob("*") if path.is_dir())
        raise UsageError(
            f"{folder}: a diffusers pipeline, whose components are folders ({', '.join(parts)}); name one to read"
        )
    raise CheckpointNotFoundError(f"{folder}: a directory with no checkpoint in it that weightscope knows")


def _weight_files(names: list[str], endings: tuple[str, ...]) -> list[str]:
    """The weight files (or sets: an index, a GGUF split's first part there, which opens them all) among ``names``
    (sorted)."""
    indexed = any(INDEX.match(name) for name in names)
    chosen = []
    splits = set()
    for name in names:
        if INDEX.match(name):
            chosen.append(name)
        elif (split := SPLIT.match(name)) is not None:
            if (split["prefix"], split["count"]) not in splits:
                splits.add((split["prefix"], split["count"]))
                chosen.append(name)
        elif name.lower().endswith(endings) and not _NOT_WEIGHTS.match(name) and not (indexed and SHARD.match(name)):
            chosen.append(name)
    return chosen


def index_of(shard: AnyPath) -> AnyPath | None:
    """The index of the set ``shard`` belongs to: the one its name implies, else the one in its folder naming it."""
    found = SHARD.match(shard.name)
    if found is None:
        return None
    variant = f".{found['variant']}" if found["variant"] else ""
    implied = shard.with_name(f"{found['stem']}{found['ext']}.index{variant}.json")
    if implied.is_file():
        return implied
    for index in shard.parent.glob(f"*{found['ext']}.index*.json"):
        try:
            document: Any = read_json(index, "the index")
        except WeightscopeError:
            continue
        weight_map = document.get("weight_map") if isinstance(document, dict) else None
        if isinstance(weight_map, dict) and shard.name in weight_map.values():
            return index
    return None


def is_set(path: AnyPath) -> bool:
    """Whether ``path`` is an index, a GGUF split's part, or a shard of a set with an index (the registry's sniffer)."""
    name = path.name
    if INDEX.match(name) or SPLIT.match(name):
        return path.is_file()
    return bool(SHARD.match(name)) and path.is_file() and index_of(path) is not None
