"""Shared fixtures: checkpoints made by real TensorFlow, once per test session."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import weightscope as ws
from weightscope.cli import main

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent / "corpus"))  # the corpus scripts import each other by name

from tf_fixtures import make_fixtures

# The signal tests send SIGINT and SIGHUP to weightscope and expect its handlers. A run started in the
# background by a non-interactive shell, or under nohup, inherits both ignored, and weightscope (rightly)
# leaves an ignored signal ignored: give the suite and its children the defaults an interactive run has.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
if signal.getsignal(signal.SIGHUP) is signal.SIG_IGN:
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


@pytest.fixture(scope="session")
def tf_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every TensorFlow-made fixture checkpoint, by name (see tests/tf_fixtures.py)."""
    return make_fixtures(tmp_path_factory.mktemp("tf"))


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """A dask.distributed LocalCluster of 2 worker processes (a thread each) for the module, and its client."""
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster,
        distributed.Client(cluster) as connected,
    ):
        yield connected


@pytest.fixture
def seed_copy(tf_checkpoints: dict[str, Path], tmp_path: Path) -> Path:
    """A private copy of the seed checkpoint that a test may damage; returns its prefix."""
    source = tf_checkpoints["seed"]
    target = tmp_path / "seed"
    shutil.copytree(source.parent, target)
    return target / source.name


def assert_same_tensor(ours: np.ndarray, theirs: object) -> None:
    """Equal bit for bit: same shape, same element size, same bytes (NaNs included)."""
    theirs = np.asarray(theirs)
    ours = np.asarray(ours)
    assert ours.shape == theirs.shape
    if theirs.dtype.kind == "O" or ours.dtype.kind == "O":
        assert ours.dtype.kind == "O" and theirs.dtype.kind == "O"
        assert ours.ravel().tolist() == theirs.ravel().tolist()
        return
    assert ours.dtype.itemsize == theirs.dtype.itemsize
    if theirs.dtype.names is None:  # TF gives quantized types as structured dtypes
        assert ours.dtype == theirs.dtype
    assert ours.tobytes() == np.ascontiguousarray(theirs).tobytes()


def assert_refused(
    path: Path, error: type[ws.WeightscopeError], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Opening ``path`` raises ``error`` naming the file; ``ls`` says so in one line, with its status."""
    with pytest.raises(error, match=message) as caught:
        ws.open(path)
    assert str(path) in str(caught.value)
    assert main(["ls", str(path)]) == error.exit_status
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("weightscope: error: ") and str(path) in err


@contextlib.contextmanager
def killed_while_writing(program: str, *arguments: str, env: dict[str, str] | None = None) -> Iterator[None]:
    """``python -c program arguments...`` once it has printed "writing"; SIGKILLed when the block ends, as a
    crash mid-write would be, and waited for (its pipe closed: no ResourceWarning)."""
    command = [sys.executable, "-c", program, *arguments]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as process:
        assert process.stdout is not None and process.stdout.readline() == "writing\n"
        try:
            yield
        finally:
            os.kill(process.pid, signal.SIGKILL)
