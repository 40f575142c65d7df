"""Building flatbuffers by hand for broken and crafted files (with the ``flatbuffers`` package's ``Builder``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def offset_vector(builder: Any, offsets: Sequence[int]) -> int:
    """A vector of offsets to tables or strings already built, in the order given: its offset."""
    builder.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    return int(builder.EndVector())
