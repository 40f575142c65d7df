"""PyTorch DCP folders read without torch: every tensor as torch's own ``dcp_to_torch_save`` gives it, bit for bit.

Single-process checkpoints are saved live with ``torch.distributed.checkpoint.save``; the 2-rank FSDP2 ones are
the committed fixtures of ``tests/fixtures/dcp/make_dcp_fixtures.py``, compared with torch run live on them.
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint._nested_dict import flatten_state_dict
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

import weightscope as ws
from weightscope.cli import main
from weightscope.runs import find_checkpoints, run_stats

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "dcp"


def save(state: dict[str, Any], folder: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "assuming the intent is to save in a single process"
        dcp.save(state, checkpoint_id=folder)
    return folder


def oracle(folder: Path, tmp_path: Path) -> dict[str, Any]:
    """What torch makes of the folder: ``dcp_to_torch_save``, loaded, flattened as DCP names it."""
    out = tmp_path / f"{folder.name}.pt"
    dcp_to_torch_save(folder, out)
    flat, _ = flatten_state_dict(torch.load(out, weights_only=True))
    return flat


def same_bits(array: np.ndarray, tensor: torch.Tensor) -> bool:
    ours = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    theirs = tensor.contiguous().reshape(-1).view(torch.uint8).numpy()
    return array.shape == tuple(tensor.shape) and np.array_equal(ours, theirs)


def assert_as_torch(folder: Path, tmp_path: Path) -> dict[str, Any]:
    expected = oracle(folder, tmp_path)
    tensors = {name: value for name, value in expected.items() if isinstance(value, torch.Tensor)}
    with ws.open(folder) as ckpt:
        assert ckpt.format == "dcp"
        assert sorted(ckpt) == sorted(tensors)
        for name, tensor in tensors.items():
            assert ckpt.info(name).type_name == str(tensor.dtype).removeprefix("torch."), name
            assert same_bits(ckpt[name], tensor), name
        assert ckpt.verify() == []
    return expected


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    state = {
        "model": {
            "layer.weight": torch.randn(7, 5),
            "layer.bias": torch.randn(5).to(torch.bfloat16),
            "count": torch.tensor(3),
            "empty": torch.zeros(0, 4, dtype=torch.float16),
            "flags": torch.tensor([True, False]),
            "view": torch.arange(24, dtype=torch.int32).reshape(4, 6).t(),  # not contiguous: saved as a clone
        },
        "extra": {"lr": 0.1, "names": ["x", "y"], "pair": (1, 2), "nested": [torch.ones(2), {"deep": torch.ones(1)}]},
        "step": 5,
    }
    return save(state, tmp_path / "mixed")


def test_single_process_checkpoint_reads_as_torch_converts_it(mixed: Path, tmp_path: Path) -> None:
    expected = assert_as_torch(mixed, tmp_path)
    with ws.open(mixed) as ckpt:
        assert ckpt.metadata["step"] == "5" and ckpt.metadata["extra.names"] == "['x', 'y']"
        assert ckpt.metadata["extra.pair"] == "(1, 2)" and ckpt.metadata["dcp.version"] == "1.0.0"
        assert {"extra.nested.0", "extra.nested.1.deep"} <= set(ckpt) and expected["extra.lr"] == 0.1
        assert ckpt.extent("model.layer.weight") is not None  # one chunk: a plain extent (slices, dask)
        assert np.array_equal(ckpt.slice("model.layer.weight")[2:4], ckpt["model.layer.weight"][2:4])
        assert ckpt.sharding() == {
            "ranks": 1,
            "chunks_per_tensor": {1: len(ckpt)},
            "bytes_per_file": {"__0_0.distcp": (mixed / "__0_0.distcp").stat().st_size},
        }


def test_metadata_or_a_data_file_opens_its_folder(mixed: Path) -> None:
    for file in (".metadata", "__0_0.distcp"):
        with ws.open(mixed / file) as ckpt:
            assert ckpt.format == "dcp" and ckpt.path == mixed and "model.layer.weight" in ckpt


def test_fsdp2_two_ranks_uneven_chunks_and_adam_state(tmp_path: Path) -> None:
    folder = FIXTURES / "fsdp2_adam"
    assert_as_torch(folder, tmp_path)
    with ws.open(folder) as ckpt:
        assert ckpt.chunks("model.0.weight") == [((0, 0), (4, 5), "__0_0.distcp"), ((4, 0), (3, 5), "__1_0.distcp")]
        assert ckpt.extent("model.0.weight") is None  # sharded: reassembled on read
        role = ckpt.role("optim.state.0.weight.exp_avg_sq")
        assert (role.kind, role.role, role.owner) == ("optimizer", "exp_avg_sq", "model.0.weight")
        assert ckpt.role("optim.state.2.bias.step").owner == "model.2.bias"
        assert set(ckpt.layers()["0"].optimizer_state["model.0.weight"]) == {"exp_avg", "exp_avg_sq", "step"}
        assert ckpt.metadata["optim.param_groups.0.params"] == "['0.weight', '0.bias', '2.weight', '2.bias']"
        assert ckpt.sharding()["ranks"] == 2  # type: ignore[index]


def test_ranks_saved_without_collectives_are_one_checkpoint(tmp_path: Path) -> None:
    from torch.distributed.checkpoint import FileSystemReader

    folder = FIXTURES / "no_collectives"  # __0.metadata and __1.metadata: each lists what its rank wrote
    with ws.open(folder / "__1.metadata") as ckpt, ws.open(FIXTURES / "fsdp2_adam") as whole:
        assert ckpt.path == folder and sorted(ckpt) == sorted([*(name for name in whole if "model" in name), "seen"])
        assert ckpt.chunks("model.0.weight") == [((0, 0), (4, 5), "__0_0.distcp"), ((4, 0), (3, 5), "__1_0.distcp")]
        for name in ckpt:
            if name != "seen":
                assert np.array_equal(ckpt[name], whole[name]), name
        ranks = [FileSystemReader(folder).read_metadata(rank=rank) for rank in (0, 1)]
        assert [metadata.state_dict_metadata["seen"].chunks[0].offsets for metadata in ranks] == [(), ()]
        assert ckpt["seen"] == 0.0  # both ranks saved their own value: rank 0's is read
        assert ckpt.verify() == []
    from weightscope.formats.dcp import scan

    report = scan(folder)  # both ranks' metadata
    assert report.verdict is None and [entry.count for entry in report if entry.name.endswith(".Metadata")] == [2, 2]
    (folder_copy := tmp_path / "copy").mkdir()
    for file in ("__1.metadata", "__1_0.distcp"):
        (folder_copy / file).write_bytes((folder / file).read_bytes())
    (folder_copy / "__0_0.distcp").write_bytes((folder / "__0_0.distcp").read_bytes())
    with pytest.raises(ws.CheckpointNotFoundError, match=r"__0\.metadata is missing"):
        ws.open(folder_copy, format="dcp")


def test_hf_safetensors_storage_reads_as_torch_loads_it(capsys: pytest.CaptureFixture[str]) -> None:
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    folder = FIXTURES / "hf_sharded"
    with ws.open(folder) as ckpt, ws.open(FIXTURES / "fsdp2_adam") as whole:
        names = sorted(ckpt)
        assert names == ["0.bias", "0.weight", "2.bias", "2.weight"] and ckpt.sharding()["ranks"] == 2  # type: ignore[index]
        expected = {name: torch.empty(ckpt.info(name).shape) for name in names}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dcp.load(expected, storage_reader=HuggingFaceStorageReader(str(folder)))
        for name in names:
            assert same_bits(ckpt[name], expected[name]), name
            assert np.array_equal(ckpt[name], whole[f"model.{name}"])
        assert ckpt.verify() == []
    assert main(["verify", str(folder)]) == 0
    assert "no checksums checked: the 2 dcp shards have none" in capsys.readouterr().out


def test_megatron_optimizer_state_keys_attach_to_their_parameter(tmp_path: Path) -> None:
    # Megatron-Core names sharded optimizer state optimizer.state.<slot>.<parameter key>, in a flat state dict
    flat = {"decoder.layers.linear.weight": torch.ones(4, 2), "embedding.word_embeddings.weight": torch.ones(8, 2)}
    flat |= {
        f"optimizer.state.{slot}.{name}": torch.zeros(value.shape)
        for name, value in list(flat.items())
        for slot in ("exp_avg", "fp32_param")
    }
    with ws.open(save(flat, tmp_path / "iter_0000010")) as ckpt:
        role = ckpt.role("optimizer.state.fp32_param.decoder.layers.linear.weight")
        assert (role.kind, role.role, role.owner) == ("optimizer", "fp32_param", "decoder.layers.linear.weight")
        assert (
            ckpt.role("optimizer.state.exp_avg.embedding.word_embeddings.weight").owner
            == "embedding.word_embeddings.weight"
        )


def test_zstd_items_read_as_torch_reads_them() -> None:
    expected = np.load(FIXTURES / "zstd_expected.npz")  # made by torch with zstandard: make_dcp_zstd.py
    with ws.open(FIXTURES / "zstd") as ckpt:
        assert sorted(ckpt) == sorted(expected.files) and ckpt.metadata["lr"] == "0.5"
        for name in expected.files:
            values = ckpt[name]
            assert np.array_equal(values.view(np.uint16) if values.dtype.name == "bfloat16" else values, expected[name])
            assert ckpt.extent(name) is None  # compressed: read through its decompressed item
        assert ckpt.verify() == []


def test_megatron_common_pt_is_listed_beside(tmp_path: Path) -> None:
    folder = save({"decoder.weight": torch.ones(2, 3)}, tmp_path / "iter_0000100")
    (folder / "metadata.json").write_text(json.dumps({"sharded_backend": "torch_dist", "sharded_backend_version": 1}))
    torch.save({"embedding": torch.arange(4.0), "iteration": 100}, folder / "common.pt")
    with ws.open(folder) as ckpt:
        assert sorted(ckpt) == ["decoder.weight", "embedding"]
        assert ckpt.role("decoder.weight").kind == "parameter"
        assert np.array_equal(ckpt["embedding"], np.arange(4.0, dtype=np.float32))
        assert ckpt.metadata["common.iteration"] == "100" and ckpt.metadata["megatron.sharded_backend"] == "torch_dist"
    import argparse

    torch.save({"args": argparse.Namespace(lr=1.0)}, folder / "common.pt")
    with ws.open(folder) as ckpt:
        assert sorted(ckpt) == ["decoder.weight"]
        assert any("argparse.Namespace" in note for note in ckpt.notes)


class _Evil:
    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (os.getcwd, ())


def test_metadata_naming_another_global_is_refused(mixed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with open(mixed / ".metadata", "rb") as file:
        metadata = pickle.load(file)
    metadata.storage_meta.modules = [_Evil()]
    with open(mixed / ".metadata", "wb") as file:
        pickle.dump(metadata, file)
    with pytest.raises(ws.RefusedError, match=r"\.metadata: refused to load: the file wants to call posix\.getcwd"):
        ws.open(mixed)
    assert main(["ls", str(mixed)]) == 6
    assert "posix.getcwd" in capsys.readouterr().err


def test_deeply_nested_metadata_is_refused_without_recursing(mixed: Path) -> None:
    import sys

    from torch.distributed.checkpoint.metadata import ChunkStorageMetadata

    chain: Any = None
    for _ in range(5000):
        chain = ChunkStorageMetadata(chain, torch.Size([1]))
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(100_000)  # for pickle.dump's own recursion
    try:
        (mixed / ".metadata").write_bytes(pickle.dumps(chain))
    finally:
        sys.setrecursionlimit(limit)
    with pytest.raises(ws.CorruptCheckpointError, match="not a DCP Metadata but ChunkStorageMetadata"):
        ws.open(mixed)


def test_a_tuple_of_tensors_is_one_bytes_entry_noted(tmp_path: Path) -> None:
    folder = save({"w": torch.ones(2), "pair": (torch.ones(2), torch.zeros(3))}, tmp_path / "pair")
    with ws.open(folder) as ckpt:
        assert list(ckpt) == ["w"] and ckpt.notes == ["bytes entry 'pair' holds 2 tensors, not listed"]


def test_scan_lists_what_metadata_names(mixed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from weightscope.formats.dcp import scan

    report = scan(mixed)
    assert report.verdict is None and all(entry.allowed for entry in report)
    assert {"torch.distributed.checkpoint.metadata.Metadata", "torch.Size"} <= {entry.name for entry in report}
    assert main(["scan", str(mixed)]) == 0
    metadata = pickle.loads((mixed / ".metadata").read_bytes())
    metadata.storage_meta.modules = [_Evil()]
    (mixed / ".metadata").write_bytes(pickle.dumps(metadata))
    report = scan(mixed / ".metadata")
    assert [entry.name for entry in report if not entry.allowed] == ["posix.getcwd", "posix.getcwd"]
    assert isinstance(report.verdict, ws.RefusedError)
    assert main(["scan", str(mixed)]) == 6
    assert "opening this file would run code" in capsys.readouterr().err


def test_convert_to_a_file_and_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors.torch import load_file

    folder = FIXTURES / "fsdp2_adam"
    expected = oracle(folder, tmp_path)
    assert main(["convert", str(folder), str(tmp_path / "out.safetensors")]) == 0
    assert main(["convert", str(folder), f"{tmp_path / 'out'}/", "--to", "safetensors"]) == 0
    for written in (tmp_path / "out.safetensors", tmp_path / "out" / "model.safetensors"):
        loaded = load_file(written)
        assert sorted(loaded) == ["model.0.bias", "model.0.weight", "model.2.bias", "model.2.weight"]
        assert all(torch.equal(loaded[name], expected[name]) for name in loaded)
    assert main(["diff", str(folder), str(tmp_path / "out.safetensors")]) == 0
    assert main(["convert", str(folder), str(tmp_path / "all.safetensors"), "--include-optimizer"]) == 0
    loaded = load_file(tmp_path / "all.safetensors")
    assert sorted(loaded) == sorted(name for name, value in expected.items() if isinstance(value, torch.Tensor))
    assert all(torch.equal(loaded[name], expected[name]) for name in loaded)


def test_summary_shows_the_sharding(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", str(FIXTURES / "fsdp2_adam")]) == 0
    assert "sharding: 2 ranks; tensors by chunks: 4 in 1, 12 in 2; files: __0_0.distcp" in capsys.readouterr().out
    assert main(["summary", "--json", str(FIXTURES / "fsdp2_adam")]) == 0
    sizes = {name: (FIXTURES / "fsdp2_adam" / name).stat().st_size for name in ("__0_0.distcp", "__1_0.distcp")}
    sharding = json.loads(capsys.readouterr().out)["sharding"]
    assert sharding == {"ranks": 2, "chunks_per_tensor": {"1": 4, "2": 12}, "bytes_per_file": sizes}


def test_runs_takes_step_folders(tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "checkpoint"
    shutil.copytree(FIXTURES / "fsdp2_adam", run / "step-100")  # sharded: read through the reader
    with ws.open(run / "step-100") as first:
        doubled = {name: torch.from_numpy(first[name] * 2) for name in first if name.startswith("model.")}
    save(doubled, run / "step-200")  # one chunk each: read by byte range
    found = find_checkpoints(run)
    assert [(entry.path.name, entry.step) for entry in found] == [("step-100", 100), ("step-200", 200)]
    stats = run_stats(run, scheduler="sync").by_name()["model.0.weight"]
    assert [entry.step for entry in stats] == [100, 200]
    assert stats[1].stats.l2 == pytest.approx(2 * stats[0].stats.l2) and stats[1].change_first == pytest.approx(1.0)


def _rewrite(folder: Path, change: Any) -> None:
    with open(folder / ".metadata", "rb") as file:
        metadata = pickle.load(file)
    change(metadata)
    with open(folder / ".metadata", "wb") as file:
        pickle.dump(metadata, file)


def _chunks(metadata: Any, name: str) -> Any:
    return metadata.state_dict_metadata[name].chunks


def _move(metadata: Any, name: str, chunk: int, offsets: tuple[int, ...]) -> None:
    """Chunk ``chunk`` of ``name`` placed at ``offsets``, its storage entry with it."""
    from torch.distributed.checkpoint.metadata import MetadataIndex

    moved = _chunks(metadata, name)[chunk]
    stored = metadata.storage_data.pop(MetadataIndex(name, moved.offsets))
    moved.offsets = torch.Size(offsets)
    metadata.storage_data[MetadataIndex(name, moved.offsets)] = stored


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (
            lambda m: setattr(_chunks(m, "model.0.weight")[1], "offsets", torch.Size([4])),
            ws.CorruptCheckpointError,
            "no storage entry",
        ),
        (
            lambda m: setattr(_chunks(m, "model.0.weight")[1], "sizes", torch.Size([4, 5])),
            ws.CorruptCheckpointError,
            "lies outside",
        ),
        (
            lambda m: _move(m, "model.0.weight", 1, (3, 0)),
            ws.CorruptCheckpointError,
            "overlap",
        ),
        (lambda m: _chunks(m, "model.0.weight").pop(), ws.CorruptCheckpointError, "leave holes"),
        (
            lambda m: setattr(m.state_dict_metadata["model.0.weight"], "size", torch.Size([7, 5, 1])),
            ws.CorruptCheckpointError,
            "rank",
        ),
    ],
    ids=["chunk-rank", "outside", "overlap", "hole", "tensor-rank"],
)
def test_bad_chunk_geometry(tmp_path: Path, change: Any, error: type[Exception], message: str) -> None:
    import shutil

    folder = Path(shutil.copytree(FIXTURES / "fsdp2_adam", tmp_path / "copy"))
    _rewrite(folder, change)
    with pytest.raises(error, match=message):
        ws.open(folder)
