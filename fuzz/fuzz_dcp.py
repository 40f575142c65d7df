"""Fuzz a PyTorch DCP folder: its ``.metadata`` pickle, beside the data files of a real 2-rank FSDP2 checkpoint.

An input is the ``.metadata`` bytes, then (after ``\\0RANK-1\\0``, where it is) a replacement for rank 1's
``__1_0.distcp``: the folder is opened and everything asked of it, so the allow-list of DCP's metadata classes,
the chunks' geometry checks (rank, bounds, overlap, holes), the storage entries' byte ranges and each item's
torch.save zip (read over its range only) are all reached. Seeds: the fixture's own ``.metadata`` and the
broken folders' of ``tests/corpus/dcp/``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import fuzzlib

with fuzzlib.instrumented():
    import weightscope.formats.dcp  # noqa: F401 - instrumented for coverage, used by fuzzlib.exercise

ROOT = Path(__file__).resolve().parent.parent / "tests"
FIXTURE = ROOT / "fixtures" / "dcp" / "fsdp2_adam"
FOLDER = fuzzlib.SCRATCH / "dcp"
shutil.copytree(FIXTURE, FOLDER, dirs_exist_ok=True)
RANK_1 = (FIXTURE / "__1_0.distcp").read_bytes()
SEPARATOR = b"\0RANK-1\0"  # not in a pickle of DCP metadata


def seeds() -> list[bytes]:
    corpus = sorted((ROOT / "corpus" / "dcp").glob("*/.metadata"))
    own = (FIXTURE / ".metadata").read_bytes()
    return [own, own + SEPARATOR + RANK_1[: len(RANK_1) // 2], *(path.read_bytes() for path in corpus)]


def one_input(data: bytes) -> None:
    metadata, separator, rank_1 = data.partition(SEPARATOR)
    (FOLDER / ".metadata").write_bytes(metadata if separator else data)
    (FOLDER / "__1_0.distcp").write_bytes(rank_1 if separator else RANK_1)
    fuzzlib.exercise(FOLDER)


if __name__ == "__main__":
    fuzzlib.run(one_input, seeds())
