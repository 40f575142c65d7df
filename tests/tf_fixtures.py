"""Small TensorFlow checkpoints for the test suite, written by real TensorFlow.

weightscope reads TensorFlow checkpoints without TensorFlow; TensorFlow itself is only
the oracle the tests compare against. This module makes the checkpoints those tests
read, every byte of them written by TensorFlow's own savers (``tf.compat.v1.train.Saver``,
``tf.train.Checkpoint`` and the ``SaveV2`` op) — nothing is hand-made — and gives
``tf_reader_values``, what TensorFlow's own reader returns for every tensor.

``make_fixtures(out)`` writes each fixture into its own subdirectory of ``out`` and
returns fixture name -> checkpoint prefix (a directory for ``history``):

- ``seed``: the seed program's network, trained 20 steps in a TF1 graph and saved with
  ``Saver().save`` (which also writes ``model.ckpt.meta`` and a ``checkpoint`` state
  file with absolute paths): ``layer{1,2}/{kernel,bias}``, their ``/Adam`` and
  ``/Adam_1`` slots, ``beta1_power``, ``beta2_power``. The kernels are given TF1's
  ``glorot_uniform_initializer`` explicitly: the layers' default draws its seed from
  Python's ``random`` and would make every run different.
- ``dtypes``: one tensor per element type TensorFlow stores (floats with NaN payloads,
  signed zeros, infinities and subnormals; every bit pattern of the float8 and 4-bit
  types; integer extremes; quantized types; complex; bool; strings with empty,
  non-ASCII, NUL-holding and long values), scalars, empty tensors, rank 3 and 5
  tensors, and names with unicode and spaces — written with ``tf.raw_ops.SaveV2``.
  ``dtypes.json`` beside it lists every tensor with its TF dtype name and shape, and
  the dtypes TensorFlow refused (none, in TF 2.21).
- ``sharded``: a ``tf.train.Checkpoint`` split over at least three data files by
  ``MaxShardSizePolicy``; its names are object-graph paths
  (``model/kernel/.ATTRIBUTES/VARIABLE_VALUE``) plus ``_CHECKPOINTABLE_OBJECT_GRAPH``.
  The policy cuts tensors that straddle a shard boundary into slices, stored as
  partitioned variables are. No string vectors: TensorFlow cannot read back a sliced
  string tensor ("Dtype string not supported").
- ``many``: 3000 small tensors (``block_0042/dense_3/kernel``...) of varied shapes.
- ``partitioned``: TF1 partitioned variables (``part/embedding`` [10, 4] in three row
  slices, ``part/wide`` [3, 8] in two column slices) and one plain variable; the index
  holds the slices under OrderedCode keys. No ``checkpoint`` file.
- ``history``: a directory with the checkpoints of global steps 10, 20 and 30 of one
  small model, ``Saver(max_to_keep=5, save_relative_paths=True)``; the ``checkpoint``
  file lists all three and names step 30 the newest.

Keras fixtures (``KERAS_FIXTURES``). "2 → 5 → 2" is the seed network as a Sequential
named ``sequential``: ``Dense(5, sigmoid, name="layer1")``, ``Dense(2, sigmoid,
name="layer2")``, seeded Glorot kernels, fitted 4 steps (64 N(0,1) samples, batch 16,
mse) so the optimizer state is not zero. Every variable key ends in
``/.ATTRIBUTES/VARIABLE_VALUE`` (left out below) and every bundle also holds
``_CHECKPOINTABLE_OBJECT_GRAPH``, a ``TrackableObjectGraph`` whose variable nodes give
each key's ``full_name``. As TensorFlow 2.21 writes them:

- ``keras3_checkpoint``: Keras 3's 2 → 5 → 2 with ``Adam(name="adam")``, by
  ``tf.train.Checkpoint(model=, optimizer=).write``. Keys name no layer: the weights
  are ``optimizer/_trainable_variables/{0..3}`` (full names
  ``sequential/layer1/kernel``, ``.../layer1/bias``, ``.../layer2/kernel``,
  ``.../layer2/bias``), Adam's state ``optimizer/_variables/{2..9}``
  (``adam/sequential_layer1_kernel_momentum``, ``..._velocity``, then bias, ...),
  ``optimizer/_iterations`` (``adam/iteration``, int64) and ``optimizer/_learning_rate``.
  The keys are the shortest object paths: the same weight nodes are also children
  ``_kernel`` and ``bias`` of ``model/_functional/_operations/{1,2}``. Keras 3
  optimizers keep no slot variables: no ``slot_variables`` in the graph; a weight's
  Adam state is tied to it only by name (``momentum``/``velocity`` lists).
- ``tfkeras_weights``: tf-keras's 2 → 5 → 2 with ``Adam`` (in tf-keras 2.21 the new
  optimizer, also without slot variables), by ``model.save_weights(prefix,
  save_format="tf")``, which also writes a ``checkpoint`` file. Keys
  ``layer_with_weights-{0,1}/{kernel,bias}`` (full names ``layer1/kernel``...),
  ``optimizer/_variables/{1..8}`` (``Adam/m/layer1/kernel``, ``Adam/v/layer1/kernel``,
  then bias, ...), ``optimizer/_iterations`` (``iteration``), ``optimizer/_learning_rate``.
  The root's children include ``layer-{0,1}`` (the same nodes) and ``root`` (itself).
- ``tfkeras_legacy_adam``: as ``tfkeras_weights`` with ``optimizers.legacy.Adam``,
  the one with slot variables: ``layer_with_weights-0/kernel/.OPTIMIZER_SLOT/
  optimizer/{m,v}`` (full names ``Adam/layer1/kernel/m``...), referenced by the
  optimizer node's ``slot_variables`` (original variable node, slot name, slot node),
  and ``optimizer/{iter,beta_1,beta_2,decay,learning_rate}`` (``Adam/iter``...).
- ``saved_model``: a SavedModel directory (the path returned; ``model/`` of the
  fixture directory) of tf-keras's 2 → 5 → 2 with ``Adam``, by ``model.save(dir,
  save_format="tf")``: ``saved_model.pb``, ``keras_metadata.pb``, ``fingerprint.pb``,
  ``assets/`` (empty) and ``variables/variables.{index,data-00000-of-00001}``, whose
  keys are those of ``tfkeras_weights`` plus ``keras_api/metrics/0/{total,count}``.
  The ``SavedObjectGraph`` in ``saved_model.pb`` numbers its nodes as the checkpoint's
  object graph does; its variable nodes (``node.variable.name``, dtype, shape) are
  exactly the nodes with attributes there, ``variable.name`` equal to ``full_name``.
- ``keras3_export``: Keras 3's 2 → 5 → 2 by ``model.export(dir)``, a SavedModel
  holding only the serving function: keys ``variables/{0..3}`` (in ``model.weights``
  order) and ``_all_variables/{0..3}``, the same four values again (distinct nodes,
  same full names ``sequential/layer1/kernel``...) in an order Keras takes from the
  traced function's captures, which changes from run to run.
- ``tf2_sharded_keras``: an untrained Keras 3 MLP ``mlp`` (``Dense`` ``dense_a`` 16 → 64,
  ``dense_b`` 64 → 32, ``dense_c`` 32 → 8, random biases), by ``Checkpoint(model=)``
  with ``MaxShardSizePolicy(max_shard_size=4096)``: four data shards; keys
  ``model/_functional/_operations/{1,2,3}/{_kernel,bias}`` (``mlp/dense_a/kernel``...);
  ``dense_b``'s kernel is cut into 8 row slices over shards 1-3.
- ``keras3_cnn``: Keras 3 ``cnn``: ``Conv2D(8, 3, name="conv1")`` on 8×8×3,
  ``BatchNormalization(name="bn1")``, ``Flatten``, ``Dense(4, name="dense1")``, one Adam
  step, by ``Checkpoint(model=, optimizer=)``: ``optimizer/_trainable_variables/{0..5}``
  (conv1 kernel, bias, bn1 gamma, beta, dense1 kernel, bias), Adam state
  ``optimizer/_variables/{2..13}``, and bn1's non-trainable statistics, which only
  the model reaches: ``model/_functional/_operations/2/{moving_mean,moving_variance}``.

Beside each Keras checkpoint (beside the SavedModel directory for the SavedModels),
``expected_layers.npz`` holds ``"{layer}:{i}"`` -> ``model.get_layer(layer).get_weights()[i]``
and ``expected_layers.json`` lists every layer with its class and its variables in
``get_weights`` order (``v.path`` under Keras 3, ``v.name`` under tf-keras); see
``expected_layer_weights``.

Everything is seeded and single-threaded, so runs give the same bytes, but for the
absolute paths in ``seed/checkpoint``, the random ``uuid`` in each ``fingerprint.pb``,
and ``keras3_export``'s variables and graph. Models and optimizers are named, since
Keras numbers default names per process (``sequential_2``, ``adam_1``); the function
names in ``saved_model.pb`` still count the functions the process traced before.
TensorFlow is imported only when a function needs it (importing this module is cheap),
after ``TF_USE_LEGACY_KERAS=1`` (``tf.compat.v1.layers`` needs Keras 2) and
``TF_CPP_MIN_LOG_LEVEL=2`` are set; tf-keras is imported as ``tf_keras`` and Keras 3 as
``keras`` (with ``KERAS_BACKEND=tensorflow`` unless set). Graph-mode fixtures build
private ``tf.Graph``s and never disable eager execution, so they do not change the
process for later fixtures; ``_tf`` does limit TensorFlow to one thread (see there).

Run ``python tests/tf_fixtures.py OUT_DIR`` to write them all and print their paths.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# (tensor name, TensorFlow dtype name, value) — the value as numpy holds it.
TensorSpec = tuple[str, str, np.ndarray]

UNICODE_NAME = "ünïcode/名前/kernel"
SPACES_NAME = "with spaces/my kernel 1"


def _tf() -> Any:
    """TensorFlow, imported with this module's environment in place, single-threaded.

    Trained weights depend on the thread count (a Conv2D kernel gradient summed by two
    threads rounds differently from one), so eager ops are kept to one thread. That can
    only be set before TensorFlow's runtime starts; after, the setting is left as is.
    """
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # "cannot be modified after initialization"
        pass
    return tf


def _fresh_dir(path: Path) -> Path:
    """An empty directory at ``path`` (what an earlier run left there is removed)."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def _session(tf: Any, graph: Any) -> Any:
    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)
    return tf.compat.v1.Session(graph=graph, config=config)


