"""What the benchmark scripts share: timing, interleaving, figures, the machine's description.

Imports only the standard library, so a script can spawn children before it imports
anything large (a child's peak memory starts from its parent's size).
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIB = 1 << 20
GIB = 1 << 30


@dataclass
class Samples:
    """Repeated measurements of one quantity."""

    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def min(self) -> float:
        return min(self.values)


@dataclass
class Report:
    rows: list[Any] = field(default_factory=list)  # each script's own Row
    context: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    failed: bool = False  # a correctness check failed (speed is reported, never failed on)

    def check(self, passed: bool, text: str) -> None:
        self.checks.append(text if passed else f"FAILED: {text}")
        self.failed = self.failed or not passed


def format_seconds(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.3f} s"


def time_figure(samples: Samples) -> str:
    return f"{format_seconds(samples.median)} (min {format_seconds(samples.min)})"


def rate_figure(nbytes: int, samples: Samples) -> str:
    return f"{nbytes / GIB / samples.median:.2f} GiB/s (best {nbytes / GIB / samples.min:.2f})"


def timed(function: Callable[[], object]) -> float:
    gc.collect()
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def interleave(functions: Sequence[Callable[[], object]], reps: int) -> list[Samples]:
    """Run each function once to warm up, then ``reps`` rounds of all of them in turn."""
    for function in functions:
        function()
    samples = [Samples() for _ in functions]
    for _ in range(reps):
        for function, sample in zip(functions, samples, strict=True):
            sample.add(timed(function))
    return samples


def warm_page_cache(path: str | os.PathLike[str]) -> float:
    """Read the whole file once; returns the seconds it took."""
    buffer = bytearray(8 * MIB)
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as handle:
        while handle.readinto(buffer):
            pass
    return time.perf_counter() - start


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def source_state(module_file: str | None) -> str:
    """`` (git abc1234, modified)`` for a package run from a git checkout, else ``""``."""
    if module_file is None:
        return ""
    where = str(Path(module_file).parent)

    def git(*command: str) -> str:
        done = subprocess.run(["git", "-C", where, *command], capture_output=True, text=True, check=True)
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        status = git("status", "--porcelain", "--", ".")
    except (OSError, subprocess.CalledProcessError):
        return ""
    return f" (git {commit}{', with uncommitted changes' if status else ''})"
