"""Write the TensorFlow, safetensors and NumPy entries of the corpus of broken files.

Run from anywhere: ``.venv/bin/python tests/corpus/make_tensorflow_corpus.py``. It
replaces ``tests/corpus/{tensorflow,safetensors,numpy}/`` with entries named
``<ErrorClass>--<what is wrong>[.<suffix>]`` (see ``tests/test_corpus.py``): a TensorFlow
entry is a directory holding ``model.ckpt.index`` and ``model.ckpt.data-00000-of-00001``.
Every entry starts from a small valid file written by weightscope's own writers and is
damaged in one way; the output is deterministic and a few KiB in all.

Left out on purpose, because they read fine: a safetensors tensor named with an ANSI
escape (the command line escapes it: ``tests/test_cli.py``), and ``.npz`` members named
``../x.npy`` or ``/x.npy`` (``np.savez`` writes such names; weightscope treats member
names as names only and never as paths: ``test_member_names_are_only_names``).
"""

from __future__ import annotations

import json
import shutil
import struct
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "src"))

from weightscope import _proto  # noqa: E402
from weightscope._crc32c import crc32c  # noqa: E402
from weightscope.containers.table import (  # noqa: E402
    FOOTER_SIZE,
    TRAILER_SIZE,
    build_table,
    encode_varint,
    iter_table,
    mask_crc,
    read_varint,
)
from weightscope.formats import numpy_files, tensorflow_writer  # noqa: E402
from weightscope.sources import FileSource  # noqa: E402

INDEX = "model.ckpt.index"
DATA = "model.ckpt.data-00000-of-00001"
TENSORS = {
    "dense/bias": np.array([0.5, -1.0, 2.0], np.float32),
    "dense/kernel": np.arange(6, dtype=np.float32).reshape(2, 3),
    "global_step": np.array(42, np.int64),
    "vocab": np.array([b"cat", b"dog"], dtype=object),
}
Entries = list[tuple[bytes, bytes]]


# -- TensorFlow ----------------------------------------------------------------------------
def _valid_checkpoint() -> tuple[bytes, bytes, Entries]:
    """The index, the data and the index entries (header first) of a small valid checkpoint."""
    with tempfile.TemporaryDirectory() as directory:
        prefix = tensorflow_writer.save(TENSORS, Path(directory) / "model.ckpt", update_state=False)
        index = Path(f"{prefix}.index").read_bytes()
        data = Path(f"{prefix}.data-00000-of-00001").read_bytes()
        source = FileSource(f"{prefix}.index")
        try:
            entries = list(iter_table(source))
        finally:
            source.close()
    return index, data, entries


def _footer_handles(index: bytes) -> tuple[int, int]:
    """The index block's offset and size, from the footer."""
    footer = index[-FOOTER_SIZE:]
    _, pos = read_varint(footer, 0, "footer")
    _, pos = read_varint(footer, pos, "footer")
    offset, pos = read_varint(footer, pos, "footer")
    size, _ = read_varint(footer, pos, "footer")
    return offset, size


def _entry(entries: Entries, name: bytes) -> _proto.BundleEntryProto:
    return _proto.BundleEntryProto.FromString(dict(entries)[name])


def _with(entries: Entries, name: bytes, change: Callable[[_proto.BundleEntryProto], None]) -> Entries:
    """``entries`` with the entry ``name`` changed by ``change``."""
    entry = _entry(entries, name)
    change(entry)
    return [(key, entry.SerializeToString() if key == name else value) for key, value in entries]


def _flip(data: bytes, offset: int) -> bytes:
    damaged = bytearray(data)
    damaged[offset] ^= 0x40
    return bytes(damaged)


def _set_crc(block_start: int, block_size: int, index: bytearray) -> None:
    """Give the block at ``block_start`` the checksum of its bytes and type byte."""
    contents = bytes(index[block_start : block_start + block_size + 1])
    crc = mask_crc(crc32c(contents[-1:], crc32c(contents[:-1])))
    index[block_start + block_size + 1 : block_start + block_size + TRAILER_SIZE] = struct.pack("<I", crc)


