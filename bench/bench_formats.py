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

What is measured: reading EVERY tensor of the file, in GiB/s. Each library delivers every
tensor its own way and every variant hands each tensor to the same numpy ``sum``, so every
byte is touched and only the delivery differs:

1. safetensors: ``safetensors.safe_open(path, framework="numpy")`` and ``get_tensor`` for
   every name (a copy) against ``weightscope.open(path)`` and ``ckpt[name]`` (a view of
   the mapped file). For context, copy against copy (``np.array(ckpt[name])``), which runs
   at memory-copy speed on both sides.
2. PyTorch: ``torch.load(path, mmap=True, weights_only=True)`` (lazy tensors over a memory
   map, like weightscope's views, given to numpy with ``.numpy()``) and plain
   ``torch.load(path, weights_only=True)`` (every storage read into memory), against
   ``weightscope.open(path)`` and ``ckpt[name]``. weightscope checks each storage's zip
   CRC-32 (zlib-ng's) on its first read, the storages after it checksummed ahead on the
   other cores (``weightscope.span_checks``); torch checks none, so
   ``weightscope.open(path, verify=False)`` is timed too, with the sum and without it
   (every tensor made an array, no byte touched: what the reading itself costs). An owned
   copy (``clone`` against ``np.array``) is timed for context.

Targets (issue 5): weightscope no slower than the library, i.e. library time / weightscope
time >= 1; with the CRC-32 checked, >= 0.9 of ``torch.load(mmap=True)`` (issue 22).

``--quick`` shrinks the file to 64 MiB for a smoke run; ``--mib`` and ``--tensors`` set the
size directly.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import benchlib
import numpy as np
import safetensors
import safetensors.numpy
import torch
from benchlib import (
    MIB,
    Report,
    Row,
    Samples,
    interleave,
    rate_figure,
    warm_page_cache,
)

import weightscope as ws
from weightscope import span_checks
from weightscope.containers import zip as zip_container

# -- measurements --------------------------------------------------------------------


def add_row(report: Report, label: str, nbytes: int, library: Samples, ours: Samples, target: float | None) -> None:
    ratio = library.median / ours.median
    report.rows.append(
        Row(label, rate_figure(nbytes, library), rate_figure(nbytes, ours), ratio, f"{ratio:.2f}x", target)
    )


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

    # As for PyTorch below: each library delivers every tensor its own way (safetensors a
    # copy, weightscope a view of the mapped file) to the same numpy sum.
    def st_read() -> None:
        with safetensors.safe_open(str(path), framework="numpy") as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                handle.get_tensor(name).sum()

    def ws_read() -> None:
        with ws.open(path) as ckpt:
            for name in ckpt:
                ckpt[name].sum()

    def st_copy() -> None:
        with safetensors.safe_open(str(path), framework="numpy") as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                handle.get_tensor(name)

    def ws_copy() -> None:
        with ws.open(path) as ckpt:
            for name in ckpt:
                np.array(ckpt[name])

    print(f"1. safetensors: read all {size}, {reps} rounds, in process ...", flush=True)
    read_times, ours, copy_times, our_copies = interleave([st_read, ws_read, st_copy, ws_copy], reps)
    add_row(report, f"safetensors {size}: get_tensor vs ckpt[name], + sum", nbytes, read_times, ours, 1)
    add_row(report, f"safetensors {size}: get_tensor vs np.array copy (extra)", nbytes, copy_times, our_copies, None)
    report.context.append(
        f"safetensors: file read once before timing ({cold:.2f} s); the copy row copies the same bytes on both "
        "sides, so it runs at memory-copy speed either way"
    )
    with safetensors.safe_open(str(path), framework="numpy") as handle, ws.open(path) as ckpt:
        names = list(handle.keys())
        same = all(np.array_equal(handle.get_tensor(n), ckpt[n]) for n in (names[0], names[-1]))
        same = same and sorted(names) == sorted(ckpt)
    report.check(same, f"safetensors: names and first/last tensors {'equal' if same else 'differ'}")


# -- 2. PyTorch --------------------------------------------------------------------------


def compare_pytorch(path: Path, nbytes: int, size: str, reps: int, report: Report) -> None:
    cold = warm_page_cache(path)

    # Every variant hands each tensor to the same consumer, a numpy sum that reads every
    # byte, so what differs is only how each library delivers the arrays: torch's lazy
    # mmap tensors (as numpy views), torch's tensors read into memory, weightscope's views.
    def torch_mmap() -> None:
        state = torch.load(path, mmap=True, weights_only=True)
        for tensor in state.values():
            tensor.numpy().sum()

    def torch_load() -> None:
        state = torch.load(path, weights_only=True)
        for tensor in state.values():
            tensor.numpy().sum()

    def ws_read() -> None:
        with ws.open(path) as ckpt:
            for name in ckpt:
                ckpt[name].sum()

    def ws_read_unverified() -> None:
        with ws.open(path, verify=False) as ckpt:
            for name in ckpt:
                ckpt[name].sum()

    def torch_mmap_arrays() -> None:
        state = torch.load(path, mmap=True, weights_only=True)
        for tensor in state.values():
            tensor.numpy()

    def ws_arrays() -> None:
        with ws.open(path, verify=False) as ckpt:
            for name in ckpt:
                ckpt[name]

    def torch_mmap_clone() -> None:
        state = torch.load(path, mmap=True, weights_only=True)
        for tensor in state.values():
            tensor.clone()

    def ws_copy() -> None:
        with ws.open(path) as ckpt:
            for name in ckpt:
                np.array(ckpt[name])

    print(f"2. PyTorch: read all {size}, {reps} rounds, in process ...", flush=True)
    variants = [torch_mmap, torch_load, ws_read, ws_read_unverified, torch_mmap_arrays, ws_arrays]
    variants += [torch_mmap_clone, ws_copy]
    mmap_times, load_times, read_times, unverified_times, lazy_times, view_times, clone_times, copy_times = interleave(
        variants, reps
    )
    add_row(report, f"torch {size}: load(mmap) vs open (CRC-32 checked), + sum", nbytes, mmap_times, read_times, 0.9)
    add_row(report, f"torch {size}: load (into memory) vs open, + sum", nbytes, load_times, read_times, 1)
    add_row(report, f"torch {size}: load(mmap) vs open(verify=False), + sum", nbytes, mmap_times, unverified_times, 1)
    add_row(report, f"torch {size}: load(mmap) vs open(verify=False), arrays only", nbytes, lazy_times, view_times, 1)
    add_row(report, f"torch {size}: load(mmap)+clone vs np.array (extra)", nbytes, clone_times, copy_times, None)
    torch_cpu, ws_cpu = reading_thread_cpu([torch_mmap, ws_read], reps)
    ratio = torch_cpu.median / ws_cpu.median
    report.rows.append(
        Row(f"torch {size}: the same CRC-checked row, CPU of the reading thread (extra)",
            benchlib.time_figure(torch_cpu), benchlib.time_figure(ws_cpu), ratio, f"{ratio:.2f}x", None)
    )  # fmt: skip
    report.context.append(
        f"PyTorch: file read once before timing ({cold:.2f} s); each variant sums every tensor with numpy; "
        "weightscope checks each storage's zip CRC-32 on first read unless verify=False (torch.load checks none), "
        f"those of the next {span_checks.AHEAD_BYTES // MIB} MiB of storages ahead on {span_checks.workers()} "
        "thread(s) while the caller sums: "
        f"{crc_bandwidth(nbytes, reps)}; the clone/copy row is an owned copy (torch's clone uses every core)"
    )
    state = torch.load(path, weights_only=True)
    with ws.open(path) as ckpt:
        names = list(state)
        same = sorted(names) == sorted(ckpt)
        same = same and all(np.array_equal(state[n].numpy(), ckpt[n]) for n in (names[0], names[-1]))
    report.check(same, f"PyTorch: names and first/last tensors {'equal' if same else 'differ'}")


def reading_thread_cpu(functions: list[Callable[[], object]], reps: int) -> list[Samples]:
    """The CPU time of the thread running each function (not of threads it hands work to), ``reps`` rounds in turn:
    what the reading costs where the machine has a core free for the checksums, however loaded it is now."""
    samples = [Samples() for _ in functions]
    for _ in range(reps):
        for function, sample in zip(functions, samples, strict=True):
            start = time.thread_time()
            function()
            sample.add(time.thread_time() - start)
    return samples


def crc_bandwidth(nbytes: int, reps: int) -> str:
    """How fast this machine computes the zip CRC-32: weightscope's (zlib-ng) and zlib's."""
    data = np.ones(nbytes, dtype=np.uint8)
    zlib_times, ours = interleave([lambda: zlib.crc32(data), lambda: zip_container.crc32(data)], reps)
    return f"CRC-32 {rate_figure(nbytes, ours)} (zlib-ng's, one core; zlib's: {rate_figure(nbytes, zlib_times)})"


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
    versions = (
        f"safetensors {safetensors.__version__}, torch {torch.__version__}, numpy {np.__version__}, "
        f"weightscope {ws.__version__}"
    )
    benchlib.print_report(
        report,
        title="weightscope vs safetensors and PyTorch",
        quick=args.quick,
        versions=versions,
        repetitions=f"{args.reps} per variant, interleaved, after 1 warm-up each (ratios: library / weightscope time);",
        baseline="library",
    )


# -- main ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = benchlib.argument_parser(__doc__.split("\n\n")[0], quick="a smaller file (64 MiB)")
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
    report = Report()
    with benchlib.work_directory(args, "weightscope-bench-formats-", report) as workdir:
        nbytes = args.mib * MIB // args.tensors * args.tensors
        size = benchlib.size_label(nbytes)
        print(f"writing {size} ({args.tensors} float32 tensors) twice under {workdir} ...", flush=True)
        start = time.perf_counter()
        st_path, pt_path, _ = make_inputs(workdir, args.tensors, nbytes)
        report.context.append(f"inputs written in {time.perf_counter() - start:.1f} s")
        gc.collect()
        compare_safetensors(st_path, nbytes, size, args.reps, report)
        compare_pytorch(pt_path, nbytes, size, args.reps, report)
        report.context.extend(raw_bandwidth(st_path, nbytes, args.reps))
        print_report(report, args)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
