"""Fuzz the Orbax reader's OCDBT B+tree node and the zarr arrays in it.

An input is a B+tree node's body (height, data-file table, keys, values): the harness wraps it in a valid
header and CRC-32C (zstd-compressed when the input's first byte is odd, the rest being the body), so the
fuzzer explores the node's decoding rather than the checksum, and opens the Orbax item whose database's root
it is: its one array ``a`` (v2 ``a/.zarray`` or v3 ``a/zarr.json`` and chunks) is read and verified.
"""

from __future__ import annotations

import json
import sys

import fuzzlib

sys.path.insert(0, str(fuzzlib.ROOT.parent / "tests" / "corpus"))
with fuzzlib.instrumented():
    import weightscope.containers.ocdbt
    import weightscope.containers.zarr
    import weightscope.formats.orbax  # noqa: F401 - instrumented for coverage, used by fuzzlib.exercise
from ocdbt_crafting import VALUES, ZARRAY, item, leaf, node

FOLDER = fuzzlib.SCRATCH / "item"
ZARR3 = {"zarr_format": 3, "node_type": "array", "shape": [3, 2], "data_type": "bfloat16", "fill_value": 0.0,
         "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2, 2]}},
         "chunk_key_encoding": {"name": "default"},
         "codecs": [{"name": "sharding_indexed", "configuration": {"chunk_shape": [1, 2],
                     "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
                     "index_codecs": [{"name": "bytes"}, {"name": "crc32c"}]}}]}  # fmt: skip


def seeds() -> list[bytes]:
    plain = {b"a/.zarray": json.dumps({**ZARRAY, "compressor": None, "chunks": [1, 3]}).encode(),
             b"a/0.0": bytes(range(12)), b"a/1.0": bytes(12)}  # fmt: skip
    zarr3 = {b"a/zarr.json": json.dumps(ZARR3).encode(), b"a/c/0/0": bytes(4) + bytes(32) + bytes(4)}
    return [b"\0" + leaf(VALUES), b"\1" + leaf(VALUES), b"\0" + leaf(plain), b"\0" + leaf(zarr3)]


def one_input(data: bytes) -> None:
    if not data:
        return
    root = node(data[1:], zstd=bool(data[0] & 1))
    item(FOLDER, root, height=data[1] if len(data) > 1 else 0)
    fuzzlib.exercise(FOLDER)


if __name__ == "__main__":
    fuzzlib.run(one_input, seeds())
