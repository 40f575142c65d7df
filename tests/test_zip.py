"""The zip container's CRC-32: spread over cores, combined, equal to zlib's on every size."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from weightscope.containers import zip as zip_container


@pytest.mark.parametrize("cores", [1, 2, 3, 8])
@pytest.mark.parametrize("size", [0, 1, 7, (8 << 20) - 1, (16 << 20) + 5, (40 << 20) + 3])
def test_crc32_equals_zlib_on_any_core_count(monkeypatch: pytest.MonkeyPatch, cores: int, size: int) -> None:
    monkeypatch.setattr(zip_container.os, "cpu_count", lambda: cores)
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)
    assert zip_container.crc32(memoryview(data)) == zlib.crc32(data)


@pytest.mark.parametrize("split", [0, 1, 1000, 4095])
def test_crc32_combine_joins_two_pieces(split: int) -> None:
    data = np.random.default_rng(split).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    first, second = data[:split], data[split:]
    combined = zip_container.crc32_combine(zlib.crc32(first), zlib.crc32(second), len(second))
    assert combined == zlib.crc32(data)