def _save_v2(tf: Any, prefix: Path, specs: list[TensorSpec]) -> None:
    """Write ``specs`` as one tensor bundle with TensorFlow's ``SaveV2`` op (eager)."""
    if not tf.executing_eagerly():
        raise RuntimeError("tf_fixtures needs eager execution (do not call disable_eager_execution)")
    tensors = [tf.constant(value, dtype=tf.as_dtype(dtype)) for _, dtype, value in specs]
    tf.raw_ops.SaveV2(
        prefix=str(prefix),
        tensor_names=[name for name, _, _ in specs],
        shape_and_slices=[""] * len(specs),
        tensors=tensors,
    )


# -- seed ------------------------------------------------------------------------------
def make_seed(directory: Path) -> Path:
    """The seed program's autoencoder, trained 20 Adam steps, saved by ``Saver``."""
    tf = _tf()
    prefix = _fresh_dir(directory) / "model.ckpt"
    data = np.random.default_rng(0).normal(0, 1, (500, 2)).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.set_random_seed(0)
        x = tf.compat.v1.placeholder(tf.float32, [None, 2], name="x")
        # The layers' default initializer (tf_keras's glorot_uniform) draws its seed from
        # Python's ``random``, ignoring the graph seed; TF1's glorot_uniform, the same
        # distribution, follows the graph seed, so every run gives the same bytes.
        glorot = tf.compat.v1.glorot_uniform_initializer
        with warnings.catch_warnings():  # "tf.layers.dense is deprecated"
            warnings.simplefilter("ignore", UserWarning)
            layer1 = tf.compat.v1.layers.dense(
                x, 5, activation=tf.nn.sigmoid, kernel_initializer=glorot(), name="layer1"
            )
            layer2 = tf.compat.v1.layers.dense(
                layer1, 2, activation=tf.nn.sigmoid, kernel_initializer=glorot(), name="layer2"
            )
        loss = tf.reduce_mean((layer2 - x) ** 2)
        train = tf.compat.v1.train.AdamOptimizer(0.01).minimize(loss)
        init = tf.compat.v1.global_variables_initializer()
        saver = tf.compat.v1.train.Saver()
        with _session(tf, graph) as sess:
            sess.run(init)
            for _ in range(20):
                sess.run(train, {x: data})
            saver.save(sess, str(prefix))
    return prefix


