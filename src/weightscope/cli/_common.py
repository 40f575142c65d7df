"""What every command shares: the path types, opening a checkpoint, counting kinds, showing a figure."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

import weightscope
from weightscope.checkpoint import Checkpoint
from weightscope.cli._environment import Environment
from weightscope.cli._output import Output
from weightscope.errors import UsageError
from weightscope.formats import FORMATS
from weightscope.output import safe_text
from weightscope.sources import as_path, local_path

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

PATH = click.Path(path_type=Path)


class _CheckpointPath(click.ParamType):
    """A checkpoint to read: a local ``Path``, or a URL (``s3://``, ``https://``, ...) as a ``RemotePath``."""

    name = "path"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return as_path(value)

    def shell_complete(self, ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        from click.shell_completion import CompletionItem  # completing only, not at every start

        return [CompletionItem(incomplete, type="file")]  # the shell completes file names, as for click.Path


CHECKPOINT = _CheckpointPath()


class _WritableFormat(click.Choice):
    """A format weightscope writes: the registry's, read when asked, so formats registered later are choices too."""

    def __init__(self) -> None:
        super().__init__(())

    @property
    def choices(self) -> tuple[str, ...]:
        return tuple(FORMATS.writable())

    @choices.setter
    def choices(self, value: Any) -> None:
        pass  # derived, never stored

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and value in FORMATS and FORMATS[value].writer:
            return value  # a format the registry holds: its plugins' entry points not read (some 30 ms) to say so
        return super().convert(value, param, ctx)


@contextmanager
def _open(
    path: Path, *, verify: bool = True, step: int | None = None, dequantize: bool = False
) -> Iterator[Checkpoint]:
    """The checkpoint at ``path``, closed on leaving; its notes (``Checkpoint.notes``) on stderr then; with
    ``dequantize`` its quantised weights each one tensor, read dequantised (``weightscope.quant``)."""
    if step is not None and local_path(path) is None:
        raise UsageError(f"{path}: --step picks from a local directory's history; name the remote checkpoint itself")
    if step is not None:
        from weightscope.steps import select_step

        path = select_step(path, step)
    with weightscope.open(path, verify=verify, dequantize=dequantize) as ckpt:
        try:
            yield ckpt
        finally:
            output = Output(click.get_current_context().ensure_object(Environment))
            for note in ckpt.notes:
                output.note(note)


def open_every_part(out: Output, ckpt: Checkpoint) -> None:
    """Open the parts of ``ckpt`` not yet open (a model folder's shards: what listing every tensor waits on, a
    request or more each when remote), with a bar counting them."""
    pending = ckpt.unopened_parts()
    if pending:
        with out.progress(0, pending, f"open {safe_text(ckpt.path.name)}", unit="shards") as bar:
            ckpt.open_parts(bar.advance)


dequantize_option = click.option(
    "--dequantize",
    is_flag=True,
    help="Read each weight stored quantised as several tensors (FP8 + scales, MXFP4, NVFP4, GPTQ, AWQ, "
    "bitsandbytes, compressed-tensors) as one tensor of its values, as its reference implementation dequantises it.",
)
step_option = click.option(
    "--step", type=int, default=None, help="From a directory's history, the checkpoint of this step."
)


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


def _only_in(*sides: tuple[str, list[str]]) -> Iterator[str]:
    """``only in SIDE: NAMES`` for each side of a comparison that holds tensors the other lacks."""
    for side, names in sides:
        if names:
            yield f"only in {side}: {', '.join(safe_text(name) for name in names)}"


def _count_kinds(kinds: Iterable[str], unit: str = "") -> str:
    """``1 bookkeeping tensor, 10 optimizer state tensors``: each kind's count, with ``unit`` (plural past one)."""
    return _counted(_tally(kinds), unit)


def _counted(tally: Mapping[str, int], unit: str = "") -> str:
    """``_count_kinds`` of kinds already counted (``_tally``)."""
    labels = {"optimizer": "optimizer state"}
    return ", ".join(
        f"{count} {labels.get(kind, kind)}" + (f" {unit}{'s' * (count != 1)}" if unit else "")
        for kind, count in tally.items()
    )


def _figure(value: float | int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.6g}"
