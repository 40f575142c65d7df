"""Whole training runs: every checkpoint's tensors, their drift over the run, NaNs, conversion — on Dask.

A run is a directory's checkpoints (its ``checkpoint`` state file's history, oldest
first, or else every checkpoint file in it, and the weights of each Hugging Face Trainer
``checkpoint-N/`` directory in it: its ``model.safetensors``, or the folder itself when its
weights are sharded; a step folder that is itself one checkpoint, as torchtitan's DCP
``step-100/``), a glob, or a list of paths. Each checkpoint's step is a Trainer folder's
``trainer_state.json`` ``global_step``, else what ``weightscope.history.step_of`` reads
from its name (``model.ckpt-1000``, ``ckpt-3.safetensors``, ``step=100``,
``checkpoint-500/model.safetensors``, ...; never a model name's digits, as in
``resnet18.pth``). The checkpoints are in step order where
every one has a step of its own, else in the order their files were written (modification
time), steps shown where known.

``run_stats`` gives, per checkpoint and tensor, the figures of ``weightscope stats``
(norm, mean, std, NaN and infinity counts, ...) and the relative change
``||x - ref|| / ||ref||`` from the previous checkpoint and from the first (as
``weightscope diff``'s ``relative_l2``: non-finite pairs left out; None when there is no
such tensor of the same shape, or the reference is 0 and they differ).

How it runs: the client opens each checkpoint's index only and builds one Dask graph.
A task covers one chunk (about 64 MiB of rows along the first axis) of one tensor across
a window of consecutive checkpoints: it reads exactly those byte ranges from the files
(``weightscope.lazy.TensorSource``: path, offset, dtype; never an open handle), keeps the
previous checkpoint's chunk to compare with, and returns only figures (about 2 KiB
for a window of 8) — ``analysis.chunk_stats`` and ``analysis.pair_diff``, merged on the client
in chunk order with ``analysis.StatsPartial.merge``, as ``weightscope stats`` merges them.
Since the graph never moves arrays between tasks, a worker on any machine that sees the
same paths (shared storage) reads its own ranges there, and a single huge checkpoint is
spread over workers chunk by chunk. The same graph runs on local threads (the default),
in one thread (``scheduler="sync"``), or on a ``dask.distributed`` cluster
(``scheduler="tcp://host:8786"``, or ``client=``), with the same results bit for bit.

Chunk reads are not checked against whole-tensor checksums; ``weightscope verify`` (or
``weightscope.lazy.verification``) does that.
"""

from __future__ import annotations

import glob
import math
import os
import uuid
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from weightscope.analysis import (
    DiffPartial,
    StatsPartial,
    TensorStats,
    diff_steps,
    numeric_kind,
    stats_from_partial,
    stats_steps,
)
from weightscope.blocks import in_step
from weightscope.errors import CheckpointNotFoundError, UsageError, WeightscopeError, reason
from weightscope.formats import DEFAULT_TARGET, FORMATS, model_file_names
from weightscope.formats._folder_choice import INDEX, read_json
from weightscope.lazy import CHUNK_BYTES, INSTALL_HINT, TensorSource, require_dask, tensor_source
from weightscope.output import json_float

WINDOW = 8  # consecutive checkpoints per task: each task re-reads one earlier chunk and the first's
# A task's values are summed as ``weightscope stats`` sums them (``weightscope.blocks``): pieces of CHUNK_ELEMENTS,
# each taken a cache-sized block at a time into per-thread buffers, so no temporary is allocated per piece (Dask's
# workers run with MALLOC_TRIM_THRESHOLD_=65536, under which glibc faults a large temporary's pages in afresh each
# time). Pieces of 4,096 elements, as tasks took them before the fused blocks, spent twice the CPU in Python between
# numpy's calls (bench/bench_runs.py), with the GIL held: threads could not scale. With the C kernel
# (``weightscope._kernels``) a block's figures are one call with the GIL released, and threads scale as processes do.
# Progress: (tasks done, tasks in all).
Progress = Callable[[int, int], None]


def _trainer_weights() -> list[str]:
    """The weights in a Hugging Face Trainer ``checkpoint-N/`` directory (beside optimizer.pt, rng_state.pth, ...):
    the registry's model files, safetensors' first."""
    return [names.model_file for names in model_file_names()]


