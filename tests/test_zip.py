"""The zip container's CRC-32 (zlib-ng's) equals zlib's on every size, and streams."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from weightscope.containers import zip as zip_container


@pytest.mark.parametrize("size", [0, 1, 7, 4095, (1 << 20) + 3, (40 << 20) + 3])
def test_crc32_equals_zlib(size: int) -> None:
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)
    assert zip_container.crc32(memoryview(data)) == zlib.crc32(data)
    split = size // 3
    streamed = zip_container.crc32(data[split:], zip_container.crc32(data[:split]))
    assert streamed == zlib.crc32(data)
