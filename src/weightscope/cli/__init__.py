"""The ``weightscope`` command: thin functions over the library.

Each command opens a checkpoint, asks the library, and hands the answer, as data, to the
``Output`` sink (``_output.py``), which prints it as a table or text or, with ``--json``, as
JSON, on the streams of the ``Environment`` (``_environment.py``) ``main`` runs in. ``main``
turns every ``WeightscopeError`` into one line on stderr and the exit status of its kind;
``--traceback`` shows the stack instead.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib
import io
import sys
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from typing import Any

import click

import weightscope
from weightscope.cli._environment import Environment
from weightscope.cli._output import Group, Output, examples
from weightscope.errors import ExitStatus, WeightscopeError, os_error_status, reason
from weightscope.output import safe_text

__all__ = ["Environment", "cli", "main"]


def _cap_callback(variable: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """An option's callback setting ``variable`` (``weightscope.limits``) for this command, as if set outside."""

    def set_variable(context: click.Context, parameter: click.Parameter, value: Any) -> Any:
        if value is not None:
            from weightscope.limits import parse_size

            try:
                parse_size(str(value))
            except ValueError as error:
                raise click.BadParameter(str(error)) from None
            context.call_on_close(Environment.export(variable, str(value)))
        return value

    return set_variable


def _show_version(context: click.Context, parameter: click.Parameter, value: bool) -> None:
    if value and not context.resilient_parsing:
        Output(context.ensure_object(Environment)).text(f"weightscope, version {weightscope.__version__}")
        context.exit()


@click.group(
    cls=Group,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=examples(
        "weightscope ls model.safetensors",
        "weightscope diff checkpoint/model.ckpt model.pt",
        "weightscope convert model.ckpt model.safetensors --layout pytorch",
        "weightscope stats --help   # any command: its options and examples",
    ),
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_show_version,
    help="Show the version and exit.",
)
@click.option("--traceback", is_flag=True, help="Show the Python traceback of an error.")
@click.option(
    "-q",
    "--quiet",
    is_flag=True,
    help="No progress bars and no notes on stderr: only the results, and errors (a command's --progress still "
    "draws its bar).",
)
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
@click.pass_context
def cli(context: click.Context, traceback: bool, quiet: bool) -> None:
    """Read the weights of neural-network checkpoints, without their frameworks."""
    if quiet:  # the commands' contexts, made after this runs, take the object from here
        context.obj = dataclasses.replace(context.ensure_object(Environment), quiet=True)


def main(argv: Sequence[str] | None = None, env: Environment | None = None) -> int:
    """Run the command line on ``argv`` (default: the process's arguments) in ``env`` (default:
    the process's streams and terminal); returns the exit status. Under click's completion protocol
    (``env.completion``) it answers the shell instead (``weightscope.cli.shell``)."""
    if argv is None:
        # The process's own command: what its start imported (modules, classes, functions: ~23,000 objects for
        # ``show``, kept to the end) is taken out of the collector's passes. Each full pass walked them again, and
        # the interpreter's passes at exit took ~8 ms of a 100 ms command (objects made later are collected).
        gc.freeze()
    env = env or Environment()
    if env.completion:
        from weightscope.cli import shell

        return shell.respond(cli, env.completion, env)
    status = _run(list(sys.argv[1:] if argv is None else argv), env)
    if argv is None:
        gc.freeze()  # and what the command imported and kept: the passes at exit skip it too (~0.7 ms of a show)
    return status


def _run(args: list[str], env: Environment) -> int:
    out = Output(env)
    try:
        # Not cli.main(): it turns every EOFError into "Aborted!", and TruncatedFileError
        # is an EOFError. Commands find ``env`` as the context's object (``pass_output``);
        # click consumes its list of arguments.
        with cli.make_context("weightscope", list(args), obj=env, terminal_width=env.help_width) as context:
            cli.invoke(context)
    except click.exceptions.Exit as exit:
        return exit.exit_code
    except click.exceptions.ClickException as error:
        shown = io.StringIO()
        error.show(file=shown)
        out.err(shown.getvalue().removesuffix("\n"))
        return int(ExitStatus.USAGE)
    except (click.exceptions.Abort, KeyboardInterrupt) as error:
        from weightscope.atomic import Interrupted  # (shutil, tempfile, signal): imported by the commands that write

        out.alert("interrupted")
        return error.exit_status if isinstance(error, Interrupted) else 130  # 128 + the signal's number
    except (WeightscopeError, OSError) as error:
        if "--traceback" in args:  # the stack, escaped as everything else is, then the one line
            import traceback  # only with --traceback

            out.err(traceback.format_exc().removesuffix("\n"))
        if isinstance(error, BrokenPipeError):
            # Output piped into `head` and closed: not an error of ours.
            env.stderr.close()
            return 0
        if isinstance(error, WeightscopeError):
            status, message = error.exit_status, str(error)
        else:  # the system's words and the file, not Python's "[Errno N] ...": a missing folder, a full disk
            status, message = os_error_status(error), reason(error)
        out.alert(f"error: {safe_text(message)}")
        return int(status)
    except SystemExit as exit:
        return exit.code if isinstance(exit.code, int) else 0
    except Exception:  # a bug of ours; its stack, whose messages may quote a file, escaped all the same
        import traceback

        out.err(traceback.format_exc().removesuffix("\n"))
        out.alert("error: an unexpected error (a bug in weightscope: please report it with the stack above)")
        return int(ExitStatus.ERROR)
    return 0


class _Commands(MutableMapping[str, click.Command]):
    """The root's commands, each imported from its module (``weightscope.cli.NAME``) when first asked for.

    ``weightscope show`` then imports the inspecting commands only, not the analyses, conversion, hashing and
    viewer with what they import (a fifth of its start-up); ``--help`` and completion, which list every
    command, import them all (``--help`` lists them sorted, as click does).
    """

    def __init__(self, where: dict[str, tuple[str, str]]) -> None:
        # name -> the command, or where it is: (module under weightscope.cli, attribute)
        self._commands: dict[str, click.Command | tuple[str, str]] = dict(where)

    def __getitem__(self, name: str) -> click.Command:
        command = self._commands[name]
        if isinstance(command, tuple):
            module, attribute = command
            command = self._commands[name] = getattr(importlib.import_module(f"weightscope.cli.{module}"), attribute)
        return command

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._commands[name] = command

    def __delitem__(self, name: str) -> None:
        del self._commands[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._commands)

    def __len__(self) -> int:
        return len(self._commands)


cli.commands = _Commands(
    {
        "ls": ("inspect", "ls_command"),
        "show": ("inspect", "show_command"),
        "layers": ("inspect", "layers_command"),
        "verify": ("inspect", "verify_command"),
        "scan": ("inspect", "scan_command"),
        "formats": ("inspect", "formats_command"),
        "history": ("inspect", "history_command"),
        "stats": ("compare", "stats_command"),
        "diff": ("compare", "diff_command"),
        "summary": ("compare", "summary_command"),
        "plot": ("compare", "plot_command"),
        "spectra": ("spectra", "spectra_command"),
        "health": ("health", "health_command"),
        "extract-lora": ("anatomy", "extract_lora_command"),
        "convert": ("convert", "convert_command"),
        "runs": ("runs", "runs_group"),
        "view": ("serve", "view_command"),
        "demo": ("serve", "demo_command"),
        "meta": ("meta", "meta_command"),
        "hash": ("hashing", "hash_command"),
        "completion": ("shell", "completion_command"),
    }
)
