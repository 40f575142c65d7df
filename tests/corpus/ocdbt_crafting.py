"""Write OCDBT databases byte by byte, as tensorstore's encoders lay them out, to craft damaged and hostile ones.

Shared by ``make_orbax_corpus.py``, ``tests/test_orbax.py`` and ``fuzz/fuzz_ocdbt.py``. Each object is
``magic`` (BE) | ``length`` (LE u64) | ``version`` 0 | ``compression`` | body | CRC-32C (LE) of all before it.
"""

from __future__ import annotations

import json
from pathlib import Path

import cramjam

from weightscope._crc32c import crc32c
from weightscope.containers.ocdbt import BTREE_NODE_MAGIC, MANIFEST_MAGIC


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def encoded(magic: int, body: bytes, *, zstd: bool = False, crc: bool = True) -> bytes:
    payload = varint(0) + varint(int(zstd)) + (bytes(cramjam.zstd.compress(body)) if zstd else body)
    head = magic.to_bytes(4, "big") + (4 + 8 + len(payload) + 4).to_bytes(8, "little") + payload
    return head + (crc32c(head) if crc else 0).to_bytes(4, "little")


def table(paths: list[str]) -> bytes:
    """A data-file table of ``paths`` (no shared prefixes, no base paths)."""
    if not paths:
        return varint(0)
    parts = [varint(len(paths)), *(varint(0) for _ in paths[1:]), *(varint(len(p.encode())) for p in paths)]
    return b"".join([*parts, *(varint(0) for _ in paths), *(p.encode() for p in paths)])


def manifest(files: list[str], file_id: int, offset: int, length: int, height: int = 0) -> bytes:
    """A single-file manifest whose one version's root is ``length`` bytes at ``offset`` of ``files[file_id]``."""
    config = bytes(16) + varint(0) + varint(1024) + varint(100_000_000) + bytes([4]) + varint(0)
    version = varint(1) + varint(1) + bytes([height]) + varint(file_id) + varint(offset) + varint(length)
    return encoded(MANIFEST_MAGIC, config + table(files) + version + varint(0) * 3 + bytes(8) + varint(0))


def leaf(values: dict[bytes, bytes], *, out_of_line: dict[bytes, tuple[str, int, int]] | None = None) -> bytes:
    """A leaf node body: ``values`` inline; ``out_of_line`` keys as (file, offset, length)."""
    out_of_line = out_of_line or {}
    keys = sorted([*values, *out_of_line])
    files = sorted({file for file, _, _ in out_of_line.values()})
    body = bytes([0]) + table(files) + varint(len(keys))
    body += b"".join(varint(0) for _ in keys[1:]) + b"".join(varint(len(key)) for key in keys)
    body += b"".join(keys)
    body += b"".join(varint(len(values[key]) if key in values else out_of_line[key][2]) for key in keys)
    body += bytes(int(key in out_of_line) for key in keys)
    body += b"".join(varint(files.index(out_of_line[key][0])) for key in keys if key in out_of_line)
    body += b"".join(varint(out_of_line[key][1]) for key in keys if key in out_of_line)
    return body + b"".join(values[key] for key in keys if key in values)


def interior(height: int, children: list[tuple[bytes, str, int, int]]) -> bytes:
    """An interior node body: each child (its key, file, offset, length), the child's keys relative to its key."""
    files = sorted({file for _, file, _, _ in children})
    keys = [key for key, _, _, _ in children]
    body = bytes([height]) + table(files) + varint(len(children))
    body += b"".join(varint(0) for _ in keys[1:]) + b"".join(varint(len(key)) for key in keys)
    body += b"".join(varint(len(key)) for key in keys) + b"".join(keys)
    body += b"".join(varint(files.index(file)) for _, file, _, _ in children)
    body += b"".join(varint(offset) for _, _, offset, _ in children)
    body += b"".join(varint(length) for _, _, _, length in children)
    return body + varint(0) * (3 * len(children))


def node(body: bytes, *, zstd: bool = False) -> bytes:
    return encoded(BTREE_NODE_MAGIC, body, zstd=zstd)


ZARRAY = {"chunks": [2, 3], "compressor": {"id": "zstd", "level": 1}, "dimension_separator": ".", "dtype": "<f4",
          "fill_value": None, "filters": None, "order": "C", "shape": [2, 3], "zarr_format": 2}  # fmt: skip
VALUES = {b"a/.zarray": json.dumps(ZARRAY).encode(), b"a/0.0": bytes(cramjam.zstd.compress(bytes(range(24))))}


def item(folder: Path, root: bytes, *, manifest_bytes: bytes | None = None, height: int = 0) -> Path:
    """An Orbax item of one float32 array ``a`` of shape [2, 3] whose database's root node is ``root`` (in
    ``d/root``), its manifest ``manifest_bytes`` where given."""
    (folder / "d").mkdir(parents=True, exist_ok=True)
    (folder / "d" / "root").write_bytes(root)
    if manifest_bytes is None:
        manifest_bytes = manifest(["d/root"], 0, 0, len(root), height)
    (folder / "manifest.ocdbt").write_bytes(manifest_bytes)
    keys = [{"key": "a", "key_type": 2}]
    tree = {"('a',)": {"key_metadata": keys, "value_metadata": {"value_type": "jax.Array", "write_shape": [2, 3]}}}
    (folder / "_METADATA").write_text(json.dumps({"tree_metadata": tree, "use_ocdbt": True, "use_zarr3": False}))
    return folder
