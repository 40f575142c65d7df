"""Commands that read one checkpoint: ls, show, layers, verify, scan, formats, history."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np

from weightscope.checkpoint import Checkpoint, TensorInfo
from weightscope.cli._common import (
    _VALUE_LABELS,
    CHECKPOINT,
    PATH,
    Output,
    _count_kinds,
    _echo,
    _note,
    _open,
    _tally,
    step_option,
)
from weightscope.errors import ExitStatus, RefusedError, UsageError
from weightscope.formats import FORMATS, scanner_for
from weightscope.layers import naming_convention
from weightscope.output import dumps_json, format_bytes, format_shape, json_values, render_table, safe_text


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


@click.command("ls")
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


@click.command("show")
@click.argument("path", type=CHECKPOINT)
@click.argument("names", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Values as JSON, with dtype and shape.")
@click.option("--npy", type=PATH, metavar="OUT", help="Save the (single) tensor as a .npy file.")
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
                convention = naming_convention(actual) if name not in ckpt else None  # else an alias (a tied head)
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


@click.command("layers")
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


@click.command("verify")
@click.argument("path", type=CHECKPOINT)
@step_option
def verify_command(path: Path, step: int | None) -> None:
    """Check every block and tensor checksum; exit non-zero naming what is damaged.

    Formats without checksums (safetensors, GGUF, .npy, ONNX, HDF5, legacy PyTorch) have each
    tensor read and checked against the file's bounds and its declared size, and say so."""
    with _open(path, step=step) as ckpt:
        problems = ckpt.verify()
        count = len(ckpt)
        total = 0 if problems else sum(info.nbytes for info in ckpt.infos())  # a damaged shard has no infos to sum
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


@click.command("formats")
@click.option("--json", "as_json", is_flag=True, help="A JSON list of {name, description, writable, missing}.")
def formats_command(as_json: bool) -> None:
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
    Output(as_json).records(
        rows,
        ["format", "can", "status", "what it is"],
        lambda row: [
            row["name"],
            "read, write" if row["writable"] else "read",
            row["missing"] or "ready",
            row["description"],
        ],
    )


@click.command("history")
@click.argument("path", type=PATH)
@click.option("--json", "as_json", is_flag=True, help="A JSON list of {prefix, step, timestamp, newest, exists}.")
def history_command(path: Path, as_json: bool) -> None:
    """The checkpoints a directory's 'checkpoint' file lists, oldest first (* the newest)."""
    import datetime

    from weightscope.history import checkpoint_history

    def cells(entry: Mapping[str, Any]) -> list[str]:
        written = "-"
        if entry["timestamp"] is not None:
            written = datetime.datetime.fromtimestamp(entry["timestamp"]).astimezone().isoformat(timespec="seconds")
        return [
            "*" if entry["newest"] else "",
            "-" if entry["step"] is None else str(entry["step"]),
            written,
            safe_text(entry["prefix"]) + ("" if entry["exists"] else "  (missing)"),
        ]

    records = [
        {
            "prefix": str(entry.prefix),
            "step": entry.step,
            "timestamp": entry.timestamp,
            "newest": entry.newest,
            "exists": entry.exists,
        }
        for entry in checkpoint_history(path)
    ]
    Output(as_json).records(records, ["", "step", "written", "checkpoint"], cells, right=[1])


@click.command("scan")
@click.argument("path", type=CHECKPOINT)
@click.option("--json", "as_json", is_flag=True, help="A JSON list of {opcode, name, allowed, count}.")
def scan_command(path: Path, as_json: bool) -> None:
    """List the globals and calls a PyTorch checkpoint's (or a plain pickle's) pickle names, without running any.

    Lists all it can follow, then exits as opening the file would: 6 when a name is outside
    the allow-list (opening would be refused), 4 when the file is damaged, 0 when it opens.
    A model folder (or a set's index, or one shard) has each of its weight files scanned.
    """
    from weightscope.formats.model_folder import weight_files

    files = weight_files(path)
    scanned = [(file, scanner_for(file)(file)) for file in files]
    if as_json:
        _echo(
            dumps_json([entry._asdict() | _scanned_file(file, files) for file, entries in scanned for entry in entries])
        )
    else:
        for file, entries in scanned:
            if len(files) > 1:
                _echo(f"{safe_text(str(file))}:")
            for entry in entries:
                _echo(("  " if len(files) > 1 else "") + safe_text(str(entry)))
    refused = [(file, entries) for file, entries in scanned if isinstance(entries.verdict, RefusedError)]
    for file, entries in refused:
        _note(f"{file}: {sum(not entry.allowed for entry in entries)} refused: opening this file would run code")
    if refused:
        raise SystemExit(int(ExitStatus.REFUSED))
    for _, entries in scanned:
        if entries.verdict is not None:
            raise entries.verdict


def _scanned_file(file: Any, files: Sequence[Any]) -> dict[str, str]:
    """The ``file`` key of a scan's JSON entry, where several files were scanned."""
    return {"file": str(file)} if len(files) > 1 else {}
