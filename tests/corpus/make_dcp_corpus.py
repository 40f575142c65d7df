"""Write tests/corpus/dcp/: broken PyTorch DCP folders, each named ``<ErrorClass>--<what is wrong>``.

Each starts from a folder ``torch.distributed.checkpoint.save`` wrote in one process, its ``.metadata`` then
rewritten with torch's own classes (``pickle`` of the edited ``Metadata``) so that ``w`` is one tensor of 7 x 5
stored in two chunks of 4 and 3 rows, as two FSDP ranks store it (``base``; ``fuzz/fuzz_dcp.py`` starts from it
too); then one thing is broken. The malicious ``.metadata``'s payload would run
``touch /tmp/weightscope-corpus-marker-dcp``, were it ever evaluated. Run from the repository root with the test
environment's Python: ``python tests/corpus/make_dcp_corpus.py``.
"""

from __future__ import annotations

import os
import pickle
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.metadata import ChunkStorageMetadata, MetadataIndex

HERE = Path(__file__).resolve().parent / "dcp"
MARKER = "/tmp/weightscope-corpus-marker-dcp"


def _metadata(folder: Path) -> Any:
    with open(folder / ".metadata", "rb") as file:
        return pickle.load(file)


def _write_metadata(folder: Path, metadata: Any) -> None:
    with open(folder / ".metadata", "wb") as file:
        pickle.dump(metadata, file)


def base(folder: Path) -> None:
    """``w`` (7 x 5 float32) in two chunks, ``b`` whole, ``lr`` a bytes entry: a valid two-chunk DCP folder."""
    weight = torch.arange(35, dtype=torch.float32).reshape(7, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "assuming the intent is to save in a single process"
        dcp.save(
            {"w_0": weight[:4].clone(), "w_1": weight[4:].clone(), "b": torch.ones(5), "lr": 0.5}, checkpoint_id=folder
        )
    metadata = _metadata(folder)
    first = metadata.state_dict_metadata.pop("w_0")
    del metadata.state_dict_metadata["w_1"]  # the same properties: its chunk becomes w's second
    first.size = torch.Size([7, 5])
    first.chunks = [
        ChunkStorageMetadata(torch.Size([0, 0]), torch.Size([4, 5])),
        ChunkStorageMetadata(torch.Size([4, 0]), torch.Size([3, 5])),
    ]
    metadata.state_dict_metadata["w"] = first
    storage = metadata.storage_data
    storage[MetadataIndex("w", torch.Size([0, 0]))] = storage.pop(MetadataIndex("w_0", torch.Size([0, 0])))
    storage[MetadataIndex("w", torch.Size([4, 0]))] = storage.pop(MetadataIndex("w_1", torch.Size([0, 0])))
    metadata.planner_data = {"w": ("w",), "b": ("b",), "lr": ("lr",)}
    metadata.storage_meta = None  # no checkpoint path or random save id in the committed bytes
    _write_metadata(folder, metadata)


def _edit(change: Callable[[Any], None]) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        metadata = _metadata(folder)
        change(metadata)
        _write_metadata(folder, metadata)

    return make


def _chunk(metadata: Any, index: int) -> Any:
    return metadata.state_dict_metadata["w"].chunks[index]


def _stored(metadata: Any, offsets: list[int]) -> Any:
    return metadata.storage_data[MetadataIndex("w", torch.Size(offsets))]


def _move_second_chunk(metadata: Any, offsets: list[int]) -> None:
    stored = metadata.storage_data.pop(MetadataIndex("w", torch.Size([4, 0])))
    _chunk(metadata, 1).offsets = torch.Size(offsets)
    metadata.storage_data[MetadataIndex("w", torch.Size(offsets))] = stored


class _Payload:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {MARKER}",))


def _truncate(name: str, keep: int) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[: keep if keep >= 0 else len(data) + keep])

    return make


def _flip_data(folder: Path) -> None:
    """A byte of the second chunk's values flipped: its zip member's CRC-32 no longer matches."""
    stored = _stored(_metadata(folder), [4, 0])
    path = folder / stored.relative_path
    data = bytearray(path.read_bytes())
    item = data[stored.offset : stored.offset + stored.length]
    start = stored.offset + item.index(bytes(torch.tensor([20.0]).numpy().tobytes()))
    data[start] ^= 0x40
    path.write_bytes(bytes(data))


def _zstd_bomb(folder: Path) -> None:
    """The second chunk (60 bytes of values) a zstd stream of 64 MiB, appended to its data file."""
    import cramjam

    metadata = _metadata(folder)
    stored = _stored(metadata, [4, 0])
    path = folder / stored.relative_path
    bomb = bytes(cramjam.zstd.compress(bytes(64 << 20)))
    stored.offset, stored.length, stored.transform_descriptors = path.stat().st_size, len(bomb), ["stream.zstd/1"]
    path.write_bytes(path.read_bytes() + bomb)
    _write_metadata(folder, metadata)


ENTRIES: dict[str, Callable[[Path], None]] = {
    "RefusedError--metadata-names-os-system": _edit(lambda m: setattr(m, "planner_data", {"w": _Payload()})),
    "RefusedError--data-file-outside-the-folder": _edit(
        lambda m: setattr(_stored(m, [4, 0]), "relative_path", "../elsewhere.distcp")
    ),
    "CheckpointNotFoundError--data-file-missing": _edit(
        lambda m: setattr(_stored(m, [4, 0]), "relative_path", "__1_0.distcp")
    ),
    "TruncatedFileError--data-file-truncated": _truncate("__0_0.distcp", -100),
    "TruncatedFileError--metadata-truncated": _truncate(".metadata", 300),
    "CorruptCheckpointError--metadata-is-no-dcp-metadata": lambda folder: (folder / ".metadata").write_bytes(
        pickle.dumps({"state_dict_metadata": {}})
    ),
    "CorruptCheckpointError--chunks-overlap": _edit(lambda m: _move_second_chunk(m, [3, 0])),
    "CorruptCheckpointError--chunks-leave-a-hole": _edit(lambda m: m.state_dict_metadata["w"].chunks.pop()),
    "CorruptCheckpointError--chunk-outside-the-tensor": _edit(lambda m: _move_second_chunk(m, [5, 0])),
    "CorruptCheckpointError--chunk-without-storage": _edit(
        lambda m: m.storage_data.pop(MetadataIndex("w", torch.Size([4, 0])))
    ),
    "CorruptCheckpointError--item-of-another-shape": _edit(
        lambda m: m.storage_data.update({MetadataIndex("w", torch.Size([0, 0])): _stored(m, [4, 0])})
    ),
    "CorruptCheckpointError--item-is-the-wrong-range": _edit(
        lambda m: setattr(_stored(m, [4, 0]), "offset", _stored(m, [4, 0]).offset + 1)
    ),
    "UnsupportedFormatError--unknown-transform": _edit(
        lambda m: setattr(_stored(m, [4, 0]), "transform_descriptors", ["stream.lz4/1"])
    ),
    "CorruptCheckpointError--zstd-item-is-no-zstd-stream": _edit(
        lambda m: setattr(_stored(m, [4, 0]), "transform_descriptors", ["stream.zstd/1"])
    ),
    "LimitExceededError--zstd-bomb": _zstd_bomb,
    "ChecksumMismatchError--chunk-bytes-flipped": _flip_data,
}


def main() -> None:
    shutil.rmtree(HERE, ignore_errors=True)
    HERE.mkdir()
    for name, make in ENTRIES.items():
        folder = HERE / name
        base(folder)
        make(folder)


if __name__ == "__main__":
    main()
