"""Fuzz the legacy (pre-1.6) PyTorch reader: five consecutive pickles, then the storages' counts and bytes."""

from __future__ import annotations

import fuzzlib
from fuzz_pytorch_zip import torch_files

with fuzzlib.instrumented():
    import weightscope.formats.pytorch  # noqa: F401 - instrumented for coverage


def seeds() -> list[bytes]:
    """``torch.save(..., _use_new_zipfile_serialization=False)`` of a state dict, a training checkpoint, every dtype."""
    return torch_files(legacy=True)


def one_input(data: bytes) -> None:
    fuzzlib.exercise(fuzzlib.scratch_file("input-legacy.pt", data), "pytorch")


if __name__ == "__main__":
    fuzzlib.run(one_input, seeds())
