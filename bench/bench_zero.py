"""weightscope convert of a DeepSpeed ZeRO-3 checkpoint against DeepSpeed's own zero_to_fp32, side by side.

Run from the repository root (DeepSpeed's side runs in the fixtures venv, ``make fixtures-env``)::

    .venv/bin/python bench/bench_zero.py [--workdir DIR] [--keep] [--quick] [--fixtures-python PATH]

The input is a ZeRO-3 checkpoint of 2 ranks, written with ``torch.save`` in the fixtures venv in exactly
DeepSpeed's layout (the keys and objects of tests/fixtures/deepspeed/stage3, made by DeepSpeed itself: the
``ZeroStageEnum`` and ``LossScaler`` objects are DeepSpeed's own): 24 float32 parameters of 2049 x 2047 and 2047
(odd sizes: every parameter is padded on the last rank) with Adam's two moments, about 1.1 GiB of rank files
(``--quick``: 4 parameters, 0.2 GiB). Making it with DeepSpeed's engine would need the model in memory on two
processes; the layout is what matters to both converters.

Each side runs in its own process, ``--reps`` times (3), alternately, after an uncounted warm-up of the page
cache and an uncounted first run of each side, which compiles its modules' bytecode (into the work directory, even
where ``PYTHONDONTWRITEBYTECODE`` is set: an installed package has its bytecode compiled, and weightscope imports
most of what a conversion uses inside the timed call); medians are reported (on this VM the first write into memory
the guest has not touched since boot runs at ~350 MB/s, later ones at ~4 GB/s: a single run measures whichever
side comes first at a disadvantage). The CPU seconds of each side's threads are reported beside its time:

1. DeepSpeed: ``convert_zero_checkpoint_to_fp32_state_dict(folder, out, safe_serialization=True)`` (what
   ``zero_to_fp32.py --safe_serialization`` runs): every parameter gathered into one fp32 state dict, then saved;
2. weightscope: ``weightscope convert folder/global_step1 out/model.safetensors --to safetensors``: each parameter
   copied out of the mapped rank files' pieces and written, the output verified, the file renamed into place.

Time is the conversion's own (after imports), measured inside each process; the processes' wall times are shown
too. Peak memory is the process's anonymous resident memory (``RssAnon``, sampled every 5 ms from outside) above
what it held before converting: mapped rank files are page cache, shared and reclaimable, not the conversion's
memory (the resident high-water mark ``VmHWM``, counting them, is printed too). Targets (issue 19): time >= 2x
faster, peak memory <= 1/4 of DeepSpeed's. The two outputs are compared tensor by tensor, bit for bit.

weightscope's convert fsyncs its output before renaming it into place (durable once it says so); zero_to_fp32 does
not, so on a disk the plain time row compares a durable write with one left in the page cache: a second row fsyncs
DeepSpeed's output too, and ``--workdir /dev/shm`` (tmpfs, where fsync costs nothing) compares the conversions alone.

Measured (2026-12-03, Intel Xeon VM, 2 cores; 1.13 GiB of rank files, 384 MiB out), on tmpfs: at 22:36 UTC, the
machine quiet (load 0.9), two ``--reps 5`` runs: DeepSpeed 0.63-0.68 s, weightscope 0.25-0.29 s (2.52x, 2.51x;
CPU seconds 0.75 and 0.43). From 22:16 to 22:28, beside other sessions' benchmarks (load 1.1-1.8): ``--reps 5``,
DeepSpeed 0.92-1.03 s, weightscope 0.37-0.42 s (2.41x); again,
DeepSpeed 0.65-1.03 s, weightscope 0.23-0.42 s (1.87x of the medians: its two runs on a quiet machine were 2.8x
DeepSpeed's, its three beside another session's process 1.6-2.7x). weightscope computes its checksums on a second
thread, so a core taken by another process slows it more than DeepSpeed's one thread. With every run started only
once both cores had been idle for 0.4 s (9 runs each, interleaved, 22:34): DeepSpeed 0.65-0.95 s (median 0.67),
weightscope 0.25-0.37 s (median 0.27): 2.48x; the weightscope before its pieces were written unjoined and its
checksums moved off the writing thread, 0.36-0.49 s (median 0.38: 1.77x). On the VM's disk (3 reps, two runs):
DeepSpeed 1.21-1.64 s (1.81 s fsynced), weightscope 0.90 s (median; 1.82x, 2.02x against DeepSpeed fsynced);
DeepSpeed 1.69-3.42 s, weightscope 1.35-1.61 s (2.09x). Anonymous memory: 3 MiB against DeepSpeed's 426 MiB.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import benchlib
from benchlib import MIB, Report, Row, size_label, warm_page_cache

ROOT = Path(__file__).resolve().parent.parent
FIXTURES_PYTHON = Path(os.environ.get("WEIGHTSCOPE_FIXTURES_PYTHON", ROOT / ".venv-fixtures" / "bin" / "python"))
SHAPE = (2049, 2047)

# Run in the fixtures venv: a ZeRO-3 checkpoint of ``count`` parameters over 2 ranks, as DeepSpeed saves it.
MAKE = r"""
import math, os, sys
from collections import OrderedDict
import torch
from deepspeed.runtime.fp16.loss_scaler import LossScaler
from deepspeed.runtime.zero.config import ZeroStageEnum