@dataclass(frozen=True)
class RunCheckpoint:
    """One checkpoint of a run: where it is and the step it was saved at (None if its name states none)."""

    path: Path
    step: int | None

    @property
    def label(self) -> str:
        return self.path.name


def step_of_name(path: Path) -> int | None:
    """The step a checkpoint was saved at: its Trainer folder's ``trainer_state.json`` ``global_step``, else what
    its name states (``weightscope.history.step_of``); None where neither says."""
    from weightscope.history import step_of

    folder = path if path.is_dir() else path.parent
    if path.is_dir() or path.name in _trainer_weights():
        step = _trainer_step(folder / "trainer_state.json")
        if step is not None:
            return step
    if path.name.isascii() and path.name.isdigit() and path.is_dir() and FORMATS.folder_checkpoint(path):
        return int(path.name)  # an Orbax manager's step folder, named by its step alone
    return step_of(path, tensorflow_prefix=FORMATS.prefix_index(path) is not None)


def _trainer_step(state: Path) -> int | None:
    """``global_step`` of a Trainer's ``trainer_state.json``; None where there is none (or it is no such file)."""
    if not state.is_file():
        return None
    try:
        document = read_json(state, "the Trainer's state")
    except WeightscopeError:
        return None
    step = document.get("global_step") if isinstance(document, dict) else None
    return step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else None


def _written(path: Path) -> float:
    """When a checkpoint was written: its file's (a TF prefix's index file's) modification time."""
    return (FORMATS.prefix_index(path) or path).stat().st_mtime


def _in_order(entries: list[RunCheckpoint]) -> list[RunCheckpoint]:
    """By step where every checkpoint has a step of its own; else by the time each was written, steps
    kept where distinct (a number shared by several, a directory's, orders nothing)."""
    steps = [entry.step for entry in entries]
    if None not in steps and len(set(steps)) == len(steps):
        return sorted(entries, key=lambda entry: (entry.step or 0, entry.path.name))
    if len({step for step in steps if step is not None}) != len([step for step in steps if step is not None]):
        entries = [RunCheckpoint(entry.path, None) for entry in entries]
    return sorted(entries, key=lambda entry: (_written(entry.path), entry.path.name))


def _as_checkpoint(path: Path) -> Path | None:
    """The checkpoint a file stands for (a TF prefix for its index and data files; the weights of a
    Trainer's ``checkpoint-N/`` directory); None for other files."""
    if path.is_dir():
        found = [path / name for name in _trainer_weights() if (path / name).is_file()]
        if not found and any(INDEX.match(file.name) for file in path.iterdir()):
            found = [path]  # sharded weights: the folder is the checkpoint
        if not found and FORMATS.folder_checkpoint(path):
            found = [path]  # a step's folder (torchtitan's DCP step-100/, DeepSpeed's global_stepN/, Orbax's N/)
        return found[0] if found and step_of_name(found[0]) is not None else None
    if prefix := FORMATS.prefix_of(path):
        return prefix
    if path.is_file() and path.name.lower().endswith(FORMATS.file_suffixes()):
        return path
    return None


