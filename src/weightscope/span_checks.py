"""Checksums of the spans a checkpoint's tensors are checked by, computed on the machine's other cores.

A PyTorch storage (any zip member, ``Extent.checked``) is one span whose CRC-32 covers every tensor viewing it,
and a tensor is handed out only once its span's checksum is found to match (``Checkpoint._checked``). Computed
on the reading thread alone, that check costs a third of reading the tensors at the speed of a numpy sum. Two
things take it off that thread, both under the same guarantee, since the caller compares each checksum itself
before the tensor is handed out:

- read-ahead: when a span of a mapped (local) file is checked, the spans of the tensors listed after it, up to
  ``AHEAD_BYTES`` past it, are checksummed on a few threads (zlib-ng's CRC-32 releases the GIL) while the caller
  uses the tensor it has: a reader walking the tensors in order finds their checksums done, or under way;
- a span checked on demand of more than ``CHUNK_BYTES`` is shared by the threads and the caller.

A span is cut into chunks of ``CHUNK_BYTES`` (``_Split``). The threads take them from its front, the caller from its
back, each taking one when it is done with the last: however far the threads got, the caller computes what is left,
waits only for the chunks they are computing (one each), and meanwhile computes chunks from the back of the spans
read ahead, so on two cores the reading thread and the checksum thread share the CRC-32 evenly whatever the reader
does between reads. (Pieces of 8 MiB, each a ``Future``, left the reader idle behind the thread's piece in flight:
reading 1 GiB of storages and summing them took 6-9% longer than with chunks of 4 MiB in the same runs; chunks of 2
MiB 1-2% longer, of 1 MiB 3-5%.) Chunks' CRC-32s are joined with ``crc32_combine``; a kind of checksum without one
is one chunk. A process forked meanwhile, without the pool's threads, computes every chunk of what it reads itself.
Spans under ``MIN_AHEAD_BYTES`` are computed by the caller: a thread's hand-off costs more.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

AHEAD_BYTES = 256 << 20  # how far past the span being read the spans after it are checksummed
MIN_AHEAD_BYTES = 1 << 20  # smaller spans are checksummed on the reading thread
CHUNK_BYTES = 4 << 20  # what a thread or the caller takes of a span at a time: the most a caller waits for per thread
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


class _Split:
    """One span's checksum in chunks of ``CHUNK_BYTES``: the pool's threads take chunks from the front, callers from
    the back (``value``), so the two share whatever of the span is left when the caller needs it. A caller waiting
    for the chunks the threads are computing takes chunks from the back of the spans read ahead of it meanwhile. A
    chunk is taken by one ``deque`` call, atomic without a lock; the condition counts the chunks the threads are
    done with. A kind of checksum without a combine is one chunk."""

    def __init__(self, data: memoryview, checksum: Checksum, combine: Combine | None) -> None:
        self._data, self._checksum, self._combine = data, checksum, combine
        self._step = CHUNK_BYTES if combine is not None else max(len(data), 1)
        count = max(1, -(-len(data) // self._step))
        self._chunks: deque[tuple[int, memoryview]] = deque((number, self._chunk(number)) for number in range(count))
        self._values: list[int | None] = [None] * count  # None: not computed (yet, or it failed on a thread)
        self._by_callers: deque[int] = deque()  # the chunks callers took, each appended as it is taken
        self._done = threading.Condition(threading.Lock())
        self._finished = 0  # chunks the threads took and are done with, computed or not
        self._process = os.getpid()  # a forked child has none of the threads computing its chunks
        self._tasks = [_submitted(self._work) for _ in range(min(workers(), count))]

    def _work(self) -> int:
        """A pool thread's part: chunks from the front until none is left; how many it took."""
        taken = 0
        while True:
            try:
                number, chunk = self._chunks.popleft()
            except IndexError:
                return taken
            taken += 1
            try:
                self._values[number] = self._checksum(chunk)
            finally:  # a chunk that failed (its file closed meanwhile) is left to the caller
                with self._done:
                    self._finished += 1
                    self._done.notify_all()

    def _take_back(self) -> bool:
        """Compute the last chunk no one has taken, here; False when none is left."""
        try:
            number, chunk = self._chunks.pop()
        except IndexError:
            return False
        self._by_callers.append(number)
        self._values[number] = self._checksum(chunk)
        return True

    def _threads_busy(self) -> bool:
        return self._finished < len(self._values) - len(self._by_callers)

    def value(self, others: Iterable[_Split] = ()) -> int:
        """The span's checksum: the chunks left computed here, the last first, then, while the threads finish
        theirs, chunks of ``others`` (the spans read ahead, nearest first); every chunk here in a process forked
        since the span was split."""
        if self._process != os.getpid():
            self._values = [None] * len(self._values)
        else:
            while self._take_back():
                pass
            helped = deque(others)
            while self._threads_busy():
                if helped and not helped[0]._take_back():
                    helped.popleft()
                elif not helped:
                    from weightscope.atomic import signals_held  # a stop signal must not leave the lock held

                    with signals_held(), self._done:
                        while self._threads_busy():
                            self._done.wait()
        found = [value if value is not None else self._checksum(self._chunk(n)) for n, value in enumerate(self._values)]
        total = found[0]
        for number, other in enumerate(found[1:], 1):
            total = self._combine(total, other, len(self._chunk(number)))  # type: ignore[misc]  # chunks: a combine
        return total

    def _chunk(self, number: int) -> memoryview:
        return self._data[number * self._step : (number + 1) * self._step]

    def cancel(self) -> None:
        """No more chunks for the threads (the checkpoint closing): those begun finish, the rest are dropped."""
        self._chunks.clear()
        for task in self._tasks:
            if task is not None:
                task.cancel()


def split_checksum(data: memoryview, checksum: Checksum, combine: Combine | None) -> int:
    """The checksum of ``data``: in chunks over the pool's threads and this one where it has more than one."""
    if combine is None or len(data) <= CHUNK_BYTES:
        return checksum(data)
    return _Split(data, checksum, combine).value()


class SpanChecks:
    """One checkpoint's spans being checksummed ahead of their reads, and the window read ahead (see the module)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[Span, _Split] = {}  # the spans read ahead
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
            ahead = list(self._pending.values())
        return split_checksum(data, checksum, combine) if pending is None else pending.value(ahead)

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
        return (pending or _Split(data, checksum, combine)).value

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
                self._pending[span] = _Split(data, checksum, combine)
                self._ahead.append((self._next - 1, len(data)))
                self._ahead_bytes += len(data)

    def close(self) -> None:
        """Drop the spans read ahead (their views keep a closed file's map alive), cancelling those not begun."""
        with self._lock:
            for split in self._pending.values():
                split.cancel()
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
