"""weightscope._kernels, the C kernel of the fused float path, against numpy's figures of the same values."""

from __future__ import annotations

import numpy as np
import pytest

from weightscope import _kernels


def _oracle(values: np.ndarray) -> tuple[float, float, float, float, int]:
    wide = values.astype(np.float64)
    return (
        float(wide.sum()),
        float((wide * wide).sum()),
        float(values.min()),
        float(values.max()),
        int(np.count_nonzero(values == 0)),
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("count", [*range(1, 40), 1 << 10, (1 << 18) + 7])
def test_block_figures_equal_numpys_for_every_count_of_lanes(dtype: type, count: int) -> None:
    """Every length, so the lanes' remainder (16 at a time, the rest into the first) and the lanes' joining show."""
    rng = np.random.default_rng(count)
    values = (rng.standard_normal(count) * rng.choice([1e-3, 1.0, 1e3], count)).astype(dtype)
    values[:: max(2, count // 5)] = 0.0
    values[-1] = -np.abs(values).max() - 1  # the extremes at the ends, where the first lane and the rest differ
    values[0] = np.abs(values).max() + 1
    sum_, squares, low, high, zeros = _kernels.block_figures(values)  # type: ignore[misc]
    expected = _oracle(values)
    assert (low, high, zeros) == expected[2:]
    magnitude = float(np.abs(values.astype(np.float64)).sum())
    assert abs(sum_ - expected[0]) <= 1e-13 * magnitude
    assert squares == pytest.approx(expected[1], rel=1e-13)
    rest, deviations = _kernels.deviations(values, 0.25)
    gaps = values.astype(np.float64) - 0.25
    assert abs(rest - gaps.sum()) <= 1e-13 * float(np.abs(gaps).sum())
    assert deviations == pytest.approx(float((gaps * gaps).sum()), rel=1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("where", [0, 5, 15, 16, 33, -1])
def test_a_nan_or_infinity_in_any_lane_gives_none(dtype: type, value: float, where: int) -> None:
    values = np.ones(35, dtype)
    values[where] = value
    assert _kernels.block_figures(values) is None


def test_float64_values_whose_squares_overflow_give_none() -> None:
    assert _kernels.block_figures(np.array([1.0, 1e200, -3.0])) is None
    assert _kernels.block_figures(np.array([1.0, 1e150, -3.0])) is not None  # 1e300: not an overflow


@pytest.mark.parametrize(
    ("block", "error"),
    [
        (np.arange(4, dtype=np.int32), TypeError),  # not a float
        (np.ones(4, np.dtype(">f4")), TypeError),  # not in the machine's byte order
        (np.ones(4, np.float16), TypeError),  # narrower floats are widened by the caller
        (np.ones(8, np.float32)[::2], ValueError),  # not contiguous
        (np.ones(0, np.float32), ValueError),  # no values: no min or max
        (b"\0\0\0\0", TypeError),  # bytes: no float format
    ],
    ids=["int32", ">f4", "float16", "strided", "empty", "bytes"],
)
def test_a_block_it_cannot_take_is_refused(block: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        _kernels.block_figures(block)  # type: ignore[arg-type]


def test_the_machines_byte_order_is_taken_however_it_is_spelled() -> None:
    """A dtype whose byte order was set to little-endian (as a PyTorch storage's is) exports '<f': on this
    little-endian machine, native values, equal to float32's."""
    values = np.linspace(-1, 1, 101, dtype=np.float32)
    little = values.view(np.dtype(np.float32).newbyteorder("<"))
    assert memoryview(little).format == "<f" and memoryview(values).format == "f"
    assert _kernels.block_figures(little) == _kernels.block_figures(values)
    assert _kernels.pair_figures(little, values, 0.0, 0.0) == _kernels.pair_figures(values, values, 0.0, 0.0)


def test_a_read_only_buffer_is_taken_as_it_is() -> None:
    """Tensors are views of read-only maps: the kernel reads them without a copy or a writable buffer."""
    values = np.linspace(-1, 1, 1001, dtype=np.float32)
    mapped = np.frombuffer(values.tobytes(), np.float32)
    assert not mapped.flags.writeable
    assert _kernels.block_figures(mapped) == _kernels.block_figures(values)


def _pair_oracle(a: np.ndarray, b: np.ndarray, rtol: float, atol: float) -> tuple[float, int, float, float, float]:
    x, y = a.astype(np.float64), b.astype(np.float64)
    gap = np.abs(x - y)
    mismatched = int(np.count_nonzero(gap > np.abs(y) * rtol + atol))
    return float(gap.max()), mismatched, float(x @ y), float(x @ x), float(y @ y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("count", [1, 15, 16, 17, 33, (1 << 18) + 3])
@pytest.mark.parametrize(("rtol", "atol"), [(0.0, 0.0), (1e-3, 0.5), (0.0, 1e-2)])
def test_pair_figures_equal_numpys(dtype: type, count: int, rtol: float, atol: float) -> None:
    rng = np.random.default_rng(count)
    a = rng.standard_normal(count).astype(dtype)
    b = a.copy()
    changed = rng.random(count) < 0.3
    b[changed] += rng.standard_normal(int(changed.sum())).astype(dtype)
    b[-1] = a[-1] + 7  # the largest gap in the last value, the first lane's remainder
    max_abs, mismatched, products, a_squares, b_squares, gap_squares = _kernels.pair_figures(a, b, rtol, atol)  # type: ignore[misc]
    expected = _pair_oracle(a, b, rtol, atol)
    assert (max_abs, mismatched) == expected[:2]  # one value's gap, and a count: exact
    for got, want in zip((products, a_squares, b_squares), expected[2:], strict=True):
        assert got == pytest.approx(want, rel=1e-12)
    gaps = a.astype(np.float64) - b.astype(np.float64)
    assert gap_squares == pytest.approx(float(gaps @ gaps), rel=1e-12)


def test_a_pair_of_the_same_bytes_has_one_sum_three_times_and_no_gap() -> None:
    a = np.random.default_rng(3).standard_normal(1001).astype(np.float32)
    max_abs, mismatched, products, a_squares, b_squares, gap_squares = _kernels.pair_figures(a, a.copy(), 0.0, 0.0)  # type: ignore[misc]
    assert (max_abs, mismatched, gap_squares) == (0.0, 0, 0.0) and products == a_squares == b_squares


@pytest.mark.parametrize("value", [np.nan, np.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("side", [0, 1])
def test_a_pair_with_a_nan_or_infinity_on_either_side_gives_none(value: float, side: int) -> None:
    pair = [np.ones(21, np.float32), np.ones(21, np.float32)]
    pair[side][20] = value
    assert _kernels.pair_figures(pair[0], pair[1], 0.0, 0.0) is None


@pytest.mark.parametrize(
    "b", [np.ones(5, np.float64), np.ones(4, np.float32), np.ones(5, np.int32)], ids=["type", "length", "int32"]
)
def test_a_pair_of_other_types_or_lengths_is_refused(b: np.ndarray) -> None:
    with pytest.raises((TypeError, ValueError)):
        _kernels.pair_figures(np.ones(5, np.float32), b, 0.0, 0.0)


# -- the zip CRC-32 -------------------------------------------------------------------------------------------------


def test_crc32_equals_zlibs_for_every_length_start_and_value() -> None:
    """Every length from 0 to 300 (the four lanes' 64-byte steps, the 16-byte steps after them, and the bytes taken
    one at a time), at unaligned starts, continuing several values; under 64 bytes it gives None (zlib-ng's)."""
    import zlib

    data = memoryview(np.random.default_rng(9).bytes(1 << 16))
    for length in [*range(301), 4095, 4096, 4097, 65_521]:
        for start in (0, 1, 7):
            piece = data[start : start + length]
            for value in (0, 1, 0x12345678, 0xFFFFFFFF):
                found = _kernels.crc32(piece, value)
                assert (found is None) == (length < 64), length
                assert found is None or found == zlib.crc32(piece, value), (length, start, value)


def test_crc32_of_a_span_in_pieces_joins_as_zlibs() -> None:
    """A span cut where ``span_checks`` cuts it, each piece's CRC-32 continued from the last: zlib's of the whole."""
    import zlib

    data = np.random.default_rng(10).integers(0, 256, (8 << 20) + 77, dtype=np.uint8)  # the last piece 77 bytes
    value = 0
    for start in range(0, data.size, 4 << 20):
        found = _kernels.crc32(data[start : start + (4 << 20)], value)
        assert found is not None
        value = found
    assert value == zlib.crc32(data)


@pytest.mark.parametrize(
    ("data", "value", "error"),
    [(b"x" * 64, -1, OverflowError), (b"x" * 64, 1 << 32, OverflowError), ("text", 0, TypeError)],
)
def test_crc32_refuses_what_it_cannot_take(data: object, value: int, error: type[Exception]) -> None:
    with pytest.raises(error):
        _kernels.crc32(data, value)  # type: ignore[arg-type]


def test_zip_crc32_folds_spans_from_a_mebibyte(monkeypatch: pytest.MonkeyPatch) -> None:
    """``containers.zip.crc32`` takes the kernel's fold for FOLDED_BYTES and more (spans read from memory), zlib-ng
    below (in cache, where its own loop is faster); the same value either way."""
    import zlib

    from weightscope.containers import zip as zip_container

    assert zip_container.FOLDED_BYTES == 1 << 20
    calls: list[int] = []
    folded = _kernels.crc32

    def counted(data: memoryview, value: int) -> int | None:
        calls.append(len(data))
        return folded(data, value)

    monkeypatch.setattr(zip_container._kernels, "crc32", counted)
    data = memoryview(np.random.default_rng(11).bytes((1 << 20) + 5))
    assert zip_container.crc32(data, 7) == zlib.crc32(data, 7) and calls == [(1 << 20) + 5]
    assert zip_container.crc32(data[:-6], 7) == zlib.crc32(data[:-6], 7) and calls == [(1 << 20) + 5]
    monkeypatch.setattr(zip_container, "_kernels", None)  # built without a C compiler
    assert zip_container.crc32(data, 7) == zlib.crc32(data, 7) and len(calls) == 1
