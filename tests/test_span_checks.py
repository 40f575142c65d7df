"""Checksums of zip storages on other threads (weightscope.span_checks): the chunks and thread counts they use, the
CRC-32 of chunks joined equal to zlib's, tensors read ahead equal to torch's, and a damaged storage checksummed
ahead still refused when its tensor is read."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

import weightscope as ws
from weightscope import span_checks
from weightscope.containers.zip import crc32, crc32_combine
from weightscope.errors import ChecksumMismatchError

MIB = 1 << 20


def test_spans_are_cut_into_chunks_of_the_chunk_size(monkeypatch: pytest.MonkeyPatch) -> None:
    assert span_checks.CHUNK_BYTES == 4 * MIB and span_checks.MIN_AHEAD_BYTES == MIB
    assert span_checks.AHEAD_BYTES == 256 * MIB
    monkeypatch.setattr(span_checks, "CHUNK_BYTES", 1000)
    monkeypatch.setattr(span_checks, "_submitted", lambda *_: None)  # no thread takes any
    for size, lengths in [(0, [0]), (1, [1]), (1000, [1000]), (1001, [1000, 1]), (2500, [1000, 1000, 500])]:
        split = span_checks._Split(memoryview(bytes(size)), crc32, crc32_combine)
        assert [(number, len(chunk)) for number, chunk in split._chunks] == list(enumerate(lengths))
    split = span_checks._Split(memoryview(bytes(2500)), crc32, None)  # no combine: one chunk
    assert [len(chunk) for _, chunk in split._chunks] == [2500]


@pytest.mark.parametrize(("cores", "threads"), [(1, 1), (2, 1), (3, 2), (5, 4), (64, 4)])
def test_threads_are_the_other_cores(cores: int, threads: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(span_checks.os, "sched_getaffinity", lambda _: set(range(cores)))
    assert span_checks.workers() == threads


@pytest.mark.parametrize("size", [0, 1, 999, 1000, 1001, 2000, 2001, 7777, 100_003])
@pytest.mark.parametrize("cores", [2, 5])
def test_a_span_split_over_threads_has_zlibs_crc32(size: int, cores: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(span_checks, "CHUNK_BYTES", 1000)
    monkeypatch.setattr(span_checks.os, "sched_getaffinity", lambda _: set(range(cores)))
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)
    assert span_checks.split_checksum(memoryview(data), crc32, crc32_combine) == zlib.crc32(data)


def test_the_caller_takes_chunks_from_the_back_and_helps_with_the_spans_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pool's thread takes a span's chunks from the front, the caller the rest from the back; waiting for the
    thread's chunk, the caller computes those of the spans read ahead, from their backs, nearest span first."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(span_checks, "CHUNK_BYTES", 1000)
    monkeypatch.setattr(span_checks.os, "sched_getaffinity", lambda _: {0, 1})  # one thread
    pool = ThreadPoolExecutor(1, thread_name_prefix="pool")
    monkeypatch.setattr(span_checks, "_pool", pool)
    rng = np.random.default_rng(7)
    spans = [rng.bytes(3500), rng.bytes(2000), rng.bytes(1500)]
    log: list[tuple[int, int, str]] = []
    taken, go = threading.Event(), threading.Event()

    def checksum(chunk: bytes | memoryview, which: int = 0) -> int:
        number = bytes(spans[which]).index(bytes(chunk)) // 1000
        log.append((which, number, span_checks.threading.current_thread().name))
        if (which, number) == (0, 0):  # the thread's first chunk: held until the caller has helped with the others
            taken.set()
            assert go.wait(30)
        if (which, number) == (2, 0):
            go.set()
        return zlib.crc32(chunk)

    first = span_checks._Split(memoryview(spans[0]), checksum, crc32_combine)
    assert taken.wait(30)
    others = [
        span_checks._Split(memoryview(spans[which]), lambda chunk, which=which: checksum(chunk, which), crc32_combine)
        for which in (1, 2)
    ]
    assert first.value(others) == zlib.crc32(spans[0])
    caller = span_checks.threading.current_thread().name
    assert log[0] == (0, 0, "pool_0")
    assert log[1:] == [(0, 3, caller), (0, 2, caller), (0, 1, caller), (1, 1, caller), (1, 0, caller), (2, 1, caller),
                       (2, 0, caller)]  # fmt: skip
    assert [other.value() for other in others] == [zlib.crc32(spans[1]), zlib.crc32(spans[2])]
    assert len(log) == 8  # nothing computed twice
    pool.shutdown()


def test_a_chunk_that_fails_on_a_thread_is_computed_by_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    """A thread's chunk that raises (its file closed meanwhile) counts as done and is left to the caller, which
    computes it with the chunks the thread did not take."""
    monkeypatch.setattr(span_checks, "CHUNK_BYTES", 1000)
    data = np.random.default_rng(3).bytes(5000)
    failed: list[str] = []

    def checksum(chunk: bytes | memoryview) -> int:
        if span_checks.threading.current_thread().name.startswith("weightscope-checksum") and not failed:
            failed.append("thread")
            raise ValueError("mmap closed")
        return zlib.crc32(chunk)

    monkeypatch.setattr(span_checks.os, "sched_getaffinity", lambda _: {0, 1})  # one thread
    split = span_checks._Split(memoryview(data), checksum, crc32_combine)
    task = split._tasks[0]
    assert task is not None
    with pytest.raises(ValueError, match="mmap closed"):  # the thread stops at its failed chunk
        task.result(timeout=30)
    assert len(split._chunks) == 4 and split._finished == 1
    assert split.value() == zlib.crc32(data) and failed == ["thread"]


def _saved(tmp_path: Path, count: int, elements: int) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(count)
    arrays = {f"layer{i}.weight": rng.standard_normal(elements, dtype=np.float32) for i in range(count)}
    path = tmp_path / "model.pt"
    torch.save({name: torch.from_numpy(array) for name, array in arrays.items()}, path)
    return path, arrays


@pytest.fixture
def small_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read ahead spans of 1 KiB and more, up to 200 KiB past the one read, in chunks of 16 KiB."""
    monkeypatch.setattr(span_checks, "MIN_AHEAD_BYTES", 1024)
    monkeypatch.setattr(span_checks, "CHUNK_BYTES", 16 * 1024)
    monkeypatch.setattr(span_checks, "AHEAD_BYTES", 200 * 1024)


