"""Jobs on a few local threads (``on_threads``), and the BLAS library's own threads while they run.

numpy's linear algebra (``svd``, ``qr``, ``matmul``) runs in OpenBLAS (or MKL), which starts as many threads of
its own as there are cores. When the analyses (spectra, anatomy, health) give every core a matrix of its own on
a thread pool, each of those calls would start its own team too: cores x cores threads, which busy-wait for each
other. Measured on this 2-core machine, 4 SVDs of 2048 x 2048 float64 on 2 threads: 9.0 s with one BLAS thread
each, 46.6 s with BLAS's default (under a load of 6; without load the loss is smaller but there). So while a pool
of more than one worker runs, BLAS is held to one thread (threadpoolctl, as scikit-learn does); one worker keeps
BLAS's own threads, which then are the only parallelism. The limit is process-wide while it holds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TypeVar

T = TypeVar("T")


@contextlib.contextmanager
def one_blas_thread_each(workers: int) -> Iterator[None]:
    """BLAS held to one thread while ``workers`` (> 1) threads of ours each run their own linear algebra."""
    if workers <= 1:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def on_threads(
    jobs: Sequence[Callable[[], T]], progress: Callable[[int, int], None] | None = None, workers: int | None = None
) -> list[T]:
    """Each job's result, in order, the jobs run on ``workers`` local threads (default: a few; BLAS held to one
    thread each: ``one_blas_thread_each``); ``progress`` told as each ends."""
    from weightscope.analysis import _workers

    workers = workers or _workers()
    with one_blas_thread_each(workers), ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(job) for job in jobs]
        for done, _ in enumerate(as_completed(futures), start=1):
            if progress is not None:
                progress(done, len(futures))
        return [future.result() for future in futures]
