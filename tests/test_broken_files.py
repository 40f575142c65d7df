"""Damaged TensorFlow checkpoints: each kind of damage gives its own typed, named error."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import weightscope as ws
from weightscope.containers.table import FOOTER_SIZE


def _index(prefix: Path) -> Path:
    return Path(f"{prefix}.index")


def _data(prefix: Path) -> Path:
    return Path(f"{prefix}.data-00000-of-00001")


def _flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x40
    path.write_bytes(raw)


def test_truncated_data_file(seed_copy: Path) -> None:
    data = _data(seed_copy)
    data.write_bytes(data.read_bytes()[:-10])
    with pytest.raises(ws.TruncatedFileError, match=r"past the end of .*data-00000-of-00001") as caught:
        ws.open(seed_copy)
    assert isinstance(caught.value, EOFError)


def test_flipped_byte_in_data_names_the_tensor(seed_copy: Path) -> None:
    with ws.open(seed_copy) as ckpt:
        info = ckpt.info("layer2/bias")
    _flip(_data(seed_copy), info.offset + 1)
    with ws.open(seed_copy) as ckpt:
        assert ckpt["layer1/kernel"].shape == (2, 5)  # the others still read
        with pytest.raises(ws.ChecksumMismatchError, match="tensor 'layer2/bias' is damaged"):
            ckpt["layer2/bias"]
        problems = ckpt.verify()
    assert [type(problem) for problem in problems] == [ws.ChecksumMismatchError]
    assert "layer2/bias" in str(problems[0])


def test_missing_shard_names_the_file(seed_copy: Path) -> None:
    _data(seed_copy).unlink()
    with pytest.raises(ws.CheckpointNotFoundError, match=r"data-00000-of-00001: data shard missing"):
        ws.open(seed_copy)


def test_missing_index(tmp_path: Path) -> None:
    with pytest.raises(ws.CheckpointNotFoundError, match=r"model\.ckpt\.index"):
        ws.open(tmp_path / "model.ckpt.index")
    with pytest.raises(ws.CheckpointNotFoundError, match="no checkpoint in it"):
        ws.open(tmp_path)


@pytest.mark.parametrize("keep", [0, 7, FOOTER_SIZE - 1, FOOTER_SIZE + 3])
def test_truncated_index(seed_copy: Path, keep: int) -> None:
    index = _index(seed_copy)
    raw = index.read_bytes()
    index.write_bytes(raw[:keep] if keep < FOOTER_SIZE else raw[:keep] + raw[-FOOTER_SIZE:])
    with pytest.raises(ws.CorruptCheckpointError):
        ws.open(seed_copy)


def test_index_shorter_than_its_footer_is_truncated(seed_copy: Path) -> None:
    _index(seed_copy).write_bytes(b"\x00" * 10)
    with pytest.raises(ws.TruncatedFileError, match="too short for a table footer"):
        ws.open(seed_copy)


def test_garbage_index(seed_copy: Path) -> None:
    _index(seed_copy).write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ws.CorruptCheckpointError, match="bad table magic"):
        ws.open(seed_copy)


def test_bad_magic(seed_copy: Path) -> None:
    index = _index(seed_copy)
    _flip(index, index.stat().st_size - 1)
    with pytest.raises(ws.CorruptCheckpointError, match="not a TensorFlow checkpoint index"):
        ws.open(seed_copy)


def test_flipped_byte_in_index_block(seed_copy: Path) -> None:
    _flip(_index(seed_copy), 20)  # inside the first data block
    with pytest.raises(ws.ChecksumMismatchError, match="data block at 0 is damaged"):
        ws.open(seed_copy)


def test_block_handle_outside_the_file(seed_copy: Path) -> None:
    index = _index(seed_copy)
    raw = bytearray(index.read_bytes())
    footer = len(raw) - FOOTER_SIZE
    # metaindex handle (0, 0), then an index handle far beyond the end of the file.
    handle = bytes([0, 0]) + bytes([0xFF, 0xFF, 0xFF, 0x7F, 0x10])
    raw[footer : footer + len(handle)] = handle
    index.write_bytes(raw)
    with pytest.raises(ws.TruncatedFileError, match="EOF reading index block"):
        ws.open(seed_copy)


def test_num_restarts_larger_than_the_block() -> None:
    from weightscope.containers.table import iter_block

    block = b"\x00\x00\x00" + struct.pack("<I", 1000)
    with pytest.raises(ws.CorruptCheckpointError, match="restart points"):
        list(iter_block(block, "test block"))


def _rebuild_index(prefix: Path, *, snappy: bool) -> None:
    from weightscope.containers.table import build_table, iter_table
    from weightscope.sources import FileSource

    entries = list(iter_table(FileSource(_index(prefix))))
    _index(prefix).write_bytes(build_table(entries, snappy=snappy))


def test_snappy_compressed_index_reads_the_same(seed_copy: Path) -> None:
    with ws.open(seed_copy) as ckpt:
        before = {name: ckpt[name].tolist() for name in ckpt}
    size = _index(seed_copy).stat().st_size
    _rebuild_index(seed_copy, snappy=True)
    assert _index(seed_copy).stat().st_size != size
    with ws.open(seed_copy) as ckpt:
        assert {name: ckpt[name].tolist() for name in ckpt} == before


@pytest.mark.parametrize(
    ("compressed", "message"),
    [
        (b"\x05\xff\xff\xff\xff", "not valid snappy data"),
        (b"\xff\xff\xff\xff\xff\xff\x0f\x00", "claims 70368744177663 bytes uncompressed"),
        (b"\xb1\x01" + b"\x00" * 6, "claims 177 bytes uncompressed, more than snappy makes of 8"),  # 22 x 8 = 176
    ],
)
def test_bad_snappy_block_is_corrupt(
    seed_copy: Path, monkeypatch: pytest.MonkeyPatch, compressed: bytes, message: str
) -> None:
    import cramjam

    # Blocks whose checksums are right but whose snappy data is not.
    monkeypatch.setattr(cramjam.snappy, "compress_raw", lambda data: compressed)
    _rebuild_index(seed_copy, snappy=True)
    with pytest.raises(ws.CorruptCheckpointError, match=message):
        ws.open(seed_copy)


def _rewrite_index(prefix: Path, change: Callable[[bytes, bytes], bytes]) -> None:
    """Rebuild the index of ``prefix`` with each entry's value passed through ``change(key, value)``."""
    from weightscope.containers.table import build_table, iter_table
    from weightscope.sources import FileSource

    source = FileSource(_index(prefix))
    try:
        entries = [(key, change(key, value)) for key, value in iter_table(source)]
    finally:
        source.close()
    _index(prefix).write_bytes(build_table(entries))


