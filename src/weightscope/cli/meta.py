"""The meta command: show a checkpoint's metadata; set and delete safetensors and GGUF metadata in place."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import Any

import click

from weightscope.cli._common import CHECKPOINT
from weightscope.cli._output import Command, Output, examples, pass_output
from weightscope.errors import UsageError
from weightscope.formats.gguf import GGUF_TYPES
from weightscope.metadata_edit import MetadataEntry, edit_metadata, read_metadata
from weightscope.output import render_table
from weightscope.sources import AnyPath, local_path

SHOWN_CHARACTERS = 100  # of a long value (a whole tokenizer or config) on the screen; --json has it all


def _pair(text: str, option: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not equals:
        raise UsageError(f"{option} takes KEY=VALUE, not '{text}'")
    return key, value


@click.command(
    "meta",
    cls=Command,
    short_help="Show metadata; edit safetensors/GGUF metadata in place.",
    epilog=examples(
        "weightscope meta model.safetensors",
        "weightscope meta model.safetensors --set author=me --delete format",
        "weightscope meta model.gguf --set t.seed=7 --type t.seed=uint32",
    ),
)
@click.argument("path", type=CHECKPOINT)
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE", help="Set a metadata value (repeatable).")
@click.option("--delete", "deletions", multiple=True, metavar="KEY", help="Delete a metadata key (repeatable).")
@click.option(
    "--type",
    "types",
    multiple=True,
    metavar="[KEY=]TYPE",
    help=f"GGUF: the type of a --set value ({', '.join(GGUF_TYPES)}, or array[TYPE], whose value is a JSON array: "
    "'[1, 2]'); KEY=TYPE for one key, TYPE for every key set. Default: the existing key's type, string for a new "
    "key.",
)
@click.option("--copy", is_flag=True, help="Write a new file and rename it into place even when the header fits.")
@click.option(
    "--json", "as_json", is_flag=True, help="JSON: {path, format, metadata: [{key, type, value, length}], written}."
)
@pass_output
def meta_command(
    out: Output,
    path: AnyPath,
    assignments: Sequence[str],
    deletions: Sequence[str],
    types: Sequence[str],
    copy: bool,
) -> None:
    """Show a checkpoint's metadata; with --set/--delete, edit a safetensors file's __metadata__ or a GGUF file's
    key/values without rewriting the weights: the header alone is rewritten in place when the tensor data need not
    move, else the file is copied to a new one renamed into place (which of the two happened is said)."""
    written: dict[str, Any] | None = None
    if assignments or deletions:
        local = local_path(path)
        if local is None:
            raise UsageError(f"{path}: meta edits local files only")
        typed = dict(_pair(text, "--type") if "=" in text else ("", text) for text in types)
        result = edit_metadata(local, [_pair(text, "--set") for text in assignments], list(deletions), typed, copy=copy)
        out.note(result.reason)
        format, entries = result.format, result.entries
        written = {"in_place": result.in_place, "bytes": result.written}
    else:
        if types or copy:
            raise UsageError("--type and --copy go with --set or --delete")
        format, entries = read_metadata(path)
    listed = [{field: value for field, value in asdict(entry).items() if field != "length" or value is not None}
              for entry in entries]  # fmt: skip
    document: dict[str, Any] = {"path": str(path), "format": format, "metadata": listed}
    if written is not None:
        document["written"] = written
    out.result(document, lambda document: _meta_text(entries, format))


def _shown(entry: MetadataEntry) -> str:
    if entry.length is not None and entry.value is None:
        return f"[{entry.length:,} {entry.type.removeprefix('array[').removesuffix(']')} values]"
    text = str(entry.value)
    return text if len(text) <= SHOWN_CHARACTERS else f"{text[:SHOWN_CHARACTERS]}… ({len(text):,} characters)"


def _meta_text(entries: Sequence[MetadataEntry], format: str) -> Iterator[str]:
    if not entries:
        yield f"no metadata (a {format} checkpoint)"
        return
    if any(entry.type != "string" for entry in entries):  # typed values (GGUF's): their types shown
        yield render_table(["key", "type", "value"], [[entry.key, entry.type, _shown(entry)] for entry in entries])
    else:
        yield render_table(["key", "value"], [[entry.key, _shown(entry)] for entry in entries])
