"""Model folders as one checkpoint (issue 18): made by transformers, huggingface_hub, safetensors and gguf-py.

Every tensor read through a folder, an index or any one shard equals what the real libraries load, bit for bit;
each command takes a folder; broken sets give their typed errors (more in tests/corpus/folder/).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tiny_models import tiny_gpt2, tiny_llama

import weightscope as ws
from weightscope.cli import main


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    status = main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny Llamas saved by transformers (safetensors shards of ~20 KB, an fp16 variant, one file) and by
    huggingface_hub (bin shards; safetensors shards recording a shared tensor it dropped)."""
    from huggingface_hub import save_torch_state_dict

    root = tmp_path_factory.mktemp("folders")
    tied, untied = tiny_llama(True), tiny_llama(False, seed=1)
    tied.save_pretrained(root / "tied", max_shard_size="20KB")
    untied.save_pretrained(root / "untied", max_shard_size="20KB")
    tiny_llama(True).half().save_pretrained(root / "fp16", max_shard_size="20KB", variant="fp16")
    tied.save_pretrained(root / "single")
    tiny_gpt2(positions=16).save_pretrained(root / "gpt2", max_shard_size="10KB")  # ties by its class's default
    (root / "bin").mkdir()
    (root / "hub").mkdir()
    state = {name: tensor for name, tensor in tied.state_dict().items() if name != "lm_head.weight"}
    save_torch_state_dict(state, root / "bin", max_shard_size="20KB", safe_serialization=False)
    shutil.copy(root / "tied" / "config.json", root / "bin" / "config.json")
    save_torch_state_dict(tied.state_dict(), root / "hub", max_shard_size="20KB")  # lm_head shares the embeddings
    return {path.name: path for path in root.iterdir()}


def _stored(folder: Path) -> dict[str, np.ndarray]:
    """Every tensor of a folder's shards as safetensors or torch loads each shard (the index's shards only)."""
    import torch
    from safetensors.numpy import load_file

    (index,) = folder.glob("*.index*.json")
    weight_map = json.loads(index.read_text())["weight_map"]
    loaded: dict[str, np.ndarray] = {}
    for shard in sorted(set(weight_map.values())):
        if shard.endswith(".bin"):
            loaded |= {name: tensor.numpy() for name, tensor in torch.load(folder / shard, weights_only=True).items()}
        else:
            loaded |= load_file(str(folder / shard))
    return {name: loaded[name] for name in weight_map}


def _bits_equal(ours: np.ndarray, theirs: np.ndarray) -> bool:
    return ours.dtype == theirs.dtype and ours.shape == theirs.shape and ours.tobytes() == theirs.tobytes()


@pytest.mark.parametrize("name", ["tied", "untied", "bin", "fp16", "hub"])
def test_a_folder_an_index_and_any_shard_read_as_the_libraries_load(models: dict[str, Path], name: str) -> None:
    folder = models[name]
    expected = _stored(folder)
    (index,) = folder.glob("*.index*.json")
    shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    assert len(shards) > 2
    for path, format in [(folder, "model-folder"), (index, "sharded"), (folder / shards[-1], "sharded")]:
        with ws.open(path) as ckpt:
            assert ckpt.format == format
            assert list(ckpt) == list(expected)  # the index's names, in its order
            for tensor, want in expected.items():
                assert _bits_equal(ckpt[tensor], want), tensor
                assert ckpt.info(tensor).file == str(folder / json.loads(index.read_text())["weight_map"][tensor])
            assert not ckpt.verify()


@pytest.mark.parametrize("name", ["tied", "untied", "bin", "gpt2"])
def test_every_tensor_equals_what_transformers_loads(models: dict[str, Path], name: str) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(models[name])
    with ws.open(models[name]) as ckpt:
        for tensor, value in model.state_dict().items():  # lm_head.weight too: stored, or tied to the embeddings
            assert _bits_equal(ckpt[tensor], value.numpy()), tensor
        assert ("lm_head.weight" in list(ckpt)) == (name == "untied")


def test_a_base_model_has_no_head_to_tie(models: dict[str, Path], tmp_path: Path) -> None:
    folder = shutil.copytree(models["tied"], tmp_path / "base")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"architectures": ["LlamaModel"]}))
    with ws.open(folder) as ckpt:
        assert "lm_head.weight" not in ckpt and "tied.lm_head.weight" not in ckpt.metadata


