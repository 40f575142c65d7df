"""The health command: outliers, super weights, dead rows and columns, NaN/Inf and the flags they raise."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from weightscope.cli._common import CHECKPOINT, _figure, _open, step_option
from weightscope.cli._output import Command, Output, examples, pass_output
from weightscope.cli.runs import progress_option, scheduler_option
from weightscope.cli.shell import complete_tensor_names
from weightscope.output import format_shape, render_table, safe_text

if TYPE_CHECKING:
    from weightscope.health import Health

SHOWN = 20  # flagged tensors listed on the screen (all of them in --json)


@click.command(
    "health",
    cls=Command,
    short_help="Flag outliers, super weights, dead rows, NaN/Inf.",
    epilog=examples(
        "weightscope health model.safetensors",
        "weightscope health llama/ --filter '*mlp*' --top 10 --json",
    ),
)
@click.argument("path", type=CHECKPOINT)
@click.argument("names", nargs=-1, shell_complete=complete_tensor_names)
@click.option("--filter", "pattern", metavar="GLOB", help="Only names matching this glob.")
@click.option("--all", "show_all", is_flag=True, help="Also optimizer state and bookkeeping.")
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True, help="Super weights kept per tensor.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="JSON: {tensors: [{name, dtype, shape, count, nans, infs, mean, std, kurtosis, max_abs, max_over_std, "
    "super_weights: [{coordinates, value, ratio}], dead_rows, dead_columns: {zero, constant, indices}, "
    "spectral_norm, power_iterations, flags}], failed: [{name, error}], tasks}.",
)
@scheduler_option
@progress_option
@step_option
@pass_output
def health_command(
    out: Output,
    path: Path,
    names: tuple[str, ...],
    pattern: str | None,
    show_all: bool,
    top: int,
    scheduler: str | None,
    progress: bool | None,
    step: int | None,
) -> None:
    """Per floating tensor: kurtosis, max/std, super weights with their coordinates, dead rows and columns,
    NaN/Inf, the spectral norm (power iteration); flags exploding variance, a near-zero spectral norm, super
    weights, dead lines, NaN/Inf. On local threads; --scheduler as in 'weightscope runs'."""
    from weightscope.health import checkpoint_health

    with _open(path, step=step) as ckpt, out.progress(0, 0, f"health {path.name}", unit="tasks", shown=progress) as bar:
        result = checkpoint_health(
            ckpt, list(names), pattern=pattern, include_all=show_all, top=top, scheduler=scheduler, progress=bar.tasks
        )
    out.result(result, _health_text, to_json=lambda result: result.to_json())
    for failure in result.failed.values():
        out.alert(f"error: {safe_text(failure.message)}")
    if result.failed:
        out.alert(f"{len(result.failed)} tensors could not be read; the others' health is above")
        raise SystemExit(next(iter(result.failed.values())).exit_status)


def _lines(lines: dict[str, object] | None) -> str:
    if not lines or not (lines["zero"] or lines["constant"]):
        return ""
    indices = lines["indices"]
    assert isinstance(indices, list)
    return f"{lines['zero']} zero, {lines['constant']} constant: {', '.join(map(str, indices))}"


def _health_text(result: Health) -> Iterator[str]:
    flagged = result.flagged
    yield f"{len(result.tensors)} floating tensors checked, {len(flagged)} flagged"
    if flagged:
        header = ["tensor", "shape", "std", "kurtosis", "max/std", "σ max", "flags"]
        rows = [
            [tensor.name, format_shape(tensor.shape)]
            + [_figure(value) for value in (tensor.std, tensor.kurtosis, tensor.max_over_std, tensor.spectral_norm)]
            + [", ".join(tensor.flags)]
            for tensor in flagged[:SHOWN]
        ]
        yield render_table(header, rows, right=[2, 3, 4, 5])
        if len(flagged) > SHOWN:
            yield f"... and {len(flagged) - SHOWN} more flagged (--json for all)"
    weights = sorted(
        ((tensor.name, weight) for tensor in result.tensors for weight in tensor.super_weights if weight.ratio),
        key=lambda pair: -(pair[1].ratio or 0.0),
    )[:5]
    if weights:
        yield "largest entries for their tensor's std (super weights):"
        rows = [
            [name, "[" + ", ".join(map(str, weight.coordinates)) + "]", _figure(weight.value), _figure(weight.ratio)]
            for name, weight in weights
        ]
        yield render_table(["tensor", "coordinates", "value", "x std"], rows, right=[2, 3])
    dead = [
        (tensor.name, kind, _lines(lines))
        for tensor in result.tensors
        for kind, lines in (("rows", tensor.dead_rows), ("columns", tensor.dead_columns))
        if _lines(lines)
    ]
    for name, kind, text in dead[:SHOWN]:
        yield f"dead {kind} of {safe_text(name)}: {text}"
