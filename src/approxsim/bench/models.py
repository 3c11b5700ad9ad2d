"""``approxsim bench models``: whole models, approximate against native float32.

Inference follows ApproxTrain's protocol: batches of ``batch_size`` (32 by default) through the
model in eval mode, the first batch discarded, the mean time of the rest reported. Training
steps (forward, cross-entropy, backward, SGD update) are timed the same way. Inputs are random
images of the model's input shape, so no dataset is needed; every linear and convolution layer
of the approximate model runs through the multiplier (``convert_model``). On a CUDA device the
native baseline is IEEE float32 unless TF32 is asked for (``--tf32``), and every timed call
is synchronized.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from approxsim._runtime import describe_environment
from approxsim._text import text_table
from approxsim.bench.common import (
    BenchError,
    bench_device,
    machine_record,
    run_settings,
    synchronizer,
    time_calls,
)

__all__ = ["DEFAULT_MODELS", "SCHEMA", "bench_models", "format_models_table"]

#: Identifies the layout of the result dictionary (and of the JSON file written from it).
SCHEMA = "approxsim.bench.models/1"
#: Models run when none are named.
DEFAULT_MODELS = ("lenet300100", "lenet5", "resnet18")
#: The timed modes, in table order.
MODES = ("inference", "training")


def _runners(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, Callable[[], object]]:
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    @torch.no_grad()
    def infer() -> object:
        model.eval()
        return model(x)

    def train_step() -> object:
        model.train()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return {"inference": infer, "training": train_step}


def bench_models(
    multiplier: str = "mitchell7",
    models: Sequence[str] | None = None,
    *,
    batch_size: int = 32,
    batches: int = 5,
    threads: int | None = None,
    device: str | torch.device = "cpu",
    tf32: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Samples per second of each model, native float32 and converted to ``multiplier``.

    Args:
        multiplier: Multiplier of every converted layer (all three passes).
        models: Registered model names; default :data:`DEFAULT_MODELS`.
        batch_size: Images per batch (ApproxTrain's protocol uses 32).
        batches: Timed batches per mode, after one discarded batch.
        threads: CPU threads (default: torch's).
        device: ``"cpu"`` or a CUDA device (models and batches are moved there).
        tf32: On CUDA, let the native baseline use TF32 (default: IEEE float32).
        progress: Called with a line per step.

    Returns:
        ``{"schema", "machine", "multiplier", "batch_size", "batches", "results": [row]}``;
        one row per model and mode with ``native`` and ``approx`` mean seconds per batch and
        samples/s, and ``slowdown`` (approximate time / native time).

    Raises:
        BenchError: an unknown model, an unavailable device, ``tf32`` off CUDA;
        MultiplierError: an unknown multiplier.
    """
    from approxsim.convert import convert_model
    from approxsim.models import create_model, list_models, model_info
    from approxsim.multipliers import get_multiplier

    say = progress or (lambda _line: None)
    names = list(models or DEFAULT_MODELS)
    unknown = [m for m in names if m not in list_models()]
    if unknown:
        raise BenchError(f"unknown model(s) {unknown}; known: {', '.join(list_models())}")
    mult = get_multiplier(multiplier)
    dev = bench_device(device)
    if tf32 and dev.type != "cuda":
        raise BenchError("tf32 applies to CUDA devices only; drop it or use device 'cuda'")
    sync = synchronizer(dev)
    rows = []
    with run_settings(dev, tf32, threads):
        for i, name in enumerate(names, 1):
            shape = tuple(model_info(name)["input_shape"])
            gen = torch.Generator().manual_seed(i)
            x = torch.randn(batch_size, *shape, generator=gen).to(dev)
            y = torch.randint(0, 10, (batch_size,), generator=gen).to(dev)
            times: dict[str, dict[str, list[float]]] = {mode: {} for mode in MODES}
            for kind in ("native", "approx"):
                torch.manual_seed(0)
                model = create_model(name, num_classes=10).to(dev)
                if kind == "approx":
                    model = convert_model(model, mult, inplace=True)
                for mode, fn in _runners(model, x, y).items():
                    say(f"[{i}/{len(names)}] {name} {mode}, {kind}")
                    times[mode][kind] = time_calls(fn, batches, 1, sync)
            for mode in MODES:
                native = statistics.fmean(times[mode]["native"])
                approx = statistics.fmean(times[mode]["approx"])
                rows.append(
                    {
                        "model": name,
                        "mode": mode,
                        "native": {"mean_s": native, "samples_per_s": batch_size / native},
                        "approx": {"mean_s": approx, "samples_per_s": batch_size / approx},
                        "slowdown": approx / native,
                        "times_s": times[mode],
                    }
                )
    return {
        "schema": SCHEMA,
        "machine": machine_record(dev),
        "device": str(dev),
        "tf32": tf32,
        "multiplier": mult.name,
        "batch_size": batch_size,
        "batches": batches,
        "results": rows,
    }


def format_models_table(result: dict[str, Any]) -> str:
    """A text table of :func:`bench_models`' result.

    Args:
        result: What :func:`bench_models` returned (or its JSON file, loaded).

    Returns:
        A title line and an aligned table, as one string.
    """
    header = ("model", "mode", "fp32 samples/s", f"{result['multiplier']} samples/s", "slowdown")
    rows = []
    for r in result["results"]:
        rows.append(
            (
                r["model"],
                r["mode"],
                f"{r['native']['samples_per_s']:.0f}",
                f"{r['approx']['samples_per_s']:.0f}",
                f"{r['slowdown']:.1f}x",
            )
        )
    out = text_table(header, rows, left=2)
    device = str(result.get("device", "cpu"))
    where = (
        f"{result['machine'].get('gpu')} ({device}"
        + (", native TF32 on)" if result.get("tf32") else ", native IEEE float32)")
        if device.startswith("cuda")
        else f"{result['machine']['cpu']}, {result['machine']['torch_threads']} threads"
    )
    out.insert(
        0,
        f"approxsim bench models: batch {result['batch_size']}, first batch discarded, mean of "
        f"{result['batches']}; {where}; {describe_environment(result['machine'])}",
    )
    return "\n".join(out)
