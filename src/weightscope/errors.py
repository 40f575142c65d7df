"""One family of errors: every failure weightscope reports is a ``WeightscopeError``.

Each subclass also inherits the built-in exception a caller would naturally catch
(``TensorNotFoundError`` is a ``KeyError``, ``TruncatedFileError`` an ``EOFError``), and
carries an exit status for the command line. Messages name the file, the tensor or
offset, and what was expected.
"""

from __future__ import annotations

import enum


class ExitStatus(enum.IntEnum):
    """Exit statuses of the ``weightscope`` command, one per kind of failure."""

    OK = 0
    DIFFERENT = 1
    USAGE = 2
    NOT_FOUND = 3
    CORRUPT = 4
    UNSUPPORTED = 5
    REFUSED = 6
    ERROR = 7


class WeightscopeError(Exception):
    """Root of every error weightscope raises on purpose."""

    exit_status = ExitStatus.ERROR

    def __str__(self) -> str:
        # KeyError quotes its argument; we want the plain message everywhere.
        return str(self.args[0]) if self.args else ""


class CheckpointNotFoundError(WeightscopeError, FileNotFoundError):
    """No checkpoint (or a part of one, such as a data shard) exists at a path."""

    exit_status = ExitStatus.NOT_FOUND


class TensorNotFoundError(WeightscopeError, KeyError):
    """A tensor name is not in the checkpoint."""

    exit_status = ExitStatus.NOT_FOUND


class CorruptCheckpointError(WeightscopeError, ValueError):
    """The bytes contradict the format: bad magic, impossible sizes, broken structure."""

    exit_status = ExitStatus.CORRUPT


class ChecksumMismatchError(CorruptCheckpointError):
    """Stored and computed checksums differ."""


class TruncatedFileError(CorruptCheckpointError, EOFError):
    """A file ends before a structure it declares."""


class UnsupportedFormatError(WeightscopeError, ValueError):
    """A valid file, or a part of one, that weightscope cannot read (yet)."""

    exit_status = ExitStatus.UNSUPPORTED


class LimitExceededError(UnsupportedFormatError):
    """A file asks for more memory or work than its size justifies: a cap (``weightscope.limits``) to raise."""


class UsageError(WeightscopeError, ValueError):
    """The caller asked for something that does not make sense."""

    exit_status = ExitStatus.USAGE


class RefusedError(WeightscopeError, ValueError):
    """The file would run code when loaded (a pickle naming a function outside the allow-list)."""

    exit_status = ExitStatus.REFUSED


def reason(error: BaseException) -> str:
    """An exception's own words on one line, for a message: an ``OSError`` as ``FILE: what the system
    says`` (never Python's ``[Errno N] ...: 'FILE'``), anything else as its text, else its type's name."""
    if isinstance(error, OSError) and error.strerror:
        if error.filename is None:
            return str(error.strerror)
        where = f"{error.filename} -> {error.filename2}" if error.filename2 is not None else str(error.filename)
        return f"{where}: {error.strerror}"
    text = " ".join(str(error).split())
    return text or type(error).__name__


def os_error_status(error: OSError) -> ExitStatus:
    """The exit status of an ``OSError`` that reached the command line: a path that is not there is
    not found (3), a directory where a file was wanted is usage (2), anything else other (7)."""
    if isinstance(error, FileNotFoundError | NotADirectoryError):
        return ExitStatus.NOT_FOUND
    if isinstance(error, IsADirectoryError):
        return ExitStatus.USAGE
    return ExitStatus.ERROR


def kept(error: WeightscopeError) -> WeightscopeError:
    """``error`` without its traceback, to be kept after its ``except`` block (a verdict, a list of problems).

    A kept traceback holds the frames it passed through, and they hold the error: a cycle that keeps
    every array and memory map those frames saw alive (a file descriptor each) until a full garbage
    collection, which a process opening thousands of damaged files may not reach for a long while.
    """
    return error.with_traceback(None)
