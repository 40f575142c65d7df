"""PyTorch DCP -> safetensors: ``weightscope convert`` against torch's own way, each side in its own process.

Run from the repository root::

    .venv/bin/python bench/bench_dcp.py [--workdir DIR] [--keep] [--quick]

The input is a DCP folder of 1 GiB (``--quick``: 128 MiB) written by ``torch.distributed.checkpoint.save`` in a
fresh directory: 16 float32 weights of 4096 x 4096 (``--quick``: 2048 x 1024), each stored as FSDP2 stores it across
two ranks, in two uneven chunks (2049 and 2047 rows; its ``.metadata`` rewritten with torch's own classes so the
chunks are one tensor's), and an optimizer-style bytes entry. Then, once each, in a fresh child process:

1. torch's way, as its documentation gives it: ``dcp_to_torch_save(folder, model.pt)``, then
   ``torch.load(model.pt, weights_only=True)`` and ``safetensors.torch.save_file`` of it;
2. ``weightscope.convert.convert(folder, "model.safetensors")``: one tensor at a time, each reassembled from its
   chunks' byte ranges of the memory-mapped data files, written, read back and compared by checksum.

Figures: wall time (import to done) and peak memory of each child: its anonymous resident memory (``RssAnon``,
sampled every 2 ms: the memory a conversion holds; mapped file pages are page cache, shared and reclaimable) and
its peak resident set (``VmHWM``, the ``ru_maxrss`` of its own memory: it counts the mapped file pages it touched
too). Both outputs are
compared tensor by tensor.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import benchlib
from benchlib import MIB, AnonymousPeak, Report, Row, status_kib

LAYERS = 16


def make(folder: Path, rows: int, columns: int) -> int:
    """The DCP folder: every weight saved as two chunks, then joined into one tensor in ``.metadata``."""
    import pickle
    import warnings

    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import ChunkStorageMetadata, MetadataIndex

    split = rows // 2 + 1  # FSDP2 gives the first rank the larger share of an odd split
    generator = torch.Generator().manual_seed(0)
    state: dict[str, object] = {"optim": {"param_groups": [{"lr": 1e-4, "betas": (0.9, 0.95)}]}}
    for layer in range(LAYERS):
        weight = torch.randn(rows, columns, generator=generator)
        state[f"layers.{layer}.weight@0"], state[f"layers.{layer}.weight@1"] = (
            weight[:split].clone(),
            weight[split:].clone(),
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "assuming the intent is to save in a single process"
        dcp.save(state, checkpoint_id=folder)
    with open(folder / ".metadata", "rb") as file:
        metadata = pickle.load(file)
    entries, storage = metadata.state_dict_metadata, metadata.storage_data
    for layer in range(LAYERS):
        name = f"layers.{layer}.weight"
        first = entries.pop(f"{name}@0")
        del entries[f"{name}@1"]
        first.size = torch.Size([rows, columns])
        starts = [torch.Size([0, 0]), torch.Size([split, 0])]
        first.chunks = [ChunkStorageMetadata(starts[0], torch.Size([split, columns]))]
        first.chunks.append(ChunkStorageMetadata(starts[1], torch.Size([rows - split, columns])))
        entries[name] = first
        for part, start in enumerate(starts):
            storage[MetadataIndex(name, start)] = storage.pop(MetadataIndex(f"{name}@{part}", torch.Size([0, 0])))
            metadata.planner_data[name] = (name,)
            metadata.planner_data.pop(f"{name}@{part}", None)
    with open(folder / ".metadata", "wb") as file:
        pickle.dump(metadata, file)
    return sum(file.stat().st_size for file in folder.iterdir())


def torch_way(folder: Path, out: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    consolidated = out.with_suffix(".pt")
    dcp_to_torch_save(folder, consolidated)
    state = torch.load(consolidated, weights_only=True)
    save_file({name: value for name, value in state.items() if isinstance(value, torch.Tensor)}, out)
    consolidated.unlink()


def weightscope_way(folder: Path, out: Path) -> None:
    from weightscope.convert import convert

    convert(folder, out)


def child(side: str, folder: Path, out: Path) -> None:
    """One conversion in this process; prints its figures as JSON."""
    start = time.perf_counter()
    peak = AnonymousPeak()
    peak.measure(lambda: (torch_way if side == "torch" else weightscope_way)(folder, out))
    seconds = time.perf_counter() - start
    # VmHWM: the peak resident set of this process's memory, which (unlike ru_maxrss) an exec does not inherit
    print(json.dumps({"seconds": seconds, "anon_kib": peak.peak_kib, "maxrss_kib": status_kib("VmHWM")}))


def run_child(side: str, folder: Path, out: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", side, str(folder), str(out)], capture_output=True, text=True, check=True
    )
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def same_tensors(first: Path, second: Path) -> bool:
    import numpy as np
    from safetensors import safe_open

    with safe_open(first, "numpy") as one, safe_open(second, "numpy") as other:
        names = sorted(one.keys())
        same = names == sorted(other.keys())
        return same and all(np.array_equal(one.get_tensor(name), other.get_tensor(name)) for name in names)


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))
        return
    if sys.argv[1:2] == ["--make"]:  # in a child too: the children measured are not forked from torch's memory
        print(make(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
        return
    args = benchlib.argument_parser(__doc__.splitlines()[0], "a 128 MiB checkpoint").parse_args()
    rows, columns = (2048, 1024) if args.quick else (4096, 4096)
    report = Report()
    started = time.perf_counter()
    with benchlib.work_directory(args, "bench-dcp-", report) as work:
        folder = work / "step-1000"
        made = time.perf_counter()
        command = [sys.executable, __file__, "--make", str(folder), str(rows), str(columns)]
        size = int(subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()[-1])
        report.context.append(
            f"input: {benchlib.size_label(size)} DCP folder, {LAYERS} tensors of {rows} x {columns} float32 in two "
            f"chunks each, made by torch in {time.perf_counter() - made:.1f} s"
        )
        benchlib.warm_page_cache(folder / "__0_0.distcp")
        theirs = run_child("torch", folder, work / "torch.safetensors")
        ours = run_child("weightscope", folder, work / "weightscope.safetensors")
        report.check(same_tensors(work / "torch.safetensors", work / "weightscope.safetensors"), "same tensors")
    label = benchlib.size_label(size)
    speed = theirs["seconds"] / ours["seconds"]
    anon = theirs["anon_kib"] / max(ours["anon_kib"], 1)
    rss = theirs["maxrss_kib"] / max(ours["maxrss_kib"], 1)
    report.rows += [
        Row(
            f"DCP {label} -> safetensors, time",
            f"{theirs['seconds']:.2f} s",
            f"{ours['seconds']:.2f} s",
            speed,
            f"{speed:.2f}x",
            2.0,
        ),
        Row(
            "peak anonymous memory (RssAnon)",
            f"{theirs['anon_kib'] * 1024 / MIB:.0f} MiB",
            f"{ours['anon_kib'] * 1024 / MIB:.0f} MiB",
            anon,
            f"1/{anon:.1f}",
            4.0,
        ),
        Row(
            "peak resident set (VmHWM, with mapped pages)",
            f"{theirs['maxrss_kib'] * 1024 / MIB:.0f} MiB",
            f"{ours['maxrss_kib'] * 1024 / MIB:.0f} MiB",
            rss,
            f"1/{rss:.1f}",
            None,
        ),
    ]
    report.context.append(f"whole benchmark: {time.perf_counter() - started:.0f} s")
    from importlib.metadata import version

    benchlib.print_report(
        report,
        title="PyTorch DCP -> safetensors: torch (dcp_to_torch_save + save_file) vs weightscope convert",
        versions=f"torch {version('torch')}, safetensors {version('safetensors')}",
        repetitions="1 of each, each in a fresh process, after the input's data file was read once",
        baseline="torch",
        quick=args.quick,
    )


if __name__ == "__main__":
    main()
