"""Fuzz a model folder: its index (``model.safetensors.index.json``) and ``config.json``, beside two valid shards.

An input is the index's bytes, then (after a NUL pair, where there is one) config.json's: the folder is opened
and everything asked of it, so the weight map's paths (confined to the folder), its metadata's aliases and
total_size, the shards' checks against the index and config.json's facts (a tied head) are all reached.
"""

from __future__ import annotations

import json

import fuzzlib
import numpy as np

with fuzzlib.instrumented():
    import weightscope.confine
    import weightscope.formats._folder_choice
    import weightscope.formats.model_folder  # noqa: F401 - instrumented for coverage, used by fuzzlib.exercise
    from weightscope.formats.safetensors import save

FOLDER = fuzzlib.SCRATCH / "model"
FOLDER.mkdir(exist_ok=True)
SHARDS = {
    "model-00001-of-00002.safetensors": {"model.embed_tokens.weight": np.arange(12, dtype=np.float32).reshape(4, 3)},
    "model-00002-of-00002.safetensors": {"model.norm.weight": np.ones(3, np.float16), "step": np.array(3, np.int64)},
}
for shard_name, shard_tensors in SHARDS.items():
    save(shard_tensors, FOLDER / shard_name, metadata={"format": "pt"})
SEPARATOR = b"\0\0"


def seeds() -> list[bytes]:
    weight_map = {name: shard for shard, tensors in SHARDS.items() for name in tensors}
    index = {"metadata": {"total_size": 46}, "weight_map": weight_map}
    config = {"architectures": ["LlamaForCausalLM"], "hidden_size": 3, "tie_word_embeddings": True}
    aliased = {"metadata": {"total_size": 46, "lm_head.weight": "model.embed_tokens.weight"}, "weight_map": weight_map}
    escaping = {"weight_map": {**weight_map, "step": "../model-00002-of-00002.safetensors"}}
    return [
        json.dumps(index, indent=2).encode() + SEPARATOR + json.dumps(config).encode(),
        json.dumps(aliased).encode(),
        json.dumps(escaping).encode() + SEPARATOR + b'{"auto_map": {"AutoModel": "x.Y"}}',
        json.dumps({"weight_map": {"a": "/etc/passwd", "b": "C:/x.safetensors"}}).encode(),
    ]


def one_input(data: bytes) -> None:
    index, _, config = data.partition(SEPARATOR)
    (FOLDER / "model.safetensors.index.json").write_bytes(index)
    (FOLDER / "config.json").write_bytes(config)
    fuzzlib.exercise(FOLDER)
    fuzzlib.exercise(FOLDER / "model-00002-of-00002.safetensors")  # a shard opens the set too


if __name__ == "__main__":
    fuzzlib.run(one_input, seeds())
