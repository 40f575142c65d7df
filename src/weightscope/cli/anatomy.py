"""What a fine-tune changed: ``diff BASE TUNED --anatomy`` (its output) and ``extract-lora``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from weightscope.cli._common import CHECKPOINT, PATH, _figure, _only_in, _open
from weightscope.cli._output import Command, Output, examples, pass_output
from weightscope.errors import ExitStatus, UsageError
from weightscope.output import format_shape, render_table, safe_text

if TYPE_CHECKING:
    from weightscope.anatomy import Anatomy
    from weightscope.lora import Extraction


def anatomy_of(
    out: Output,
    base: Path,
    tuned: Path,
    second: Path | None,
    top: int | None,
    scheduler: str | None,
    show_all: bool,
    dequantize: bool,
) -> None:
    """``diff --anatomy``: each weight's change; exit 1 when any weight changed, as ``diff``."""
    from weightscope.anatomy import INTRUDER_TOP, anatomy

    with contextlib.ExitStack() as stack:
        first = stack.enter_context(_open(base, dequantize=dequantize))
        other = stack.enter_context(_open(tuned, dequantize=dequantize))
        third = stack.enter_context(_open(second, dequantize=dequantize)) if second is not None else None
        if scheduler is not None and dequantize:
            raise UsageError("--dequantize reads on this machine: not with --scheduler")
        with out.progress(0, 0, f"diff --anatomy {base.name} {tuned.name}", unit="weights") as bar:
            result = anatomy(
                first, other, third, top=INTRUDER_TOP if top is None else top, scheduler=scheduler, progress=bar.tasks
            )
    out.result(result, lambda result: _anatomy_text(result, show_all), to_json=lambda result: result.to_json())
    if result.changed or result.only_base or result.only_tuned:
        raise SystemExit(int(ExitStatus.DIFFERENT))


def _anatomy_text(result: Anatomy, show_all: bool) -> Iterator[str]:
    second = result.second is not None
    header = ["tensor", "shape", "rel. change", "cosine", "rank", "90%", "99%", "intruders"] + ["signs agree"] * second
    rows = [
        [layer.name, format_shape(layer.shape)]
        + (
            [{"shape": "shapes differ"}.get(layer.status, layer.status), *"------"]
            if layer.status not in ("changed", "equal")
            else [
                _figure(layer.relative_change),
                _figure(layer.cosine),
                *("-" if value is None else str(value) for value in (layer.rank, layer.rank_90, layer.rank_99)),
                "-" if layer.intruders is None else f"{layer.intruders}/{len(layer.similarity)}",
            ]
        )
        + ([_figure(layer.sign_agreement)] if second else [])
        for layer in result.layers
        if show_all or layer.status != "equal"
    ]
    if rows:
        yield render_table(header, rows, right=list(range(2, len(header))))
    yield f"{len(result.changed)} of {len(result.layers)} weights changed"
    rank = result.lora_rank()
    if rank is not None:
        matrices = [layer for layer in result.changed if layer.rank is not None]
        held = all(len(layer.shape) == 2 for layer in result.changed)
        yield (
            f"the changes of the {len(matrices)} matrices could be a LoRA of rank {rank} (their largest rank above "
            "float rounding)" + ("" if held else "; other changed tensors a LoRA does not hold")
        )
    yield "rank: of the change above float rounding; 90%, 99%: of its energy; intruders: new top directions"
    yield from _only_in(("the base", result.only_base), ("the tuned", result.only_tuned))


@click.command(
    "extract-lora",
    cls=Command,
    short_help="Write a LoRA adapter of what a fine-tune changed.",
    epilog=examples(
        "weightscope extract-lora base/ tuned/ adapter/ --rank 8",
        "weightscope extract-lora gpt2/ gpt2-tuned/ lora/ --rank 16 --json",
    ),
)
@click.argument("base", type=CHECKPOINT)
@click.argument("tuned", type=CHECKPOINT)
@click.argument("out_folder", metavar="OUT", type=PATH)
@click.option("--rank", type=int, required=True, help="The adapter's rank r (a layer smaller than r: its own).")
@click.option("--base-model", help="The adapter's base_model_name_or_path (default: BASE's path).")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="{folder, rank, max_abs, layers: [{module, shape, rank, max_abs, relative_error}], left_out: [names]}.",
)
@pass_output
def extract_lora_command(
    out: Output, base: Path, tuned: Path, out_folder: Path, rank: int, base_model: str | None
) -> None:
    """Write a PEFT LoRA adapter (OUT/adapter_model.safetensors, adapter_config.json) of what TUNED changed in BASE.

    Each changed Linear (GPT-2's Conv1D too: fan_in_fan_out) or Embedding weight's change is cut to its RANK
    largest singular directions; the error is that of PEFT's merge (base + B·A in float32) against TUNED: the
    largest |difference|, and relative to the change. Changed tensors a LoRA does not hold (biases, norms, kernels)
    are named. Conv1D and Linear changes together are refused (PEFT's one fan_in_fan_out).
    """
    from weightscope.lora import extract_lora

    with (
        _open(base) as first,
        _open(tuned) as second,
        out.progress(0, 0, f"extract-lora {tuned.name}", unit="weights") as bar,
    ):
        result = extract_lora(first, second, out_folder, rank, base_model=base_model, progress=bar.tasks)
    out.result(result, _extraction_text, to_json=lambda result: result.to_json())


def _extraction_text(result: Extraction) -> Iterator[str]:
    rows = [
        [
            layer.module,
            format_shape(layer.shape),
            str(layer.rank),
            _figure(layer.max_abs),
            _figure(layer.relative_error),
        ]
        for layer in result.layers
    ]
    if rows:
        yield render_table(["module", "shape", "rank", "max |error|", "rel. error"], rows, right=[2, 3, 4])
    yield f"wrote {safe_text(result.folder)}: a LoRA of rank {result.rank} on {len(result.layers)} modules"
    if result.left_out:
        yield "changed but not in the adapter: " + ", ".join(safe_text(name) for name in result.left_out)
