"""The weightscope command, used as a person or a script would."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import weightscope as ws
from weightscope.cli import Environment, main
from weightscope.errors import ExitStatus


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    """The command's status, stdout and stderr, in an Environment of its own: nothing reaches the process's."""
    out, err = io.StringIO(), io.StringIO()
    status = main([str(arg) for arg in args], env=Environment(stdout=out, stderr=err))
    assert capsys.readouterr() == ("", "")
    return status, out.getvalue(), err.getvalue()


def test_show_layer1_weight_prints_the_kernel(
    tf_checkpoints: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = tf_checkpoints["seed"]
    status, out, err = run(capsys, "show", prefix, "layer1/weight")
    assert status == 0
    with ws.open(prefix) as ckpt:
        assert out == str(ckpt["layer1/kernel"]) + "\n"
    assert "'layer1/weight' is 'layer1/kernel'" in err


def test_show_several_and_json(tf_checkpoints: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    prefix = tf_checkpoints["seed"]
    status, out, _ = run(capsys, "show", prefix, "layer1/kernel", "layer1/bias")
    assert status == 0 and out.startswith("layer1/kernel:\n[[") and "layer1/bias:\n[" in out
    status, out, _ = run(capsys, "show", "--json", prefix, "layer1/bias", "beta2_power")
    document = json.loads(out)
    with ws.open(prefix) as ckpt:
        assert document["layer1/bias"]["values"] == ckpt["layer1/bias"].astype(float).tolist()
        assert document["beta2_power"] == {"dtype": "float32", "shape": [], "values": float(ckpt["beta2_power"])}


def test_show_json_of_special_values(tf_checkpoints: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    prefix = tf_checkpoints["dtypes"]
    with ws.open(prefix) as ckpt:
        names = list(ckpt)
    status, out, _ = run(capsys, "show", "--json", prefix, *names)
    assert status == 0
    document = json.loads(out)  # strict JSON: NaN and infinities are spelled as strings
    assert set(document) == set(names)
    flat = json.dumps(document)
    assert '"NaN"' in flat and '"Infinity"' in flat


def test_show_npy(tf_checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "kernel.npy"
    status, _, _ = run(capsys, "show", tf_checkpoints["seed"], "layer1/weight", "--npy", out_file)
    assert status == 0
    with ws.open(tf_checkpoints["seed"]) as ckpt:
        np.testing.assert_array_equal(np.load(out_file), ckpt["layer1/kernel"])
    assert [path.name for path in tmp_path.iterdir()] == ["kernel.npy"]  # no temporary left


def test_ls_hides_optimizer_state(tf_checkpoints: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "ls", tf_checkpoints["seed"])
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["name", "dtype", "shape", "size"]
    assert [line.split()[0] for line in lines[2:6]] == ["layer1/bias", "layer1/kernel", "layer2/bias", "layer2/kernel"]
    assert "4 tensors, 27 parameters, 108 B" in out
    assert "hidden: 10 optimizer state tensors (--all shows them)" in out
    status, out, _ = run(capsys, "ls", "--all", tf_checkpoints["seed"])
    assert "14 tensors, 27 parameters, 56 optimizer state values, 332 B" in out and "beta1_power" in out


def test_ls_json_and_filter(tf_checkpoints: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "ls", "--json", "--all", "--filter", "layer1/*", tf_checkpoints["seed"])
    assert status == 0
    document = json.loads(out)
    assert (document["format"], document["metadata"], document["hidden"]) == ("tensorflow", {}, {})
    rows = document["tensors"]
    assert [row["name"] for row in rows] == [
        "layer1/bias",
        "layer1/bias/Adam",
        "layer1/bias/Adam_1",
        "layer1/kernel",
        "layer1/kernel/Adam",
        "layer1/kernel/Adam_1",
    ]
    assert rows[3] == {
        "name": "layer1/kernel",
        "dtype": "float32",
        "shape": [2, 5],
        "nbytes": 40,
        "role": "weight",
        "kind": "parameter",
    }
    assert rows[4]["role"] == rows[4]["kind"] == "optimizer" and rows[4]["of"] == "layer1/kernel"
    status, out, _ = run(capsys, "ls", "--json", tf_checkpoints["seed"])
    assert json.loads(out)["hidden"] == {"optimizer": 10}


def test_layers(tf_checkpoints: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "layers", tf_checkpoints["seed"])
    assert status == 0
    rows = [line.split() for line in out.splitlines()[2:4]]
    assert rows[0][:7] == ["layer1", "[2,", "5]", "layer1/kernel", "[5]", "layer1/bias", "-"]
    assert rows[0][7:] == ["15", "4"] and rows[1][-2:] == ["12", "4"]
    status, out, _ = run(capsys, "layers", "--json", tf_checkpoints["seed"])
    layers = json.loads(out)
    assert layers[0]["parameters"]["weight"]["shape"] == [2, 5]
    assert layers[1]["optimizer_state"]["layer2/bias"] == {"m": "layer2/bias/Adam", "v": "layer2/bias/Adam_1"}


def test_verify(seed_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "verify", seed_copy)
    assert status == 0 and out.startswith("OK: 14 tensors")
    with ws.open(seed_copy) as ckpt:
        info = ckpt.info("layer1/kernel/Adam")
    data = Path(info.file)
    raw = bytearray(data.read_bytes())
    raw[info.offset + 3] ^= 0xFF
    data.write_bytes(raw)
    status, out, err = run(capsys, "verify", seed_copy)
    assert status == ExitStatus.CORRUPT
    assert "DAMAGED" in out and "'layer1/kernel/Adam'" in out
    assert "1 of 14 tensors damaged" in err


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["show", "{seed}", "nope"], ExitStatus.NOT_FOUND, "no tensor 'nope'"),
        (["ls", "{missing}"], ExitStatus.NOT_FOUND, "no such file"),
        (["ls", "{garbage}"], ExitStatus.CORRUPT, "bad table magic"),
        (["show", "{seed}", "layer1/kernel", "layer1/bias", "--npy", "x.npy"], ExitStatus.USAGE, "--npy saves one"),
        (["frobnicate"], ExitStatus.USAGE, "No such command"),
    ],
)
def test_errors_are_one_line_with_a_status_per_kind(
    tf_checkpoints: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    status: int,
    message: str,
) -> None:
    garbage = tmp_path / "garbage.index"
    garbage.write_bytes(b"\x01" * 100)
    values = {"seed": tf_checkpoints["seed"], "missing": tmp_path / "missing", "garbage": garbage}
    code, out, err = run(capsys, *[arg.format(**values) for arg in args])
    assert code == status
    assert message in err
    assert "Traceback" not in err
    assert out == ""


def test_traceback_flag_shows_the_stack(tf_checkpoints: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--traceback", "show", str(tf_checkpoints["seed"]), "no\x1b[2Jpe"]) == ExitStatus.NOT_FOUND
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and "TensorNotFoundError" in err
    assert "\x1b" not in err and "no\\x1b[2Jpe" in err  # escaped, as everything written is
    assert err.splitlines()[-1].startswith("weightscope: error: no tensor 'no\\x1b[2Jpe' in ")


def test_module_entry_point(tf_checkpoints: dict[str, Path]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "weightscope", "show", str(tf_checkpoints["seed"]), "layer1/nope"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == ExitStatus.NOT_FOUND
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("weightscope: error:")


def test_control_characters_in_names_are_escaped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prefix = ws.save({"\x1b[31mred\x1b[0m/kernel": np.ones(2, np.float32)}, tmp_path / "model.ckpt")
    for command in (["ls"], ["layers"], ["show", "--json"]):
        args = [*command, prefix] + (["\x1b[31mred\x1b[0m/kernel"] if command[0] == "show" else [])
        status, out, err = run(capsys, *args)
        assert status == 0
        assert "\x1b" not in out + err
    status, out, _ = run(capsys, "ls", prefix)
    assert "\\x1b[31mred\\x1b[0m/kernel" in out


def test_truncated_file_is_an_error_not_an_interruption(seed_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # TruncatedFileError is an EOFError, which click's own main() would call "Aborted!".
    data = Path(f"{seed_copy}.data-00000-of-00001")
    data.write_bytes(data.read_bytes()[:-10])
    status, _, err = run(capsys, "ls", seed_copy)
    assert status == ExitStatus.CORRUPT
    assert err.startswith("weightscope: error:") and err.count("\n") == 1 and "past the end" in err


def test_help_and_version_exit_zero(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "--help")
    assert status == 0 and "Commands:" in out
    status, out, _ = run(capsys, "--version")
    assert status == 0 and ws.__version__ in out


def test_formats_lists_every_reader_and_what_it_needs(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    from weightscope.formats import FORMATS

    status, out, _ = run(capsys, "formats", "--json")
    rows = {row["name"]: row for row in json.loads(out)}
    assert status == 0 and set(rows) == set(FORMATS) >= {"tensorflow", "safetensors", "pytorch", "keras", "gguf"}
    writable = {name for name, row in rows.items() if row["writable"]}
    assert (
        writable == {"tensorflow", "safetensors", "npz", "pytorch", "keras", "flax-msgpack"}
        and not rows["gguf"]["writable"]
    )
    assert all(row["missing"] is None for row in rows.values())  # make test installs every optional part
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "h5py" else real_find_spec(name))
    status, out, _ = run(capsys, "formats")
    assert "needs h5py: pip install 'weightscope[keras]'" in out


def test_stats_all_reports_every_readable_tensor_and_each_damaged_one(
    seed_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with ws.open(seed_copy) as ckpt:
        names = list(ckpt)
        damaged = ["layer1/kernel/Adam", "layer2/bias"]
        infos = [ckpt.info(name) for name in damaged]
    for info in infos:
        data = Path(info.file)
        raw = bytearray(data.read_bytes())
        raw[info.offset + 1] ^= 0xFF
        data.write_bytes(raw)
    status, out, err = run(capsys, "stats", "--all", seed_copy)
    assert status == ExitStatus.CORRUPT
    shown = [line.split()[0] for line in out.splitlines()[2:]]
    assert shown == [name for name in names if name not in damaged]  # every other tensor's figures
    assert all(f"'{name}'" in err for name in damaged)
    assert "2 of 14 tensors could not be read" in err
    status, out, err = run(capsys, "stats", "--all", "--json", seed_copy)
    assert status == ExitStatus.CORRUPT
    rows = json.loads(out)
    assert [row["name"] for row in rows] == names
    with ws.open(seed_copy, verify=False) as ckpt:
        for row in rows:
            if row["name"] in damaged:
                assert set(row) == {"name", "dtype", "shape", "error"} and "checksum" in row["error"].lower()
            else:
                assert row["l2"] == pytest.approx(float(np.linalg.norm(ckpt[row["name"]].astype(np.float64))))


def test_ls_json_carries_the_files_metadata(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3))
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(4, 2)).sum().backward()
    optimizer.step()
    training = tmp_path / "train.pt"
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3}, training)
    status, out, _ = run(capsys, "ls", "--json", training)
    document = json.loads(out)
    assert status == 0 and document["format"] == "pytorch" and document["path"] == str(training)
    assert document["metadata"]["epoch"] == "3" and document["metadata"]["optimizer.param_groups.0.lr"] == "0.001"
    assert [row["name"] for row in document["tensors"]] == [f"model.{name}" for name in model.state_dict()][:-1]
    assert document["hidden"] == {"bookkeeping": 1, "optimizer": 3 * len(list(model.parameters()))}
    flat = tmp_path / "flat.safetensors"
    save_file(model.state_dict(), flat, metadata={"format": "pt", "epoch": "3"})
    status, out, _ = run(capsys, "ls", "--json", flat)
    assert json.loads(out)["metadata"] == {"format": "pt", "epoch": "3"}


def test_view_on_a_busy_port_names_it_and_suggests_port_0(
    tf_checkpoints: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, out, err = run(capsys, "view", "--no-browser", "--port", port, tf_checkpoints["seed"])
    assert status == ExitStatus.USAGE and out == ""
    assert err == (
        f"weightscope: error: cannot listen on 127.0.0.1 port {port}: Address already in use; "
        "--port 0 picks a free port\n"
    )


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["show", "{seed}", "layer1/kernel", "--npy", "{folder}"], ExitStatus.USAGE, "{folder}: Is a directory"),
        # making the folder: the file is in the way
        (["plot", "{seed}", "layer1/kernel", "--out", "{file}/x.png"], ExitStatus.ERROR, "{file}: File exists"),
        (["convert", "{seed}", "{file}/x.npz"], ExitStatus.ERROR, "{file}: File exists"),
        (["demo", "--steps", "1", "--data", "{missing}", "--out", "{folder}/m"], ExitStatus.NOT_FOUND, "{missing}"),
        (["demo", "--steps", "1", "--out", "{file}/m/model.ckpt"], ExitStatus.NOT_FOUND, "{file}"),
        (["runs", "stats", "--scheduler", "tcp://127.0.0.1:{closed}", "{seed}"], ExitStatus.USAGE, "no Dask scheduler"),
        (["ls", "http://127.0.0.1:{closed}/x.safetensors"], ExitStatus.ERROR, "127.0.0.1:{closed}"),
    ],
    ids=["npy-to-folder", "plot-under-file", "convert-under-file", "demo-data", "demo-out", "scheduler", "remote"],
)
def test_system_errors_are_one_clear_line_without_errno(
    tf_checkpoints: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    status: int,
    message: str,
) -> None:
    import socket

    import dask
    import distributed  # noqa: F401 - its defaults in dask's config before the setting below is undone

    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("not a folder")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    values = {"seed": tf_checkpoints["seed"], "folder": "folder", "file": "file", "missing": "missing.npy"}
    values["closed"] = closed
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        code, _, err = run(capsys, *[arg.format(**values) for arg in args])
    assert code == status, err
    assert err.startswith("weightscope: error:") and err.count("\n") == 1
    assert message.format(**values) in err
    assert "[Errno" not in err and ".tmp" not in err and "Traceback" not in err


def test_main_writes_to_the_environment_it_is_given(capsys: pytest.CaptureFixture[str]) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert main(["formats", "--json"], env=Environment(stdout=out, stderr=err)) == 0
    assert '"name": "tensorflow"' in out.getvalue() and err.getvalue() == ""
    assert main(["ls", "/no/such/file.pt"], env=Environment(stdout=out, stderr=err)) != 0
    assert err.getvalue().startswith("weightscope: error: ") and "/no/such/file.pt" in err.getvalue()
    assert capsys.readouterr() == ("", "")  # nothing reached the process's own streams