# -- dtypes ----------------------------------------------------------------------------
def _bits(pattern: list[int], uint: type, dtype: Any) -> np.ndarray:
    return np.array(pattern, dtype=uint).view(dtype)


def _ints(dtype: type) -> np.ndarray:
    info = np.iinfo(dtype)
    values = [info.min, info.min + 1, -1, 0, 1, 2, 100, info.max - 1, info.max]
    return np.array([v for v in values if info.min <= v <= info.max], dtype=dtype)


def _float_values(dtype: type, uint: type, extra_bits: list[int]) -> np.ndarray:
    info = np.finfo(dtype)
    values = np.array(
        [0.0, -0.0, 1.0, -1.5, np.pi, info.max, -info.max, info.tiny, info.smallest_subnormal,
         np.inf, -np.inf, np.nan, -np.nan],
        dtype=dtype,
    )  # fmt: skip
    return np.concatenate([values, _bits(extra_bits, uint, dtype)])


def dtype_specs() -> list[TensorSpec]:
    """Every tensor of the ``dtypes`` fixture: name, TF dtype name, value."""
    import ml_dtypes

    every_byte = np.arange(256, dtype=np.uint8)
    strings = [
        b"",
        b"plain",
        "ünïcode 名前 🙂".encode(),
        b"\x00nul\x00 and \xff\xfe raw bytes",
        b"x" * 300,
        b"",
    ]
    complex_values = [1 + 2j, -0.0 - 0.0j, complex(np.inf, np.nan), complex(np.nan, -np.inf), -3.5 + 1e-30j]
    specs: list[TensorSpec] = [
        # Floats: signed zeros, extremes, subnormals, infinities, NaNs with payloads
        # (quiet and signalling, both signs), given by bit pattern.
        ("dtype/float16", "float16", _float_values(np.float16, np.uint16, [0x7E01, 0xFC01, 0x7C01, 0x0001])),
        ("dtype/bfloat16", "bfloat16",
         _bits([0x0000, 0x8000, 0x3F80, 0xBFC0, 0x7F7F, 0xFF7F, 0x0080, 0x0001, 0x7F80, 0xFF80, 0x7FC0,
                0xFFC0, 0x7FC1, 0x7F81, 0x4049], np.uint16, ml_dtypes.bfloat16)),
        ("dtype/float32", "float32",
         _float_values(np.float32, np.uint32, [0x7FC00001, 0xFF800001, 0x7F800123, 0x00000001])),
        ("dtype/float64", "float64",
         _float_values(np.float64, np.uint64, [0x7FF8000000000001, 0xFFF0000000000001, 0x1])),
        # Every bit pattern of the 8-bit floats (their NaNs included) and 4-bit ints.
        *[(f"dtype/{name}", name, every_byte.view(getattr(ml_dtypes, name)))
          for name in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e4m3b11fnuz",
                       "float8_e5m2fnuz")],
        ("dtype/int4", "int4", np.arange(-8, 8).astype(ml_dtypes.int4)),
        ("dtype/uint4", "uint4", np.arange(16).astype(ml_dtypes.uint4)),
        *[(f"dtype/{np.dtype(t).name}", np.dtype(t).name, _ints(t))
          for t in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)],
        # Quantized types: TensorFlow hands them back as their plain integer types.
        ("dtype/qint8", "qint8", _ints(np.int8)),
        ("dtype/quint8", "quint8", _ints(np.uint8)),
        ("dtype/qint16", "qint16", _ints(np.int16)),
        ("dtype/quint16", "quint16", _ints(np.uint16)),
        ("dtype/qint32", "qint32", _ints(np.int32)),
        ("dtype/complex64", "complex64",
         np.array([*complex_values, complex(3.4e38, -3.4e38)], dtype=np.complex64)),
        ("dtype/complex128", "complex128",
         np.array([*complex_values, complex(1.7e308, 5e-324)], dtype=np.complex128)),
        ("dtype/bool", "bool", np.array([[True, False, True], [False, False, True]])),
        ("dtype/string", "string", np.array(strings, dtype=object)),
        # Scalars.
        ("scalar/float32", "float32", np.array(-2.75, dtype=np.float32)),
        ("scalar/float64", "float64", np.array(np.nan, dtype=np.float64)),
        ("scalar/bfloat16", "bfloat16", np.array(-0.0, dtype=ml_dtypes.bfloat16)),
        ("scalar/int64", "int64", np.array(np.iinfo(np.int64).min, dtype=np.int64)),
        ("scalar/uint8", "uint8", np.array(255, dtype=np.uint8)),
        ("scalar/bool", "bool", np.array(True)),
        ("scalar/complex128", "complex128", np.array(-1.25 + 0.5j, dtype=np.complex128)),
        ("scalar/string", "string", np.array(b"a string scalar", dtype=object)),
        ("scalar/string_empty", "string", np.array(b"", dtype=object)),
        ("scalar/string_long", "string", np.array(bytes(range(256)) * 80, dtype=object)),
        # Empty tensors.
        ("empty/float32_0", "float32", np.zeros([0], dtype=np.float32)),
        ("empty/int64_3x0", "int64", np.zeros([3, 0], dtype=np.int64)),
        ("empty/bfloat16_0x5", "bfloat16", np.zeros([0, 5], dtype=ml_dtypes.bfloat16)),
        ("empty/bool_0", "bool", np.zeros([0], dtype=bool)),
        ("empty/string_0", "string", np.zeros([0], dtype=object)),
        ("empty/string_3x0", "string", np.zeros([3, 0], dtype=object)),
        # Strings: all empty, 2-D, and long ones (two- and three-byte length varints).
        ("string/all_empty", "string", np.array([b"", b"", b""], dtype=object)),
        ("string/matrix", "string", np.array([[b"a", b""], ["é".encode(), b"\xff" * 129]], dtype=object)),
        ("string/long", "string", np.array([b"y" * 201, b"", b"z" * 20000], dtype=object)),
        # Higher ranks.
        ("rank3/float32", "float32", np.arange(-12, 12, dtype=np.float32).reshape(2, 3, 4) / 8),
        ("rank5/int16", "int16", np.arange(-6, 6, dtype=np.int16).reshape(2, 1, 3, 1, 2)),
        # Names with unicode and spaces.
        (UNICODE_NAME, "float32", np.array([[1.5, -2.0], [0.25, 8.0]], dtype=np.float32)),
        ("ünïcode/名前/bias", "float64", np.array([-1.0, 1e-300], dtype=np.float64)),
        (SPACES_NAME, "int32", np.array([[7, -7, 0]], dtype=np.int32)),
        ("emoji 🙂/value", "string", np.array([b"smile"], dtype=object)),
    ]  # fmt: skip
    return specs


