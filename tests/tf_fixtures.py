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

Everything is seeded and single-threaded, so runs give the same bytes (but for the
absolute paths in ``seed/checkpoint``). TensorFlow is imported only when a function
needs it (importing this module is cheap), after ``TF_USE_LEGACY_KERAS=1``
(``tf.compat.v1.layers`` needs Keras 2) and ``TF_CPP_MIN_LOG_LEVEL=2`` are set. Graph-mode
fixtures build private ``tf.Graph``s and never disable eager execution, so they do not
change the process for later fixtures.

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
    """TensorFlow, imported with this module's environment in place."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

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


def make_partitioned(directory: Path) -> Path:
    """TF1 partitioned variables (row and column slices) and a plain one, by ``Saver``."""
    tf = _tf()
    prefix = _fresh_dir(directory) / "model.ckpt"
    graph = tf.Graph()
    with graph.as_default():
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
        init = v1.global_variables_initializer()
        saver = v1.train.Saver()
        with _session(tf, graph) as sess:
            sess.run(init)
            saver.save(sess, str(prefix), write_meta_graph=False, write_state=False)
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


# -- all of them -----------------------------------------------------------------------
FIXTURES: dict[str, Callable[[Path], Path]] = {
    "seed": make_seed,
    "dtypes": make_dtypes,
    "sharded": make_sharded,
    "many": make_many,
    "partitioned": make_partitioned,
    "history": make_history,
}


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
    its own name. ``prefix`` may also be a directory with a ``checkpoint`` file.
    """
    tf = _tf()
    reader = tf.train.load_checkpoint(os.fspath(prefix))
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
