"""A model folder of 200 safetensors shards holding 100,000 tensors: opening and listing it, and its remote summary.

Run from the repository root::

    .venv/bin/python bench/bench_folders.py [--workdir DIR] [--keep] [--quick] [--shards N] [--tensors N]

The input is written into a fresh directory under /tmp (or ``--workdir``), removed at the
end unless ``--keep``: ``--tensors`` float32 tensors of 32 x 32 (4 KiB), named as a
mixture-of-experts model's (``model.layers.12.mlp.experts.345.gate_proj.weight``: 100,000
is the order of DeepSeek-V3's count), in ``--shards`` shards written by
``safetensors.numpy.save_file`` and named as huggingface_hub names them
(``model-00001-of-00200.safetensors``), with ``model.safetensors.index.json``
(``metadata.total_size``, ``weight_map``) and a ``config.json``. Each shard is 2 MiB by
default, more than the remote store fetches whole, so its header is fetched by range.

1. Open + list, local, warm page cache, against ``safetensors.safe_open`` of each shard
   (which parses its whole JSON header in Rust): the names (``keys()``; weightscope's
   ``list(ckpt)``, which reads the index alone: the index is the authority), and the names
   with every tensor's dtype and shape, what ``ls`` shows (``get_slice(name).get_shape()``
   and ``get_dtype()``; weightscope's ``ckpt.infos()``, which parses every shard's header).
   Target (issue 18): the safetensors time over weightscope's >= 1. Interleaved
   repetitions (``--reps``) after one warm-up each; medians (and the best).
2. ``weightscope summary`` of the folder served remotely by loopback servers in this
   process: ``hf://bench/model`` (tests/hub_server.py: the Hub's API as huggingface_hub's
   HfFileSystem uses it) and the index file's ``http://`` URL (a range server: HTTP
   cannot list a folder). Bytes moved are the servers' counts of file bytes sent,
   against what summary needs: the index, config.json and each shard's header (its
   8-byte length and the JSON). Target (issue 18): moved <= 1.1 x needed. The shards'
   part alone (their bytes moved against their headers) is in the context lines.

``--quick``: 20 shards of 300 tensors (1.2 MiB each).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import benchlib
import numpy as np
import safetensors
import safetensors.numpy
from benchlib import MIB, Report, Row, Samples, interleave, time_figure

import weightscope as ws
from weightscope.cli import main as weightscope_main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

SHAPE = (32, 32)
INDEX = "model.safetensors.index.json"
CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 32, "torch_dtype": "float32"}


def make_folder(folder: Path, shards: int, tensors: int) -> list[Path]:
    """The shards, the index and config.json, as huggingface_hub's splitting writes them; the shards' paths."""
    folder.mkdir()
    weight_map: dict[str, str] = {}
    paths = []
    per_shard, extra = divmod(tensors, shards)
    done = 0
    for shard in range(shards):
        count = per_shard + (shard < extra)
        name = f"model-{shard + 1:05d}-of-{shards:05d}.safetensors"
        arrays = {tensor_name(done + i): np.full(SHAPE, done + i, np.float32) for i in range(count)}
        safetensors.numpy.save_file(arrays, str(folder / name))
        weight_map |= dict.fromkeys(arrays, name)
        paths.append(folder / name)
        done += count
    total_size = tensors * int(np.prod(SHAPE)) * 4
    (folder / INDEX).write_text(json.dumps({"metadata": {"total_size": total_size}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps(CONFIG))
    return paths


def tensor_name(number: int) -> str:
    """A mixture-of-experts model's names (as DeepSeek's or Qwen's): 64 layers of experts' three projections."""
    layer, rest = divmod(number, 1563)
    expert, projection = divmod(rest, 3)
    return f"model.layers.{layer}.mlp.experts.{expert}.{('gate', 'up', 'down')[projection]}_proj.weight"


def header_bytes(shard: Path) -> int:
    """What reading a shard's header takes: its 8-byte length and the JSON."""
    with open(shard, "rb") as handle:
        return 8 + int.from_bytes(handle.read(8), "little")


# -- 1. open + list ----------------------------------------------------------------------------


def compare_listing(folder: Path, shards: list[Path], tensors: int, reps: int, report: Report) -> None:
    def st_keys() -> int:
        count = 0
        for shard in shards:
            with safetensors.safe_open(str(shard), framework="numpy") as handle:
                count += len(handle.keys())
        return count

    def st_shapes() -> int:
        count = 0
        for shard in shards:
            with safetensors.safe_open(str(shard), framework="numpy") as handle:
                for name in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                    part = handle.get_slice(name)
                    count += len(part.get_shape()) > 0 and bool(part.get_dtype())
        return count

    def ws_names() -> int:
        with ws.open(folder) as ckpt:
            return sum(1 for _ in ckpt)

    def ws_infos() -> int:
        with ws.open(folder) as ckpt:
            return sum(len(info.shape) > 0 and bool(info.dtype) for info in ckpt.infos())

    for shard in shards:
        benchlib.warm_page_cache(shard)
    print(f"1. open + list {tensors:,} tensors in {len(shards)} shards, {reps} rounds ...", flush=True)
    keys, shapes, names, infos = interleave([st_keys, st_shapes, ws_names, ws_infos], reps)
    label = f"{len(shards)} shards, {tensors:,} tensors: open +"
    for what, theirs, ours in (
        ("names: safe_open + keys() vs the index", keys, names),
        ("names, dtypes, shapes: + get_slice vs infos()", shapes, infos),
        ("names vs names, dtypes, shapes (extra)", keys, infos),
    ):
        ratio = theirs.median / ours.median
        target = None if "extra" in what else 1.0
        report.rows.append(
            Row(f"{label} {what}", time_figure(theirs), time_figure(ours), ratio, f"{ratio:.2f}x", target)
        )
    report.context.append(
        f"listing, spread over {reps} rounds: {spread(keys)} (safe_open + keys), {spread(shapes)} (+ get_slice), "
        f"{spread(names)} (ws names), {spread(infos)} (ws infos)"
    )
    counts = (st_keys(), st_shapes(), ws_names(), ws_infos())
    report.check(counts == (tensors,) * 4, f"tensors listed by each: {counts} (expected {tensors:,})")
    with ws.open(folder) as ckpt:
        last = tensor_name(tensors - 1)
        same = len(ckpt) == tensors and bool((ckpt[last] == tensors - 1).all()) and ckpt[last].shape == SHAPE
    report.check(same, f"the folder {'opens as' if same else 'does NOT open as'} one checkpoint of every tensor")


