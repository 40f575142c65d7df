"""Fuzz the ``.keras`` zip reader: the zip directory and local headers, config.json, member checks.

The weights file inside stays one of the seeds' own: inputs whose ``model.weights.h5``
bytes are not a seed's are skipped, because the HDF5 C library under h5py loops forever
on some damaged files and crashes on others (HDF5 1.14.6, h5py 3.14.0: see
``weightscope.formats.keras``), which no Python code can bound or catch; so only the zip and
the JSON config around a valid weights file are fuzzed here, and damaged weights reach
h5py only if their CRC-32 still matches.
"""

from __future__ import annotations

import io
import json
import zipfile

import fuzzlib
import numpy as np

with fuzzlib.instrumented():
    from weightscope.formats.keras_writer import save

WEIGHTS: set[bytes] = set()


def _weights() -> bytes:
    path = fuzzlib.SCRATCH / "seed.weights.h5"
    save({"dense/kernel": np.arange(6, dtype=np.float32).reshape(3, 2), "dense/bias": np.ones(2, np.float32)}, path)
    return path.read_bytes()


CONFIG = {
    "class_name": "Sequential",
    "config": {
        "name": "sequential",
        "layers": [
            {"class_name": "InputLayer", "config": {"batch_shape": [None, 3], "name": "input_layer"}},
            {"class_name": "Dense", "config": {"name": "dense", "units": 2, "use_bias": True, "trainable": True}},
        ],
    },
    "compile_config": {"optimizer": {"class_name": "Adam", "config": {"name": "adam"}}},
}


def seeds() -> list[bytes]:
    """``.keras`` zips of a one-Dense-layer model: stored, deflated, and with a config that does not fit."""
    weights = _weights()
    WEIGHTS.add(weights)
    files = []
    for method, config in ((zipfile.ZIP_STORED, CONFIG), (zipfile.ZIP_DEFLATED, CONFIG), (zipfile.ZIP_STORED, [1])):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", method) as archive:
            archive.writestr("metadata.json", json.dumps({"keras_version": "3.10.0"}))
            archive.writestr("config.json", json.dumps(config))
            archive.writestr("model.weights.h5", weights)
        files.append(buffer.getvalue())
    return files


def _weights_member(data: bytes) -> bytes | None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return archive.read("model.weights.h5")
    except Exception:  # any damage: weightscope's reader gets the input as it is
        return None


def one_input(data: bytes) -> None:
    if not WEIGHTS:
        WEIGHTS.add(_weights())
    member = _weights_member(data)
    if member is not None and member not in WEIGHTS:
        return  # damaged HDF5: not fuzzed (see the module's docstring)
    fuzzlib.exercise(fuzzlib.scratch_file("input.keras", data), "keras")


if __name__ == "__main__":
    fuzzlib.run(one_input, seeds())
