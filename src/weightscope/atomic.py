"""Atomic file writes: temporary files beside their targets, renamed into place at the end.

A crash or a kill part way leaves every target as it was (absent, or the old file);
the temporary files are removed on any error. Several files (a checkpoint's data and
index) are renamed together in the order they were created, once all are complete. A
folder of files (a model folder's shards and index) is written in a hidden folder beside
its target and renamed into place whole (``atomic_folder``).

A stop signal (SIGTERM, SIGHUP, SIGINT) while files are being written is turned into an
exception (``Interrupted``) where the main thread is, so that the same cleanup runs and
no temporary file is left behind; a second signal acts as it would have (see
``interruptible``). SIGKILL cannot be caught: what it leaves is hidden, and no reader
takes it for a checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any, BinaryIO

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP", "SIGINT") if hasattr(signal, name))


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived while files were being written; raised so that cleanup runs on the way out.

    A ``KeyboardInterrupt``, as Python makes of SIGINT, so code that already stops cleanly
    on Ctrl-C stops cleanly on SIGTERM and SIGHUP too. ``exit_status`` is the shell's
    convention for a process ended by signal N: 128 + N.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """While active, SIGTERM, SIGHUP and SIGINT raise ``Interrupted`` in the main thread.

    Installed only from the main thread (the only one Python lets handle signals) and only
    over the handlers a process starts with (the default action; Python's own
    KeyboardInterrupt for SIGINT): a program's own handlers are left alone, and so is an
    ignored signal (``nohup``). The first signal puts the previous handlers back before it
    raises, so a second one during cleanup acts as it always would; they are restored on
    the way out in any case. Nested uses install nothing more.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Any] = {}

    def stop(signum: int, frame: FrameType | None) -> None:
        if _held is not None:  # files being renamed into place: after that
            _held.append(signum)
            return
        restore()
        raise Interrupted(signum)

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) in (signal.SIG_DFL, signal.default_int_handler):
            previous[signum] = signal.signal(signum, stop)
    try:
        yield
    finally:
        restore()


# While the main thread renames a group of files into place: the stop signals that arrived
# meanwhile, raised again once it is done (None: not renaming). Not a signal mask: a signal
# sent to the process may be taken by any thread, and Python runs its handler in the main
# thread whichever did.
_held: list[int] | None = None


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Stop signals wait while the block runs, then act: a group of files renamed into place, or a step that a
    signal's exception must not cut (``span_checks``: a pool starting a thread, which the exit would wait for)."""
    global _held
    if _held is not None or threading.current_thread() is not threading.main_thread():
        yield
        return
    _held = []
    try:
        yield
    finally:
        arrived, _held = _held, None
        if arrived:
            signal.raise_signal(arrived[0])


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class AtomicFiles:
    """Create files that appear at their targets only when the whole block succeeds."""

    def __init__(self) -> None:
        self._pending: list[tuple[str, Path]] = []

    def create(self, target: str | os.PathLike[str]) -> BinaryIO:
        target = Path(target)
        try:
            handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - committed or removed by the owner
                dir=target.parent, prefix=f".{target.name}.", suffix=".tmp", delete=False
            )
        except OSError as error:
            raise _naming(error, target.parent) from None
        # Temporary files are created private (0600); give the result the mode any
        # other new file of this user would get.
        os.chmod(handle.name, 0o666 & ~_umask())
        self._pending.append((handle.name, target))
        return handle  # type: ignore[return-value]

    def commit(self) -> None:
        for temporary, target in self._pending:
            try:
                os.replace(temporary, target)
            except OSError as error:
                raise _naming(error, target) from None
        self._pending = []

    def discard(self) -> None:
        for temporary, _ in self._pending:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
        self._pending = []


def _naming(error: OSError, path: Path) -> OSError:
    """The same error about ``path``, the user's, rather than a temporary file's name."""
    return type(error)(error.errno, error.strerror, str(path))


@contextlib.contextmanager
def atomic_files() -> Iterator[AtomicFiles]:
    files = AtomicFiles()
    with interruptible():
        try:
            yield files
            with signals_held():  # the group is renamed whole (or up to an error), not cut by a signal
                files.commit()
        except BaseException:
            files.discard()
            raise


@contextlib.contextmanager
def atomic_write(target: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """One file written atomically."""
    with atomic_files() as files, files.create(target) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike[str]) -> Iterator[Path]:
    """A folder written whole or not at all: the block fills a hidden folder beside ``target``, renamed to it when the
    block succeeds (``target`` absent, or an empty folder, which the rename replaces), removed when it fails."""
    target = Path(target)
    try:
        work = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    except OSError as error:
        raise _naming(error, target.parent) from None
    os.chmod(work, 0o777 & ~_umask())  # made private (0700): the mode any other new folder of this user gets
    with interruptible():
        try:
            yield work
            with signals_held():
                try:
                    os.replace(work, target)
                except OSError as error:
                    raise _naming(error, target) from None
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
