"""Orbax checkpoints read without JAX or tensorstore: every array equals Orbax's own restore, bit for bit.

The fixtures (tests/fixtures/orbax/, made by ``make_orbax.py`` with Orbax 0.12.8, Flax, optax and tensorstore)
hold a CheckpointManager's two steps (OCDBT, zarr v2, a bfloat16 array in 7 chunks), a zarr3 checkpoint, one
written without OCDBT, and a raw OCDBT database with 300-byte nodes; beside them what Orbax restores and what
tensorstore lists. Crafted databases (``ocdbt_crafting``) cover what Orbax does not write by default.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import cramjam
import ml_dtypes
import numpy as np
import pytest
from ocdbt_crafting import VALUES, interior, item, leaf, node

import weightscope as ws
from weightscope._crc32c import crc32c
from weightscope.cli import Environment, main
from weightscope.containers.ocdbt import Database
from weightscope.runs import find_checkpoints
from weightscope.steps import run_history, select_step

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "orbax"
RUN = FIXTURES / "run"


def expected(name: str) -> dict[str, np.ndarray]:
    """What Orbax restored, by weightscope's name (keys joined by '/'), bfloat16 ones as bfloat16."""
    dtypes = json.loads((FIXTURES / f"{name}.dtypes.json").read_text())
    with np.load(FIXTURES / f"{name}.npz") as stored:
        arrays = {key: stored[key] for key in stored.files}
    return {
        key.replace(".", "/"): value.view(ml_dtypes.bfloat16) if dtypes[key] == "bfloat16" else value
        for key, value in arrays.items()
    }


