"""TensorFlow's checkpoint-reading API, answered by weightscope without TensorFlow.

Code written for ``tf.train.NewCheckpointReader`` / ``tf.train.load_checkpoint`` runs
unchanged with ``weightscope.compat`` in their place. Two differences: dtypes are numpy
dtypes rather than ``tf.DType`` objects, and a missing tensor raises
``weightscope.TensorNotFoundError`` (a ``KeyError``) rather than ``tf.errors.NotFoundError``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from weightscope.formats.tensorflow import TensorFlowCheckpoint

PathLike = str | os.PathLike[str]


class CheckpointReader:
    """The reader ``tf.train.load_checkpoint`` returns."""

    def __init__(self, filepattern: PathLike) -> None:
        self._checkpoint = TensorFlowCheckpoint(filepattern)

    def get_tensor(self, tensor_str: str) -> Any:
        # TensorFlow hands out arrays the caller owns, and numpy scalars for 0-d
        # tensors (bytes for a string scalar); so do we.
        array = np.array(self._checkpoint[tensor_str])
        return array[()] if array.ndim == 0 else array

    def has_tensor(self, tensor_str: str) -> bool:
        return tensor_str in self._checkpoint

    def get_variable_to_shape_map(self) -> dict[str, list[int]]:
        return {info.key: list(info.shape) for info in self._checkpoint.infos()}

    def get_variable_to_dtype_map(self) -> dict[str, np.dtype]:
        return {info.key: info.dtype for info in self._checkpoint.infos()}

    def debug_string(self) -> bytes:
        lines = (f"{info.key} ({info.type_name}) {list(info.shape)}\n" for info in self._checkpoint.infos())
        return "".join(lines).encode()


def NewCheckpointReader(filepattern: PathLike) -> CheckpointReader:  # noqa: N802 - TF's name
    return CheckpointReader(filepattern)


def load_checkpoint(ckpt_dir_or_file: PathLike) -> CheckpointReader:
    return CheckpointReader(ckpt_dir_or_file)


def list_variables(ckpt_dir_or_file: PathLike) -> list[tuple[str, list[int]]]:
    shapes = load_checkpoint(ckpt_dir_or_file).get_variable_to_shape_map()
    return sorted(shapes.items())


def load_variable(ckpt_dir_or_file: PathLike, name: str) -> np.ndarray:
    # Like TensorFlow, accept a variable's graph name with its ":0" output suffix.
    return load_checkpoint(ckpt_dir_or_file).get_tensor(name.removesuffix(":0"))
