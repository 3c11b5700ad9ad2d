"""What the benchmarks share: their error, run settings, timing, peak memory and result files.

Every benchmark (``ops``, ``direct``, ``models``) times calls the same way — ``warmup``
untimed calls, then ``reps`` timed ones, the device synchronized around each on CUDA — runs
under the same settings (thread counts for torch and Numba, TF32 off unless asked for, all
restored afterwards), records the machine with :func:`approxsim._runtime.machine_record` and
writes its result as one JSON file, atomically.

The numbers are wall-clock times on a possibly shared machine: compare ratios measured in one
run, and keep the machine record next to any number you quote.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from approxsim._io import atomic_write_json
from approxsim._runtime import machine_record, resolve_device, thread_settings
from approxsim.errors import ApproxsimError
from approxsim.ops import release_kept_memory

__all__ = [
    "BenchError",
    "bench_device",
    "run_settings",
    "synchronizer",
    "time_calls",
    "timing",
    "peak_bytes",
    "random_tensor",
    "machine_record",
    "save_results",
]


class BenchError(ApproxsimError, ValueError):
    """A benchmark setting that cannot run; the message says what to change."""


# ---------------------------------------------------------------------------- settings
def bench_device(device: str | torch.device) -> torch.device:
    """The device a benchmark runs on (``cuda`` resolves to the current device's index).

    Raises:
        BenchError: not a CPU or CUDA device, or CUDA asked for and not available.
    """
    return resolve_device(device, error=BenchError)


@contextlib.contextmanager
def run_settings(device: torch.device, tf32: bool, threads: int | None) -> Iterator[None]:
    """Apply the thread count and the TF32 flags for a run; restore the caller's afterwards.

    Args:
        device: The benchmark's device; TF32 flags are set for CUDA devices only.
        tf32: Let native float32 on CUDA use TF32.
        threads: Threads for torch and Numba; ``None``: leave them.

    Yields:
        Nothing; the caller's settings are back when the block ends (also on errors).
    """
    saved_tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with thread_settings(threads):
        try:
            if device.type == "cuda":
                # Native float32 must be IEEE float32 for a like-for-like baseline unless asked.
                torch.backends.cuda.matmul.allow_tf32 = tf32
                torch.backends.cudnn.allow_tf32 = tf32
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved_tf32


def synchronizer(device: torch.device) -> Callable[[], None]:
    """A function that waits for ``device`` to finish its queued work.

    Args:
        device: The benchmark's device.

    Returns:
        ``torch.cuda.synchronize(device)`` on a CUDA device, a no-op on the CPU.
    """
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


# ---------------------------------------------------------------------------- timing
def time_calls(
    fn: Callable[[], object], reps: int, warmup: int, sync: Callable[[], None]
) -> list[float]:
    """Wall-clock seconds of ``reps`` calls of ``fn`` after ``warmup`` untimed ones.

    Args:
        fn: The call to time.
        reps: Timed calls.
        warmup: Untimed calls first (they also absorb Numba and Triton compilation).
        sync: Called before and after each timed call (:func:`synchronizer`).

    Returns:
        One time per timed call, in call order.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def timing(times: list[float], macs: int) -> dict[str, Any]:
    """The record of one measurement: median, minimum, every time and GMAC/s at the median.

    Args:
        times: Seconds per call (:func:`time_calls`).
        macs: Multiply-accumulates one call performs.

    Returns:
        ``{"median_s", "min_s", "times_s", "gmac_per_s"}``.
    """
    median = statistics.median(times)
    return {
        "median_s": median,
        "min_s": min(times),
        "times_s": times,
        "gmac_per_s": macs / median / 1e9,
    }


def random_tensor(
    shape: Sequence[int], gen: torch.Generator, device: torch.device, scale: float
) -> Tensor:
    """Standard normal numbers times ``scale``, drawn on the CPU from ``gen``, moved to ``device``.

    Drawn on the CPU from a private generator: the same operands on every device, and the
    caller's global RNG is left alone.
    """
    return (torch.randn(*shape, generator=gen) * scale).to(device)


# ---------------------------------------------------------------------------- memory
def _rss_kib(field: str) -> int | None:
    """``VmRSS`` or ``VmHWM`` of this process in KiB (Linux), else ``None``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_bytes(fn: Callable[[], object], device: torch.device) -> int | None:
    """Memory one call of ``fn`` needs beyond what is already allocated.

    On CUDA the peak of torch's allocator; on CPU (Linux) the rise of the process's peak
    resident set over its resident set just before the call, after returning free heap to
    the system and resetting the peak (``/proc/self/clear_refs``). Memory approxsim keeps
    between calls (kernel scratch space, recycled patch matrices) is released first, so the
    call's whole workspace counts, as it would on its first call.

    Args:
        fn: The call to measure (called once).
        device: Where it runs.

    Returns:
        Bytes, or ``None`` where neither measure is available.
    """
    release_kept_memory()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        allocated = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - allocated)
    try:
        ctypes.CDLL(None).malloc_trim(0)
        # Not a file write: "5" asks the kernel to reset this process's peak resident set.
        Path("/proc/self/clear_refs").write_text("5")
    except (OSError, AttributeError):
        return None
    resident = _rss_kib("VmRSS")
    fn()
    peak = _rss_kib("VmHWM")
    if resident is None or peak is None:
        return None
    return max(0, peak - resident) * 1024


# ---------------------------------------------------------------------------- results
def save_results(
    result: dict[str, Any],
    path: str | os.PathLike[str],
    *,
    overwrite: bool = True,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
) -> Path:
    """Write a benchmark result as JSON, atomically (creating parent folders).

    Args:
        result: What a benchmark returned.
        path: Destination file.
        overwrite: Replace an existing file; ``False``: refuse it (``--overwrite`` allows it).
        inputs: Files the benchmark read (a C model); ``path`` may never be one of them.

    Returns:
        The path written.

    Raises:
        OutputExistsError: ``path`` exists (without ``overwrite``), is a folder or an input.
    """
    return atomic_write_json(path, result, indent=1, overwrite=overwrite, inputs=inputs)
