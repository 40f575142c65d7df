"""Shell completion (bash, zsh, fish), through click's protocol, with tensor names completed from the file.

The shell's completion function runs ``weightscope`` with ``_WEIGHTSCOPE_COMPLETE`` set (``bash_source``
prints the script, ``bash_complete`` the completions of the words in ``COMP_WORDS``/``COMP_CWORD``; zsh and
fish alike), which ``main`` hands to ``respond`` instead of running a command. Commands and options come from
click; a checkpoint path completes as a file name; the tensor names of ``show``, ``stats``, ``plot``,
``spectra`` and ``health`` are read from the index of the checkpoint named before them on the line
(``complete_tensor_names``): only a local file's, and any error gives no completion, never a traceback.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import click

from weightscope.cli._environment import Environment
from weightscope.cli._output import Command, Output, examples, pass_output
from weightscope.errors import ExitStatus
from weightscope.output import format_shape, safe_text
from weightscope.sources import as_path, local_path

PROGRAM = "weightscope"
COMPLETE_VARIABLE = "_WEIGHTSCOPE_COMPLETE"
SHELLS = ("bash", "zsh", "fish")
MAX_COMPLETIONS = 10_000  # a shell shows no more usefully; a model's tensors may be many more

# click's completion module is imported by what completes, not by every command that names a completer (show)
if TYPE_CHECKING:
    from click.shell_completion import CompletionItem, ShellComplete


def complete_tensor_names(context: click.Context, parameter: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The names of the checkpoint given earlier on the line (``context.params['path']``) that start with
    ``incomplete``, each with its dtype and shape as help; none for a remote checkpoint or on any error."""
    path = context.params.get("path")
    if path is None or local_path(as_path(path)) is None:
        return []
    from click.shell_completion import CompletionItem

    from weightscope.formats import open_checkpoint

    found: list[CompletionItem] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nothing may reach the terminal in the middle of a command line
        try:
            with open_checkpoint(path) as ckpt:
                for info in ckpt.infos():
                    # a name a shell would split or act on (a space, a newline, an escape) is not offered
                    name = info.name
                    if name.startswith(incomplete) and safe_text(name) == name and " " not in name:
                        found.append(CompletionItem(name, help=f"{info.type_label} {format_shape(info.shape)}"))
                        if len(found) == MAX_COMPLETIONS:
                            break
        except Exception:  # never a traceback in the middle of a command line
            return []
    return found


def respond(command: click.Command, instruction: str, env: Environment) -> int:
    """Answer click's completion ``instruction`` (``bash_source``, ``zsh_complete``, ...) on ``env``'s stdout."""
    from click.shell_completion import get_completion_class

    shell, _, action = instruction.partition("_")
    completion_class = get_completion_class(shell)
    if completion_class is None or action not in ("source", "complete"):
        Output(env).note(
            f"{COMPLETE_VARIABLE}={instruction}: expected SHELL_source or SHELL_complete, SHELL one of "
            f"{', '.join(SHELLS)}"
        )
        return int(ExitStatus.USAGE)
    completion = completion_class(command, {"obj": env}, PROGRAM, COMPLETE_VARIABLE)
    env.write(script(completion) if action == "source" else completion.complete() + "\n")
    return 0


def script(completion: ShellComplete) -> str:
    """The shell's completion script, as click writes it but for fish's: click's splits each answer at every comma,
    cutting a help text (``Print tensor values, as numpy prints them.``) or a tensor name at its first; it is split
    at the first only here (the answer's type, before it, never holds one)."""
    return completion.source().replace('(string split "," $completion)', '(string split --max 1 "," $completion)')


@click.command(
    "completion",
    cls=Command,
    short_help="Print the shell completion script (bash, zsh, fish).",
    epilog=examples("weightscope completion bash", "weightscope completion zsh", "weightscope completion fish"),
)
@click.argument("shell", type=click.Choice(SHELLS))
@pass_output
def completion_command(out: Output, shell: str) -> None:
    """Print the completion script for SHELL: commands, options, file names and the tensor names of the
    checkpoint on the line. Load it from ~/.bashrc or ~/.zshrc (`eval "$(weightscope completion bash)"`), or save
    fish's as ~/.config/fish/completions/weightscope.fish."""
    from click.shell_completion import get_completion_class

    completion_class = get_completion_class(shell)
    assert completion_class is not None  # one of click's own: the choice allows no other
    root = click.get_current_context().find_root().command
    out.env.write(script(completion_class(root, {}, PROGRAM, COMPLETE_VARIABLE)))
