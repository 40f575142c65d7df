"""The one way a command's output reaches the terminal (huggingface_hub's ``cli/_output.py`` ``Output``).

A command makes its result once, as data; the sink prints it as JSON under ``--json``, else as
the lines a renderer makes of the same data (tables through ``render_table``). Notes go to
stderr in either mode (none under ``--quiet``, which keeps only ``alert``s: errors, and what the exit
status says), as does the progress bar of long work (``Output.progress``). Whatever a file put in a
name, no control character reaches the terminal: every line passes ``terminal_text``, every table
cell ``safe_text``.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple, TypeVar

import click

from weightscope.cli._environment import Environment
from weightscope.output import dumps_json, render_table, terminal_text

T = TypeVar("T")


class Output(NamedTuple):  # (not a frozen dataclass: its decorator cost every command ~0.3 ms of its start)
    """Where one command's output goes: ``env``'s streams, as JSON when ``as_json``."""

    env: Environment
    as_json: bool = False

    def result(
        self,
        data: T,
        human: Callable[[T], Iterable[str]],
        *,
        to_json: Callable[[T], Any] | None = None,
        indent: int | None = 2,
    ) -> None:
        """The command's result: under ``--json`` the JSON of ``data`` (of ``to_json(data)`` when
        given: only then is it made), else each text ``human(data)`` gives, as a line."""
        if self.as_json:
            self._line(dumps_json(data if to_json is None else to_json(data), indent=indent))
        else:
            for text in human(data):
                self._line(text)

    def records(
        self,
        records: Sequence[Mapping[str, Any]],
        header: Sequence[str],
        cells: Callable[[Mapping[str, Any]], Sequence[str]],
        *,
        right: Sequence[int] = (),
        empty: str | None = None,
    ) -> None:
        """A list of records: a JSON list, or a table of the cells ``cells`` makes of each (``empty``, when
        given, for none)."""

        def human(records: Sequence[Mapping[str, Any]]) -> list[str]:
            if not records and empty is not None:
                return [empty]
            return [render_table(header, [cells(record) for record in records], right=right)]

        self.result(records, human)

    def text(self, text: str = "") -> None:
        """A line of text for people (nothing under ``--json``, which prints only the result)."""
        if not self.as_json:
            self._line(text)

    def note(self, text: str) -> None:
        """``weightscope: text`` on stderr, in either mode; nothing under ``--quiet``."""
        if not self.env.quiet:
            self.alert(text)

    def alert(self, text: str) -> None:
        """``weightscope: text`` on stderr, ``--quiet`` or not: an error, or what the exit status reports."""
        self.env.write(terminal_text(f"weightscope: {text}") + "\n", err=True)

    @contextmanager
    def progress(
        self, total_bytes: int, total_tensors: int, label: str, *, unit: str = "tensors", shown: bool | None = None
    ) -> Iterator[Progress]:
        """The bar of long work, while it runs: ``total_bytes`` (0: unknown, the bar counts ``unit``) and
        ``total_tensors`` to do, ``label`` in front. Drawn on a terminal's stderr once the work has taken
        ``Environment.progress_delay`` seconds, and ended when it ends; never under ``--json`` or ``--quiet``,
        nor when stderr is no terminal, unless ``shown`` (a command's ``--progress/--no-progress``) says."""
        drawn = bool(self.env.stderr_isatty and not self.as_json and not self.env.quiet) if shown is None else shown
        progress = Progress(self, total_bytes, total_tensors, label, unit, drawn)
        try:
            yield progress
        finally:
            progress.close()

    def err(self, text: str) -> None:
        """``text`` on stderr as it is, a line (a progress line off a terminal, a stack), ``--quiet`` or not."""
        self.env.write(terminal_text(text) + "\n", err=True)

    def _line(self, text: str) -> None:
        self.env.write(terminal_text(text) + "\n")


class Progress:
    """What a command's bar counts, told by the library's callbacks from any thread: ``advance(tensors, nbytes)``
    (so many more done), ``__call__(tensors, total_tensors, nbytes, total_bytes)`` (done so far, of all: convert's)
    or ``tasks(done, total)`` (tasks done, of all). On a terminal tqdm's bar (the rate, the time left; tqdm is
    what ``huggingface_hub`` and ``pip``'s users see); elsewhere, when asked for, a line per tenth done."""

    def __init__(self, out: Output, total_bytes: int, total_tensors: int, label: str, unit: str, drawn: bool) -> None:
        self._out, self._unit, self._lock = out, unit, threading.Lock()
        self._tensors, self._nbytes = 0, 0
        self._totals = (total_tensors, total_bytes)
        self._percent = -1  # the tenth last reported off a terminal
        self._bar: Any = None
        if drawn and out.env.stderr_isatty:
            from tqdm import tqdm

            self._bar = tqdm(
                desc=out.env.encodable(terminal_text(label)),
                unit_divisor=1024,
                file=out.env.stderr,
                ncols=out.env.terminal_width,
                nrows=2,  # one bar, the first: tqdm hides bars below a terminal's height, 0 on a pty of no size
                delay=out.env.progress_delay,
                mininterval=0.1,
                postfix=self._counted() if total_bytes else None,
                **self._settings(),
            )
        self._lines = drawn and self._bar is None

    def _settings(self) -> dict[str, Any]:
        """What the bar counts: bytes when there are some to count, else tensors (or tasks)."""
        total_tensors, total_bytes = self._totals
        unit = "B" if total_bytes else f" {self._unit}"
        return {"total": total_bytes or total_tensors or None, "unit": unit, "unit_scale": bool(total_bytes)}

    def advance(self, tensors: int = 1, nbytes: int = 0) -> None:
        with self._lock:
            self._show(self._tensors + tensors, self._nbytes + nbytes)

    def __call__(self, tensors: int, total_tensors: int, nbytes: int, total_bytes: int) -> None:
        with self._lock:
            if (total_tensors, total_bytes) != self._totals:
                self._totals = (total_tensors, total_bytes)
                if self._bar is not None:
                    for setting, value in self._settings().items():
                        setattr(self._bar, setting, value)
            self._show(tensors, nbytes)

    def tasks(self, done: int, total: int) -> None:
        self(done, total, 0, 0)

    def _counted(self) -> str:
        return f"{self._tensors}/{self._totals[0]} {self._unit}"

    def _show(self, tensors: int, nbytes: int) -> None:
        counted = bool(self._totals[1])  # bytes, else tensors
        step = (nbytes - self._nbytes) if counted else (tensors - self._tensors)
        self._tensors, self._nbytes = tensors, nbytes
        if self._bar is not None:
            if counted:
                self._bar.set_postfix_str(self._counted(), refresh=False)
            self._bar.update(step)
        elif self._lines:
            done, total = (nbytes, self._totals[1]) if counted else (tensors, self._totals[0])
            percent = done * 100 // max(1, total) // 10 * 10
            if percent != self._percent:
                self._percent = percent
                self._out.err(f"weightscope: {self._counted()} ({percent}%)")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def examples(*lines: str) -> str:
    """A command's epilog: ``Examples:`` and each command line, as typed (``\\b``: click keeps the lines)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


def _show_help(context: click.Context, parameter: click.Parameter, value: bool) -> None:
    if value and not context.resilient_parsing:
        Output(context.ensure_object(Environment)).text(context.get_help())
        context.exit()


class Command(click.Command):
    """A command whose ``--help`` goes to the run's ``Environment``, as the rest of its output does."""

    def get_help_option(self, ctx: click.Context) -> click.Option | None:
        option = super().get_help_option(ctx)
        if option is not None:
            option.callback = _show_help
        return option


class Group(Command, click.Group):
    """A group of ``Command``s (and of such groups), its own ``--help`` theirs."""

    command_class = Command
    group_class = type  # click's way to say: groups of this class


def pass_output(command: Callable[..., T]) -> Callable[..., T]:
    """Call ``command`` with the run's ``Output`` first: to the ``Environment`` ``main`` was given
    (the process's when click runs the command itself), as JSON when its ``--json`` flag (the
    ``as_json`` argument, which the sink takes) was given."""

    @functools.wraps(command)
    def with_output(*args: Any, **kwargs: Any) -> T:
        env = click.get_current_context().ensure_object(Environment)
        return command(Output(env, as_json=kwargs.pop("as_json", False)), *args, **kwargs)

    return with_output