@pytest.mark.usefixtures("small_spans")
def test_tensors_read_ahead_equal_torchs(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path, 12, 16 * 1024)  # storages of 64 KiB
    loaded = torch.load(path, weights_only=True)
    with ws.open(path) as ckpt:
        names = list(ckpt)
        first = ckpt[names[0]]
        # The storages of the next four tensors (4 x 64 KiB reaches 200 KiB) are being checksummed, 16 KiB a chunk.
        pending = ckpt._span_checks._pending
        assert len(pending) == 4 and all(len(split._values) == 4 for split in pending.values())
        np.testing.assert_array_equal(first, loaded[names[0]].numpy())
        for name in names[1:]:
            np.testing.assert_array_equal(ckpt[name], loaded[name].numpy())
        assert not ckpt._span_checks._pending  # each used by its read
        assert ckpt.verify() == []


@pytest.mark.usefixtures("small_spans")
def test_a_damaged_storage_checksummed_ahead_is_refused_when_read(tmp_path: Path) -> None:
    path, arrays = _saved(tmp_path, 6, 16 * 1024)
    data = bytearray(path.read_bytes())
    damaged = list(arrays)[2]
    data[data.index(arrays[damaged].tobytes()) + 40_000] ^= 0x40  # in its third chunk of 16 KiB
    path.write_bytes(bytes(data))
    first, second = list(arrays)[:2]
    with ws.open(path) as ckpt:
        np.testing.assert_array_equal(ckpt[first], arrays[first])  # the damaged storage's CRC-32 read ahead
        assert (str(path), *ckpt.extent(damaged).checked) in ckpt._span_checks._pending  # type: ignore[misc]
        np.testing.assert_array_equal(ckpt[second], arrays[second])
        for _ in range(2):  # refused each time, never cached as sound
            with pytest.raises(ChecksumMismatchError, match=f"tensor '{damaged}' is damaged: stored CRC-32"):
                ckpt[damaged]
        for name in list(arrays)[3:]:
            np.testing.assert_array_equal(ckpt[name], arrays[name])
        assert [type(error) for error in ckpt.verify()] == [ChecksumMismatchError]
    with ws.open(path, verify=False) as ckpt:
        assert not np.array_equal(ckpt[damaged], arrays[damaged])