def test_overlapping_tensors_are_corrupt(tmp_path: Path) -> None:
    from weightscope import _proto

    prefix = ws.save({"a": np.arange(4, dtype=np.float32), "b": np.ones(4, np.float32)}, tmp_path / "model.ckpt")

    def overlap(key: bytes, value: bytes) -> bytes:
        if key != b"b":
            return value
        entry = _proto.BundleEntryProto.FromString(value)
        entry.offset = 8  # into a's 16 bytes
        return entry.SerializeToString()

    _rewrite_index(prefix, overlap)
    with pytest.raises(ws.CorruptCheckpointError, match=r"tensors 'a' \(bytes 0..16\) and 'b' \(bytes 8..24\) overlap"):
        ws.open(prefix)


def test_an_empty_object_graph_is_corrupt(tmp_path: Path) -> None:
    """Found by fuzz_tf_object_graph: a graph without nodes (not even the root) made roles an IndexError."""
    prefix = ws.save(
        {"x": np.zeros(2, np.float32), "_CHECKPOINTABLE_OBJECT_GRAPH": np.array(b"", object)}, tmp_path / "m"
    )
    with ws.open(prefix) as ckpt, pytest.raises(ws.CorruptCheckpointError, match="no nodes, not even the root"):
        ckpt.role("x")


def _entry_change(name: bytes, change: Callable[[object], None]) -> Callable[[bytes, bytes], bytes]:
    from weightscope import _proto

    def rewrite(key: bytes, value: bytes) -> bytes:
        if key != name:
            return value
        entry = _proto.BundleEntryProto.FromString(value)
        change(entry)
        return entry.SerializeToString()

    return rewrite


def test_a_string_tensor_of_no_bytes_claiming_2_60_strings_is_corrupt_before_any_allocation(tmp_path: Path) -> None:
    prefix = ws.save({"s": np.array([b"a"], object)}, tmp_path / "model.ckpt")

    def huge(entry: object) -> None:
        entry.shape.ClearField("dim")  # type: ignore[attr-defined]
        entry.shape.dim.add(size=1 << 30)  # type: ignore[attr-defined]
        entry.shape.dim.add(size=1 << 30)  # type: ignore[attr-defined]
        entry.size = 0  # type: ignore[attr-defined]

    _rewrite_index(prefix, _entry_change(b"s", huge))
    with ws.open(prefix) as ckpt, pytest.raises(ws.CorruptCheckpointError, match="1152921504606846976 strings"):
        ckpt["s"]


