"""weightscope: the trained parameters of neural-network checkpoints, without the frameworks.

>>> import weightscope as ws
>>> with ws.open("checkpoint/model.ckpt") as ckpt:   # doctest: +SKIP
...     kernel = ckpt["layer1/kernel"]

``dir(weightscope)`` lists the public API (``__all__``); the modules under it (``weightscope.analysis``, ...) are
imported by name.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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
    from weightscope.checkpoint import Checkpoint, Extent, TensorInfo
    from weightscope.formats import Format, register_format, unregister_format
    from weightscope.formats import save_checkpoint as save
    from weightscope.frameworks import load_checkpoint as load
    from weightscope.frameworks import open_checkpoint as open
    from weightscope.layers import Layer, TensorRole

# Where each name of the API but the errors lives: (module, its name there), imported on first use. ``import
# weightscope`` then imports no numpy, and the command line sets what numpy's BLAS reads at its load first
# (``weightscope.cli._environment``); ``weightscope.layers`` and its naming conventions (~3 ms) wait for roles.
_LAZY = {
    "Checkpoint": ("weightscope.checkpoint", "Checkpoint"),
    "Extent": ("weightscope.checkpoint", "Extent"),
    "TensorInfo": ("weightscope.infos", "TensorInfo"),
    "Format": ("weightscope.formats", "Format"),
    "register_format": ("weightscope.formats", "register_format"),
    "unregister_format": ("weightscope.formats", "unregister_format"),
    "save": ("weightscope.formats", "save_checkpoint"),
    "load": ("weightscope.frameworks", "load_checkpoint"),
    "open": ("weightscope.frameworks", "open_checkpoint"),
    "Layer": ("weightscope.layers", "Layer"),
    "TensorRole": ("weightscope.layers", "TensorRole"),
}


def __getattr__(name: str) -> Any:
    """A name of ``_LAZY``, imported now and kept."""
    if name not in _LAZY:
        raise AttributeError(f"module 'weightscope' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = globals()[name] = getattr(importlib.import_module(module), attribute)
    return value


def __dir__() -> list[str]:
    """The public API only: not the submodules imported along the way, nor ``annotations``."""
    return sorted(__all__)
