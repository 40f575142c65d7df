"""weightscope health: injected super weights, dead rows and columns and NaN/Inf found where they were put;
the figures against plain numpy and torch over the whole tensor; the same results bit for bit on threads,
in one thread and on a 2-process Dask cluster, whatever the chunking."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.numpy import save_file

import weightscope as ws
from weightscope import health
from weightscope.cli import cli, main
from weightscope.errors import ExitStatus
from weightscope.health import Health, TensorHealth, checkpoint_health

SMALL_CHUNKS = 4096  # bytes: the (300, 200) float32 weight becomes 60 row chunks


def weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    linear = (rng.standard_normal((300, 200)) * 0.05).astype(np.float32)
    linear[17, 123] = 9.0  # the super weight
    linear[:, 5] = 0.25  # a constant column, but for the dead row's zero
    linear[:, 9] = 0.0  # a dead column (zero)
    linear[42, :] = 0.0  # a dead row (zero)
    conv = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    conv[6] = -1.5  # a constant output channel
    norm = rng.standard_normal(64).astype(np.float32)
    norm[3], norm[10], norm[11] = np.nan, np.inf, -np.inf
    wide = (rng.standard_normal((64, 40)) * 0.1).astype(np.float32)  # 3 chunks of rows
    wide[:, 3] = 0.5  # a constant column across the chunks
    wide[:-1, 8] = 0.5  # constant but for the last chunk's last row
    wide[:25, 12], wide[25:, 12] = 0.5, 0.25  # constant in each chunk, another value in each
    return {
        "wide.weight": wide,
        "linear.weight": linear,
        "conv.weight": conv,
        "norm.weight": norm,
        "zero.weight": np.zeros((16, 16), np.float32),
        "loud.weight": (rng.standard_normal((32, 32)) * 20).astype(np.float32),
        "half.weight": (rng.standard_normal((40, 24)) * 0.1).astype(np.float16),
    }


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("health") / "model.safetensors"
    save_file(weights(), str(path))
    return path


def by_name(result: Health) -> dict[str, TensorHealth]:
    return {tensor.name: tensor for tensor in result.tensors}


def test_injected_super_weight_dead_lines_and_non_finite_values_are_found(model: Path) -> None:
    with ws.open(model) as ckpt:
        found = by_name(checkpoint_health(ckpt, chunk_bytes=SMALL_CHUNKS))
    linear = found["linear.weight"]
    assert linear.super_weights[0].coordinates == (17, 123) and linear.super_weights[0].value == 9.0
    assert linear.dead_rows == {"zero": 1, "constant": 0, "indices": [42]}
    assert linear.dead_columns == {"zero": 1, "constant": 0, "indices": [9]}  # column 5 has row 42's zero
    assert linear.flags == ["super weight", "dead rows", "dead columns"]
    assert found["conv.weight"].dead_rows == {"zero": 0, "constant": 1, "indices": [6]}
    assert found["norm.weight"].nans == 1 and found["norm.weight"].infs == 2
    assert found["norm.weight"].flags == ["nan", "inf"] and found["norm.weight"].dead_rows is None
    assert found["zero.weight"].spectral_norm == 0.0
    assert found["zero.weight"].flags == ["near-zero spectral norm", "dead rows", "dead columns"]
    assert found["loud.weight"].flags == ["exploding variance"]
    assert found["half.weight"].flags == []
    assert found["wide.weight"].dead_columns == {"zero": 0, "constant": 1, "indices": [3]}
    assert found["wide.weight"].dead_rows == {"zero": 0, "constant": 0, "indices": []}


def test_figures_equal_numpy_and_torch_over_the_whole_tensor(model: Path) -> None:
    with ws.open(model) as ckpt:
        found = by_name(checkpoint_health(ckpt, chunk_bytes=SMALL_CHUNKS, top=7))
    for name, array in weights().items():
        values = array.astype(np.float64)
        finite = values[np.isfinite(values)]
        deviation = finite - finite.mean()
        std = float(np.sqrt((deviation**2).mean()))
        result = found[name]
        assert result.count == finite.size
        assert result.mean == pytest.approx(finite.mean(), rel=1e-12, abs=1e-15)
        assert result.std == pytest.approx(std, rel=1e-12, abs=0)
        if std:
            assert result.kurtosis == pytest.approx((deviation**4).mean() / std**4 - 3, rel=1e-10)
        flat = np.where(np.isfinite(values), np.abs(values), -1).reshape(-1)
        order = np.lexsort((np.arange(flat.size), -flat))[:7]  # largest first, ties in C order
        assert [w.coordinates for w in result.super_weights] == [np.unravel_index(i, array.shape) for i in order]
        assert [w.value for w in result.super_weights] == [values.reshape(-1)[i] for i in order]
        if array.ndim >= 2:
            matrix = torch.from_numpy(values.reshape(array.shape[0], -1))
            sigma = float(torch.linalg.matrix_norm(matrix, ord=2))
            assert result.spectral_norm == pytest.approx(sigma, rel=1e-10, abs=1e-12)
            assert result.spectral_norm <= sigma * (1 + 1e-12)  # power iteration gives a lower bound
        else:
            assert result.spectral_norm is None


def test_chunking_changes_nothing_beyond_rounding_and_schedulers_change_nothing(
    model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ws.open(model) as ckpt:
        whole = checkpoint_health(ckpt)
        monkeypatch.setattr(health, "HELD_BYTES", 0)  # every pass of the spectral norm reads the chunks again
        threads = checkpoint_health(ckpt, chunk_bytes=SMALL_CHUNKS)
        sync = checkpoint_health(ckpt, chunk_bytes=SMALL_CHUNKS, scheduler="sync")
        dask_threads = checkpoint_health(ckpt, chunk_bytes=SMALL_CHUNKS, scheduler="threads")
    assert threads.tasks > whole.tasks
    assert threads.to_json() == sync.to_json() == dask_threads.to_json()
    for a, b in zip(whole.tensors, threads.tensors, strict=True):
        entries = [[(w.coordinates, w.value) for w in t.super_weights] for t in (a, b)]
        assert entries[0] == entries[1]
        assert (a.dead_rows, a.dead_columns, a.flags) == (b.dead_rows, b.dead_columns, b.flags)
        assert a.std == pytest.approx(b.std, rel=1e-12, abs=0)
        assert a.spectral_norm == (None if b.spectral_norm is None else pytest.approx(b.spectral_norm, rel=1e-11))


def test_two_process_cluster_equals_the_single_process_path(model: Path, client: object) -> None:
    with ws.open(model) as ckpt:
        clustered = checkpoint_health(ckpt, chunk_bytes=SMALL_CHUNKS, client=client)
        single = checkpoint_health(ckpt, chunk_bytes=SMALL_CHUNKS, scheduler="sync")
    assert clustered.to_json() == single.to_json()
    address = client.scheduler.address  # type: ignore[attr-defined]
    command = ["health", str(model), "--json", "--scheduler", address]
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 0, result.output
    threads = CliRunner().invoke(cli, ["health", str(model), "--json"])
    assert json.loads(result.output) == json.loads(threads.output)


def test_a_reader_read_tensor_and_bfloat16_in_a_torch_file(tmp_path: Path) -> None:
    """A strided (transposed) tensor is read whole through the PyTorch reader; bfloat16 widened."""
    base = torch.randn(50, 30) * 0.02
    base[4, 29] = -3.0
    base[:, 11] = 0.0  # row 11 of the transpose
    path = tmp_path / "model.pt"
    torch.save({"t.weight": base.t(), "b.weight": base.to(torch.bfloat16)}, path)
    with ws.open(path) as ckpt:
        found = by_name(checkpoint_health(ckpt, chunk_bytes=SMALL_CHUNKS, scheduler="sync"))
    transposed, bf16 = found["t.weight"], found["b.weight"]
    assert transposed.shape == (30, 50) and transposed.super_weights[0].coordinates == (29, 4)
    assert transposed.dead_rows == {"zero": 1, "constant": 0, "indices": [11]}
    assert bf16.super_weights[0].coordinates == (4, 29)
    assert bf16.dead_columns == {"zero": 1, "constant": 0, "indices": [11]}
    sigma = float(torch.linalg.matrix_norm(base.to(torch.bfloat16).double(), ord=2))
    assert bf16.spectral_norm == pytest.approx(sigma, rel=1e-6)


def test_cli_one_screen_report_and_errors(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = CliRunner().invoke(cli, ["health", str(model)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "7 floating tensors checked, 6 flagged" and len(lines) <= 25
    assert any(line.startswith("linear.weight") and "[17, 123]" in line for line in lines)
    assert "dead rows of linear.weight: 1 zero, 0 constant: 42" in lines
    only = CliRunner().invoke(cli, ["health", str(model), "half.weight", "--json", "--top", "2"])
    document = json.loads(only.output)
    assert [t["name"] for t in document["tensors"]] == ["half.weight"]
    assert len(document["tensors"][0]["super_weights"]) == 2
    assert main(["health", str(model), "--scheduler", "nowhere"]) == ExitStatus.USAGE
    assert capsys.readouterr().err.startswith("weightscope: error: unknown scheduler 'nowhere'")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(model.read_bytes()[:200])
    assert main(["health", str(broken)]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("weightscope: error: ") and str(broken) in err


def test_a_sharded_hugging_face_folder(tmp_path: Path) -> None:
    """A model folder of six shards and an index: the super weight put in found by its name and coordinates."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, vocab_size=500
    )
    model = transformers.BertModel(config)
    with torch.no_grad():
        model.encoder.layer[1].output.dense.weight[3, 77] = 5.0
    model.save_pretrained(tmp_path, max_shard_size="100KB")
    assert len(list(tmp_path.glob("*.safetensors"))) > 1
    with ws.open(tmp_path) as ckpt:
        threads = checkpoint_health(ckpt)
        single = checkpoint_health(ckpt, scheduler="sync")
    assert threads.to_json() == single.to_json()
    found = by_name(threads)
    dense = found["encoder.layer.1.output.dense.weight"]
    assert dense.flags == ["super weight"] and dense.super_weights[0].coordinates == (3, 77)
    embedding = found["embeddings.word_embeddings.weight"]  # BERT's padding row starts at zero
    assert embedding.dead_rows == {"zero": 1, "constant": 0, "indices": [config.pad_token_id]}


