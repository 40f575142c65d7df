"""Commands that read one checkpoint: ls, show, layers, verify, scan, formats, history."""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np

from weightscope.checkpoint import Checkpoint, TensorInfo
from weightscope.cli._common import (
    _VALUE_LABELS,
    CHECKPOINT,
    PATH,
    _counted,
    _open,
    _tally,
    dequantize_option,
    open_every_part,
    step_option,
)
from weightscope.cli._output import Command, Output, examples, pass_output
from weightscope.cli.shell import complete_tensor_names
from weightscope.errors import ExitStatus, RefusedError, UsageError, WeightscopeError
from weightscope.formats import FORMATS, scanner_for
from weightscope.output import format_bytes, format_shape, json_values, render_table, safe_text
from weightscope.sources import AnyPath

if TYPE_CHECKING:
    from weightscope.layers import TensorRole


def _row(ckpt: Checkpoint, info: TensorInfo, role: TensorRole) -> dict[str, Any]:
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


def _size(row: Mapping[str, Any]) -> str:
    """The tensor's bytes, and those it stores when it is a view repeating them."""
    stored = row.get("stored_nbytes")
    if stored is None or stored >= row["nbytes"]:
        return format_bytes(row["nbytes"])
    return f"{format_bytes(row['nbytes'])} (view of {format_bytes(stored)}, strides {row['strides']})"


@click.command(
    "ls",
    cls=Command,
    short_help="List a checkpoint's tensors: name, dtype, shape, size.",
    epilog=examples(
        "weightscope ls model.safetensors",
        "weightscope ls resnet18.pth --all --filter 'layer1.*'",
        "weightscope ls checkpoint/model.ckpt --json",
    ),
)
@click.argument("path", type=CHECKPOINT)
@click.option("--all", "show_all", is_flag=True, help="Also list optimizer state and bookkeeping.")
@click.option("--filter", "pattern", metavar="GLOB", help="Only names matching this glob.")
@click.option("--keys", "show_keys", is_flag=True, help="Also show the key each tensor is stored under.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="JSON: {path, format, tensors: [{name, dtype, shape, nbytes, role, kind}], hidden: {kind: count}, metadata}; "
    "a view adds strides and stored_nbytes; a quantised weight scheme, parts and bits_per_weight (--all: its parts).",
)
@step_option
@pass_output
def ls_command(out: Output, path: Path, show_all: bool, pattern: str | None, show_keys: bool, step: int | None) -> None:
    """List the tensors of a checkpoint: name, dtype, shape, size. A weight stored quantised as several tensors is
    listed once, as its scheme, parts and bits per weight (--all lists its parts as stored)."""
    from weightscope.quant import grouped

    with _open(path, step=step) as raw:
        open_every_part(out, raw)
        ckpt = raw if show_all else grouped(raw)
        quantized = getattr(ckpt, "quantized", {})
        infos = [info for info in ckpt.infos() if pattern is None or fnmatch.fnmatchcase(info.name, pattern)]
        shown: list[TensorInfo] = []
        rows: list[dict[str, Any]] = []
        hidden: list[str] = []  # the categories of the tensors left out
        for info in infos:
            role = ckpt.role(info.name)
            if show_all or role.kind == "parameter":
                shown.append(info)
                rows.append(_row(ckpt, info, role))
                weight = quantized.get(info.name)
                if weight is not None:
                    rows[-1].update(
                        scheme=weight.scheme, parts=list(weight.parts), bits_per_weight=round(weight.bits_per_weight, 3)
                    )
            else:
                hidden.append(role.category)
        listing = {
            "path": str(ckpt.path),
            "format": ckpt.format,
            "tensors": rows,
            "hidden": _tally(hidden),
            "metadata": ckpt.metadata,
            "notes": ckpt.notes,  # also on stderr, as for every command
        }
    labels = [  # the dtype column: a quantised type with the type read as; a scheme's bits and parts
        info.type_label + (f" ({row['bits_per_weight']:g} bits, {len(row['parts'])} parts)" if "parts" in row else "")
        for info, row in zip(shown, rows, strict=True)
    ]
    out.result(listing, lambda listing: _ls_text(listing, labels, show_keys))


