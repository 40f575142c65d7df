"""The byte-range check every byte source shares, local maps and remote ranges alike.

Below both ``weightscope.sources`` and ``weightscope.remote``, so that neither imports the other for it.
"""

from __future__ import annotations

from weightscope.errors import TruncatedFileError


def check_range(path: object, offset: int, length: int, size: int, what: str) -> None:
    """Refuse a range that is negative or runs past the end of a file of ``size`` bytes (Python ints: no wrap)."""
    if offset < 0 or length < 0:
        raise TruncatedFileError(f"{path}: {what} has a negative offset or length ({offset}, {length})")
    if offset + length > size:
        available = max(0, size - offset)
        raise TruncatedFileError(f"{path}: EOF reading {what} at {offset}: expected {length} bytes, got {available}")