def make_dtypes(directory: Path) -> Path:
    """One bundle of every dtype, written by ``SaveV2``; ``dtypes.json`` describes it."""
    tf = _tf()
    prefix = _fresh_dir(directory) / "dtypes.ckpt"
    accepted: list[TensorSpec] = []
    refused: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, dtype, value in dtype_specs():
            if dtype in refused:
                continue
            try:  # a probe write of this dtype alone: what TensorFlow refuses is left out
                _save_v2(tf, Path(scratch) / "probe", [(name, dtype, value)])
            except (TypeError, ValueError, tf.errors.OpError) as error:
                refused[dtype] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
                continue
            accepted.append((name, dtype, value))
    _save_v2(tf, prefix, accepted)
    listing = {
        "prefix": prefix.name,
        "tensors": [{"name": name, "dtype": dtype, "shape": list(value.shape)} for name, dtype, value in accepted],
        "dtypes_written": sorted({dtype for _, dtype, _ in accepted}),
        "dtypes_refused": refused,
    }
    (directory / "dtypes.json").write_text(json.dumps(listing, indent=1, ensure_ascii=False) + "\n", "utf-8")
    return prefix


# -- sharded ---------------------------------------------------------------------------
def make_sharded(directory: Path, min_shards: int = 3) -> Path:
    """A ``tf.train.Checkpoint`` whose tensors ``MaxShardSizePolicy`` spreads over shards."""
    tf = _tf()
    prefix = _fresh_dir(directory) / "ckpt"
    rng = np.random.default_rng(3)
    model = tf.Module()
    model.kernel = tf.Variable(rng.normal(size=(16, 48)).astype(np.float32))  # 3 KB
    model.bias = tf.Variable(rng.normal(size=(48,)).astype(np.float32))
    model.embedding = tf.Variable(rng.normal(size=(32, 16)).astype(np.float64))  # 4 KB
    model.counts = tf.Variable(rng.integers(-1000, 1000, size=(20, 30)).astype(np.int32))  # 2.4 KB
    model.half = tf.Variable(rng.normal(size=(40, 30)).astype(np.float16))  # 2.4 KB
    # A string scalar: the policy slices big tensors along their first dimension, and
    # TensorFlow cannot read back a sliced string tensor (RestoreV2 and the
    # checkpoint reader fail with "Dtype string not supported"), so no string vectors.
    model.title = tf.Variable(b"sharded model")
    step = tf.Variable(np.int64(1234))
    checkpoint = tf.train.Checkpoint(model=model, step=step)
    policy = tf.train.experimental.MaxShardSizePolicy(max_shard_size=4096)
    written = checkpoint.write(str(prefix), options=tf.train.CheckpointOptions(experimental_sharding_callback=policy))
    shards = sorted(directory.glob(f"{prefix.name}.data-*"))
    if len(shards) < min_shards:
        raise RuntimeError(f"expected at least {min_shards} data shards, TensorFlow wrote {len(shards)}")
    return Path(written)


