"""Write tests/corpus/orbax/: broken and hostile Orbax items, each a folder named <Error>--<why>.

Most are crafted with ``ocdbt_crafting`` (one float32 array ``a`` in an OCDBT database, then one thing
wrong); two start from the fixture Orbax wrote (``tests/fixtures/orbax/run/0/default``) and damage a byte.
Run from the repo root: ``python tests/corpus/make_orbax_corpus.py``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import cramjam
from ocdbt_crafting import VALUES, ZARRAY, encoded, interior, item, leaf, manifest, node, table, varint

from weightscope._crc32c import crc32c
from weightscope.containers.ocdbt import BTREE_NODE_MAGIC, MANIFEST_MAGIC

FOLDER = Path(__file__).resolve().parent / "orbax"
FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "orbax" / "run" / "0" / "default"


def _flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x40
    path.write_bytes(bytes(raw))


def manifest_byte_flipped(folder: Path) -> None:
    shutil.copytree(FIXTURE, folder)
    _flip(folder / "ocdbt.process_0" / "manifest.ocdbt", 40)
    (folder / "manifest.ocdbt").unlink()  # the per-process database is read when the merged one is missing


def fixture_node_byte_flipped(folder: Path) -> None:
    shutil.copytree(FIXTURE, folder)
    (root,) = (folder / "d").iterdir()
    _flip(root, 30)


def node_byte_flipped(folder: Path) -> None:
    raw = bytearray(node(leaf(VALUES)))
    raw[20] ^= 1
    item(folder, bytes(raw))


def header_length_lies(folder: Path) -> None:
    raw = bytearray(node(leaf(VALUES)))
    raw[4:12] = (len(raw) + 1).to_bytes(8, "little")
    raw[-4:] = crc32c(bytes(raw[:-4])).to_bytes(4, "little")
    item(folder, bytes(raw))


def root_past_the_end_of_its_file(folder: Path) -> None:
    root = node(leaf(VALUES))
    item(folder, root, manifest_bytes=manifest(["d/root"], 0, 8, len(root)))


def value_past_the_end_of_its_file(folder: Path) -> None:
    (folder / "d").mkdir(parents=True)
    (folder / "d" / "blob").write_bytes(VALUES[b"a/0.0"])
    out_of_line = {b"a/0.0": ("d/blob", 4, len(VALUES[b"a/0.0"]))}
    item(folder, node(leaf({b"a/.zarray": VALUES[b"a/.zarray"]}, out_of_line=out_of_line)))


def node_cycle(folder: Path) -> None:
    body = interior(1, [(b"a", "d/root", 0, 0)])
    length = len(node(body))  # the node names itself: its own file, offset and length
    item(folder, node(interior(1, [(b"a", "d/root", 0, length)])), height=1)


def zstd_bomb_node(folder: Path) -> None:
    item(folder, encoded(BTREE_NODE_MAGIC, bytes(80 << 20), zstd=True))  # 80 MiB of zeros in a few KB


def million_entries_of_zeros(folder: Path) -> None:
    count = 1 << 20  # the most a node may have: columns of zero varints, which zstd shrinks to a few bytes
    body = bytes([0]) + varint(0) + varint(count) + bytes(count - 1) + bytes(count) + bytes(1000)
    item(folder, encoded(BTREE_NODE_MAGIC, body, zstd=True))


def data_file_outside_the_folder(folder: Path) -> None:
    root = node(leaf(VALUES))
    item(folder, root, manifest_bytes=manifest(["../outside"], 0, 0, len(root)))


def data_file_missing(folder: Path) -> None:
    root = node(leaf(VALUES))
    item(folder, root, manifest_bytes=manifest(["d/missing"], 0, 0, len(root)))


def numbered_manifest(folder: Path) -> None:
    config = bytes(16) + varint(1) + varint(1024) + varint(100_000_000) + bytes([4]) + varint(0)
    item(folder, node(leaf(VALUES)), manifest_bytes=encoded(MANIFEST_MAGIC, config + table([])))


def zarr_chunk_of_the_wrong_size(folder: Path) -> None:
    item(folder, node(leaf({**VALUES, b"a/0.0": bytes(cramjam.zstd.compress(bytes(20)))})))


def zarr_chunk_decodes_too_large(folder: Path) -> None:
    item(folder, node(leaf({**VALUES, b"a/0.0": bytes(cramjam.zstd.compress(bytes(1 << 20)))})))


def zarr_object_dtype(folder: Path) -> None:
    item(folder, node(leaf({**VALUES, b"a/.zarray": json.dumps({**ZARRAY, "dtype": "|O"}).encode()})))


def array_larger_than_the_memory_cap(folder: Path) -> None:
    huge = {**ZARRAY, "shape": [1 << 20, 1 << 10], "chunks": [1, 1]}  # 4 GiB of fill value, no chunk stored
    item(folder, node(leaf({b"a/.zarray": json.dumps(huge).encode()})))


def tree_metadata_not_json(folder: Path) -> None:
    item(folder, node(leaf(VALUES)))
    (folder / "_METADATA").write_bytes(b'{"tree_metadata": {')


BROKEN: dict[str, Callable[[Path], None]] = {
    "ChecksumMismatchError--manifest-byte-flipped": manifest_byte_flipped,
    "ChecksumMismatchError--orbax-node-byte-flipped": fixture_node_byte_flipped,
    "ChecksumMismatchError--node-byte-flipped": node_byte_flipped,
    "CorruptCheckpointError--header-length-lies": header_length_lies,
    "TruncatedFileError--root-node-past-the-end-of-its-file": root_past_the_end_of_its_file,
    "TruncatedFileError--value-past-the-end-of-its-file": value_past_the_end_of_its_file,
    "CorruptCheckpointError--node-names-itself-a-cycle": node_cycle,
    "LimitExceededError--zstd-bomb-node": zstd_bomb_node,
    "LimitExceededError--million-entry-node-of-zeros": million_entries_of_zeros,
    "RefusedError--data-file-outside-the-folder": data_file_outside_the_folder,
    "CheckpointNotFoundError--data-file-missing": data_file_missing,
    "UnsupportedFormatError--numbered-manifest": numbered_manifest,
    "CorruptCheckpointError--zarr-chunk-of-the-wrong-size": zarr_chunk_of_the_wrong_size,
    "CorruptCheckpointError--zarr-chunk-decodes-too-large": zarr_chunk_decodes_too_large,
    "UnsupportedFormatError--zarr-object-dtype": zarr_object_dtype,
    "LimitExceededError--array-larger-than-the-memory-cap": array_larger_than_the_memory_cap,
    "CorruptCheckpointError--tree-metadata-not-json": tree_metadata_not_json,
}


def main() -> None:
    shutil.rmtree(FOLDER, ignore_errors=True)
    FOLDER.mkdir()
    for name, make in BROKEN.items():
        make(FOLDER / name)


if __name__ == "__main__":
    main()