def test_a_tied_head_is_reported_and_read_as_the_embeddings(
    models: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    with ws.open(models["tied"]) as ckpt:
        assert "lm_head.weight" in ckpt and "lm_head.weight" not in list(ckpt)
        assert _bits_equal(ckpt["lm_head.weight"], ckpt["model.embed_tokens.weight"])
        assert ckpt.metadata["tied.lm_head.weight"] == "model.embed_tokens.weight"
    with ws.open(models["untied"]) as ckpt:
        assert "tied.lm_head.weight" not in ckpt.metadata and not ckpt.notes
    status, out, err = run(capsys, "ls", models["tied"])
    assert status == 0 and "\nmetadata: tied.lm_head.weight = model.embed_tokens.weight\n" in out and not err
    # huggingface_hub drops the shared name and records it in the index's metadata: an alias too
    with ws.open(models["hub"]) as ckpt:
        kept = json.loads((models["hub"] / "model.safetensors.index.json").read_text())["metadata"]
        dropped = next(name for name, value in kept.items() if isinstance(value, str) and value in ckpt)
        assert dropped not in list(ckpt) and _bits_equal(ckpt[dropped], ckpt[kept[dropped]])


@pytest.mark.parametrize(
    ("names", "tied"),
    [
        (["x.y.embed_tokens.weight", "z.wte.weight", "z.wte.bias"], "z.wte.weight"),  # no likely name: the scan
        (["a.wte.weight", "model.embed_tokens.weight"], "model.embed_tokens.weight"),  # where transformers keeps it
    ],
)
def test_the_head_is_tied_to_the_likely_embeddings_else_the_shallowest(
    tmp_path: Path, names: list[str], tied: str
) -> None:
    from safetensors.numpy import save_file

    save_file({name: np.full((2, 2), i, np.float32) for i, name in enumerate(names)}, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    with ws.open(tmp_path) as ckpt:
        assert ckpt.metadata["tied.lm_head.weight"] == tied and _bits_equal(ckpt["lm_head.weight"], ckpt[tied])


def test_config_is_read_and_summary_counts_as_the_hub(
    models: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from transformers import LlamaForCausalLM

    status, out, _ = run(capsys, "summary", "--json", models["tied"])
    document = json.loads(out)
    assert status == 0
    assert document["model"] == {
        "architecture": "LlamaForCausalLM",
        "model_type": "llama",
        "hidden_size": "32",
        "layers": "2",
        "heads": "4",
        "dtype": "float32",
        "tied_embeddings": "true",
    }
    model = LlamaForCausalLM.from_pretrained(models["tied"])
    assert document["values_by_dtype"] == {"float32": model.num_parameters()}  # the tied head counted once
    index = json.loads((models["tied"] / "model.safetensors.index.json").read_text())
    assert document["bytes_by_dtype"] == {"float32": index["metadata"]["total_size"]}
    status, out, _ = run(capsys, "summary", models["fp16"])
    assert "values by dtype: float16 22,688" in out and "memory to load (weights as stored): 44.3 KiB" in out
    assert "model: architecture LlamaForCausalLM, model_type llama" in out


def test_auto_map_is_reported_never_run(models: dict[str, Path], tmp_path: Path) -> None:
    folder = shutil.copytree(models["single"], tmp_path / "custom")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_evil.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w')\n")
    with ws.open(folder) as ckpt:
        assert "modeling_evil.EvilModel" in ckpt.metadata["config.auto_map"]
        assert any("auto_map" in note and "runs nothing" in note for note in ckpt.notes)
        list(ckpt.infos())
    assert not (tmp_path / "ran").exists()


def test_the_folder_choice_follows_transformers(models: dict[str, Path], tmp_path: Path) -> None:
    with ws.open(models["single"]) as ckpt:  # one model.safetensors and config.json
        assert ckpt.format == "model-folder" and ckpt.files == [models["single"] / "model.safetensors"]
        assert ckpt.metadata["config.architectures"] == "LlamaForCausalLM"
    with ws.open(models["fp16"]) as ckpt:  # only a variant: it, said so
        assert ckpt.info("model.norm.weight").dtype == np.float16
        assert any("fp16 variant" in note for note in ckpt.notes)
    both = shutil.copytree(models["bin"], tmp_path / "both")
    shutil.copy(models["single"] / "model.safetensors", both)
    with ws.open(both) as ckpt:  # safetensors over bin, as transformers loads, said so
        assert ckpt.files == [both / "model.safetensors"]
        assert ckpt.notes[0].endswith(
            "read model.safetensors, as transformers loads it first; not read: pytorch_model.bin.index.json"
        )
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(models["single"] / "model.safetensors", other / "weights.safetensors")
    (other / "optimizer.pt").write_bytes(b"")  # a Trainer's, never weights
    with ws.open(other) as ckpt:  # one weights file, whatever its name
        assert ckpt.files == [other / "weights.safetensors"] and len(ckpt) == 20 and not ckpt.notes


def test_the_names_looked_for_are_the_registrys_as_transformers_and_diffusers_name_them() -> None:
    from transformers import utils

    from weightscope.formats import model_file_names
    from weightscope.formats._folder_choice import load_order

    transformers, diffusers = load_order(model_file_names())
    # then transformers 4's FLAX_WEIGHTS_NAME and FLAX_WEIGHTS_INDEX_NAME (transformers 5 has no Flax models)
    assert transformers == (
        utils.SAFE_WEIGHTS_NAME,
        utils.SAFE_WEIGHTS_INDEX_NAME,
        utils.WEIGHTS_NAME,
        utils.WEIGHTS_INDEX_NAME,
        "flax_model.msgpack",
        "flax_model.msgpack.index.json",
    )
    # diffusers.utils.constants (not installed here): SAFETENSORS_WEIGHTS_NAME, WEIGHTS_NAME and their indexes,
    # FLAX_WEIGHTS_NAME
    assert diffusers == (
        *(
            f"diffusion_pytorch_model.{ending}"
            for ending in ("safetensors", "safetensors.index.json", "bin", "bin.index.json")
        ),
        "diffusion_flax_model.msgpack",
        "diffusion_flax_model.msgpack.index.json",
    )


def test_ls_json_holds_the_notes(models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    both = shutil.copytree(models["bin"], tmp_path / "both")
    shutil.copy(models["single"] / "model.safetensors", both)
    status, out, err = run(capsys, "ls", "--json", both)
    notes = json.loads(out)["notes"]
    assert status == 0 and len(notes) == 1 and notes[0].endswith("not read: pytorch_model.bin.index.json")
    assert err == f"weightscope: {notes[0]}\n"  # on stderr as well
    status, out, err = run(capsys, "ls", "--json", models["tied"])
    assert status == 0 and json.loads(out)["notes"] == [] and not err


def test_several_weight_files_or_variants_ask_which(models: dict[str, Path], tmp_path: Path, capsys: Any) -> None:
    folder = tmp_path / "two"
    folder.mkdir()
    for name in ("a.safetensors", "b.pt"):
        shutil.copy(models["single"] / "model.safetensors", folder / name)
    status, _, err = run(capsys, "ls", folder)
    assert status == 2 and "several weight files" in err and "a.safetensors, b.pt" in err
    variants = shutil.copytree(models["fp16"], tmp_path / "variants")
    shutil.copy(models["single"] / "model.safetensors", variants / "model.bf16.safetensors")
    status, _, err = run(capsys, "ls", variants)
    assert status == 2 and "several variants: bf16 (model.bf16.safetensors), fp16" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    status, _, err = run(capsys, "ls", empty)
    assert status == 3 and "no checkpoint in it" in err


# -- the checks of a set ------------------------------------------------------------------------
def test_unlisted_shards_and_a_wrong_total_size_are_notes(models: dict[str, Path], tmp_path: Path) -> None:
    folder = shutil.copytree(models["tied"], tmp_path / "set")
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["metadata"]["total_size"] += 4
    index_path.write_text(json.dumps(index))
    shutil.copy(folder / "model-00001-of-00006.safetensors", folder / "model-00007-of-00006.safetensors")
    with ws.open(folder) as ckpt:
        assert any("model-00007-of-00006.safetensors" in note and "does not name" in note for note in ckpt.notes)
        list(ckpt.infos())
        total = index["metadata"]["total_size"]
        assert any(
            f"total_size says {total:,} bytes; the tensors it lists take {total - 4:,}" in note for note in ckpt.notes
        )


def test_infos_follow_the_index_each_its_shards_as_safetensors_reads_it(tmp_path: Path) -> None:
    """Shards of several dtypes and shapes (each header listing its tensors by dtype, then name), an index listing
    them in another order (by number): ``infos()`` gives every tensor in the index's order (as the map by name made
    after it, and ``info``), with the dtype, shape and bytes safe_open gives it in its shard, and arrays equal to
    the library's."""
    import safetensors
    from safetensors.numpy import load_file, save_file

    folder = tmp_path / "model"
    folder.mkdir()
    dtypes = (np.float32, np.float16, np.int8)
    weight_map = {}
    for shard in range(3):
        name = f"model-{shard + 1:05d}-of-00003.safetensors"
        tensors = {
            f"layers.{number}.w": np.full((number % 4 + 1, 3), number, dtypes[number % 3 if shard else 0])
            for number in range(12 * shard, 12 * shard + 12)
        }
        save_file(tensors, str(folder / name))
        weight_map |= dict.fromkeys(tensors, name)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    assert list(weight_map) != sorted(weight_map)
    with ws.open(folder) as ckpt:
        infos = list(ckpt.infos())
        assert [info.name for info in infos] == list(weight_map) == list(ckpt)
        assert list(ckpt.by_name().values()) == infos == [ckpt.info(name) for name in weight_map]
        for info in infos:
            shard = folder / weight_map[info.name]
            with safetensors.safe_open(str(shard), framework="numpy") as reference:
                part = reference.get_slice(info.name)
                assert (info.shape, info.file) == (tuple(part.get_shape()), str(shard))
            expected = load_file(str(shard))[info.name]
            assert (info.dtype, info.nbytes) == (expected.dtype, expected.nbytes)
            assert _bits_equal(ckpt[info.name], expected)


def test_a_shard_is_opened_only_when_one_of_its_tensors_is_asked_for(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = shutil.copytree(models["tied"], tmp_path / "lazy")
    (folder / "model-00006-of-00006.safetensors").write_bytes(b"not a safetensors file")
    with ws.open(folder) as ckpt:
        assert len(ckpt) == 20
        assert ckpt["model.embed_tokens.weight"].shape == (128, 32)  # from shard 1
        broken = next(name for name, info in _weight_map(folder).items() if info.endswith("00006-of-00006.safetensors"))
        with pytest.raises(ws.CorruptCheckpointError, match=r"model-00006-of-00006\.safetensors"):
            ckpt[broken]
        problems = ckpt.verify()
        assert len(problems) == 1 and "model-00006-of-00006" in str(problems[0])
    status, out, err = run(capsys, "verify", folder)
    assert status == 4 and out.startswith("DAMAGED ") and "model-00006-of-00006.safetensors" in out
    assert "1 of 20 tensors damaged" in err


def _weight_map(folder: Path) -> dict[str, str]:
    (index,) = folder.glob("*.index*.json")
    return json.loads(index.read_text())["weight_map"]  # type: ignore[no-any-return]


def test_a_shard_from_the_index_of_another_ending_or_folder_is_refused(models: dict[str, Path], tmp_path: Path) -> None:
    folder = shutil.copytree(models["tied"], tmp_path / "set")
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    (folder / "sub.safetensors").mkdir()
    (folder / "up.safetensors").symlink_to(Path("..", "x.safetensors"))
    for shard, error in [
        ("sub/../../x.safetensors", ws.RefusedError),
        ("C:/x.safetensors", ws.RefusedError),
        ("up.safetensors", ws.RefusedError),  # one name, a link out of the folder
        ("sub.safetensors", ws.CorruptCheckpointError),  # one name, a folder: "is not a file"
    ]:
        index["weight_map"]["model.norm.weight"] = shard
        index_path.write_text(json.dumps(index))
        with pytest.raises(error, match="shard path"):
            ws.open(folder)


def test_a_name_given_twice_anywhere_in_the_index_is_refused(models: dict[str, Path], tmp_path: Path) -> None:
    """The index parses without a hook and counts its entries: a ':' in a name must not hide a duplicate."""
    folder = shutil.copytree(models["tied"], tmp_path / "set")
    index_path = folder / "model.safetensors.index.json"
    text = index_path.read_text()
    index = json.loads(text)
    shard = index["weight_map"]["model.norm.weight"]
    entry = f'"model.norm.weight": "{shard}"'
    assert entry in json.dumps(index)
    twice_in_map = json.dumps(index).replace(entry, f"{entry}, {entry}")
    metadata = json.dumps({**index, "metadata": {"a:b": 1}}).replace('"a:b": 1', '"a:b": 1, "x": [{"k": 1, "k": 2}]')
    for document, twice in [(twice_in_map, "model.norm.weight"), (metadata, "k")]:
        index_path.write_text(document)
        with pytest.raises(ws.CorruptCheckpointError, match=f"names '{twice}' twice"):
            ws.open(folder)
    index_path.write_text(json.dumps({**index, "metadata": {"a:b": {"c:d": [{":": ":"}]}}}))  # colons, no duplicate
    assert sorted(ws.open(folder)) == sorted(index["weight_map"])


# -- GGUF splits -------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def gguf_split(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], dict[str, np.ndarray]]:
    """A two-block llama GGUF, split two tensors a part by gguf-py (as llama.cpp's gguf-split cuts it)."""
    import gguf

    root = tmp_path_factory.mktemp("split")
    rng = np.random.default_rng(0)
    tensors = {"token_embd.weight": rng.standard_normal((16, 8), np.float32)}
    for block in range(2):
        for part in ("attn_q", "attn_k", "ffn_up"):
            tensors[f"blk.{block}.{part}.weight"] = rng.standard_normal((8, 8), np.float32).astype(np.float16)
    writer = gguf.GGUFWriter(root / "tiny.gguf", "llama", split_max_tensors=2)
    writer.add_block_count(2)
    writer.add_embedding_length(8)
    writer.add_head_count(2)
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return sorted(root.glob("*.gguf")), tensors


def test_a_gguf_split_opens_as_one_model_from_any_part(
    gguf_split: tuple[list[Path], dict[str, np.ndarray]], capsys: pytest.CaptureFixture[str]
) -> None:
    import gguf

    parts, tensors = gguf_split
    assert [part.name for part in parts] == [f"tiny-0000{n}-of-00004.gguf" for n in range(1, 5)]
    theirs = {tensor.name: np.asarray(tensor.data) for part in parts for tensor in gguf.GGUFReader(part).tensors}
    for path in (parts[0], parts[2], parts[0].parent):
        with ws.open(path) as ckpt:
            assert sorted(ckpt) == sorted(tensors) == sorted(theirs)
            for name, array in tensors.items():
                assert _bits_equal(ckpt[name], theirs[name]) and _bits_equal(ckpt[name], array)
            assert ckpt.metadata["general.architecture"] == "llama" and ckpt.metadata["split.count"] == "4"
            assert not ckpt.verify()
    status, out, _ = run(capsys, "layers", parts[1])
    assert status == 0 and "blk.0" in out and "blk.1" in out
    status, out, _ = run(capsys, "summary", "--json", parts[3])
    document = json.loads(out)
    assert [layer["kind"] for layer in document["layers"] if layer["name"].startswith("blk.")] == ["Block", "Block"]
    assert document["model"] == {"architecture": "llama", "hidden_size": "8", "layers": "2", "heads": "2"}


def test_a_gguf_split_whose_tensor_count_disagrees_is_refused(tmp_path: Path) -> None:
    import gguf

    for number in range(2):  # each part by hand, with gguf-split's keys, one declaring 3 tensors in all
        writer = gguf.GGUFWriter(tmp_path / f"bad-0000{number + 1}-of-00002.gguf", "llama")
        writer.add_uint16("split.no", number)
        writer.add_uint16("split.count", 2)
        writer.add_int32("split.tensors.count", 3)
        writer.add_tensor(f"t{number}", np.zeros(4, np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    with pytest.raises(ws.CorruptCheckpointError, match=r"split.tensors.count is '3', but the 2 parts hold 2"):
        ws.open(tmp_path / "bad-00002-of-00002.gguf")


# -- diffusers' names --------------------------------------------------------------------------
def test_diffusers_components_and_variants(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A pipeline's unet/ sharded as diffusers names it (written with safetensors and huggingface_hub's
    splitting, indexes as diffusers writes them: sorted keys), an fp16 variant of vae/; the root asks which."""
    from huggingface_hub import split_state_dict_into_shards_factory
    from safetensors.numpy import save_file

    rng = np.random.default_rng(1)
    unet = {f"down_blocks.{n}.conv.weight": rng.standard_normal((8, 4, 3, 3), np.float32) for n in range(3)}
    split = split_state_dict_into_shards_factory(
        unet,
        get_storage_size=lambda array: array.nbytes,
        filename_pattern="diffusion_pytorch_model{suffix}.safetensors",
        max_shard_size=1500,
    )
    (tmp_path / "unet").mkdir()
    for shard, names in split.filename_to_tensors.items():
        save_file({name: unet[name] for name in names}, str(tmp_path / "unet" / shard), metadata={"format": "pt"})
    index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
    (tmp_path / "unet" / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps(index, indent=2, sort_keys=True) + "\n"
    )
    (tmp_path / "vae").mkdir()
    vae = {"decoder.conv_in.weight": rng.standard_normal((4, 4), np.float32).astype(np.float16)}
    save_file(vae, str(tmp_path / "vae" / "diffusion_pytorch_model.fp16.safetensors"))
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))

    assert len(split.filename_to_tensors) == 3
    with ws.open(tmp_path / "unet") as ckpt:
        assert list(ckpt) == sorted(unet)
        assert all(_bits_equal(ckpt[name], array) for name, array in unet.items())
    with ws.open(tmp_path / "vae") as ckpt:
        assert _bits_equal(ckpt["decoder.conv_in.weight"], vae["decoder.conv_in.weight"])
    status, _, err = run(capsys, "ls", tmp_path)
    assert status == 2 and "a diffusers pipeline, whose components are folders (unet, vae)" in err


# -- every command takes a folder ----------------------------------------------------------------
def test_ls_show_layers_verify_stats_on_a_folder(models: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    folder = models["tied"]
    expected = _stored(folder)
    status, out, _ = run(capsys, "ls", "--json", folder)
    listed = json.loads(out)
    assert status == 0 and listed["format"] == "model-folder"
    assert {row["name"]: row["shape"] for row in listed["tensors"]} == {n: list(a.shape) for n, a in expected.items()}
    status, out, err = run(capsys, "show", "--json", folder, "model.norm.weight", "lm_head.weight")
    shown = json.loads(out)
    assert status == 0 and shown["model.norm.weight"]["values"] == expected["model.norm.weight"].tolist()
    assert shown["model.embed_tokens.weight"]["values"] == expected["model.embed_tokens.weight"].tolist()
    assert "'lm_head.weight' is 'model.embed_tokens.weight' in this checkpoint\n" in err  # the tied head
    status, out, _ = run(capsys, "layers", folder)
    assert status == 0 and "layers.1.mlp.up_proj" in out and "22,688 parameters" in out
    status, out, _ = run(capsys, "verify", folder)
    assert status == 0 and out.startswith("OK: 20 tensors, 88.6 KiB read")
    status, out, _ = run(capsys, "stats", "--json", folder)
    rows = {row["name"]: row for row in json.loads(out)}
    assert status == 0 and sorted(rows) == sorted(expected)
    assert rows["model.layers.0.mlp.up_proj.weight"]["mean"] == pytest.approx(
        float(expected["model.layers.0.mlp.up_proj.weight"].astype(np.float64).mean())
    )


def test_verify_a_folder_says_what_it_checked_in_each_shard(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    shards = len(set(_weight_map(models["tied"]).values()))
    status, out, _ = run(capsys, "verify", models["tied"])
    assert status == 0 and out.startswith("OK: 20 tensors, 88.6 KiB read, each within its shard")
    assert f"no checksums checked: the {shards} safetensors shards have none, so changed values" in out
    bins = sorted(set(_weight_map(models["bin"]).values()))
    status, out, _ = run(capsys, "verify", models["bin"])
    assert status == 0 and out.endswith(f"verified: zip CRC-32 in the {len(bins)} pytorch shards checked\n"), out
    status, out, _ = run(capsys, "verify", models["single"])  # a folder of one file: as for the file
    assert status == 0 and "no checksums checked: this safetensors file has none" in out
    folder = shutil.copytree(models["bin"], tmp_path / "legacy")  # one shard in torch's legacy format: no checksums
    torch.save(torch.load(folder / bins[0], weights_only=True), folder / bins[0], _use_new_zipfile_serialization=False)
    status, out, _ = run(capsys, "verify", folder)
    assert status == 0 and f"zip CRC-32 in the {len(bins) - 1} pytorch shards (" in out
    assert f"no checksums in the 1 pytorch shard ({bins[0]}), so changed values cannot be detected there" in out
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "model.safetensors.index.json").write_text('{"metadata": {}, "weight_map": {}}')
    status, out, _ = run(capsys, "verify", tmp_path / "none")
    assert status == 0 and out == "OK: 0 tensors, 0 B read: there is no shard to check (the index names none)\n"


def test_diff_folder_against_folder_file_and_bin_folder(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(capsys, "diff", "--json", models["tied"], models["bin"])  # safetensors shards vs bin shards
    assert status == 0 and json.loads(out)["equal"] is True
    status, out, _ = run(capsys, "diff", "--json", models["tied"], models["single"] / "model.safetensors")
    assert status == 0 and json.loads(out)["equal"] is True
    status, out, _ = run(capsys, "diff", "--json", models["tied"], models["untied"])
    assert status == 1 and json.loads(out)["equal"] is False


def test_convert_reads_a_folder(models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    out = tmp_path / "model.pt"
    status, _, err = run(capsys, "convert", models["bin"], out)
    assert status == 0, err
    loaded = torch.load(out, weights_only=True)
    expected = _stored(models["bin"])
    assert sorted(loaded) == sorted(expected)
    assert all(_bits_equal(loaded[name].numpy(), array) for name, array in expected.items())


def test_plot_a_folder_tensor(models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "plot.png"
    status, _, err = run(capsys, "plot", models["tied"], "model.layers.1.self_attn.q_proj.weight", "--out", out)
    assert status == 0, err
    assert out.read_bytes().startswith(b"\x89PNG")


def test_the_viewer_api_serves_a_folder(models: dict[str, Path]) -> None:
    import threading

    from test_viewer import api

    from weightscope.analysis import tensor_stats
    from weightscope.output import dumps_json
    from weightscope.summary import summarize
    from weightscope.viewer import make_server

    with ws.open(models["tied"]) as ckpt, make_server([ckpt]) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            names = [row["name"] for row in api(server, "tensors", file=0)["tensors"]]
            assert names == list(_stored(models["tied"]))
            assert api(server, "summary", file=0) == json.loads(dumps_json(summarize(ckpt).to_json()))
            answer = api(server, "tensor", file=0, name="model.norm.weight")
            stats = tensor_stats("model.norm.weight", ckpt["model.norm.weight"])
            assert answer["stats"] == json.loads(dumps_json(stats.to_json()))
        finally:
            server.shutdown()
            thread.join(5)


def test_to_dask_and_slices_read_each_shard_by_range(models: dict[str, Path]) -> None:
    from weightscope.lazy import tensor_source

    expected = _stored(models["bin"])
    with ws.open(models["tied"]) as ckpt:
        source = tensor_source(ckpt, "model.embed_tokens.weight")
        assert source.file == ckpt.info("model.embed_tokens.weight").file and source.file.endswith(
            "00001-of-00006.safetensors"
        )
        arrays = ckpt.to_dask(chunk_bytes=1024)
        for name, array in expected.items():
            assert _bits_equal(arrays[name].compute(scheduler="synchronous"), array), name
        assert _bits_equal(
            np.asarray(ckpt.slice("model.embed_tokens.weight")[3:5, ::2]),
            expected["model.embed_tokens.weight"][3:5, ::2],
        )


def test_runs_over_trainer_folders_of_shards(models: dict[str, Path], tmp_path: Path, capsys: Any) -> None:
    """Trainer's ``checkpoint-N/`` folders as it writes them (sharded weights, trainer_state.json, optimizer.pt);
    the steps are trainer_state.json's global_step (here not the folders' numbers, to tell them apart)."""
    for number, (name, step) in enumerate([("checkpoint-500", 510), ("checkpoint-1000", 1020)]):
        folder = shutil.copytree(models["tied" if number == 0 else "untied"], tmp_path / name)
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
        (folder / "optimizer.pt").write_bytes(b"")
    status, out, err = run(capsys, "runs", "stats", "--json", "--filter", "model.norm.weight", tmp_path)
    assert status == 0, err
    document = json.loads(out)
    assert [(Path(entry["path"]).name, entry["step"]) for entry in document["checkpoints"]] == [
        ("checkpoint-500", 510),
        ("checkpoint-1000", 1020),
    ]
    norms = [row["l2"] for row in document["tensors"]]
    for norm, name in zip(norms, ["tied", "untied"], strict=True):
        assert norm == pytest.approx(
            float(np.linalg.norm(_stored(models[name])["model.norm.weight"].astype(np.float64)))
        )


def test_a_folder_over_http_fetches_each_file_once_to_list(models: dict[str, Path]) -> None:
    """A folder URL (HTTP lists nothing: the names transformers loads are asked for) and an index URL read as
    the local files; listing fetches the index, config.json and each shard's header — the whole of each shard
    here, as these are smaller than a read-ahead block (``weightscope.remote``) — each once."""
    from test_remote import assert_same_as_local, serving

    folder = models["untied"]
    files = ["model.safetensors.index.json", "config.json", *sorted(set(_weight_map(folder).values()))]
    with serving(folder.parent) as root:
        assert_same_as_local(f"{root}/untied/model.safetensors.index.json", folder / "model.safetensors.index.json")
        with ws.open(f"{root}/untied/") as ckpt:
            assert ckpt.format == "model-folder" and len(list(ckpt.infos())) == 21
            assert ckpt.path.store.bytes_fetched <= sum((folder / name).stat().st_size for name in files)
            assert _bits_equal(ckpt["lm_head.weight"], _stored(folder)["lm_head.weight"])


def test_a_hugging_face_cache_snapshot_whose_files_link_to_its_blobs(models: dict[str, Path], tmp_path: Path) -> None:
    """The cache's layout (huggingface_hub ``file_download``): ``snapshots/<revision>/<file>`` are relative links
    to ``blobs/<hash>``; the shards' links lead out of the snapshot's folder, into the cache's blobs only."""
    import hashlib

    repo = tmp_path / "hub" / "models--org--tiny"
    snapshot = repo / "snapshots" / ("a" * 40)
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for file in models["tied"].iterdir():
        blob = hashlib.sha256(file.read_bytes()).hexdigest()
        shutil.copy(file, repo / "blobs" / blob)
        (snapshot / file.name).symlink_to(Path("..", "..", "blobs", blob))
    with ws.open(snapshot) as ckpt:
        expected = _stored(models["tied"])
        assert list(ckpt) == list(expected) and all(_bits_equal(ckpt[n], a) for n, a in expected.items())
        assert ckpt.metadata["config.architectures"] == "LlamaForCausalLM"
    outside = tmp_path / "elsewhere.safetensors"
    shutil.copy(models["tied"] / "model-00001-of-00006.safetensors", outside)
    (snapshot / "model-00001-of-00006.safetensors").unlink()
    (snapshot / "model-00001-of-00006.safetensors").symlink_to(outside)  # a link out of the cache: refused
    with pytest.raises(ws.RefusedError, match="escapes the model's folder"):
        ws.open(snapshot)


def test_a_folder_of_an_onnx_model_and_its_external_data(tmp_path: Path) -> None:
    """``weights.bin`` ends as a PyTorch file does, but no format claims its raw bytes: the model is the one."""
    import onnx
    from onnx import helper, numpy_helper

    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    model = helper.make_model(helper.make_graph([], "g", [], [], initializer=[numpy_helper.from_array(array, "w")]))
    onnx.save_model(
        model, tmp_path / "model.onnx", save_as_external_data=True, location="weights.bin", size_threshold=0
    )
    with ws.open(tmp_path) as ckpt:
        assert ckpt.files == [tmp_path / "model.onnx"] and _bits_equal(ckpt["w"], array)


@pytest.mark.parametrize("name", ["tied", "fp16", "untied"])
def test_values_by_dtype_are_the_hubs_parameter_count(
    models: dict[str, Path], name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """huggingface_hub's own count (``SafetensorsRepoMetadata.parameter_count``, what the Hub shows), made from
    the shards' headers as ``get_safetensors_metadata`` makes it, equals summary's values by dtype."""
    from huggingface_hub.utils import SafetensorsFileMetadata, SafetensorsRepoMetadata, TensorInfo

    folder = models[name]
    weight_map = _weight_map(folder)
    files = {}
    for shard in sorted(set(weight_map.values())):
        data = (folder / shard).read_bytes()
        header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
        metadata = header.pop("__metadata__", {})
        tensors = {
            key: TensorInfo(entry["dtype"], entry["shape"], tuple(entry["data_offsets"]))
            for key, entry in header.items()
        }
        files[shard] = SafetensorsFileMetadata(metadata=metadata, tensors=tensors)
    hub = SafetensorsRepoMetadata(metadata=None, sharded=True, weight_map=weight_map, files_metadata=files)
    status, out, _ = run(capsys, "summary", "--json", folder)
    names = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}
    assert status == 0 and json.loads(out)["values_by_dtype"] == {
        names[dtype]: count for dtype, count in hub.parameter_count.items()
    }


class _Calls:
    """Pickled as a call of ``os.getcwd`` (harmless, and outside the allow-list)."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        import os

        return os.getcwd, ()


def test_scan_a_folder_scans_each_shard(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    folder = shutil.copytree(models["bin"], tmp_path / "bin")
    shards = sorted(set(_weight_map(folder).values()))
    status, out, _ = run(capsys, "scan", folder)
    assert status == 0 and [line for line in out.splitlines() if not line.startswith("  ")] == [
        f"{(folder / shard).resolve()}:" for shard in shards
    ]
    state = torch.load(folder / shards[1], weights_only=True)
    torch.save({**state, "extra": _Calls()}, folder / shards[1])
    status, out, err = run(capsys, "scan", "--json", folder / shards[0])  # a shard: its set
    refused = [entry for entry in json.loads(out) if not entry["allowed"]]
    assert {Path(entry["file"]).name for entry in refused} == {shards[1]}
    assert "posix.getcwd" in {entry["name"] for entry in refused}
    assert status == 6 and err == (
        f"weightscope: {(folder / shards[1]).resolve()}: {len(refused)} refused: opening this file would run code\n"
    )


def test_a_folder_converted_to_bin_shards_reads_back_equal(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Read as a folder, written as one (weightscope.shards), read back as one: the same tensors, the same
    config, and transformers loads it."""
    from transformers import LlamaForCausalLM

    out = tmp_path / "as-bin"
    status, _, err = run(capsys, "convert", models["tied"], out, "--to", "pytorch", "--max-shard-size", "20KB")
    assert status == 0, err
    assert (out / "config.json").read_bytes() == (models["tied"] / "config.json").read_bytes()
    expected = _stored(models["tied"])
    with ws.open(out) as ckpt:
        assert ckpt.format == "model-folder" and len(ckpt.files) > 2
        assert all(file.name.startswith("pytorch_model-") for file in ckpt.files)
        assert sorted(ckpt) == sorted(expected) and all(_bits_equal(ckpt[n], a) for n, a in expected.items())
        assert _bits_equal(ckpt["lm_head.weight"], expected["model.embed_tokens.weight"])
    status, out_text, _ = run(capsys, "diff", "--json", models["tied"], out)
    assert status == 0 and json.loads(out_text)["equal"] is True
    model = LlamaForCausalLM.from_pretrained(out)
    assert _bits_equal(model.lm_head.weight.detach().numpy(), expected["model.embed_tokens.weight"])
