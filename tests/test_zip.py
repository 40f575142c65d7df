"""The zip container: its CRC-32 (zlib-ng's) equals zlib's on every size, and streams; zip64 archives read."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

import weightscope as ws
from weightscope.containers import zip as zip_container
from weightscope.sources import FileSource


@pytest.mark.parametrize("size", [0, 1, 7, 4095, (1 << 20) + 3, (40 << 20) + 3])
def test_crc32_equals_zlib(size: int) -> None:
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)
    assert zip_container.crc32(memoryview(data)) == zlib.crc32(data)
    split = size // 3
    streamed = zip_container.crc32(data[split:], zip_container.crc32(data[:split]))
    assert streamed == zlib.crc32(data)


@pytest.mark.parametrize("format", ["pytorch", "npz"])
def test_zip64_records_and_extra_fields_read_as_torch_and_numpy_read_them(
    format: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our writer with the zip64 threshold at 1 byte: every size and offset it can widen goes
    through a zip64 extra field, and the end records through the zip64 ones (as past 4 GiB)."""
    tensors = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.arange(5, dtype=np.int64)}
    monkeypatch.setattr(zip_container, "ZIP64_LIMIT", 1)
    path = ws.save(tensors, tmp_path / f"wide.{'pt' if format == 'pytorch' else 'npz'}", format=format)
    monkeypatch.undo()
    data = path.read_bytes()
    assert b"PK\x06\x06" in data and data.count(b"\x01\x00\x10\x00") >= 2  # zip64 end record, zip64 extras
    source = FileSource(path)
    try:
        members = zip_container.read_directory(source, path)
    finally:
        source.close()
    with zipfile.ZipFile(path) as archive:
        assert [(info.filename, info.header_offset, info.file_size) for info in archive.infolist()] == [
            (member.filename, member.header_offset, member.file_size) for member in members
        ]
    if format == "pytorch":
        import torch

        theirs = {name: value.numpy() for name, value in torch.load(path, weights_only=True).items()}
    else:
        theirs = dict(np.load(path))
    with ws.open(path) as checkpoint:
        assert sorted(checkpoint) == sorted(theirs) == sorted(tensors)
        for name, value in tensors.items():
            np.testing.assert_array_equal(checkpoint[name], theirs[name])
            np.testing.assert_array_equal(checkpoint[name], value)