def spread(samples: Samples) -> str:
    """The range of the repetitions, relative to their median."""
    low, high = min(samples.values), max(samples.values)
    return f"{low * 1000:.0f}-{high * 1000:.0f} ms ({(high - low) / samples.median:.0%} of the median)"


# -- 2. remote summary -------------------------------------------------------------------------


def summarise(url: str) -> tuple[int, float]:
    """Run ``weightscope summary URL``; its exit status and time."""
    out = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        status = weightscope_main(["summary", url])
    elapsed = time.perf_counter() - start
    if status != 0:
        print(out.getvalue(), file=sys.stderr)
    return status, elapsed


def compare_remote(folder: Path, shards: list[Path], report: Report, home: Path) -> None:
    from hub_server import Hub, hub_client, serving_hub
    from test_remote import _RangeHandler, serving

    headers = sum(header_bytes(shard) for shard in shards)
    needed = headers + (folder / INDEX).stat().st_size + (folder / "config.json").stat().st_size
    limit = needed * 1.1
    hub = Hub()
    hub.add("bench/model", folder)
    print("2. summary of the folder over hf:// and http:// (loopback) ...", flush=True)
    with serving_hub(hub) as endpoint, hub_client(endpoint, home):
        status, elapsed = summarise("hf://bench/model")
    moved = hub.sent
    add_remote_row(report, "hf://ORG/MODEL (loopback Hub)", moved, needed, limit, status, elapsed)
    other = {name: sent for name, sent in hub.file_bytes.items() if not name.endswith(".safetensors")}
    of_shards = moved - sum(other.values())
    report.context.append(
        f"hf://: {len(hub.requests)} requests (an LFS file's: resolve, then its CDN); sent {of_shards:,} B of shards "
        f"({of_shards / headers:.3f}x their headers: each read with the store's 64 KiB read-ahead) and {other} "
        f"(+ {hub.api_bytes:,} B of API answers: repository info, tree listings)"
    )
    with serving(folder) as root:
        before = _RangeHandler.sent[0]
        status, elapsed = summarise(f"{root}/{INDEX}")
        moved = _RangeHandler.sent[0] - before
    add_remote_row(report, "http://.../index.json (range server)", moved, needed, limit, status, elapsed)
    report.context.append(
        f"needed: {headers:,} B of shard headers ({headers / len(shards):,.0f} B a shard), "
        f"{(folder / INDEX).stat().st_size:,} B of index, {(folder / 'config.json').stat().st_size:,} B of config.json"
    )


def add_remote_row(report: Report, where: str, moved: int, needed: int, limit: float, status: int, took: float) -> None:
    report.rows.append(
        Row(f"summary over {where}: bytes moved (limit 1.1x needed)", f"needed {needed:,} B",
            f"{moved:,} B in {took:.2f} s", limit / moved, f"{moved / needed:.3f}x needed", 1)
    )  # fmt: skip
    report.check(status == 0, f"summary over {where} exited {status}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = Report()
    with benchlib.work_directory(args, "weightscope-bench-folders-", report) as workdir:
        start = time.perf_counter()
        shards = make_folder(workdir / "model", args.shards, args.tensors)
        size = sum(shard.stat().st_size for shard in shards)
        report.context.append(
            f"input: {args.shards} shards of {size / args.shards / MIB:.1f} MiB ({size / MIB:,.0f} MiB), "
            f"{args.tensors:,} tensors of {SHAPE} float32, written in {time.perf_counter() - start:.1f} s"
        )
        compare_listing(workdir / "model", shards, args.tensors, args.reps, report)
        compare_remote(workdir / "model", shards, report, workdir / "hf_home")
    benchlib.print_report(
        report,
        title="weightscope on a sharded model folder",
        quick=args.quick,
        versions=f"weightscope {ws.__version__}, safetensors {safetensors.__version__}",
        repetitions=f"{args.reps} interleaved rounds after a warm-up (listing); one run (bytes moved do not vary)",
        baseline="safetensors / needed",
    )
    return 1 if report.failed else 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = benchlib.argument_parser(__doc__.split("\n\n")[0], quick="20 shards of 300 tensors")
    parser.add_argument("--shards", type=int, help="number of shards (200; quick 20)")
    parser.add_argument("--tensors", type=int, help="number of tensors (100,000; quick 6,000)")
    parser.add_argument("--reps", type=int, default=5, help="timed rounds of the listing (5)")
    args = parser.parse_args(argv)
    args.shards = args.shards or (20 if args.quick else 200)
    args.tensors = args.tensors or (6000 if args.quick else 100_000)
    if not 0 < args.shards <= args.tensors:
        parser.error("--shards must be between 1 and --tensors")
    return args


if __name__ == "__main__":
    sys.exit(main())
