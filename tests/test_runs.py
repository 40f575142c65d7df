"""Whole runs on Dask: lazy arrays over byte ranges, run stats on threads and on a 2-process cluster."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import weightscope as ws
from weightscope import lazy
from weightscope.cli import cli
from weightscope.engines.numpy_engine import adam_variables, initial_variables, train
from weightscope.errors import UnsupportedFormatError
from weightscope.runs import RunStats, find_checkpoints, find_nan, run_convert, run_stats

pytest.importorskip("dask")

STEPS = 21  # checkpoints in the run
EVERY = 5  # training steps between them
SMALL_CHUNKS = 128  # bytes: a kernel of 8 x 16 float32 becomes 4 chunks of 2 rows


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The numpy engine's autoencoder saved every 5 Adam steps: 21 TensorFlow checkpoints and a state file."""
    directory = tmp_path_factory.mktemp("run")
    rng = np.random.default_rng(11)
    parameters = initial_variables((8, 16, 8), rng)
    values = {**parameters, **adam_variables(parameters)}
    data = rng.random((32, 8)).astype(np.float32)
    for k in range(STEPS):
        ws.save(values, directory / f"model.ckpt-{k * EVERY}")
        values = train({name: values[name] for name in parameters}, data, steps=EVERY, optimizer_state=values)
    return directory


def reference(paths: list[Path], include_all: bool = False) -> list[dict[str, object]]:
    """The single-process path: plain numpy over each whole ``ckpt[name]``."""
    rows: list[dict[str, object]] = []
    first: dict[str, np.ndarray] = {}
    previous: dict[str, np.ndarray] = {}
    for position, path in enumerate(paths):
        current: dict[str, np.ndarray] = {}
        with ws.open(path) as ckpt:
            for name in ckpt:
                if not include_all and ckpt.role(name).kind != "parameter":
                    continue
                if ckpt.info(name).dtype.kind not in "biuf":
                    continue
                values = np.array(ckpt[name], dtype=np.float64)
                current[name] = values
                finite = values[np.isfinite(values)]

                def change(ref: np.ndarray | None, values: np.ndarray = values) -> float | None:
                    if ref is None or ref.shape != values.shape:
                        return None
                    moved, size = float(np.linalg.norm(values - ref)), float(np.linalg.norm(ref))
                    if not size:  # from zero (a fresh bias): no relative change, unless it stayed
                        return None if moved else 0.0
                    return moved / size

                rows.append(
                    {
                        "name": name,
                        "norm": float(np.linalg.norm(finite)),
                        "mean": float(finite.mean()),
                        "std": float(finite.std()),
                        "nans": int(np.isnan(values).sum()),
                        "infs": int(np.isinf(values).sum()),
                        "change_previous": change(previous.get(name)) if position else None,
                        "change_first": change(first.get(name)) if position else 0.0,
                    }
                )
        if position == 0:
            first = current
        previous = current
    return rows


def assert_matches_reference(result: RunStats, expected: list[dict[str, object]]) -> None:
    assert [row.name for row in result.tensors] == [row["name"] for row in expected]
    for row, want in zip(result.tensors, expected, strict=True):
        got = {
            "name": row.name,
            "norm": row.norm,
            "mean": row.stats.mean,
            "std": row.stats.std,
            "nans": row.stats.nans,
            "infs": row.stats.infs,
            "change_previous": row.change_previous,
            "change_first": row.change_first,
        }
        for key, value in want.items():
            if isinstance(value, float):
                assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), (row.checkpoint, row.name, key)
            else:
                assert got[key] == value, (row.checkpoint, row.name, key)


def test_run_is_found_in_its_state_file_with_steps(run_dir: Path) -> None:
    found = find_checkpoints(run_dir)
    assert [entry.step for entry in found] == [k * EVERY for k in range(STEPS)]
    assert [entry.path for entry in found] == [run_dir / f"model.ckpt-{k * EVERY}" for k in range(STEPS)]
    glob_found = find_checkpoints(str(run_dir / "model.ckpt-*.index"))
    assert {entry.path for entry in glob_found} == {entry.path for entry in found}
    assert [entry.step for entry in glob_found] == sorted(entry.step for entry in found)  # type: ignore[type-var]


