"""weightscope against TensorFlow, side by side in one run.

Run from the repository root::

    .venv/bin/python bench/bench_tensorflow.py [--workdir DIR] [--keep] [--quick]

The inputs are written by TensorFlow itself (``tf.raw_ops.SaveV2``, in a subprocess)
into a fresh directory made under /tmp, or under ``--workdir`` if given; that directory
is removed at the end unless ``--keep``. Every comparison runs both sides in the same
run, interleaved (TF, weightscope, TF, weightscope, ...), after one uncounted warm-up
of each, and reports the median and the best of the repetitions. Ratios are taken
between the medians. The exit status is 1 only if a correctness check fails (the two
sides printed or read different values); a missed speed target is reported, not failed.

What is measured, and the targets (speed is measured here, never asserted in tests):

1. The command line, printing one tensor of a small TF1-style checkpoint
   (``layer1/kernel`` [2, 5], ``layer1/bias`` [5], ``layer2/kernel`` [5, 2],
   ``layer2/bias`` [2]): ``python -m tensorflow.python.tools.inspect_checkpoint
   --file_name=PREFIX --tensor_name=layer1/kernel`` against ``weightscope show PREFIX
   layer1/kernel``. Wall time of the child process and its peak resident memory
   (``ru_maxrss`` from ``os.wait4``). Targets (issue 22): weightscope at least 30x faster
   and its peak memory at least 15x smaller. Both outputs must show the same numbers.
   The parent has imported nothing but the standard library at that point, because a
   child's ``ru_maxrss`` starts from its parent's resident size at fork/exec.
2. Opening and listing a checkpoint of many small variables (100,000 float32 tensors,
   ``model/block_00042/dense_3/kernel`` and the like), in one process that imported
   both libraries beforehand: ``tf.train.load_checkpoint(prefix)
   .get_variable_to_shape_map()`` against ``{i.name: i.shape for i in
   ws.open(prefix).infos()}``, and the same for 2,000 variables, where a fixed cost shows.
   Targets (issue 22): at least 3x TensorFlow's speed at 100,000, no slower at 2,000.
3. A full, checksum-verified read of a large checkpoint (64 float32 tensors of 16 MiB,
   1 GiB), warm in the page cache (the data file is read once before timing), in the
   same process: TensorFlow's ``get_tensor`` for every name (it checks each tensor's
   CRC32C and returns an owned array) against weightscope's ``for n in c:
   np.array(c[n])`` (checksum verified, then copied: the like-for-like comparison) and
   ``Checkpoint.verify()`` (every byte checksummed through the memory map, no copy).
   Throughput in GiB/s. Targets: weightscope at least 1.5x TensorFlow's throughput, and
   ``verify()`` at least 70% of the CRC32C-over-mmap bandwidth measured in the same run.
   For context, the machine's own bandwidth on the same bytes: ``crc32c.crc32c`` over
   the memory-mapped data file, a plain ``readinto`` of the file and an ``np.copyto``
   memory copy of the same size.

``--quick`` shrinks the sizes for a smoke run (2,000 variables, 64 MiB); every size is
also a parameter of its own.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import benchlib
from benchlib import (
    GIB,
    MIB,
    Report,
    Row,
    Samples,
    interleave,
    rate_figure,
    time_figure,
    warm_page_cache,
)

# Only the standard library is imported at module level: the command-line comparison
# measures children's peak memory, which Linux starts from the parent's resident size.

TF_QUIET = {"TF_CPP_MIN_LOG_LEVEL": "2"}
SMALL_TENSOR = "layer1/kernel"
MANIFEST = "manifest.json"
FEW = 2_000  # variables of the second listing: issue 22's target, at least TensorFlow's speed there too
Manifest = dict[str, Any]  # what the generator wrote: paths, sizes, TF's version


# -- helpers -------------------------------------------------------------------------


def import_tensorflow() -> Any:
    """``import tensorflow``, its C++ start-up chatter kept off stderr unless the import fails.

    TF 2.21 logs through absl before ``TF_CPP_MIN_LOG_LEVEL`` applies, straight to fd 2.
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.update(TF_QUIET)
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as chatter:
        os.dup2(chatter.fileno(), 2)
        try:
            import tensorflow
        except BaseException:
            os.dup2(saved, 2)
            chatter.seek(0)
            sys.stderr.write(chatter.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    return tensorflow


def resident_mib(field_name: str = "VmHWM") -> float:
    """This process's peak (VmHWM) or current (VmRSS) resident size, from /proc."""
    try:
        with open("/proc/self/status", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


# -- measurements --------------------------------------------------------------------


def memory_figure(samples: Samples) -> str:
    return f"{samples.median / MIB:.1f} MiB (min {samples.min / MIB:.1f})"


# -- inputs, written by TensorFlow in a subprocess ------------------------------------


def big_tensor_shape(tensor_bytes: int) -> list[int]:
    elements = tensor_bytes // 4
    return [elements // 1024, 1024] if elements % 1024 == 0 else [elements]


def many_variables(count: int) -> list[tuple[str, list[int]]]:
    """Names and varied small shapes: 5 dense layers (kernel and bias) per block."""
    result = []
    for index in range(count):
        block, within = divmod(index, 10)
        dense, kind = divmod(within, 2)
        rows, cols = 1 + (index * 7) % 16, 1 + (index * 13) % 8
        name = f"model/block_{block:05d}/dense_{dense}/{'bias' if kind else 'kernel'}"
        result.append((name, [cols] if kind else [rows, cols]))
    return result


def generate_inputs(workdir: Path, variables: int, big_tensors: int, big_bytes: int) -> None:
    """Write the three checkpoints with TensorFlow (runs in the generator subprocess)."""
    import numpy as np

    tf = import_tensorflow()

    rng = np.random.default_rng(0)

    def save(prefix: Path, names: list[str], tensors: list[object]) -> None:
        prefix.parent.mkdir(parents=True, exist_ok=True)
        slices = [""] * len(names)
        tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=names, shape_and_slices=slices, tensors=tensors)

    def normal(shape: list[int]) -> object:
        return tf.constant(rng.standard_normal(shape).astype(np.float32))

    small = workdir / "small" / "model.ckpt"
    shapes = {"layer1/kernel": [2, 5], "layer1/bias": [5], "layer2/kernel": [5, 2], "layer2/bias": [2]}
    save(small, list(shapes), [normal(shape) for shape in shapes.values()])

    many = workdir / "many" / "model.ckpt"
    specs = many_variables(variables)
    save(many, [name for name, _ in specs], [normal(shape) for _, shape in specs])
    few = workdir / "few" / "model.ckpt"  # where a fixed cost shows
    specs = many_variables(FEW)
    save(few, [name for name, _ in specs], [normal(shape) for _, shape in specs])

    # One SaveV2 call needs every tensor alive at once, so the generator's peak is about
    # the checkpoint's size plus TensorFlow's own; the values are made as float32 in TF.
    big = workdir / "big" / "model.ckpt"
    shape = big_tensor_shape(big_bytes // big_tensors)
    names = [f"big/layer_{i:03d}/kernel" for i in range(big_tensors)]
    uniform = tf.random.stateless_uniform
    tensors = [uniform(shape, seed=[i, 1], minval=-1, maxval=1) for i in range(big_tensors)]
    save(big, names, tensors)
    manifest = {
        "small": str(small),
        "many": str(many),
        "many_count": variables,
        "few": str(few),
        "big": str(big),
        "big_bytes": int(sum(int(np.prod(shape)) * 4 for _ in names)),
        "big_tensors": big_tensors,
        "big_shape": shape,
        "big_data": f"{big}.data-00000-of-00001",
        "tensorflow": tf.__version__,
    }
    (workdir / MANIFEST).write_text(json.dumps(manifest, indent=1))


def child_environment(workdir: Path) -> dict[str, str]:
    """The children's environment: TF quiet, and Python's bytecode cache on for both sides.

    Installed packages ship compiled bytecode; an editable checkout run with
    PYTHONDONTWRITEBYTECODE would recompile its sources on every start. A cache under
    the work directory (filled by the uncounted warm-up round) puts both sides on the
    footing of a normal install without writing into the source tree.
    """
    env = {**os.environ, **TF_QUIET, "PYTHONPYCACHEPREFIX": str(workdir / "pycache")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


@dataclass
class ChildRun:
    seconds: float
    maxrss_bytes: int
    returncode: int
    stdout: str
    stderr: str


def run_child(argv: list[str], workdir: Path, env: dict[str, str]) -> ChildRun:
    """Run ``argv``; its wall time and, from ``os.wait4``, its own peak resident memory."""
    with (
        tempfile.TemporaryFile(dir=workdir) as out,
        tempfile.TemporaryFile(dir=workdir) as err,
    ):
        start = time.perf_counter()
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    return ChildRun(seconds, usage.ru_maxrss * 1024, process.returncode, stdout, stderr)


def make_inputs(workdir: Path, args: argparse.Namespace, env: dict[str, str], report: Report) -> Manifest:
    argv = [
        sys.executable, str(Path(__file__).resolve()), "--generate-into", str(workdir),
        "--variables", str(args.variables), "--big-tensors", str(args.big_tensors),
        "--big-mib", str(args.big_mib),
    ]  # fmt: skip
    print(f"writing inputs with TensorFlow under {workdir} ...", flush=True)
    run = run_child(argv, workdir, env)
    if run.returncode != 0:
        sys.stderr.write(run.stderr)
        raise SystemExit(f"the input generator failed with status {run.returncode}")
    manifest: Manifest = json.loads((workdir / MANIFEST).read_text())
    report.context.append(
        f"inputs written by TensorFlow {manifest['tensorflow']} in {run.seconds:.1f} s, "
        f"generator peak RSS {run.maxrss_bytes / MIB:.0f} MiB"
    )
    return manifest


# -- 1. the command line ------------------------------------------------------------


def array_text(output: str) -> str:
    """The printed array: from the first line starting with '[' on, whitespace collapsed.

    ``inspect_checkpoint`` adds a ``# Total number of params`` line after the array.
    """
    lines = [line for line in output.splitlines() if not line.startswith("#")]
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("[")), len(lines))
    return " ".join(" ".join(lines[start:]).split())


def numbers(text: str) -> list[float]:
    return [float(token) for token in re.findall(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", text)]


def compare_cli(prefix: str, workdir: Path, reps: int, env: dict[str, str], report: Report) -> None:
    console_script = Path(sys.executable).parent / "weightscope"
    ws_command = [str(console_script)] if console_script.exists() else [sys.executable, "-m", "weightscope"]
    tf_argv = [
        sys.executable, "-m", "tensorflow.python.tools.inspect_checkpoint",
        f"--file_name={prefix}", f"--tensor_name={SMALL_TENSOR}",
    ]  # fmt: skip
    ws_argv = [*ws_command, "show", prefix, SMALL_TENSOR]
    bare_argv = [sys.executable, "-c", "pass"]
    print(f"1. command line, {reps} runs each, interleaved ...", flush=True)
    parent_peak = resident_mib()
    walls = [Samples(), Samples(), Samples()]
    peaks = [Samples(), Samples(), Samples()]
    outputs: list[str] = ["", ""]
    for rep in range(reps + 1):  # the first round warms the page cache and is not counted
        for index, argv in enumerate((tf_argv, ws_argv, bare_argv)):
            run = run_child(argv, workdir, env)
            if run.returncode != 0:
                sys.stderr.write(run.stderr)
                raise SystemExit(f"{' '.join(argv)} failed with status {run.returncode}")
            if rep:
                walls[index].add(run.seconds)
                peaks[index].add(run.maxrss_bytes)
            if index < 2:
                outputs[index] = run.stdout
    tf_wall, ws_wall, bare_wall = walls
    tf_peak, ws_peak, bare_peak = peaks
    speedup = tf_wall.median / ws_wall.median
    smaller = tf_peak.median / ws_peak.median
    label = f"CLI show {SMALL_TENSOR}"
    report.rows.append(
        Row(
            f"{label}: wall time",
            time_figure(tf_wall),
            time_figure(ws_wall),
            speedup,
            f"{speedup:.1f}x faster",
            30,
        )
    )
    report.rows.append(
        Row(
            f"{label}: peak RSS",
            memory_figure(tf_peak),
            memory_figure(ws_peak),
            smaller,
            f"{smaller:.1f}x smaller",
            15,
        )
    )
    bare = f"{time_figure(bare_wall)}, peak RSS {memory_figure(bare_peak)}"
    report.context.append(f"bare interpreter (python -c pass) for scale: {bare}")
    report.context.append(
        f"a child's ru_maxrss is at least its parent's resident size at spawn: {parent_peak:.1f} MiB here; "
        "children run with a bytecode cache (PYTHONPYCACHEPREFIX in the work dir) filled by the warm-up"
    )
    tf_text, ws_text = (array_text(output) for output in outputs)
    if tf_text and tf_text == ws_text:
        report.check(True, f"CLI: both printed the identical array text {ws_text!r}")
    elif numbers(tf_text) and numbers(tf_text) == numbers(ws_text):
        report.check(True, f"CLI: same {len(numbers(ws_text))} numbers, printed differently")
    else:
        report.check(False, f"CLI: outputs differ: TF {tf_text!r} vs weightscope {ws_text!r}")


# -- 2. open and list many variables, in process ---------------------------------------


def compare_listing(prefix: str, count: int, reps: int, report: Report, target: float) -> None:
    import weightscope as ws

    tf = import_tensorflow()

    def tf_list() -> dict[str, list[int]]:
        reader = tf.train.load_checkpoint(prefix)
        return reader.get_variable_to_shape_map()

    def ws_list() -> dict[str, tuple[int, ...]]:
        with ws.open(prefix) as ckpt:
            return {info.name: info.shape for info in ckpt.infos()}

    print(f"2. open + list {count:,} variables, {reps} rounds, in process ...", flush=True)
    tf_times, ws_times = interleave([tf_list, ws_list], reps)
    ratio = tf_times.median / ws_times.median
    report.rows.append(
        Row(
            f"open + list {count:,} variables",
            time_figure(tf_times),
            time_figure(ws_times),
            ratio,
            f"{ratio:.2f}x (TF/ws time)",
            target,
        )
    )
    tf_shapes, ws_shapes = tf_list(), ws_list()
    same = tf_shapes.keys() == ws_shapes.keys() and all(list(ws_shapes[n]) == tf_shapes[n] for n in tf_shapes)
    verdict = "same" if same else "different"
    report.check(same, f"listing: {verdict} {len(ws_shapes):,} names and shapes (TF: {len(tf_shapes):,})")


# -- 3. full verified read of a large checkpoint, in process -----------------------------


def compare_full_read(manifest: Manifest, reps: int, report: Report) -> None:
    import numpy as np

    import weightscope as ws

    tf = import_tensorflow()

    prefix, data_file, nbytes = str(manifest["big"]), str(manifest["big_data"]), int(manifest["big_bytes"])
    size = f"{nbytes / GIB:.2f} GiB" if nbytes >= GIB else f"{nbytes / MIB:.0f} MiB"
    cold = warm_page_cache(data_file)
    names = sorted(tf.train.load_checkpoint(prefix).get_variable_to_shape_map())

    def tf_read() -> None:
        reader = tf.train.load_checkpoint(prefix)
        for name in names:
            reader.get_tensor(name)

    def ws_copy() -> None:
        with ws.open(prefix) as ckpt:
            for name in ckpt:
                np.array(ckpt[name])

    def ws_verify() -> None:
        with ws.open(prefix) as ckpt:
            problems = ckpt.verify()
        if problems:
            raise SystemExit(f"weightscope found problems: {problems}")

    print(f"3. verified read of {size} ({len(names)} tensors), {reps} rounds, in process ...", flush=True)

    def crc_only() -> None:
        crc_over_fresh_map(data_file)

    tf_times, copy_times, verify_times, crc_times = interleave([tf_read, ws_copy, ws_verify, crc_only], reps)
    label = f"read all {size}, verified"
    for variant, samples in (("np.array copy", copy_times), ("verify(), no copy", verify_times)):
        ratio = tf_times.median / samples.median
        report.rows.append(
            Row(
                f"{label}: {variant}",
                rate_figure(nbytes, tf_times),
                rate_figure(nbytes, samples),
                ratio,
                f"{ratio:.2f}x throughput",
                1.5,
            )
        )
    share = crc_times.median / verify_times.median
    report.rows.append(
        Row(
            f"{label}: verify() vs the machine's CRC32C over a fresh map",
            rate_figure(nbytes, crc_times),
            rate_figure(nbytes, verify_times),
            share,
            f"{share:.0%} of it",
            0.7,
        )
    )
    report.context.append(
        f"comparison 3 runs with the data file warm in the page cache (read once first: {cold:.2f} s); "
        f"tensors {manifest['big_shape']} float32; the copy variant is the like-for-like one"
    )

    reader = tf.train.load_checkpoint(prefix)
    with ws.open(prefix) as ckpt:
        same = all(np.array_equal(reader.get_tensor(n), ckpt[n]) for n in (names[0], names[-1]))
    verdict = "equal" if same else "differ"
    report.check(same, f"large read: first and last tensors {verdict} between TF and weightscope")

    report.context.extend(raw_bandwidth(data_file, nbytes, reps))


def crc_over_fresh_map(data_file: str) -> None:
    """The machine's floor for a verified read: crc32c over the whole data file, freshly mapped."""
    import crc32c

    with open(data_file, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        view = memoryview(mapped)
        crc32c.crc32c(view)
        view.release()


def raw_bandwidth(data_file: str, nbytes: int, reps: int) -> list[str]:
    """The machine's own bandwidth on the same bytes, for scale."""
    import crc32c
    import numpy as np

    buffer = bytearray(os.path.getsize(data_file))

    def read_into() -> None:
        with open(data_file, "rb", buffering=0) as handle:
            handle.readinto(buffer)

    read_times = interleave([read_into], reps)[0]
    with open(data_file, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        view = memoryview(mapped)
        crc_mapped = interleave([lambda: crc32c.crc32c(view)], reps)[0]
        view.release()
    buffer.clear()
    source = np.ones(nbytes, dtype=np.uint8)
    target = np.zeros(nbytes, dtype=np.uint8)
    copy_raw = interleave([lambda: np.copyto(target, source)], reps)[0]
    return [
        f"raw crc32c.crc32c, pages already mapped: {rate_figure(nbytes, crc_mapped)}",
        f"raw file readinto a preallocated buffer: {rate_figure(nbytes, read_times)}",
        f"raw np.copyto memory copy of the same size: {rate_figure(nbytes, copy_raw)}",
    ]


# -- the report ------------------------------------------------------------------------


def print_report(report: Report, args: argparse.Namespace) -> None:
    import numpy as np

    import weightscope as ws

    tf = import_tensorflow()
    versions = f"tensorflow {tf.__version__}, numpy {np.__version__}, weightscope {ws.__version__}"
    benchlib.print_report(
        report,
        title="weightscope vs TensorFlow",
        quick=args.quick,
        versions=versions,
        repetitions=f"CLI {args.cli_reps}, in-process {args.reps} per side, after 1 warm-up each;",
        baseline="TensorFlow",
    )


# -- main ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = benchlib.argument_parser(__doc__.split("\n\n")[0], quick="smaller sizes (2,000 variables, 64 MiB)")
    parser.add_argument("--variables", type=int, help="variables in comparison 2 (100,000; quick 2,000)")
    parser.add_argument("--big-mib", type=int, help="checkpoint size in comparison 3 (1024; quick 64)")
    parser.add_argument("--big-tensors", type=int, default=64, help="tensors in that checkpoint (64)")
    parser.add_argument("--cli-reps", type=int, help="runs of each command in comparison 1 (5, at least 5)")
    parser.add_argument("--reps", type=int, help="rounds of comparisons 2 and 3 (7; quick 5)")
    parser.add_argument("--generate-into", type=Path, help=argparse.SUPPRESS)  # the generator subprocess
    args = parser.parse_args(argv)
    args.variables = args.variables or (2_000 if args.quick else 100_000)
    args.big_mib = args.big_mib or (64 if args.quick else 1024)
    args.cli_reps = args.cli_reps or 5
    args.reps = args.reps or (5 if args.quick else 7)
    if args.cli_reps < 5:
        parser.error("--cli-reps must be at least 5")
    if min(args.variables, args.big_mib, args.big_tensors, args.reps) < 1:
        parser.error("sizes and repetitions must be positive")
    tensor_bytes = args.big_mib * MIB // args.big_tensors
    if tensor_bytes < 4 or tensor_bytes % 4:
        parser.error("--big-mib / --big-tensors must leave whole float32 tensors")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.generate_into is not None:
        generate_inputs(args.generate_into, args.variables, args.big_tensors, args.big_mib * MIB)
        return 0
    os.environ.update(TF_QUIET)
    report = Report()
    with benchlib.work_directory(args, "weightscope-bench-", report) as workdir:
        env = child_environment(workdir)
        manifest = make_inputs(workdir, args, env, report)
        compare_cli(str(manifest["small"]), workdir, args.cli_reps, env, report)
        if int(manifest["many_count"]) != FEW:
            compare_listing(str(manifest["few"]), FEW, args.reps, report, target=1)
        # issue 22: at least 3x TensorFlow's speed at 100,000 variables, at least as fast at 2,000
        count = int(manifest["many_count"])
        compare_listing(str(manifest["many"]), count, args.reps, report, target=3 if count >= 100_000 else 1)
        compare_full_read(manifest, args.reps, report)
        print_report(report, args)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