def assert_bits_equal(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert (ours.dtype, ours.shape) == (theirs.dtype, theirs.shape)
    assert ours.tobytes() == theirs.tobytes()


@pytest.mark.parametrize(
    ("name", "path"),
    [("run_1", RUN), ("run_1", RUN / "1"), ("run_1", RUN / "1" / "default"), ("run_0", RUN / "0"),
     ("zarr3", FIXTURES / "zarr3"), ("no_ocdbt", FIXTURES / "no_ocdbt")],
)  # fmt: skip
def test_every_array_equals_orbax_restore(name: str, path: Path) -> None:
    wanted = expected(name)
    with ws.open(path) as ckpt:
        assert ckpt.format == "orbax"
        assert sorted(ckpt) == sorted(wanted)
        for key, value in wanted.items():
            assert_bits_equal(ckpt[key], value)
            assert ckpt.info(key).dtype == value.dtype
        assert ckpt.verify() == []
    assert wanted["table"].dtype == ml_dtypes.bfloat16


def test_the_manager_folder_opens_its_newest_step_and_says_so() -> None:
    with ws.open(RUN) as ckpt:
        assert ckpt.notes == [f"{RUN}: the newest of steps 0, 1, step 1; --step picks another"]
        assert int(ckpt["step"]) == 1


def test_optimizer_state_is_attached_to_its_parameter() -> None:
    with ws.open(RUN) as ckpt:
        kernel = "params/params/Dense_0/kernel"
        assert ckpt.role("opt_state/0/mu/params/Dense_0/kernel") == ws.TensorRole("optimizer", role="mu", owner=kernel)
        assert ckpt.role("opt_state/0/count").kind == "optimizer"
        assert ckpt.role("step").kind == "bookkeeping"
        assert ckpt.role(kernel).label == "weight"
        layer = ckpt.layers()["params/params/Dense_0"]
        assert sorted(layer.optimizer_state[kernel]) == ["mu", "nu"]
        assert layer.optimizer_state[kernel]["nu"].name == "opt_state/0/nu/params/Dense_0/kernel"


def test_history_steps_and_runs_list_the_managers_steps() -> None:
    entries = run_history(RUN)
    assert [(entry.step, entry.prefix.name, entry.newest) for entry in entries] == [(0, "0", False), (1, "1", True)]
    assert select_step(RUN, 0) == RUN / "0"
    assert [(found.step, found.path.name) for found in find_checkpoints(RUN)] == [(0, "0"), (1, "1")]


def run_cli(*args: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main([str(arg) for arg in args], env=Environment(stdout=out, stderr=err))
    return status, out.getvalue(), err.getvalue()


def test_cli_step_picks_a_step(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_cli("show", RUN, "params/params/Dense_1/bias", "--step", "0", "--json")
    assert status == 0
    shown = json.loads(out)
    assert shown["params/params/Dense_1/bias"]["values"] == expected("run_0")["params/params/Dense_1/bias"].tolist()


def test_convert_to_safetensors_loads_in_torch(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    status, _, err = run_cli("convert", RUN, tmp_path / "out.safetensors")
    assert status == 0, err
    loaded = load_file(tmp_path / "out.safetensors")
    wanted = expected("run_1")
    assert sorted(loaded) == sorted(name for name in wanted if name.startswith(("params/", "table")))
    for name, tensor in loaded.items():
        if tensor.dtype == torch.bfloat16:
            assert tensor.view(torch.int16).numpy().tobytes() == wanted[name].tobytes()
        else:
            assert_bits_equal(tensor.numpy(), wanted[name])


def test_the_per_process_databases_are_read_when_the_merge_is_missing(tmp_path: Path) -> None:
    item_folder = shutil.copytree(RUN / "0" / "default", tmp_path / "default")
    (item_folder / "manifest.ocdbt").unlink()
    shutil.rmtree(item_folder / "d")
    with ws.open(item_folder) as ckpt:
        for key, value in expected("run_0").items():
            assert_bits_equal(ckpt[key], value)


def test_an_unfinished_step_is_left_out(tmp_path: Path) -> None:
    run = shutil.copytree(RUN, tmp_path / "run")
    (run / "1").rename(run / "2.orbax-checkpoint-tmp-1234")
    assert [entry.step for entry in run_history(run)] == [0]
    with ws.open(run) as ckpt:
        assert int(ckpt["step"]) == 0


def test_a_deep_database_lists_what_tensorstore_lists() -> None:
    database = Database(FIXTURES / "deep_ocdbt")
    listed = json.loads((FIXTURES / "deep_ocdbt.json").read_text())
    assert database.height >= 1  # interior nodes: 300-byte nodes cannot hold 120 keys
    assert {key: bytes(database.read(key)).hex() for key in database.values} == listed
    assert any(value.inline is None for value in database.values.values())  # values out of line
    assert any(value.inline is not None for value in database.values.values())


def test_interior_nodes_prefixes_and_values_out_of_line(tmp_path: Path) -> None:
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    chunk = bytes(cramjam.zstd.compress(values.tobytes()))
    (tmp_path / "x" / "d").mkdir(parents=True)
    (tmp_path / "x" / "d" / "blob").write_bytes(b"pad" + chunk)
    zarray = {"chunks": [2, 3], "compressor": {"id": "zstd"}, "dtype": "<f4", "fill_value": None, "filters": None,
              "order": "C", "shape": [2, 3], "zarr_format": 2}  # fmt: skip
    child = node(leaf({b".zarray": json.dumps(zarray).encode()}, out_of_line={b"0.0": ("d/blob", 3, len(chunk))}))
    (tmp_path / "x" / "d" / "leaf").write_bytes(child)
    item(tmp_path / "x", node(interior(1, [(b"a/", "d/leaf", 0, len(child))]), zstd=True), height=1)
    with ws.open(tmp_path / "x") as ckpt:
        assert_bits_equal(ckpt["a"], values)
        assert (ckpt.info("a").file, ckpt.info("a").offset) == (str(tmp_path / "x" / "d" / "blob"), 3)


def _shard(chunks: list[np.ndarray | None], *, crc: bool = True) -> bytes:
    """A zarr3 shard: zstd inner chunks, then the index of (offset, nbytes) and its CRC-32C."""
    body, index = b"", []
    for values in chunks:
        if values is None:
            index.append((2**64 - 1, 2**64 - 1))
            continue
        frame = bytes(cramjam.zstd.compress(values.tobytes()))
        index.append((len(body), len(frame)))
        body += frame
    table = np.array(index, "<u8").tobytes()
    return body + table + (crc32c(table).to_bytes(4, "little") if crc else b"")


def _zarr3_item(folder: Path, shards: dict[bytes, bytes]) -> None:
    sharding = {"name": "sharding_indexed", "configuration": {
        "chunk_shape": [1, 2], "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "zstd"}],
        "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}]}}  # fmt: skip
    meta = {"zarr_format": 3, "node_type": "array", "shape": [3, 5], "data_type": "int16", "fill_value": 7,
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2, 4]}},
            "chunk_key_encoding": {"name": "default"}, "codecs": [sharding]}  # fmt: skip
    item(folder, node(leaf({b"a/zarr.json": json.dumps(meta).encode(), **shards})))
    document = json.loads((folder / "_METADATA").read_text())
    (folder / "_METADATA").write_text(json.dumps({**document, "use_zarr3": True}))


def test_zarr3_shards_with_edge_chunks_and_missing_ones(tmp_path: Path) -> None:
    full = np.arange(15, dtype=np.int16).reshape(3, 5)
    wanted = full.copy()
    wanted[1, 4] = 7  # shard (0, 1) holds only its first inner chunk (an edge chunk): the rest is the fill value
    wanted[2, 0:2] = 7  # shard (1, 0)'s first inner chunk is missing
    wanted[2, 4] = 7  # shard (1, 1) is missing altogether
    inner = [[full[r : r + 1, c : c + 2] for c in range(0, 4, 2)] for r in range(2)]
    shards = {
        b"a/c/0/0": _shard([inner[0][0], inner[0][1], inner[1][0], inner[1][1]]),
        b"a/c/0/1": _shard([np.pad(full[0:1, 4:5], ((0, 0), (0, 1))), None, None, None]),
        b"a/c/1/0": _shard([None, full[2:3, 2:4], None, None]),
    }
    _zarr3_item(tmp_path / "x", shards)
    with ws.open(tmp_path / "x") as ckpt:
        assert_bits_equal(ckpt["a"], wanted)


def test_a_damaged_shard_index_is_a_checksum_mismatch(tmp_path: Path) -> None:
    shard = bytearray(_shard([np.zeros((1, 2), np.int16)] * 4))
    shard[-5] ^= 1
    _zarr3_item(tmp_path / "x", {b"a/c/0/0": bytes(shard)})
    with ws.open(tmp_path / "x") as ckpt:
        with pytest.raises(ws.ChecksumMismatchError, match="index is damaged"):
            ckpt["a"]
        assert [type(problem) for problem in ckpt.verify()] == [ws.ChecksumMismatchError]


def test_the_storage_is_described(tmp_path: Path) -> None:
    with ws.open(RUN) as ckpt:
        assert ckpt.metadata["orbax.storage"] == (
            "OCDBT, zarr v2: written by 1 process, read from manifest.ocdbt; 21 chunks"
        )  # 14 arrays of one chunk, the bfloat16 table of 7
        assert ckpt.info("table").nbytes == sum(
            len(value) for key, value in _values(RUN / "1" / "default").items() if key.startswith("table/0.")
        )
    with ws.open(FIXTURES / "no_ocdbt") as ckpt:
        assert ckpt.metadata["orbax.storage"] == "zarr v2, a folder per array (no OCDBT)"
        assert ckpt.info("table").nbytes == (FIXTURES / "no_ocdbt" / "table" / "0.0").stat().st_size


def _values(item_folder: Path) -> dict[str, bytes]:
    database = Database(item_folder)
    try:
        return {key: bytes(database.read(key)) for key in database.values}
    finally:
        database.close()


def test_a_step_of_several_items_names_each_by_its_item(tmp_path: Path) -> None:
    step = tmp_path / "run" / "7"
    for name in ("state", "ema"):
        item(step / name, node(leaf(VALUES)))
    (step / "_CHECKPOINT_METADATA").write_text(json.dumps({"item_handlers": {}, "commit_timestamp_nsecs": 10**18}))
    (step / "metrics").mkdir()  # a JSON item: no arrays, not listed
    (step / "metrics" / "metrics").write_text("{}")
    with ws.open(tmp_path / "run") as ckpt:
        assert sorted(ckpt) == ["ema/a", "state/a"]
        assert ckpt["state/a"].tobytes() == bytes(range(24))
    assert [entry.step for entry in run_history(tmp_path / "run")] == [7]


def test_a_large_array_decodes_its_chunks_on_threads_as_one_thread_does() -> None:
    """Over 4 MiB, chunks (edge ones too) are decoded on a few threads: the array equals the one the values were
    chunked from; a damaged chunk among them is the error raised, the first in order when two are."""
    from weightscope.containers import zarr

    values = np.random.default_rng(5).standard_normal((1100, 1030)).astype("<f4")  # 4.3 MiB, 5 x 5 chunks
    meta = {"zarr_format": 2, "shape": [1100, 1030], "chunks": [256, 256], "dtype": "<f4",
            "compressor": {"id": "zstd", "level": 1}, "fill_value": None, "order": "C", "filters": None}  # fmt: skip
    array = zarr.parse(json.dumps(meta).encode(), "test")
    stored: dict[str, bytes] = {}
    for row in range(5):
        for column in range(5):
            block = np.zeros((256, 256), "<f4")
            part = values[row * 256 : (row + 1) * 256, column * 256 : (column + 1) * 256]
            block[: part.shape[0], : part.shape[1]] = part
            stored[f"{row}.{column}"] = bytes(cramjam.zstd.compress(block.tobytes()))
    assert zarr._WORKERS >= 2 and values.nbytes >= zarr._PARALLEL_BYTES
    assert np.array_equal(zarr.assemble(array, stored.get, "test"), values)
    damaged = stored | {"1.3": stored["1.3"][:-9], "4.0": stored["4.0"][:-9]}
    with pytest.raises(ws.CorruptCheckpointError, match=r"chunk 1\.3"):
        zarr.assemble(array, damaged.get, "test")


def test_scan_lists_nothing_and_exits_as_opening_does() -> None:
    """An Orbax folder names no code: scan lists nothing, exits 0 where it opens and with the error it raises where
    it does not (a damaged entry of the corpus)."""
    status, out, _ = run_cli("scan", RUN)
    assert (status, out) == (0, "")
    broken = next(path for path in sorted((Path(__file__).parent / "corpus" / "orbax").iterdir()) if path.is_dir())
    expected = getattr(ws.errors, broken.name.split("--", 1)[0])
    status, out, err = run_cli("scan", broken)
    assert out == "" and status == expected.exit_status and err.startswith("weightscope: error:")


def test_arrays_reads_ahead_in_order_and_raises_where_the_error_comes(monkeypatch: pytest.MonkeyPatch) -> None:
    """``arrays()`` on threads (Orbax decodes off the GIL) gives every array in order, as ``ckpt[name]`` does; a
    tensor that fails raises where it comes, after the ones before it were given."""
    from weightscope.formats.orbax import OrbaxCheckpoint

    with ws.open(RUN) as ckpt:
        assert ckpt.concurrent_reads
        given = list(ckpt.arrays())
        assert [name for name, _ in given] == list(ckpt)
        assert all(np.array_equal(array, ckpt[name]) and not array.flags.writeable for name, array in given)
        names = list(ckpt)
        broken = names[len(names) // 2]
        read = OrbaxCheckpoint._read

        def failing(self: OrbaxCheckpoint, info: ws.TensorInfo) -> np.ndarray:
            if info.name == broken:
                raise ws.CorruptCheckpointError(f"tensor '{broken}' is damaged")
            return read(self, info)

        monkeypatch.setattr(OrbaxCheckpoint, "_read", failing)
        seen = []
        with pytest.raises(ws.CorruptCheckpointError, match="damaged"):
            for name, _ in ckpt.arrays():
                seen.append(name)
        assert seen == names[: len(names) // 2]
