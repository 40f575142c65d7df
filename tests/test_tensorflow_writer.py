"""Writing TensorFlow checkpoints: TensorFlow reads what we write, and we write what it writes."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_same_tensor, killed_while_writing
from tf_fixtures import dtype_specs, tf_reader_values

import weightscope as ws


def test_every_dtype_written_by_weightscope_reads_in_tensorflow(tmp_path: Path) -> None:
    specs = dtype_specs()
    prefix = ws.save({name: value for name, _, value in specs}, tmp_path / "model.ckpt")
    theirs = tf_reader_values(prefix)
    assert sorted(theirs) == sorted(name for name, _, _ in specs)
    for name, _, value in specs:
        assert_same_tensor(np.asarray(value), theirs[name])


def _rewrite(prefix: Path, target: Path) -> Path:
    with ws.open(prefix) as ckpt:
        in_file_order = sorted(ckpt.infos(), key=lambda info: info.offset)
        return ws.save({info.name: ckpt[info.name] for info in in_file_order}, target)


def _assert_same_files(ours: Path, theirs: Path) -> None:
    for suffix in (".index", ".data-00000-of-00001"):
        assert Path(f"{ours}{suffix}").read_bytes() == Path(f"{theirs}{suffix}").read_bytes(), suffix


@pytest.mark.parametrize("fixture", ["seed", "many"])
def test_rewriting_a_tensorflow_checkpoint_is_byte_identical(
    tf_checkpoints: dict[str, Path], tmp_path: Path, fixture: str
) -> None:
    original = tf_checkpoints[fixture]
    _assert_same_files(_rewrite(original, tmp_path / "copy.ckpt"), original)


def _tf_save(prefix: Path, names: list[str], dtypes: list[str], values: list[np.ndarray]) -> Path:
    import tensorflow as tf

    tensors = [tf.constant(value, dtype=tf.as_dtype(dtype)) for dtype, value in zip(dtypes, values, strict=True)]
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=names, shape_and_slices=[""] * len(names), tensors=tensors)
    return prefix


def test_rewriting_every_dtype_is_byte_identical(tmp_path: Path) -> None:
    # The one allowed difference: TF's quantized types (qint8, quint8, ...) read as the
    # plain integers they hold, since numpy has no such types, and are written back as
    # those integers. The fixture without them must come back byte for byte.
    specs = [spec for spec in dtype_specs() if not spec[1].startswith(("qint", "quint"))]
    original = _tf_save(tmp_path / "tf" / "model.ckpt", *map(list, zip(*specs, strict=True)))
    _assert_same_files(_rewrite(original, tmp_path / "ours" / "model.ckpt"), original)


def test_index_of_many_blocks_is_byte_identical(tmp_path: Path) -> None:
    names = [f"model/encoder/block_{i:05d}/attention/query/kernel" for i in range(12000)]
    values = [np.full((i % 3 + 1,), i, np.float32) for i in range(len(names))]
    original = _tf_save(tmp_path / "tf" / "model.ckpt", names, ["float32"] * len(names), values)
    assert Path(f"{original}.index").stat().st_size > 2 * 256 * 1024  # three data blocks or more
    _assert_same_files(_rewrite(original, tmp_path / "ours" / "model.ckpt"), original)


def test_state_file_keeps_earlier_checkpoints(tmp_path: Path) -> None:
    import tensorflow as tf

    for step in (10, 20, 30):
        ws.save({"w": np.full(2, step, np.float32)}, tmp_path / f"model.ckpt-{step}")
    state = tf.train.get_checkpoint_state(str(tmp_path))
    assert [Path(p).name for p in state.all_model_checkpoint_paths] == [
        "model.ckpt-10",
        "model.ckpt-20",
        "model.ckpt-30",
    ]
    assert tf.train.latest_checkpoint(str(tmp_path)) == str(tmp_path / "model.ckpt-30")
    ws.save({"w": np.zeros(2, np.float32)}, tmp_path / "model.ckpt-20")  # saved again: newest now
    assert tf.train.latest_checkpoint(str(tmp_path)) == str(tmp_path / "model.ckpt-20")


def test_saved_checkpoint_reads_back(tmp_path: Path) -> None:
    tensors = {
        "scalar": np.float64(2.5),
        "big_endian": np.arange(6, dtype=">i4").reshape(2, 3),
        "transposed": np.arange(6, dtype=np.float32).reshape(2, 3).T,
        "strings": np.array([["a", "bb"], ["", "ü"]], dtype=object),
    }
    prefix = ws.save(tensors, tmp_path / "model.ckpt")
    with ws.open(prefix) as ckpt:
        assert ckpt["scalar"].shape == () and ckpt["scalar"] == 2.5
        np.testing.assert_array_equal(ckpt["big_endian"], np.arange(6).reshape(2, 3))
        assert ckpt["big_endian"].dtype == np.dtype("<i4")
        np.testing.assert_array_equal(ckpt["transposed"], tensors["transposed"])
        assert ckpt["strings"].tolist() == [[b"a", b"bb"], [b"", "ü".encode()]]
        assert not ckpt.verify()


@pytest.mark.parametrize(
    ("tensors", "error", "message"),
    [
        ({"": np.zeros(1)}, ws.UsageError, "non-empty strings"),
        (
            {"when": np.array(["2020-01-01"], dtype="datetime64[D]")},
            ws.UnsupportedFormatError,  # a type the format cannot hold: exit 5
            "TensorFlow holds no datetime64",
        ),
        ({"mixed": np.array([b"a", 3], dtype=object)}, ws.UsageError, "only bytes or str"),
    ],
)
def test_unwritable_tensors_are_refused_and_nothing_is_left(
    tmp_path: Path, tensors: dict[str, np.ndarray], error: type[ws.WeightscopeError], message: str
) -> None:
    with pytest.raises(error, match=message):
        ws.save(tensors, tmp_path / "model.ckpt")
    assert list(tmp_path.iterdir()) == []


def test_directory_is_not_a_prefix(tmp_path: Path) -> None:
    with pytest.raises(ws.UsageError, match="is a directory"):
        ws.save({"w": np.zeros(1)}, tmp_path)


SLOW_SAVE = """
import sys, time
import numpy as np
import weightscope as ws

class Slow(dict):
    def __getitem__(self, name):
        if name == "b":  # "a" is written by now
            print("writing", flush=True)
            time.sleep(60)
        return super().__getitem__(name)

ws.save(Slow(a=np.ones(1 << 20, np.float32), b=np.ones(4, np.float32)), sys.argv[1])
"""


def test_killed_save_leaves_the_earlier_checkpoint_intact(tmp_path: Path) -> None:
    prefix = tmp_path / "model.ckpt"
    ws.save({"w": np.arange(3, dtype=np.float32)}, prefix)
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    with killed_while_writing(textwrap.dedent(SLOW_SAVE), str(prefix)):
        pass
    after = {path.name: path.read_bytes() for path in tmp_path.iterdir() if not path.name.startswith(".")}
    assert after == before
    with ws.open(prefix) as ckpt:
        np.testing.assert_array_equal(ckpt["w"], np.arange(3, dtype=np.float32))
        assert not ckpt.verify()