def test_a_basis_capped_by_memory_still_gives_a_lower_bound(model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "BASIS_BYTES", 8 * 200 * 3)  # three vectors of linear.weight's rows
    with ws.open(model) as ckpt:
        capped = by_name(checkpoint_health(ckpt, ["linear.weight", "loud.weight"]))
    sigma = float(torch.linalg.matrix_norm(torch.from_numpy(weights()["loud.weight"]).double(), ord=2))
    assert capped["linear.weight"].power_iterations == 3
    loud = capped["loud.weight"]  # rows of 32 values: 18 vectors fit
    assert loud.power_iterations is not None and loud.power_iterations <= 18
    assert loud.spectral_norm is not None and 0.9 * sigma < loud.spectral_norm <= sigma * (1 + 1e-12)


def test_a_damaged_tensor_is_named_and_the_others_still_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A deflated npz member whose bytes were changed: its CRC-32 fails when read; the other's health is given."""
    import zipfile

    path = tmp_path / "damaged.npz"
    rng = np.random.default_rng(3)
    good = rng.standard_normal((64, 64)).astype(np.float32)
    good[5, 6] = 40.0
    np.savez_compressed(path, a=good, b=rng.standard_normal((64, 64)).astype(np.float32))
    member = zipfile.ZipFile(path).getinfo("b.npy")
    data = bytearray(path.read_bytes())
    start = member.header_offset + 30 + len("b.npy") + 200
    data[start : start + 50] = bytes(value ^ 0xFF for value in data[start : start + 50])
    path.write_bytes(bytes(data))
    with ws.open(path) as ckpt:
        result = checkpoint_health(ckpt, scheduler="sync")
    assert [tensor.name for tensor in result.tensors] == ["a"] and list(result.failed) == ["b"]
    assert result.tensors[0].super_weights[0].coordinates == (5, 6)
    assert result.failed["b"].message.startswith(f"{path}: tensor 'b'")
    status = main(["health", str(path), "--json"])
    assert status == result.failed["b"].exit_status != 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["failed"] == [{"name": "b", "error": result.failed["b"].message}]
    assert "1 tensors could not be read" in captured.err
