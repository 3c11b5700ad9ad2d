"""Time ``approxsim.matmul`` with finite, all-NaN and one-NaN-one-inf operands (and native
float32 ``torch.matmul`` of the finite ones, in the same run).

A GEMM whose operands hold inf or NaN used to go to the exact reference whole; it now runs the
fast kernel and fixes up only the rows and columns the special values reach. This prints the
median time of each case, so the two can be compared on one machine:

    .venv/bin/python scripts/bench_nonfinite.py
"""

from __future__ import annotations

import os
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


def _median_ms(a: torch.Tensor, b: torch.Tensor, multiplier: str = "mitchell7") -> float:
    approxsim.matmul(a, b, multiplier)  # warm up (kernel build, tile plans)
    times = []
    for _ in range(REPS):
        start = time.perf_counter()
        approxsim.matmul(a, b, multiplier)  # "fp32" runs torch.matmul itself
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
    # Older approxsim's record has no "environment": the variables are read here for both.
    names = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS")
    env = ", ".join(f"{k}={os.environ[k]}" for k in names if k in os.environ)
    print(
        f"# {rec['cpu']}, torch {rec['versions']['torch']}, {rec['torch_threads']} threads, "
        f"{env or 'default environment'}"
    )
    print(f"# approxsim.matmul {R}x{K} @ {K}x{N}, mitchell7, median of {REPS}")
    print(f"{'native float32':<18} {_median_ms(a, b, 'fp32'):9.1f} ms")
    for name, x in (("finite", a), ("all NaN", nan_a), ("one NaN + one inf", one_each)):
        print(f"{name:<18} {_median_ms(x, b):9.1f} ms")


if __name__ == "__main__":
    main()
