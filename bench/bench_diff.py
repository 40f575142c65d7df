"""weightscope diff of two safetensors files against numpy comparing them loaded: time and peak memory.

Run from the repository root::

    .venv/bin/python bench/bench_diff.py [--workdir DIR] [--keep] [--quick] [--mib N] [--reps N]

The inputs are two safetensors files of 560 MiB (``--mib``) of float32 tensors of 4 MiB,
written by ``safetensors.numpy.save_file`` under /tmp (or ``--workdir``): B is A with one
tensor in eight changed (every value nudged by up to 1e-3), the rest equal. Both files
are read once before timing.

The baseline is what a numpy user writes: ``safetensors.numpy.load_file`` of both files,
then for each tensor ``np.array_equal`` and, for those that differ, the largest
``|a - b|``. weightscope opens both and runs ``checkpoint_diff``: every figure ``diff``
prints for every tensor (status, max |a - b|, relative L2, cosine, mismatched count), on
its threads. Reported: the time of each (medians of interleaved repetitions), the peak
anonymous memory of each above what the process held before (``RssAnon``, sampled every
2 ms; the mapped files' pages are page cache), and the time of one memory compare of the
two mapped files (numpy's ``array_equal`` of their bytes, 64 MiB at a time), for scale;
and, against that memory compare, ``checkpoint_diff`` of A and a byte copy of A: every
tensor equal, found so by its byte compare (issue 22: at memory-compare speed).
weightscope's statuses and largest differences are checked against numpy's.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import benchlib
import numpy as np
import safetensors.numpy
from benchlib import MIB, AnonymousPeak, Report, Row, interleave, status_kib, time_figure, warm_page_cache

import weightscope as ws
from weightscope.analysis import CheckpointDiff, checkpoint_diff

TENSOR_ELEMENTS = 1 << 20  # 4 MiB of float32
CHANGED_EVERY = 8


def make_inputs(workdir: Path, tensors: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    first = {f"layers.{index}.weight": rng.standard_normal(TENSOR_ELEMENTS, np.float32) for index in range(tensors)}
    second = dict(first)
    for index in range(0, tensors, CHANGED_EVERY):
        name = f"layers.{index}.weight"
        second[name] = first[name] + rng.uniform(-1e-3, 1e-3, TENSOR_ELEMENTS).astype(np.float32)
    paths = workdir / "a.safetensors", workdir / "b.safetensors"
    safetensors.numpy.save_file(first, str(paths[0]))
    safetensors.numpy.save_file(second, str(paths[1]))
    return paths


def numpy_diff(paths: tuple[Path, Path]) -> dict[str, float]:
    """The largest |a - b| of each tensor (0 for the equal ones), as numpy computes it from both files loaded."""
    first, second = (safetensors.numpy.load_file(str(path)) for path in paths)
    gaps = {}
    for name, values in first.items():
        other = second[name]
        gaps[name] = 0.0 if np.array_equal(values, other) else float(np.abs(values - other).max())
    return gaps


def memory_compare(paths: tuple[Path, Path]) -> bool:
    """Whether two files hold the same bytes, every byte compared (no stop at the first difference)."""
    first, second = (np.memmap(path, mode="r") for path in paths)
    step = 64 * MIB
    same = [
        np.array_equal(first[start : start + step], second[start : start + step])
        for start in range(0, first.size, step)
    ]
    return all(same)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = Report()
    with benchlib.work_directory(args, "weightscope-bench-diff-", report) as workdir:
        tensors = max(CHANGED_EVERY, args.mib // 4)
        print(f"writing two files of {tensors} float32 tensors of 4 MiB under {workdir} ...", flush=True)
        paths = make_inputs(workdir, tensors)
        nbytes = sum(path.stat().st_size for path in paths)
        cold = sum(warm_page_cache(path) for path in paths)
        before_kib = status_kib("RssAnon")
        theirs_peak, our_peak = AnonymousPeak(), AnonymousPeak()
        numpy_results: list[dict[str, float]] = []
        our_results: list[CheckpointDiff] = []

        def theirs() -> None:
            theirs_peak.measure(lambda: numpy_results.append(numpy_diff(paths)))

        def ours() -> None:
            def run() -> None:
                with ws.open(paths[0]) as a, ws.open(paths[1]) as b:
                    our_results.append(checkpoint_diff(a, b))

            our_peak.measure(run)

        def compare() -> None:
            memory_compare(paths)

        copy = workdir / "a-copy.safetensors"
        shutil.copyfile(paths[0], copy)
        warm_page_cache(copy)
        equal: list[bool] = []

        def ours_equal() -> None:
            with ws.open(paths[0]) as a, ws.open(copy) as b:
                equal.append(checkpoint_diff(a, b).equal)

        def compare_equal() -> None:
            memory_compare((paths[0], copy))

        print(f"diff of 2 x {nbytes / 2 / MIB:.0f} MiB, {args.reps} rounds ...", flush=True)
        their_times, our_times, compare_times, equal_times, compare_equal_times = interleave(
            [theirs, ours, compare, ours_equal, compare_equal], args.reps
        )
        ratio = their_times.median / our_times.median
        changed = len(range(0, tensors, CHANGED_EVERY))
        label = f"diff 2 x {nbytes / 2 / MIB:.0f} MiB safetensors ({tensors} tensors, {changed} changed)"
        report.rows.append(Row(f"{label}: time", time_figure(their_times), time_figure(our_times), ratio,
                               f"{ratio:.2f}x", 1))  # fmt: skip
        theirs_mib, ours_mib = ((peak.peak_kib - before_kib) / 1024 for peak in (theirs_peak, our_peak))
        memory_ratio = theirs_mib / max(ours_mib, 1)
        report.rows.append(Row(f"{label}: peak anonymous memory", f"{theirs_mib:.0f} MiB", f"{ours_mib:.0f} MiB",
                               memory_ratio, f"{memory_ratio:.1f}x smaller", None))  # fmt: skip
        equal_ratio = compare_equal_times.median / equal_times.median
        report.rows.append(Row(f"diff of A and a byte copy of A (all {tensors} equal) vs one memory compare of them",
                               time_figure(compare_equal_times), time_figure(equal_times), equal_ratio,
                               f"{equal_ratio:.2f}x", None))  # fmt: skip
        report.check(all(equal), "A and its copy are found equal")
        report.context.append(
            f"one memory compare of the two mapped files (np.array_equal, 64 MiB at a time): "
            f"{time_figure(compare_times)}, {nbytes / MIB / 1024 / compare_times.median:.2f} GiB/s; "
            f"files read once before timing ({cold:.2f} s)"
        )
        gaps, compared = numpy_results[-1], our_results[-1]
        statuses_agree = all((tensor.status == "equal") == (gaps[tensor.name] == 0) for tensor in compared.tensors)
        gaps_agree = all(tensor.max_abs == gaps[tensor.name] for tensor in compared.tensors)
        report.check(
            statuses_agree and gaps_agree and len(compared.tensors) == len(gaps),
            f"weightscope's statuses and max |a - b| {'equal' if statuses_agree and gaps_agree else 'differ from'} "
            f"numpy's ({sum(tensor.status != 'equal' for tensor in compared.tensors)} different)",
        )
        benchlib.print_report(
            report,
            title="weightscope diff of two safetensors files",
            quick=args.quick,
            versions=f"numpy {np.__version__}, safetensors {safetensors.__version__}, weightscope {ws.__version__}",
            repetitions=f"{args.reps} per variant, interleaved, after 1 warm-up each;",
            baseline="numpy (both loaded)",
        )
    return 1 if report.failed else 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = benchlib.argument_parser(__doc__.split("\n\n")[0], quick="two files of 64 MiB")
    parser.add_argument("--mib", type=int, help="size of each file in MiB (560; quick 64)")
    parser.add_argument("--reps", type=int, default=5, help="rounds (5)")
    args = parser.parse_args(argv)
    args.mib = args.mib or (64 if args.quick else 560)
    if args.mib <= 0 or args.reps < 1:
        parser.error("size and repetitions must be positive")
    return args


if __name__ == "__main__":
    sys.exit(main())
