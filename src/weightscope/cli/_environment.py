"""The terminal facts the commands depend on (httpie's ``Environment``).

The one module of the command line that looks at the process: its standard streams, whether
stderr is a terminal, the terminal's width, the encoding text is written in, and the variables
the library reads. Commands get an ``Environment`` (``main(argv, env=...)``) and read none of
these themselves, so a test hands them StringIO streams and a width instead of patching ``sys``.
"""

from __future__ import annotations

import codecs
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

import click

# numpy's OpenBLAS starts a thread per further core when numpy loads, and each then spins 2**28 cycles (~0.1 s)
# waiting for work before it sleeps: on a busy machine that takes a core's time from a command calling no BLAS at
# all (``show`` of one tensor, 2 cores at load 1.5: 135 -> 82 ms). 2**20 cycles (~0.4 ms) keeps them awake between
# the calls of BLAS-heavy work (spectra) all the same. A value the user set wins. OpenBLAS reads it once, when numpy
# loads: ``weightscope.cli`` imports this module before any that imports numpy (the package itself imports none).
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "20")


@dataclass(frozen=True)
class Environment:
    """Where text goes and what the terminal is. Every field defaults to the process's own.

    ``stderr_isatty`` (None: ask ``stderr``) decides progress bars, drawn once work has gone on for
    ``progress_delay`` seconds (``WEIGHTSCOPE_PROGRESS_DELAY``, default 0.5); ``terminal_width`` the width
    bars and help text fit; ``encoding`` (None: ``stdout``'s, else UTF-8) and ``errors`` how a character
    the streams cannot encode is written: as an escape (``\\u4e2d``), never a crash. ``quiet`` is the run's
    ``--quiet``: no progress bars, no notes, only errors and the results. ``completion`` is click's
    shell-completion instruction (``_WEIGHTSCOPE_COMPLETE``: ``bash_source``, ...), None outside one.
    """

    stdout: IO[str] = field(default_factory=lambda: sys.stdout)
    stderr: IO[str] = field(default_factory=lambda: sys.stderr)
    stderr_isatty: bool | None = None
    terminal_width: int = field(default_factory=lambda: _terminal_columns())
    encoding: str | None = None
    errors: str = "backslashreplace"
    completion: str | None = field(default_factory=lambda: os.environ.get("_WEIGHTSCOPE_COMPLETE"))
    progress_delay: float = field(default_factory=lambda: _seconds(os.environ.get("WEIGHTSCOPE_PROGRESS_DELAY")))
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.stderr_isatty is None:
            object.__setattr__(self, "stderr_isatty", self.stderr.isatty())
        if self.encoding is None:
            object.__setattr__(self, "encoding", getattr(self.stdout, "encoding", None) or "utf-8")

    def write(self, text: str, *, err: bool = False) -> None:
        """``text`` on stdout (stderr if ``err``), each character the encoding lacks as ``errors`` says."""
        click.echo(self.encodable(text), file=self.stderr if err else self.stdout, nl=False)

    def encodable(self, text: str) -> str:
        """``text`` with each character the streams' encoding lacks written as ``errors`` says."""
        encoding = self.encoding or "utf-8"
        if not text.isascii() and codecs.lookup(encoding).name != "utf-8":
            return text.encode(encoding, self.errors).decode(encoding)
        return text

    @property
    def help_width(self) -> int:
        """The width click wraps help to on this terminal (click's own rule, given the width from here)."""
        return max(min(self.terminal_width, 80) - 2, 50)

    @staticmethod
    def export(variable: str, value: str) -> Callable[[], None]:
        """Set ``variable`` in the process environment the library (and the workers it starts) read, as if
        set outside; returns what puts the previous value back."""
        previous = os.environ.get(variable)
        os.environ[variable] = value

        def restore() -> None:
            if previous is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = previous

        return restore


def _terminal_columns() -> int:
    """``shutil.get_terminal_size().columns`` without importing shutil (and bz2, lzma with it: ~1.5 ms of every
    command's start): ``COLUMNS`` where it is a positive number, else the width of the terminal ``sys.__stdout__``
    is on, else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns > 0:
        return columns
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 80


def _seconds(value: str | None, default: float = 0.5) -> float:
    """A delay in seconds from a variable; ``default`` when unset or not a number of seconds."""
    try:
        seconds = float(value) if value else default
    except ValueError:
        return default
    return seconds if seconds >= 0 else default
