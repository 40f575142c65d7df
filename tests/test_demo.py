"""The seed's program end to end: `weightscope demo` trains, saves a real TF checkpoint, reads it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_same_tensor
from tf_fixtures import tf_reader_values

import weightscope as ws
from weightscope.cli import main
from weightscope.engines.numpy_engine import forward

SEED_VARIABLES = {
    "beta1_power": (),
    "beta2_power": (),
    **{f"{layer}/{kind}{slot}": shape for layer, shapes in (("layer1", ((2, 5), (5,))), ("layer2", ((5, 2), (2,))))
       for kind, shape in zip(("kernel", "bias"), shapes, strict=True) for slot in ("", "/Adam", "/Adam_1")},
}  # fmt: skip


def demo(capsys: pytest.CaptureFixture[str], *args: object) -> str:
    status = main(["demo", *map(str, args)])
    out, err = capsys.readouterr()
    assert status == 0, err
    return out


def losses(output: str) -> list[float]:
    return [float(value) for value in re.findall(r"^step: \d+, loss: (\S+)$", output, re.MULTILINE)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The demo with its defaults (1000 steps on 5000 samples), run once for this module."""
    out = tmp_path_factory.mktemp("demo") / "checkpoint" / "model.ckpt"
    capture = subprocess.run(
        [sys.executable, "-m", "weightscope", "demo", "--out", str(out), "--seed", "7"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out, capture.stdout


def test_demo_prints_what_the_seed_prints(trained: tuple[Path, str]) -> None:
    prefix, output = trained
    lines = output.splitlines()
    assert [line.split(",")[0] for line in lines[:10]] == [f"step: {step}" for step in range(0, 1000, 100)]
    values = losses(output)
    assert values[0] > 1.0 and values == sorted(values, reverse=True)
    assert 0.55 < values[-1] < 0.62  # the seed's run ended at 0.583916
    assert lines[10] == f"model saved in path: {prefix}"
    with ws.open(prefix) as ckpt:
        assert "\n".join(lines[11:]) == f"{ckpt['layer1/kernel']}\n{ckpt['layer1/bias']}"
        assert ckpt["layer1/kernel"].shape == (2, 5) and ckpt["layer1/bias"].shape == (5,)


def test_tensorflow_reads_the_numpy_engine_checkpoint(trained: tuple[Path, str]) -> None:
    import tensorflow as tf

    prefix, _ = trained
    reader = tf.train.load_checkpoint(str(prefix))
    assert reader.get_variable_to_shape_map() == {name: list(shape) for name, shape in SEED_VARIABLES.items()}
    assert set(reader.get_variable_to_dtype_map().values()) == {tf.float32}
    expected = tf_reader_values(prefix)
    with ws.open(prefix) as ckpt:
        for name in SEED_VARIABLES:
            assert_same_tensor(ckpt[name], expected[name])
        assert abs(ckpt["beta2_power"] - 0.36733255) < 1e-6  # 0.999 ** 1001, as the seed run saved


RESTORE_AND_TRAIN = """
import os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np
import tensorflow as tf
v1 = tf.compat.v1
with tf.Graph().as_default():
    x = v1.placeholder(shape=[None, 2], dtype=tf.float32)
    layer1 = v1.layers.dense(x, 5, activation=tf.nn.sigmoid, name="layer1")
    layer2 = v1.layers.dense(layer1, 2, activation=tf.nn.sigmoid, name="layer2")
    loss = tf.reduce_mean((layer2 - x) ** 2)
    optimizer = v1.train.AdamOptimizer(0.01).minimize(loss)
    with v1.Session() as sess:
        v1.train.Saver().restore(sess, sys.argv[1])
        data = np.random.default_rng(0).normal(0, 1, (500, 2))
        before = sess.run(loss, feed_dict={x: data})
        for _ in range(50):
            sess.run(optimizer, feed_dict={x: data})
        print(before, sess.run(loss, feed_dict={x: data}))
"""


def test_tensorflow_restores_it_into_the_seed_graph_and_trains_on(trained: tuple[Path, str]) -> None:
    prefix, _ = trained
    result = subprocess.run(
        [sys.executable, "-c", RESTORE_AND_TRAIN, str(prefix)], capture_output=True, text=True, check=True
    )
    before, after = map(float, result.stdout.split())
    with ws.open(prefix) as ckpt:
        data = np.random.default_rng(0).normal(0, 1, (500, 2)).astype(np.float32)
        ours = float(np.mean((forward(dict(ckpt), data) - data) ** 2))
    assert before == pytest.approx(ours, abs=1e-6)  # restored exactly our weights
    assert after < before


def test_numpy_engine_agrees_with_tensorflow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # TensorFlow saves its initial state; both engines train 1000 steps from it on the same data.
    data = np.random.default_rng(3).normal(0, 1, (5000, 2))
    np.save(tmp_path / "data.npy", data)
    common = ["--data", tmp_path / "data.npy", "--seed", "3"]
    demo(capsys, "--engine", "tensorflow", "--steps", "0", "--out", tmp_path / "init" / "model.ckpt", *common)
    init = ["--init", tmp_path / "init" / "model.ckpt"]
    theirs = demo(capsys, "--engine", "tensorflow", "--out", tmp_path / "tf" / "model.ckpt", *init, *common)
    ours = demo(capsys, "--engine", "numpy", "--out", tmp_path / "np" / "model.ckpt", *init, *common)
    assert len(losses(ours)) == 10
    assert np.max(np.abs(np.subtract(losses(ours), losses(theirs)))) < 1e-4
    with ws.open(tmp_path / "tf") as tf_ckpt, ws.open(tmp_path / "np") as np_ckpt:
        assert sorted(tf_ckpt) == sorted(np_ckpt) == sorted(SEED_VARIABLES)
        for name in SEED_VARIABLES:
            np.testing.assert_allclose(np_ckpt[name], tf_ckpt[name], rtol=0, atol=1e-4)


def test_all_lists_every_variable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = demo(capsys, "--steps", "3", "--samples", "50", "--out", tmp_path / "model.ckpt", "--all")
    assert re.findall(r"^tensor name:  (\S+)$", output, re.MULTILINE) == sorted(SEED_VARIABLES)


def test_tensorflow_engine_without_tensorflow_says_how_to_get_it(tmp_path: Path) -> None:
    program = "import sys; sys.modules['tensorflow'] = None; from weightscope.cli import main; sys.exit(main())"
    result = subprocess.run(
        [sys.executable, "-c", program, "demo", "--engine", "tensorflow", "--out", str(tmp_path / "m.ckpt")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "pip install tensorflow-cpu tf-keras" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "m.ckpt.index").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "{missing}"], "missing.npy: No such file or directory"),
        (["--data", "{wrong}"], "expected a non-empty N×2 numeric array"),
        (["--init", "{missing}"], "no such file"),
        (["--hidden", "3", "--init", "{seed}"], "needs [2, 3]"),
    ],
)
def test_bad_demo_input_is_one_clear_line(
    tmp_path: Path, tf_checkpoints: dict[str, Path], capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    np.save(tmp_path / "wrong.npy", np.zeros((4, 3)))
    values = {"missing": tmp_path / "missing.npy", "wrong": tmp_path / "wrong.npy", "seed": tf_checkpoints["seed"]}
    status = main(["demo", "--out", str(tmp_path / "m.ckpt"), *[arg.format(**values) for arg in args]])
    err = capsys.readouterr().err
    assert status != 0 and message in err and err.count("\n") == 1 and "[Errno" not in err


def test_tensorflow_engine_keeps_tensorflows_native_log_off_the_terminal(tmp_path: Path) -> None:
    # TensorFlow 2.21 logs oneDNN and CUDA notices (absl, before its log is set up) and a failed cuInit as it loads.
    environment = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    out = tmp_path / "m.ckpt"
    program = "import sys; from weightscope.cli import main; sys.exit(main())"
    result = subprocess.run(
        [sys.executable, "-c", program, "demo", "--engine", "tensorflow", "--steps", "2", "--out", str(out)],
        capture_output=True,
        text=True,
        env=environment,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith("step: 0, loss: ") and f"model saved in path: {out}" in result.stdout
