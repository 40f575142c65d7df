"""Run a reader on one file in a child process held to the resource rule, and say how it ended.

The rule (README, security model): reading a file uses at most 64 MiB + 8 x its size of
memory and 1 s per MiB + 1 s of time. The child imports everything a reader may import
(numpy, h5py, protobuf, the codecs, every format module), then measures its own address
space (``VmSize``): that is the interpreter's baseline, which the rule does not count.
It then sets ``RLIMIT_AS`` to the baseline + 64 MiB + 8 x the file's size, opens the
file, lists it, reads every tensor, its metadata and layers, and verifies it, and prints
how that ended (``ok`` or the error class), the CPU seconds it took, and the baseline.
An allocation past the limit fails there (a ``MemoryError`` traceback, or a crash): the
caller sees it as neither ``ok`` nor a typed error. The CPU time is held to the rule; the
wall clock, on a machine shared by other work, only stops a run that hangs (a FIFO that
never answers), at three times the rule plus the interpreter's start.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

MiB = 1 << 20
_CHILD = r"""
import resource, sys, time
import numpy as np
import weightscope as ws
from weightscope import errors
import cramjam, h5py, zlib_ng, google.protobuf.message, weightscope._proto  # what readers import lazily
from weightscope.formats import coreml, gguf, keras, numpy_files, onnx, pytorch, safetensors, tensorflow

def address_space():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))

path, size = sys.argv[1], int(sys.argv[2])
baseline = address_space()
limit = baseline + (64 << 20) + 8 * size
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
started = time.process_time()
try:
    if path:  # "": the empty run, measuring the harness alone
        with ws.open(path) as ckpt:
            for name in ckpt:
                ckpt.info(name), ckpt.role(name)
                np.asarray(ckpt[name]).tobytes()
            ckpt.metadata, ckpt.layers()
            problems = ckpt.verify()
            if problems:
                raise problems[0]
    outcome = "ok"
except errors.WeightscopeError as error:
    outcome = type(error).__name__
print(outcome, time.process_time() - started, baseline, flush=True)
"""


@dataclass(frozen=True)
class Bounded:
    outcome: str  # "ok", a weightscope error class, or what went wrong otherwise
    cpu_seconds: float
    baseline: int  # bytes of address space the interpreter had before reading
    allowed_seconds: float

    def assert_within(self, expected: str) -> None:
        assert self.outcome == expected, self.outcome
        assert self.cpu_seconds <= self.allowed_seconds, (
            f"{self.cpu_seconds:.2f} s of CPU, {self.allowed_seconds} allowed"
        )


def size_of(path: Path) -> int:
    """Bytes of a file, or of every file of a TensorFlow prefix."""
    if path.exists():
        return path.stat().st_size if path.is_file() else 0
    return sum(file.stat().st_size for file in path.parent.glob(f"{path.name}.*") if file.is_file())


def run_bounded(path: Path | None, size: int | None = None, *, start_seconds: float = 5.0) -> Bounded:
    """``path`` read in a child under the rule (``None``: the harness alone); ``size`` defaults to its files'."""
    size = size_of(path) if size is None and path is not None else size or 0
    allowed = 1 + size / MiB
    environment = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "1"}
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(Path(__file__).parents[1] / "src"), environment.get("PYTHONPATH")])
    )
    command = [sys.executable, "-c", _CHILD, str(path or ""), str(size)]
    started = time.monotonic()
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, env=environment, timeout=start_seconds + 3 * allowed, check=False
        )
    except subprocess.TimeoutExpired:
        return Bounded(f"hung (killed after {time.monotonic() - started:.1f} s)", float("inf"), 0, allowed)
    fields = done.stdout.split()
    if done.returncode or len(fields) != 3:
        return Bounded(f"exit {done.returncode}: {done.stderr.strip()[-600:]}", float("inf"), 0, allowed)
    return Bounded(fields[0], float(fields[1]), int(fields[2]), allowed)
