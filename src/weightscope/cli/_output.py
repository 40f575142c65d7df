"""The one way a command's output reaches the terminal (huggingface_hub's ``cli/_output.py`` ``Output``).

A command makes its result once, as data; the sink prints it as JSON under ``--json``, else as
the lines a renderer makes of the same data (tables through ``render_table``). Notes go to
stderr in either mode. Whatever a file put in a name, no control character reaches the
terminal: every line passes ``terminal_text``, every table cell ``safe_text``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from weightscope.cli._environment import Environment
from weightscope.output import dumps_json, render_table, terminal_text

T = TypeVar("T")


@dataclass(frozen=True)
class Output:
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
        """``weightscope: text`` on stderr, in either mode."""
        self.env.write(terminal_text(f"weightscope: {text}") + "\n", err=True)

    def err(self, text: str = "", *, redraw: bool = False, end: bool = True) -> None:
        """``text`` on stderr as it is (a progress line, a stack); ``redraw`` draws it over the line
        before, ``end=False`` leaves the line open for the next one."""
        self.env.write(("\r" if redraw else "") + terminal_text(text) + ("\n" if end else ""), err=True)

    def _line(self, text: str) -> None:
        self.env.write(terminal_text(text) + "\n")


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
