"""weightscope against the safetensors and PyTorch libraries, side by side in one run.

Run from the repository root::

    .venv/bin/python bench/bench_formats.py [--workdir DIR] [--keep] [--quick] [--mib N]

The inputs (the same float32 tensors, 64 of 16 MiB by default: 1 GiB) are written into a
fresh directory made under /tmp, or under ``--workdir`` if given, once as a ``.safetensors``
file (``safetensors.numpy.save_file``) and once as a PyTorch zip checkpoint (``torch.save``
of a dict of the same tensors); that directory is removed at the end unless ``--keep``.
Each file is read once before timing, so every figure is for a file warm in the page cache.
Every comparison runs all its variants in the same process, interleaved (library,
weightscope, library, weightscope, ...), after one uncounted warm-up of each, and reports
the median and the best of the repetitions. Ratios are taken between the medians. The exit
status is 1 only if a correctness check fails (the two sides read different values); a
missed speed target is reported, not failed.

What is measured: reading EVERY tensor of the file into an owned array, in GiB/s.

1. safetensors: ``safetensors.safe_open(path, framework="numpy")`` and ``get_tensor`` for
   every name (each returns a copy) against ``weightscope.open(path)`` and
   ``np.array(ckpt[name])`` for every name (a copy: the like-for-like comparison). For
   context, weightscope's zero-copy ``ckpt[name]`` for every name (views of the memory map,
   no byte is touched) is timed too.
2. PyTorch: ``torch.load(path, mmap=True, weights_only=True)`` then ``t.clone()`` of every
   tensor, and plain ``torch.load(path, weights_only=True)`` (which reads every storage into
   memory), against ``weightscope.open(path)`` and ``np.array(ckpt[name])`` for every name.
   weightscope checks the zip CRC-32 of each storage on its first read (PyTorch checks
   none); ``weightscope.open(path, verify=False)`` is timed as well to show that cost.

Targets (issue 5): weightscope no slower than the library, i.e. library time / weightscope
time >= 1, for the like-for-like copies.

``--quick`` shrinks the file to 64 MiB for a smoke run; ``--mib`` and ``--tensors`` set the
size directly.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import safetensors
import safetensors.numpy
import torch
from benchlib import (
    GIB,
    MIB,
    Report,
    Samples,
    cpu_model,
    interleave,
    rate_figure,
    source_state,
    time_figure,
    warm_page_cache,
)

import weightscope as ws

# -- measurements --------------------------------------------------------------------


@dataclass
class Row:
    """One line of the final table: the two figures, their ratio and its target (if any)."""

    comparison: str
    library: str
    weightscope: str
    ratio: float  # oriented so that larger is better for weightscope
    target: float | None

    @property
    def met(self) -> str:
        if self.target is None:
            return "-"
        return "yes" if self.ratio >= self.target else "NO"


def add_row(report: Report, label: str, nbytes: int, library: Samples, ours: Samples, target: float | None) -> None:
    ratio = library.median / ours.median
    report.rows.append(Row(label, rate_figure(nbytes, library), rate_figure(nbytes, ours), ratio, target))


# -- inputs ----------------------------------------------------------------------------


def make_inputs(workdir: Path, tensors: int, total_bytes: int) -> tuple[Path, Path, list[str]]:
    """Write the same float32 tensors as a safetensors file and as a torch.save zip."""
    elements = total_bytes // tensors // 4
    shape = (elements // 1024, 1024) if elements % 1024 == 0 else (elements,)
    rng = np.random.default_rng(0)
    names = [f"model.layers.{i:03d}.weight" for i in range(tensors)]
    arrays = {name: rng.standard_normal(shape, dtype=np.float32) for name in names}
    st_path = workdir / "model.safetensors"
    pt_path = workdir / "model.pt"
    safetensors.numpy.save_file(arrays, str(st_path))
    torch.save({name: torch.from_numpy(array) for name, array in arrays.items()}, pt_path)
    return st_path, pt_path, names


# -- 1. safetensors ----------------------------------------------------------------------


def compare_safetensors(path: Path, nbytes: int, size: str, reps: int, report: Report) -> None:
    cold = warm_page_cache(path)

    def st_copy() -> None:
        with safetensors.safe_open(str(path), framework="numpy") as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                handle.get_tensor(name)

    def ws_copy() -> None:
        with ws.open(path) as ckpt:
            for name in ckpt:
                np.array(ckpt[name])

    def ws_view() -> None:
        with ws.open(path) as ckpt:
            for name in ckpt:
                ckpt[name]

    print(f"1. safetensors: read all {size}, {reps} rounds, in process ...", flush=True)
    st_times, copy_times, view_times = interleave([st_copy, ws_copy, ws_view], reps)
    add_row(report, f"safetensors {size}: get_tensor vs np.array copy", nbytes, st_times, copy_times, 1)
    add_row(report, f"safetensors {size}: get_tensor vs view only (extra)", nbytes, st_times, view_times, None)
    report.context.append(
        f"safetensors: file read once before timing ({cold:.2f} s); weightscope views: "
        f"{time_figure(view_times)} for every ckpt[name] (no byte touched, so its 'GiB/s' is nominal)"
    )
    with safetensors.safe_open(str(path), framework="numpy") as handle, ws.open(path) as ckpt:
        names = list(handle.keys())
        same = all(np.array_equal(handle.get_tensor(n), ckpt[n]) for n in (names[0], names[-1]))
        same = same and sorted(names) == sorted(ckpt)
    report.check(same, f"safetensors: names and first/last tensors {'equal' if same else 'differ'}")


# -- 2. PyTorch --------------------------------------------------------------------------


def compare_pytorch(path: Path, nbytes: int, size: str, reps: int, report: Report) -> None:
    cold = warm_page_cache(path)

    def torch_mmap_clone() -> None:
        state = torch.load(path, mmap=True, weights_only=True)
        for tensor in state.values():
            tensor.clone()

    def torch_load() -> None:
        torch.load(path, weights_only=True)

    def ws_copy() -> None:
        with ws.open(path) as ckpt:
            for name in ckpt:
                np.array(ckpt[name])

    def ws_copy_unverified() -> None:
        with ws.open(path, verify=False) as ckpt:
            for name in ckpt:
                np.array(ckpt[name])

    print(f"2. PyTorch: read all {size}, {reps} rounds, in process ...", flush=True)
    variants = [torch_mmap_clone, torch_load, ws_copy, ws_copy_unverified]
    mmap_times, load_times, copy_times, unverified_times = interleave(variants, reps)
    add_row(report, f"torch {size}: load(mmap)+clone vs np.array (CRC)", nbytes, mmap_times, copy_times, 1)
    add_row(report, f"torch {size}: load (no mmap) vs np.array (CRC)", nbytes, load_times, copy_times, 1)
    add_row(report, f"torch {size}: load(mmap)+clone vs verify=False", nbytes, mmap_times, unverified_times, None)
    add_row(report, f"torch {size}: load (no mmap) vs verify=False", nbytes, load_times, unverified_times, None)
    report.context.append(
        f"PyTorch: file read once before timing ({cold:.2f} s); weightscope checks each storage's zip "
        "CRC-32 on first read (torch.load checks none); the verify=False rows show that cost"
    )
    state = torch.load(path, weights_only=True)
    with ws.open(path) as ckpt:
        names = list(state)
        same = sorted(names) == sorted(ckpt)
        same = same and all(np.array_equal(state[n].numpy(), ckpt[n]) for n in (names[0], names[-1]))
    report.check(same, f"PyTorch: names and first/last tensors {'equal' if same else 'differ'}")


def raw_bandwidth(path: Path, nbytes: int, reps: int) -> list[str]:
    """The machine's own bandwidth on the same bytes, for scale."""
    buffer = bytearray(os.path.getsize(path))

    def read_into() -> None:
        with open(path, "rb", buffering=0) as handle:
            handle.readinto(buffer)

    read_times = interleave([read_into], reps)[0]
    buffer.clear()
    source = np.ones(nbytes, dtype=np.uint8)
    target = np.zeros(nbytes, dtype=np.uint8)
    copy_times = interleave([lambda: np.copyto(target, source)], reps)[0]
    return [
        f"raw file readinto a preallocated buffer (safetensors file): {rate_figure(nbytes, read_times)}",
        f"raw np.copyto memory copy of the same size: {rate_figure(nbytes, copy_times)}",
    ]


