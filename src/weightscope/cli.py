"""The ``weightscope`` command: thin functions over the library.

Each command opens a checkpoint, asks the library, and formats the answer as a table
or, with ``--json``, as JSON. ``main`` turns every ``WeightscopeError`` into one line
on stderr and the exit status of its kind; ``--traceback`` shows the stack instead.
"""

from __future__ import annotations

import fnmatch
import io
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np

import weightscope
from weightscope.atomic import Interrupted, interruptible
from weightscope.checkpoint import Checkpoint, TensorInfo
from weightscope.errors import ExitStatus, RefusedError, UsageError, WeightscopeError, os_error_status, reason
from weightscope.layers import naming_convention
from weightscope.output import (
    dumps_json,
    format_bytes,
    format_shape,
    json_values,
    render_table,
    safe_text,
    terminal_text,
)
from weightscope.sources import as_path

if TYPE_CHECKING:
    from weightscope.analysis import TensorDiff, TensorStats

PATH = click.Path(path_type=Path)


class _CheckpointPath(click.ParamType):
    """A checkpoint to read: a local ``Path``, or a URL (``s3://``, ``https://``, ...) as a ``RemotePath``."""

    name = "path"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return as_path(value)


CHECKPOINT = _CheckpointPath()


def _echo(text: str = "", *, err: bool = False, nl: bool = True, redraw: bool = False) -> None:
    """Everything the command writes passes here: whatever a file put in it, no control
    character reaches the terminal (cells are escaped first too, to keep tables aligned).
    ``redraw`` starts at the beginning of the line (a progress line drawn over itself)."""
    click.echo(("\r" if redraw else "") + terminal_text(text), err=err, nl=nl)


def _note(text: str) -> None:
    _echo(f"weightscope: {text}", err=True)