@pytest.mark.usefixtures("small_spans")
def test_a_large_storage_is_checked_in_pieces_and_refused_when_damaged(tmp_path: Path) -> None:
    path, arrays = _saved(tmp_path, 1, 64 * 1024)  # one storage of 256 KiB, checked in chunks of 16 KiB
    name = next(iter(arrays))
    with ws.open(path) as ckpt:
        np.testing.assert_array_equal(ckpt[name], arrays[name])
    data = bytearray(path.read_bytes())
    data[data.index(arrays[name].tobytes()) + 200_000] ^= 0x01  # in its 13th chunk
    path.write_bytes(bytes(data))
    with ws.open(path) as ckpt, pytest.raises(ChecksumMismatchError, match=f"tensor '{name}' is damaged"):
        ckpt[name]


@pytest.mark.usefixtures("small_spans")
def test_closing_drops_the_spans_read_ahead(tmp_path: Path) -> None:
    path, arrays = _saved(tmp_path, 8, 16 * 1024)
    ckpt = ws.open(path)
    ckpt[next(iter(arrays))]
    assert ckpt._span_checks._pending
    ckpt.close()
    assert not ckpt._span_checks._pending


@pytest.mark.usefixtures("small_spans")
def test_a_forked_child_computes_what_its_parents_threads_were_computing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk taken by the parent's pool when the process forked never finishes in the child: the child (another
    pid) computes every chunk of what it reads itself."""
    import threading

    monkeypatch.setattr(span_checks, "_submitted", lambda *_: None)  # no thread of this process takes any chunk
    path, arrays = _saved(tmp_path, 4, 16 * 1024)
    names = list(arrays)
    with ws.open(path) as ckpt:
        ckpt[names[0]]
        for split in ckpt._span_checks._pending.values():
            split._chunks.popleft()  # taken by a thread of the parent's, which never reports it done
        parent = span_checks.os.getpid()
        monkeypatch.setattr(span_checks.os, "getpid", lambda: parent + 1)
        read: dict[str, np.ndarray] = {}
        reader = threading.Thread(target=lambda: read.update((name, ckpt[name]) for name in names[1:]), daemon=True)
        reader.start()
        reader.join(timeout=30)
        assert not reader.is_alive()
        for name in names[1:]:
            np.testing.assert_array_equal(read[name], arrays[name])


def _recorded(data: bytes, log: list[tuple[str, str]], name: str) -> int:
    log.append((name, span_checks.threading.current_thread().name))
    return zlib.crc32(data)


def test_pending_checksums_wait_for_a_thread_only_over_a_mapped_files_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """``Pending``: a mapped span of MIN_AHEAD_BYTES or more is checksummed on the pool's thread; a small one, and
    bytes of the process's own (a copy), on the caller's at once. Past AHEAD_BYTES waiting, the caller computes the
    newest itself; ``values()`` computes those not begun, newest first, while the pool finishes the oldest."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(span_checks, "MIN_AHEAD_BYTES", 1024)
    monkeypatch.setattr(span_checks, "AHEAD_BYTES", 3 * 1024)
    pool = ThreadPoolExecutor(1, thread_name_prefix="pool")
    monkeypatch.setattr(span_checks, "_pool", pool)
    released = threading.Event()
    blocker = span_checks._submitted(released.wait)  # the pool's one thread, busy until released
    data = {name: np.random.default_rng(n).bytes(1024) for n, name in enumerate("abcdefg")}
    log: list[tuple[str, str]] = []
    pending = span_checks.Pending()
    caller = threading.current_thread().name
    for name, mapped in zip("abcdef", [True, True, False, True, True, True], strict=True):
        pending.add(name, lambda name=name: _recorded(data[name], log, name), len(data[name]), mapped)
    pending.add("g", lambda: _recorded(data["g"][:999], log, "g"), 999, True)
    # c (a copy) and g (small) at once; a, b, d wait for the pool (3 KiB); e and f past it, computed at once
    assert log == [("c", caller), ("e", caller), ("f", caller), ("g", caller)]
    values = pending.values()  # the pool still busy: the caller computes d, b, a itself
    assert log[4:] == [("d", caller), ("b", caller), ("a", caller)]
    released.set()
    assert blocker is not None and blocker.result() is True
    assert values == {name: zlib.crc32(data[name] if name != "g" else data[name][:999]) for name in "abcdefg"}
    log.clear()
    pending = span_checks.Pending()
    pending.add("a", lambda: _recorded(data["a"], log, "a"), len(data["a"]), True)
    pool.submit(lambda: None).result()  # the pool has run what was queued before
    assert pending.values() == {"a": zlib.crc32(data["a"])} and log == [("a", "pool_0")]
    pool.shutdown()