def _ls_text(listing: Mapping[str, Any], labels: Sequence[str], show_keys: bool) -> Iterator[str]:
    rows = listing["tensors"]
    header = ["name", "dtype", "shape", "size"] + (["key"] if show_keys else [])
    cells = [
        [row["name"], label, format_shape(row["shape"]), _size(row)]
        + ([row.get("key", row["name"])] if show_keys else [])
        for row, label in zip(rows, labels, strict=True)
    ]
    yield render_table(header, cells, right=[3])
    values = dict.fromkeys(_VALUE_LABELS, 0)
    for row in rows:
        values[row["kind"]] += 0 if row["dtype"] == "string" else math.prod(row["shape"])
    counted = [
        f"{values[category]:,} {noun}{'s' * (values[category] != 1)}{note}"
        for category, (noun, note) in _VALUE_LABELS.items()
        if values[category]
    ]
    nbytes = sum(row["nbytes"] for row in rows)
    yield f"{len(rows)} tensors, {', '.join(counted or ['0 parameters'])}, {format_bytes(nbytes)}"
    if listing["hidden"]:
        yield f"hidden: {_counted(listing['hidden'], unit='tensor')} (--all shows them)"
    for key, value in listing["metadata"].items():
        # A model's whole config can be a metadata value: show its start.
        shown_value = value if len(value) <= 100 else f"{value[:100]}… ({len(value):,} characters)"
        yield f"metadata: {safe_text(key)} = {safe_text(shown_value)}"


@click.command(
    "show",
    cls=Command,
    short_help="Print tensor values, as numpy prints them.",
    epilog=examples(
        "weightscope show checkpoint/model.ckpt layer1/kernel layer1/bias",
        "weightscope show model.safetensors fc.weight --npy fc.npy",
        "weightscope show model.gguf blk.0.attn_q.weight --dequantize --json",
    ),
)
@click.argument("path", type=CHECKPOINT)
@click.argument("names", nargs=-1, required=True, shell_complete=complete_tensor_names)
@click.option("--json", "as_json", is_flag=True, help="Values as JSON, with dtype and shape.")
@click.option("--npy", type=PATH, metavar="OUT", help="Save the (single) tensor as a .npy file.")
@click.option("--no-verify", is_flag=True, help="Skip checksum verification.")
@dequantize_option
@step_option
@pass_output
def show_command(
    out: Output,
    path: Path,
    names: Sequence[str],
    npy: Path | None,
    no_verify: bool,
    dequantize: bool,
    step: int | None,
) -> None:
    """Print tensor values as numpy prints them. A role name (layer1/weight) works too."""
    if npy is not None and len(names) != 1:
        raise UsageError("--npy saves one tensor; name exactly one")
    with _open(path, verify=not no_verify, step=step, dequantize=dequantize) as ckpt:
        resolved = []
        for name in names:
            actual = ckpt.resolve(name)
            if safe_text(actual) != safe_text(name):  # not a name asked for as printed
                from weightscope.layers import naming_convention  # (a role's name given): not at every start

                convention = naming_convention(actual) if name not in ckpt else None  # else an alias (a tied head)
                reason = f" ({convention})" if convention else ""
                out.note(f"'{safe_text(name)}' is '{safe_text(actual)}' in this checkpoint{reason}")
            resolved.append(actual)
        if npy is not None:
            _save_npy(ckpt[resolved[0]], npy)
            out.note(f"saved '{safe_text(resolved[0])}' to {npy}")
            return
        # Each tensor is read as it is shown: what a damaged one stops comes after it.
        out.result(
            resolved, lambda names: _values_text(ckpt, names), to_json=lambda names: _values(ckpt, names), indent=None
        )


