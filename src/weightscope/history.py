"""A directory's checkpoint history: every checkpoint its ``checkpoint`` file lists.

TensorFlow's savers keep the last few checkpoints of a run (``model.ckpt-1000``,
``model.ckpt-2000``, …) and list them in the directory's ``checkpoint`` state file,
oldest first, with the time each was written (TF2 records it; TF1 ``Saver`` records it
too when asked, else the index file's modification time stands in).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from weightscope.errors import CheckpointNotFoundError, UsageError
from weightscope.formats.tensorflow import bundle_file, read_checkpoint_state, state_path

_STEP = re.compile(r"-(\d+)$")


@dataclass(frozen=True)
class HistoryEntry:
    prefix: Path
    step: int | None  # the number TF savers append to the prefix (global step or save counter)
    timestamp: float | None  # seconds since the epoch; None when the files are gone
    newest: bool
    exists: bool


def step_of(prefix: Path) -> int | None:
    match = _STEP.search(prefix.name)
    return int(match.group(1)) if match else None


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
        prefix = state_path(directory, path)
        index = Path(bundle_file(prefix, ".index"))
        exists = index.is_file()
        timestamp = times[position] if len(times) == len(recorded) else None
        if timestamp is None and exists:
            timestamp = index.stat().st_mtime
        entries.append(HistoryEntry(prefix, step_of(prefix), timestamp, path == state.model_checkpoint_path, exists))
    return entries


def select_step(directory: str | Path, step: int) -> Path:
    """The prefix of the checkpoint saved at ``step`` in ``directory``'s history."""
    entries = checkpoint_history(directory)
    for entry in entries:
        if entry.step == step:
            return entry.prefix
    steps = ", ".join(str(entry.step) for entry in entries if entry.step is not None) or "none"
    raise UsageError(f"{directory}: no checkpoint of step {step} in its history (steps: {steps})")
