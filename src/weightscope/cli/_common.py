"""What every command shares: the path types, the one way text reaches the terminal, opening a checkpoint."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import click

import weightscope
from weightscope.checkpoint import Checkpoint
from weightscope.errors import UsageError
from weightscope.formats import FORMATS
from weightscope.output import dumps_json, render_table, terminal_text
from weightscope.sources import as_path

PATH = click.Path(path_type=Path)


class _CheckpointPath(click.ParamType):
    """A checkpoint to read: a local ``Path``, or a URL (``s3://``, ``https://``, ...) as a ``RemotePath``."""

    name = "path"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return as_path(value)


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


@dataclass(frozen=True)
class Environment:
    """The terminal facts the commands depend on (httpie's ``Environment``): where text goes, and
    whether that is a terminal. ``main(argv, env=...)`` takes one, so a test swaps them without
    patching ``sys``. None: the process's own stream, as click writes to it."""

    stdout: IO[str] | None = None
    stderr: IO[str] | None = None

    @property
    def stderr_isatty(self) -> bool:
        return (sys.stderr if self.stderr is None else self.stderr).isatty()


_ENVIRONMENT: ContextVar[Environment | None] = ContextVar("weightscope_cli_environment", default=None)


def environment() -> Environment:
    """The environment ``main`` runs under (the process's own, outside ``main``)."""
    return _ENVIRONMENT.get() or Environment()


def _echo(text: str = "", *, err: bool = False, nl: bool = True, redraw: bool = False) -> None:
    """Everything the command writes passes here: whatever a file put in it, no control
    character reaches the terminal (cells are escaped first too, to keep tables aligned).
    ``redraw`` starts at the beginning of the line (a progress line drawn over itself)."""
    env = environment()
    click.echo(("\r" if redraw else "") + terminal_text(text), file=env.stderr if err else env.stdout, err=err, nl=nl)


@dataclass(frozen=True)
class Output:
    """Where a command's result goes (huggingface_hub's ``cli/_output.py``): the command makes its
    records once; with ``--json`` they are printed as a JSON list, else as a table of the cells
    ``cells`` makes of each record (or ``empty``, when given, for no records)."""

    as_json: bool

    def records(
        self,
        records: Sequence[Mapping[str, Any]],
        header: Sequence[str],
        cells: Callable[[Mapping[str, Any]], Sequence[str]],
        *,
        right: Sequence[int] = (),
        empty: str | None = None,
    ) -> None:
        if self.as_json:
            _echo(dumps_json(list(records)))
        elif records or empty is None:
            _echo(render_table(header, [cells(record) for record in records], right=right))
        else:
            _echo(empty)


def _note(text: str) -> None:
    _echo(f"weightscope: {text}", err=True)


@contextmanager
def _open(path: Path, *, verify: bool = True, step: int | None = None) -> Iterator[Checkpoint]:
    """The checkpoint at ``path``, closed on leaving; its notes (``Checkpoint.notes``) printed on stderr then."""
    if step is not None and not isinstance(path, Path):
        raise UsageError(f"{path}: --step picks from a local directory's history; name the remote checkpoint itself")
    if step is not None:
        from weightscope.history import select_step

        path = select_step(path, step)
    with weightscope.open(path, verify=verify) as ckpt:
        try:
            yield ckpt
        finally:
            for note in ckpt.notes:
                _note(note)


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


def _count_kinds(kinds: Iterable[str], unit: str = "") -> str:
    """``1 bookkeeping tensor, 10 optimizer state tensors``: each kind's count, with ``unit`` (plural past one)."""
    labels = {"optimizer": "optimizer state"}
    return ", ".join(
        f"{count} {labels.get(kind, kind)}" + (f" {unit}{'s' * (count != 1)}" if unit else "")
        for kind, count in _tally(kinds).items()
    )


def _figure(value: float | int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.6g}"