def _values(ckpt: Checkpoint, names: Sequence[str]) -> dict[str, Any]:
    document = {}
    for name in names:
        info = ckpt.info(name)
        document[name] = {"dtype": info.type_name, "shape": list(info.shape), "values": json_values(ckpt[name])}
    return document


def _values_text(ckpt: Checkpoint, names: Sequence[str]) -> Iterator[str]:
    for name in names:
        if len(names) > 1:
            yield f"{safe_text(name)}:"
        yield str(ckpt[name])


def _save_npy(array: np.ndarray, out: Path) -> None:
    if array.dtype.kind == "O":
        raise UsageError("string tensors cannot be saved as .npy without pickling; use --json")
    from weightscope.atomic import atomic_write

    with atomic_write(out) as handle:
        np.save(handle, array, allow_pickle=False)


@click.command(
    "layers",
    cls=Command,
    short_help="One row per layer: weight, bias, parameter count.",
    epilog=examples(
        "weightscope layers resnet18.pth",
        "weightscope layers checkpoint/ --step 1000 --json",
    ),
)
@click.argument("path", type=CHECKPOINT)
@click.option("--json", "as_json", is_flag=True, help="A JSON list of layers.")
@step_option
@pass_output
def layers_command(out: Output, path: Path, step: int | None) -> None:
    """One row per layer: weight and bias shapes, where they came from, parameter count."""
    with _open(path, step=step) as ckpt:
        open_every_part(out, ckpt)
        layers = [
            {
                "layer": layer.name,
                "parameters": {role: _row(ckpt, info, ckpt.role(info.name)) for role, info in layer.parameters.items()},
                "parameter_count": layer.parameter_count,
                "buffer_count": layer.buffer_count,
                "optimizer_state": {
                    owner: {slot: info.name for slot, info in slots.items()}
                    for owner, slots in layer.optimizer_state.items()
                },
            }
            for layer in ckpt.layers().values()
        ]
    out.result(layers, _layers_text)


def _layers_text(layers: Sequence[Mapping[str, Any]]) -> Iterator[str]:
    def shaped(row: Mapping[str, Any] | None) -> str:
        return f"{format_shape(row['shape'])} {row['name']}" if row else "-"

    buffers = any(layer["buffer_count"] for layer in layers)
    rows = []
    for layer in layers:
        parameters = layer["parameters"]
        others = [
            f"{role} {format_shape(row['shape'])}" for role, row in parameters.items() if role not in ("weight", "bias")
        ]
        rows.append(
            [
                layer["layer"],
                shaped(parameters.get("weight")),
                shaped(parameters.get("bias")),
                ", ".join(others) or "-",
                f"{layer['parameter_count']:,}",
                *([f"{layer['buffer_count']:,}"] if buffers else []),
                str(sum(len(slots) for slots in layer["optimizer_state"].values())),
            ]
        )
    header = ["layer", "weight", "bias", "other", "parameters", *(["buffers"] if buffers else []), "optimizer tensors"]
    yield render_table(header, rows, right=list(range(4, len(header))))
    totals = f"{len(layers)} layers, {sum(layer['parameter_count'] for layer in layers):,} parameters"
    if buffers:
        totals += f", {sum(layer['buffer_count'] for layer in layers):,} buffer values (running statistics)"
    yield totals