def tensorflow_entries() -> dict[str, tuple[bytes, bytes]]:
    """Entry name -> (index bytes, data bytes)."""
    index, data, entries = _valid_checkpoint()
    header = entries[0]
    index_offset, index_size = _footer_handles(index)
    # The data block is the first one: its handle is the value of the index block's one entry.
    handle = iter_table_values(index, index_offset, index_size)[0]
    block_offset, pos = read_varint(handle, 0, "handle")
    data_block_size, _ = read_varint(handle, pos, "handle")
    kernel = _entry(entries, b"dense/kernel")
    bias = _entry(entries, b"dense/bias")
    vocab = _entry(entries, b"vocab")
    found: dict[str, tuple[bytes, bytes]] = {}

    def table(changed: Entries) -> bytes:
        return build_table(changed)

    # Truncated at every structure boundary.
    found["TruncatedFileError--index-shorter-than-its-footer"] = (index[: FOOTER_SIZE - 8], data)
    found["TruncatedFileError--index-empty"] = (b"", data)
    found["TruncatedFileError--index-blocks-cut-off-footer-kept"] = (index[-FOOTER_SIZE:], data)
    found["CorruptCheckpointError--index-cut-before-the-footer"] = (index[:-FOOTER_SIZE], data)
    found["CorruptCheckpointError--index-cut-inside-the-table-magic"] = (index[:-4], data)
    found["CorruptCheckpointError--index-cut-after-the-data-block"] = (
        index[: block_offset + data_block_size + TRAILER_SIZE],
        data,
    )
    found["TruncatedFileError--data-file-empty"] = (index, b"")
    found["TruncatedFileError--data-file-cut-after-the-first-tensor"] = (index, data[: kernel.offset])
    found["TruncatedFileError--data-file-cut-inside-a-tensor"] = (index, data[: kernel.offset + kernel.size - 1])
    # Flipped bytes: the block trailer, the header entry, a tensor's data.
    found["ChecksumMismatchError--flipped-byte-in-data-block-trailer-crc"] = (
        _flip(index, block_offset + data_block_size + 2),
        data,
    )
    found["ChecksumMismatchError--flipped-compression-byte-in-data-block-trailer"] = (
        _flip(index, block_offset + data_block_size),
        data,
    )
    found["ChecksumMismatchError--flipped-byte-in-index-block-trailer"] = (
        _flip(index, index_offset + index_size + 3),
        data,
    )
    found["ChecksumMismatchError--flipped-byte-in-the-header-entry"] = (_flip(index, block_offset + 4), data)
    found["ChecksumMismatchError--flipped-byte-in-tensor-data"] = (index, _flip(data, kernel.offset + 5))
    found["ChecksumMismatchError--flipped-byte-in-string-tensor-data"] = (
        index,
        _flip(data, vocab.offset + vocab.size - 1),
    )
    found["ChecksumMismatchError--flipped-byte-in-string-tensor-length-checksum"] = (
        index,
        _flip(data, vocab.offset + 3),
    )
    # A block of an unknown compression type, its checksum right.
    unknown = bytearray(index)
    unknown[block_offset + data_block_size] = 7
    _set_crc(block_offset, data_block_size, unknown)
    found["UnsupportedFormatError--data-block-of-compression-type-7"] = (bytes(unknown), data)
    bad_magic = bytearray(index)
    bad_magic[-1] ^= 0xFF
    found["CorruptCheckpointError--bad-table-magic"] = (bytes(bad_magic), data)
    # Keys: duplicated, unsorted; the header missing.
    found["CorruptCheckpointError--duplicated-tensor-name"] = (
        table([*entries[:2], (entries[1][0], entries[2][1]), *entries[2:]]),
        data,
    )
    found["CorruptCheckpointError--unsorted-keys"] = (table([header, entries[2], entries[1], *entries[3:]]), data)
    found["CorruptCheckpointError--no-bundle-header"] = (table(entries[1:]), data)
    found["CorruptCheckpointError--header-not-a-protocol-buffer"] = (table([(b"", b"\x0a\xff"), *entries[1:]]), data)
    # Header lies.
    two_shards = _proto.BundleHeaderProto(num_shards=2)
    found["CheckpointNotFoundError--shard-count-lie-two-shards-one-file"] = (
        table([(b"", two_shards.SerializeToString()), *entries[1:]]),
        data,
    )
    no_shards = _proto.BundleHeaderProto(num_shards=-1)
    found["CorruptCheckpointError--negative-shard-count"] = (
        table([(b"", no_shards.SerializeToString()), *entries[1:]]),
        data,
    )
    future = _proto.BundleHeaderProto(num_shards=1)
    future.version.min_consumer = 99
    found["UnsupportedFormatError--header-for-readers-of-version-99"] = (
        table([(b"", future.SerializeToString()), *entries[1:]]),
        data,
    )

    # Entries that lie.
    def dims(*sizes: int) -> Callable[[_proto.BundleEntryProto], None]:
        def change(entry: _proto.BundleEntryProto) -> None:
            entry.shape.ClearField("dim")
            for size in sizes:
                entry.shape.dim.add(size=size)

        return change

    found["CorruptCheckpointError--negative-dimension"] = (table(_with(entries, b"dense/kernel", dims(-2, 3))), data)
    found["CorruptCheckpointError--huge-dimensions-2-62-elements"] = (
        table(_with(entries, b"dense/kernel", dims(1 << 31, 1 << 31))),
        data,
    )
    found["CorruptCheckpointError--huge-string-tensor-2-62-strings"] = (
        table(_with(entries, b"vocab", dims(1 << 31, 1 << 31))),
        data,
    )

    def no_bytes(entry: _proto.BundleEntryProto) -> None:
        dims(1 << 30, 1 << 30)(entry)
        entry.size = 0

    found["CorruptCheckpointError--string-tensor-of-no-bytes-claiming-2-60-strings"] = (
        table(_with(entries, b"vocab", no_bytes)),
        data,
    )
    found["UnsupportedFormatError--70-dimensions"] = (table(_with(entries, b"global_step", dims(*[1] * 70))), data)
    found["CorruptCheckpointError--size-not-elements-times-itemsize"] = (
        table(_with(entries, b"dense/kernel", dims(2, 2))),
        data,
    )

    def field(name: str, value: int) -> Callable[[_proto.BundleEntryProto], None]:
        return lambda entry: setattr(entry, name, value)

    found["TruncatedFileError--offset-past-the-end"] = (
        table(_with(entries, b"dense/kernel", field("offset", len(data) + 100))),
        data,
    )
    found["TruncatedFileError--offset-near-2-63"] = (
        table(_with(entries, b"dense/kernel", field("offset", (1 << 63) - 8))),
        data,
    )
    found["TruncatedFileError--negative-offset"] = (table(_with(entries, b"dense/kernel", field("offset", -8))), data)
    found["CorruptCheckpointError--shard-id-past-the-shard-count"] = (
        table(_with(entries, b"dense/kernel", field("shard_id", 3))),
        data,
    )
    found["UnsupportedFormatError--unknown-dtype-code"] = (
        table(_with(entries, b"dense/kernel", field("dtype", 77))),
        data,
    )
    found["UnsupportedFormatError--variant-tensor"] = (table(_with(entries, b"dense/bias", field("dtype", 21))), data)
    found["CorruptCheckpointError--overlapping-tensors"] = (
        table(_with(entries, b"dense/kernel", field("offset", bias.offset + 4))),
        data,
    )
    found["CorruptCheckpointError--string-lengths-longer-than-the-entry"] = (
        table(_with(entries, b"vocab", field("size", vocab.size - 2))),
        data,
    )
    found["CorruptCheckpointError--entry-not-a-protocol-buffer"] = (
        table([(key, b"\x12\xff\xff" if key == b"dense/kernel" else value) for key, value in entries]),
        data,
    )
    # The table's own structure, checksums right.
    restarts = bytearray(index)
    restarts[block_offset + data_block_size - 4 : block_offset + data_block_size] = struct.pack("<I", 0xFFFF)
    _set_crc(block_offset, data_block_size, restarts)
    found["CorruptCheckpointError--more-restart-points-than-the-block-holds"] = (bytes(restarts), data)
    snappy_bomb = bytearray(encode_varint(1 << 40) + b"\x00" * 8)
    bomb_index = bytearray(snappy_bomb + b"\x01\x00\x00\x00\x00")
    _set_crc(0, len(snappy_bomb), bomb_index)
    bomb_handle = encode_varint(0) + encode_varint(len(snappy_bomb))
    index_block = (
        b"\x00\x01" + encode_varint(len(bomb_handle)) + b"\xff" + bomb_handle + struct.pack("<II", 0, 1)
    )  # one entry, key "\xff", one restart
    index_at = len(bomb_index)
    bomb_index += index_block + b"\x00\x00\x00\x00\x00"
    _set_crc(index_at, len(index_block), bomb_index)
    footer = (bomb_handle + encode_varint(index_at) + encode_varint(len(index_block))).ljust(FOOTER_SIZE - 8, b"\0")
    bomb_index += footer + index[-8:]
    found["CorruptCheckpointError--snappy-block-claiming-a-terabyte"] = (bytes(bomb_index), data)
    return found


