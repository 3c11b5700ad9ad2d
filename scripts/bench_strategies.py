"""Time the compiled CPU kernel's four strategies on a few shapes, and its cost constants.

Prints, on one thread, the cost of one V entry and of one row step per column tile (the
constants ``COST_V`` and ``COST_STEP`` of ``approxsim.ops._cpu_native`` estimate them), then
for a few small and mid-size products the time of the row gather, the direct kernel and the
swapped row gather, and which one the planner picks. Run it to retune the constants on a new
CPU:

    .venv/bin/python scripts/bench_strategies.py

It times approxsim's kernel alone, on one thread, against no native baseline, so the
best-against-best protocol of ``approxsim bench`` (native float32 in child processes under
each thread-wait setting) does not apply, and neither does the wait policy itself.
"""

from __future__ import annotations

import time

import torch

from approxsim._runtime import machine_record
from approxsim.multipliers import get_multiplier
from approxsim.ops import _cpu_native as native
from approxsim.ops.matmul import _lut_args

SHAPES = [(16, 576, 64), (64, 576, 64), (64, 1024, 64), (256, 150, 16), (25, 3200, 6)]


def _best_time(
    lib: object,
    a: torch.Tensor,
    b: torch.Tensor,
    force: tuple[bool, bool],
    multiplier: str = "mitchell7",
    k_tile: int | None = None,
) -> float:
    lut, bits, rounding = _lut_args(get_multiplier(multiplier), torch.device("cpu"))
    native.lut_bmm_native(lib, a, b, lut, bits, rounding, force=force, k_tile=k_tile)
    times = []
    for _ in range(7):
        start = time.perf_counter()
        native.lut_bmm_native(lib, a, b, lut, bits, rounding, force=force, k_tile=k_tile)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    lib = native.load()
    if lib is None:
        raise SystemExit("the compiled CPU kernel is not available (no C++ compiler?)")
    print(f"bench_strategies: mitchell7, 1 thread, {machine_record()['cpu']}")
    k = 2048
    for n_tile in native.N_TILES:
        b = torch.randn(1, k, n_tile)
        one = _best_time(lib, torch.randn(1, 1, k), b, (False, False))
        many = _best_time(lib, torch.randn(1, 65, k), b, (False, False))
        v_ns = one / (k * 128 * n_tile) * 1e9
        step_ns = (many - one) / (64 * k) * 1e9
        print(f"n_tile {n_tile:2d}: V {v_ns:.3f} ns/entry, row step {step_ns:.2f} ns")
    # The row step against the size of V (2^M rows per k, times the k tile): in L2 or not.
    a, b = torch.randn(1, 8192, 576), torch.randn(1, 576, 64)
    for m in (4, 5, 6, 7):
        for v_kib in (128, 1024):
            kt = max(1, v_kib * 1024 // ((1 << m) * 64 * 4))
            t = _best_time(lib, a, b, (False, False), f"mitchell{m}", kt)
            step = t / (8192 * 576) * 1e9
            print(f"M={m}, V {v_kib:4d} KiB (k tile {kt:3d}): {step:.2f} ns per 64-column step")
    print(f"{'R x K x N':>14}  {'gather ms':>9}  {'direct ms':>9}  {'swapped ms':>10}  planner")
    for r, kk, n in SHAPES:
        a, b = torch.randn(1, r, kk), torch.randn(1, kk, n)
        times = [
            _best_time(lib, a, b, f) * 1e3 for f in ((False, False), (False, True), (True, False))
        ]
        swap, direct, _, _ = native.plan(r, kk, n, 7)
        pick = "direct" if direct else ("swapped" if swap else "gather")
        print(f"{f'{r}x{kk}x{n}':>14}  {times[0]:9.3f}  {times[1]:9.3f}  {times[2]:10.3f}  {pick}")


if __name__ == "__main__":
    main()