# -- the report ------------------------------------------------------------------------


def print_report(report: Report, args: argparse.Namespace) -> None:
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    print()
    print("weightscope vs safetensors and PyTorch" + (" (--quick)" if args.quick else ""))
    print(f"date:    {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"python:  {platform.python_version()} ({sys.executable})")
    print(f"cpu:     {cpu_model()}, {cores} cores ({usable} usable)")
    versions = (
        f"safetensors {safetensors.__version__}, torch {torch.__version__}, numpy {np.__version__}, "
        f"weightscope {ws.__version__}"
    )
    print(f"versions: {versions}{source_state(ws.__file__)}")
    print(f"repetitions: {args.reps} per variant, interleaved, after 1 warm-up each;")
    print("figures are the median (and the best) of them, ratios are between medians (library / weightscope time)")
    print()
    headers = ["comparison", "library", "weightscope", "ratio", "target", "met"]
    table = [
        [row.comparison, row.library, row.weightscope, f"{row.ratio:.2f}x",
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


# -- main ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, help="make the input directory here (default: /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the input directory at the end")
    parser.add_argument("--quick", action="store_true", help="a smaller file (64 MiB)")
    parser.add_argument("--mib", type=int, help="file size in MiB (1024; quick 64)")
    parser.add_argument("--tensors", type=int, default=64, help="float32 tensors in the file (64)")
    parser.add_argument("--reps", type=int, help="rounds of each comparison (7; quick 5)")
    args = parser.parse_args(argv)
    args.mib = args.mib or (64 if args.quick else 1024)
    args.reps = args.reps or (5 if args.quick else 7)
    if min(args.mib, args.tensors, args.reps) < 1:
        parser.error("sizes and repetitions must be positive")
    tensor_bytes = args.mib * MIB // args.tensors
    if tensor_bytes < 4 or tensor_bytes % 4:
        parser.error("--mib / --tensors must leave whole float32 tensors")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    parent = args.workdir or Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="weightscope-bench-formats-", dir=parent))
    report = Report()
    report.context.append(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    try:
        nbytes = args.mib * MIB // args.tensors * args.tensors
        size = f"{nbytes / GIB:.2f} GiB" if nbytes >= GIB else f"{nbytes / MIB:.0f} MiB"
        print(f"writing {size} ({args.tensors} float32 tensors) twice under {workdir} ...", flush=True)
        start = time.perf_counter()
        st_path, pt_path, _ = make_inputs(workdir, args.tensors, nbytes)
        report.context.append(f"inputs written in {time.perf_counter() - start:.1f} s")
        gc.collect()
        compare_safetensors(st_path, nbytes, size, args.reps, report)
        compare_pytorch(pt_path, nbytes, size, args.reps, report)
        report.context.extend(raw_bandwidth(st_path, nbytes, args.reps))
        report.context.append(f"load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
        print_report(report, args)
    finally:
        if args.keep:
            print(f"inputs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
