"""The runs group: statistics, NaN hunting and conversion over a directory of checkpoints."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from weightscope.atomic import interruptible
from weightscope.cli._common import PATH, _figure, _WritableFormat
from weightscope.cli._output import Group, Output, examples, pass_output
from weightscope.errors import ExitStatus
from weightscope.formats import DEFAULT_TARGET
from weightscope.output import format_bytes, render_table, safe_text

if TYPE_CHECKING:
    from weightscope.runs import RunStats


@click.group(
    "runs",
    cls=Group,
    short_help="Stats, NaN hunts and conversion of whole training runs.",
    epilog=examples(
        "weightscope runs stats checkpoint/",
        "weightscope runs find-nan 'out/checkpoint-*'",
        "weightscope runs convert checkpoint/ --out safetensors/",
    ),
)
def runs_group() -> None:
    """Whole training runs: stats, drift, NaNs and conversion of many checkpoints, on Dask (weightscope[dask]).

    RUN is a directory (its 'checkpoint' file's history, else every checkpoint in it and in
    its Trainer checkpoint-N/ folders), a glob, or one checkpoint. Steps come from the
    names (model.ckpt-100, step=100, checkpoint-500, ...), never a model's digits (resnet18).
    Local threads by default; --scheduler tcp://HOST:PORT runs the same tasks on a Dask
    cluster whose workers see the same paths.
    """


scheduler_option = click.option(
    "--scheduler",
    metavar="tcp://HOST:PORT",
    default=None,
    help="A Dask cluster's scheduler to run on (default: threads here; 'processes', or 'sync' for one thread).",
)


progress_option = click.option(
    "--progress/--no-progress",
    default=None,
    help="Report tasks done on stderr: a bar on a terminal, else a line per tenth (default: a bar on a terminal, "
    "without --json or --quiet).",
)


@runs_group.command(
    "stats",
    short_help="Each checkpoint's tensor stats, and their drift.",
    epilog=examples(
        "weightscope runs stats checkpoint/",
        "weightscope runs stats 'runs/*.safetensors' --plot drift.png",
        "weightscope runs stats out/ --scheduler tcp://10.0.0.5:8786 --json",
    ),
)
@click.argument("run")
@click.option("--filter", "pattern", metavar="GLOB", help="Only tensors whose names match this glob.")
@click.option("--all", "show_all", is_flag=True, help="Every numeric tensor, not only the weights.")
@click.option("--json", "as_json", is_flag=True, help="JSON: {checkpoints: [...], tensors: [...]}.")
@click.option("--plot", "plot_out", type=PATH, metavar="FILE.png", help="Also draw each layer's drift over steps.")
@scheduler_option
@progress_option
@pass_output
def runs_stats_command(
    out: Output,
    run: str,
    pattern: str | None,
    show_all: bool,
    plot_out: Path | None,
    scheduler: str | None,
    progress: bool | None,
) -> None:
    """Per checkpoint and tensor: norm, mean, std, NaNs, infinities, change from the previous and the first."""
    from weightscope.runs import run_stats
    from weightscope.runs_plot import plot_drift

    if plot_out is not None:
        from weightscope.plot import require_matplotlib

        require_matplotlib()  # the install hint before any work
    with out.progress(0, 0, f"runs stats {Path(run).name}", unit="tasks", shown=progress) as bar:
        result = run_stats(run, pattern=pattern, include_all=show_all, scheduler=scheduler, progress=bar.tasks)
    out.result(result, _run_stats_text, to_json=lambda result: result.to_json())
    if plot_out is not None:
        written = plot_drift(result, plot_out)
        out.note(f"wrote {safe_text(str(written))}")


def _run_stats_text(result: RunStats) -> Iterator[str]:
    rows = [
        [
            "-" if row.step is None else str(row.step),
            Path(row.checkpoint).name,
            row.name,
            _figure(row.norm),
            _figure(row.stats.mean),
            _figure(row.stats.std),
            str(row.stats.nans),
            str(row.stats.infs),
            _figure(row.change_previous),
            _figure(row.change_first),
        ]
        for row in result.tensors
    ]
    header = ["step", "checkpoint", "tensor", "norm", "mean", "std", "NaN", "Inf", "Δ prev", "Δ first"]
    yield render_table(header, rows, right=[0, 3, 4, 5, 6, 7, 8, 9])
    yield (
        f"{len(result.checkpoints)} checkpoints, {len(result.tensors)} tensors, {result.tasks} tasks "
        f"reading {format_bytes(result.bytes_read)}"
    )


@runs_group.command(
    "find-nan",
    short_help="The first checkpoint where each tensor has NaNs.",
    epilog=examples(
        "weightscope runs find-nan checkpoint/",
        "weightscope runs find-nan out/ --all --json",
    ),
)
@click.argument("run")
@click.option("--filter", "pattern", metavar="GLOB", help="Only tensors whose names match this glob.")
@click.option("--all", "show_all", is_flag=True, help="Every numeric tensor, not only the weights.")
@click.option("--json", "as_json", is_flag=True, help="A JSON list of {name, checkpoint, step, nans, infs}.")
@scheduler_option
@progress_option
@pass_output
def runs_find_nan_command(
    out: Output, run: str, pattern: str | None, show_all: bool, scheduler: str | None, progress: bool | None
) -> None:
    """Per tensor, the first checkpoint with NaNs or infinities; exit 1 if there is one, 0 if none."""
    from weightscope.runs import find_nan

    with out.progress(0, 0, f"runs find-nan {Path(run).name}", unit="tasks", shown=progress) as bar:
        found = find_nan(run, pattern=pattern, include_all=show_all, scheduler=scheduler, progress=bar.tasks)
    out.records(
        [finding.to_json() for finding in found],
        ["tensor", "step", "first checkpoint", "NaN", "Inf"],
        lambda finding: [
            finding["name"],
            "-" if finding["step"] is None else str(finding["step"]),
            finding["checkpoint"],
            str(finding["nans"]),
            str(finding["infs"]),
        ],
        right=[1, 3, 4],
        empty="no NaNs or infinities in any checkpoint",
    )
    if found:
        raise SystemExit(int(ExitStatus.DIFFERENT))


@runs_group.command(
    "convert",
    short_help="Convert every checkpoint of a run into a folder.",
    epilog=examples(
        "weightscope runs convert checkpoint/ --out converted/",
        "weightscope runs convert run/ --to pytorch --out pt/",
    ),
)
@click.argument("run")
@click.option(
    "--to",
    type=_WritableFormat(),
    default=DEFAULT_TARGET,
    show_default=True,
    help="The format to write.",
)
@click.option("--out", "folder", type=PATH, required=True, metavar="DIR", help="The directory to write the files into.")
@click.option("--include-optimizer", is_flag=True, help="Also write optimizer state (weights only by default).")
@click.option("--json", "as_json", is_flag=True, help="A JSON list of {source, destination, tensors, nbytes}.")
@scheduler_option
@progress_option
@pass_output
def runs_convert_command(
    out: Output,
    run: str,
    to: str,
    folder: Path,
    include_optimizer: bool,
    scheduler: str | None,
    progress: bool | None,
) -> None:
    """Convert every checkpoint of a run, a task per checkpoint, into DIR."""
    from weightscope.runs import run_convert

    # A stop signal raises here, in the main thread; the conversions under way in the workers
    # finish (Python joins them on the way out) and those not started do not: nothing is left
    # half-written.
    with interruptible(), out.progress(0, 0, f"runs convert {Path(run).name}", unit="tasks", shown=progress) as bar:
        done = run_convert(
            run, folder, to=to, scheduler=scheduler, progress=bar.tasks, include_optimizer=include_optimizer
        )
    out.result(
        done,
        lambda done: (
            f"wrote {safe_text(entry['destination'])}: {entry['tensors']} tensors, {format_bytes(entry['nbytes'])}"
            for entry in done
        ),
    )
