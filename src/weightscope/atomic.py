"""Atomic file writes: temporary files beside their targets, renamed into place at the end.

A crash or a kill part way leaves every target as it was (absent, or the old file);
the temporary files are removed on any error. Several files (a checkpoint's data and
index) are renamed together in the order they were created, once all are complete.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


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
    try:
        yield files
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
