"""A directory's checkpoint history: every checkpoint its ``checkpoint`` file lists; and the one
step parser ``history`` and ``runs`` share.

TensorFlow's savers keep the last few checkpoints of a run (``model.ckpt-1000``,
``model.ckpt-2000``, …) and list them in the directory's ``checkpoint`` state file,
oldest first, with the time each was written (TF2 records it; TF1 ``Saver`` records it
too when asked, else the index file's modification time stands in).

A checkpoint's step (``step_of``) comes from, in order: the saver's ``-N`` suffix of a
TensorFlow prefix (what the state file lists, or an ``.index`` beside its data: savers
append the global step or save counter so); else a pattern that says "step" in the name of
the file or of the two folders above it — ``ckpt-123`` (``model.ckpt-123``), ``step123``,
``step_123``, ``step-123``, ``step=123``, ``global_step123`` (DeepSpeed),
``epoch=3-step=100`` (Lightning: the step), ``checkpoint-500`` (Hugging Face Trainer's
directories), ``iter_0000100`` (Megatron). Any other digits (``resnet18.pth``,
``vgg16-397923af.pth``) are a model's name, never a step: such a run is ordered by the
files' modification times.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from weightscope.errors import CheckpointNotFoundError
from weightscope.formats.tf_state import bundle_file, read_checkpoint_state, state_path
from weightscope.sources import local_path

_SAVER_SUFFIX = re.compile(r"-(\d+)$")
_STEP_PATTERNS = re.compile(
    r"(?:^|[^a-z0-9])(?:step|ckpt|checkpoint|iter)(?:[_=-]|(?<=step))(\d+)(?![0-9])",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class HistoryEntry:
    prefix: Path
    step: int | None  # the number TF savers append to the prefix (global step or save counter)
    timestamp: float | None  # seconds since the epoch; None when the files are gone
    newest: bool
    exists: bool


def step_of(path: Path, *, tensorflow_prefix: bool = False) -> int | None:
    """The step ``path``'s name (or its folder's, or that folder's) states, by the rules above; None where none does.

    ``tensorflow_prefix``: ``path`` is a TensorFlow checkpoint prefix, whose ``-N`` a saver appended.
    """
    if tensorflow_prefix and (match := _SAVER_SUFFIX.search(path.name)):
        return int(match.group(1))
    for name in (path.name, path.parent.name, path.parent.parent.name):  # Megatron: iter_N/mp_rank_00/x.pt
        found = _STEP_PATTERNS.findall(name)
        if found:
            return int(found[-1])  # epoch=3-step=100: the last is the step
    return None


def checkpoint_history(directory: str | Path) -> list[HistoryEntry]:
    """The checkpoints ``directory``'s state file lists, oldest first."""
    directory = Path(directory)
    if directory.is_file() and directory.name == "checkpoint":
        directory = directory.parent
    state = read_checkpoint_state(directory) if directory.is_dir() else None
    if state is None:
        raise CheckpointNotFoundError(f"{directory}: no 'checkpoint' state file listing a history")
    recorded = list(state.all_model_checkpoint_paths) or [state.model_checkpoint_path]
    if state.model_checkpoint_path and state.model_checkpoint_path not in recorded:
        recorded.append(state.model_checkpoint_path)
    times = list(state.all_model_checkpoint_timestamps)
    entries = []
    for position, path in enumerate(recorded):
        prefix = local_path(state_path(directory, path))
        assert prefix is not None  # a local directory's files are local
        index = bundle_file(prefix, ".index")
        exists = index.is_file()
        timestamp = times[position] if len(times) == len(recorded) else None
        if timestamp is None and exists:
            timestamp = index.stat().st_mtime
        step = step_of(prefix, tensorflow_prefix=True)
        entries.append(HistoryEntry(prefix, step, timestamp, path == state.model_checkpoint_path, exists))
    return entries
