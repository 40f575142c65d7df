"""Atomic file writes: a temporary file beside the target, renamed into place.

A crash or a kill part way leaves the target as it was (absent, or the old file);
the temporary file is removed on any error.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_write(target: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    target = Path(target)
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed below, on every path
        dir=target.parent, prefix=f".{target.name}.", suffix=".tmp", delete=False
    )
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(handle.name)
        raise