def test_slices_must_cover_the_partitioned_variable_and_be_of_its_type(tmp_path: Path) -> None:
    """A full shape of 2**62 elements with one small slice is refused, not allocated; a slice of another type too."""
    from weightscope import _proto
    from weightscope.containers.table import build_table, iter_table
    from weightscope.formats._ordered_code import _slice_key
    from weightscope.sources import FileSource

    prefix = ws.save({"part": np.arange(12, dtype=np.float32).reshape(3, 4)}, tmp_path / "model.ckpt")
    source = FileSource(_index(prefix))
    try:
        header, (_, stored) = list(iter_table(source))
    finally:
        source.close()

    def partitioned(rows: int, dtype: int = 1) -> list[tuple[bytes, bytes]]:
        full = _proto.BundleEntryProto.FromString(stored)
        full.dtype = dtype  # type: ignore[assignment]
        for field in ("offset", "size", "crc32c"):
            full.ClearField(field)
        full.shape.dim[0].size = rows
        piece = full.slices.add()
        piece.extent.add(start=0, length=3)
        piece.extent.add()
        return [header, (_slice_key(b"part", [(0, 3), (0, -1)]), stored), (b"part", full.SerializeToString())]

    _index(prefix).write_bytes(build_table(partitioned(3)))
    with ws.open(prefix) as ckpt:  # one slice that is the whole: reads
        assert ckpt["part"].tolist() == np.arange(12, dtype=np.float32).reshape(3, 4).tolist()
    _index(prefix).write_bytes(build_table(partitioned(3, dtype=9)))  # the whole int64, its slice float32
    with pytest.raises(ws.CorruptCheckpointError, match="'part' is stored as float32, the variable is int64"):
        ws.open(prefix)
    _index(prefix).write_bytes(build_table(partitioned(1 << 60)))
    with pytest.raises(
        ws.CorruptCheckpointError, match="the slices of 'part' hold 12 elements of its 4611686018427387904"
    ):
        ws.open(prefix)


def test_a_string_length_of_2_70_is_corrupt(tmp_path: Path) -> None:
    """Found by fuzz_tf_bundle: a 10-byte varint length past 2**64 made struct.pack fail (now refused as a varint)."""
    prefix = ws.save({"s": np.array([b"abcdefghijklmno"], object)}, tmp_path / "model.ckpt")
    data = bytearray(_data(prefix).read_bytes())
    for length, message in ((b"\xff" * 9 + b"\x7f", "over 64 bits"), (b"\xff" * 9 + b"\x01", "a string of")):
        data[:10] = length
        _data(prefix).write_bytes(data)
        for verify in (True, False):
            with ws.open(prefix, verify=verify) as ckpt, pytest.raises(ws.CorruptCheckpointError, match=message):
                ckpt["s"]


def test_more_dimensions_than_numpy_holds_are_unsupported(tmp_path: Path) -> None:
    prefix = ws.save({"x": np.zeros(1, np.float32)}, tmp_path / "model.ckpt")

    def rank_70(entry: object) -> None:
        entry.shape.ClearField("dim")  # type: ignore[attr-defined]
        for _ in range(70):
            entry.shape.dim.add(size=1)  # type: ignore[attr-defined]

    _rewrite_index(prefix, _entry_change(b"x", rank_70))
    with pytest.raises(ws.UnsupportedFormatError, match="'x' has 70 dimensions; numpy arrays hold"):
        ws.open(prefix)


def test_a_header_claiming_2_20_shards_fails_at_the_first_missing_one_at_once(tmp_path: Path) -> None:
    import time

    from weightscope import _proto

    prefix = ws.save({"x": np.zeros(1, np.float32)}, tmp_path / "model.ckpt")
    header = _proto.BundleHeaderProto(num_shards=1 << 20).SerializeToString()
    _rewrite_index(prefix, lambda key, value: header if key == b"" else value)
    start = time.perf_counter()
    with pytest.raises(ws.CheckpointNotFoundError, match=r"model.ckpt.data-00000-of-1048576: data shard missing"):
        ws.open(prefix)
    assert time.perf_counter() - start < 0.5
