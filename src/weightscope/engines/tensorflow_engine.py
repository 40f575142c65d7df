"""Run the seed's own TF1 program on real TensorFlow, when it is installed.

The graph is the seed's, op for op: a ``[None, d]`` float32 placeholder, two
``tf.compat.v1.layers.dense`` layers named ``layer1`` and ``layer2``,
``reduce_mean((layer2 - x) ** 2)`` and ``AdamOptimizer(learning_rate).minimize``, built
in a private ``tf.Graph`` (graph mode, whatever the process's eager setting) and run in
a ``tf.compat.v1.Session``. The result is saved with ``tf.compat.v1.train.Saver``, so
the checkpoint holds what the seed's does: kernels, biases, their ``Adam``/``Adam_1``
slots and ``beta1_power``/``beta2_power``.

TensorFlow is imported lazily, inside :func:`train_tensorflow`, after setting
``TF_USE_LEGACY_KERAS=1`` (``tf.compat.v1.layers`` needs ``tf_keras`` on TF ≥ 2.16).
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from weightscope.engines.numpy_engine import ACTIVATIONS
from weightscope.errors import UsageError

INSTALL_HINT = "the tensorflow engine needs TensorFlow: pip install tensorflow-cpu tf-keras (or use --engine numpy)"


class EngineUnavailableError(UsageError):
    """The engine asked for cannot run here (its framework is not installed)."""


@contextlib.contextmanager
def _native_log_silenced() -> Iterator[None]:
    """File descriptor 2 on /dev/null: TensorFlow's native libraries log as they load (oneDNN, "Could not find cuda
    drivers"), through absl before its log is initialised, which no setting turns off. Python's own errors are
    exceptions, unaffected."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _import_tensorflow() -> Any:
    os.environ["TF_USE_LEGACY_KERAS"] = "1"  # tf.compat.v1.layers lives in tf_keras on TF ≥ 2.16
    # Read at TensorFlow's import: 3 keeps its native log to fatal errors (a CPU-only machine's failed cuInit is an
    # ERROR line); set it in the environment to see more.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        with _native_log_silenced():
            import tensorflow as tf
            import tf_keras  # noqa: F401
    except ImportError as exc:
        raise EngineUnavailableError(INSTALL_HINT) from exc
    return tf


def train_tensorflow(
    *,
    data: np.ndarray,
    steps: int = 1000,
    learning_rate: float = 0.01,
    hidden: int = 5,
    seed: int | None = None,
    init_variables: Mapping[str, np.ndarray] | None = None,
    on_step: Callable[[int, float], None] | None = None,
    save_path: str,
    activation: str = "sigmoid",
) -> dict[str, np.ndarray]:
    """Train the seed's autoencoder on ``data`` in TensorFlow and save it at ``save_path``.

    ``seed`` (if given) is the graph-level seed, which fixes the Glorot-uniform initial
    kernels. ``init_variables`` overrides any of the saved variables (kernels, biases,
    Adam slots, ``beta1_power``, ``beta2_power``) after initialisation. ``on_step(step,
    loss)`` is called for every step with the loss computed in the same ``Session.run``
    as that step's update, i.e. before it. Returns every saved variable as numpy.
    """
    if activation not in ACTIVATIONS:
        raise UsageError(f"unknown activation {activation!r}; known: {', '.join(ACTIVATIONS)}")
    data = np.asarray(data)
    if data.ndim != 2 or data.shape[0] == 0:
        raise UsageError(f"training data must be a 2-D array (samples × features), not shape {data.shape}")
    if hidden < 1 or steps < 0:
        raise UsageError(f"need hidden ≥ 1 and steps ≥ 0, not hidden={hidden}, steps={steps}")
    tf = _import_tensorflow()
    v1 = tf.compat.v1
    act = {"sigmoid": tf.nn.sigmoid, "relu": tf.nn.relu, "tanh": tf.nn.tanh, "linear": None}[activation]

    graph = tf.Graph()
    with graph.as_default():
        if seed is not None:
            v1.set_random_seed(seed)
        x = v1.placeholder(shape=[None, data.shape[1]], dtype=tf.float32)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*tf.layers.dense. is deprecated")
            # TF1's default kernel initializer, spelled out: tf_keras's own default draws a
            # fresh seed per run and would ignore the graph-level seed.
            glorot = v1.glorot_uniform_initializer
            layer1 = v1.layers.dense(x, hidden, act, kernel_initializer=glorot(), name="layer1")
            layer2 = v1.layers.dense(layer1, data.shape[1], act, kernel_initializer=glorot(), name="layer2")
        loss = tf.reduce_mean((layer2 - x) ** 2)
        optimizer = v1.train.AdamOptimizer(learning_rate).minimize(loss)
        variables = {v.op.name: v for v in v1.global_variables()}

        assigns = []
        feeds: dict[Any, np.ndarray] = {}
        for name, value in (init_variables or {}).items():
            if name not in variables:
                raise UsageError(f"no variable {name!r} to initialise; the graph has {', '.join(variables)}")
            variable = variables[name]
            value = np.asarray(value, dtype=variable.dtype.base_dtype.as_numpy_dtype)
            if tuple(value.shape) != tuple(variable.shape.as_list()):
                raise UsageError(f"{name}: initial value has shape {value.shape}, the variable {tuple(variable.shape)}")
            holder = v1.placeholder(variable.dtype.base_dtype, shape=value.shape)
            assigns.append(variable.assign(holder))
            feeds[holder] = value
        saver = v1.train.Saver()

        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            if assigns:
                sess.run(assigns, feed_dict=feeds)
            for step in range(steps):
                _, loss_value = sess.run([optimizer, loss], feed_dict={x: data})
                if on_step is not None:
                    on_step(step, float(loss_value))
            saver.save(sess, save_path)
            values = sess.run(variables)
    return {name: np.asarray(value) for name, value in values.items()}
