"""Time single kernel calls and quantized layers, for before/after records of kernel changes.

Each call is one problem a past change was measured on (float GEMMs through
``lut_bmm_cpu`` with a column-major or row-major A, a small call, quantized convolutions);
every call gets fresh operands from a fixed seed, runs twice to warm up, then ``--rounds``
rounds of ``--reps`` timings each, the rounds interleaved over the calls so that a slow phase
of a shared host spreads over all of them. Prints per call the minimum and the median over
every timing, in milliseconds, with the thread count it ran on:

    .venv/bin/python scripts/bench_calls.py [--calls NAME,...] [--rounds 5] [--reps 5]

The script only uses entry points that exist since the kernel changes it times, so running
it from a checkout of an earlier commit (``PYTHONPATH=<checkout>/src``) measures that commit
with the same calls: docs/bench/README.md lists the records made this way.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

import approxsim
from approxsim._runtime import machine_record
from approxsim.multipliers import get_multiplier
from approxsim.ops import _cpu
from approxsim.ops.matmul import _lut_args

Call = tuple[int, Callable[[], Callable[[], object]]]


def _gemm(r: int, k: int, n: int, column_major: bool) -> Callable[[], object]:
    """``lut_bmm_cpu`` on (1, r, k) x (1, k, n), mitchell7; A column-major if asked."""
    lut, m, rounding = _lut_args(get_multiplier("mitchell7"), torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    if column_major:
        a = torch.randn(1, k, r, generator=g).transpose(1, 2)
    else:
        a = torch.randn(1, r, k, generator=g)
    b = torch.randn(1, k, n, generator=g)
    return lambda: _cpu.lut_bmm_cpu(a, b, lut, m, rounding)


def _quant_conv(
    batch: int, c_in: int, c_out: int, size: int, kernel: int, padding: int
) -> Callable[[], object]:
    """The forward of one calibrated quantized convolution (drum4_u8, default QuantConfig)."""
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(c_in, c_out, kernel, padding=padding))
    q = approxsim.convert_model(
        conv, approxsim.get_int_multiplier("drum4_u8"), quant=approxsim.QuantConfig()
    )
    x = torch.randn(batch, c_in, size, size)
    approxsim.calibrate(q, [x])
    q.eval()

    def run() -> torch.Tensor:
        with torch.no_grad():
            return q(x)

    return run


#: name -> (threads, factory of the timed call)
CALLS: dict[str, Call] = {
    # LeNet-5 conv1's weight gradient (batch 128): Aᵀ of the patch matrix, column-major.
    "f32_colmajor_25x100352x6": (1, lambda: _gemm(25, 100352, 6, True)),
    # LeNet-5 conv2's weight gradient (batch 128).
    "f32_colmajor_150x12800x16": (1, lambda: _gemm(150, 12800, 16, True)),
    # A small call: per-call costs (the special-value check).
    "f32_small_128x100x10": (1, lambda: _gemm(128, 100, 10, False)),
    # LeNet-5 conv2's input gradient (batch 128): three 64-column tiles on two threads.
    "f32_12800x16x150_2threads": (2, lambda: _gemm(12800, 16, 150, False)),
    # Quantized convolutions (forward, batch 128 / 32): LeNet-5's conv1 and conv2, a
    # 3-channel 3x3 stem and a ResNet-18 layer1 convolution.
    "quant_lenet5_conv1": (1, lambda: _quant_conv(128, 1, 6, 28, 5, 2)),
    "quant_lenet5_conv2": (1, lambda: _quant_conv(128, 6, 16, 14, 5, 0)),
    "quant_stem_3x3": (1, lambda: _quant_conv(32, 3, 64, 32, 3, 1)),
    "quant_resnet18_layer1": (1, lambda: _quant_conv(32, 64, 64, 32, 3, 1)),
}


def main() -> None:
    """Parse the arguments, time the calls, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default=",".join(CALLS), help="comma-separated call names")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    names = [c for c in args.calls.split(",") if c]
    unknown = [c for c in names if c not in CALLS]
    if unknown:
        parser.error(f"unknown call(s) {', '.join(unknown)}; known: {', '.join(CALLS)}")
    if args.rounds < 1 or args.reps < 1:
        parser.error("--rounds and --reps must be at least 1")
    threads_before = torch.get_num_threads()
    calls = {}
    for name in names:
        threads, factory = CALLS[name]
        torch.set_num_threads(threads)
        fn = factory()
        fn()
        fn()
        calls[name] = fn
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.rounds):
        for name in names:
            torch.set_num_threads(CALLS[name][0])
            for _ in range(args.reps):
                start = time.perf_counter()
                calls[name]()
                times[name].append((time.perf_counter() - start) * 1e3)
    torch.set_num_threads(threads_before)
    record = machine_record()
    print(
        f"# {record['cpu']} ({', '.join(record['cpu_features'])}), torch {torch.__version__}, "
        f"thread variables {record['environment'] or 'none'}"
    )
    print(f"# {args.rounds} interleaved rounds of {args.reps}; milliseconds")
    print(f"{'call':30s} {'threads':>7s} {'min':>9s} {'median':>9s}")
    for name in names:
        ts = times[name]
        print(f"{name:30s} {CALLS[name][0]:7d} {min(ts):9.3f} {statistics.median(ts):9.3f}")


if __name__ == "__main__":
    main()
