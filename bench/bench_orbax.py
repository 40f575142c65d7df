"""Reading a whole Orbax checkpoint: weightscope (no JAX, no tensorstore) against tensorstore's own read.

Run from the repository root::

    .venv/bin/python bench/bench_orbax.py [--workdir DIR] [--keep] [--quick] [--mib N] [--framework-python PY]

The input is made by the real Orbax (``StandardCheckpointer``: OCDBT, zarr v2, zstd) in the fixtures environment
(``--framework-python``, default ``.venv-fixtures/bin/python``, which ``make fixtures-env`` builds; measured here
with ``/work/fixenv/bin/python``): 16 float32 arrays of random normal values, 256 MiB in all by default (``--mib``).
Where that Python has no Orbax the benchmark says so and stops: it makes nothing else.

Each round, interleaved after one uncounted warm-up of each:

1. tensorstore, as Orbax restores: one shared ``ts.Context``, ``ts.open`` of every array (the ``zarr`` driver on
   an ``ocdbt`` kvstore at ``<param>/``), every read started at once and awaited (tensorstore's own threads);
   and, for context, the same one array after another (open, read, wait).
   It runs in a subprocess of the framework Python (tensorstore is not a weightscope dependency); the time is
   measured inside it, from before the first open to the last read's end, so interpreter start-up and imports
   are not counted. Where tensorstore imports here, the same code runs in this process instead.
2. weightscope: ``weightscope.open(item)`` (manifest, B+tree, every array's zarr metadata) and every array read
   by ``ckpt.arrays()`` (each chunk's zstd frame decoded into its place; the next arrays read ahead on a few
   threads while one is taken, as tensorstore reads them all at once: zstd decodes off the GIL).

The ratio is tensorstore's time / weightscope's (target >= 1x against the first). Both sides' arrays are checked
equal (a CRC-32 of every array's bytes, by name).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import zlib
from collections.abc import Callable, Sequence

import benchlib
import numpy as np
from benchlib import MIB, Report, Row, Samples, interleave, rate_figure, warm_page_cache

import weightscope as ws

MAKE = """
import sys, numpy as np, orbax.checkpoint as ocp
path, arrays, elements = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
tree = {"params": {f"layer{i:02d}": {"kernel": rng.standard_normal((elements // 1024, 1024), dtype=np.float32)}
                   for i in range(arrays)}}
checkpointer = ocp.StandardCheckpointer()
checkpointer.save(path, tree)
checkpointer.wait_until_finished()
"""

# Reads every array of the item at argv[1] as Orbax's restore does; prints {"seconds", "crc": {param: crc32}}.
READ = """
import asyncio, json, sys, time, zlib
import tensorstore as ts

def read_all(item, together=True):
    meta = json.load(open(f"{item}/_METADATA"))
    params = [".".join(str(k["key"]) for k in leaf["key_metadata"]) for leaf in meta["tree_metadata"].values()]
    driver = "zarr3" if meta.get("use_zarr3") else "zarr"
    start = time.perf_counter()
    context = ts.Context()
    specs = [{"driver": driver, "kvstore": {"driver": "ocdbt", "base": f"file://{item}/", "path": f"{param}/"}}
             for param in params]
    if together:  # as Orbax restores: every open, then every read, started at once
        stores = [future.result() for future in [ts.open(spec, context=context, open=True) for spec in specs]]
        arrays = [future.result() for future in [store.read() for store in stores]]
    else:  # one array after another, as a mapping is read
        arrays = [ts.open(spec, context=context, open=True).result().read().result() for spec in specs]
    seconds = time.perf_counter() - start
    return seconds, {param: zlib.crc32(array.tobytes()) for param, array in zip(params, arrays)}

if __name__ == "__main__":
    seconds, crc = read_all(sys.argv[1], sys.argv[2] == "together")
    print(json.dumps({"seconds": seconds, "crc": crc}))
"""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = benchlib.argument_parser(__doc__.splitlines()[0], "64 MiB, 2 rounds")
    parser.add_argument("--mib", type=int, default=256, help="the checkpoint's size (default 256)")
    parser.add_argument("--reps", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--framework-python", default=".venv-fixtures/bin/python", help="a Python with orbax")
    args = parser.parse_args(argv)
    if args.quick:
        args.mib, args.reps = 64, 2
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = Report()
    python = args.framework_python
    has_orbax = subprocess.run([python, "-c", "import orbax.checkpoint, tensorstore"], capture_output=True)
    if has_orbax.returncode != 0:
        print(f"{python} has no orbax-checkpoint and tensorstore (make fixtures-env): nothing made, nothing measured")
        return 0
    with benchlib.work_directory(args, "weightscope-bench-orbax-", report) as workdir:
        arrays = 16
        elements = args.mib * MIB // 4 // arrays
        nbytes = elements * 4 * arrays
        size = benchlib.size_label(nbytes)
        item = workdir / "checkpoint"
        print(f"writing a {size} Orbax checkpoint (Orbax, OCDBT, zarr v2, zstd) under {workdir} ...", flush=True)
        subprocess.run([python, "-c", MAKE, str(item), str(arrays), str(elements)], check=True, capture_output=True)
        stored = sum(path.stat().st_size for path in item.rglob("*") if path.is_file())
        for path in item.rglob("*"):
            if path.is_file():
                warm_page_cache(path)
        script = workdir / "tensorstore_read.py"
        script.write_text(READ)
        try:
            import tensorstore

            in_process = True
        except ImportError:
            in_process = False
        inside = {"together": Samples(), "one by one": Samples()}
        crcs: dict[str, dict[str, int]] = {}

        def tensorstore(mode: str) -> Callable[[], None]:
            def read() -> None:
                if in_process:
                    namespace: dict[str, object] = {}
                    exec(compile(READ, str(script), "exec"), namespace)
                    seconds, crc = namespace["read_all"](str(item), mode == "together")  # type: ignore[operator]
                else:
                    command = [python, str(script), str(item), mode]
                    result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
                    seconds, crc = result["seconds"], result["crc"]
                inside[mode].add(seconds)
                crcs[f"tensorstore {mode}"] = crc

            return read

        kept: dict[str, np.ndarray] = {}

        def weightscope_read() -> None:
            found = {}
            with ws.open(item) as ckpt:
                for name, array in ckpt.arrays():
                    found[ckpt.info(name).key] = array
            kept.update(found)  # checked after the timing, as tensorstore's are after its clock stops

        print(f"reading {size}, {args.reps} rounds ...", flush=True)
        *_, ours = interleave([tensorstore("together"), tensorstore("one by one"), weightscope_read], args.reps)
        for mode, label, target in (
            ("together", f"read all of a {size} Orbax checkpoint (tensorstore: all arrays at once)", 1.0),
            ("one by one", f"read all of a {size} Orbax checkpoint (tensorstore: one array after another)", None),
        ):
            theirs = Samples(inside[mode].values[1:])  # the warm-up's left out, as interleave leaves ours out
            ratio = theirs.median / ours.median
            report.rows.append(Row(label, rate_figure(nbytes, theirs), rate_figure(nbytes, ours), ratio,
                                   f"{ratio:.2f}x", target))  # fmt: skip
        where = "in this process" if in_process else f"in a subprocess of {python}, timed inside it"
        report.context.append(
            f"tensorstore ran {where}; weightscope in this process, arrays() reading ahead on threads"
        )
        report.context.append(f"checkpoint: {arrays} float32 arrays, {nbytes / MIB:.0f} MiB of values, "
                              f"{stored / MIB:.0f} MiB on disk (zstd barely shrinks random values)")  # fmt: skip
        crcs["weightscope"] = {key: zlib.crc32(array) for key, array in kept.items()}
        same = crcs["tensorstore together"] == crcs["tensorstore one by one"] == crcs["weightscope"]
        report.check(same, "every array equals tensorstore's (CRC-32 by name)")
        versions = subprocess.run(
            [python, "-c", "from importlib.metadata import version; print(version('tensorstore'), "
             "version('orbax-checkpoint'))"],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        benchlib.print_report(
            report,
            title="Reading an Orbax checkpoint: weightscope vs tensorstore",
            quick=args.quick,
            versions=f"tensorstore {versions[0]}, orbax-checkpoint {versions[1]}, numpy {np.__version__}, "
            f"weightscope {ws.__version__}",
            repetitions=f"{args.reps} per side, interleaved, after 1 warm-up each",
            baseline="tensorstore",
        )
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
