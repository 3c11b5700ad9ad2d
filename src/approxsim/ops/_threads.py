"""The CPU kernels' worker threads: one shared pool and the rule for splitting work.

The compiled and the Numba kernels release the GIL and run on plain Python threads rather than
an OpenMP pool of their own: two OpenMP runtimes (Numba's and PyTorch's) spinning on two cores
cost tens of milliseconds per hand-over. How many threads a call uses follows
``torch.get_num_threads()``, so one setting governs torch and approxsim alike.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

__all__ = ["parallel", "run_jobs", "split_range"]

#: The pool, made on first use (a one-element list so it is created once).
_POOL: list[ThreadPoolExecutor] = []


def run_jobs(fn: Callable[..., None], jobs: list[tuple[Any, ...]]) -> None:
    """Run ``fn(*job)`` for each job: the first on this thread, the rest on the pool.

    Args:
        fn: The work; it should release the GIL (a Numba ``nogil`` kernel or a ctypes call).
        jobs: One argument tuple per call.

    Raises:
        Exception: whatever a job raised (the first failing job's, after all have run).
    """
    if len(jobs) == 1:
        fn(*jobs[0])
        return
    if not _POOL:
        _POOL.append(ThreadPoolExecutor(max_workers=max(2, torch.get_num_threads())))
    futures = [_POOL[0].submit(fn, *job) for job in jobs[1:]]
    fn(*jobs[0])
    for f in futures:
        f.result()


def split_range(n: int, parts: int) -> list[tuple[int, int]]:
    """``[0, n)`` as at most ``parts`` contiguous spans of (almost) equal size.

    Args:
        n: Length of the range (at least 1).
        parts: Largest number of spans wanted.

    Returns:
        ``(lo, hi)`` spans covering ``[0, n)`` in order.
    """
    step = -(-n // max(1, min(parts, n)))
    return [(lo, min(n, lo + step)) for lo in range(0, n, step)]


def parallel(fn: Callable[..., None], n: int, *args: Any) -> None:
    """Run ``fn(*args, lo, hi)`` over ``[0, n)`` split across torch's thread count.

    Ranges shorter than 512 stay on the calling thread (a hand-over costs more than the work).

    Args:
        fn: The work on one span.
        n: Length of the range.
        *args: Arguments passed before each span's bounds.
    """
    workers = max(1, min(torch.get_num_threads(), n // 256 or 1))
    run_jobs(fn, [(*args, lo, hi) for lo, hi in split_range(n, workers)])
