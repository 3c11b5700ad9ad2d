"""Time ``approxsim.matmul`` with finite, all-NaN and one-NaN-one-inf operands.

A GEMM whose operands hold inf or NaN used to go to the exact reference whole; it now runs the
fast kernel and fixes up only the rows and columns the special values reach. This prints the
median time of each case, so the two can be compared on one machine:

    .venv/bin/python scripts/bench_nonfinite.py
"""

from __future__ import annotations

import statistics
import time

import torch

import approxsim

try:
    from approxsim._runtime import machine_record
except ImportError:  # approxsim before the restructuring, to measure the old path
    from approxsim.experiments.bench import machine_record  # type: ignore[no-redef]

R, K, N = 256, 800, 300
REPS = 5


def _median_ms(a: torch.Tensor, b: torch.Tensor) -> float:
    approxsim.matmul(a, b, "mitchell7")  # warm up (kernel build, tile plans)
    times = []
    for _ in range(REPS):
        start = time.perf_counter()
        approxsim.matmul(a, b, "mitchell7")
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    """Print one line per case: name and median milliseconds."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(R, K, generator=gen)
    b = torch.randn(K, N, generator=gen)
    nan_a = torch.full_like(a, float("nan"))
    one_each = a.clone()
    one_each[3, 5] = float("nan")
    one_each[100, 7] = float("inf")
    rec = machine_record()
    print(f"# {rec['cpu']}, torch {rec['versions']['torch']}, {rec['torch_threads']} threads")
    print(f"# approxsim.matmul {R}x{K} @ {K}x{N}, mitchell7, median of {REPS}")
    for name, x in (("finite", a), ("all NaN", nan_a), ("one NaN + one inf", one_each)):
        print(f"{name:<18} {_median_ms(x, b):9.1f} ms")


if __name__ == "__main__":
    main()