def _cap_callback(variable: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """An option's callback setting ``variable`` (``weightscope.limits``) for this command, as if set outside."""

    def set_variable(context: click.Context, parameter: click.Parameter, value: Any) -> Any:
        if value is not None:
            from weightscope.limits import parse_size

            try:
                parse_size(str(value))
            except ValueError as error:
                raise click.BadParameter(str(error)) from None
            previous = os.environ.get(variable)
            os.environ[variable] = str(value)
            context.call_on_close(
                lambda: os.environ.pop(variable, None) if previous is None else os.environ.update({variable: previous})
            )
        return value

    return set_variable


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(weightscope.__version__, prog_name="weightscope")
@click.option("--traceback", is_flag=True, help="Show the Python traceback of an error.")
@click.option(
    "--max-memory",
    metavar="SIZE",
    expose_value=False,
    callback=_cap_callback("WEIGHTSCOPE_MAX_MEMORY"),
    help="Memory one file may make a reader build (4GiB, 512MiB; default 64 MiB + 8 x the file's size).",
)
@click.option(
    "--max-expansion",
    type=click.IntRange(min=1),
    expose_value=False,
    callback=_cap_callback("WEIGHTSCOPE_MAX_EXPANSION"),
    help="Times its stored bytes a tensor may become when read whole (a stride-0 view; default 1024).",
)
def cli(traceback: bool) -> None:
    """Read the weights of neural-network checkpoints, without their frameworks."""


def _open(path: Path, *, verify: bool = True, step: int | None = None) -> Checkpoint:
    if step is not None and not isinstance(path, Path):
        raise UsageError(f"{path}: --step picks from a local directory's history; name the remote checkpoint itself")
    if step is not None:
        from weightscope.history import select_step

        path = select_step(path, step)
    return weightscope.open(path, verify=verify)


step_option = click.option(
    "--step", type=int, default=None, help="From a directory's history, the checkpoint of this step."
)


def _row(ckpt: Checkpoint, info: TensorInfo) -> dict[str, Any]:
    role = ckpt.role(info.name)
    row: dict[str, Any] = {
        "name": info.name,
        "dtype": info.type_name,
        "shape": list(info.shape),
        "nbytes": info.nbytes,
        "role": role.label,
        "kind": role.category,
    }
    if role.owner is not None:
        row["of"] = role.owner
    if info.key != info.name:
        row["key"] = info.key
    view = ckpt.view(info.name)
    if view is not None:
        row.update(strides=list(view.strides), stored_nbytes=view.stored_nbytes)
    return row


def _size(ckpt: Checkpoint, info: TensorInfo) -> str:
    """The tensor's bytes, and those it stores when it is a view repeating them."""
    view = ckpt.view(info.name)
    if view is None or view.stored_nbytes >= info.nbytes:
        return format_bytes(info.nbytes)
    return f"{format_bytes(info.nbytes)} (view of {format_bytes(view.stored_nbytes)}, strides {list(view.strides)})"


@cli.command("ls")
@click.argument("path", type=CHECKPOINT)
@click.option("--all", "show_all", is_flag=True, help="Also list optimizer state and bookkeeping.")
@click.option("--filter", "pattern", metavar="GLOB", help="Only names matching this glob.")
@click.option("--keys", "show_keys", is_flag=True, help="Also show the key each tensor is stored under.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="JSON: {path, format, tensors: [{name, dtype, shape, nbytes, role, kind}], hidden: {kind: count}, metadata}; "
    "a view adds strides and stored_nbytes.",
)
@step_option
def ls_command(
    path: Path, show_all: bool, pattern: str | None, show_keys: bool, as_json: bool, step: int | None
) -> None:
    """List the tensors of a checkpoint: name, dtype, shape, size."""
    with _open(path, step=step) as ckpt:
        infos = [info for info in ckpt.infos() if pattern is None or fnmatch.fnmatchcase(info.name, pattern)]
        roles = {info.name: ckpt.role(info.name) for info in infos}
        metadata = ckpt.metadata
        shown: list[TensorInfo] = []
        hidden: list[str] = []  # the categories of the tensors left out
        for info in infos:
            role = roles[info.name]
            if show_all or role.kind == "parameter":
                shown.append(info)
            else:
                hidden.append(role.category)
        if as_json:
            document = {
                "path": str(ckpt.path),
                "format": ckpt.format,
                "tensors": [_row(ckpt, info) for info in shown],
                "hidden": _tally(hidden),
                "metadata": metadata,
            }
            _echo(dumps_json(document))
            return
    header = ["name", "dtype", "shape", "size"] + (["key"] if show_keys else [])
    rows = [
        [safe_text(info.name), info.type_label, format_shape(info.shape), _size(ckpt, info)]
        + ([safe_text(info.key)] if show_keys else [])
        for info in shown
    ]
    _echo(render_table(header, rows, right=[3]))
    values = dict.fromkeys(_VALUE_LABELS, 0)
    for info in shown:
        values[roles[info.name].category] += 0 if info.type_name == "string" else info.size
    counted = [
        f"{values[category]:,} {noun}{'s' * (values[category] != 1)}{note}"
        for category, (noun, note) in _VALUE_LABELS.items()
        if values[category]
    ]
    nbytes = sum(info.nbytes for info in shown)
    _echo(f"{len(shown)} tensors, {', '.join(counted or ['0 parameters'])}, {format_bytes(nbytes)}")
    if hidden:
        _echo(f"hidden: {_count_kinds(hidden, unit='tensor')} (--all shows them)")
    for key, value in metadata.items():
        # A model's whole config can be a metadata value: show its start.
        shown_value = value if len(value) <= 100 else f"{value[:100]}… ({len(value):,} characters)"
        _echo(f"metadata: {safe_text(key)} = {safe_text(shown_value)}")


# What ``ls`` sums, by ``TensorRole.category``: values (elements), never tensors; (noun, note).
_VALUE_LABELS = {
    "parameter": ("parameter", ""),
    "buffer": ("buffer value", " (running statistics)"),
    "optimizer": ("optimizer state value", ""),
    "bookkeeping": ("bookkeeping value", ""),
}


def _tally(kinds: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for kind in sorted(kinds):
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def _count_kinds(kinds: Iterable[str], unit: str = "") -> str:
    """``1 bookkeeping tensor, 10 optimizer state tensors``: each kind's count, with ``unit`` (plural past one)."""
    labels = {"optimizer": "optimizer state"}
    return ", ".join(
        f"{count} {labels.get(kind, kind)}" + (f" {unit}{'s' * (count != 1)}" if unit else "")
        for kind, count in _tally(kinds).items()
    )


@cli.command("show")
@click.argument("path", type=CHECKPOINT)
@click.argument("names", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Values as JSON, with dtype and shape.")
@click.option("--npy", "npy", type=PATH, metavar="OUT", help="Save the (single) tensor as a .npy file.")
@click.option("--no-verify", is_flag=True, help="Skip checksum verification.")
@step_option
def show_command(
    path: Path, names: Sequence[str], as_json: bool, npy: Path | None, no_verify: bool, step: int | None
) -> None:
    """Print tensor values as numpy prints them. A role name (layer1/weight) works too."""
    if npy is not None and len(names) != 1:
        raise UsageError("--npy saves one tensor; name exactly one")
    with _open(path, verify=not no_verify, step=step) as ckpt:
        resolved = []
        for name in names:
            actual = ckpt.resolve(name)
            if safe_text(actual) != safe_text(name):  # not a name asked for as printed
                convention = naming_convention(actual)
                reason = f" ({convention})" if convention else ""
                _note(f"'{safe_text(name)}' is '{safe_text(actual)}' in this checkpoint{reason}")
            resolved.append(actual)
        if npy is not None:
            _save_npy(ckpt[resolved[0]], npy)
            _note(f"saved '{safe_text(resolved[0])}' to {npy}")
            return
        if as_json:
            document = {}
            for name in resolved:
                info, array = ckpt.info(name), ckpt[name]
                document[name] = {
                    "dtype": info.type_name,
                    "shape": list(info.shape),
                    "values": json_values(array),
                }
            _echo(dumps_json(document, indent=None))
            return
        for name in resolved:
            if len(resolved) > 1:
                _echo(f"{safe_text(name)}:")
            _echo(str(ckpt[name]))


def _save_npy(array: np.ndarray, out: Path) -> None:
    if array.dtype.kind == "O":
        raise UsageError("string tensors cannot be saved as .npy without pickling; use --json")
    from weightscope.atomic import atomic_write

    with atomic_write(out) as handle:
        np.save(handle, array, allow_pickle=False)


@cli.command("layers")
@click.argument("path", type=CHECKPOINT)
@click.option("--json", "as_json", is_flag=True, help="A JSON list of layers.")
@step_option
def layers_command(path: Path, as_json: bool, step: int | None) -> None:
    """One row per layer: weight and bias shapes, where they came from, parameter count."""
    with _open(path, step=step) as ckpt:
        layers = ckpt.layers()
        document = [
            {
                "layer": layer.name,
                "parameters": {role: _row(ckpt, info) for role, info in layer.parameters.items()},
                "parameter_count": layer.parameter_count,
                "buffer_count": layer.buffer_count,
                "optimizer_state": {
                    owner: {slot: info.name for slot, info in slots.items()}
                    for owner, slots in layer.optimizer_state.items()
                },
            }
            for layer in layers.values()
        ]
    if as_json:
        _echo(dumps_json(document))
        return
    buffers = any(layer.buffer_count for layer in layers.values())
    rows = []
    for layer in layers.values():
        weight, bias = layer.weight, layer.bias
        others = [
            f"{safe_text(role)} {format_shape(info.shape)}"
            for role, info in layer.parameters.items()
            if role not in ("weight", "bias")
        ]
        rows.append(
            [
                safe_text(layer.name),
                f"{format_shape(weight.shape)} {safe_text(weight.name)}" if weight else "-",
                f"{format_shape(bias.shape)} {safe_text(bias.name)}" if bias else "-",
                ", ".join(others) or "-",
                f"{layer.parameter_count:,}",
                *([f"{layer.buffer_count:,}"] if buffers else []),
                str(sum(len(slots) for slots in layer.optimizer_state.values())),
            ]
        )
    header = ["layer", "weight", "bias", "other", "parameters", *(["buffers"] if buffers else []), "optimizer tensors"]
    _echo(render_table(header, rows, right=list(range(4, len(header)))))
    totals = f"{len(layers)} layers, {sum(layer.parameter_count for layer in layers.values()):,} parameters"
    if buffers:
        totals += f", {sum(layer.buffer_count for layer in layers.values()):,} buffer values (running statistics)"
    _echo(totals)


def _figure(value: float | int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.6g}"


@cli.command("stats")
@click.argument("path", type=CHECKPOINT)
@click.argument("names", nargs=-1)
@click.option("--filter", "pattern", metavar="GLOB", help="Only names matching this glob.")
@click.option("--all", "show_all", is_flag=True, help="Also optimizer state and bookkeeping.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="A JSON list of {name, dtype, shape, count, min, max, mean, std, l2, zeros, nans, infs} "
    "({name, dtype, shape, error} for a tensor that cannot be read).",
)
@step_option
def stats_command(
    path: Path, names: tuple[str, ...], pattern: str | None, show_all: bool, as_json: bool, step: int | None
) -> None:
    """Per tensor: min, max, mean, std, L2 norm, zeros, NaNs, infinities; any size, in bounded memory.

    A tensor that cannot be read (damaged) is named on stderr, the others' figures still given; exit 4.
    """
    from weightscope.analysis import checkpoint_stats

    with _open(path, step=step) as ckpt:
        if names:
            chosen = [ckpt.resolve(name) for name in names]
        else:
            chosen = [
                name
                for name in ckpt
                if (pattern is None or fnmatch.fnmatchcase(name, pattern))
                and (show_all or ckpt.role(name).kind == "parameter")
            ]
        errors: dict[str, WeightscopeError] = {}
        results = checkpoint_stats(ckpt, chosen, errors=errors)
        damaged = {
            name: {"name": name, "dtype": info.type_name, "shape": list(info.shape), "error": str(error)}
            for name, error in errors.items()
            for info in [ckpt.info(name)]
        }
    if as_json:
        rows_by_name = {result.name: result.to_json() for result in results} | damaged
        _echo(dumps_json([rows_by_name[name] for name in chosen]))
    else:
        _stats_table(results)
    for error in errors.values():
        _note(f"error: {safe_text(str(error))}")
    if errors:
        _note(f"{len(errors)} of {len(chosen)} tensors could not be read; the others' figures are above")
        raise SystemExit(int(next(iter(errors.values())).exit_status))


def _stats_table(results: Sequence[TensorStats]) -> None:
    header = ["name", "dtype", "shape", "min", "max", "mean", "std", "l2", "zeros", "nans", "infs"]
    rows = [
        [safe_text(result.name), result.dtype, format_shape(result.shape)]
        + [_figure(getattr(result, field)) for field in header[3:]]
        for result in results
    ]
    _echo(render_table(header, rows, right=list(range(3, len(header)))))
    problems = [result.name for result in results if result.nans or result.infs]
    if problems:
        _note(f"{len(problems)} tensors hold NaN or infinite values: {', '.join(map(safe_text, problems[:5]))}")


def _diff_row(tensor: TensorDiff) -> list[str]:
    name = safe_text(tensor.name) + ("" if tensor.other == tensor.name else f" ~ {safe_text(tensor.other)}")
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


@cli.command("diff")
@click.argument("a", type=CHECKPOINT)
@click.argument("b", type=CHECKPOINT)
@click.option("--rtol", type=float, default=0.0, show_default=True, help="Relative tolerance, as in numpy.isclose.")
@click.option("--atol", type=float, default=0.0, show_default=True, help="Absolute tolerance.")
@click.option("--all", "show_all", is_flag=True, help="List equal tensors too.")
@click.option("--include-optimizer", is_flag=True, help="Compare optimizer state too (weights only by default).")
@click.option("--json", "as_json", is_flag=True, help="A JSON document: {equal, tensors: [...], only_a, only_b}.")
def diff_command(
    a: Path, b: Path, rtol: float, atol: float, show_all: bool, include_optimizer: bool, as_json: bool
) -> None:
    """Compare two checkpoints tensor by tensor, across formats; exit 0 if equal, 1 if they differ."""
    from weightscope.analysis import checkpoint_diff, diff_order

    if rtol < 0 or atol < 0:
        raise UsageError("tolerances must not be negative")
    with _open(a) as first, _open(b) as second:
        result = checkpoint_diff(first, second, rtol=rtol, atol=atol, include_optimizer=include_optimizer)
    if as_json:
        _echo(dumps_json(result.to_json()))
    else:
        changed = [tensor for tensor in result.tensors if show_all or tensor.status != "equal"]
        changed.sort(key=diff_order)
        rows = [_diff_row(tensor) for tensor in changed]
        if rows:
            header = ["tensor", "status", "max |a-b|", "rel. L2", "cosine", "elements off"]
            _echo(render_table(header, rows, right=[2, 3, 4, 5]))
        counts = _count_kinds(tensor.status for tensor in result.tensors)
        _echo(f"{len(result.tensors)} tensors compared (matched by {result.matched_by}): {counts or 'none'}")
        retyped = [t for t in result.tensors if t.status in ("equal", "different") and t.dtype[0] != t.dtype[1]]
        if retyped:
            pairs = _count_kinds(" vs ".join(tensor.dtype) for tensor in retyped)
            _echo(f"of other dtypes: {pairs}; their values compared in float64")
        for side, names in (("A", result.only_a), ("B", result.only_b)):
            if names:
                _echo(f"only in {side}: {', '.join(safe_text(name) for name in names)}")
    if not result.equal:
        raise SystemExit(int(ExitStatus.DIFFERENT))


@cli.command("verify")
@click.argument("path", type=CHECKPOINT)
@step_option
def verify_command(path: Path, step: int | None) -> None:
    """Check every block and tensor checksum; exit non-zero naming what is damaged.

    Formats without checksums (safetensors, GGUF, .npy, ONNX, HDF5, legacy PyTorch) have each
    tensor read and checked against the file's bounds and its declared size, and say so."""
    with _open(path, step=step) as ckpt:
        problems = ckpt.verify()
        total = sum(info.nbytes for info in ckpt.infos())
        count = len(ckpt)
        checksums, kind = ckpt.checksums, ckpt.format
    for problem in problems:
        _echo(f"DAMAGED {safe_text(str(problem))}")
    if problems:
        _note(f"{len(problems)} of {count} tensors damaged")
        raise SystemExit(int(ExitStatus.CORRUPT))
    if checksums:
        _echo(f"OK: {count} tensors, {format_bytes(total)} verified")
    else:
        _echo(
            f"OK: {count} tensors, {format_bytes(total)} read, each within the file and of its declared size; "
            f"no checksums checked: this {kind} file has none, so changed values cannot be detected"
        )


def _convention_option(flag: str, help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--layout`` or ``--names``: keep what the file has, or take PyTorch's or TensorFlow's convention."""
    choice = click.Choice(["keep", "pytorch", "tensorflow"])
    return click.option(flag, type=choice, default="keep", show_default=True, help=help)


class _ProgressBar:
    """Tensors and bytes done, redrawn on stderr; shown only on a terminal, after the first second."""

    def __init__(self, label: str) -> None:
        self._label = label
        self._started = time.monotonic()
        self._shown = False
        self._enabled = sys.stderr.isatty()

    def __call__(self, tensors: int, total_tensors: int, nbytes: int, total_bytes: int) -> None:
        if not self._enabled or time.monotonic() - self._started < 1:
            return
        fraction = nbytes / total_bytes if total_bytes else 1.0
        bar = "#" * int(fraction * 30)
        line = (
            f"{self._label} [{bar:<30}] {tensors}/{total_tensors} tensors, "
            f"{format_bytes(nbytes)} of {format_bytes(total_bytes)}"
        )
        _echo(line, nl=False, err=True, redraw=True)
        self._shown = True

    def finish(self) -> None:
        if self._shown:
            _echo(err=True)


@cli.command("convert")
@click.argument("source", type=CHECKPOINT)
@click.argument("destination", type=PATH)
@click.option(
    "--to",
    "to",
    type=click.Choice(["tensorflow", "safetensors", "pytorch", "npz", "keras"]),
    help="Output format (default: from DESTINATION's name: .safetensors, .pt/.pth/.bin, .npz, .weights.h5, "
    "and TensorFlow for a prefix with no suffix or ending .ckpt).",
)
@_convention_option(
    "--layout", "Permute weights to this framework's layout (dense [out, in] vs [in, out], convolutions)."
)
@_convention_option(
    "--names", "Rename to this framework's convention (layer1/kernel <-> layer1.weight, BatchNorm's four)."
)
@click.option("--include-optimizer", is_flag=True, help="Also write optimizer state (weights only by default).")
@click.option("--filter", "pattern", metavar="GLOB", help="Only tensors whose source name matches this glob.")
@click.option(
    "--dtype", type=click.Choice(["float16", "bfloat16", "float32"]), help="Cast the floating tensors to this type."
)
@click.option("--json", "as_json", is_flag=True, help="A JSON summary of what was written.")
@step_option
def convert_command(
    source: Path,
    destination: Path,
    to: str | None,
    layout: str,
    names: str,
    include_optimizer: bool,
    pattern: str | None,
    dtype: str | None,
    as_json: bool,
    step: int | None,
) -> None:
    """Write SOURCE's weights to DESTINATION in another format, layout or naming; verified before it appears."""
    from weightscope.convert import convert

    progress = _ProgressBar(f"converting {safe_text(source.name)}")
    with _open(source, step=step) as ckpt:
        try:
            result = convert(
                ckpt,
                destination,
                to=to,
                layout=layout,
                names=names,
                include_optimizer=include_optimizer,
                pattern=pattern,
                dtype=dtype,
                progress=progress,
            )
        finally:
            progress.finish()
    for name, why in result.ambiguous.items():
        _note(f"kept as is: '{safe_text(name)}': {why}")
    for note in result.notes:
        _note(safe_text(note))
    if as_json:
        _echo(dumps_json(result.to_json()))
        return
    rows = [
        [safe_text(tensor.source), safe_text(tensor.name), format_shape(tensor.shape), tensor.layout]
        for tensor in result.tensors
    ]
    _echo(render_table(["source", "written as", "shape", "layout"], rows))
    _echo(
        f"wrote {len(result.tensors)} tensors, {format_bytes(result.nbytes)}, to {safe_text(result.destination)} "
        f"({result.format}, verified) in {result.seconds:.2f} s"
    )
    cast = [tensor for tensor in result.tensors if tensor.cast_from is not None]
    if cast:
        _echo(f"cast to {result.dtype}: {len(cast)} tensors ({_count_kinds(str(tensor.cast_from) for tensor in cast)})")
    if result.skipped:
        kinds = _count_kinds((reason.split(" (")[0] for reason in result.skipped.values()), unit="tensor")
        _echo(f"left out: {kinds}")


@cli.command("summary")
@click.argument("path", type=CHECKPOINT)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="JSON: {layers: [{name, kind, description, parameters, buffers, optimizer_state, roles}], "
    "totals: {layers, parameters, buffers, optimizer_slots, optimizer_other, bookkeeping, "
    "in_all, string_tensors}, optimizer_other: [names], bytes_by_dtype: {dtype: bytes}} "
    "(described in weightscope.summary).",
)
@step_option
def summary_command(path: Path, as_json: bool, step: int | None) -> None:
    """The network the weights describe: each layer's kind (Dense 2 → 5, Conv2D 3×3 3 → 16, ...; ? where the
    weights leave doubt), its parameter, buffer and optimizer values; then totals of every value and bytes."""
    from weightscope.summary import summarize

    with _open(path, step=step) as ckpt:
        summary = summarize(ckpt)
    if as_json:
        _echo(dumps_json(summary.to_json()))
        return
    rows = [
        [
            safe_text(layer.name),
            safe_text(layer.description),
            f"{layer.parameters:,}",
            f"{layer.buffers:,}",
            f"{layer.optimizer_state:,}",
        ]
        for layer in summary.layers
    ]
    _echo(render_table(["layer", "kind", "parameters", "buffers", "optimizer values"], rows, right=[2, 3, 4]))
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
    _echo()
    for label, count, note in totals:
        _echo(f"{label + ':':<26}{count:>{digits},}" + (f"  ({note})" if note else ""))
    _echo(
        "bytes by dtype: "
        + ", ".join(f"{dtype} {format_bytes(count)}" for dtype, count in summary.bytes_by_dtype.items())
    )


@cli.command("plot")
@click.argument("path", type=CHECKPOINT)
@click.argument("names", nargs=-1, required=True)
@click.option(
    "--out",
    type=PATH,
    required=True,
    metavar="FILE.png",
    help="The PNG to write (replaced if it exists); with several NAMEs, FILE-<name>.png for each.",
)
@click.option(
    "--kind",
    type=click.Choice(["hist", "heatmap"]),
    default="hist",
    show_default=True,
    help="A histogram of the values, or the tensor as a matrix (block means when larger than the image).",
)
@click.option("--log", is_flag=True, help="Histogram: a log-scale count axis.")
@click.option("--bins", type=int, default=None, help="Histogram: the number of bins (default 100).")
@click.option(
    "--compare", type=CHECKPOINT, metavar="PATH2", help="Histogram: overlay the same tensor of this checkpoint."
)
@click.option("--size", default="800x600", show_default=True, metavar="WxH", help="The image's size in pixels.")
def plot_command(
    path: Path,
    names: tuple[str, ...],
    out: Path,
    kind: str,
    log: bool,
    bins: int | None,
    compare: Path | None,
    size: str,
) -> None:
    """Draw tensors as PNG images, any size in bounded memory (needs matplotlib: weightscope[plot])."""
    import contextlib

    from weightscope.plot import parse_size, plot_checkpoint

    pixels = parse_size(size)
    with contextlib.ExitStack() as stack:
        ckpt = stack.enter_context(_open(path))
        other = stack.enter_context(_open(compare)) if compare is not None else None
        plots = plot_checkpoint(ckpt, names, out, kind=kind, log=log, bins=bins, compare=other, size=pixels)
    for plot in plots:
        against = "" if plot.other is None else f" against B's '{safe_text(plot.other)}'"
        _echo(f"wrote {safe_text(str(plot.path))}: {plot.kind} of '{safe_text(plot.name)}'{against}")
        for note in plot.notes:
            _echo(f"  {note}")


@cli.group("runs")
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
    "--progress/--no-progress", default=None, help="Report tasks done on stderr (default: when it is a terminal)."
)


def _task_progress(enabled: bool | None) -> Any:
    terminal = sys.stderr.isatty()
    if not (terminal if enabled is None else enabled):
        return None
    shown = [-1]
    step = 1 if terminal else 10  # a line per tenth when stderr is a file

    def report(done: int, total: int) -> None:
        percent = done * 100 // max(1, total) // step * step
        if percent != shown[0]:
            shown[0] = percent
            line = f"weightscope: {done}/{total} tasks ({percent}%)"
            _echo(line, err=True, nl=done == total or not terminal, redraw=terminal)

    return report


@runs_group.command("stats")
@click.argument("run")
@click.option("--filter", "pattern", metavar="GLOB", help="Only tensors whose names match this glob.")
@click.option("--all", "show_all", is_flag=True, help="Every numeric tensor, not only the weights.")
@click.option("--json", "as_json", is_flag=True, help="JSON: {checkpoints: [...], tensors: [...]}.")
@click.option("--plot", "plot_out", type=PATH, metavar="FILE.png", help="Also draw each layer's drift over steps.")
@scheduler_option
@progress_option
def runs_stats_command(
    run: str,
    pattern: str | None,
    show_all: bool,
    as_json: bool,
    plot_out: Path | None,
    scheduler: str | None,
    progress: bool | None,
) -> None:
    """Per checkpoint and tensor: norm, mean, std, NaNs, infinities, change from the previous and the first."""
    from weightscope.runs import plot_drift, run_stats

    if plot_out is not None:
        from weightscope.plot import _matplotlib

        _matplotlib()  # the install hint before any work
    result = run_stats(
        run, pattern=pattern, include_all=show_all, scheduler=scheduler, progress=_task_progress(progress)
    )
    if as_json:
        _echo(dumps_json(result.to_json()))
    else:
        rows = [
            [
                "-" if row.step is None else str(row.step),
                safe_text(Path(row.checkpoint).name),
                safe_text(row.name),
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
        _echo(render_table(header, rows, right=[0, 3, 4, 5, 6, 7, 8, 9]))
        _echo(
            f"{len(result.checkpoints)} checkpoints, {len(result.tensors)} tensors, {result.tasks} tasks "
            f"reading {format_bytes(result.bytes_read)}"
        )
    if plot_out is not None:
        written = plot_drift(result, plot_out)
        _note(f"wrote {safe_text(str(written))}")


@runs_group.command("find-nan")
@click.argument("run")
@click.option("--filter", "pattern", metavar="GLOB", help="Only tensors whose names match this glob.")
@click.option("--all", "show_all", is_flag=True, help="Every numeric tensor, not only the weights.")
@click.option("--json", "as_json", is_flag=True, help="A JSON list of {name, checkpoint, step, nans, infs}.")
@scheduler_option
@progress_option
def runs_find_nan_command(
    run: str, pattern: str | None, show_all: bool, as_json: bool, scheduler: str | None, progress: bool | None
) -> None:
    """Per tensor, the first checkpoint with NaNs or infinities; exit 1 if there is one, 0 if none."""
    from weightscope.runs import find_nan

    found = find_nan(run, pattern=pattern, include_all=show_all, scheduler=scheduler, progress=_task_progress(progress))
    if as_json:
        _echo(dumps_json([finding.to_json() for finding in found]))
    elif found:
        rows = [
            [
                safe_text(finding.name),
                "-" if finding.step is None else str(finding.step),
                safe_text(finding.checkpoint),
                str(finding.nans),
                str(finding.infs),
            ]
            for finding in found
        ]
        _echo(render_table(["tensor", "step", "first checkpoint", "NaN", "Inf"], rows, right=[1, 3, 4]))
    else:
        _echo("no NaNs or infinities in any checkpoint")
    if found:
        raise SystemExit(int(ExitStatus.DIFFERENT))


@runs_group.command("convert")
@click.argument("run")
@click.option(
    "--to",
    type=click.Choice(["safetensors", "pytorch", "npz", "keras", "tensorflow"]),
    default="safetensors",
    show_default=True,
    help="The format to write.",
)
@click.option("--out", type=PATH, required=True, metavar="DIR", help="The directory to write the files into.")
@click.option("--include-optimizer", is_flag=True, help="Also write optimizer state (weights only by default).")
@click.option("--json", "as_json", is_flag=True, help="A JSON list of {source, destination, tensors, nbytes}.")
@scheduler_option
@progress_option
def runs_convert_command(
    run: str,
    to: str,
    out: Path,
    include_optimizer: bool,
    as_json: bool,
    scheduler: str | None,
    progress: bool | None,
) -> None:
    """Convert every checkpoint of a run, a task per checkpoint, into DIR."""
    from weightscope.runs import run_convert

    # A stop signal raises here, in the main thread; the conversions under way in the workers
    # finish (Python joins them on the way out) and those not started do not: nothing is left
    # half-written.
    with interruptible():
        done = run_convert(
            run,
            out,
            to=to,
            scheduler=scheduler,
            progress=_task_progress(progress),
            include_optimizer=include_optimizer,
        )
    if as_json:
        _echo(dumps_json(done))
        return
    for entry in done:
        _echo(f"wrote {safe_text(entry['destination'])}: {entry['tensors']} tensors, {format_bytes(entry['nbytes'])}")


@cli.command("view")
@click.argument("path", type=CHECKPOINT)
@click.argument("path2", type=CHECKPOINT, required=False)
@click.option(
    "--port", type=click.IntRange(0, 65535), default=0, show_default=True, help="The port on 127.0.0.1 (0: a free one)."
)
@click.option("--no-browser", is_flag=True, help="Only print the address; do not open a browser.")
def view_command(path: Path, path2: Path | None, port: int, no_browser: bool) -> None:
    """Look at a checkpoint (or compare two) in the browser: layers, statistics, histograms, heatmaps, values.

    A local server on 127.0.0.1 with a random token in the address it prints; Ctrl-C stops it.
    """
    import contextlib

    from weightscope.viewer import serve

    with contextlib.ExitStack() as stack:
        checkpoints = [stack.enter_context(_open(item)) for item in (path, path2) if item is not None]
        serve(checkpoints, port, open_browser=not no_browser, echo=_echo)


@cli.command("formats")
@click.option("--json", "as_json", is_flag=True, help="A JSON list of {name, description, writable, missing}.")
def formats_command(as_json: bool) -> None:
    """The formats weightscope reads (and writes), and what any of them still needs."""
    from weightscope.formats import FORMATS

    rows: list[dict[str, Any]] = [
        {
            "name": entry.name,
            "description": entry.description,
            "writable": entry.writer is not None,
            "missing": entry.missing(),
        }
        for entry in FORMATS.values()
    ]
    if as_json:
        _echo(dumps_json(rows))
        return
    table = [
        [row["name"], "read, write" if row["writable"] else "read", row["missing"] or "ready", row["description"]]
        for row in rows
    ]
    _echo(render_table(["format", "can", "status", "what it is"], table))


@cli.command("history")
@click.argument("path", type=PATH)
@click.option("--json", "as_json", is_flag=True, help="A JSON list of {prefix, step, timestamp, newest, exists}.")
def history_command(path: Path, as_json: bool) -> None:
    """The checkpoints a directory's 'checkpoint' file lists, oldest first (* the newest)."""
    import datetime

    from weightscope.history import checkpoint_history

    entries = checkpoint_history(path)
    if as_json:
        document = [
            {
                "prefix": str(entry.prefix),
                "step": entry.step,
                "timestamp": entry.timestamp,
                "newest": entry.newest,
                "exists": entry.exists,
            }
            for entry in entries
        ]
        _echo(dumps_json(document))
        return
    rows = []
    for entry in entries:
        written = "-"
        if entry.timestamp is not None:
            written = datetime.datetime.fromtimestamp(entry.timestamp).astimezone().isoformat(timespec="seconds")
        rows.append(
            [
                "*" if entry.newest else "",
                "-" if entry.step is None else str(entry.step),
                written,
                safe_text(str(entry.prefix)) + ("" if entry.exists else "  (missing)"),
            ]
        )
    _echo(render_table(["", "step", "written", "checkpoint"], rows, right=[1]))


@cli.command("scan")
@click.argument("path", type=CHECKPOINT)
@click.option("--json", "as_json", is_flag=True, help="A JSON list of {opcode, name, allowed, count}.")
def scan_command(path: Path, as_json: bool) -> None:
    """List the globals and calls a PyTorch checkpoint's (or a plain pickle's) pickle names, without running any.

    Lists all it can follow, then exits as opening the file would: 6 when a name is outside
    the allow-list (opening would be refused), 4 when the file is damaged, 0 when it opens.
    """
    from weightscope.formats import FORMATS

    if FORMATS["pickle"].sniff(path) and not FORMATS["pytorch"].sniff(path):
        from weightscope.formats.pickle_files import scan
    else:
        from weightscope.formats.pytorch import scan

    entries = scan(path)
    if as_json:
        _echo(dumps_json([entry._asdict() for entry in entries]))
    else:
        for entry in entries:
            _echo(safe_text(str(entry)))
    refused = sum(not entry.allowed for entry in entries)
    if isinstance(entries.verdict, RefusedError):
        _note(f"{path}: {refused} refused: opening this file would run code")
        raise SystemExit(int(ExitStatus.REFUSED))
    if entries.verdict is not None:
        raise entries.verdict


@cli.command("demo")
@click.option("--engine", type=click.Choice(["numpy", "tensorflow"]), default="numpy", show_default=True)
@click.option("--out", type=PATH, default=Path("checkpoint/model.ckpt"), show_default=True)
@click.option("--steps", type=int, default=1000, show_default=True)
@click.option("--lr", "learning_rate", type=float, default=0.01, show_default=True)
@click.option("--hidden", type=int, default=5, show_default=True, help="Units of layer1.")
@click.option("--samples", type=int, default=5000, show_default=True)
@click.option("--seed", type=int, default=None, help="Seed for the samples and initial weights.")
@click.option("--init", type=PATH, default=None, help="Start from this checkpoint's variables.")
@click.option("--data", type=PATH, default=None, help="Train on this N×2 .npy array.")
@click.option("--all", "show_all", is_flag=True, help="Also print every variable.")
def demo_command(**options: Any) -> None:
    """The seed's program: train the 2-5-2 network, save a TensorFlow checkpoint, read it back."""
    from weightscope.demo import DemoOptions, run_demo

    run_demo(DemoOptions(**options), _echo)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        # Not cli.main(): it turns every EOFError into "Aborted!", and TruncatedFileError
        # is an EOFError.
        with cli.make_context("weightscope", list(args)) as context:  # click consumes its list
            cli.invoke(context)
    except click.exceptions.Exit as exit:
        return exit.exit_code
    except click.exceptions.ClickException as error:
        shown = io.StringIO()
        error.show(file=shown)
        _echo(shown.getvalue().removesuffix("\n"), err=True)
        return int(ExitStatus.USAGE)
    except (click.exceptions.Abort, KeyboardInterrupt) as error:
        _note("interrupted")
        return error.exit_status if isinstance(error, Interrupted) else 130  # 128 + the signal's number
    except (WeightscopeError, OSError) as error:
        if "--traceback" in args:  # the stack, escaped as everything else is, then the one line
            _echo(traceback.format_exc().removesuffix("\n"), err=True)
        if isinstance(error, BrokenPipeError):
            # Output piped into `head` and closed: not an error of ours.
            sys.stderr.close()
            return 0
        if isinstance(error, WeightscopeError):
            status, message = error.exit_status, str(error)
        else:  # the system's words and the file, not Python's "[Errno N] ...": a missing folder, a full disk
            status, message = os_error_status(error), reason(error)
        _note(f"error: {safe_text(message)}")
        return int(status)
    except SystemExit as exit:
        return exit.code if isinstance(exit.code, int) else 0
    except Exception:  # a bug of ours; its stack, whose messages may quote a file, escaped all the same
        _echo(traceback.format_exc().removesuffix("\n"), err=True)
        _note("error: an unexpected error (a bug in weightscope: please report it with the stack above)")
        return int(ExitStatus.ERROR)
    return 0


if __name__ == "__main__":  # pragma: no cover
    os._exit(main())
