"""Write tests/corpus/folder/: broken model folders and sharded sets, each a folder named <Error>--<why>.

Shards are written by safetensors (``safetensors.numpy.save_file``) and gguf-py (``GGUFWriter``
with ``split_max_tensors``, as llama.cpp's gguf-split cuts them), indexes as huggingface_hub and
transformers write them (``indent=2``); then one thing is broken per folder. Run from the repo root:
``python tests/corpus/make_folder_corpus.py``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

FOLDER = Path(__file__).resolve().parent / "folder"
TENSORS = {
    "embed.weight": np.arange(12, dtype=np.float32).reshape(4, 3),
    "layer.0.weight": np.ones((3, 3), np.float32),
    "layer.0.bias": np.zeros(3, np.float32),
    "head.weight": np.full((2, 3), 0.5, np.float32),
}


def _index(directory: Path, weight_map: dict[str, str], *, name: str = "model.safetensors.index.json") -> None:
    document = {"metadata": {"total_size": sum(array.nbytes for array in TENSORS.values())}, "weight_map": weight_map}
    (directory / name).write_text(json.dumps(document, indent=2))


def _set(directory: Path, shards: dict[str, list[str]]) -> dict[str, str]:
    """Shards holding the given tensors; the weight map placing each where the first shard holding it is."""
    from safetensors.numpy import save_file

    weight_map: dict[str, str] = {}
    for shard, names in shards.items():
        save_file({name: TENSORS[name] for name in names}, str(directory / shard), metadata={"format": "pt"})
        for name in names:
            weight_map.setdefault(name, shard)
    return weight_map


_TWO = {
    "model-00001-of-00002.safetensors": ["embed.weight", "layer.0.weight"],
    "model-00002-of-00002.safetensors": ["layer.0.bias", "head.weight"],
}


def shard_missing(directory: Path) -> None:
    weight_map = _set(directory, _TWO)
    (directory / "model-00002-of-00002.safetensors").unlink()
    _index(directory, weight_map)


def tensor_not_in_its_shard(directory: Path) -> None:
    weight_map = _set(directory, _TWO)
    _index(directory, weight_map | {"head.weight": "model-00001-of-00002.safetensors"})


def another_tensor_in_its_place(directory: Path) -> None:
    """As many tensors in the shard as the index puts there, but not the same: it lists one the shard lacks."""
    weight_map = _set(directory, _TWO)
    del weight_map["layer.0.weight"]
    _index(directory, weight_map | {"layer.1.weight": "model-00001-of-00002.safetensors"})


def tensor_in_two_shards(directory: Path) -> None:
    shards = {**_TWO, "model-00002-of-00002.safetensors": ["layer.0.bias", "head.weight", "embed.weight"]}
    _index(directory, _set(directory, shards))


def shard_path_climbs_out(directory: Path) -> None:
    weight_map = _set(directory, _TWO)
    _index(directory, weight_map | {"head.weight": "../outside.safetensors"})


def shard_path_absolute(directory: Path) -> None:
    weight_map = _set(directory, _TWO)
    _index(directory, weight_map | {"head.weight": "/etc/passwd"})


def bin_shard_in_a_safetensors_index(directory: Path) -> None:
    weight_map = _set(directory, _TWO)
    shutil.copy(directory / "model-00002-of-00002.safetensors", directory / "pytorch_model-00002-of-00002.bin")
    _index(directory, weight_map | {"head.weight": "pytorch_model-00002-of-00002.bin"})


def tensor_named_twice_in_the_index(directory: Path) -> None:
    weight_map = _set(directory, _TWO)
    _index(directory, weight_map)
    index = directory / "model.safetensors.index.json"
    text = index.read_text()
    twice = '"embed.weight": "model-00001-of-00002.safetensors"'
    index.write_text(text.replace(twice, f"{twice},\n    {twice}"))


def index_without_a_weight_map(directory: Path) -> None:
    _set(directory, _TWO)
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 1}}))


def _gguf_split(directory: Path, *, tensors: int = 6) -> list[Path]:
    import gguf

    writer = gguf.GGUFWriter(directory / "tiny.gguf", "llama", split_max_tensors=2)
    for number in range(tensors):
        writer.add_tensor(
            f"blk.{number // 2}.ffn_up.weight" if number % 2 else f"blk.{number // 2}.attn_q.weight",
            np.full((2, 4), number, np.float32),
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return sorted(directory.glob("*.gguf"))


def gguf_split_part_missing(directory: Path) -> None:
    _gguf_split(directory)[1].unlink()


def gguf_split_first_part_missing(directory: Path) -> None:
    _gguf_split(directory)[0].unlink()


def gguf_split_parts_out_of_place(directory: Path) -> None:
    first, second, _ = _gguf_split(directory)
    first.rename(directory / "swap")
    second.rename(first)
    (directory / "swap").rename(second)


def gguf_split_fewer_parts_than_counted(directory: Path) -> None:
    """Parts 1 and 2 of a 3-part split renamed as a 2-part one: split.count (3) is not the count their names say."""
    first, second, third = _gguf_split(directory)
    third.unlink()
    first.rename(directory / "tiny-00001-of-00002.gguf")
    second.rename(directory / "tiny-00002-of-00002.gguf")


MAKERS: dict[str, Callable[[Path], None]] = {
    "CheckpointNotFoundError--shard-missing": shard_missing,
    "CorruptCheckpointError--tensor-not-in-its-shard": tensor_not_in_its_shard,
    "CorruptCheckpointError--tensor-not-in-its-shard-another-in-its-place": another_tensor_in_its_place,
    "CorruptCheckpointError--tensor-in-two-shards": tensor_in_two_shards,
    "RefusedError--shard-path-climbs-out": shard_path_climbs_out,
    "RefusedError--shard-path-absolute": shard_path_absolute,
    "CorruptCheckpointError--bin-shard-in-a-safetensors-index": bin_shard_in_a_safetensors_index,
    "CorruptCheckpointError--tensor-named-twice-in-the-index": tensor_named_twice_in_the_index,
    "CorruptCheckpointError--index-without-a-weight-map": index_without_a_weight_map,
    "CheckpointNotFoundError--gguf-split-part-missing": gguf_split_part_missing,
    "CheckpointNotFoundError--gguf-split-first-part-missing": gguf_split_first_part_missing,
    "CorruptCheckpointError--gguf-split-parts-out-of-place": gguf_split_parts_out_of_place,
    "CorruptCheckpointError--gguf-split-fewer-parts-than-counted": gguf_split_fewer_parts_than_counted,
}


def main() -> None:
    shutil.rmtree(FOLDER, ignore_errors=True)
    for name, make in MAKERS.items():
        directory = FOLDER / name
        directory.mkdir(parents=True)
        make(directory)


if __name__ == "__main__":
    main()
