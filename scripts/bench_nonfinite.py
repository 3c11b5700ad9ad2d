"""Time ``approxsim.matmul`` with finite, all-NaN and one-NaN-one-inf operands (and native
float32 ``torch.matmul`` of the finite ones, in the same run).

A GEMM whose operands hold inf or NaN used to go to the exact reference whole; it now runs the
fast kernel and fixes up only the rows and columns the special values reach. This prints the
median time of each case, so the two can be compared on one machine:

    .venv/bin/python scripts/bench_nonfinite.py [--native-settings LIST]

Native float32 follows ``approxsim bench``'s protocol: one child process per thread-wait
setting (default ``default,passive,active``; each printed, the fastest is the baseline), while
approxsim runs here as this process's environment is. With an approxsim from before that
protocol (the "before" half, ``PYTHONPATH`` at an old commit) native runs in this process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import torch

import approxsim

try:
    from approxsim._runtime import machine_record
except ImportError:  # approxsim before the restructuring, to measure the old path
    from approxsim.experiments.bench import machine_record  # type: ignore[no-redef]

try:
    from approxsim.bench import native as protocol
    from approxsim.bench.problems import Problem
except ImportError:  # approxsim before best-against-best benchmarks
    protocol = None  # type: ignore[assignment]

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


def _native_ms(settings: str | None) -> dict[str, float]:
    """Median milliseconds of native float32 ``torch.matmul`` per setting (child processes)."""
    chosen = protocol.resolve_native_settings(settings, same_process=False)
    problem = Problem("nonfinite_gemm", "bench_nonfinite's GEMM", R, K, N)
    task: dict[str, Any] = {
        "bench": "ops",
        "device": "cpu",
        "tf32": False,
        "threads": torch.get_num_threads(),
        "reps": REPS,
        "warmup": 1,
        "ints": None,
        "forms": [{"problem": problem.to_dict(), "op": "gemm", "seed": 1, "passes": ["forward"]}],
    }
    children = protocol.time_native(task, chosen, lambda line: None)
    return {s: 1e3 * c["results"][0]["native"]["median_s"] for s, c in children.items()}


def main() -> None:
    """Print one line per case: name and median milliseconds."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--native-settings", help="as approxsim bench ops --native-settings")
    args = p.parse_args()
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
    if protocol is not None:
        native = _native_ms(args.native_settings)
        where = protocol.protocol_line(list(native), {"environment": rec.get("environment", {})})
    else:
        native = {"in this process": _median_ms(a, b, "fp32")}
        where = f"native and approxsim in one process, {env or 'default environment'}"
    print(f"# {rec['cpu']}, torch {rec['versions']['torch']}, {rec['torch_threads']} threads")
    print(f"# {where}")
    print(f"# approxsim.matmul {R}x{K} @ {K}x{N}, mitchell7, median of {REPS}")
    for setting, ms in native.items():
        label = setting if protocol is None else protocol.short_label(setting)
        print(f"{'native float32 (' + label + ')':<34} {ms:9.1f} ms")
    for name, x in (("finite", a), ("all NaN", nan_a), ("one NaN + one inf", one_each)):
        print(f"{name:<34} {_median_ms(x, b):9.1f} ms")


if __name__ == "__main__":
    main()
