"""The CPU kernels' worker threads: which runtime runs them and the rule for splitting work.

Where torch runs its own operators on the GNU OpenMP runtime (libgomp, as the Linux wheels
do), the compiled kernels are built with ``-fopenmp`` and their parallel loops run on the very
thread team torch uses (:func:`shared_openmp_runtime`): the kernel's ``libgomp.so.1`` is the
copy torch already loaded. A second set of threads would fight torch's: OpenMP workers spin
for a while after each parallel region (``OMP_WAIT_POLICY`` unset), so approxsim's threads and
torch's took the cores from each other on every hand-over.

Elsewhere (another OpenMP runtime, an OpenMP build that cannot be used, the Numba kernel)
the kernels release the GIL and run on one shared pool of plain Python threads
(:func:`run_jobs`) rather than an OpenMP pool of their own: two OpenMP runtimes (Numba's and
PyTorch's) spinning on two cores cost tens of milliseconds per hand-over.

``APPROXSIM_CPU_THREADS=pool`` keeps the compiled kernels on that pool even where they could
share torch's threads (:func:`thread_choice`), to compare the two or to step around a problem.

Either way, how many threads a call uses follows ``torch.get_num_threads()`` (which
``OMP_NUM_THREADS`` and ``torch.set_num_threads`` set), so one setting governs torch and
approxsim alike; ``OMP_WAIT_POLICY`` and the other ``OMP_*`` variables act on the one runtime.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from approxsim.errors import ApproxsimError

__all__ = [
    "rows_split_pays",
    "split_blocks",
    "ThreadSettingError",
    "mapped_openmp_runtimes",
    "parallel",
    "run_jobs",
    "shared_openmp_runtime",
    "split_range",
    "thread_choice",
]

#: File names of OpenMP runtimes (GNU, LLVM, Intel) as they appear among mapped files.
_OPENMP_NAMES = ("libgomp", "libomp", "libiomp")


class ThreadSettingError(ApproxsimError, ValueError):
    """``APPROXSIM_CPU_THREADS`` has a value other than ``auto`` or ``pool``."""


def thread_choice() -> str:
    """``"auto"`` or ``"pool"`` from ``$APPROXSIM_CPU_THREADS`` (read when a kernel loads).

    ``auto`` (the default) runs the compiled kernels on torch's OpenMP threads where they can
    share them (:func:`shared_openmp_runtime`); ``pool`` keeps them on approxsim's own pool.

    Raises:
        ThreadSettingError: any other value.
    """
    choice = os.environ.get("APPROXSIM_CPU_THREADS", "auto").strip().lower() or "auto"
    if choice not in ("auto", "pool"):
        raise ThreadSettingError(
            f"APPROXSIM_CPU_THREADS must be 'auto' (torch's OpenMP threads where possible) or "
            f"'pool' (approxsim's own threads), got {choice!r}"
        )
    return choice


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


def mapped_openmp_runtimes(maps: Path = Path("/proc/self/maps")) -> list[str]:
    """The OpenMP runtime libraries mapped into this process (Linux; empty elsewhere).

    Args:
        maps: The process's memory map (``/proc/self/maps``).

    Returns:
        The distinct paths of mapped files whose name starts like an OpenMP runtime's
        (``libgomp``, ``libomp``, ``libiomp``), sorted.
    """
    try:
        text = maps.read_text()
    except OSError:
        return []
    found = set()
    for line in text.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and Path(fields[5]).name.startswith(_OPENMP_NAMES):
            found.add(fields[5].strip())
    return sorted(found)


def shared_openmp_runtime() -> bool:
    """Whether a kernel built with ``g++ -fopenmp`` would share torch's OpenMP threads.

    True on Linux when torch was built with OpenMP and the one OpenMP runtime mapped into the
    process is GNU's libgomp (the kernel's ``libgomp.so.1`` then resolves to that copy).
    """
    if not sys.platform.startswith("linux") or not torch.backends.openmp.is_available():
        return False
    runtimes = mapped_openmp_runtimes()
    return len(runtimes) == 1 and Path(runtimes[0]).name.startswith("libgomp")


def rows_split_pays(
    rows: int, batches: int, tiles: int, workers: int, tile_shared_ns: float, tile_rows_ns: float
) -> bool:
    """Whether a kernel should split rows among the threads rather than column tiles that do
    not divide evenly among them (a batch split, where there are enough batches, is left to
    the caller).

    Each thread then repeats every tile's shared work (building its V table,
    ``tile_shared_ns`` each) but takes an even share of the per-row work (``tile_rows_ns``
    per tile, all rows); a tile split makes the busiest thread do ``ceil(tiles / threads)``
    whole tiles.
    """
    if workers == 1 or batches >= workers or tiles % workers == 0 or rows < 2 * workers:
        return False
    by_tiles = -(-tiles // workers) * (tile_shared_ns + tile_rows_ns)
    by_rows = tiles * (tile_shared_ns + tile_rows_ns / workers)
    return by_rows < by_tiles


def split_blocks(
    batches: int, rows: int, tiles: int, workers: int, tile_shared_ns: float, tile_rows_ns: float
) -> list[tuple[int, int, int, int, int, int]]:
    """The ``(b_lo, b_hi, r_lo, r_hi, t_lo, t_hi)`` blocks of a row-gather GEMM, one per thread.

    Column tiles first, then batches, then rows (what needs no duplicated V building first);
    rows first where :func:`rows_split_pays` says uneven column tiles cost more.
    """
    if rows_split_pays(rows, batches, tiles, workers, tile_shared_ns, tile_rows_ns):
        return [(0, batches, lo, hi, 0, tiles) for lo, hi in split_range(rows, workers)]
    if tiles >= workers or workers == 1:
        return [(0, batches, 0, rows, lo, hi) for lo, hi in split_range(tiles, workers)]
    if batches >= workers:
        return [(lo, hi, 0, rows, 0, tiles) for lo, hi in split_range(batches, workers)]
    return [(0, batches, lo, hi, 0, tiles) for lo, hi in split_range(rows, workers)]
