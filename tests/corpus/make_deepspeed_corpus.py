"""Write tests/corpus/deepspeed/: broken DeepSpeed ZeRO tag folders, each a folder named <Error>--<why>.

Each is a copy of a tag folder DeepSpeed itself wrote (tests/fixtures/deepspeed/stage{2,3}/global_step2, made by
tests/fixtures/deepspeed/make_zero.py) with one thing broken: a rank file's pickle rewritten (its other members
kept), a rank file removed or cut short. Run from the repo root: ``python tests/corpus/make_deepspeed_corpus.py``.
"""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
FOLDER = HERE / "deepspeed"
FIXTURES = HERE.parent / "fixtures" / "deepspeed"
OPTIM = "bf16_zero_pp_rank_{}_mp_rank_00_optim_states.pt"
MODEL = {2: "mp_rank_00_model_states.pt", 3: "zero_pp_rank_0_mp_rank_00_model_states.pt"}


def rewrite(path: Path, change: Callable[[bytes], bytes]) -> None:
    """Rewrite the pickle of a torch zip (its data.pkl), the archive's other members kept."""
    with zipfile.ZipFile(path) as archive:
        members = [(info.filename, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members:
            archive.writestr(name, change(data) if name.endswith("/data.pkl") else data)


def after(key: bytes, old: bytes, new: bytes) -> Callable[[bytes], bytes]:
    """Replace the first ``old`` after the pickled string ``key``."""

    def change(data: bytes) -> bytes:
        start = data.index(key) + len(key)
        at = data.index(old, start)
        return data[:at] + new + data[at + len(old) :]

    return change


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-300])


# name -> (stage, the file broken, how)
DAMAGE: dict[str, tuple[int, str, Callable[[Path], None]]] = {
    "RefusedError--os-system-in-an-optimizer-pickle": (
        2,
        OPTIM.format(1),
        lambda path: rewrite(
            path, lambda data: data.replace(b"deepspeed.runtime.fp16.loss_scaler\nLossScaler", b"os\nsystem")
        ),
    ),
    "CorruptCheckpointError--zero-stage-enum-of-7": (
        2,
        OPTIM.format(0),
        lambda path: rewrite(path, after(b"ZeroStageEnum", b"K\x02", b"K\x07")),
    ),
    "CheckpointNotFoundError--optimizer-rank-file-missing": (3, OPTIM.format(1), Path.unlink),
    "CorruptCheckpointError--partition-counts-disagree": (
        2,
        OPTIM.format(1),
        lambda path: rewrite(path, after(b"partition_count", b"K\x02", b"K\x03")),
    ),
    "CorruptCheckpointError--dp-world-size-disagrees": (
        2,
        MODEL[2],
        lambda path: rewrite(path, after(b"dp_world_size", b"K\x02", b"K\x03")),
    ),
    "CorruptCheckpointError--stage3-partitions-do-not-add-up": (
        3,
        MODEL[3],
        lambda path: rewrite(path, after(b"param_shapes", b"K\x07K\x05\x86", b"K\x09K\x05\x86")),
    ),
    "CorruptCheckpointError--stage2-partitions-do-not-add-up": (
        2,
        MODEL[2],
        lambda path: rewrite(path, after(b"param_shapes", b"K\x07K\x05\x86", b"K\x09K\x05\x86")),
    ),
    "CorruptCheckpointError--rank-file-cut-short": (3, OPTIM.format(1), _truncate),
}


def main() -> None:
    shutil.rmtree(FOLDER, ignore_errors=True)
    FOLDER.mkdir()
    for name, (stage, file, damage) in DAMAGE.items():
        target = FOLDER / name
        shutil.copytree(FIXTURES / f"stage{stage}" / "global_step2", target)
        damage(target / file)


if __name__ == "__main__":
    main()