# -- many ------------------------------------------------------------------------------
def many_specs(blocks: int = 300, layers: int = 5) -> list[TensorSpec]:
    """``blocks`` × ``layers`` × (kernel, bias): 3000 small tensors by default."""
    rng = np.random.default_rng(4)
    specs: list[TensorSpec] = []
    for block in range(blocks):
        for layer in range(layers):
            rows, cols = (int(n) for n in rng.integers(1, 9, size=2))
            if block % 97 == 0 and layer == 0:
                kernel_shape: tuple[int, ...] = (rows, cols, 2)
            elif block % 89 == 0 and layer == 1:
                kernel_shape = ()
            else:
                kernel_shape = (rows, cols)
            name = f"block_{block:04d}/dense_{layer}"
            kernel = rng.normal(size=kernel_shape).astype(np.float32)
            specs.append((f"{name}/kernel", "float32", kernel))
            if block % 10 == 3:
                specs.append((f"{name}/bias", "int32", rng.integers(-50, 50, size=cols, dtype=np.int32)))
            else:
                specs.append((f"{name}/bias", "float16", rng.normal(size=cols).astype(np.float16)))
    return specs


def make_many(directory: Path) -> Path:
    """3000 small tensors in one bundle, one ``SaveV2`` call."""
    tf = _tf()
    prefix = _fresh_dir(directory) / "many.ckpt"
    _save_v2(tf, prefix, many_specs())
    return prefix


# -- partitioned -----------------------------------------------------------------------
EMBEDDING = np.arange(40, dtype=np.float32).reshape(10, 4) * 0.5 - 3
WIDE = np.arange(24, dtype=np.float64).reshape(3, 8) - 11.5


def _sliced_initializer(tf: Any, full: np.ndarray) -> Callable[..., Any]:
    """An initializer giving each partition its slice of ``full``."""

    def initializer(shape: Any, dtype: Any = None, partition_info: Any = None) -> Any:
        offset = partition_info.var_offset if partition_info is not None else [0] * len(full.shape)
        index = tuple(slice(start, start + size) for start, size in zip(offset, shape, strict=True))
        return tf.constant(full[index])

    return initializer


def _save_tf1_graph(prefix: Path, build: Callable[[Any], None], saver: dict[str, Any], save: dict[str, Any]) -> None:
    """Make variables with ``build(tf)`` in a fresh TF1 graph, initialise and save them with a ``Saver``."""
    tf = _tf()
    graph = tf.Graph()
    with graph.as_default():
        build(tf)
        init = tf.compat.v1.global_variables_initializer()
        writer = tf.compat.v1.train.Saver(**saver)
        with _session(tf, graph) as sess:
            sess.run(init)
            writer.save(sess, str(prefix), write_meta_graph=False, **save)


