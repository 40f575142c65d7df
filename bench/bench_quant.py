"""Dequantising quantised safetensors: weightscope against the reference implementations' dequantisation in torch.

Run from the repository root::

    .venv/bin/python bench/bench_quant.py [--workdir DIR] [--keep] [--quick] [--mib N] [--reps N]

Two inputs of ``--mib`` MiB of stored parts each (1 GiB by default), written under /tmp (or ``--workdir``):

1. FP8 blocks, DeepSeek-V3's layout: 4096x4096 ``float8_e4m3fn`` weights with 128x128 ``weight_scale_inv`` (F32);
   the reference is transformers' ``Fp8Dequantize._dequantize_one`` (the CPU path; DeepSeek's own kernel is Triton)
   on each tensor from ``safetensors.safe_open(..., "pt")``, giving float32;
2. MXFP4, gpt-oss's layout: ``*_blocks`` U8 ``[32, 2048, 16, 16]`` and ``*_scales`` ``[32, 2048, 16]``; the reference
   is transformers' ``_convert_moe_packed_tensors`` (bfloat16 ``[32, 512, 2048]``).

weightscope reads each weight with ``ws.open(path, dequantize=True)[name]``. Each side dequantises one tensor at a
time and drops it (bounded memory: peak anonymous memory above the start is reported). Rounds are interleaved after
one uncounted warm-up of each; the ratio is reference time / weightscope time (target >= 1x, issue 20). The outputs
of the first tensor of each set are compared bit for bit.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import benchlib
import ml_dtypes
import numpy as np
import torch
from benchlib import MIB, AnonymousPeak, Report, Row, interleave, rate_figure, status_kib, warm_page_cache
from safetensors import safe_open
from transformers.integrations.finegrained_fp8 import Fp8Dequantize
from transformers.integrations.mxfp4 import _convert_moe_packed_tensors

import weightscope as ws

FP8_SHAPE = (4096, 4096)  # 16 MiB stored
MX_SHAPE = (32, 2048, 16, 16)  # 16 MiB of blocks (+ 1 MiB of scales)


def make_inputs(workdir: Path, mib: int) -> tuple[Path, Path]:
    generator = torch.Generator().manual_seed(0)
    weight = (torch.randn(FP8_SHAPE, generator=generator) * 0.05).to(torch.float8_e4m3fn)
    scale = torch.rand((FP8_SHAPE[0] // 128, FP8_SHAPE[1] // 128), generator=generator) * 0.01
    count = max(1, mib * MIB // (weight.numel() + scale.numel() * 4))
    fp8 = workdir / "fp8.safetensors"
    tensors: dict[str, np.ndarray] = {}
    for index in range(count):
        tensors[f"layers.{index}.weight"] = weight.view(torch.uint8).numpy().view(ml_dtypes.float8_e4m3fn)
        tensors[f"layers.{index}.weight_scale_inv"] = scale.numpy()
    ws.save(tensors, fp8)  # one array under every name (safetensors' save_file refuses shared memory)
    blocks = torch.randint(0, 256, MX_SHAPE, dtype=torch.uint8, generator=generator)
    scales = torch.randint(118, 130, MX_SHAPE[:-1], dtype=torch.uint8, generator=generator)
    count = max(1, mib * MIB // (blocks.numel() + scales.numel()))
    mx = workdir / "mxfp4.safetensors"
    tensors: dict[str, np.ndarray] = {}
    for index in range(count):
        tensors[f"layers.{index}.mlp.experts.down_proj_blocks"] = blocks.numpy()
        tensors[f"layers.{index}.mlp.experts.down_proj_scales"] = scales.numpy()
    ws.save(tensors, mx)
    return fp8, mx


def reference_fp8(path: Path) -> Callable[[], None]:
    dequantize = Fp8Dequantize(None)._dequantize_one

    def run() -> None:
        with safe_open(path, "pt") as handle:
            for name in handle.keys():  # noqa: SIM118 (safe_open has no __iter__)
                if name.endswith(".weight"):
                    dequantize(handle.get_tensor(name), handle.get_tensor(name + "_scale_inv"))

    return run


def reference_mxfp4(path: Path) -> Callable[[], None]:
    def run() -> None:
        with safe_open(path, "pt") as handle:
            for name in handle.keys():  # noqa: SIM118
                if name.endswith("_blocks"):
                    base = name.removesuffix("_blocks")
                    _convert_moe_packed_tensors(handle.get_tensor(name), handle.get_tensor(base + "_scales"))

    return run


def ours(path: Path) -> Callable[[], None]:
    def run() -> None:
        with ws.open(path, dequantize=True) as ckpt:
            for name in ckpt:
                ckpt[name]

    return run


def first_equal(path: Path, reference: Callable[[Path, str], torch.Tensor]) -> bool:
    with ws.open(path, dequantize=True) as ckpt:
        name = next(iter(ckpt))
        got = np.asarray(ckpt[name])
    want = reference(path, name)
    return got.shape == tuple(want.shape) and got.tobytes() == want.contiguous().view(torch.uint8).numpy().tobytes()


def fp8_first(path: Path, name: str) -> torch.Tensor:
    with safe_open(path, "pt") as handle:
        return Fp8Dequantize(None)._dequantize_one(handle.get_tensor(name), handle.get_tensor(name + "_scale_inv"))


def mx_first(path: Path, name: str) -> torch.Tensor:
    with safe_open(path, "pt") as handle:
        return _convert_moe_packed_tensors(handle.get_tensor(name + "_blocks"), handle.get_tensor(name + "_scales"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = benchlib.argument_parser(__doc__.split("\n\n")[0], quick="smaller inputs (64 MiB each)")
    parser.add_argument("--mib", type=int, help="stored MiB of each input (1024; quick 64)")
    parser.add_argument("--reps", type=int, help="rounds (3; quick 2)")
    args = parser.parse_args(argv)
    args.mib = args.mib or (64 if args.quick else 1024)
    args.reps = args.reps or (2 if args.quick else 3)
    torch.set_num_threads(1)  # one core each: numpy's kernels are single-threaded
    report = Report()
    with benchlib.work_directory(args, "weightscope-bench-quant-", report) as workdir:
        print(f"writing {args.mib} MiB of FP8 blocks and of MXFP4 under {workdir} ...", flush=True)
        fp8, mx = make_inputs(workdir, args.mib)
        for path in (fp8, mx):
            warm_page_cache(path)
        peaks = {"weightscope": AnonymousPeak(), "reference": AnonymousPeak()}
        before = status_kib("RssAnon")
        for label, path, reference in (
            ("FP8 block (DeepSeek-V3) -> float32", fp8, reference_fp8(fp8)),
            ("MXFP4 (gpt-oss) -> bfloat16", mx, reference_mxfp4(mx)),
        ):
            nbytes = path.stat().st_size
            theirs, mine = interleave(
                [
                    lambda r=reference: peaks["reference"].measure(r),
                    lambda p=path: peaks["weightscope"].measure(ours(p)),
                ],
                args.reps,
            )
            ratio = theirs.median / mine.median
            row = Row(f"dequantise {benchlib.size_label(nbytes)} {label}", rate_figure(nbytes, theirs),
                      rate_figure(nbytes, mine), ratio, f"{ratio:.2f}x", 1.0)  # fmt: skip
            report.rows.append(row)
        for side, peak in peaks.items():
            report.context.append(
                f"peak anonymous memory, {side}: {(peak.peak_kib - before) / 1024:.0f} MiB above start"
            )
        report.context.append("torch.set_num_threads(1); numpy single-threaded")
        report.check(first_equal(fp8, fp8_first), "FP8: the first weight equals Fp8Dequantize's bit for bit")
        report.check(
            first_equal(mx, mx_first), "MXFP4: the first weight equals _convert_moe_packed_tensors' bit for bit"
        )
        benchlib.print_report(
            report,
            title="weightscope dequantisation vs the reference's in torch (CPU)",
            quick=args.quick,
            versions=f"numpy {np.__version__}, torch {torch.__version__}, weightscope {ws.__version__}",
            repetitions=f"{args.reps} per side, interleaved, after 1 warm-up each (ratios: reference / weightscope);",
            baseline="reference (torch)",
        )
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