@click.command(
    "verify",
    cls=Command,
    short_help="Read every tensor, check every checksum; exit 4 if damaged.",
    epilog=examples(
        "weightscope verify checkpoint/model.ckpt",
        "weightscope verify llama/   # a model folder: every shard",
        "weightscope -q verify model.safetensors   # the verdict only",
    ),
)
@click.argument("path", type=CHECKPOINT)
@click.option(
    "--manifest",
    type=PATH,
    metavar="FILE",
    help="Check each tensor's SHA-256 against this manifest ('weightscope hash --json' makes one).",
)
@step_option
@pass_output
def verify_command(out: Output, path: Path, manifest: Path | None, step: int | None) -> None:
    """Check every block and tensor checksum; exit non-zero naming what is damaged.

    Formats without checksums (safetensors, GGUF, .npy, ONNX, HDF5, legacy PyTorch) have each
    tensor read and checked against the file's bounds and its declared size, and say so. With
    --manifest, every tensor is hashed and held against the manifest: missing, extra and different
    tensors are listed (exit 4 when any is)."""
    if manifest is not None:
        from weightscope.cli.hashing import verify_manifest

        verify_manifest(out, path, manifest, step)
        return
    with _open(path, step=step) as ckpt:
        count = len(ckpt)
        try:
            total = sum(info.nbytes for info in ckpt.infos())
        except WeightscopeError:  # a damaged shard has no infos to sum: verify names it, and reads on
            total = 0
        with out.progress(total, count, f"verify {path.name}") as bar:
            problems = ckpt.verify(bar.advance)
        files = ckpt.checked_files()
    for problem in problems:
        out.text(f"DAMAGED {safe_text(str(problem))}")
    if problems:
        out.alert(f"{len(problems)} of {count} tensors damaged")
        raise SystemExit(int(ExitStatus.CORRUPT))
    out.text(f"OK: {count} tensors, {format_bytes(total)} {_what_verify_checked(files)}")


def _what_verify_checked(files: list[tuple[AnyPath, str, str]]) -> str:
    """What ``verify`` checked in ``files`` (path, format, checksums): checksums where they have them, else only
    that each tensor is within its file and of its declared size; a model folder's shards grouped by format."""
    unchecked_text = "so changed values cannot be detected"
    if not files:
        return "read: there is no shard to check (the index names none)"
    if len(files) == 1:
        ((_, kind, checksums),) = files
        if checksums:
            return "verified"
        return (
            "read, each within the file and of its declared size; "
            f"no checksums checked: this {kind} file has none, {unchecked_text}"
        )
    groups: dict[tuple[str, str], list[str]] = {}
    for file, kind, checksums in files:
        groups.setdefault((kind, checksums), []).append(safe_text(file.name))
    mixed = len({bool(checksums) for _, checksums in groups}) > 1

    def shards(kind: str, names: list[str]) -> str:
        listed = f" ({', '.join(names)})" if mixed else ""
        return f"the {len(names)} {kind} shard{'s' if len(names) > 1 else ''}{listed}"

    checked = [f"{checksums} in {shards(kind, names)}" for (kind, checksums), names in groups.items() if checksums]
    unchecked = [shards(kind, names) for (kind, checksums), names in groups.items() if not checksums]
    if not unchecked:
        return f"verified: {'; '.join(checked)} checked"
    within = "read, each within its shard and of its declared size; "
    if checked:
        return f"{within}{'; '.join(checked)} checked; no checksums in {', '.join(unchecked)}, {unchecked_text} there"
    return f"{within}no checksums checked: {' and '.join(unchecked)} have none, {unchecked_text}"


@click.command(
    "formats",
    cls=Command,
    short_help="The formats weightscope reads and writes.",
    epilog=examples(
        "weightscope formats",
        "weightscope formats --json",
    ),
)
@click.option("--json", "as_json", is_flag=True, help="A JSON list of {name, description, writable, missing}.")
@pass_output
def formats_command(out: Output) -> None:
    """The formats weightscope reads (and writes), and what any of them still needs."""
    rows: list[dict[str, Any]] = [
        {
            "name": entry.name,
            "description": entry.description,
            "writable": entry.writer is not None,
            "missing": entry.missing(),
        }
        for entry in FORMATS.values()
    ]
    out.records(
        rows,
        ["format", "can", "status", "what it is"],
        lambda row: [
            row["name"],
            "read, write" if row["writable"] else "read",
            row["missing"] or "ready",
            row["description"],
        ],
    )