def make_partitioned(directory: Path) -> Path:
    """TF1 partitioned variables (row and column slices) and a plain one, by ``Saver``."""
    prefix = _fresh_dir(directory) / "model.ckpt"

    def build(tf: Any) -> None:
        v1 = tf.compat.v1
        v1.get_variable(
            "part/embedding",
            shape=EMBEDDING.shape,
            dtype=tf.float32,
            partitioner=v1.fixed_size_partitioner(3),
            initializer=_sliced_initializer(tf, EMBEDDING),
        )
        v1.get_variable(
            "part/wide",
            shape=WIDE.shape,
            dtype=tf.float64,
            partitioner=v1.fixed_size_partitioner(2, axis=1),
            initializer=_sliced_initializer(tf, WIDE),
        )
        v1.get_variable("plain/bias", initializer=tf.constant([1.0, -2.0, 3.5], dtype=tf.float32))

    _save_tf1_graph(prefix, build, saver={}, save={"write_state": False})
    return prefix


# -- history ---------------------------------------------------------------------------
HISTORY_STEPS = (10, 20, 30)


def make_history(directory: Path) -> Path:
    """Steps 10, 20, 30 of one model in one directory; returns the directory."""
    tf = _tf()
    _fresh_dir(directory)
    base = np.arange(6, dtype=np.float32).reshape(3, 2) / 4
    graph = tf.Graph()
    with graph.as_default():
        v1 = tf.compat.v1
        kernel = v1.get_variable("dense/kernel", initializer=tf.zeros([3, 2]))
        bias = v1.get_variable("dense/bias", initializer=tf.zeros([2]))
        global_step = v1.train.get_or_create_global_step()
        step_in = v1.placeholder(tf.int64, [])
        update = tf.group(
            kernel.assign(tf.constant(base) + tf.cast(step_in, tf.float32)),
            bias.assign(tf.fill([2], -tf.cast(step_in, tf.float32))),
            global_step.assign(step_in),
        )
        init = v1.global_variables_initializer()
        saver = v1.train.Saver(max_to_keep=5, save_relative_paths=True)
        with _session(tf, graph) as sess:
            sess.run(init)
            for step in HISTORY_STEPS:
                sess.run(update, {step_in: step})
                saver.save(sess, str(directory / "model.ckpt"), global_step=step, write_meta_graph=False)
    return directory


# -- Keras models ----------------------------------------------------------------------
EXPECTED_LAYERS_NPZ = "expected_layers.npz"
EXPECTED_LAYERS_JSON = "expected_layers.json"


def _keras3() -> Any:
    """Keras 3 (``import keras``) on the TensorFlow backend."""
    _tf()
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(f"Keras 3 must run on TensorFlow here, not {keras.backend.backend()}")
    return keras


def _tf_keras() -> Any:
    """tf-keras (Keras 2), what ``tf.keras`` is under ``TF_USE_LEGACY_KERAS=1``."""
    _tf()
    import tf_keras

    return tf_keras


def _training_data(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, shape).astype(np.float32)


def _two_dense_layers(keras: Any) -> Any:
    """The seed network as a Sequential model of Keras 3 or tf-keras: 2 → 5 → 2.

    The initializers are the layers' defaults (Glorot uniform, zeros), given seeds so
    every run makes the same weights without touching any global random state. The
    model is named: Keras numbers default names per process (``sequential_3``).
    """
    glorot = keras.initializers.GlorotUniform
    return keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(5, activation="sigmoid", name="layer1", kernel_initializer=glorot(seed=1)),
            keras.layers.Dense(2, activation="sigmoid", name="layer2", kernel_initializer=glorot(seed=2)),
        ],
        name="sequential",
    )


def _train_two_dense_layers(keras: Any, optimizer: Any) -> Any:
    """``_two_dense_layers`` fitted 4 steps (64 samples, batch 16) to reproduce its input."""
    model = _two_dense_layers(keras)
    # Eager steps: for four of them, tracing a tf.function would take longer.
    model.compile(optimizer=optimizer, loss="mse", run_eagerly=True)
    data = _training_data((64, 2))
    model.fit(data, data, batch_size=16, epochs=1, shuffle=False, verbose=0)
    return model


def _write_expected_layers(directory: Path, model: Any) -> None:
    """``expected_layers.npz`` and ``.json``: every layer's ``get_weights()``, by Keras.

    The npz holds ``"{layer}:{i}"`` -> ``model.get_layer(layer).get_weights()[i]``; the
    json lists every layer (weightless ones too) with its class and its variables in
    ``get_weights`` order: their ``path`` under Keras 3, their ``name`` under tf-keras.
    """
    keras3 = type(model).__module__.startswith("keras.")
    arrays: dict[str, np.ndarray] = {}
    layers = []
    for layer in model.layers:
        values = model.get_layer(layer.name).get_weights()
        variables = layer.weights
        if len(values) != len(variables):
            raise RuntimeError(f"{layer.name}: {len(values)} weights but {len(variables)} variables")
        for i, value in enumerate(values):
            arrays[f"{layer.name}:{i}"] = np.asarray(value)
        layers.append(
            {
                "name": layer.name,
                "class": type(layer).__name__,
                "variables": [v.path if keras3 else v.name for v in variables],
                "shapes": [list(np.shape(value)) for value in values],
                "dtypes": [np.asarray(value).dtype.name for value in values],
                "trainable": [bool(v.trainable) for v in variables],
            }
        )
    head = {
        "keras": "keras 3" if keras3 else "tf-keras",
        "version": sys.modules["keras" if keras3 else "tf_keras"].__version__,
        "model": model.name,
    }
    # One layer a line: {"keras": ..., "model": ..., "layers": [{...}, ...]}.
    text = json.dumps(head)[:-1] + ', "layers": [\n ' + ",\n ".join(json.dumps(layer) for layer in layers) + "\n]}\n"
    np.savez(directory / EXPECTED_LAYERS_NPZ, **arrays)
    (directory / EXPECTED_LAYERS_JSON).write_text(text, "utf-8")


