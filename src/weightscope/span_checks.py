"""Checksums of the spans a checkpoint's tensors are checked by, computed on the machine's other cores.

A PyTorch storage (any zip member, ``Extent.checked``) is one span whose CRC-32 covers every tensor viewing it,
and a tensor is handed out only once its span's checksum is found to match (``Checkpoint._checked``). Computed
on the reading thread alone, that check costs a third of reading the tensors at the speed of a numpy sum. Two
things take it off that thread, both under the same guarantee, since the caller compares each checksum itself
before the tensor is handed out:

- read-ahead: when a span of a mapped (local) file is checked, the spans of the tensors listed after it, up to
  ``AHEAD_BYTES`` past it, are checksummed on a few threads (zlib-ng's CRC-32 releases the GIL) in pieces of
  ``AHEAD_PIECE_BYTES`` while the caller uses the tensor it has: a reader walking the tensors in order finds
  their checksums done;
- a span checked on demand of ``2 * PIECE_BYTES`` or more is cut into pieces over the threads and the caller.

Pieces' CRC-32s are joined with ``crc32_combine``; a kind of checksum without one is computed a span at a time. A
piece still queued when the caller needs it is taken back from the queue (``Future.cancel``) and computed by the
caller, so a caller waits at most for the pieces already running (one per thread: on a loaded machine a thread
may wait for a core), never behind read-ahead; a process forked meanwhile, without the pool's threads, forgets the
pieces and computes what it reads itself.
Spans under ``MIN_AHEAD_BYTES`` are computed by the caller: a thread's hand-off costs more.
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

AHEAD_BYTES = 256 << 20  # how far past the span being read the spans after it are checksummed
MIN_AHEAD_BYTES = 1 << 20  # smaller spans are checksummed on the reading thread
PIECE_BYTES = 16 << 20  # the smallest piece of a span split over the threads on demand
AHEAD_PIECE_BYTES = 8 << 20  # the largest piece checksummed ahead: the most a caller waits for per thread
Checksum = Callable[[bytes | memoryview], int]
Combine = Callable[[int, int, int], int]
Span = tuple[str, int, int]  # file, offset, bytes


def workers() -> int:
    """Threads that checksum besides the reading one: the process's other cores (at least one, at most 4)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(4, cores - 1))


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _shared_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            from concurrent.futures import ThreadPoolExecutor  # (and logging, queue...): not at every start

            _pool = ThreadPoolExecutor(workers(), thread_name_prefix="weightscope-checksum")
        return _pool