def find_checkpoints(run: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[RunCheckpoint]:
    """The checkpoints of a run, oldest first: a directory, a glob, one checkpoint, or a list of these."""
    if isinstance(run, Sequence) and not isinstance(run, str):
        found: list[RunCheckpoint] = []
        for part in run:
            found += find_checkpoints(part)
        return _unique(found)
    text = os.fspath(run)
    path = Path(text)
    if glob.has_magic(text):
        candidates = [Path(match) for match in sorted(glob.glob(text))]
        paths = [found for found in map(_as_checkpoint, candidates) if found is not None]
    elif path.is_dir():
        if (path / "checkpoint").is_file():
            from weightscope.history import checkpoint_history

            entries = [entry for entry in checkpoint_history(path) if entry.exists]
            return _unique([RunCheckpoint(entry.prefix, entry.step) for entry in entries])
        paths = [found for found in map(_as_checkpoint, sorted(path.iterdir())) if found is not None]
    else:
        paths = [_as_checkpoint(path) or path]
    if not paths:
        raise CheckpointNotFoundError(f"{text}: no checkpoints found")
    return _in_order(_unique([RunCheckpoint(path, step_of_name(path)) for path in paths]))


def _unique(entries: Iterable[RunCheckpoint]) -> list[RunCheckpoint]:
    seen: dict[Path, RunCheckpoint] = {}
    for entry in entries:
        seen.setdefault(entry.path, entry)
    return list(seen.values())


# -- the results ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunTensorStats:
    """One tensor of one checkpoint of the run: its statistics and how far it moved."""

    checkpoint: str
    step: int | None
    stats: TensorStats
    change_previous: float | None  # ||x - previous|| / ||previous||
    change_first: float | None  # ||x - first|| / ||first||

    @property
    def name(self) -> str:
        return self.stats.name

    @property
    def norm(self) -> float | None:
        return self.stats.l2

    def to_json(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "step": self.step,
            **self.stats.to_json(),
            "change_previous": json_float(self.change_previous) if self.change_previous is not None else None,
            "change_first": json_float(self.change_first) if self.change_first is not None else None,
        }


@dataclass
class RunStats:
    """The figures of every checkpoint of a run, checkpoint by checkpoint, tensors in each one's order."""

    checkpoints: list[RunCheckpoint]
    tensors: list[RunTensorStats]
    tasks: int = 0
    bytes_read: int = 0  # bytes the tasks read from the files, in all
    largest_task_bytes: int = 0

    def by_name(self) -> dict[str, list[RunTensorStats]]:
        """Each tensor's rows, oldest checkpoint first."""
        found: dict[str, list[RunTensorStats]] = {}
        for row in self.tensors:
            found.setdefault(row.name, []).append(row)
        return found

    def to_json(self) -> dict[str, Any]:
        return {
            "checkpoints": [{"path": str(entry.path), "step": entry.step} for entry in self.checkpoints],
            "tensors": [row.to_json() for row in self.tensors],
        }


@dataclass(frozen=True)
class NanFinding:
    """The first checkpoint of the run in which a tensor holds NaNs or infinities."""

    name: str
    checkpoint: str
    step: int | None
    nans: int
    infs: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# -- the tasks ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Member:
    source: TensorSource
    kind: str
    linked: bool  # compared with the member before it (the checkpoint just before)
    first: bool  # the run's first checkpoint


@dataclass(frozen=True)
class _Job:
    """One task: rows ``[start, stop)`` of one tensor in consecutive checkpoints. Plain values only."""

    members: tuple[_Member, ...]
    before: TensorSource | None  # the checkpoint just before the window's first, to compare with
    first: TensorSource | None  # the run's first checkpoint, when the window does not hold it
    start: int
    stop: int
    compare: bool

    def bytes_read(self) -> int:
        sources = [member.source for member in self.members] + [s for s in (self.before, self.first) if s]
        return sum(_rows_bytes(source, self.start, self.stop) for source in sources)


def _rows_bytes(source: TensorSource, start: int, stop: int) -> int:
    if not source.raw:
        return math.prod(source.shape) * source.dtype.itemsize
    return source.byte_range(start, stop)[1]


_Figures = tuple[StatsPartial, DiffPartial | None, DiffPartial | None]


def run_job(job: _Job) -> list[_Figures]:
    """A task: each member's figures for the rows, and its differences from the previous and first checkpoints.
    Taken a chunk at a time across the members (``blocks.in_step``): a chunk is compared with the same chunk of the
    member before it and of the first while those are in cache, so the window's bytes come from memory about once,
    where a pass over each member for its figures and one for each difference read them up to five times."""
    first = job.first.read_rows(job.start, job.stop) if job.compare and job.first is not None else None
    previous = job.before.read_rows(job.start, job.stop) if job.compare and job.before is not None else None
    steps: list[Generator[None, None, Any]] = []
    places: list[tuple[int, int | None, int | None]] = []  # in steps: a member's figures, from previous, from first

    def step(generator: Generator[None, None, Any]) -> int:
        steps.append(generator)
        return len(steps) - 1

    for member in job.members:
        values = member.source.read_rows(job.start, job.stop)
        linked = job.compare and member.linked
        to_previous = step(diff_steps(previous, values)) if linked and previous is not None else None
        to_first: int | None = None
        if job.compare and member.first:
            first, to_first = values, -1  # -1: the first itself, no difference
        elif job.compare and first is not None:
            to_first = step(diff_steps(first, values))
        places.append((step(stats_steps(values, member.kind)), to_previous, to_first))
        previous = values
    done = in_step(steps)

    def found(place: int | None) -> DiffPartial | None:
        return None if place is None else DiffPartial() if place < 0 else done[place]

    return [(done[figures], found(to_previous), found(to_first)) for figures, to_previous, to_first in places]


# -- planning -------------------------------------------------------------------------------


@dataclass
class _Group:
    """A tensor name and shape, and the checkpoints (by position in the run) that hold it so."""

    name: str
    shape: tuple[int, ...]
    members: list[tuple[int, TensorSource]] = field(default_factory=list)

    def bounds(self, chunk_bytes: int) -> list[tuple[int, int]]:
        rows = min(source.rows_per_chunk(chunk_bytes) for _, source in self.members)
        total = self.shape[0] if self.shape else 1
        if total == 0:
            return [(0, 0)]
        return [(start, min(total, start + rows)) for start in range(0, total, rows)]


@dataclass
class _Plan:
    checkpoints: list[RunCheckpoint]
    order: list[list[str]]  # each checkpoint's tensors, in its order
    graph: dict[Any, Any]
    keys: list[Any]
    jobs: list[tuple[_Group, list[int]]]  # per key: the group and the run positions of its members
    bytes_read: int
    largest: int


def selected_names(
    ckpt: Any, names: Sequence[str] = (), pattern: str | None = None, include_all: bool = False
) -> list[str]:
    """The tensors a command works on: ``names`` as ``ckpt`` resolves them when given, else every parameter (every
    tensor with ``include_all``) whose name matches the glob ``pattern``."""
    import fnmatch

    if names:
        return [ckpt.resolve(name) for name in names]
    names = []
    for name in ckpt:
        if not include_all and ckpt.role(name).kind != "parameter":
            continue
        if pattern is not None and not fnmatch.fnmatchcase(name, pattern):
            continue
        names.append(name)
    return names


def _plan(
    checkpoints: list[RunCheckpoint],
    *,
    pattern: str | None,
    include_all: bool,
    compare: bool,
    chunk_bytes: int,
    window: int,
) -> _Plan:
    from weightscope.formats import open_checkpoint

    groups: dict[tuple[str, tuple[int, ...]], _Group] = {}
    order: list[list[str]] = []
    for position, entry in enumerate(checkpoints):
        with open_checkpoint(entry.path) as ckpt:
            names = []
            for name in selected_names(ckpt, pattern=pattern, include_all=include_all):
                source = tensor_source(ckpt, name)
                if not source.numeric or numeric_kind(source.dtype) is None:
                    continue  # strings and records have no figures
                names.append(name)
                group = groups.setdefault((name, source.shape), _Group(name, source.shape))
                group.members.append((position, source))
            order.append(names)
    # A fresh name per run: the files at these paths may have changed since the last one.
    token = uuid.uuid4().hex
    graph: dict[Any, Any] = {}
    keys: list[Any] = []
    jobs: list[tuple[_Group, list[int]]] = []
    total = largest = 0
    for number, group in enumerate(groups.values()):
        positions = [position for position, _ in group.members]
        by_position = dict(group.members)
        for chunk, (start, stop) in enumerate(group.bounds(chunk_bytes)):
            for begin in range(0, len(group.members), window):
                part = group.members[begin : begin + window]
                members = []
                for offset, (position, source) in enumerate(part):
                    linked = position - 1 in by_position and (offset > 0 or begin > 0)
                    linked = linked and (offset == 0 or part[offset - 1][0] == position - 1)
                    kind = numeric_kind(source.dtype)
                    assert kind is not None
                    members.append(_Member(source, kind, linked, position == 0))
                before = by_position.get(part[0][0] - 1) if compare and begin > 0 else None
                first = by_position.get(0) if compare and part[0][0] != 0 else None
                job = _Job(tuple(members), before, first, start, stop, compare)
                key = (f"weightscope-run-{token}", number, chunk, begin)
                graph[key] = (run_job, job)
                keys.append(key)
                jobs.append((group, positions[begin : begin + window]))
                size = job.bytes_read()
                total += size
                largest = max(largest, size)
    return _Plan(checkpoints, order, graph, keys, jobs, total, largest)


# -- running --------------------------------------------------------------------------------


def _missing_distributed() -> UsageError:
    return UsageError(f"a cluster scheduler needs dask.distributed, which is not installed: {INSTALL_HINT}")


def execute(
    graph: dict[Any, Any],
    keys: list[Any],
    *,
    scheduler: str | None = None,
    client: Any = None,
    workers: int | None = None,
    progress: Progress | None = None,
) -> list[Any]:
    """Compute ``keys`` of the task graph: on ``client`` (a ``dask.distributed.Client``), on the cluster
    at ``scheduler`` (``tcp://host:port``), in one thread (``"sync"``), in local processes
    (``"processes"``: where the C kernel was not built, the figures hold the GIL for part of each piece, so
    processes scale where threads may not), or on local threads (the default)."""
    dask = require_dask()
    if client is not None:
        return _on_client(client, graph, keys, progress)
    if scheduler is not None and "://" in scheduler:
        try:
            from distributed import Client
        except ImportError:
            raise _missing_distributed() from None
        try:
            owned = Client(scheduler)
        except OSError as error:  # distributed's words: "Timed out trying to connect to ... after 30 s"
            raise UsageError(f"no Dask scheduler answered at {scheduler} ({reason(error)})") from None
        with owned:
            return _on_client(owned, graph, keys, progress)
    if scheduler in (None, "threads", "threading"):
        import dask.threaded

        def get(graph: dict[Any, Any], keys: list[Any]) -> Any:
            return dask.threaded.get(graph, keys, num_workers=workers)

    elif scheduler in ("sync", "synchronous", "single-threaded"):
        import dask.local

        get = dask.local.get_sync
    elif scheduler in ("processes", "multiprocessing"):
        import dask.multiprocessing

        def get(graph: dict[Any, Any], keys: list[Any]) -> Any:
            return dask.multiprocessing.get(graph, keys, num_workers=workers)

    else:
        raise UsageError(f"unknown scheduler {scheduler!r}: threads, processes, sync, or a cluster's tcp://HOST:PORT")
    if progress is None:
        return list(get(graph, keys))
    from dask.callbacks import Callback

    done = [0]

    def finished(*_: Any) -> None:
        done[0] += 1
        progress(done[0], len(keys))

    with Callback(posttask=finished):
        return list(get(graph, keys))


def _on_client(client: Any, graph: dict[Any, Any], keys: list[Any], progress: Progress | None) -> list[Any]:
    from distributed import as_completed

    futures = client.get(graph, keys, sync=False)
    if progress is not None:
        for done, _ in enumerate(as_completed(futures), start=1):
            progress(done, len(futures))
    return list(client.gather(futures))


def run_stats(
    run: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | list[RunCheckpoint],
    *,
    pattern: str | None = None,
    include_all: bool = False,
    compare: bool = True,
    scheduler: str | None = None,
    client: Any = None,
    workers: int | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    window: int = WINDOW,
    progress: Progress | None = None,
) -> RunStats:
    """Statistics of the weights (``include_all``: every numeric tensor) of every checkpoint of ``run``.

    ``pattern`` keeps the tensors whose names match a glob; ``compare=False`` leaves out
    the changes (and their reads). See the module's description for where it runs.
    """
    require_dask()
    if chunk_bytes < 1 or window < 1:
        raise UsageError("chunk_bytes and window must be positive")
    if isinstance(run, list) and run and all(isinstance(entry, RunCheckpoint) for entry in run):
        checkpoints: list[RunCheckpoint] = list(run)
    else:
        checkpoints = find_checkpoints(run)  # type: ignore[arg-type]
    plan = _plan(
        checkpoints, pattern=pattern, include_all=include_all, compare=compare, chunk_bytes=chunk_bytes, window=window
    )
    results = execute(plan.graph, plan.keys, scheduler=scheduler, client=client, workers=workers, progress=progress)
    totals: dict[tuple[int, str], list[Any]] = {}
    for (group, positions), figures in zip(plan.jobs, results, strict=True):
        for position, (partial, to_previous, to_first) in zip(positions, figures, strict=True):
            entry = totals.get((position, group.name))
            if entry is None:
                totals[(position, group.name)] = [partial, to_previous, to_first]
                continue
            entry[0] = entry[0].merge(partial)
            entry[1] = _add(entry[1], to_previous)
            entry[2] = _add(entry[2], to_first)
    sources = {(position, group.name): source for group, _ in plan.jobs for position, source in group.members}
    rows = []
    for position, (checkpoint, names) in enumerate(zip(checkpoints, plan.order, strict=True)):
        for name in names:
            partial, to_previous, to_first = totals[(position, name)]
            source = sources[(position, name)]
            kind = numeric_kind(source.dtype)
            assert kind is not None
            stats = stats_from_partial(name, source.dtype, source.shape, kind, partial)
            rows.append(
                RunTensorStats(
                    str(checkpoint.path), checkpoint.step, stats, _relative_l2(to_previous), _relative_l2(to_first)
                )
            )
    return RunStats(checkpoints, rows, len(plan.keys), plan.bytes_read, plan.largest)


def _add(total: DiffPartial | None, part: DiffPartial | None) -> DiffPartial | None:
    """Merge, where a difference exists on both sides (None: not comparable, e.g. a change of shape)."""
    return None if total is None or part is None else total.merge(part)


def _relative_l2(figures: DiffPartial | None) -> float | None:
    return None if figures is None else figures.relative_l2


def find_nan(
    run: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | list[RunCheckpoint], **options: Any
) -> list[NanFinding]:
    """Per tensor, the first checkpoint of ``run`` holding NaNs or infinities (tensors without any left out).

    ``options`` are ``run_stats``'s (``pattern``, ``include_all``, ``scheduler``, ``client``, ...).
    """
    stats = run_stats(run, compare=False, **options)
    found = []
    for name, rows in stats.by_name().items():
        for row in rows:
            if row.stats.nans or row.stats.infs:
                found.append(NanFinding(name, row.checkpoint, row.step, row.stats.nans or 0, row.stats.infs or 0))
                break
    return found


# -- conversion -----------------------------------------------------------------------------


def _converted_name(path: Path, to: str) -> str:
    """The name ``path`` converted to format ``to`` gets: its stem and the first ending ``to``'s writer writes
    (none for a checkpoint written at a prefix)."""
    name = path.parent.name if path.name in _trainer_weights() else path.name  # checkpoint-500/model.safetensors
    for suffix in FORMATS.file_suffixes():
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    target = FORMATS[to]
    return name + ("" if target.prefix else target.writes[0])


def convert_one(source: str, destination: str, to: str, options: dict[str, Any]) -> dict[str, Any]:
    """A task: convert one checkpoint; a summary of what was written."""
    from weightscope.convert import convert

    done = convert(source, destination, to=to, **options)
    return {"source": source, "destination": destination, "tensors": len(done.tensors), "nbytes": done.nbytes}


def run_convert(
    run: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | list[RunCheckpoint],
    out: str | os.PathLike[str],
    *,
    to: str = DEFAULT_TARGET,
    scheduler: str | None = None,
    client: Any = None,
    workers: int | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> list[dict[str, Any]]:
    """Convert every checkpoint of ``run`` into directory ``out`` as format ``to``, a task per checkpoint.

    ``options`` go to ``weightscope.convert.convert`` (``layout``, ``names``, ``include_optimizer``, ``pattern``).
    """
    require_dask()
    if to not in FORMATS.writable():
        raise UsageError(f"cannot write format {to!r}; writable: {', '.join(FORMATS.writable())}")
    if isinstance(run, list) and run and all(isinstance(entry, RunCheckpoint) for entry in run):
        checkpoints: list[RunCheckpoint] = list(run)
    else:
        checkpoints = find_checkpoints(run)  # type: ignore[arg-type]
    directory = Path(out).resolve()
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory} is not a directory")
    directory.mkdir(parents=True, exist_ok=True)
    targets: dict[str, Path] = {}
    for entry in checkpoints:
        name = _converted_name(entry.path, to)
        if name in targets:
            raise UsageError(f"{entry.path} and {targets[name]} would both be written as {directory / name}")
        targets[name] = entry.path
    token = uuid.uuid4().hex
    graph = {
        (f"weightscope-convert-{token}", i): (convert_one, str(path.resolve()), str(directory / name), to, options)
        for i, (name, path) in enumerate(targets.items())
    }
    return execute(graph, list(graph), scheduler=scheduler, client=client, workers=workers, progress=progress)
