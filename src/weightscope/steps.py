"""A directory's checkpoints by step: its TensorFlow ``checkpoint`` state file's history, else the run ``runs``
finds in it (DeepSpeed's ``global_stepN/`` folders); what ``history`` lists and ``--step`` picks from."""

from __future__ import annotations

from pathlib import Path

from weightscope.errors import CheckpointNotFoundError, UsageError
from weightscope.formats._sniffing import latest_tag
from weightscope.history import HistoryEntry, checkpoint_history
from weightscope.runs import find_checkpoints


def run_history(directory: str | Path) -> list[HistoryEntry]:
    """The checkpoints of ``directory`` oldest first: its ``checkpoint`` state file's history, else the checkpoints
    ``runs`` finds in it (DeepSpeed's ``global_stepN/`` folders; the newest the one ``latest`` names, else the last)."""
    try:
        return checkpoint_history(directory)
    except CheckpointNotFoundError:
        if not Path(directory).is_dir():
            raise
    run = find_checkpoints(directory)
    tag = latest_tag(Path(directory))
    newest = next((found.path for found in run if found.path.name == tag), run[-1].path)
    return [
        HistoryEntry(found.path, found.step, found.path.stat().st_mtime, found.path == newest, True) for found in run
    ]


def select_step(directory: str | Path, step: int) -> Path:
    """The prefix of the checkpoint saved at ``step`` in ``directory``'s history (``run_history``)."""
    entries = run_history(directory)
    for entry in entries:
        if entry.step == step:
            return entry.prefix
    steps = ", ".join(str(entry.step) for entry in entries if entry.step is not None) or "none"
    raise UsageError(f"{directory}: no checkpoint of step {step} in its history (steps: {steps})")
