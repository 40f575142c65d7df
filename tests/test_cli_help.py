"""Help that teaches: every command's --help says its purpose in a line, describes every option, and shows
examples that are real command lines (each parsed by click as the shell would hand it over)."""

from __future__ import annotations

import io
import itertools
import shlex
from collections.abc import Iterator

import click
import pytest

from weightscope.cli import Environment, cli, main

SHORT = 60  # what fits beside the command names in an 80-column 'weightscope --help'


def _commands(group: click.Group = cli, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """The root, and every command under it, groups walked down, with the words that name it."""
    yield path, group
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


COMMANDS = dict(_commands())


def _help(path: tuple[str, ...]) -> str:
    out, err = io.StringIO(), io.StringIO()
    assert main([*path, "--help"], env=Environment(stdout=out, stderr=err, terminal_width=80)) == 0, err.getvalue()
    return out.getvalue()


def _examples(text: str) -> list[str]:
    lines = text.split("Examples:\n", 1)[1].splitlines() if "Examples:\n" in text else []
    return [line.strip() for line in lines if line.strip().startswith("weightscope ")]


def _parse(line: str) -> tuple[tuple[str, ...], click.Context | None]:
    """The command an example runs (the words naming it) and its context, made by click from the example's
    words: every argument and option checked (types, choices, required ones); None for a --help example."""
    words = shlex.split(line, comments=True)
    assert words.pop(0) == "weightscope"
    flags = list(itertools.takewhile(lambda word: word.startswith("-"), words))  # the root's own options
    words = words[len(flags) :]
    context = cli.make_context("weightscope", [*flags, words[0]])
    command: click.Command = cli
    path: tuple[str, ...] = ()
    while isinstance(command, click.Group):
        name = words.pop(0)
        assert name in command.commands, f"{line}: no command {name!r}"
        command, path = command.commands[name], (*path, name)
        mine = words[:1] if isinstance(command, click.Group) else list(words)  # a copy: click consumes it
        try:
            context = command.make_context(name, mine, parent=context)
        except click.exceptions.Exit as exit:  # --help: shown, and done
            assert exit.exit_code == 0 and words == ["--help"], line
            return path, None
    return path, context


@pytest.mark.parametrize("path", list(COMMANDS), ids=lambda path: " ".join(path) or "weightscope")
def test_every_command_teaches_by_its_help(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    command = COMMANDS[path]
    if path:  # the root has no line in a list
        short = command.get_short_help_str(limit=SHORT)
        assert short and not short.endswith("...") and len(short) <= SHORT, short
    bare = [option.opts for option in command.params if isinstance(option, click.Option) and not option.help]
    assert not bare, f"options without help: {bare}"
    text = _help(path)
    examples = _examples(text)
    assert len(examples) >= 2 and all(len(example) <= 74 for example in examples), text  # 80 columns, indented
    for example in examples:
        named, context = _parse(example)
        # A command's examples run it; the root's and a group's, commands under them.
        assert named[: len(path)] == path and (named == path or isinstance(command, click.Group)), example
        if context is not None:
            context.close()
    capsys.readouterr()  # a --help example's help, printed by click


def test_the_command_list_is_one_line_each_at_80_columns() -> None:
    text = _help(())
    listed = text.split("Commands:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert len(listed) == len(cli.commands) and all(len(line) <= 78 for line in listed), listed
    assert not any(line.endswith("...") for line in listed)


def test_the_parser_of_examples_refuses_what_click_refuses() -> None:
    """The check above can fail: a missing argument, a bad choice, an unknown option or command are caught."""
    for wrong in (
        "weightscope stats",
        "weightscope plot model.pt fc.weight --kind pie --out x.png",
        "weightscope ls model.pt --no-such-option",
        "weightscope runs stat checkpoint/",
    ):
        with pytest.raises((click.UsageError, AssertionError)):
            _parse(wrong)
    assert _parse("weightscope -q runs stats checkpoint/ --json")[0] == ("runs", "stats")


def test_demo_says_what_it_does() -> None:
    text = _help(("demo",))
    assert "the seed's program" not in text and "2-5-2 autoencoder" in text and "layer1's kernel and bias" in text