def iter_table_values(index: bytes, offset: int, size: int) -> list[bytes]:
    """The values of the block at ``offset`` of ``index`` (its entries' handles, for the index block)."""
    from weightscope.containers.table import iter_block

    return [value for _, value in iter_block(index[offset : offset + size], "index block")]


# -- safetensors ---------------------------------------------------------------------------
def _safetensors(header: object, data: bytes, *, raw_header: bytes | None = None) -> bytes:
    text = raw_header if raw_header is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def safetensors_entries() -> dict[str, bytes]:
    f32 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    data = np.array([1.0, 2.0], np.float32).tobytes()
    found = {
        "TruncatedFileError--shorter-than-the-header-length.safetensors": b"\x10\x00\x00",
        "TruncatedFileError--header-length-larger-than-the-file.safetensors": struct.pack("<Q", 4096) + b"{}",
        "CorruptCheckpointError--header-length-over-the-cap.safetensors": struct.pack("<Q", 100_000_001) + b"{}",
        "CorruptCheckpointError--header-not-json.safetensors": _safetensors(None, data, raw_header=b"{'a': nope"),
        "CorruptCheckpointError--header-not-utf8.safetensors": _safetensors(None, data, raw_header=b'{"\xff": 1}'),
        "CorruptCheckpointError--header-a-json-list.safetensors": _safetensors([1, 2], data),
        "CorruptCheckpointError--duplicate-keys.safetensors": _safetensors(
            None, data, raw_header=b'{"a": ' + json.dumps(f32).encode() + b', "a": ' + json.dumps(f32).encode() + b"}"
        ),
        "CorruptCheckpointError--overlapping-offsets.safetensors": _safetensors(
            {"a": f32, "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, data
        ),
        "CorruptCheckpointError--a-hole-between-tensors.safetensors": _safetensors(
            {"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, data
        ),
        "CorruptCheckpointError--bytes-after-the-last-tensor.safetensors": _safetensors({"a": f32}, data + b"\0" * 4),
        "CorruptCheckpointError--negative-dimension.safetensors": _safetensors(
            {"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, data
        ),
        "CorruptCheckpointError--huge-shape-2-62-elements.safetensors": _safetensors(
            {"a": {"dtype": "F32", "shape": [1 << 31, 1 << 31], "data_offsets": [0, 8]}}, data
        ),
        "TruncatedFileError--huge-shape-with-matching-offsets.safetensors": _safetensors(
            {"a": {"dtype": "F32", "shape": [1 << 31, 1 << 31], "data_offsets": [0, 1 << 64]}}, data
        ),
        "CorruptCheckpointError--size-not-elements-times-itemsize.safetensors": _safetensors(
            {"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, data
        ),
        "CorruptCheckpointError--negative-offset.safetensors": _safetensors(
            {"a": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}}, data
        ),
        "TruncatedFileError--offsets-past-the-end.safetensors": _safetensors(
            {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, data
        ),
        "UnsupportedFormatError--70-dimensions.safetensors": _safetensors(
            {"a": {"dtype": "F32", "shape": [1] * 70, "data_offsets": [0, 4]}}, data[:4]
        ),
        "CorruptCheckpointError--an-int-of-5000-digits.safetensors": _safetensors(
            None, data, raw_header=b'{"a": {"dtype": "F32", "shape": [1' + b"0" * 5000 + b'], "data_offsets": [0, 8]}}'
        ),
        "UnsupportedFormatError--unknown-dtype.safetensors": _safetensors(
            {"a": {"dtype": "F128", "shape": [1], "data_offsets": [0, 8]}}, data
        ),
        "CorruptCheckpointError--metadata-not-strings.safetensors": _safetensors(
            {"__metadata__": {"format": 3}, "a": f32}, data
        ),
    }
    return found


# -- NumPy ---------------------------------------------------------------------------------
def _npy(header: str, data: bytes = b"", version: tuple[int, int] = (1, 0)) -> bytes:
    text = header.encode("latin1")
    text += b" " * (-(len(text) + 11) % 64) + b"\n"
    length = struct.pack("<H" if version == (1, 0) else "<I", len(text))
    return b"\x93NUMPY" + bytes(version) + length + text + data


def _zip(members: list[tuple[str, bytes]], *, compress: bool = False) -> bytes:
    import io

    buffer = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, content in members:
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = method
            archive.writestr(info, content)
    return buffer.getvalue()


def _npy_of(array: np.ndarray) -> bytes:
    return npy_header(array) + array.tobytes()


def npy_header(array: np.ndarray) -> bytes:
    return numpy_files.npy_header("x", array.dtype, array.shape)


def _zip_bomb() -> bytes:
    """A deflated member that claims 1 TiB inflated from a few hundred bytes (its local and central sizes)."""
    content = _npy_of(np.zeros(64, np.float32))
    archive = bytearray(_zip([("bomb.npy", content)], compress=True))
    declared = struct.pack("<I", 0xFFFFFFF0)
    # Local header: uncompressed size at 22; central directory entry: at 24.
    archive[22:26] = declared
    central = archive.rindex(b"PK\x01\x02")
    archive[central + 24 : central + 28] = declared
    return bytes(archive)


def _wrong_crc() -> bytes:
    archive = bytearray(_zip([("weight.npy", _npy_of(np.arange(4, dtype=np.float32)))]))
    central = archive.rindex(b"PK\x01\x02")
    archive[central + 16] ^= 0xFF  # the central directory's CRC-32
    archive[14] ^= 0xFF  # and the local header's
    return bytes(archive)


def numpy_entries() -> dict[str, bytes]:
    good = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }"
    weight = _npy_of(np.arange(4, dtype=np.float32))
    return {
        "RefusedError--object-dtype-pickle.npy": _npy(
            "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }",
            b"\x80\x04\x95\x1f\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system\x94\x93\x94"
            b"\x8c\x05touch\x94\x85\x94R\x94.",
        ),
        "RefusedError--object-field-pickle.npy": _npy(
            "{'descr': [('a', '<i4'), ('b', '|O')], 'fortran_order': False, 'shape': (1,), }", b"\0" * 16
        ),
        "CorruptCheckpointError--fortran-order-not-a-bool.npy": _npy(
            "{'descr': '<f4', 'fortran_order': 'yes', 'shape': (2,), }", b"\0" * 8
        ),
        "TruncatedFileError--fortran-order-data-cut-short.npy": _npy(
            "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", b"\0" * 20
        ),
        "TruncatedFileError--huge-shape-2-62-elements.npy": _npy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2147483648, 2147483648), }", b"\0" * 8
        ),
        "TruncatedFileError--huge-shape-past-2-63-bytes.npy": _npy(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", b"\0" * 8
        ),
        "CorruptCheckpointError--negative-dimension.npy": _npy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", b"\0" * 8
        ),
        "TruncatedFileError--data-cut-short.npy": _npy(good, b"\0" * 7),
        "TruncatedFileError--cut-inside-the-header.npy": _npy(good)[:20],
        "TruncatedFileError--cut-inside-the-magic.npy": b"\x93NUM",
        "CorruptCheckpointError--header-is-code.npy": _npy(
            "{'descr': __import__('os').system('touch /tmp/weightscope-corpus-marker-npy'), "
            "'fortran_order': False, 'shape': (1,), }"
        ),
        "CorruptCheckpointError--header-over-the-limit.npy": _npy(" " * 20_000, version=(2, 0)),
        "UnsupportedFormatError--70-dimensions.npy": _npy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (" + "1, " * 70 + "), }", b"\0" * 4
        ),
        "UnsupportedFormatError--version-9.npy": _npy(good, b"\0" * 8, version=(9, 0)),
        "UnsupportedFormatError--unknown-descr.npy": _npy(
            "{'descr': '<q9', 'fortran_order': False, 'shape': (2,), }", b"\0" * 8
        ),
        "CorruptCheckpointError--zip-bomb-member.npz": _zip_bomb(),
        "ChecksumMismatchError--member-with-a-wrong-crc.npz": _wrong_crc(),
        "CorruptCheckpointError--two-members-of-one-name.npz": _zip([("w.npy", weight), ("w.npy", weight)]),
        "RefusedError--object-dtype-member.npz": _zip(
            [("objects.npy", _npy("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", b"\x80\x04N."))]
        ),
        "CorruptCheckpointError--not-a-zip.npz": b"PK\x03\x04" + b"\0" * 60,
        "CorruptCheckpointError--damaged-deflate-stream.npz": _damaged_deflate(),
        "UnsupportedFormatError--bzip2-member.npz": _bzip2(weight),
    }


def _damaged_deflate() -> bytes:
    archive = bytearray(_zip([("w.npy", _npy_of(np.arange(64, dtype=np.float32)))], compress=True))
    start = 30 + len("w.npy")
    archive[start : start + 4] = b"\xff\xff\xff\xff"
    return bytes(archive)


def _bzip2(content: bytes) -> bytes:
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_BZIP2) as archive:
        archive.writestr(zipfile.ZipInfo("w.npy", date_time=(2020, 1, 1, 0, 0, 0)), content, zipfile.ZIP_BZIP2)
    return buffer.getvalue()


# -- writing it all ------------------------------------------------------------------------
def _fresh(group: str) -> Path:
    directory = HERE / group
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir()
    return directory


def main() -> None:
    directory = _fresh("tensorflow")
    for name, (index, data) in tensorflow_entries().items():
        (directory / name).mkdir()
        (directory / name / INDEX).write_bytes(index)
        (directory / name / DATA).write_bytes(data)
    directory = _fresh("safetensors")
    for name, content in safetensors_entries().items():
        (directory / name).write_bytes(content)
    directory = _fresh("numpy")
    for name, content in numpy_entries().items():
        (directory / name).write_bytes(content)


if __name__ == "__main__":
    main()
