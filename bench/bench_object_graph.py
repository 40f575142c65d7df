"""Opening a TF2 object-based checkpoint with readable names, against its index alone.

Run from the repository root::

    .venv/bin/python bench/bench_object_graph.py [--variables 5000]

TensorFlow writes a ``tf.train.Checkpoint`` of nested ``tf.Module``s holding
``--variables`` variables (three graph nodes each: module, variable, and the list
they sit in), in a subprocess. Then, in this process and interleaved, weightscope opens
it and lists every name and shape twice: with the object graph decoded into readable
names and roles (the default), and with ``readable_names=False``, which reads the index
alone. Target (issue 4): the first within 2x of the second.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MAKE = """
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import tensorflow as tf

class Block(tf.Module):
    def __init__(self, i):
        super().__init__(name=f"block_{i:05d}")
        self.dense = tf.Module(name="dense")
        self.dense.kernel = tf.Variable(tf.zeros([4, 4]), name=f"block_{i:05d}/dense/kernel")
        self.dense.bias = tf.Variable(tf.zeros([4]), name=f"block_{i:05d}/dense/bias")

model = tf.Module(name="model")
model.blocks = [Block(i) for i in range(int(sys.argv[2]) // 2)]
print(tf.train.Checkpoint(model=model).write(sys.argv[1]))
"""


def make_checkpoint(directory: Path, variables: int) -> str:
    result = subprocess.run(
        [sys.executable, "-c", MAKE, str(directory / "ckpt"), str(variables)],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip().splitlines()[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variables", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    from weightscope.formats.tensorflow import TensorFlowCheckpoint
    from weightscope.formats.tf_object_graph import OBJECT_GRAPH_KEY

    with tempfile.TemporaryDirectory() as work:
        prefix = make_checkpoint(Path(work), args.variables)
        with TensorFlowCheckpoint(prefix) as ckpt:
            graph = ckpt[OBJECT_GRAPH_KEY][()]
            names = list(ckpt)
        from weightscope import _proto

        nodes = len(_proto.TrackableObjectGraph.FromString(graph).nodes)
        timings: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.repeat + 1):  # the first round warms up and is not counted
            for readable in (False, True):
                start = time.perf_counter()
                with TensorFlowCheckpoint(prefix, readable_names=readable) as ckpt:
                    listing = {info.name: info.shape for info in ckpt.infos()}
                timings[readable].append(time.perf_counter() - start)
                assert len(listing) == len(names)
    index_only = statistics.median(timings[False][1:])
    with_graph = statistics.median(timings[True][1:])
    print(f"checkpoint: {len(names):,} tensors, object graph of {nodes:,} nodes ({len(graph):,} bytes)")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; medians of {args.repeat} runs")
    print(f"open + list, index alone (readable_names=False): {index_only * 1e3:8.2f} ms")
    print(f"open + list, readable names from the object graph: {with_graph * 1e3:6.2f} ms")
    ratio = with_graph / index_only
    print(f"ratio: {ratio:.2f}x (target <= 2x: {'met' if ratio <= 2 else 'MISSED'})")
    print(f"sample names: {names[1]!r}, {names[-1]!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
