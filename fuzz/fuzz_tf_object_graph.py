"""Fuzz the TF2 object graph reader: ``_CHECKPOINTABLE_OBJECT_GRAPH``, names and roles.

The input is a serialized ``TrackableObjectGraph``. Each one is stored as the scalar
string tensor ``_CHECKPOINTABLE_OBJECT_GRAPH`` of a valid checkpoint (index built with
weightscope's table builder, checksums right), beside a variable for every checkpoint
key the seed graphs name, so that the reader gets past the bundle to the graph parser.
Seeds: the graphs of two real Keras 3 checkpoints (``seeds/tf_object_graph/README.md``).
"""

from __future__ import annotations

from pathlib import Path

import fuzzlib
import numpy as np

with fuzzlib.instrumented():
    from weightscope import _proto
    from weightscope.containers.table import build_table, iter_table
    from weightscope.formats.tensorflow import data_file_name
    from weightscope.formats.tensorflow_writer import _string_tensor_bytes, save
    from weightscope.formats.tf_object_graph import OBJECT_GRAPH_KEY
    from weightscope.sources import FileSource


SEEDS = Path(__file__).resolve().parent / "seeds" / "tf_object_graph"
DIRECTORY = fuzzlib.SCRATCH / "tf_object_graph"
PREFIX = DIRECTORY / "model.ckpt"
DATA = DIRECTORY / data_file_name("model.ckpt", 0, 1)


def seeds() -> list[bytes]:
    """The object graphs of the Keras 3 fixtures."""
    return [path.read_bytes() for path in sorted(SEEDS.glob("*.pb"))]


def _variables() -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The data and index entries (header first) of one small variable per key of the seeds."""
    keys = {
        attribute.checkpoint_key
        for seed in seeds()
        for node in _proto.TrackableObjectGraph.FromString(seed).nodes
        for attribute in node.attributes
    }
    keys.discard(OBJECT_GRAPH_KEY)
    save({key: np.full(2, i, np.float32) for i, key in enumerate(sorted(keys))}, PREFIX, update_state=False)
    source = FileSource(f"{PREFIX}.index")
    try:
        entries = list(iter_table(source))
    finally:
        source.close()
    return DATA.read_bytes(), entries


VARIABLE_DATA, ENTRIES = _variables()


def one_input(data: bytes) -> None:
    payload, checksum = _string_tensor_bytes(np.array(data, dtype=object), OBJECT_GRAPH_KEY)
    entry = _proto.BundleEntryProto(dtype=7, offset=len(VARIABLE_DATA), size=len(payload), crc32c=checksum)
    entry.shape.SetInParent()
    DATA.write_bytes(VARIABLE_DATA + payload)
    Path(f"{PREFIX}.index").write_bytes(
        build_table(sorted([*ENTRIES, (OBJECT_GRAPH_KEY.encode(), entry.SerializeToString())]))
    )
    fuzzlib.exercise(PREFIX, "tensorflow")


if __name__ == "__main__":
    fuzzlib.run(one_input, seeds())
