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
cache; medians are reported (on this VM the first write into memory the guest has not touched since boot runs at
~350 MB/s, later ones at ~4 GB/s: a single run measures whichever side comes first at a disadvantage):

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

Measured (2026-12-03, Intel Xeon VM, 2 cores, load ~1.5; 1.13 GiB of rank files, 384 MiB out; 3 reps): on tmpfs
DeepSpeed 0.71-1.36 s, weightscope 0.37-0.41 s (median 1.94x; 2.69x and 2.83x in two single runs); on the VM's
disk DeepSpeed 0.68-1.47 s (1.59 s median with its output fsynced), weightscope 0.82-1.34 s with its fsync
(median 1.09x, 1.21x against DeepSpeed fsynced). Memory 0.05 of DeepSpeed's either way.
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
start = time.perf_counter()
convert_zero_checkpoint_to_fp32_state_dict(sys.argv[1], sys.argv[2], safe_serialization=True)
converted = time.perf_counter() - start
for name in os.listdir(sys.argv[2]):  # made durable, as weightscope's convert makes its output (fsync)
    descriptor = os.open(os.path.join(sys.argv[2], name), os.O_RDONLY)
    os.fsync(descriptor)
    os.close(descriptor)
print("RESULT", converted, before, time.perf_counter() - start)
"""
WEIGHTSCOPE = r"""
import sys, time
from weightscope.cli import main
def anon():
    return int(next(l for l in open("/proc/self/status") if l.startswith("RssAnon:")).split()[1])
before = anon()
start = time.perf_counter()
status = main(["convert", sys.argv[1], sys.argv[2], "--to", "safetensors"])
print("RESULT", time.perf_counter() - start, before)
sys.exit(status)
"""


def measured(command: list[str], env: dict[str, str]) -> dict[str, float]:
    """Run ``command``; its conversion's seconds, its wall seconds, and its peak RssAnon above its start and
    VmHWM (KiB), sampled every 5 ms."""
    out, figures = benchlib.sampled_run(command, env)
    result = next(line for line in out.splitlines() if line.startswith("RESULT")).split()
    synced = float(result[3]) if len(result) > 3 else float(result[1])  # DeepSpeed's, its output then fsynced
    return {"seconds": float(result[1]), "wall": figures["wall"], "anon": figures["anon"] - int(result[2]),
            "hwm": figures["hwm"], "synced": synced}  # fmt: skip


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
    with benchlib.work_directory(args, "bench-zero-", report) as workdir:
        folder = workdir / "run"
        subprocess.run(
            [str(args.fixtures_python), "-c", MAKE, str(folder), str(count), *map(str, SHAPE)], check=True, env=env
        )
        files = sorted((folder / "global_step1").iterdir())
        total = sum(file.stat().st_size for file in files)
        for file in files:
            warm_page_cache(file)
        written = workdir / "ws" / "model.safetensors"
        runs: dict[str, list[dict[str, float]]] = {"theirs": [], "ours": []}
        for rep in range(args.reps):  # alternately, each output written afresh (the last pair kept to compare)
            if rep:
                shutil.rmtree(workdir / "deepspeed")
                shutil.rmtree(written.parent)
            deepspeed = [str(args.fixtures_python), "-c", DEEPSPEED, str(folder), str(workdir / "deepspeed")]
            runs["theirs"].append(measured(deepspeed, env))
            ours_command = [sys.executable, "-c", WEIGHTSCOPE, str(folder / "global_step1"), str(written)]
            runs["ours"].append(measured(ours_command, env))
        theirs, ours = ({key: statistics.median(run[key] for run in runs[side]) for key in runs[side][0]}
                        for side in ("theirs", "ours"))  # fmt: skip
        report.context.append(
            "conversion times of each repetition: DeepSpeed "
            + ", ".join(f"{run['seconds']:.2f}" for run in runs["theirs"])
            + " s; weightscope "
            + ", ".join(f"{run['seconds']:.2f}" for run in runs["ours"])
            + " s"
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
