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


def test_a_read_only_buffer_is_taken_as_it_is() -> None:
    """Tensors are views of read-only maps: the kernel reads them without a copy or a writable buffer."""
    values = np.linspace(-1, 1, 1001, dtype=np.float32)
    mapped = np.frombuffer(values.tobytes(), np.float32)
    assert not mapped.flags.writeable
    assert _kernels.block_figures(mapped) == _kernels.block_figures(values)
