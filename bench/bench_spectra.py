"""weightscope spectra against weightwatcher on the same weights: time and peak memory, side by side.

Run from the repository root::

    .venv/bin/python bench/bench_spectra.py [--workdir DIR] [--keep] [--quick] [--framework-python PY]

The input is a safetensors file of float32 matrices of random normal values (64 of 2048 x 2048 by default:
1 GiB; ``--quick``: 8 of 512 x 1024, 16 MiB), written with numpy. Each side runs once, in a process of its own,
after an uncounted warm-up of the page cache:

1. weightwatcher, in the fixtures environment (``--framework-python``, default ``.venv-fixtures/bin/python``;
   weightwatcher needs pandas, scikit-learn, scipy and powerlaw beside torch): the matrices loaded by
   safetensors into ``torch.nn.Linear`` modules, then ``WeightWatcher(model).analyze(mp_fit=True)``;
2. weightscope: ``checkpoint_spectra`` of the file (its threads), the same figures (alpha, MP spikes).

Times are measured inside each process from before the weights are read to the last figure (imports left
out); peak memory is each process's anonymous resident memory (``RssAnon``, sampled every 5 ms from outside,
imports included): what it made, not the page cache of the file it maps (the high-water mark with mapped files,
``VmHWM``, is printed beside).
The ratio is weightwatcher's time / weightscope's (target >= 1x, issue 21); alpha and the MP count of every
matrix are checked equal.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import benchlib
import numpy as np
from benchlib import Report, Row, size_label, warm_page_cache

WEIGHTWATCHER = """
import json, sys, time, torch, weightwatcher
from safetensors.torch import load_file
start = time.perf_counter()
weights = load_file(sys.argv[1])
model = torch.nn.Sequential()
for name, weight in weights.items():
    layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    layer.weight.data = weight
    model.add_module(name.replace(".weight", ""), layer)
frame = weightwatcher.WeightWatcher(model=model).analyze(mp_fit=True)
seconds = time.perf_counter() - start
figures = {row["name"] + ".weight": [row["alpha"], row["num_spikes"]] for _, row in frame.iterrows()}
print(json.dumps({"seconds": seconds, "figures": figures}))
"""

WEIGHTSCOPE = """
import json, sys, time
import weightscope as ws
from weightscope.spectra import Spectrum, checkpoint_spectra
start = time.perf_counter()
with ws.open(sys.argv[1]) as ckpt:
    results = checkpoint_spectra(ckpt, list(ckpt))
seconds = time.perf_counter() - start
figures = {result.name: [result.alpha, result.mp_spikes] for result in results if isinstance(result, Spectrum)}
print(json.dumps({"seconds": seconds, "figures": figures}))
"""


def run(python: str, code: str, path: Path) -> tuple[dict[str, Any], dict[str, float]]:
    """The script's JSON, and its process's peak memory (``benchlib.sampled_run``: RssAnon and VmHWM, KiB)."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent / "src"))
    out, figures = benchlib.sampled_run([python, "-c", code, str(path)], env)
    return json.loads(out.splitlines()[-1]), figures


def main() -> None:
    parser = benchlib.argument_parser(__doc__.splitlines()[0], "8 matrices of 512 x 1024 (16 MiB)")
    parser.add_argument("--framework-python", default=".venv-fixtures/bin/python")
    args = parser.parse_args()
    count, rows, columns = (8, 512, 1024) if args.quick else (64, 2048, 2048)
    report = Report()
    with benchlib.work_directory(args, "bench-spectra-", report) as workdir:
        path = workdir / "model.safetensors"
        header = {}
        offset = 0
        for index in range(count):
            size = rows * columns * 4
            header[f"layer{index:02d}.weight"] = {
                "dtype": "F32",
                "shape": [rows, columns],
                "data_offsets": [offset, offset + size],
            }
            offset += size
        encoded = json.dumps(header).encode()
        generator = np.random.default_rng(0)
        with open(path, "wb") as handle:
            handle.write(len(encoded).to_bytes(8, "little") + encoded)
            for _ in range(count):
                handle.write(generator.standard_normal((rows, columns), dtype=np.float32).tobytes())
        warm_page_cache(path)
        theirs, their_memory = run(args.framework_python, WEIGHTWATCHER, path)
        ours, our_memory = run(sys.executable, WEIGHTSCOPE, path)
        nbytes = count * rows * columns * 4
        their_seconds, our_seconds = float(theirs["seconds"]), float(ours["seconds"])
        ratio = their_seconds / our_seconds
        report.rows.append(
            Row(
                f"spectra of {count} matrices {rows}x{columns} ({size_label(nbytes)})",
                f"{their_seconds:.1f} s",
                f"{our_seconds:.1f} s",
                ratio,
                f"{ratio:.2f}x",
                1.0,
            )
        )
        memory_ratio = their_memory["anon"] / max(our_memory["anon"], 1)
        report.rows.append(
            Row(
                "the same: peak anonymous memory",
                f"{their_memory['anon'] / 1024:.0f} MiB",
                f"{our_memory['anon'] / 1024:.0f} MiB",
                memory_ratio,
                f"{1 / memory_ratio:.2f} of theirs",
                1.0,
            )
        )
        same = all(
            abs(ours["figures"][name][0] - alpha) <= 1e-8 * abs(alpha) and ours["figures"][name][1] == spikes
            for name, (alpha, spikes) in theirs["figures"].items()
        )
        report.check(same and len(theirs["figures"]) == count, "alpha and MP spikes of every matrix equal")
        report.context.append(
            f"memory: peak anonymous resident memory (RssAnon, imports included: what the process made; the file "
            f"weightscope maps is page cache); resident high-water mark with mapped files (VmHWM): weightwatcher "
            f"{their_memory['hwm'] / 1024:.0f} MiB, weightscope {our_memory['hwm'] / 1024:.0f} MiB"
        )
    benchlib.print_report(
        report,
        title="weightscope spectra vs weightwatcher",
        versions="weightwatcher in the framework Python",
        repetitions="one run each (an SVD of every matrix is the cost; warm page cache)",
        baseline="weightwatcher",
        quick=args.quick,
    )


if __name__ == "__main__":
    main()
