"""Plain pickles of NumPy arrays (JAX/Haiku ``params.pkl``): read as ``pickle.load`` reads them, nothing run."""

from __future__ import annotations

import collections
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import weightscope as ws
from weightscope.cli import main


def _params() -> dict[str, Any]:
    """What a Haiku project pickles: modules of arrays, with a few numbers and names beside them."""
    rng = np.random.default_rng(0)
    return {
        "mlp/~/linear_0": {"w": rng.standard_normal((3, 4)).astype(np.float32), "b": np.zeros(4, np.float32)},
        "embed": {"embeddings": rng.integers(0, 100, (5, 2)).astype(np.int64)},
        "fortran": np.asfortranarray(rng.standard_normal((3, 2))),
        "big_endian": np.arange(6, dtype=">i4").reshape(2, 3),
        "transposed": np.arange(12, dtype=np.float16).reshape(3, 4).T,
        "scalar": np.float32(2.5),
        "mask": np.array([True, False, True]),
        "complex": np.array([1 + 2j, -3j], np.complex64),
        "empty": np.zeros((0, 3), np.float32),
        "bytes": np.arange(5000, dtype=np.uint8),  # long enough to be a view of the file
        "ordered": collections.OrderedDict(x=np.ones(2, np.int8)),
        "layers": [np.full((2,), 7, np.uint16), np.full((1,), -1, np.int16)],
        "step": 10,
        "name": "model",
    }


def _flatten(value: Any, name: str = "") -> dict[str, np.ndarray]:
    if isinstance(value, np.ndarray | np.generic):
        return {name: np.asarray(value)}
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list | tuple) else []
    found: dict[str, np.ndarray] = {}
    for key, item in items:
        found.update(_flatten(item, f"{name}.{key}" if name else str(key)))
    return found


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_numpy_pickles_read_as_pickle_loads_them(tmp_path: Path, protocol: int) -> None:
    path = tmp_path / "params.pkl"
    with path.open("wb") as file:
        pickle.dump(_params(), file, protocol=protocol)
    with path.open("rb") as file:
        expected = _flatten(pickle.load(file))  # the oracle: a trusted file we just wrote
    with ws.open(path) as ckpt:
        assert ckpt.format == "pickle"
        assert sorted(ckpt) == sorted(expected)
        for name, array in expected.items():
            ours = ckpt[name]
            # NumPy 2 unpickles a big-endian array in native order: the same values, bit for bit
            assert ours.dtype.newbyteorder("=") == array.dtype.newbyteorder("=") and ours.shape == array.shape
            assert ours.astype(array.dtype).tobytes() == array.tobytes(), name
            assert not ours.flags.writeable
        assert ckpt.metadata == {"step": "10", "name": "model"}
        if protocol >= 3:  # bytes in one piece: the array is a view of the mapped file, not a copy
            assert not ckpt["bytes"].flags.owndata and ckpt["bytes"].base is not None
    assert main(["ls", str(path)]) == 0


def test_a_bare_array_is_named_after_the_file(tmp_path: Path) -> None:
    path = tmp_path / "weights.pickle"
    path.write_bytes(pickle.dumps(np.arange(4.0)))
    with ws.open(path) as ckpt:
        assert list(ckpt) == ["weights"]
        np.testing.assert_array_equal(ckpt["weights"], np.arange(4.0))


class _Frozen(dict):  # type: ignore[type-arg]
    """Stands for a class a pickle names that is not on the allow-list (flax's FrozenDict)."""


class _System:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("touch /tmp/weightscope-pickle-marker",))


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        ({"w": _System()}, ws.RefusedError, r"wants to call (posix|os)\.system"),
        (_Frozen(w=np.ones(2)), ws.RefusedError, r"wants to call test_pickle_files\._Frozen"),
        ({"w": np.array([1, "a"], dtype=object)}, ws.UnsupportedFormatError, "dtype 'O8'"),
        ({"w": np.zeros(2, dtype=[("a", "<f4"), ("b", "<i4")])}, ws.UnsupportedFormatError, "V8"),
        ({"w": np.array(["2020-01-01"], dtype="M8[D]")}, ws.UnsupportedFormatError, "M8"),
    ],
)
def test_anything_but_arrays_of_numbers_is_refused_by_name(
    tmp_path: Path, value: object, error: type[Exception], match: str
) -> None:
    path = tmp_path / "params.pkl"
    path.write_bytes(pickle.dumps(value, protocol=4))
    with pytest.raises(error, match=match):
        ws.open(path)
    assert not Path("/tmp/weightscope-pickle-marker").exists()


def test_an_array_state_with_the_wrong_number_of_bytes_is_corrupt(tmp_path: Path) -> None:
    data = pickle.dumps({"w": np.arange(4, dtype=np.int32)}, protocol=4)
    raw = np.arange(4, dtype=np.int32).tobytes()
    assert data.count(raw) == 1
    path = tmp_path / "short.pkl"
    path.write_bytes(data.replace(b"C\x10" + raw, b"C\x0c" + raw[:12]))  # SHORT_BINBYTES of 12, not 16
    with pytest.raises(ws.CorruptCheckpointError, match="needs 16 bytes, not 12"):
        ws.open(path)


def test_scan_lists_a_plain_pickles_names_and_agrees_with_ls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, bad = tmp_path / "params.pkl", tmp_path / "bad.pkl"
    good.write_bytes(pickle.dumps(_params(), protocol=4))
    bad.write_bytes(pickle.dumps({"w": np.ones(2), "x": _System()}, protocol=4))
    assert main(["scan", str(good)]) == 0
    assert "allowed REDUCE numpy._core.multiarray._reconstruct" in capsys.readouterr().out
    assert main(["ls", str(bad)]) == 6
    capsys.readouterr()
    assert main(["scan", str(bad)]) == 6
    out = capsys.readouterr().out
    assert "allowed STACK_GLOBAL numpy.dtype" in out and "REFUSED STACK_GLOBAL posix.system" in out
    assert not Path("/tmp/weightscope-pickle-marker").exists()
