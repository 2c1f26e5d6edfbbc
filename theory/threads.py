"""How many BLAS/LAPACK and torch threads a computation gets, chosen by its size.

Why: on a machine whose cores are already busy (a laptop, a shared CI runner), a small
factorisation split over every core collapses: OpenBLAS's threads wait on each other at
every panel while the other process holds a core. Measured on a 2-core machine with one
competing process: a 1800 x 1800 Cholesky took 0.07 s on one thread and 0.35-2.0 s on two;
a 4096 x 2000 QR 23 s. Work this small gains little from a second thread even when idle, so
it gets one; only an operation of at least WORK_PER_THREAD multiply-adds per thread is split.

    with threads.limit(threads.for_work(n * D * min(n, D))):   # the largest single operation
        ...   # NumPy/SciPy BLAS (threadpoolctl) and torch intra-op threads, restored on exit

`RMGAP_THREADS` (an integer) overrides the choice, for benchmarking.
"""
from __future__ import annotations

import contextlib
import os

WORK_PER_THREAD = 1e11     # multiply-adds of one operation: ~3 s on one core; below it, one thread


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def for_work(multiply_adds: float) -> int:
    """Threads for a job whose largest operation costs `multiply_adds`: 1 for small work, at
    most the available cores."""
    override = os.environ.get("RMGAP_THREADS", "").strip()
    if override:
        return max(1, int(override))
    return max(1, min(available_cores(), int(multiply_adds // WORK_PER_THREAD)))


@contextlib.contextmanager
def limit(n_threads: int):
    """Run the block with at most n_threads BLAS threads (NumPy and SciPy's OpenBLAS/MKL, via
    threadpoolctl) and torch intra-op threads; the previous settings come back on exit."""
    from threadpoolctl import threadpool_limits
    torch = _torch_if_loaded()
    before = torch.get_num_threads() if torch is not None else None
    with threadpool_limits(limits=n_threads, user_api="blas"):
        if torch is not None and before != n_threads:
            torch.set_num_threads(n_threads)
        try:
            yield n_threads
        finally:
            if torch is not None and torch.get_num_threads() != before:
                torch.set_num_threads(before)


def _torch_if_loaded():
    """torch if something has already imported it (importing it here would cost seconds)."""
    import sys
    return sys.modules.get("torch")