@pytest.mark.parametrize(
    ("name", "step"),
    [
        ("model.ckpt-123", 123),
        ("ckpt-3.safetensors", 3),
        ("step123.pt", 123),
        ("step_123.pt", 123),
        ("step-123.pt", 123),
        ("step=123.pt", 123),
        ("global_step123/mp_rank_00_model_states.pt", 123),
        ("epoch=3-step=100.ckpt", 100),
        ("checkpoint-500/model.safetensors", 500),
        ("iter_0000100/mp_rank_00/model_optim_rng.pt", 100),
        ("resnet18-step1.pth", 1),
        ("resnet18.pth", None),
        ("vgg16-397923af.pth", None),
        ("bert-base-uncased-3.bin", None),
        ("epoch=3.ckpt", None),
        ("laststep12.pt", None),
        ("checkpoint.pt", None),
    ],
)
def test_step_is_read_from_explicit_patterns_only(name: str, step: int | None) -> None:
    from weightscope.history import step_of

    assert step_of(Path(name)) == step


def test_model_name_digits_are_not_steps_modification_time_orders(tmp_path: Path) -> None:
    import os

    import torch

    model = torch.nn.Linear(2, 2)
    for name, written in (("resnet18-step1.pth", 1000), ("resnet18.pth", 2000), ("resnet50.pth", 1500)):
        torch.save(model.state_dict(), tmp_path / name)
        os.utime(tmp_path / name, (written, written))
    found = find_checkpoints(tmp_path)
    assert [(entry.path.name, entry.step) for entry in found] == [
        ("resnet18-step1.pth", 1),
        ("resnet50.pth", None),
        ("resnet18.pth", None),
    ]
    result = CliRunner().invoke(cli, ["runs", "stats", "--json", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert [entry["step"] for entry in json.loads(result.output)["checkpoints"]] == [1, None, None]


def test_trainer_directories_are_a_run_in_step_order(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    model = torch.nn.Linear(3, 2)
    for step in (500, 1000, 50):  # written in this order: the steps, not the times, order them
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        with torch.no_grad():
            model.weight.fill_(step)
        save_file(model.state_dict(), folder / "model.safetensors")
        torch.save({"state": {}, "param_groups": []}, folder / "optimizer.pt")
    found = find_checkpoints(tmp_path)
    assert [(entry.path.parent.name, entry.step) for entry in found] == [
        ("checkpoint-50", 50),
        ("checkpoint-500", 500),
        ("checkpoint-1000", 1000),
    ]
    stats = run_stats(tmp_path, pattern="weight", scheduler="sync")
    assert [row.stats.mean for row in stats.tensors] == [50, 500, 1000]
    done = run_convert(tmp_path, tmp_path / "out", to="npz", scheduler="sync")
    assert sorted(Path(entry["destination"]).name for entry in done) == [
        "checkpoint-1000.npz",
        "checkpoint-50.npz",
        "checkpoint-500.npz",
    ]


def test_history_and_runs_share_the_step_parser(tmp_path: Path) -> None:
    """A TF saver's ``-N``, listed by the state file: the same step in ``history`` and ``runs``."""
    from weightscope.history import checkpoint_history

    for step in (7, 3):
        ws.save({"dense/kernel": np.full((2, 2), step, np.float32)}, tmp_path / f"resnet18-{step}")
    (tmp_path / "checkpoint").write_text(
        'model_checkpoint_path: "resnet18-7"\nall_model_checkpoint_paths: "resnet18-3"\n'
        'all_model_checkpoint_paths: "resnet18-7"\n'
    )
    assert [entry.step for entry in checkpoint_history(tmp_path)] == [3, 7]
    assert [entry.step for entry in find_checkpoints(tmp_path)] == [3, 7]
    (tmp_path / "checkpoint").unlink()  # no state file: an index beside its data still marks a saver's prefix
    assert [entry.step for entry in find_checkpoints(tmp_path)] == [3, 7]


def test_run_on_threads_equals_the_single_process_path(run_dir: Path) -> None:
    paths = [entry.path for entry in find_checkpoints(run_dir)]
    threads = run_stats(run_dir, chunk_bytes=SMALL_CHUNKS, window=3)
    assert len(threads.checkpoints) == STEPS >= 20
    assert_matches_reference(threads, reference(paths))
    assert threads.tasks > STEPS  # a task per tensor chunk and window, not per checkpoint
    one_thread = run_stats(run_dir, chunk_bytes=SMALL_CHUNKS, window=3, scheduler="sync")
    assert one_thread.tensors == threads.tensors  # the same graph, merged in the same order: bit for bit
    everything = run_stats(run_dir, include_all=True, chunk_bytes=SMALL_CHUNKS, window=4)
    assert_matches_reference(everything, reference(paths, include_all=True))


def test_run_on_a_two_process_cluster_equals_the_single_process_path(run_dir: Path, client: object) -> None:
    paths = [entry.path for entry in find_checkpoints(run_dir)]
    seen: list[tuple[int, int]] = []
    clustered = run_stats(
        run_dir, chunk_bytes=SMALL_CHUNKS, window=3, client=client, progress=lambda *done: seen.append(done)
    )
    assert_matches_reference(clustered, reference(paths))
    assert clustered.tensors == run_stats(run_dir, chunk_bytes=SMALL_CHUNKS, window=3).tensors
    assert seen[-1] == (clustered.tasks, clustered.tasks) and len(seen) == clustered.tasks
    workers = client.run(lambda: __import__("os").getpid())  # type: ignore[attr-defined]
    assert len(set(workers.values())) == 2
    address = client.scheduler.address  # type: ignore[attr-defined]
    by_address = run_stats(run_dir, chunk_bytes=SMALL_CHUNKS, window=3, scheduler=address)
    assert by_address.tensors == clustered.tensors
    command = ["runs", "stats", str(run_dir), "--json", "--scheduler", address, "--progress"]
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 0, result.output
    threads = CliRunner().invoke(cli, ["runs", "stats", str(run_dir), "--json"])
    assert json.loads(result.stdout) == json.loads(threads.stdout)
    assert "tasks (100%)" in result.stderr


def test_multi_shard_checkpoint_on_the_cluster(tf_checkpoints: dict[str, Path], client: object) -> None:
    prefix = tf_checkpoints["sharded"]
    assert len(list(prefix.parent.glob(f"{prefix.name}.data-*"))) >= 3
    clustered = run_stats(prefix, include_all=True, chunk_bytes=256, client=client)
    assert_matches_reference(clustered, reference([prefix], include_all=True))
    assert clustered.tensors == run_stats(prefix, include_all=True, chunk_bytes=256).tensors
    with ws.open(prefix) as ckpt:
        arrays = ckpt.to_dask(chunk_bytes=256)
        computed = client.compute(arrays).result()  # type: ignore[attr-defined]
        for name in ckpt:
            expected = ckpt[name]
            if expected.dtype.kind == "O":
                assert computed[name].tolist() == expected.tolist()
            else:
                np.testing.assert_array_equal(computed[name], expected)


def test_to_dask_chunks_read_only_their_own_byte_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    values = np.arange(100 * 1000, dtype=np.float32).reshape(100, 1000)
    path = ws.save({"big": values, "small": np.ones(3, np.float32)}, tmp_path / "one.safetensors", format="safetensors")
    reads: list[tuple[str, int, int]] = []
    original = lazy._read_range

    def counting(file: str, offset: int, count: int, dtype: np.dtype) -> np.ndarray:
        reads.append((file, offset, count * dtype.itemsize))
        return original(file, offset, count, dtype)

    monkeypatch.setattr(lazy, "_read_range", counting)
    with ws.open(path) as ckpt:
        array = ckpt.to_dask("big", chunk_bytes=40_000)  # 10 rows of 4000 bytes a chunk
        info = ckpt.info("big")
    assert array.chunks == ((10,) * 10, (1000,))
    np.testing.assert_array_equal(array.blocks[3].compute(scheduler="sync"), values[30:40])
    assert reads == [(str(path.resolve()), info.offset + 3 * 40_000, 40_000)]
    reads.clear()
    assert float(array[55, 7].compute(scheduler="sync")) == values[55, 7]
    assert reads == [(str(path.resolve()), info.offset + 5 * 40_000, 40_000)]
    reads.clear()
    np.testing.assert_array_equal(array.compute(scheduler="threads"), values)
    assert sorted(reads) == [(str(path.resolve()), info.offset + i * 40_000, 40_000) for i in range(10)]


def test_to_dask_byte_order_and_what_falls_back_to_the_reader(tmp_path: Path) -> None:
    big_endian = np.arange(24, dtype=">f8").reshape(6, 4)
    np.save(tmp_path / "be.npy", big_endian)
    np.savez_compressed(tmp_path / "packed.npz", packed=np.arange(12.0).reshape(3, 4))
    np.save(tmp_path / "fortran.npy", np.asfortranarray(np.arange(12.0).reshape(3, 4)))
    for name, raw in (("be.npy", True), ("packed.npz", False), ("fortran.npy", False)):
        with ws.open(tmp_path / name) as ckpt:
            (tensor,) = list(ckpt)
            assert lazy.tensor_source(ckpt, tensor).raw is raw, name
            computed = ckpt.to_dask(tensor, chunk_bytes=32).compute(scheduler="sync")
            np.testing.assert_array_equal(computed, ckpt[tensor])
            assert computed.dtype.isnative
    torch = pytest.importorskip("torch")
    torch.save({"plain": torch.arange(12.0).reshape(3, 4), "t": torch.arange(12.0).reshape(3, 4).T}, tmp_path / "m.pt")
    with ws.open(tmp_path / "m.pt") as ckpt:
        assert lazy.tensor_source(ckpt, "plain").raw and not lazy.tensor_source(ckpt, "t").raw
        for name in ckpt:
            np.testing.assert_array_equal(ckpt.to_dask(name, chunk_bytes=16).compute(scheduler="threads"), ckpt[name])


def test_verification_is_a_task_of_its_own(seed_copy: Path) -> None:
    with ws.open(seed_copy) as ckpt:
        assert ckpt.to_dask("layer1/kernel").compute(scheduler="sync") is not None
        assert lazy.verification(ckpt).compute(scheduler="sync") == {}
        info = ckpt.info("layer1/kernel")
    with open(info.file, "r+b") as handle:
        handle.seek(info.offset)
        handle.write(b"\x7f\x7f\x7f\x7f")
    with ws.open(seed_copy) as ckpt:
        assert "layer1/kernel" in lazy.verification(ckpt).compute(scheduler="sync")


@pytest.fixture(scope="module")
def nan_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 safetensors checkpoints; ``b.weight`` holds a NaN from step 700 on, ``a.weight`` an inf at step 1500."""
    directory = tmp_path_factory.mktemp("nanrun")
    rng = np.random.default_rng(5)
    for k in range(20):
        a, b = rng.normal(size=(40, 6)).astype(np.float32), rng.normal(size=(9,)).astype(np.float32)
        if k >= 7:
            b[3] = np.nan
        if k == 15:
            a[39, 5] = np.inf
        ws.save({"a.weight": a, "b.weight": b}, directory / f"ckpt-{k * 100}.safetensors", format="safetensors")
    return directory


def test_find_nan_finds_the_first_step(nan_run: Path) -> None:
    found = {finding.name: finding for finding in find_nan(nan_run, chunk_bytes=64)}
    assert find_nan(nan_run, chunk_bytes=64, scheduler="processes", workers=2) == list(found.values())
    assert (found["b.weight"].step, found["b.weight"].nans, found["b.weight"].infs) == (700, 1, 0)
    assert (found["a.weight"].step, found["a.weight"].nans, found["a.weight"].infs) == (1500, 0, 1)
    result = CliRunner().invoke(cli, ["runs", "find-nan", str(nan_run), "--json", "--scheduler", "sync"])
    assert result.exit_code == 1
    assert {entry["name"]: entry["step"] for entry in json.loads(result.output)} == {"a.weight": 1500, "b.weight": 700}


def test_cli_runs_stats_table_json_and_plot(run_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    table = runner.invoke(cli, ["runs", "stats", str(run_dir), "--filter", "*kernel"])
    assert table.exit_code == 0, table.output
    assert "Δ prev" in table.output and f"{STEPS} checkpoints" in table.output
    document = json.loads(runner.invoke(cli, ["runs", "stats", str(run_dir), "--json"]).output)
    assert [entry["step"] for entry in document["checkpoints"]] == [k * EVERY for k in range(STEPS)]
    assert len(document["tensors"]) == STEPS * 4
    assert document["tensors"][0]["change_first"] == 0.0 and document["tensors"][0]["change_previous"] is None
    pytest.importorskip("matplotlib")
    out = tmp_path / "drift.png"
    plotted = runner.invoke(cli, ["runs", "stats", str(run_dir), "--plot", str(out)])
    assert plotted.exit_code == 0, plotted.output
    assert out.read_bytes().startswith(b"\x89PNG")


def test_runs_convert_writes_loadable_files(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "converted"
    result = CliRunner().invoke(cli, ["runs", "convert", str(run_dir), "--to", "safetensors", "--out", str(out)])
    assert result.exit_code == 0, result.output
    written = sorted(out.iterdir())
    assert len(written) == STEPS
    for entry in find_checkpoints(run_dir):
        with ws.open(entry.path) as source, ws.open(out / f"{entry.path.name}.safetensors") as converted:
            assert converted.format == "safetensors"
            names = [name for name in source if source.role(name).kind == "parameter"]
            assert sorted(converted) == sorted(names)
            for name in names:
                np.testing.assert_array_equal(converted[name], source[name])
    again = run_convert(run_dir, tmp_path / "npz", to="npz", scheduler="sync")
    assert len(again) == STEPS and all(Path(entry["destination"]).suffix == ".npz" for entry in again)


def test_missing_dask_gives_the_install_hint(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for module in [name for name in sys.modules if name == "dask" or name.startswith("dask.")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, "dask", None)
    with pytest.raises(UnsupportedFormatError, match=r"pip install 'weightscope\[dask\]'"):
        run_stats(run_dir)
    with ws.open(run_dir / "model.ckpt-0") as ckpt, pytest.raises(UnsupportedFormatError, match="weightscope"):
        ckpt.to_dask("layer1/kernel")
    result = CliRunner().invoke(cli, ["runs", "stats", str(run_dir)])
    assert isinstance(result.exception, UnsupportedFormatError)


def test_ls_does_not_import_dask(run_dir: Path) -> None:
    code = (
        "import sys; from weightscope.cli import main; status = main(['ls', sys.argv[1]]); "
        "assert not [m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')], 'dask imported'; "
        "sys.exit(status)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(run_dir / "model.ckpt-0")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "layer1/kernel" in done.stdout


def test_changes_are_none_across_a_change_of_shape(tmp_path: Path) -> None:
    for k, rows in enumerate((4, 4, 6, 6)):
        ws.save({"w": np.full((rows, 3), k + 1.0)}, tmp_path / f"step-{k}.npz", format="npz")
    result = run_stats(str(tmp_path / "step-*.npz"), chunk_bytes=24, window=2)
    changes = [(row.step, row.change_previous, row.change_first) for row in result.tensors]
    assert changes[0] == (0, None, 0.0)
    assert changes[1] == (1, pytest.approx(1.0), pytest.approx(1.0))
    assert changes[2] == (2, None, None)  # a new shape: nothing to compare with
    assert changes[3][1] == pytest.approx(1 / 3) and changes[3][2] is None
    assert all(math.isclose(row.stats.mean or 0, row.step + 1) for row in result.tensors)  # type: ignore[operator]


def _recorded_pieces(monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], set[int]]:
    """The pieces the tasks take, in order (a figures' piece by its size, a difference's by minus its size), and the
    threads taking figures' pieces."""
    import threading

    from weightscope import analysis

    pieces: list[int] = []
    threads: set[int] = set()
    chunk_stats, pair_diff = analysis.chunk_stats, analysis.pair_diff

    def stats_piece(chunk: np.ndarray, kind: str) -> analysis.StatsPartial:
        pieces.append(chunk.size)
        threads.add(threading.get_ident())
        return chunk_stats(chunk, kind)

    def diff_piece(a: np.ndarray, b: np.ndarray, *args: object) -> None:
        pieces.append(-a.size)
        pair_diff(a, b, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(analysis, "chunk_stats", stats_piece)
    monkeypatch.setattr(analysis, "pair_diff", diff_piece)
    return pieces, threads


def test_tasks_take_pieces_of_the_stats_chunk_on_the_threads_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task sums its rows in pieces of ``blocks.CHUNK_ELEMENTS`` (each a block of ``BLOCK_ELEMENTS`` at a time), as
    ``weightscope stats`` does: pieces of 4,096 elements held the GIL between numpy's calls for half their time. The
    threaded scheduler runs the tasks on the threads asked for. The figures are numpy's all the same."""
    import threading

    from weightscope import blocks

    assert (blocks.CHUNK_ELEMENTS, blocks.BLOCK_ELEMENTS) == (1 << 19, 1 << 15)
    elements = 3 * blocks.CHUNK_ELEMENTS + 5
    rng = np.random.default_rng(5)
    paths = [tmp_path / f"ckpt-{step}.safetensors" for step in range(3)]
    for step, path in enumerate(paths):
        values = rng.standard_normal(elements, dtype=np.float32) + np.float32(step)
        ws.save({"w": values, "b": values[:2].copy()}, path, format="safetensors")
    pieces, threads = _recorded_pieces(monkeypatch)
    result = run_stats(paths, scheduler="threads", workers=2, window=1)
    assert_matches_reference(result, reference(paths))
    whole = [blocks.CHUNK_ELEMENTS] * 3 + [5]
    w_stats = [size for size in pieces if size > 2]
    w_diffs = [-size for size in pieces if size < -2]
    assert sorted(w_stats) == sorted(whole * 3)  # each checkpoint's tensor in 4 pieces
    assert sorted(w_diffs) == sorted(whole * 4)  # the second and the third, each against the one before and the first
    assert len(threads) == 2 and threading.get_ident() not in threads  # 6 tasks on 2 threads of the pool


def test_a_task_takes_its_members_a_chunk_position_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A window's members are walked a chunk position at a time (``blocks.in_step``): each member's figures, its
    difference from the one before it and from the first take their piece at that position before any takes the
    next, so the pieces compared are in cache together. Each still adds up its own pieces in order: the figures are
    numpy's, as with a task per checkpoint."""
    from weightscope import blocks

    elements = 2 * blocks.CHUNK_ELEMENTS + 7
    rng = np.random.default_rng(11)
    paths = [tmp_path / f"ckpt-{step}.safetensors" for step in range(3)]
    for step, path in enumerate(paths):
        ws.save({"w": rng.standard_normal(elements, dtype=np.float32) * (step + 1)}, path, format="safetensors")
    pieces, _ = _recorded_pieces(monkeypatch)
    result = run_stats(paths, scheduler="sync", window=3)  # one task: the first, then two each with two differences
    assert result.tasks == 1
    assert_matches_reference(result, reference(paths))
    sizes = [blocks.CHUNK_ELEMENTS, blocks.CHUNK_ELEMENTS, 7]
    assert pieces == [piece for size in sizes for piece in (size, -size, -size, size, -size, -size, size)]
