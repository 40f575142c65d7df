"""Commands that measure and compare: stats, diff, summary, plot."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from weightscope.cli._common import (
    CHECKPOINT,
    PATH,
    _count_kinds,
    _figure,
    _only_in,
    _open,
    dequantize_option,
    open_every_part,
    step_option,
)
from weightscope.cli._output import Command, Output, examples, pass_output
from weightscope.cli.runs import scheduler_option
from weightscope.cli.shell import complete_tensor_names
from weightscope.errors import ExitStatus, UsageError, WeightscopeError
from weightscope.output import format_bytes, format_shape, render_table, safe_text

if TYPE_CHECKING:
    from weightscope.analysis import CheckpointDiff, TensorDiff, TensorStats
    from weightscope.checkpoint import Checkpoint
    from weightscope.quant.error import QuantizationError
    from weightscope.summary import Summary


@click.command(
    "stats",
    cls=Command,
    short_help="Min, max, mean, std, L2 norm, NaNs of each tensor.",
    epilog=examples(
        "weightscope stats model.safetensors",
        "weightscope stats resnet18.pth --filter '*.weight' --json",
        "weightscope stats checkpoint/model.ckpt layer1/kernel --all",
    ),
)
@click.argument("path", type=CHECKPOINT)
@click.argument("names", nargs=-1, shell_complete=complete_tensor_names)
@click.option("--filter", "pattern", metavar="GLOB", help="Only names matching this glob.")
@click.option("--all", "show_all", is_flag=True, help="Also optimizer state and bookkeeping.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="A JSON list of {name, dtype, shape, count, min, max, mean, std, l2, zeros, nans, infs} "
    "({name, dtype, shape, error} for a tensor that cannot be read).",
)
@dequantize_option
@step_option
@pass_output
def stats_command(
    out: Output,
    path: Path,
    names: tuple[str, ...],
    pattern: str | None,
    show_all: bool,
    dequantize: bool,
    step: int | None,
) -> None:
    """Per tensor: min, max, mean, std, L2 norm, zeros, NaNs, infinities; any size, in bounded memory.

    A tensor that cannot be read (damaged) is named on stderr, the others' figures still given; exit 4.
    """
    from weightscope.analysis import checkpoint_stats
    from weightscope.runs import selected_names

    with _open(path, step=step, dequantize=dequantize) as ckpt:
        chosen = selected_names(ckpt, names, pattern, show_all)
        errors: dict[str, WeightscopeError] = {}
        with out.progress(sum(ckpt.info(name).nbytes for name in chosen), len(chosen), f"stats {path.name}") as bar:
            results = checkpoint_stats(ckpt, chosen, errors=errors, advance=bar.advance)
        damaged = {
            name: {"name": name, "dtype": info.type_name, "shape": list(info.shape), "error": str(error)}
            for name, error in errors.items()
            for info in [ckpt.info(name)]
        }

    def in_order(results: Sequence[TensorStats]) -> list[dict[str, object]]:
        rows_by_name = {result.name: result.to_json() for result in results} | damaged
        return [rows_by_name[name] for name in chosen]

    out.result(results, lambda results: _stats_text(results, out.alert), to_json=in_order)
    for error in errors.values():
        out.alert(f"error: {safe_text(str(error))}")
    if errors:
        out.alert(f"{len(errors)} of {len(chosen)} tensors could not be read; the others' figures are above")
        raise SystemExit(int(next(iter(errors.values())).exit_status))


def _stats_text(results: Sequence[TensorStats], note: Callable[[str], None]) -> Iterator[str]:
    header = ["name", "dtype", "shape", "min", "max", "mean", "std", "l2", "zeros", "nans", "infs"]
    rows = [
        [result.name, result.dtype, format_shape(result.shape)]
        + [_figure(getattr(result, field)) for field in header[3:]]
        for result in results
    ]
    yield render_table(header, rows, right=list(range(3, len(header))))
    problems = [result.name for result in results if result.nans or result.infs]
    if problems:
        note(f"{len(problems)} tensors hold NaN or infinite values: {', '.join(map(safe_text, problems[:5]))}")


def _diff_row(tensor: TensorDiff) -> list[str]:
    name = tensor.name + ("" if tensor.other == tensor.name else f" ~ {tensor.other}")
    status = tensor.status
    if status == "shape":
        status += " " + " vs ".join(map(format_shape, tensor.shape))
    elif status == "dtype":
        status += " " + " vs ".join(tensor.dtype)
    notes = [tensor.moved] if tensor.moved else []
    if status in ("equal", "different") and tensor.dtype[0] != tensor.dtype[1]:
        notes.append(" vs ".join(tensor.dtype))
    if notes:
        status += f" ({', '.join(notes)})"
    figures = (tensor.max_abs, tensor.relative_l2, tensor.cosine, tensor.mismatched)
    return [name, status, *map(_figure, figures)]


@click.command(
    "diff",
    cls=Command,
    short_help="Compare two checkpoints tensor by tensor.",
    epilog=examples(
        "weightscope diff checkpoint/model.ckpt model.pt   # across formats",
        "weightscope diff a.safetensors b.safetensors --atol 1e-6 --all",
        "weightscope diff base/ tuned/ --anatomy   # what a fine-tune changed",
    ),
)
@click.argument("a", type=CHECKPOINT)
@click.argument("b", type=CHECKPOINT)
@click.option("--rtol", type=float, default=0.0, show_default=True, help="Relative tolerance, as in numpy.isclose.")
@click.option("--atol", type=float, default=0.0, show_default=True, help="Absolute tolerance.")
@click.option("--all", "show_all", is_flag=True, help="List equal tensors too.")
@click.option("--include-optimizer", is_flag=True, help="Compare optimizer state too (weights only by default).")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="A JSON document: {equal, tensors: [...], only_a, only_b}; when one side is quantised, the quantisation "
    "error: {original, quantised, outlier_fraction, matched_by, tensors: [{name, other, layer, type, shape, rmse, "
    "max_abs, snr_db, cosine, outlier_share, ...}], layers: [{layer, count, rmse, ...}], only_original, "
    "only_quantised}.",
)
@click.option(
    "--plot",
    "image",
    type=PATH,
    metavar="FILE.png",
    help="When one side is quantised: a PNG of the error (RMSE, SNR) per layer (needs weightscope[plot]).",
)
@click.option(
    "--anatomy",
    is_flag=True,
    help="A as the base, B a fine-tune of it: per weight the relative change, the rank of the change (above float "
    "rounding; for 90%, 99% of its energy), its cosine with the base, intruder directions (weightscope.anatomy); "
    "its --json: {base, tuned, second, lora_rank, layers: [{name, shape, status, relative_change, cosine, rank, "
    "rank_90, rank_99, ...}], only_base, only_tuned}.",
)
@click.option(
    "--intruders",
    "top",
    type=click.IntRange(min=0),
    metavar="K",
    help="With --anatomy: look for intruders among the tuned matrices' K top directions (default 10; 0: not at "
    "all, much faster on large matrices).",
)
@scheduler_option
@click.option(
    "--second", "second_tune", type=CHECKPOINT, metavar="PATH", help="With --anatomy: another fine-tune of A."
)
@dequantize_option
@pass_output
def diff_command(
    out: Output,
    a: Path,
    b: Path,
    rtol: float,
    atol: float,
    show_all: bool,
    include_optimizer: bool,
    image: Path | None,
    anatomy: bool,
    top: int | None,
    scheduler: str | None,
    second_tune: Path | None,
    dequantize: bool,
) -> None:
    """Compare two checkpoints tensor by tensor, across formats; exit 0 if equal, 1 if they differ.

    When one side holds quantised weights (GGUF's block types, or a scheme --dequantize reads) and the other does
    not, each weight is measured against its original instead (names and llama.cpp's Q/K permutation undone, see
    weightscope.quant.error): RMSE, max |error|, SNR, cosine and the outliers' share, per tensor and per layer.
    """
    from weightscope.analysis import checkpoint_diff
    from weightscope.quant import grouped
    from weightscope.quant.error import has_quantized

    if rtol < 0 or atol < 0:
        raise UsageError("tolerances must not be negative")
    if (second_tune is not None or top is not None or scheduler is not None) and not anatomy:
        raise UsageError("--second, --intruders and --scheduler go with --anatomy")
    if anatomy:
        from weightscope.cli.anatomy import anatomy_of

        return anatomy_of(out, a, b, second_tune, top, scheduler, show_all, dequantize)
    with _open(a, dequantize=dequantize) as first, _open(b, dequantize=dequantize) as second:
        if image is not None:
            from weightscope.plot import require_matplotlib

            require_matplotlib()
        views = grouped(first), grouped(second)  # a scheme's parts as one weight, read dequantised
        quantised = has_quantized(views[0]), has_quantized(views[1])
        if quantised[0] != quantised[1]:
            original, copy = (views[1], views[0]) if quantised[0] else views
            if rtol or atol or include_optimizer:
                out.alert("--rtol, --atol and --include-optimizer do not apply to a quantisation error: ignored")
            _quantization_error(out, original, copy, show_all, image)
            return
        if image is not None:
            raise UsageError("--plot draws a quantisation error: one side must hold quantised weights, the other not")
        kinds = ("parameter", "optimizer") if include_optimizer else ("parameter",)
        compared = [info for ckpt in (first, second) for info in ckpt.infos() if ckpt.role(info.name).kind in kinds]
        with out.progress(sum(info.nbytes for info in compared), len(compared), f"diff {a.name} {b.name}") as bar:
            result = checkpoint_diff(
                first, second, rtol=rtol, atol=atol, include_optimizer=include_optimizer, advance=bar.advance
            )
    out.result(result, lambda result: _diff_text(result, show_all), to_json=lambda result: result.to_json())
    if not result.equal:
        raise SystemExit(int(ExitStatus.DIFFERENT))


def _quantization_error(
    out: Output, original: Checkpoint, copy: Checkpoint, show_all: bool, image: Path | None
) -> None:
    from weightscope.quant.error import plot_layers, quantization_error

    with out.progress(0, 0, f"diff {original.path.name} {copy.path.name}", unit="tensors") as bar:
        result = quantization_error(original, copy, progress=bar.tasks)
    out.result(result, lambda result: _error_text(result, show_all), to_json=lambda result: result.to_json())
    if image is not None:
        out.note(f"wrote {safe_text(str(plot_layers(result, image, size=(1000, 600))))}: quantisation error per layer")
    if not result.equal:
        raise SystemExit(int(ExitStatus.DIFFERENT))


def _error_text(result: QuantizationError, show_all: bool) -> Iterator[str]:
    figures = ["rmse", "max_abs", "snr_db", "cosine", "outlier_share"]
    header = ["RMSE", "max |error|", "SNR dB", "cosine", "outliers' share"]
    rows = [
        [tensor.name + ("" if tensor.other == tensor.name else f" ~ {tensor.other}"), tensor.type]
        + ([_figure(tensor.partial.figures()[key]) for key in figures] if tensor.status == "compared" else
           ["shape " + " vs ".join(map(format_shape, tensor.shape)), *"----"])
        for tensor in result.tensors
        if show_all or tensor.status != "compared" or tensor.partial.d_squares
    ]  # fmt: skip
    if rows:
        yield render_table(["tensor", "stored as", *header], rows, right=list(range(2, 7)))
        yield ""
    layers = [
        [layer] + [_figure(partial.figures()[key]) for key in figures] for layer, partial in result.layers.items()
    ]
    if layers:
        yield render_table(["layer", *header], layers, right=list(range(1, 6)))
    exact = sum(tensor.status == "compared" and not tensor.partial.d_squares for tensor in result.tensors)
    shapes = sum(tensor.status == "shape" for tensor in result.tensors)
    yield (
        f"{len(result.tensors)} tensors of {safe_text(result.quantised)} measured against {safe_text(result.original)}"
        f" (matched by {result.matched_by}; {exact} exact" + (f", {shapes} of other shapes)" if shapes else ")")
    )
    yield "outliers' share: of the squared error, the part on each tensor's 0.1% largest |original| values"
    yield from _only_in(("the original", result.only_original), ("the quantised", result.only_quantised))


def _diff_text(result: CheckpointDiff, show_all: bool) -> Iterator[str]:
    from weightscope.analysis import diff_order

    changed = sorted((tensor for tensor in result.tensors if show_all or tensor.status != "equal"), key=diff_order)
    if changed:
        header = ["tensor", "status", "max |a-b|", "rel. L2", "cosine", "elements off"]
        yield render_table(header, [_diff_row(tensor) for tensor in changed], right=[2, 3, 4, 5])
    counts = _count_kinds(tensor.status for tensor in result.tensors)
    yield f"{len(result.tensors)} tensors compared (matched by {result.matched_by}): {counts or 'none'}"
    retyped = [t for t in result.tensors if t.status in ("equal", "different") and t.dtype[0] != t.dtype[1]]
    if retyped:
        pairs = _count_kinds(" vs ".join(tensor.dtype) for tensor in retyped)
        yield f"of other dtypes: {pairs}; their values compared in float64"
    yield from _only_in(("A", result.only_a), ("B", result.only_b))


@click.command(
    "summary",
    cls=Command,
    short_help="The network the weights describe, and what they count.",
    epilog=examples(
        "weightscope summary resnet18.pth",
        "weightscope summary llama/ --json",
    ),
)
@click.argument("path", type=CHECKPOINT)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="JSON: {layers: [{name, kind, description, parameters, buffers, optimizer_state, roles}], "
    "totals: {layers, parameters, buffers, optimizer_slots, optimizer_other, bookkeeping, "
    "in_all, string_tensors}, optimizer_other: [names], bytes_by_dtype: {dtype: bytes}} "
    "(described in weightscope.summary); with quantised weights, quantized: {scheme: {weights, values, bytes, "
    "bits_per_weight}}.",
)
@step_option
@pass_output
def summary_command(out: Output, path: Path, step: int | None) -> None:
    """The network the weights describe: each layer's kind (Dense 2 → 5, Conv2D 3×3 3 → 16, ...; ? where the
    weights leave doubt), its parameter, buffer and optimizer values; then totals of every value and bytes."""
    from weightscope.quant import grouped, scheme_totals
    from weightscope.summary import summarize

    with _open(path, step=step) as raw:
        open_every_part(out, raw)
        ckpt = grouped(raw)  # a weight stored quantised counts as its values, its bytes as all its parts'
        summary, schemes = summarize(ckpt), scheme_totals(ckpt)
    out.result(
        summary,
        lambda summary: _summary_text(summary, schemes),
        to_json=lambda summary: {**summary.to_json(), **({"quantized": schemes} if schemes else {})},
    )


def _summary_text(summary: Summary, schemes: dict[str, dict[str, float]]) -> Iterator[str]:
    rows = [
        [
            layer.name,
            layer.description,
            f"{layer.parameters:,}",
            f"{layer.buffers:,}",
            f"{layer.optimizer_state:,}",
        ]
        for layer in summary.layers
    ]
    yield render_table(["layer", "kind", "parameters", "buffers", "optimizer values"], rows, right=[2, 3, 4])
    others = ", ".join(safe_text(name) for name in summary.optimizer_other_names[:4])
    if len(summary.optimizer_other_names) > 4:
        others += ", ..."
    strings = summary.string_tensors
    uncounted = f"{strings} string tensor{'s' * (strings != 1)} not counted" if strings else ""
    totals = [
        ("parameters (trainable)", summary.parameters, ""),
        ("buffers (non-trainable)", summary.buffers, "running statistics" if summary.buffers else ""),
        ("optimizer slot values", summary.optimizer_slots, "per variable"),
        ("other optimizer values", summary.optimizer_other, others),
        ("bookkeeping values", summary.bookkeeping, ""),
        ("values in all", summary.in_all, uncounted),
    ]
    digits = max(len(f"{count:,}") for _, count, _ in totals)
    yield ""
    for label, count, note in totals:
        yield f"{label + ':':<26}{count:>{digits},}" + (f"  ({note})" if note else "")
    yield "bytes by dtype: " + ", ".join(
        f"{dtype} {format_bytes(count)}" for dtype, count in summary.bytes_by_dtype.items()
    )
    for scheme, total in schemes.items():
        yield (
            f"quantised {scheme}: {total['weights']:,} weights, {total['values']:,} values in "
            f"{format_bytes(int(total['bytes']))}, {total['bits_per_weight']:g} bits per weight"
        )
    if summary.model:
        yield f"values by dtype: {', '.join(f'{dtype} {count:,}' for dtype, count in summary.values_by_dtype.items())}"
        yield f"memory to load (weights as stored): {format_bytes(sum(summary.bytes_by_dtype.values()))}"
        yield "model: " + ", ".join(f"{fact} {safe_text(value)}" for fact, value in summary.model.items())
    if summary.sharding:
        chunks = ", ".join(f"{count} in {chunks}" for chunks, count in summary.sharding["chunks_per_tensor"].items())
        files = ", ".join(
            f"{safe_text(file)} {format_bytes(size)}" for file, size in summary.sharding["bytes_per_file"].items()
        )
        yield f"sharding: {summary.sharding['ranks']} ranks; tensors by chunks: {chunks}; files: {files}"
    if summary.size_breakdown:
        yield from _breakdown_text(summary.size_breakdown)


_LARGEST = 10  # tensors the size breakdown lists by name (--json lists all)


def _breakdown_text(breakdown: dict[str, Any]) -> Iterator[str]:
    """A program's size breakdown (``Checkpoint.size_breakdown``): its bytes by operator, its largest tensors."""
    totals = breakdown["totals"]
    yield ""
    yield (
        f"program: {format_bytes(breakdown['file_bytes'])} ({format_bytes(breakdown['program_bytes'])} flatbuffer, "
        f"{format_bytes(breakdown['segment_bytes'])} segments); constants: {breakdown['constants']}; methods: "
        + ", ".join(safe_text(method) for method in breakdown["methods"])
    )
    operators = [
        [entry["operator"], f"{entry['calls']:,}", f"{len(entry['tensors']):,}", format_bytes(entry["bytes"])]
        for entry in breakdown["operators"]
    ]
    if operators:
        yield render_table(["operator", "calls", "tensors", "tensor bytes"], operators, right=[1, 2, 3])
    tensors = [
        [entry["name"], entry["dtype"], format_shape(entry["shape"]), format_bytes(entry["bytes"]),
         ", ".join(entry["operators"]) or "(no operator)"]
        for entry in breakdown["tensors"][:_LARGEST]
    ]  # fmt: skip
    if tensors:
        more = len(breakdown["tensors"]) - len(tensors)
        yield render_table(["tensor", "dtype", "shape", "bytes", "taken by"], tensors, right=[3])
        if more:
            yield f"... and {more} smaller tensors (--json lists all)"
    for delegate in breakdown["delegates"]:
        owner = f"{safe_text(delegate['id'])} ({safe_text(delegate['method'])})"
        yield f"delegate {owner}: {format_bytes(delegate['bytes'])} {delegate['location']} blob, opaque"
    if breakdown["named_data"]:
        blobs = f"{len(breakdown['named_data'])} blobs, {format_bytes(totals['named_data_bytes'])}"
        yield f"named data (delegates' weights, opaque): {blobs}"
    if totals["external_bytes"]:
        yield f"external (.ptd, not read): {format_bytes(totals['external_bytes'])}"


