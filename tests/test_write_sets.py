"""Writing model folders: shards and their index as huggingface_hub and transformers make them, written whole or not
at all; transformers' ``from_pretrained`` loads what is written and computes what the model computed."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
import safetensors
import torch
from conftest import killed_while_writing
from huggingface_hub import save_torch_state_dict, split_torch_state_dict_into_shards
from huggingface_hub.serialization._base import parse_size_to_int
from tiny_models import tiny_gpt2, tiny_llama

import weightscope as ws
from weightscope.cli import main
from weightscope.convert import convert
from weightscope.shards import parse_size

PATTERNS = {"safetensors": "model{suffix}.safetensors", "pytorch": "pytorch_model{suffix}.bin"}


def _visible(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if not path.name.startswith("."))


def _state_dict(sizes: list[int], dtypes: list[torch.dtype] | None = None) -> dict[str, torch.Tensor]:
    """Tensors of these element counts (of these dtypes), each its own storage, named as a model's are."""
    generator = torch.Generator().manual_seed(0)
    result = {}
    for index, size in enumerate(sizes):
        dtype = dtypes[index % len(dtypes)] if dtypes else torch.float32
        values = torch.randn(size, generator=generator).to(dtype)
        result[f"model.layers.{index}.weight"] = values.reshape(size // 2, 2) if size % 2 == 0 and size else values
    return result


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


def _shard_tensors(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        with safetensors.safe_open(path, "pt") as opened:
            return {name: opened.get_tensor(name) for name in opened.keys()}  # noqa: SIM118 - safe_open has no __iter__
    return dict(torch.load(path, weights_only=True))


# Sizes in elements (4 bytes each unless a dtype says): a tensor over the limit in the middle, one exactly at it,
# one that fits alone, empty tensors, and a set that fits in one file.
CASES = {
    "over-the-limit-in-the-middle": ([100, 100, 3000, 100, 100, 100], None, "1KB"),
    "exactly-the-limit": ([250, 250, 1, 249], None, "1KB"),
    "mixed-dtypes": ([300, 300, 300, 300, 300], [torch.float32, torch.bfloat16, torch.int64, torch.float16], "2KB"),
    "empty-tensors": ([0, 200, 0, 200, 0], None, 1000),
    "one-file": ([10, 20, 30], None, "5GB"),
}


@pytest.mark.parametrize("format", ["safetensors", "pytorch"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_the_folder_is_huggingface_hubs_split(format: str, case: str, tmp_path: Path) -> None:
    sizes, dtypes, limit = CASES[case]
    state_dict = _state_dict(sizes, dtypes)
    split = split_torch_state_dict_into_shards(state_dict, filename_pattern=PATTERNS[format], max_shard_size=limit)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    save_torch_state_dict(state_dict, theirs, max_shard_size=limit, safe_serialization=format == "safetensors")
    ours = ws.save(
        {name: _numpy(tensor) for name, tensor in state_dict.items()},
        tmp_path / "ours",
        format=format,
        max_shard_size=limit,
    )
    assert ours == tmp_path / "ours"
    assert _visible(ours) == _visible(theirs)  # the same file names: shards, and the index when there are several
    index_name = PATTERNS[format].format(suffix="") + ".index.json"
    assert split.is_sharded == (ours / index_name).is_file()
    if split.is_sharded:
        index = json.loads((ours / index_name).read_text())
        assert index == json.loads((theirs / index_name).read_text())  # weight_map and metadata.total_size
        assert index == {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
        assert (ours / index_name).read_text() == json.dumps(index, indent=2, sort_keys=True) + "\n"  # transformers'
    for file, names in split.filename_to_tensors.items():
        tensors = _shard_tensors(ours / file)
        assert sorted(tensors) == sorted(names), file
        for name in names:
            torch.testing.assert_close(tensors[name], state_dict[name], rtol=0, atol=0)
        if format == "safetensors":  # the bytes safetensors writes, metadata {"format": "pt"} and all
            assert (ours / file).read_bytes() == (theirs / file).read_bytes(), file


@pytest.mark.parametrize("size", ["5GB", "0.5GB", " 10kb ", "1.5MB", "3TB", "7MB"])
def test_sizes_are_parsed_as_huggingface_hub_parses_them(size: str) -> None:
    assert parse_size(size) == parse_size_to_int(size)


def test_binary_units_as_transformers_takes_them_and_bytes() -> None:
    from transformers.utils.hub import convert_file_size_to_int

    for size in ("2GiB", "300MiB", "4KiB"):
        assert parse_size(size) == convert_file_size_to_int(size)
    assert parse_size(12345) == parse_size("12345") == 12345


@pytest.mark.parametrize("size", ["5XB", "", "GB", "-1GB", "1e3GB", 0, "0.0001KB", True])
def test_a_size_that_is_no_size_is_refused(size: Any, tmp_path: Path) -> None:
    with pytest.raises(ws.UsageError, match="shard size"):
        ws.save({"w": np.zeros(2)}, tmp_path / "out", max_shard_size=size)
    assert list(tmp_path.iterdir()) == []


# -- transformers' models, converted and loaded back --------------------------------------------------------------


def _tiny_model(kind: str, tied: bool) -> Any:
    return tiny_llama(tied, width=16) if kind == "llama" else tiny_gpt2(tied=tied)


def _logits(model: Any) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([[1, 5, 9, 3, 7, 2]])).logits


@pytest.mark.parametrize(("kind", "tied"), [("llama", True), ("llama", False), ("gpt2", True)])
def test_a_transformers_model_converted_to_shards_loads_and_computes_the_same(
    kind: str, tied: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import transformers

    model = _tiny_model(kind, tied)
    expected = _logits(model)
    saved = tmp_path / "saved"
    model.save_pretrained(saved)  # one model.safetensors, config.json, generation_config.json
    (saved / "tokenizer.json").write_text("{}")
    with safetensors.safe_open(saved / "model.safetensors", "np") as opened:
        stored = set(opened.keys())
    assert ("lm_head.weight" in stored) == (kind == "llama" and not tied)  # a tied head is not stored
    for format, index_name in [
        ("safetensors", "model.safetensors.index.json"),
        ("pytorch", "pytorch_model.bin.index.json"),
    ]:
        out = tmp_path / f"as-{format}"
        argv = [
            "convert",
            "--json",
            str(saved / "model.safetensors"),
            str(out),
            "--to",
            format,
            "--max-shard-size",
            "2KB",
        ]
        assert main(argv) == 0
        captured = capsys.readouterr()
        result = json.loads(captured.out)
        index = json.loads((out / index_name).read_text())
        shards = sorted(set(index["weight_map"].values()))
        assert len(shards) > 2 and set(index["weight_map"]) == stored
        # Files in the order they were written: the shards, the index, then the model's own files.
        assert result["files"] == [
            str(out / name) for name in [*shards, index_name, "config.json", "generation_config.json"]
        ]
        assert _visible(out) == sorted([*shards, index_name, "config.json", "generation_config.json"])
        assert (out / "config.json").read_bytes() == (saved / "config.json").read_bytes()
        assert "copied config.json, generation_config.json" in captured.err
        assert "not copied (the model's weights only, and its config): tokenizer.json" in captured.err
        loaded = getattr(transformers, type(model).__name__).from_pretrained(out).eval()
        torch.testing.assert_close(_logits(loaded), expected, rtol=0, atol=0)
        if tied:
            assert loaded.lm_head.weight.data_ptr() == loaded.get_input_embeddings().weight.data_ptr()


@pytest.mark.parametrize("tied", [True, False])
def test_a_sharded_folder_to_safetensors_shards_to_bin_shards_loads_and_computes_the_same(
    tied: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import transformers

    model = tiny_llama(tied, width=16)
    expected = _logits(model)
    saved = tmp_path / "saved"
    model.save_pretrained(saved, max_shard_size="3KB")
    stored = json.loads((saved / "model.safetensors.index.json").read_text())["weight_map"]
    assert len(set(stored.values())) > 2 and ("lm_head.weight" in stored) != tied
    out1, out2 = tmp_path / "out1", tmp_path / "out2"
    assert main(["convert", str(saved), f"{out1}/", "--max-shard-size", "2KB"]) == 0  # safetensors shards
    assert main(["convert", str(out1), f"{out2}/", "--to", "pytorch", "--max-shard-size", "2KB"]) == 0  # bin shards
    capsys.readouterr()
    for out, index_name in [(out1, "model.safetensors.index.json"), (out2, "pytorch_model.bin.index.json")]:
        index = json.loads((out / index_name).read_text())
        assert set(index["weight_map"]) == set(stored) and len(set(index["weight_map"].values())) > 2
        assert (out / "config.json").read_bytes() == (saved / "config.json").read_bytes()
        loaded = transformers.LlamaForCausalLM.from_pretrained(out).eval()
        torch.testing.assert_close(_logits(loaded), expected, rtol=0, atol=0)
        if tied:
            assert loaded.lm_head.weight.data_ptr() == loaded.get_input_embeddings().weight.data_ptr()
    assert main(["diff", "--json", str(out1), str(out2)]) == 0
    assert json.loads(capsys.readouterr().out)["equal"] is True


def _tensorflow_checkpoint(state_dict: dict[str, torch.Tensor], prefix: Path) -> Path:
    """A TensorFlow checkpoint of the model's weights as TensorFlow names and lays them out, written by TensorFlow:
    ``model/layers/0/self_attn/q_proj/kernel`` ``[in, out]``, ``.../embeddings``, a normalisation's ``gamma``."""
    import tensorflow as tf

    roots: dict[str, Any] = {}
    for name, tensor in state_dict.items():
        *path, last = name.split(".")
        values = tensor.numpy()
        if last == "weight" and values.ndim == 1:
            last = "gamma"
        elif last == "weight" and "embed" in path[-1]:
            last = "embeddings"
        elif last == "weight":
            last, values = "kernel", values.T
        module = roots.setdefault(path[0], tf.Module())
        for part, following in zip(path[1:], [*path[2:], None], strict=False):  # (lm_head: no parts)
            if part.isdigit():  # a list of blocks: model/layers/0
                continue
            if following is not None and following.isdigit():
                blocks = getattr(module, part, None) or []
                while len(blocks) <= int(following):
                    blocks.append(tf.Module())
                setattr(module, part, blocks)
                module = getattr(module, part)[int(following)]
                continue
            if not hasattr(module, part):
                setattr(module, part, tf.Module())
            module = getattr(module, part)
        setattr(module, last, tf.Variable(values))
    return Path(tf.train.Checkpoint(**roots).write(str(prefix)))


def test_a_tensorflow_checkpoint_of_a_model_becomes_a_folder_transformers_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import transformers

    model = _tiny_model("llama", tied=False)
    prefix = _tensorflow_checkpoint(model.state_dict(), tmp_path / "tf" / "model.ckpt")
    with ws.open(prefix) as ckpt:
        assert "model/layers/1/self_attn/q_proj/kernel" in ckpt and "lm_head/kernel" in ckpt
    out = tmp_path / "bin"
    argv = ["convert", str(prefix), str(out), "--names", "pytorch", "--layout", "pytorch", "--to", "pytorch"]
    assert main([*argv, "--max-shard-size", "4KB"]) == 0
    capsys.readouterr()
    index = json.loads((out / "pytorch_model.bin.index.json").read_text())
    assert set(index["weight_map"]) == set(model.state_dict())  # every name mapped to transformers'
    model.config.save_pretrained(
        out
    )  # a TensorFlow checkpoint has no config.json: the model's, as transformers writes it
    model.generation_config.save_pretrained(out)
    loaded = transformers.LlamaForCausalLM.from_pretrained(out).eval()
    torch.testing.assert_close(_logits(loaded), _logits(model), rtol=0, atol=0)


def test_the_model_files_of_a_file_that_is_no_models_weights_are_not_copied(tmp_path: Path) -> None:
    source = ws.save({"w": np.ones((4, 4), np.float32)}, tmp_path / "in" / "weights.pt")
    (tmp_path / "in" / "config.json").write_text('{"a Keras": "config"}')
    result = convert(source, tmp_path / "out", to="safetensors", max_shard_size="1GB")
    assert _visible(tmp_path / "out") == ["model.safetensors"]  # everything fits: one file, no index
    assert result.files == [str(tmp_path / "out" / "model.safetensors")] and not result.notes


def test_convert_to_a_folder_casts_and_says_the_config_is_as_it_was(tmp_path: Path) -> None:
    source = ws.save({"w": np.ones((4, 4), np.float32)}, tmp_path / "in" / "model.safetensors")
    (tmp_path / "in" / "config.json").write_text('{"dtype": "float32"}')
    result = convert(source, tmp_path / "out", max_shard_size="40", dtype="bfloat16")  # safetensors unless told
    assert result.format == "safetensors" and _visible(tmp_path / "out") == ["config.json", "model.safetensors"]
    assert any("config.json is copied as it was" in note for note in result.notes)
    with safetensors.safe_open(tmp_path / "out" / "model.safetensors", "pt") as opened:
        assert opened.get_tensor("w").dtype == torch.bfloat16 and opened.metadata() == {"format": "pt"}


# -- where a folder is written, and atomicity ----------------------------------------------------------------------


def test_a_folder_with_files_or_a_file_is_refused_an_empty_folder_is_filled(tmp_path: Path) -> None:
    tensors = {"w": np.ones(300, np.float32), "b": np.ones(300, np.float32)}
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.txt").write_text("mine")
    with pytest.raises(ws.UsageError, match="is a folder with files in it; give a new or empty folder"):
        ws.save(tensors, tmp_path / "full", max_shard_size="1KB")
    assert _visible(tmp_path / "full") == ["old.txt"]
    (tmp_path / "file").write_text("mine")
    with pytest.raises(ws.UsageError, match="is a file; give the folder"):
        ws.save(tensors, tmp_path / "file", max_shard_size="1KB")
    (tmp_path / "empty").mkdir()
    ws.save(tensors, tmp_path / "empty", max_shard_size="1KB", format="pytorch")
    assert _visible(tmp_path / "empty") == [
        "pytorch_model-00001-of-00002.bin",
        "pytorch_model-00002-of-00002.bin",
        "pytorch_model.bin.index.json",
    ]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["empty", "file", "full"]  # no temporary left


@pytest.mark.parametrize("format", ["npz", "tensorflow", "keras"])
def test_a_format_no_model_folder_is_kept_in_is_refused(format: str, tmp_path: Path) -> None:
    with pytest.raises(
        ws.UsageError, match=f"no Hugging Face model folder is kept in {format}; .*safetensors or pytorch"
    ):
        ws.save({"dense/kernel": np.zeros((2, 2), np.float32)}, tmp_path / "out", format=format, max_shard_size="1KB")
    source = ws.save({"w": np.zeros(2, np.float32)}, tmp_path / "w.safetensors")
    argv = ["convert", str(source), str(tmp_path / "out"), "--to", format, "--max-shard-size", "1KB"]
    assert main(argv) == 2
    assert sorted(path.name for path in tmp_path.iterdir()) == ["w.safetensors"]


class _Failing:
    """Tensors whose third array cannot be read: two shards are written by then."""

    def names(self) -> list[str]:
        return ["a", "b", "c"]

    def spec(self, name: str) -> tuple[np.dtype, tuple[int, ...]]:
        return np.dtype(np.float32), (300,)

    def array(self, name: str) -> np.ndarray:
        if name == "c":
            raise OSError("the source went away")
        return np.ones(300, np.float32)


@pytest.mark.parametrize(
    ("tensors", "error", "message"),
    [
        (
            {"w": np.zeros(2), "c": np.zeros(2, np.complex128)},
            ws.UnsupportedFormatError,
            "safetensors holds no complex128",
        ),
        ({"w": np.zeros(2), "__metadata__": np.zeros(2)}, ws.UsageError, "'__metadata__': the name is reserved"),
    ],
)
def test_a_tensor_no_shard_can_hold_is_refused_before_any_folder_is_made(
    tensors: dict[str, np.ndarray], error: type[Exception], message: str, tmp_path: Path
) -> None:
    with pytest.raises(error, match=message):
        ws.save(tensors, tmp_path / "new" / "out", max_shard_size=8)  # the first shard would be written by then
    assert list(tmp_path.iterdir()) == []


def test_a_failure_part_way_leaves_no_folder(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="went away"):
        ws.save(_Failing(), tmp_path / "out", max_shard_size="1KB")
    assert list(tmp_path.iterdir()) == []


SLOW_SET = """
import sys, time
import numpy as np
import weightscope as ws

class Slow:  # the first shard is written, then the last array takes a minute to come
    def names(self):
        return ["a", "b", "c"]

    def spec(self, name):
        return np.dtype(np.float32), (300,)

    def array(self, name):
        if name == "c":
            print("writing", flush=True)
            time.sleep(60)
        return np.ones(300, np.float32)

ws.save(Slow(), sys.argv[1], format=sys.argv[2], max_shard_size="1KB")
"""


@pytest.mark.parametrize("format", ["safetensors", "pytorch"])
def test_a_killed_write_leaves_no_folder(format: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    environment = {**os.environ, "PYTHONPATH": str(Path(ws.__file__).parents[1])}
    with killed_while_writing(textwrap.dedent(SLOW_SET), str(out), format, env=environment):
        hidden = [path for path in tmp_path.iterdir() if path.name.startswith(".")]
        assert len(hidden) == 1 and len(list(hidden[0].iterdir())) >= 2  # shards written, in the hidden folder
    assert _visible(tmp_path) == []  # no folder: what SIGKILL leaves is hidden
    with pytest.raises(ws.CheckpointNotFoundError):
        ws.open(out)
