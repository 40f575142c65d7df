"""weightscope: the trained parameters of neural-network checkpoints, without the frameworks.

>>> import weightscope as ws
>>> with ws.open("checkpoint/model.ckpt") as ckpt:   # doctest: +SKIP
...     kernel = ckpt["layer1/kernel"]

``dir(weightscope)`` lists the public API (``__all__``); the modules under it (``weightscope.analysis``, ...) are
imported by name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
from weightscope.formats import save_checkpoint as save
from weightscope.frameworks import load_checkpoint as load
from weightscope.frameworks import open_checkpoint as open

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
    "__version__",
    "load",
    "open",
    "register_format",
    "save",
    "unregister_format",
]


if TYPE_CHECKING:
    from weightscope.layers import Layer, TensorRole


def __getattr__(name: str) -> Any:
    """``Layer`` and ``TensorRole``, imported on first use: ``weightscope.layers`` and its naming conventions cost
    every command ~3 ms of its start, and reading values needs neither."""
    if name in ("Layer", "TensorRole"):
        from weightscope import layers

        return getattr(layers, name)
    raise AttributeError(f"module 'weightscope' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public API only: not the submodules imported along the way, nor ``annotations``."""
    return sorted(__all__)