@click.command(
    "plot",
    cls=Command,
    short_help="Draw tensors as PNG histograms, heatmaps or spectra.",
    epilog=examples(
        "weightscope plot model.pt fc.weight --out fc.png",
        "weightscope plot a.pt fc.weight --compare b.pt --log --out fc.png",
        "weightscope plot model.pt fc.weight --kind heatmap --out fc.png",
    ),
)
@click.argument("path", type=CHECKPOINT)
@click.argument("names", nargs=-1, required=True, shell_complete=complete_tensor_names)
@click.option(
    "--out",
    "image",
    type=PATH,
    required=True,
    metavar="FILE.png",
    help="The PNG to write (replaced if it exists); with several NAMEs, FILE-<name>.png for each.",
)
@click.option(
    "--kind",
    type=click.Choice(["hist", "heatmap", "spectrum"]),
    default="hist",
    show_default=True,
    help="A histogram of the values, the tensor as a matrix (block means when larger than the image), "
    "or a matrix's eigenvalue spectrum on log-log axes with its power-law fit (weightscope spectra).",
)
@click.option("--log", is_flag=True, help="Histogram: a log-scale count axis.")
@click.option("--bins", type=int, default=None, help="Histogram: the number of bins (default 100).")
@click.option(
    "--compare", type=CHECKPOINT, metavar="PATH2", help="Histogram: overlay the same tensor of this checkpoint."
)
@click.option("--size", default="800x600", show_default=True, metavar="WxH", help="The image's size in pixels.")
@dequantize_option
@pass_output
def plot_command(
    out: Output,
    path: Path,
    names: tuple[str, ...],
    image: Path,
    kind: str,
    log: bool,
    bins: int | None,
    compare: Path | None,
    size: str,
    dequantize: bool,
) -> None:
    """Draw tensors as PNG images, any size in bounded memory (needs matplotlib: weightscope[plot])."""
    import contextlib

    from weightscope.plot import parse_size, plot_checkpoint

    pixels = parse_size(size)
    with contextlib.ExitStack() as stack:
        ckpt = stack.enter_context(_open(path, dequantize=dequantize))
        other = stack.enter_context(_open(compare, dequantize=dequantize)) if compare is not None else None
        bar = stack.enter_context(out.progress(0, len(names), f"plot {path.name}"))
        if kind == "spectrum":
            from weightscope.spectra_plot import plot_spectra

            if log or bins is not None or other is not None:
                raise UsageError("--log, --bins and --compare are for --kind hist")
            plots = plot_spectra(ckpt, names, image, size=pixels, progress=bar.tasks)
        else:
            plots = plot_checkpoint(
                ckpt, names, image, kind=kind, log=log, bins=bins, compare=other, size=pixels, progress=bar.tasks
            )
    for plot in plots:
        against = "" if plot.other is None else f" against B's '{safe_text(plot.other)}'"
        out.text(f"wrote {safe_text(str(plot.path))}: {plot.kind} of '{safe_text(plot.name)}'{against}")
        for note in plot.notes:
            out.text(f"  {note}")
