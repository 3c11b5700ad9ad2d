"""Training-step throughput: a converted model vs the same model in native float32.

Times full steps (forward, backward, SGD update) on random inputs of the model's shape, after a
few warm-up steps, and prints images/s for both and the slowdown. A stop-gap until
``approxsim bench models`` exists.

    .venv/bin/python scripts/bench_train_step.py --models lenet5,lenet300100 --batch-size 128
"""

from __future__ import annotations

import argparse
import time

import torch

import approxsim
from approxsim.models import create_model


def steps_per_second(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, n: int) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def step() -> None:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="lenet5,lenet300100")
    p.add_argument("--multiplier", default="mitchell7")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    print(f"multiplier {args.multiplier}, batch {args.batch_size}, {threads} threads")
    for name in args.models.split(","):
        torch.manual_seed(0)
        x = torch.randn(args.batch_size, 1, 28, 28)
        y = torch.randint(0, 10, (args.batch_size,))
        native = steps_per_second(create_model(name, num_classes=10), x, y, args.steps)
        model = approxsim.convert_model(create_model(name, num_classes=10), args.multiplier)
        approx = steps_per_second(model, x, y, args.steps)
        bs = args.batch_size
        print(
            f"{name:<12} fp32 {native * bs:8.0f} img/s   {args.multiplier} {approx * bs:8.0f} img/s"
            f"   slowdown {native / approx:5.1f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
