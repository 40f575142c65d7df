"""Long work shows a progress bar on a terminal: bytes and tensors done, the rate; nothing on a pipe, nothing with
--json or --quiet. The commands run as a user runs them, in a process of their own, stderr on a real pseudo-terminal."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import weightscope as ws
from weightscope.analysis import checkpoint_diff, checkpoint_stats
from weightscope.convert import convert

# tqdm's rate: so many a second, or (below one) so many seconds each
RATE = re.compile(r"\d[\d.]* ?([kMG]?B|tensors|tasks|weights|shards)/s|\d[\d.]*s/ ?(tensors|tasks|weights|shards)")


def _run(*args: object, terminal: bool = True, delay: str = "0") -> tuple[int, str, str]:
    """``weightscope ARGS`` in a process of its own, stderr on a pseudo-terminal (else a pipe): its exit status,
    stdout and stderr. The bar is drawn after ``delay`` seconds (from the start by default), 120 columns wide."""
    env = {**os.environ, "WEIGHTSCOPE_PROGRESS_DELAY": delay, "COLUMNS": "120"}
    command = [sys.executable, "-m", "weightscope", *map(str, args)]
    if not terminal:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        return done.returncode, done.stdout, done.stderr
    primary, secondary = pty.openpty()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=secondary, env=env)
    os.close(secondary)
    stdout: list[bytes] = []
    reader = threading.Thread(target=lambda: stdout.append(process.stdout.read()))  # type: ignore[union-attr]
    reader.start()
    received = []
    while True:
        try:
            data = os.read(primary, 65536)
        except OSError:  # EIO: the process closed the terminal's last end
            break
        if not data:
            break
        received.append(data)
    os.close(primary)
    status = process.wait(timeout=300)
    reader.join()
    return status, stdout[0].decode(), b"".join(received).decode()


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 MiB of weights, each tensor two of the chunks the statistics are computed in."""
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("progress")
    tensors = {f"layer{i}.weight": rng.standard_normal((1024, 1024), dtype=np.float32) for i in range(6)}
    ws.save(tensors, folder / "big.safetensors")
    tensors["layer5.weight"] = tensors["layer5.weight"] + 1
    ws.save(tensors, folder / "other.safetensors")
    return folder / "big.safetensors"


def _final(stderr: str) -> str:
    """The bar as it was left: the last of the lines drawn over each other (notes may follow it)."""
    return stderr.replace("\r\n", "\n").split("\r")[-1].split("\n")[0]


def test_stats_draws_bytes_tensors_and_rate_on_a_terminal_only(big: Path) -> None:
    status, out, err = _run("stats", big)
    assert status == 0 and "layer5.weight" in out and "\r" not in out  # the table on stdout, as it is
    final = _final(err)
    assert final.startswith("stats big.safetensors: 100%") and "24.0M/24.0M" in final and "6/6 tensors" in final
    assert RATE.search(final), final
    assert err.count("\r") >= 2  # drawn first, then over itself (each tenth of a second of work, and at its end)
    piped = _run("stats", big, terminal=False)
    assert piped == (0, out, "")  # the same table; nothing on a pipe
    for quiet in (["--json"], ["-q"], ["--quiet"]):
        args = [*quiet, "stats", big] if quiet[0] != "--json" else ["stats", "--json", big]
        status, printed, err = _run(*args)
        assert status == 0 and printed and err == "", (quiet, err)
    assert _run("stats", big, delay="60")[::2] == (0, "")  # work done before the delay: no bar at all


@pytest.mark.parametrize(
    ("args", "label", "counted"),
    [
        (["verify", "{big}"], "verify big.safetensors: 100%", "6/6 tensors"),
        (["hash", "{big}"], "hash big.safetensors: 100%", "6/6 tensors"),
        (["diff", "{big}", "{other}"], "diff big.safetensors other.safetensors: 100%", "12/12 tensors"),
        (["convert", "{big}", "{tmp}/out.safetensors"], "convert big.safetensors: 100%", "6/6 tensors"),
        (["health", "{big}"], "health big.safetensors: 100%", "tasks/s"),
        (["spectra", "{big}", "--top", "8"], "spectra big.safetensors: 100%", "tasks/s"),
        (["diff", "--anatomy", "--intruders", "0", "{big}", "{other}"], "diff --anatomy big.safetensors", "weights/s"),
        (["plot", "{big}", "layer0.weight", "layer1.weight", "--out", "{tmp}/h.png"], "plot big.safetensors", "2/2"),
        (
            ["plot", "{big}", "layer0.weight", "--kind", "spectrum", "--out", "{tmp}/s.png"],
            "plot big.safetensors",
            "1/1",
        ),
    ],
    ids=["verify", "hash", "diff", "convert", "health", "spectra", "anatomy", "plot", "plot-spectrum"],
)
def test_long_commands_draw_their_bar(big: Path, tmp_path: Path, args: list[str], label: str, counted: str) -> None:
    def words(tmp: Path) -> list[str]:
        tmp.mkdir(exist_ok=True)
        return [arg.format(big=big, other=big.with_name("other.safetensors"), tmp=tmp) for arg in args]

    status, _, err = _run(*words(tmp_path / "drawn"))
    final = _final(err)
    assert status in (0, 1) and final.startswith(label) and counted in final and RATE.search(final), err[-500:]
    assert _run("-q", *words(tmp_path / "quiet"))[::2] == (status, "")  # the same verdict, nothing on stderr


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder of 12 shards, with its index, as huggingface_hub splits one."""
    source = tmp_path_factory.mktemp("sharded") / "model.safetensors"
    ws.save({f"layer{i}.weight": np.full((4, 4), i, np.float32) for i in range(12)}, source)
    folder = source.with_name("model")
    convert(source, f"{folder}/", max_shard_size=64)
    assert len(list(folder.glob("*.safetensors"))) == 12
    return folder


@pytest.mark.parametrize("command", ["summary", "ls", "layers"])
def test_a_folders_shards_are_counted_as_they_open(folder: Path, command: str) -> None:
    status, out, err = _run(command, folder)
    assert status == 0 and "layer11" in out
    final = _final(err)
    assert final.startswith(f"open {folder.name}: 100%") and "12/12 [" in final and "shards/s" in final, err
    assert _run(command, folder, terminal=False) == (0, out, "")


def test_the_library_counts_every_tensor_and_byte_once(big: Path) -> None:
    """The callbacks' sums are the work's, and the figures those computed without them."""
    seen: list[tuple[int, int]] = []
    lock = threading.Lock()

    def advance(tensors: int, nbytes: int) -> None:
        with lock:
            seen.append((tensors, nbytes))

    small = big.with_name("small.safetensors")
    ws.save({f"b{i}": np.arange(i + 1, dtype=np.float16) for i in range(50)}, small)  # batched, not chunked
    for path in (big, small):
        with ws.open(path) as ckpt:
            seen.clear()
            assert checkpoint_stats(ckpt, list(ckpt), advance=advance) == checkpoint_stats(ckpt, list(ckpt))
            assert tuple(map(sum, zip(*seen, strict=True))) == (len(ckpt), sum(info.nbytes for info in ckpt.infos()))
            seen.clear()
            assert ckpt.verify(advance) == []
            assert tuple(map(sum, zip(*seen, strict=True))) == (len(ckpt), sum(info.nbytes for info in ckpt.infos()))
    with ws.open(big) as a, ws.open(big.with_name("other.safetensors")) as b:
        seen.clear()
        assert checkpoint_diff(a, b, advance=advance) == checkpoint_diff(a, b)
        assert tuple(map(sum, zip(*seen, strict=True))) == (12, 2 * 24 << 20)
