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


def finished_tflite_model(builder: Any, subgraphs: int, buffers: int) -> bytes:
    """A TFLite ``Model`` (schema version 3) of the vectors of subgraphs and buffers already built, finished with
    its file identifier: the file's bytes."""
    builder.StartObject(5)  # Model: version 0, subgraphs 2, buffers 4
    builder.PrependUint32Slot(0, 3, 0)
    builder.PrependUOffsetTRelativeSlot(2, subgraphs, 0)
    builder.PrependUOffsetTRelativeSlot(4, buffers, 0)
    builder.Finish(builder.EndObject(), file_identifier=b"TFL3")
    return bytes(builder.Output())
