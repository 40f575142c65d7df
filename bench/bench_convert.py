"""weightscope convert against a plain file copy of the same bytes, side by side in one run.

Run from the repository root::

    .venv/bin/python bench/bench_convert.py [--workdir DIR] [--keep] [--quick] [--mib N]

The input is a TensorFlow checkpoint of float32 tensors (64 of 16 MiB by default: 1 GiB)
written by ``weightscope.save`` into a fresh directory under /tmp (or ``--workdir``). Each
round, interleaved after one uncounted warm-up of each:

1. the baseline: ``shutil.copyfile`` of the checkpoint's data file (the same bytes) and
   an ``fsync`` of the copy, the least any conversion must do;
2. ``weightscope.convert(prefix, "model.safetensors")``: every tensor read from the
   memory map (its CRC32C checked), written to a temporary file, fsynced, read back and
   compared by checksum, then renamed into place;
3. the same with ``layout="pytorch"`` (every kernel transposed on the way), for context.

The ratio is copy time / convert time (the fraction of copy throughput a conversion
reaches; target >= 0.5, issue 6). Peak memory is the process's anonymous resident
memory (``RssAnon`` in /proc/self/status, sampled every 2 ms during each conversion)
above what it held before: the memory-mapped checkpoint's pages are page cache, shared
and reclaimable, so they are not counted as the conversion's memory; the total resident
peak (``VmHWM``) is printed too.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import benchlib
import numpy as np
from benchlib import (
    MIB,
    AnonymousPeak,
    Report,
    Row,
    interleave,
    rate_figure,
    status_kib,
    warm_page_cache,
)

import weightscope as ws
from weightscope.convert import convert


def make_input(workdir: Path, tensors: int, total_bytes: int) -> Path:
    elements = total_bytes // tensors // 4
    shape = (elements // 1024, 1024) if elements % 1024 == 0 else (elements,)
    rng = np.random.default_rng(0)
    prefix = workdir / "source" / "model.ckpt"
    # One array reused under every name keeps the writer's input small; the bytes on disk
    # are the same size either way.
    array = rng.standard_normal(shape, dtype=np.float32)
    ws.save({f"layer{i:03d}/kernel": array for i in range(tensors)}, prefix)
    return prefix


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = Report()
    with benchlib.work_directory(args, "weightscope-bench-convert-", report) as workdir:
        nbytes = args.mib * MIB // args.tensors * args.tensors
        size = benchlib.size_label(nbytes)
        print(f"writing a {size} TensorFlow checkpoint under {workdir} ...", flush=True)
        prefix = make_input(workdir, args.tensors, nbytes)
        data_file = Path(f"{prefix}.data-00000-of-00001")
        cold = warm_page_cache(data_file)
        out = workdir / "out"
        out.mkdir()
        copy_target = out / "copy.data"
        st_target = out / "model.safetensors"
        transposed_target = out / "transposed.safetensors"

        def plain_copy() -> None:
            shutil.copyfile(data_file, copy_target)
            with open(copy_target, "rb+") as handle:
                os.fsync(handle.fileno())
            copy_target.unlink()

        peaks = {"keep": AnonymousPeak(), "pytorch": AnonymousPeak()}

        def converter(target: Path, layout: str) -> Callable[[], None]:
            def run() -> None:
                peaks[layout].measure(lambda: convert(prefix, target, layout=layout))
                target.unlink()

            return run

        before_kib = status_kib("RssAnon")
        print(f"converting {size}, {args.reps} rounds ...", flush=True)
        copy_times, convert_times, transposed_times = interleave(
            [plain_copy, converter(st_target, "keep"), converter(transposed_target, "pytorch")], args.reps
        )
        for label, times, target in (
            (f"convert {size} TF -> safetensors vs copy", convert_times, 0.5),
            (f"convert {size} TF -> safetensors --layout pytorch (extra)", transposed_times, None),
        ):
            ratio = copy_times.median / times.median
            report.rows.append(
                Row(label, rate_figure(nbytes, copy_times), rate_figure(nbytes, times), ratio, f"{ratio:.2f}x", target)
            )
        for layout, peak in peaks.items():
            report.context.append(
                f"peak anonymous memory, layout {layout}: {(peak.peak_kib - before_kib) / 1024:.0f} MiB above the "
                f"{before_kib / 1024:.0f} MiB held before (checkpoint {nbytes / MIB:.0f} MiB)"
            )
        report.context.append(f"peak resident memory of the whole run (VmHWM, page cache included): "
                              f"{status_kib('VmHWM') / 1024:.0f} MiB")  # fmt: skip
        report.context.append(f"source read once before timing ({cold:.2f} s); filesystem of the outputs: {fs(out)}")
        convert(prefix, st_target)
        with ws.open(prefix) as source, ws.open(st_target) as written:
            same = sorted(source) == sorted(written) and all(
                np.array_equal(source[name], written[name]) for name in list(source)[:2]
            )
        report.check(same, f"the safetensors output {'equals' if same else 'differs from'} the source")
        benchlib.print_report(
            report,
            title="weightscope convert vs a plain copy",
            quick=args.quick,
            versions=f"numpy {np.__version__}, weightscope {ws.__version__}",
            repetitions=f"{args.reps} per variant, interleaved, after 1 warm-up each (ratios: copy / convert time);",
            baseline="copy + fsync",
        )
    return 1 if report.failed else 0


def fs(path: Path) -> str:
    """The filesystem type the path is on, from /proc/mounts (tmpfs makes fsync free)."""
    best = ("", "?")
    with open("/proc/mounts", encoding="utf-8") as handle:
        for line in handle:
            _, mount, kind, *_ = line.split()
            if str(path.resolve()).startswith(mount) and len(mount) > len(best[0]):
                best = (mount, kind)
    return f"{best[1]} at {best[0]}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = benchlib.argument_parser(__doc__.split("\n\n")[0], quick="a smaller checkpoint (64 MiB)")
    parser.add_argument("--mib", type=int, help="checkpoint size in MiB (1024; quick 64)")
    parser.add_argument("--tensors", type=int, default=64, help="float32 tensors in the checkpoint (64)")
    parser.add_argument("--reps", type=int, help="rounds (5; quick 3)")
    args = parser.parse_args(argv)
    args.mib = args.mib or (64 if args.quick else 1024)
    args.reps = args.reps or (3 if args.quick else 5)
    if min(args.mib, args.tensors, args.reps) < 1:
        parser.error("sizes and repetitions must be positive")
    if (args.mib * MIB // args.tensors) % 4096:
        parser.error("--mib / --tensors must leave float32 tensors of whole 1024-element rows")
    return args


if __name__ == "__main__":
    sys.exit(main())