def expected_layer_weights(fixture_dir: str | os.PathLike[str]) -> dict[str, list[np.ndarray]]:
    """Layer name -> its ``get_weights()`` arrays, from a Keras fixture's ``expected_layers.npz``.

    ``fixture_dir`` is the fixture's directory, or any path in it: the checkpoint prefix
    or the SavedModel directory ``make_fixtures`` returns. Layers without weights
    (``Flatten``) are left out; ``expected_layers.json`` lists them too.
    """
    path = Path(fixture_dir)
    directory = path if (path / EXPECTED_LAYERS_NPZ).is_file() else path.parent
    with np.load(directory / EXPECTED_LAYERS_NPZ) as npz:
        arrays = {key: npz[key] for key in npz.files}
    layers: dict[str, list[np.ndarray]] = {}
    for key in sorted(arrays, key=lambda key: (key.rpartition(":")[0], int(key.rpartition(":")[2]))):
        layers.setdefault(key.rpartition(":")[0], []).append(arrays[key])
    order = json.loads((directory / EXPECTED_LAYERS_JSON).read_text("utf-8"))["layers"]
    return {layer["name"]: layers[layer["name"]] for layer in order if layer["name"] in layers}


# -- keras3_checkpoint -----------------------------------------------------------------
def make_keras3_checkpoint(directory: Path) -> Path:
    """Keras 3's 2 → 5 → 2 model and its Adam, by ``tf.train.Checkpoint(...).write``."""
    tf = _tf()
    keras = _keras3()
    prefix = _fresh_dir(directory) / "ckpt"
    model = _train_two_dense_layers(keras, keras.optimizers.Adam(0.01, name="adam"))
    written = tf.train.Checkpoint(model=model, optimizer=model.optimizer).write(str(prefix))
    _write_expected_layers(directory, model)
    return Path(written)


# -- tfkeras_weights -------------------------------------------------------------------
def make_tfkeras_weights(directory: Path, legacy: bool = False) -> Path:
    """tf-keras's 2 → 5 → 2 model, trained with Adam, by ``save_weights`` (TF format).

    ``legacy`` trains with ``optimizers.legacy.Adam``, whose state is slot variables.
    """
    tf_keras = _tf_keras()
    prefix = _fresh_dir(directory) / "ckpt"
    optimizers = tf_keras.optimizers.legacy if legacy else tf_keras.optimizers
    model = _train_two_dense_layers(tf_keras, optimizers.Adam(0.01, name="Adam"))
    model.save_weights(str(prefix), save_format="tf")
    _write_expected_layers(directory, model)
    return prefix


def make_tfkeras_legacy_adam(directory: Path) -> Path:
    return make_tfkeras_weights(directory, legacy=True)


# -- saved_model -----------------------------------------------------------------------
def make_saved_model(directory: Path) -> Path:
    """tf-keras's trained 2 → 5 → 2 model by ``model.save(dir, save_format="tf")``.

    Returns the SavedModel directory, ``model/`` in ``directory``.
    """
    tf_keras = _tf_keras()
    export = _fresh_dir(directory) / "model"
    model = _train_two_dense_layers(tf_keras, tf_keras.optimizers.Adam(0.01, name="Adam"))
    model.save(str(export), save_format="tf")
    _write_expected_layers(directory, model)
    return export


def make_keras3_export(directory: Path) -> Path:
    """Keras 3's trained 2 → 5 → 2 model by ``model.export`` (a SavedModel directory)."""
    keras = _keras3()
    export = _fresh_dir(directory) / "model"
    model = _train_two_dense_layers(keras, keras.optimizers.Adam(0.01, name="adam"))
    model.export(str(export), format="tf_saved_model", verbose=False)
    _write_expected_layers(directory, model)
    return export