def _forget_pool() -> None:
    """In a forked child the pool's threads do not exist: a new pool is made when one is needed."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _submitted(checksum: Callable[..., int], *args: Any) -> Future[int] | None:
    """``checksum(*args)`` (a piece's checksum), submitted to the pool; None once the interpreter is shutting down,
    when the pool takes no more work (``runs convert`` stopped by a signal finishes its conversions then: their
    read-backs compute their checksums themselves). Stop signals wait meanwhile (``atomic.signals_held``): the
    ``Interrupted`` of one that cut the pool's starting of a thread would leave the thread unknown to the pool's
    exit hook, and the process waiting for it forever as it exits."""
    from weightscope.atomic import signals_held  # (with the writing code's imports): not at every start, as the pool

    try:
        with signals_held():
            return _shared_pool().submit(checksum, *args)
    except RuntimeError:  # "cannot schedule new futures after interpreter shutdown"
        return None


def _result(future: Future[int] | None, compute: Callable[[], int]) -> int:
    """The future's value; computed here by ``compute`` instead when it had not started (or was never submitted).
    Taken with stop signals held, as it is submitted: a future's lock left held by a signal's exception would stop
    the thread that runs it, and the process's exit with it."""
    if future is not None:
        from weightscope.atomic import signals_held

        with signals_held():
            if not future.cancel():
                return future.result()
    return compute()


def pieces(length: int, parts: int) -> list[tuple[int, int]]:
    """``(offset, bytes)`` of the pieces a span of ``length`` bytes is split into over ``parts`` threads: as many
    as ``parts``, none under ``PIECE_BYTES`` (one piece when the span is under twice that)."""
    count = max(1, min(parts, length // PIECE_BYTES))
    bounds = [length * index // count for index in range(count + 1)]
    return [(start, stop - start) for start, stop in itertools.pairwise(bounds)]


def split_checksum(data: memoryview, checksum: Checksum, combine: Combine) -> int:
    """The checksum of ``data``, its pieces (``pieces``) computed on the pool's threads and this one at once."""
    parts = pieces(len(data), workers() + 1)
    if len(parts) == 1:
        return checksum(data)
    views = [data[start : start + length] for start, length in parts]
    futures = [_submitted(checksum, view) for view in views[1:]]
    value = checksum(views[0])
    for view, future in zip(views[1:], futures, strict=True):
        value = combine(value, _result(future, lambda view=view: checksum(view)), len(view))  # type: ignore[misc]
    return value


Pieces: TypeAlias = "list[tuple[Future[int] | None, memoryview]]"  # a span's pieces in order, each's checksum submitted


def _submitted_pieces(data: memoryview, checksum: Checksum, combine: Combine | None) -> Pieces:
    """The span's pieces of ``AHEAD_PIECE_BYTES`` (one piece: a kind of checksum without a combine), submitted."""
    step = AHEAD_PIECE_BYTES if combine is not None else max(len(data), 1)
    views = [data[start : start + step] for start in range(0, len(data), step)] or [data]
    return [(_submitted(checksum, view), view) for view in views]


def _joined(pending: Pieces, checksum: Checksum, combine: Combine | None, process: int) -> int:
    """The checksum of the pieces one after another: each's from the pool, or computed here when not begun (in
    the process that submitted them; every one in a child forked since), the last first while the threads work
    from the first."""
    found = [0] * len(pending)
    for number in reversed(range(len(pending))):
        future, piece = pending[number]
        found[number] = _result(future if os.getpid() == process else None, functools.partial(checksum, piece))
    value = found[0]
    for (_, piece), other in zip(pending[1:], found[1:], strict=True):
        value = combine(value, other, len(piece))  # type: ignore[misc]  # several pieces: a combine
    return value


class SpanChecks:
    """One checkpoint's spans being checksummed ahead of their reads, and the window read ahead (see the module)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[Span, Pieces] = {}  # each span's pieces, in order
        self._ahead: deque[tuple[int, int]] = deque()  # (position, bytes) of the spans scheduled, in order
        self._ahead_bytes = 0
        self._next = 0  # the position in the listing the read-ahead continues from
        self._process = os.getpid()  # a forked child has none of the pieces its parent's threads were computing

    def _in_child(self) -> None:
        """Forget the pieces read ahead in the parent process (with the lock held): no thread here computes them."""
        if self._process != os.getpid():
            self._pending.clear()
            self._ahead.clear()
            self._ahead_bytes, self._next, self._process = 0, 0, os.getpid()

    def value(self, span: Span, data: memoryview, checksum: Checksum, combine: Combine | None) -> int:
        """The checksum of the span's bytes ``data``: read ahead already, else computed now (split if it can be)."""
        with self._lock:
            self._in_child()
            pending = self._pending.pop(span, None)
        if pending is None:
            return split_checksum(data, checksum, combine) if combine is not None else checksum(data)
        return _joined(pending, checksum, combine, self._process)

    def later(self, span: Span, data: memoryview, checksum: Checksum, combine: Combine | None) -> Callable[[], int]:
        """The checksum of the span's bytes ``data``, as a call that gives it: its pieces read ahead already, else
        submitted to the pool's threads now while the caller goes on (``Checkpoint.checks_deferred``); the call
        computes those not begun itself, last first, as ``value`` does. A span under ``MIN_AHEAD_BYTES`` is
        checksummed now."""
        with self._lock:
            self._in_child()
            pending = self._pending.pop(span, None)
        if pending is None and len(data) < MIN_AHEAD_BYTES:
            value = checksum(data)
            return lambda: value
        pending = pending or _submitted_pieces(data, checksum, combine)
        return functools.partial(_joined, pending, checksum, combine, self._process)

    def read_ahead(
        self, position: int, following: Callable[[int], tuple[Span, memoryview, Checksum, Combine | None] | None]
    ) -> None:
        """Checksum the spans of the listing's positions after ``position`` on the pool's threads, up to
        ``AHEAD_BYTES`` past it; ``following(index)`` gives the span at a position, its bytes, checksum and combine
        (None: none to check; ``IndexError``: the listing's end)."""
        with self._lock:
            self._in_child()
            while self._ahead and self._ahead[0][0] <= position:
                self._ahead_bytes -= self._ahead.popleft()[1]
            if self._next <= position:  # a jump past the window: start again after this position
                self._ahead.clear()
                self._ahead_bytes, self._next = 0, position + 1
            while self._ahead_bytes < AHEAD_BYTES:
                try:
                    found = following(self._next)
                except IndexError:
                    return
                self._next += 1
                if found is None:
                    continue
                span, data, checksum, combine = found
                if span in self._pending or len(data) < MIN_AHEAD_BYTES:
                    continue
                self._pending[span] = _submitted_pieces(data, checksum, combine)
                self._ahead.append((self._next - 1, len(data)))
                self._ahead_bytes += len(data)

    def close(self) -> None:
        """Drop the spans read ahead (their views keep a closed file's map alive), cancelling those not begun."""
        with self._lock:
            for pieces in self._pending.values():
                for future, _ in pieces:
                    if future is not None:
                        future.cancel()
            self._pending.clear()
            self._ahead.clear()
            self._ahead_bytes = 0


class Pending:
    """Checksums computed on the pool's threads while the caller goes on (``convert`` writing the next tensor, or
    reading it back): each added under a name, with what computes it, the bytes it covers, and whether they are a
    mapped file's (page cache, which the kernel reclaims). Only those wait for a thread: the checksum of bytes in
    the process's own memory (a copy, a decoded tensor) is computed when added, so that no more of them than the
    caller holds is ever kept. At most ``AHEAD_BYTES`` wait: past that the caller computes the newest itself, as
    ``values()`` computes those the threads have not begun, newest first, while they finish the oldest. One of under
    ``MIN_AHEAD_BYTES`` is computed when added (a thread's hand-off costs more), and every one in a process forked
    meanwhile."""

    def __init__(self) -> None:
        self._queue: deque[tuple[str, Future[int] | None, Callable[[], int], int]] = deque()
        self._held = 0
        self._values: dict[str, int] = {}
        self._process = os.getpid()

    def add(self, name: str, compute: Callable[[], int], nbytes: int, mapped: bool) -> None:
        if not mapped or nbytes < MIN_AHEAD_BYTES or self._process != os.getpid():
            self._values[name] = compute()
            return
        self._queue.append((name, _submitted(compute), compute, nbytes))
        self._held += nbytes
        while self._held > AHEAD_BYTES:
            self._settle_newest()

    def _settle_newest(self) -> None:
        key, future, compute, nbytes = self._queue.pop()
        self._held -= nbytes
        self._values[key] = _result(future if self._process == os.getpid() else None, compute)

    def values(self) -> dict[str, int]:
        """Every checksum added, by its name."""
        while self._queue:
            self._settle_newest()
        return self._values
