"""The spectra command: weightwatcher's per-matrix spectral figures, from the files alone."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from weightscope.cli._common import CHECKPOINT, _figure, _open, dequantize_option, step_option
from weightscope.cli._output import Command, Output, examples, pass_output
from weightscope.cli.runs import progress_option, scheduler_option
from weightscope.cli.shell import complete_tensor_names
from weightscope.errors import UsageError
from weightscope.output import format_shape, render_table, safe_text

if TYPE_CHECKING:
    from weightscope.spectra import Skipped, Spectrum


@click.command(
    "spectra",
    cls=Command,
    short_help="Spectral figures of each weight matrix (weightwatcher's).",
    epilog=examples(
        "weightscope spectra model.safetensors",
        "weightscope spectra llama/ --filter '*.q_proj.weight' --top 64",
        "weightscope spectra model.pt --json --values > spectra.json",
    ),
)
@click.argument("path", type=CHECKPOINT)
@click.argument("names", nargs=-1, shell_complete=complete_tensor_names)
@click.option("--filter", "pattern", metavar="GLOB", help="Only names matching this glob.")
@click.option(
    "--top",
    type=click.IntRange(min=1),
    metavar="K",
    help="Only the K largest singular values of each matrix, randomized, each within the bound given "
    "(for matrices too large to decompose whole; the alpha fit then sees only those).",
)
@click.option("--values", is_flag=True, help="With --json, every singular value too.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="A JSON list of {name, shape, n, m, matrices, method, error_bound, spectral_norm, frobenius_norm, "
    "stable_rank, entropy, effective_rank, alpha, xmin, ks_distance, alpha_error, tail, mp_spikes, mp_sigma, note} "
    "({name, shape, skipped} for a tensor without a spectrum).",
)
@scheduler_option
@progress_option
@dequantize_option
@step_option
@pass_output
def spectra_command(
    out: Output,
    path: Path,
    names: tuple[str, ...],
    pattern: str | None,
    top: int | None,
    values: bool,
    scheduler: str | None,
    progress: bool | None,
    dequantize: bool,
    step: int | None,
) -> None:
    """Per weight matrix: singular values, spectral and Frobenius norms, stable and effective rank, the
    power-law alpha of its eigenvalue spectrum and the Marchenko-Pastur spike count, as weightwatcher computes
    them. Conv kernels are taken per spatial position; vectors, embeddings and tiny matrices are skipped."""
    from weightscope.runs import selected_names
    from weightscope.spectra import checkpoint_spectra, path_spectra

    with _open(path, step=step, dequantize=dequantize) as ckpt:
        chosen = selected_names(ckpt, names, pattern)
        if scheduler is not None and (step is not None or dequantize):
            raise UsageError("--scheduler reads the file as it is: without --step or --dequantize")
        with out.progress(0, len(chosen), f"spectra {path.name}", unit="tasks", shown=progress) as bar:
            if scheduler is None:
                results = checkpoint_spectra(ckpt, chosen, top=top, progress=bar.tasks)
            else:  # Dask tasks, each opening the file where it runs (a step or dequantizing: not yet)
                results = path_spectra(str(path), chosen, top=top, scheduler=scheduler, progress=bar.tasks)

    def to_json(results: Sequence[Spectrum | Skipped]) -> list[dict[str, object]]:
        return [result.to_json(values) for result in results]

    out.result(results, lambda results: _spectra_text(results, out.note), to_json=to_json)


def _spectra_text(results: Sequence[Spectrum | Skipped], note: Callable[[str], None]) -> Iterator[str]:
    from weightscope.spectra import Spectrum

    header = ["name", "shape", "spectral", "frobenius", "stable rank", "eff. rank", "entropy", "alpha", "MP spikes"]
    rows = [
        [result.name, format_shape(result.shape)]
        + [
            _figure(value)
            for value in (
                result.spectral_norm,
                result.frobenius_norm,
                result.stable_rank,
                result.effective_rank,
                result.entropy,
                result.alpha,
                result.mp_spikes,
            )
        ]
        for result in results
        if isinstance(result, Spectrum)
    ]
    yield render_table(header, rows, right=list(range(2, len(header))))
    bounds = [result.error_bound for result in results if isinstance(result, Spectrum) and result.method != "exact"]
    if bounds:
        note(f"randomized: every singular value within {max(bounds):.3g} of the true one")
    skipped: dict[str, list[str]] = {}
    unsplit: dict[str, list[str]] = {}
    for result in results:
        if not isinstance(result, Spectrum):
            skipped.setdefault(result.reason, []).append(result.name)
        elif result.note is not None:
            unsplit.setdefault(result.note, []).append(result.name)
    for reason, skipped_names in skipped.items():
        note(f"skipped {len(skipped_names)}, {reason}: {_names(skipped_names)}")
    for reason, whole in unsplit.items():
        note(f"not split into q, k, v ({safe_text(reason)}): {_names(whole)}")


def _names(names: list[str]) -> str:
    return ", ".join(map(safe_text, names[:4])) + (", ..." if len(names) > 4 else "")