# -- tf2_sharded_keras -----------------------------------------------------------------
def make_tf2_sharded_keras(directory: Path, min_shards: int = 2) -> Path:
    """An untrained Keras 3 MLP 16 → 64 → 32 → 8, ``Checkpoint(model=...)``, sharded."""
    tf = _tf()
    keras = _keras3()
    prefix = _fresh_dir(directory) / "ckpt"
    glorot, normal = keras.initializers.GlorotUniform, keras.initializers.RandomNormal
    model = keras.Sequential(
        [keras.Input((16,))]
        + [
            keras.layers.Dense(
                units,
                activation="relu",
                name=name,
                kernel_initializer=glorot(seed=10 + i),
                bias_initializer=normal(seed=20 + i),  # not zeros: a misplaced bias shows
            )
            for i, (name, units) in enumerate([("dense_a", 64), ("dense_b", 32), ("dense_c", 8)])
        ],
        name="mlp",
    )
    policy = tf.train.experimental.MaxShardSizePolicy(max_shard_size=4096)
    options = tf.train.CheckpointOptions(experimental_sharding_callback=policy)
    written = tf.train.Checkpoint(model=model).write(str(prefix), options=options)
    shards = sorted(directory.glob(f"{prefix.name}.data-*"))
    if len(shards) < min_shards:
        raise RuntimeError(f"expected at least {min_shards} data shards, TensorFlow wrote {len(shards)}")
    _write_expected_layers(directory, model)
    return Path(written)


# -- keras3_cnn ------------------------------------------------------------------------
def make_keras3_cnn(directory: Path) -> Path:
    """Keras 3 Conv2D, BatchNormalization, Flatten, Dense, one Adam step, by ``Checkpoint``."""
    tf = _tf()
    keras = _keras3()
    prefix = _fresh_dir(directory) / "ckpt"
    glorot = keras.initializers.GlorotUniform
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(8, 3, name="conv1", kernel_initializer=glorot(seed=30)),
            keras.layers.BatchNormalization(name="bn1"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(4, name="dense1", kernel_initializer=glorot(seed=31)),
        ],
        name="cnn",
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01, name="adam"), loss="mse", run_eagerly=True)
    model.fit(_training_data((16, 8, 8, 3), 1), _training_data((16, 4), 2), batch_size=16, shuffle=False, verbose=0)
    written = tf.train.Checkpoint(model=model, optimizer=model.optimizer).write(str(prefix))
    _write_expected_layers(directory, model)
    return Path(written)


# -- all of them -----------------------------------------------------------------------
def make_v1(directory: Path) -> Path:
    """A TF1 checkpoint in the V1 single-file format (``Saver(write_version=V1)``), which TF 2.21 still writes."""
    prefix = _fresh_dir(directory) / "model.ckpt"

    def build(tf: Any) -> None:
        tf.compat.v1.get_variable("layer1/kernel", initializer=tf.constant([[1.0, 2.0], [3.0, 4.0]]))

    _save_tf1_graph(prefix, build, saver={"write_version": 1}, save={})  # SaverDef.V1 is 1
    return prefix


FIXTURES: dict[str, Callable[[Path], Path]] = {
    "seed": make_seed,
    "dtypes": make_dtypes,
    "sharded": make_sharded,
    "many": make_many,
    "partitioned": make_partitioned,
    "history": make_history,
    "keras3_checkpoint": make_keras3_checkpoint,
    "tfkeras_weights": make_tfkeras_weights,
    "tfkeras_legacy_adam": make_tfkeras_legacy_adam,
    "saved_model": make_saved_model,
    "keras3_export": make_keras3_export,
    "tf2_sharded_keras": make_tf2_sharded_keras,
    "keras3_cnn": make_keras3_cnn,
    "v1": make_v1,
}

# The fixtures made by Keras, with ``expected_layers.npz`` and ``.json`` beside them.
KERAS_FIXTURES = (
    "keras3_checkpoint",
    "tfkeras_weights",
    "tfkeras_legacy_adam",
    "saved_model",
    "keras3_export",
    "tf2_sharded_keras",
    "keras3_cnn",
)


def make_fixtures(out: Path) -> dict[str, Path]:
    """Write every fixture into its own subdirectory of ``out``: name -> checkpoint path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return {name: make(out / name) for name, make in FIXTURES.items()}


def tf_reader_values(prefix: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every tensor of a checkpoint as ``tf.train.load_checkpoint`` reads it.

    Strings come back as ``object`` arrays of ``bytes`` (scalars as 0-d arrays), other
    types as TensorFlow's numpy arrays (bfloat16, float8, int4 as ml_dtypes types; the
    quantized types as plain integers). A partitioned variable appears whole, under
    its own name. ``prefix`` may also be a directory with a ``checkpoint`` file, or a
    SavedModel directory (its ``variables/variables`` checkpoint is read).
    """
    tf = _tf()
    path = Path(prefix)
    if (path / "saved_model.pb").is_file():
        path = path / "variables" / "variables"
    reader = tf.train.load_checkpoint(os.fspath(path))
    dtypes = reader.get_variable_to_dtype_map()
    values: dict[str, np.ndarray] = {}
    for name in sorted(reader.get_variable_to_shape_map()):
        value = reader.get_tensor(name)
        if dtypes[name] == tf.string:
            values[name] = np.array(value, dtype=object)
        else:
            values[name] = np.asarray(value)
    return values


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(f"usage: python {Path(__file__).name} OUT_DIR", file=sys.stderr)
        return 2
    start = time.perf_counter()
    paths = make_fixtures(Path(args[0]))
    for name, path in paths.items():
        print(f"{name}\t{path}")
    print(f"made {len(paths)} fixtures in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