@click.command(
    "history",
    cls=Command,
    short_help="The checkpoints of a training directory, oldest first.",
    epilog=examples(
        "weightscope history checkpoint/",
        "weightscope history runs/ --json",
    ),
)
@click.argument("path", type=PATH)
@click.option("--json", "as_json", is_flag=True, help="A JSON list of {prefix, step, timestamp, newest, exists}.")
@pass_output
def history_command(out: Output, path: Path) -> None:
    """The checkpoints a directory's 'checkpoint' file lists, else those of the run in it (DeepSpeed's
    global_stepN/ folders, an Orbax manager's steps), oldest first (* the newest)."""
    import datetime

    from weightscope.steps import run_history

    def cells(entry: Mapping[str, Any]) -> list[str]:
        written = "-"
        if entry["timestamp"] is not None:
            written = datetime.datetime.fromtimestamp(entry["timestamp"]).astimezone().isoformat(timespec="seconds")
        return [
            "*" if entry["newest"] else "",
            "-" if entry["step"] is None else str(entry["step"]),
            written,
            entry["prefix"] + ("" if entry["exists"] else "  (missing)"),
        ]

    records = [
        {
            "prefix": str(entry.prefix),
            "step": entry.step,
            "timestamp": entry.timestamp,
            "newest": entry.newest,
            "exists": entry.exists,
        }
        for entry in run_history(path)
    ]
    out.records(records, ["", "step", "written", "checkpoint"], cells, right=[1])


@click.command(
    "scan",
    cls=Command,
    short_help="List what a pickle would import and call, running none.",
    epilog=examples(
        "weightscope scan pytorch_model.bin",
        "weightscope scan downloaded.pt --json",
    ),
)
@click.argument("path", type=CHECKPOINT)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="A JSON list of {opcode, name, allowed, count}, then {note} lines (a TorchScript archive's members).",
)
@pass_output
def scan_command(out: Output, path: Path) -> None:
    """List the globals and calls a PyTorch checkpoint's (or a plain pickle's, a DCP folder's .metadata, a TorchScript
    archive's) pickle names, without running any; a TorchScript archive's other members (code/, extra/) are listed
    too, its code neither run nor interpreted.

    Lists all it can follow, then exits as opening the file would: 6 when a name is outside
    the allow-list (opening would be refused), 4 when the file is damaged, 0 when it opens.
    A model folder (or a set's index, or one shard) has each of its weight files scanned; a folder a format with
    a scan of its own claims (a DeepSpeed checkpoint) is scanned by it, as one.
    """
    from weightscope.formats.model_folder import weight_files

    files = [path] if FORMATS.folder_checkpoint(path) else weight_files(path)  # a DCP folder: its .metadata
    scanned = []
    with out.progress(0, len(files), f"scan {path.name}", unit="files") as bar:
        for file in files:
            scanned.append((file, scanner_for(file)(file)))
            bar.advance()

    def lines(scanned: list[tuple[Any, Any]]) -> Iterator[str]:
        for file, entries in scanned:
            if len(files) > 1:
                yield f"{safe_text(str(file))}:"
            for line in (*entries, *entries.notes):
                yield ("  " if len(files) > 1 else "") + safe_text(str(line))

    out.result(
        scanned,
        lines,
        to_json=lambda scanned: [
            (entry if isinstance(entry, dict) else entry._asdict()) | ({"file": str(file)} if len(files) > 1 else {})
            for file, entries in scanned
            for entry in (*entries, *({"note": note} for note in entries.notes))
        ],
    )
    refused = [(file, entries) for file, entries in scanned if isinstance(entries.verdict, RefusedError)]
    for file, entries in refused:
        out.alert(f"{file}: {sum(not entry.allowed for entry in entries)} refused: opening this file would run code")
    if refused:
        raise SystemExit(int(ExitStatus.REFUSED))
    for _, entries in scanned:
        if entries.verdict is not None:
            raise entries.verdict
