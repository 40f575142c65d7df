"""Flax msgpack files read without Flax: every tensor equals what flax's own msgpack_restore gave, bit for bit.

The fixtures (tests/fixtures/flax/) and flax's answers for them (expected.npz, expected.json) were made by
``make_flax.py`` beside them, with flax, jax and optax (the fixtures venv); the Hub folders and what transformers 4
loads from them into PyTorch by ``make_flax_hub.py``, with transformers 4.46 (5 has no Flax models). None of those
is imported here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

import weightscope as ws
from weightscope.cli import main

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "flax"
EXPECTED: dict[str, dict[str, dict[str, Any]]] = json.loads((FIXTURES / "expected.json").read_text())
FILES = sorted(EXPECTED)
PYTORCH_CONVENTION = ["--names", "pytorch", "--layout", "pytorch"]


def flax_restore(path: Path) -> dict[str, np.ndarray]:
    """The arrays ``flax.serialization.msgpack_restore`` gives for ``path``, flattened with ``/``: msgpack (the library
    flax reads with) and flax's ext hook, ``_ndarray_from_bytes`` and ``_unchunk``, restated (flax is not installed
    here; the committed fixtures hold flax's own answers)."""
    import ml_dtypes
    import msgpack

    def ndarray(data: bytes) -> np.ndarray:
        shape, name, buffer = msgpack.unpackb(data, raw=True)
        dtype = ml_dtypes.bfloat16 if name == b"bfloat16" else np.dtype(name)
        return np.frombuffer(buffer, dtype=dtype, count=-1, offset=0).reshape(shape, order="C")

    def hook(code: int, data: bytes) -> Any:
        return ndarray(data) if code in (1, 3) else msgpack.ExtType(code, data)

    def flatten(tree: Any, prefix: str) -> dict[str, np.ndarray]:
        if isinstance(tree, dict) and "__msgpack_chunked_array__" in tree:
            shape = tuple(tree["shape"][str(number)] for number in range(len(tree["shape"])))
            chunks = [tree["chunks"][str(number)] for number in range(len(tree["chunks"]))]
            return {prefix[:-1]: np.concatenate(chunks).reshape(shape)}
        if isinstance(tree, dict):
            return {k: v for key, value in tree.items() for k, v in flatten(value, f"{prefix}{key}/").items()}
        return {prefix[:-1]: tree}

    restored = msgpack.unpackb(path.read_bytes(), ext_hook=hook, raw=False, strict_map_key=False)
    return flatten(restored, "")


@pytest.fixture(scope="module")
def restored() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "expected.npz") as stored:
        return {name: stored[name] for name in stored.files}


@pytest.mark.parametrize("file", FILES)
def test_every_leaf_is_what_msgpack_restore_gives(file: str, restored: dict[str, np.ndarray]) -> None:
    leaves = EXPECTED[file]
    with ws.open(FIXTURES / file, format="flax-msgpack") as ckpt:  # a shard alone (sniffed, it opens its set)
        arrays = {name for name, leaf in leaves.items() if "dtype" in leaf}
        assert list(ckpt) == [name for name in leaves if name in arrays]  # names and order as flax flattens them
        for name in arrays:
            array = ckpt[name]
            assert array.dtype.name == leaves[name]["dtype"] and list(array.shape) == leaves[name]["shape"]
            assert array.tobytes() == restored[f"{file}:{name}"].tobytes(), name
            assert not array.flags.writeable
        assert ckpt.metadata == {name: leaf["value"] for name, leaf in leaves.items() if "value" in leaf}
        assert ckpt.verify() == []


def test_arrays_are_views_of_the_file_at_their_recorded_offsets() -> None:
    raw = (FIXTURES / "train_state.msgpack").read_bytes()
    with ws.open(FIXTURES / "train_state.msgpack") as ckpt:
        info = ckpt.info("params/Dense_0/kernel")
        array = ckpt["params/Dense_0/kernel"]
        assert info.nbytes == 48 * 4 * 4 and raw[info.offset : info.offset + info.nbytes] == array.tobytes()
        assert not array.flags.owndata  # the mapped file's bytes, not a copy
        assert ckpt.extent("params/Dense_0/kernel") is not None


