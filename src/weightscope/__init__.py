"""weightscope: the trained parameters of neural-network checkpoints, without the frameworks.

>>> import weightscope as ws
>>> with ws.open("checkpoint/model.ckpt") as ckpt:   # doctest: +SKIP
...     kernel = ckpt["layer1/kernel"]
"""

from __future__ import annotations

from weightscope.checkpoint import Checkpoint, Extent, TensorInfo
from weightscope.errors import (
    CheckpointNotFoundError,
    ChecksumMismatchError,
    CorruptCheckpointError,
    LimitExceededError,
    RefusedError,
    TensorNotFoundError,
    TruncatedFileError,
    UnsupportedFormatError,
    UsageError,
    WeightscopeError,
)
from weightscope.formats import Format, register_format, unregister_format
from weightscope.formats import open_checkpoint as open
from weightscope.formats import save_checkpoint as save
from weightscope.layers import Layer, TensorRole

__version__ = "0.1.0"

__all__ = [
    "Checkpoint",
    "CheckpointNotFoundError",
    "ChecksumMismatchError",
    "CorruptCheckpointError",
    "Extent",
    "Format",
    "Layer",
    "LimitExceededError",
    "RefusedError",
    "TensorInfo",
    "TensorNotFoundError",
    "TensorRole",
    "TruncatedFileError",
    "UnsupportedFormatError",
    "UsageError",
    "WeightscopeError",
    "open",
    "register_format",
    "save",
    "unregister_format",
]