folder, count, rows, cols = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
world = 2
shapes = OrderedDict()
for i in range(count):
    shapes[f"layers.{i}.weight"] = torch.Size([rows, cols])
    shapes[f"layers.{i}.bias"] = torch.Size([cols])
step = os.path.join(folder, "global_step1")
os.makedirs(step)
with open(os.path.join(folder, "latest"), "w") as handle:
    handle.write("global_step1")
generator = torch.Generator().manual_seed(0)
parts = [[], []]
for name, shape in shapes.items():
    numel = shape.numel()
    part = math.ceil(numel / world)
    full = torch.zeros(part * world)
    full[:numel] = torch.randn(numel, generator=generator)
    for rank in range(world):
        parts[rank].append(full[rank * part:(rank + 1) * part])
config = {"train_batch_size": 2, "zero_optimization": {"stage": 3}, "bf16": {"enabled": True}}
for rank in range(world):
    flat = torch.cat(parts[rank])
    parts[rank] = None
    model = {
        "module": OrderedDict((name, torch.empty(0, dtype=torch.bfloat16)) for name in shapes),
        "buffer_names": [], "optimizer": None, "param_shapes": [shapes],
        "frozen_param_shapes": OrderedDict(), "shared_params": {}, "frozen_param_fragments": OrderedDict(),
        "lr_scheduler": None, "data_sampler": None, "random_ltd": None, "skipped_steps": 0, "global_steps": 1,
        "global_samples": 2, "dp_world_size": world, "mp_world_size": 1,
        "checkpoint_parallel_dimensions": {"pp_degree": 1, "tp_degree": 1}, "ds_config": config, "ds_version": "0.19.8",
    }
    torch.save(model, os.path.join(step, f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt"))
    state = {
        "zero_stage": ZeroStageEnum.weights, "loss_scaler": LossScaler(1.0), "dynamic_loss_scale": False,
        "overflow": False, "partition_count": world,
        "optimizer_state_dict": {
            "state": {0: {"step": torch.tensor(1.0), "exp_avg": flat * 0.1, "exp_avg_sq": flat * flat}},
            "param_groups": [{"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-08, "weight_decay": 0.01, "params": [0]}],
        },
        "fp32_flat_groups": [flat],
    }
    torch.save({"optimizer_state_dict": state, "ds_config": config, "ds_version": "0.19.8"},
               os.path.join(step, f"bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt"))
"""

# Each side's conversion, timed inside its process; it prints the seconds and its RssAnon before converting.
DEEPSPEED = r"""
import os, sys, time
from deepspeed.utils.zero_to_fp32 import convert_zero_checkpoint_to_fp32_state_dict
def anon():
    return int(next(l for l in open("/proc/self/status") if l.startswith("RssAnon:")).split()[1])
before = anon()
start, cpu = time.perf_counter(), time.process_time()
convert_zero_checkpoint_to_fp32_state_dict(sys.argv[1], sys.argv[2], safe_serialization=True)
converted, cpu = time.perf_counter() - start, time.process_time() - cpu
for name in os.listdir(sys.argv[2]):  # made durable, as weightscope's convert makes its output (fsync)
    descriptor = os.open(os.path.join(sys.argv[2], name), os.O_RDONLY)
    os.fsync(descriptor)
    os.close(descriptor)
print("RESULT", converted, before, time.perf_counter() - start, cpu)
"""
WEIGHTSCOPE = r"""
import sys, time
from weightscope.cli import main
def anon():
    return int(next(l for l in open("/proc/self/status") if l.startswith("RssAnon:")).split()[1])
before = anon()
start, cpu = time.perf_counter(), time.process_time()
status = main(["convert", sys.argv[1], sys.argv[2], "--to", "safetensors"])
seconds = time.perf_counter() - start
print("RESULT", seconds, before, seconds, time.process_time() - cpu)
sys.exit(status)
"""


def measured(command: list[str], env: dict[str, str]) -> dict[str, float]:
    """Run ``command``; its conversion's seconds (and with DeepSpeed's output fsynced), the CPU seconds of all its
    threads meanwhile, its wall seconds, and its peak RssAnon above its start and VmHWM (KiB), sampled every 5 ms."""
    out, figures = benchlib.sampled_run(command, env)
    result = next(line for line in out.splitlines() if line.startswith("RESULT")).split()
    return {"seconds": float(result[1]), "wall": figures["wall"], "anon": figures["anon"] - int(result[2]),
            "hwm": figures["hwm"], "synced": float(result[3]), "cpu": float(result[4])}  # fmt: skip


def compare(ours: Path, theirs: Path) -> tuple[bool, int]:
    """Whether the two safetensors files hold the same tensors, bit for bit; and how many."""
    from safetensors import safe_open

    with safe_open(ours, "numpy") as mine, safe_open(theirs, "numpy") as other:
        names = sorted(mine.keys())
        same = names == sorted(other.keys())
        for name in names if same else []:
            a, b = mine.get_tensor(name), other.get_tensor(name)
            same = same and a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    return same, len(names)


def main() -> None:
    parser = benchlib.argument_parser(__doc__.splitlines()[0], "4 parameters (0.2 GiB) instead of 24")
    parser.add_argument("--fixtures-python", type=Path, default=FIXTURES_PYTHON, help="the venv with DeepSpeed")
    parser.add_argument("--reps", type=int, default=3, help="runs of each side, alternately (medians reported)")
    args = parser.parse_args()
    count = 4 if args.quick else 24
    report = Report()
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(ROOT / "src")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # each side's modules compiled once, as an installed package's are
    with benchlib.work_directory(args, "bench-zero-", report) as workdir:
        env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")  # not into the source tree
        folder = workdir / "run"
        subprocess.run(
            [str(args.fixtures_python), "-c", MAKE, str(folder), str(count), *map(str, SHAPE)], check=True, env=env
        )
        files = sorted((folder / "global_step1").iterdir())
        total = sum(file.stat().st_size for file in files)
        for file in files:
            warm_page_cache(file)
        written = workdir / "ws" / "model.safetensors"
        deepspeed = [str(args.fixtures_python), "-c", DEEPSPEED, str(folder), str(workdir / "deepspeed")]
        ours_command = [sys.executable, "-c", WEIGHTSCOPE, str(folder / "global_step1"), str(written)]
        runs: dict[str, list[dict[str, float]]] = {"theirs": [], "ours": []}
        for rep in range(-1, args.reps):  # alternately, each output written afresh (the last pair kept to compare)
            shutil.rmtree(workdir / "deepspeed", ignore_errors=True)
            shutil.rmtree(written.parent, ignore_errors=True)
            for side, command in (("theirs", deepspeed), ("ours", ours_command)):
                figures = measured(command, env)
                if rep >= 0:  # the first run of each compiles its modules: not counted
                    runs[side].append(figures)
        theirs, ours = ({key: statistics.median(run[key] for run in runs[side]) for key in runs[side][0]}
                        for side in ("theirs", "ours"))  # fmt: skip
        report.context.append(
            "conversion times of each repetition: DeepSpeed "
            + ", ".join(f"{run['seconds']:.2f}" for run in runs["theirs"])
            + " s; weightscope "
            + ", ".join(f"{run['seconds']:.2f}" for run in runs["ours"])
            + " s"
        )
        report.context.append(
            f"CPU seconds of all threads while converting (medians): DeepSpeed {theirs['cpu']:.2f}, "
            f"weightscope {ours['cpu']:.2f}"
        )
        same, tensors = compare(written, workdir / "deepspeed" / "model.safetensors")
        report.check(same, f"the {tensors} tensors weightscope wrote equal DeepSpeed's, bit for bit")
        label = f"ZeRO-3 -> safetensors, {size_label(total)} of rank files"
        report.rows.append(
            Row(
                f"{label}: time",
                f"{theirs['seconds']:.2f} s",
                f"{ours['seconds']:.2f} s",
                theirs["seconds"] / ours["seconds"],
                f"{theirs['seconds'] / ours['seconds']:.2f}x faster",
                2.0,
            )
        )
        report.rows.append(
            Row(
                f"{label}: time, DeepSpeed's output fsynced too (weightscope's convert makes its output durable)",
                f"{theirs['synced']:.2f} s",
                f"{ours['seconds']:.2f} s",
                theirs["synced"] / ours["seconds"],
                f"{theirs['synced'] / ours['seconds']:.2f}x faster",
                2.0,
            )
        )
        report.rows.append(
            Row(
                f"{label}: peak RssAnon",
                f"{theirs['anon'] / 1024:.0f} MiB",
                f"{ours['anon'] / 1024:.0f} MiB",
                theirs["anon"] / max(ours["anon"], 1),
                f"{ours['anon'] / max(theirs['anon'], 1):.3f} of theirs",
                4.0,
            )
        )
        report.context.append(
            f"process wall time (imports included): DeepSpeed {theirs['wall']:.2f} s, weightscope {ours['wall']:.2f} s"
        )
        report.context.append(
            f"resident high-water mark (VmHWM, mapped files included): DeepSpeed {theirs['hwm'] / 1024:.0f} MiB, "
            f"weightscope {ours['hwm'] / 1024:.0f} MiB"
        )
        output = (workdir / "ws" / "model.safetensors").stat().st_size
        report.context.append(
            f"output: {output / MIB:.0f} MiB of float32; {len(files)} rank files, {total / MIB:.0f} MiB"
        )
        versions = subprocess.run(
            [
                str(args.fixtures_python),
                "-c",
                "import deepspeed, torch; print(deepspeed.__version__, torch.__version__)",
            ],
            capture_output=True,
            text=True,
            env=env,
        ).stdout.split()
    benchlib.print_report(
        report,
        title="DeepSpeed ZeRO-3 checkpoint -> safetensors: weightscope convert vs DeepSpeed's zero_to_fp32",
        versions=f"deepspeed {versions[0]}, torch {versions[1]} (fixtures venv)",
        repetitions=f"{args.reps} per side, alternately, each in its own process, after the page cache was warmed",
        baseline="DeepSpeed",
        quick=args.quick,
    )
    print(json.dumps({"deepspeed": theirs, "weightscope": ours}))


if __name__ == "__main__":
    main()
