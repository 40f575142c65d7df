"""A stop signal (SIGTERM, SIGHUP, SIGINT) while files are written leaves nothing behind.

``weightscope convert`` runs in a subprocess on a file large enough to take a while; once
its temporary files have appeared the signal is sent, and the output directory must be
empty afterwards and the exit status 128 + the signal's number. In-process tests check
that the handlers are only installed over the defaults, and put back afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import weightscope as ws
from weightscope.atomic import Interrupted, atomic_files, atomic_write, interruptible

SOURCE = Path(__file__).parents[1] / "src"
MiB = 1 << 20


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """192 MiB of float32 in 12 tensors: long enough to convert that a signal lands mid-way."""
    path = tmp_path_factory.mktemp("large") / "large.safetensors"
    save_file({f"layer{i}.weight": np.full((4 * MiB,), i, np.float32) for i in range(12)}, str(path))
    return path


@pytest.mark.parametrize(
    ("stop", "destination"),
    [(signal.SIGTERM, "model.pt"), (signal.SIGHUP, "model.ckpt"), (signal.SIGINT, "model.safetensors")],
)
def test_a_stop_signal_mid_convert_removes_every_temporary_file(
    large: Path, tmp_path: Path, stop: signal.Signals, destination: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "weightscope", "convert", str(large), str(out / destination)],
        env={**os.environ, "PYTHONPATH": str(SOURCE)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not any(path.is_file() and path.stat().st_size > 0 for path in out.rglob("*")):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no temporary file appeared"
            time.sleep(0.005)
        assert process.poll() is None, "the conversion ended before the signal: make the file larger"
        process.send_signal(stop)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 128 + stop, err
    assert err == "weightscope: interrupted\n"
    assert list(out.iterdir()) == []


def test_atomic_write_removes_its_file_on_sigterm_and_puts_the_handler_back(tmp_path: Path) -> None:
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    with pytest.raises(Interrupted) as caught, atomic_write(tmp_path / "out.bin") as handle:
        handle.write(b"x" * 1000)
        assert len(list(tmp_path.iterdir())) == 1  # the hidden temporary file
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
    assert caught.value.signum == signal.SIGTERM and caught.value.exit_status == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_handlers_of_the_program_are_left_alone(tmp_path: Path) -> None:
    received: list[int] = []

    def own(signum: int, frame: object) -> None:
        received.append(signum)

    previous = signal.signal(signal.SIGHUP, own)
    try:
        with interruptible():
            assert signal.getsignal(signal.SIGHUP) is own
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None)  # ours, over the default
            with interruptible():  # nested: nothing more installed, nothing restored early
                pass
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None)
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(0.1)
        assert received == [signal.SIGHUP]
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_a_signal_during_the_renames_waits_until_the_group_is_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    replace = os.replace

    def signalled_replace(source: str, target: Path) -> None:
        if not list(tmp_path.glob("*.index")) and not list(tmp_path.glob("*.data")):
            os.kill(os.getpid(), signal.SIGTERM)  # mid-commit, before the first rename
            time.sleep(0.05)  # the handler has run by now, and must not have raised
        replace(source, target)

    monkeypatch.setattr(os, "replace", signalled_replace)
    with pytest.raises(Interrupted), atomic_files() as files:
        for name in ("model.data", "model.index"):
            with files.create(tmp_path / name) as handle:
                handle.write(name.encode())
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.data", "model.index"]  # whole, no temporary
    assert (tmp_path / "model.index").read_bytes() == b"model.index"
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_sigterm_during_runs_convert_finishes_what_it_started_and_starts_nothing(tmp_path: Path) -> None:
    run, out = tmp_path / "run", tmp_path / "out"
    run.mkdir()
    for step in range(8):  # 32 MiB each, in threads: two at a time on this machine
        tensors = {f"layer{i}.weight": np.full(2 * MiB, step, np.float32) for i in range(4)}
        save_file(tensors, str(run / f"ckpt-{step}.safetensors"))
    process = subprocess.Popen(
        [sys.executable, "-m", "weightscope", "runs", "convert", str(run), "--to", "pytorch", "--out", str(out)],
        env={**os.environ, "PYTHONPATH": str(SOURCE)},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not out.is_dir() or not any(path.is_file() and path.stat().st_size for path in out.rglob("*")):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no temporary file appeared"
            time.sleep(0.005)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 128 + signal.SIGTERM, err
    written = sorted(out.iterdir())
    assert all(not path.name.startswith(".") for path in written)  # no work directory left
    assert 0 < len(written) < 8  # those under way were finished, the rest never started
    for path in written:  # each one complete
        step = int(path.stem.removeprefix("ckpt-"))
        with ws.open(path) as converted:
            assert sorted(converted) == [f"layer{i}.weight" for i in range(4)]
            assert all((converted[name] == step).all() for name in converted)
