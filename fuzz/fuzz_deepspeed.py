"""Fuzz a DeepSpeed ZeRO checkpoint folder: the pickles of its model-states and optimizer-states rank files.

An input picks the stage (its first byte: even 2, odd 3), then holds rank 0's model-states pickle and, after a NUL
pair, rank 1's optimizer-states pickle; each replaces the ``data.pkl`` of a copy of DeepSpeed's own fixture
(tests/fixtures/deepspeed), the storages kept. The folder is opened and everything asked of it, so the allow-list
(DeepSpeed's enum and records), param_shapes, frozen fragments, shared params, the partition counts and the
consolidation's checks are all reached.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import fuzzlib

with fuzzlib.instrumented():
    # instrumented for coverage, used by fuzzlib.exercise
    import weightscope.formats.deepspeed
    import weightscope.formats.pytorch_pickle  # noqa: F401

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "deepspeed"
SEPARATOR = b"\0\0"
MODEL = {2: "mp_rank_00_model_states.pt", 3: "zero_pp_rank_0_mp_rank_00_model_states.pt"}
OPTIM = "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt"


def _members(path: Path) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(path) as archive:
        return [(info.filename, archive.read(info)) for info in archive.infolist()]


FOLDERS = {stage: fuzzlib.SCRATCH / f"stage{stage}" for stage in MODEL}
ORIGINALS = {}
for stage, folder in FOLDERS.items():
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(FIXTURES / f"stage{stage}" / "global_step2", folder)
    ORIGINALS[stage] = {name: _members(folder / name) for name in (MODEL[stage], OPTIM)}


def _pickle(stage: int, name: str) -> bytes:
    return next(data for member, data in ORIGINALS[stage][name] if member.endswith("/data.pkl"))


def _write(stage: int, name: str, pickle: bytes) -> None:
    with zipfile.ZipFile(FOLDERS[stage] / name, "w", zipfile.ZIP_STORED) as archive:
        for member, data in ORIGINALS[stage][name]:
            archive.writestr(member, pickle if member.endswith("/data.pkl") else data)


def seeds() -> list[bytes]:
    return [bytes([stage]) + _pickle(stage, MODEL[stage]) + SEPARATOR + _pickle(stage, OPTIM) for stage in MODEL]


def one_input(data: bytes) -> None:
    stage = 3 if data[:1] and data[0] % 2 else 2
    model, _, optim = data[1:].partition(SEPARATOR)
    _write(stage, MODEL[stage], model)
    _write(stage, OPTIM, optim)
    fuzzlib.exercise(FOLDERS[stage])


if __name__ == "__main__":
    fuzzlib.run(one_input, seeds())