def test_a_chunked_array_is_joined_from_its_chunks() -> None:
    with ws.open(FIXTURES / "chunked.msgpack") as ckpt:
        assert ckpt.extent("big") is None and ckpt.extent("small") is not None  # joined on read; plain
        assert np.array_equal(ckpt["big"], np.arange(50, dtype=np.float32).reshape(5, 10))
        assert ckpt.info("layer/big_bf16").type_name == "bfloat16"
        assert ckpt["layer/big_bf16"].astype(np.float32).tolist() == np.arange(40).reshape(2, 4, 5).tolist()


def test_flax_and_optax_names_make_layers_with_their_optimizer_state() -> None:
    with ws.open(FIXTURES / "train_state.msgpack") as ckpt:
        layers = ckpt.layers()
        assert sorted(layers) == ["BatchNorm_0", "Conv_0", "Dense_0", "Dense_1", "LayerNorm_0"]
        dense = layers["Dense_0"]
        assert dense.weight is not None and dense.weight.name == "params/Dense_0/kernel"
        assert dense.bias is not None and dense.bias.name == "params/Dense_0/bias"
        state = dense.optimizer_state["params/Dense_0/kernel"]
        assert {slot: info.name for slot, info in state.items()} == {
            "mu": "opt_state/0/mu/Dense_0/kernel",
            "nu": "opt_state/0/nu/Dense_0/kernel",
        }
        assert set(layers["LayerNorm_0"].parameters) == {"scale", "offset"}
        assert ckpt.role("opt_state/0/count").kind == "optimizer"
    with ws.open(FIXTURES / "variables.msgpack") as ckpt:
        norm = ckpt.layers()["BatchNorm_0"]
        assert {role: info.name for role, info in norm.parameters.items()} == {
            "scale": "params/BatchNorm_0/scale",
            "offset": "params/BatchNorm_0/bias",
            "running_mean": "batch_stats/BatchNorm_0/mean",
            "running_var": "batch_stats/BatchNorm_0/var",
        }


def test_summary_tells_the_layers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", str(FIXTURES / "variables.msgpack")]) == 0
    out = capsys.readouterr().out
    for kind in ("BatchNorm 3", "Conv2D 3×3 2 → 3", "Dense 48 → 4", "LayerNorm 4", "Dense 4 → 2"):
        assert kind in out
    assert main(["summary", str(FIXTURES / "hf_flax")]) == 0
    assert "Embedding 16 × 8" in capsys.readouterr().out


def test_convert_with_pytorch_names_gives_torch_linear_weights(tmp_path: Path) -> None:
    out = tmp_path / "model.safetensors"
    source = FIXTURES / "train_state.msgpack"
    assert main(["convert", str(source), str(out), "--names", "pytorch", "--layout", "pytorch"]) == 0
    converted = load_file(str(out))
    assert sorted(converted) == sorted(
        f"params.{layer}.{role}"
        for layer in ("BatchNorm_0", "Conv_0", "Dense_0", "Dense_1", "LayerNorm_0")
        for role in ("weight", "bias")  # a norm's scale is torch's weight
    )  # the optimizer state is left out
    with ws.open(source) as ckpt:
        kernel, bias, conv = ckpt["params/Dense_0/kernel"], ckpt["params/Dense_0/bias"], ckpt["params/Conv_0/kernel"]
    linear = torch.nn.Linear(48, 4)
    linear.load_state_dict({"weight": torch.from_numpy(converted["params.Dense_0.weight"]), "bias": torch.tensor(bias)})
    inputs = np.random.default_rng(0).standard_normal((2, 48)).astype(np.float32)
    assert np.allclose(linear(torch.from_numpy(inputs)).detach().numpy(), inputs @ kernel + bias, atol=1e-6)
    assert np.array_equal(converted["params.Conv_0.weight"], conv.transpose(3, 2, 0, 1))


