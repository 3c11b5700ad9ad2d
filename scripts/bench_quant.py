"""Time LeNet-5 with quantized approximate layers against native float32, in one run.

A training step (forward, backward, SGD update) and an inference forward at batch 128 on
Fashion-MNIST-shaped inputs: native float32, then the same model converted with an integer
multiplier (``quant=QuantConfig(grad=...)``, calibrated once) with the ``ste`` and the ``lut``
backward. Prints the median time of each and the ratio to native:

    .venv/bin/python scripts/bench_quant.py [--multiplier drum4_u8] [--steps 20]
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
from approxsim._runtime import describe_environment, machine_record
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


def main() -> None:
    """Print one row per configuration: training step and inference, seconds and ratio."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--multiplier", default="drum4_u8")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 1, 28, 28)
    y = torch.randint(0, 10, (args.batch_size,))
    base = create_model("lenet5")
    rec = machine_record()
    print(
        f"# {rec['cpu']} ({', '.join(rec['cpu_features'])}), torch {rec['versions']['torch']}, "
        f"{rec['torch_threads']} threads, {describe_environment(rec)}"
    )
    print(f"# LeNet-5, batch {args.batch_size}, median of {args.steps}; {args.multiplier}")
    print(f"{'configuration':<22} {'train step':>11} {'ratio':>6} {'inference':>11} {'ratio':>6}")
    rows: list[tuple[str, nn.Module]] = [("native float32", copy.deepcopy(base))]
    for grad in ("ste", "lut"):
        q = approxsim.convert_model(
            copy.deepcopy(base), args.multiplier, quant=approxsim.QuantConfig(grad=grad)
        )
        approxsim.calibrate(q, [x], freeze=False)
        rows.append((f"quantized, grad={grad}", q))
    native: tuple[float, float] | None = None
    for name, model in rows:
        train = _median_s(_step(model.train(), x, y), args.steps)
        model.eval()
        with torch.no_grad():
            infer = _median_s(lambda m=model: m(x), args.steps)
        native = native or (train, infer)
        print(
            f"{name:<22} {1e3 * train:9.1f}ms {train / native[0]:5.1f}x "
            f"{1e3 * infer:9.1f}ms {infer / native[1]:5.1f}x"
        )


if __name__ == "__main__":
    main()
