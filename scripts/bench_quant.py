"""Time LeNet-5 with quantized approximate layers against native float32, in one run.

A training step (forward, backward, SGD update) and an inference forward at batch 128 on
Fashion-MNIST-shaped inputs: native float32, then the same model converted with an integer
multiplier (``quant=QuantConfig(grad=...)``, calibrated once) with the ``ste`` and the ``lut``
backward. Prints the median time of each and the ratio to native:

    .venv/bin/python scripts/bench_quant.py [--multiplier drum4_u8] [--steps 20]

The protocol of ``approxsim bench``: native float32 is timed in one child process per
thread-wait setting (``--native-settings``, default ``default,passive,active``; the fastest
kept, each printed), the quantized models in this process as its environment is.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

import approxsim
from approxsim._runtime import machine_record
from approxsim.bench.native import (
    SAME_PROCESS,
    best_setting,
    protocol_line,
    resolve_native_settings,
    short_label,
    time_native,
)
from approxsim.models import create_model


def _median_s(fn: Callable[[], object], steps: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], object]:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def run() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return run


def _native(args: argparse.Namespace, settings: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    """Median seconds (training step, inference) of native float32 LeNet-5 per setting."""
    task = {
        "bench": "models",
        "device": "cpu",
        "tf32": False,
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "batches": args.steps,
        "warmup": 3,
        "models": [["lenet5", 1]],
    }
    children = time_native(task, settings, lambda line: None)
    return {
        s: (statistics.median(t["training"]), statistics.median(t["inference"]))
        for s, c in children.items()
        for t in [c["results"][0]["times_s"]]
    }


def main() -> None:
    """Print one row per configuration: training step and inference, seconds and ratio."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--multiplier", default="drum4_u8")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--native-settings", help="as approxsim bench ops --native-settings")
    args = p.parse_args()
    settings = resolve_native_settings(args.native_settings)
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 1, 28, 28)
    y = torch.randint(0, 10, (args.batch_size,))
    base = create_model("lenet5")
    rec = machine_record()
    print(
        f"# {rec['cpu']} ({', '.join(rec['cpu_features'])}), torch {rec['versions']['torch']}, "
        f"{rec['torch_threads']} threads; {protocol_line(settings, rec)}"
    )
    print(f"# LeNet-5, batch {args.batch_size}, median of {args.steps}; {args.multiplier}")
    native_by = _native(args, settings)
    rows: list[tuple[str, nn.Module]] = []
    if SAME_PROCESS in settings:
        rows.append((SAME_PROCESS, copy.deepcopy(base)))
    for grad in ("ste", "lut"):
        q = approxsim.convert_model(
            copy.deepcopy(base), args.multiplier, quant=approxsim.QuantConfig(grad=grad)
        )
        approxsim.calibrate(q, [x], freeze=False)
        rows.append((f"quantized, grad={grad}", q))
    timed = {name: _timed(model, x, y, args.steps) for name, model in rows}
    if SAME_PROCESS in timed:
        native_by[SAME_PROCESS] = timed.pop(SAME_PROCESS)
    best = best_setting({s: t[0] for s, t in native_by.items()})
    native = native_by[best]
    print(f"{'configuration':<40} {'train step':>11} {'ratio':>6} {'inference':>11} {'ratio':>6}")
    lines = [(f"native float32 ({short_label(s)})", t) for s, t in native_by.items()]
    for name, (train, infer) in lines + list(timed.items()):
        print(
            f"{name:<40} {1e3 * train:9.1f}ms {train / native[0]:5.1f}x "
            f"{1e3 * infer:9.1f}ms {infer / native[1]:5.1f}x"
        )
    print(f"# ratios against native float32 under {short_label(best)} (fastest training step)")


def _timed(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> tuple[float, float]:
    """Median seconds of a training step and of an inference forward, in this process."""
    train = _median_s(_step(model.train(), x, y), steps)
    model.eval()
    with torch.no_grad():
        infer = _median_s(lambda: model(x), steps)
    return train, infer


if __name__ == "__main__":
    main()