def test_a_hub_folder_reads_flax_model_msgpack_single_or_sharded() -> None:
    with ws.open(FIXTURES / "hf_flax") as single, ws.open(FIXTURES / "hf_flax_sharded") as sharded:
        assert sorted(sharded) == sorted(single) and len(single) == 28  # the index lists them sorted
        for name in single:
            assert single[name].tobytes() == sharded[name].tobytes()
        assert len(sharded.files) == 5
    with ws.open(FIXTURES / "hf_flax_sharded" / "flax_model-00002-of-00005.msgpack") as shard:
        assert sorted(shard) == sorted(single)  # a shard opens its set, as with safetensors
    with ws.open(FIXTURES / "train_state.msgpack") as ckpt:
        assert ckpt.format == "flax-msgpack"


def test_a_legacy_flax_checkpoint_file_is_known_by_its_name_and_first_byte(tmp_path: Path) -> None:
    legacy = FIXTURES / "legacy" / "checkpoint_3"  # flax.training.checkpoints.save_checkpoint, Orbax off
    with ws.open(legacy) as ckpt, ws.open(FIXTURES / "variables.msgpack") as same:
        assert ckpt.format == "flax-msgpack" and list(ckpt) == list(same)
    other = tmp_path / "checkpoint_3"
    other.write_bytes(b"\x00" + legacy.read_bytes())  # no msgpack map first: not claimed
    with pytest.raises(ws.UnsupportedFormatError, match="not a checkpoint format"):
        ws.open(other)


def test_converted_with_pytorch_names_and_layout_it_is_what_transformers_loads_from_flax(tmp_path: Path) -> None:
    # hf_flax_in_pytorch.npz: transformers 4's GPT2LMHeadModel.from_pretrained(hf_flax, from_flax=True) state dict
    out = tmp_path / "model"
    assert main(["convert", str(FIXTURES / "hf_flax"), str(out / "model.safetensors"), *PYTORCH_CONVENTION]) == 0
    converted = load_file(str(out / "model.safetensors"))
    with np.load(FIXTURES / "hf_flax_in_pytorch.npz") as loaded:
        assert sorted(converted) == sorted(set(loaded.files) - {"lm_head.weight"})  # the head: tied to wte
        for name, array in converted.items():
            assert array.dtype == loaded[name].dtype and array.tobytes() == loaded[name].tobytes(), name
    from transformers import GPT2LMHeadModel  # and transformers 5 loads the converted folder

    shutil.copy(FIXTURES / "hf_flax" / "config.json", out)
    model = GPT2LMHeadModel.from_pretrained(out)
    assert np.array_equal(model.lm_head.weight.detach().numpy(), converted["transformer.wte.weight"])
    assert np.array_equal(
        model.transformer.h[1].mlp.c_fc.weight.detach().numpy(), converted["transformer.h.1.mlp.c_fc.weight"]
    )


def test_transformers_order_puts_flax_weights_after_safetensors_and_bin(tmp_path: Path) -> None:
    folder = shutil.copytree(FIXTURES / "hf_flax", tmp_path / "both")
    ws.save({"lm_head.weight": np.ones((2, 2), np.float32)}, folder / "pytorch_model.bin")
    with ws.open(folder) as ckpt:
        assert list(ckpt) == ["lm_head.weight"]
        assert ckpt.notes == [
            f"{folder}: read pytorch_model.bin, as transformers loads it first; not read: flax_model.msgpack"
        ]


