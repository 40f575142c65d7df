"""Fuzz the TensorFlow ``.index`` reader: the sorted table, the bundle header, every entry.

The input is a whole ``.index`` file; the data file beside it is one fixed valid file,
written once, so that entries pointing into it read real bytes (and checksums hold)
wherever the mutated index still says what the seed said. Each input is also opened
without the compiled parsers (``weightscope._tables``): the listing, or the error, must
be the same.
"""

from __future__ import annotations

import fuzzlib
import numpy as np

with fuzzlib.instrumented():
    import weightscope as ws
    from weightscope import _proto
    from weightscope._crc32c import crc32c
    from weightscope.containers import table
    from weightscope.containers.table import (
        FOOTER_SIZE,
        TRAILER_SIZE,
        build_table,
        iter_block,
        iter_table,
        mask_crc,
        read_varint,
    )
    from weightscope.errors import WeightscopeError
    from weightscope.formats import _bundle_index
    from weightscope.formats._ordered_code import _slice_key
    from weightscope.formats.tensorflow import data_file_name
    from weightscope.formats.tensorflow_writer import save
    from weightscope.sources import FileSource


DIRECTORY = fuzzlib.SCRATCH / "tf_index"
PREFIX = DIRECTORY / "model.ckpt"
TENSORS = {
    "dense/kernel": np.arange(12, dtype=np.float32).reshape(3, 4),
    "dense/bias": np.ones(4, np.float16),
    "global_step": np.array(7, np.int64),
    "names": np.array([b"a", b"bc", b""], dtype=object),
    "label": np.array(b"scalar string", dtype=object),
    "empty": np.zeros((0, 3), np.int8),
    "flags": np.array([True, False]),
}
save(TENSORS, PREFIX, update_state=False)  # the fixed data file, and the first seed's index
SEED_INDEX = (DIRECTORY / "model.ckpt.index").read_bytes()
COMPILED = table._tables
assert (DIRECTORY / data_file_name("model.ckpt", 0, 1)).is_file()


def _entries() -> list[tuple[bytes, bytes]]:
    source = FileSource(DIRECTORY / "model.ckpt.index")
    try:
        return list(iter_table(source))
    finally:
        source.close()


def seeds() -> list[bytes]:
    """The index ``save`` wrote; one of 600 entries; the same with snappy blocks; a partitioned variable."""
    entries = _entries()
    header, tensors = entries[0], dict(entries[1:])
    kernel = tensors[b"dense/kernel"]
    many = [header, *sorted((f"layer{i:04d}/kernel".encode(), kernel) for i in range(600))]
    # A partitioned variable of two slices, both stored as dense/kernel's bytes (3 x 4 each).
    full = _proto.BundleEntryProto.FromString(kernel)
    full.ClearField("offset")
    full.ClearField("size")
    full.ClearField("crc32c")
    full.shape.dim[0].size = 6
    for start in (0, 3):
        piece = full.slices.add()
        piece.extent.add(start=start, length=3)
        piece.extent.add()
    sliced = sorted(
        [
            (_slice_key(b"part", [(0, 3), (0, -1)]), kernel),
            (_slice_key(b"part", [(3, 3), (0, -1)]), kernel),
            (b"part", full.SerializeToString()),
            *tensors.items(),
        ]
    )
    return [
        SEED_INDEX,
        build_table(many),
        build_table(entries, snappy=True),
        build_table([header, *sliced]),
    ]


def _fix_block(data: bytearray, offset: int, size: int) -> bool:
    """Give the block at ``offset`` the checksum its (mutated) bytes have; False if it lies outside ``data``."""
    if not 0 <= offset <= offset + size + TRAILER_SIZE <= len(data):
        return False
    crc = mask_crc(crc32c(bytes(data[offset + size : offset + size + 1]), crc32c(bytes(data[offset : offset + size]))))
    data[offset + size + 1 : offset + size + TRAILER_SIZE] = crc.to_bytes(4, "little")
    return True


def with_checksums(data: bytes) -> bytes:
    """``data`` with the checksums of the index block and of the data blocks it names made right.

    A mutated table nearly always fails its block checksum first; half of the inputs are
    mended so that the fuzzer reaches the block, entry and bundle parsers behind it.
    """
    fixed = bytearray(data)
    try:
        footer = fixed[-FOOTER_SIZE:]
        _, pos = read_varint(footer, 0, "footer")
        _, pos = read_varint(footer, pos, "footer")
        offset, pos = read_varint(footer, pos, "footer")
        size, _ = read_varint(footer, pos, "footer")
        if len(fixed) < FOOTER_SIZE or not _fix_block(fixed, offset, size) or fixed[offset + size]:
            return bytes(fixed)
        for _, handle in iter_block(bytes(fixed[offset : offset + size]), "index block"):
            block_offset, pos = read_varint(handle, 0, "handle")
            block_size, _ = read_varint(handle, pos, "handle")
            _fix_block(fixed, block_offset, block_size)
    except WeightscopeError:
        pass
    return bytes(fixed)


def _listing(compiled: object) -> object:
    """The infos of the checkpoint, or its error, opened with ``compiled`` as the parsers' module (None: numpy's)."""
    table._tables = _bundle_index._tables = compiled
    try:
        with ws.open(PREFIX, format="tensorflow") as ckpt:
            return list(ckpt.infos())
    except WeightscopeError as error:
        return type(error), str(error)
    finally:
        table._tables = _bundle_index._tables = COMPILED


def one_input(data: bytes) -> None:
    if len(data) % 2 == 0:
        data = with_checksums(data)
    (DIRECTORY / "model.ckpt.index").write_bytes(data)
    fuzzlib.exercise(PREFIX, "tensorflow")
    if COMPILED is not None:
        assert _listing(COMPILED) == _listing(None), "the compiled parsers and numpy's differ"


if __name__ == "__main__":
    fuzzlib.run(one_input, seeds())
