"""Integrity manifests on the command line: ``hash`` makes one, ``verify --manifest`` checks a checkpoint against it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from weightscope.cli._common import CHECKPOINT, _open, step_option
from weightscope.cli._output import Command, Output, Progress, examples, pass_output
from weightscope.errors import ExitStatus, WeightscopeError
from weightscope.manifest import TensorDigest, bookkeeping, compare, digests, load_manifest, manifest_json
from weightscope.output import format_shape, render_table, safe_text

if TYPE_CHECKING:
    from weightscope.checkpoint import Checkpoint


@click.command(
    "hash",
    cls=Command,
    short_help="SHA-256 of every tensor's values and of the whole model.",
    epilog=examples(
        "weightscope hash model.safetensors",
        "weightscope hash --json model.safetensors",
        "weightscope hash --step 1000 run/",
    ),
)
@click.argument("path", type=CHECKPOINT)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="The manifest: {kind, version, algorithm, path, format, model_sha256, tensors: {name: {dtype, shape, "
    "sha256}}}; save it and check a copy with 'weightscope verify --manifest FILE'.",
)
@step_option
@pass_output
def hash_command(out: Output, path: Path, step: int | None) -> None:
    """SHA-256 of each tensor's values (C order, little-endian: the same weights hash the same in every format) and
    of the whole model (over the sorted lines of name, dtype, shape and digest, bookkeeping left out; see
    weightscope.manifest).
    Save the --json manifest (`weightscope hash --json model.safetensors > model.manifest.json`) and check a copy
    with `weightscope verify --manifest model.manifest.json COPY`."""
    with _open(path, step=step) as ckpt, _bar(out, ckpt, "hash") as bar:
        tensors: dict[str, TensorDigest] = {}
        for found in digests(ckpt, bar.advance):
            if isinstance(found, WeightscopeError):
                raise found
            tensors[found.name] = found
        document = manifest_json(tensors, path=str(ckpt.path), format=ckpt.format, leave_out=bookkeeping(ckpt))
    out.result(document, _hash_text)


def _bar(out: Output, ckpt: Checkpoint, verb: str) -> contextlib.AbstractContextManager[Progress]:
    """The progress bar of hashing every tensor of ``ckpt``."""
    infos = list(ckpt.infos())
    return out.progress(sum(info.nbytes for info in infos), len(infos), f"{verb} {safe_text(ckpt.path.name)}")


def _hash_text(document: dict[str, Any]) -> Iterator[str]:
    rows = [
        [name, entry["dtype"], format_shape(entry["shape"]), entry["sha256"]]
        for name, entry in document["tensors"].items()
    ]
    yield render_table(["name", "dtype", "shape", "sha256"], rows)
    left_out = len(document["model_sha256_leaves_out"])
    yield f"model sha256 {document['model_sha256']} ({len(rows) - left_out} tensors" + (
        f"; {left_out} bookkeeping left out)" if left_out else ")"
    )


def verify_manifest(out: Output, path: Path, manifest: Path, step: int | None) -> None:
    """Check the checkpoint at ``path`` against ``manifest``: each tensor missing, extra, different or unreadable
    on a line; exit 4 (damaged) when any is."""
    expected = load_manifest(manifest)
    with _open(path, step=step) as ckpt, _bar(out, ckpt, "verify") as bar:
        result = compare(ckpt, expected, bar.advance)
    for name in result.missing:
        out.text(f"MISSING {safe_text(name)}")
    for name in result.extra:
        out.text(f"EXTRA {safe_text(name)}")
    for wanted, found in result.different:
        what = [
            f"{label} {mine}, manifest {theirs}"
            for label, mine, theirs in (
                ("dtype", found.dtype, wanted.dtype),
                ("shape", format_shape(found.shape), format_shape(wanted.shape)),
                ("sha256", found.sha256, wanted.sha256),
            )
            if mine != theirs
        ]
        out.text(f"DIFFERENT {safe_text(found.name)}: {'; '.join(what)}")
    for error in result.unreadable:
        out.text(f"DAMAGED {safe_text(str(error))}")
    if not result.ok:
        counts = (
            ("missing", result.missing),
            ("extra", result.extra),
            ("different", result.different),
            ("damaged", result.unreadable),
        )
        tally = ", ".join(f"{len(listed)} {label}" for label, listed in counts if listed)
        out.note(f"not as the manifest {manifest} says: {tally} ({result.matched} match)")
        raise SystemExit(int(ExitStatus.CORRUPT))
    out.text(f"OK: {result.matched} tensors match the manifest {safe_text(str(manifest))}")