@pytest.mark.parametrize("file", ["hf_flax/flax_model.msgpack", "variables.msgpack", "writer_reference.msgpack"])
def test_written_back_the_bytes_are_flaxs(file: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if file == "writer_reference.msgpack":  # flax's msgpack_serialize with its chunk size set to 64 bytes: so here
        monkeypatch.setattr("weightscope.formats.flax_msgpack.MAX_CHUNK_SIZE", 64)
    with ws.open(FIXTURES / file, format="flax-msgpack") as ckpt:
        written = ws.save(ckpt, tmp_path / "out.msgpack")
        assert any(ckpt.extent(name) is None for name in ckpt) == (file == "writer_reference.msgpack")  # chunked
    assert written.read_bytes() == (FIXTURES / file).read_bytes()


def test_a_sharded_folder_is_written_as_transformers_4_cut_it(tmp_path: Path) -> None:
    with ws.open(FIXTURES / "hf_flax") as ckpt:
        folder = ws.save(ckpt, tmp_path / "out", format="flax-msgpack", max_shard_size=2000)
    expected = sorted(path.name for path in (FIXTURES / "hf_flax_sharded").glob("flax_model*"))
    assert sorted(path.name for path in folder.iterdir()) == expected
    for name in expected[:-1]:  # the shards, byte for byte
        assert (folder / name).read_bytes() == (FIXTURES / "hf_flax_sharded" / name).read_bytes()
    index = json.loads((folder / expected[-1]).read_text())
    assert index == json.loads((FIXTURES / "hf_flax_sharded" / expected[-1]).read_text())


def test_what_flax_cannot_read_back_is_refused_before_writing(tmp_path: Path) -> None:
    import ml_dtypes

    with pytest.raises(ws.UnsupportedFormatError, match="float8_e4m3fn"):
        ws.save({"a": np.zeros(2, ml_dtypes.float8_e4m3fn)}, tmp_path / "a.msgpack")
    with pytest.raises(ws.UsageError, match="'a' is a tensor too"):
        ws.save({"a": np.zeros(2), "a/b": np.zeros(2)}, tmp_path / "b.msgpack")
    assert not list(tmp_path.iterdir())


def test_the_restated_restore_agrees_with_flaxs_answers(restored: dict[str, np.ndarray]) -> None:
    for file in ("train_state.msgpack", "chunked.msgpack", "variables.msgpack"):  # (what test_conformance reads by)
        arrays = {name: value for name, value in flax_restore(FIXTURES / file).items() if isinstance(value, np.ndarray)}
        assert sorted(arrays) == sorted(name for name, leaf in EXPECTED[file].items() if "dtype" in leaf)
        for name, array in arrays.items():
            assert array.tobytes() == restored[f"{file}:{name}"].tobytes()
            assert array.dtype.name == EXPECTED[file][name]["dtype"]


def test_over_http_files_and_folders_read_as_local() -> None:
    from test_remote import assert_same_as_local, serving

    with serving(FIXTURES) as root:
        for file in ("train_state.msgpack", "chunked.msgpack", "dtypes.msgpack"):
            assert_same_as_local(f"{root}/{file}", FIXTURES / file).close()
        with ws.open(f"{root}/hf_flax_sharded/") as remote, ws.open(FIXTURES / "hf_flax_sharded") as local:
            assert list(remote) == list(local)
            assert all(remote[name].tobytes() == local[name].tobytes() for name in local)


def test_scan_finds_no_code_in_a_msgpack_tree(capsys: pytest.CaptureFixture[str]) -> None:
    # train_state.msgpack starts 0x83, a fixmap of 3 (which pickle's opcodes read as EXT2): it is never read as one
    assert (FIXTURES / "train_state.msgpack").read_bytes()[0] == 0x83
    assert main(["scan", str(FIXTURES / "train_state.msgpack")]) == 0
    assert capsys.readouterr() == ("", "")
    broken = Path(__file__).resolve().parent / "corpus" / "flax" / "TruncatedFileError--cut-inside-a-tensor.msgpack"
    assert main(["scan", str(broken)]) == 4  # what opening it gives


def test_the_conformance_maker_writes_as_flax_does() -> None:
    from conformance_makers import flax_bytes

    for file in ("variables.msgpack", "hf_flax/flax_model.msgpack"):
        with ws.open(FIXTURES / file) as ckpt:
            tensors = {name: np.array(ckpt[name]) for name in ckpt}
        assert flax_bytes(tensors) == (FIXTURES / file).read_bytes()


def test_a_lone_array_is_named_after_its_file(tmp_path: Path) -> None:
    from conformance_makers import flax_bytes

    whole = flax_bytes({"x": np.arange(6, dtype=np.int16).reshape(2, 3)})
    lone = tmp_path / "weights.msgpack"
    lone.write_bytes(whole[3:])  # the ndarray alone, without the map {"x": ...} (1 byte and a 1-byte key)
    with ws.open(lone) as ckpt:
        assert list(ckpt) == ["weights"] and ckpt["weights"].tolist() == [[0, 1, 2], [3, 4, 5]]
