"""What the benchmark scripts share: timing, interleaving, figures, the machine's description.

Imports only the standard library, so a script can spawn children before it imports
anything large (a child's peak memory starts from its parent's size).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

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
class Row:
    """One line of the final table: the two figures, their ratio and its target (if any)."""

    comparison: str
    baseline: str  # the library or framework weightscope is measured against
    weightscope: str
    ratio: float  # oriented so that larger is better for weightscope
    ratio_text: str
    target: float | None

    @property
    def met(self) -> str:
        if self.target is None:
            return "-"
        return "yes" if self.ratio >= self.target else "NO"


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
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


def print_report(
    report: Report, *, title: str, versions: str, repetitions: str, baseline: str, quick: bool = False
) -> None:
    """The run's description, the table of rows, the context and checks, and the verdict.

    ``versions`` gets the weightscope source's git state appended, and the title says
    ``(--quick)`` for a quick run.
    """
    title += " (--quick)" if quick else ""
    report.context.append(f"load average at end: {load_average()}")
    versions += source_state(getattr(sys.modules.get("weightscope"), "__file__", None))
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    print()
    print(title)
    print(f"date:    {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"python:  {platform.python_version()} ({sys.executable})")
    print(f"cpu:     {cpu_model()}, {cores} cores ({usable} usable)")
    print(f"versions: {versions}")
    print(f"repetitions: {repetitions}")
    print("figures are the median (and the best) of them, ratios are between medians")
    print()
    headers = ["comparison", baseline, "weightscope", "ratio", "target", "met"]
    table = [
        [row.comparison, row.baseline, row.weightscope, row.ratio_text,
         "-" if row.target is None else f">= {row.target:g}x", row.met]
        for row in report.rows
    ]  # fmt: skip
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *table, strict=True)]
    for line in [headers, ["-" * width for width in widths], *table]:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    print()
    for line in report.context:
        print(f"- {line}")
    for line in report.checks:
        print(f"- check: {line}")
    missed = [row.comparison for row in report.rows if row.met == "NO"]
    print()
    print(f"targets missed: {', '.join(missed)}" if missed else "all targets met")
    if report.failed:
        print("a correctness check FAILED (see above)")


def argument_parser(description: str, quick: str) -> argparse.ArgumentParser:
    """A parser with the options every benchmark has: where its inputs go, and a quick mode."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--workdir", type=Path, help="make the input directory here (default: /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the input directory at the end")
    parser.add_argument("--quick", action="store_true", help=quick)
    return parser


def size_label(nbytes: int) -> str:
    """``1.00 GiB`` or ``64 MiB``: how a row names the size of its input."""
    return f"{nbytes / GIB:.2f} GiB" if nbytes >= GIB else f"{nbytes / MIB:.0f} MiB"


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


@contextlib.contextmanager
def work_directory(args: argparse.Namespace, prefix: str, report: Report | None = None) -> Iterator[Path]:
    """A fresh directory for a run's inputs under ``--workdir`` (or /tmp), removed unless ``--keep``;
    the load average at its start goes into ``report``."""
    if report is not None:
        report.context.append(f"load average at start: {load_average()}")
    parent = args.workdir or Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield workdir
    finally:
        if args.keep:
            print(f"inputs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


class AnonymousPeak:
    """The largest RssAnon seen while the block runs, sampled on a thread."""

    def __init__(self) -> None:
        self.peak_kib = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, status_kib("RssAnon"))
            time.sleep(0.002)

    def measure(self, function: Callable[[], object]) -> None:
        thread = threading.Thread(target=self._sample, daemon=True)
        thread.start()
        try:
            function()
        finally:
            self._stop.set()
            thread.join()
            self._stop.clear()


def _process_status(pid: int) -> dict[str, int]:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            return {
                line.split(":")[0]: int(line.split()[1]) for line in handle if line.startswith(("RssAnon:", "VmHWM:"))
            }
    except (OSError, ValueError):
        return {}


def sampled_run(command: list[str], env: dict[str, str]) -> tuple[str, dict[str, float]]:
    """Run ``command`` to its end; its stdout, and ``{"wall": seconds, "anon": peak RssAnon, "hwm": VmHWM}`` (KiB),
    sampled from outside every 5 ms (anonymous memory: what the process made, not the files it mapped)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak_anon = peak_hwm = 0
    while process.poll() is None:
        figures = _process_status(process.pid)
        peak_anon = max(peak_anon, figures.get("RssAnon", 0))
        peak_hwm = max(peak_hwm, figures.get("VmHWM", 0))
        time.sleep(0.005)
    out, err = process.communicate()
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"{command[:3]} failed ({process.returncode}):\n{err[-3000:]}")
    return out, {"wall": wall, "anon": peak_anon, "hwm": peak_hwm}
