"""Fuzz the legacy (pre-1.6) PyTorch reader: five consecutive pickles, then the storages' counts and bytes."""

from __future__ import annotations

import fuzzlib
from fuzz_pytorch_zip import torch_files

with fuzzlib.instrumented():
    import weightscope.formats.pytorch  # noqa: F401 - instrumented for coverage


def seeds() -> list[bytes]:
    """``torch.save(..., _use_new_zipfile_serialization=False)`` of a state dict, a training checkpoint, every dtype,
    and the files Python 2 wrote (tests/legacy/)."""
    python2 = sorted((fuzzlib.ROOT.parent / "tests" / "legacy").glob("python2-*.pt"))
    return torch_files(legacy=True) + [path.read_bytes() for path in python2]


def one_input(data: bytes) -> None:
    fuzzlib.exercise(fuzzlib.scratch_file("input-legacy.pt", data), "pytorch")


if __name__ == "__main__":
    fuzzlib.run(one_input, seeds())