@pytest.mark.usefixtures("small_spans")
def test_checks_deferred_hand_tensors_out_and_raise_at_the_end(tmp_path: Path) -> None:
    """Within ``checks_deferred`` every tensor is handed out while its storage's CRC-32 is computed; the block's end
    raises the error reading the damaged one raises, and only the storages found sound are taken as checked."""
    path, arrays = _saved(tmp_path, 6, 16 * 1024)
    names = list(arrays)
    with ws.open(path) as ckpt:
        with ckpt.checks_deferred():
            for name in names:
                np.testing.assert_array_equal(ckpt[name], arrays[name])
            assert len(ckpt._deferred or ()) == 6 and not ckpt._verified_spans
        assert ckpt._deferred is None and len(ckpt._verified_spans) == 6
    data = bytearray(path.read_bytes())
    data[data.index(arrays[names[3]].tobytes()) + 40_000] ^= 0x40
    path.write_bytes(bytes(data))
    with ws.open(path) as ckpt, pytest.raises(ChecksumMismatchError) as read:
        ckpt[names[3]]
    with ws.open(path) as ckpt:
        with pytest.raises(ChecksumMismatchError) as deferred, ckpt.checks_deferred():
            with ckpt.checks_deferred():  # nested: the outer block's
                handed = {name: np.array(ckpt[name]) for name in names}
            assert ckpt._deferred is not None
        assert str(deferred.value) == str(read.value) and f"tensor '{names[3]}' is damaged" in str(read.value)
        assert not np.array_equal(handed[names[3]], arrays[names[3]])
        assert len(ckpt._verified_spans) == 3  # those before the damaged one, in reading order
        with pytest.raises(ChecksumMismatchError):
            ckpt[names[3]]
        for name in names[4:]:
            np.testing.assert_array_equal(ckpt[name], arrays[name])


def test_a_stop_signal_during_a_submission_acts_once_it_is_submitted(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stop signal arriving as a piece is submitted (the pool perhaps starting its thread, which an exception cut
    there would leave unknown to the pool's exit hook: the process would wait for it forever as it exits) raises
    ``Interrupted`` once the piece is submitted and its thread started."""
    import os
    import signal
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from weightscope.atomic import Interrupted, interruptible

    pool = ThreadPoolExecutor(1)
    ran = threading.Event()

    def signalled() -> ThreadPoolExecutor:
        os.kill(os.getpid(), signal.SIGTERM)  # its handler runs as soon as Python can: here, before the submission
        return pool

    monkeypatch.setattr(span_checks, "_shared_pool", signalled)
    with pytest.raises(Interrupted), interruptible():
        span_checks._submitted(lambda: ran.set() or 0)
    assert ran.wait(10) and len(pool._threads) == 1
    pool.shutdown()
