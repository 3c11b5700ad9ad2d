"""``approxsim bench models``: whole models, approximate against native float32.

Inference follows ApproxTrain's protocol: batches of ``batch_size`` (32 by default) through the
model in eval mode, the first batch discarded, the mean time of the rest reported. Training
steps (forward, cross-entropy, backward, SGD update) are timed the same way. Inputs are random
images of the model's input shape, so no dataset is needed; every linear and convolution layer
of the approximate model runs through the multiplier (``convert_model``). On a CUDA device the
native baseline is IEEE float32 unless TF32 is asked for (``--tf32``), and every timed call
is synchronized. The converted models run in this process, as its environment is; native
float32 runs in one child process per native setting, the fastest kept per model and mode
(:mod:`approxsim.bench.native`), on the same batch and weights (both seeded).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from approxsim._runtime import thread_environment
from approxsim._text import text_table
from approxsim.bench.common import (
    BenchError,
    bench_device,
    machine_record,
    run_settings,
    synchronizer,
    time_calls,
)
from approxsim.bench.native import (
    SAME_PROCESS,
    best_setting,
    protocol_line,
    resolve_native_settings,
    short_label,
    time_native,
)

__all__ = ["DEFAULT_MODELS", "SCHEMA", "bench_models", "format_models_table", "native_timings"]

#: Identifies the layout of the result dictionary (and of the JSON file written from it).
SCHEMA = "approxsim.bench.models/2"
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


def _model_times(
    name: str,
    index: int,
    mult: Any,
    dev: torch.device,
    shape: tuple[int, int, int],
    sync: Callable[[], None],
    say: Callable[[str], None],
) -> dict[str, list[float]]:
    """Seconds per batch of each mode of one model: native float32 when ``mult`` is
    ``None``, else every linear and convolution layer converted to ``mult``.

    The batch comes from a generator seeded with ``index`` and the weights from seed 0, so a
    child process times the same model on the same batch.
    """
    from approxsim.convert import convert_model
    from approxsim.models import create_model

    batch_size, batches, warmup = shape
    kind = "native" if mult is None else "approx"
    gen = torch.Generator().manual_seed(index)
    size = tuple(_input_shape(name))
    x = torch.randn(batch_size, *size, generator=gen).to(dev)
    y = torch.randint(0, 10, (batch_size,), generator=gen).to(dev)
    with torch.random.fork_rng(devices=[]):  # the caller's RNG is left alone
        torch.manual_seed(0)
        model = create_model(name, num_classes=10).to(dev)
    if mult is not None:
        model = convert_model(model, mult, inplace=True)
    times = {}
    for mode, fn in _runners(model, x, y).items():
        say(f"{name} {mode}, {kind}")
        times[mode] = time_calls(fn, batches, warmup, sync)
    return times


def _input_shape(name: str) -> list[int]:
    from approxsim.models import model_info

    return list(model_info(name)["input_shape"])


def native_timings(task: dict[str, Any], say: Callable[[str], None]) -> list[dict[str, Any]]:
    """Time native float32 for every model of a task, in this process (the child's side).

    Args:
        task: Written by :func:`bench_models`: ``device``, ``tf32``, ``threads``,
            ``batch_size``, ``batches``, ``warmup`` and ``models`` (``[name, seed index]``
            pairs).
        say: Called with a progress line per model and mode.

    Returns:
        One ``{"model", "times_s": {mode: seconds per batch}}`` per model, in order.
    """
    dev = bench_device(task["device"])
    sync = synchronizer(dev)
    shape = (task["batch_size"], task["batches"], task["warmup"])
    out = []
    with run_settings(dev, bool(task["tf32"]), task["threads"]):
        for i, (name, index) in enumerate(task["models"], 1):
            times = _model_times(
                name,
                index,
                None,
                dev,
                shape,
                sync,
                _prefixed(say, f"[{i}/{len(task['models'])}]"),
            )
            out.append({"model": name, "times_s": times})
    return out


def _prefixed(say: Callable[[str], None], prefix: str) -> Callable[[str], None]:
    return lambda line: say(f"{prefix} {line}")


def _mean_record(times: list[float], batch_size: int) -> dict[str, Any]:
    mean = statistics.fmean(times)
    return {"mean_s": mean, "samples_per_s": batch_size / mean, "times_s": times}


def bench_models(
    multiplier: str = "mitchell7",
    models: Sequence[str] | None = None,
    *,
    batch_size: int = 32,
    batches: int = 5,
    threads: int | None = None,
    device: str | torch.device = "cpu",
    tf32: bool = False,
    native_settings: str | Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Samples per second of each model, native float32 and converted to ``multiplier``.

    The converted models are timed in this process, as its environment is; native float32
    in one child process per native setting (:mod:`approxsim.bench.native`), each model and
    mode keeping the fastest.

    Args:
        multiplier: Multiplier of every converted layer (all three passes).
        models: Registered model names; default :data:`DEFAULT_MODELS`.
        batch_size: Images per batch (ApproxTrain's protocol uses 32).
        batches: Timed batches per mode, after one discarded batch.
        threads: CPU threads (default: torch's); native children run the same count.
        device: ``"cpu"`` or a CUDA device (models and batches are moved there).
        tf32: On CUDA, let the native baseline use TF32 (default: IEEE float32).
        native_settings: Where native is timed (see
            :func:`~approxsim.bench.native.resolve_native_settings`); default: the three
            wait policies, or the environment's own when it sets one.
        progress: Called with a line per step.

    Returns:
        ``{"schema", "machine", "multiplier", "batch_size", "batches", "native_settings",
        "native_environments", "results": [row]}``; one row per model and mode with
        ``native`` (the fastest setting's) and ``approx`` mean seconds per batch and
        samples/s, ``native_setting``, ``native_by_setting`` and ``slowdown`` (approximate
        time / native time).

    Raises:
        BenchError: an unknown model or native setting, an unavailable device, ``tf32`` off
            CUDA; MultiplierError: an unknown multiplier; NativeBaselineError: a child
            process timing native failed.
    """
    from approxsim.models import list_models
    from approxsim.multipliers import get_multiplier

    settings = resolve_native_settings(native_settings)
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
    shape = (batch_size, batches, 1)
    rows = []
    with run_settings(dev, tf32, threads):
        task = {
            "bench": "models",
            "device": str(dev),
            "tf32": tf32,
            "threads": torch.get_num_threads(),
            "batch_size": batch_size,
            "batches": batches,
            "warmup": 1,
            "models": [[name, i] for i, name in enumerate(names, 1)],
        }
        children = time_native(task, settings, say)
        envs = {
            s: {"environment": c["environment"], "torch_threads": c["torch_threads"]}
            for s, c in children.items()
        }
        for i, name in enumerate(names, 1):
            report = _prefixed(say, f"[{i}/{len(names)}]")
            native = {s: c["results"][i - 1]["times_s"] for s, c in children.items()}
            if SAME_PROCESS in settings:
                native[SAME_PROCESS] = _model_times(name, i, None, dev, shape, sync, report)
                envs[SAME_PROCESS] = {
                    "environment": thread_environment(),
                    "torch_threads": torch.get_num_threads(),
                }
            approx = _model_times(name, i, mult, dev, shape, sync, report)
            rows.extend(_model_rows(name, native, approx, batch_size))
    return {
        "schema": SCHEMA,
        "machine": machine_record(dev),
        "device": str(dev),
        "tf32": tf32,
        "multiplier": mult.name,
        "batch_size": batch_size,
        "batches": batches,
        "native_settings": list(settings),
        "native_environments": envs,
        "results": rows,
    }


def _model_rows(
    name: str,
    native: dict[str, dict[str, list[float]]],
    approx: dict[str, list[float]],
    batch_size: int,
) -> list[dict[str, Any]]:
    """One row per mode: approxsim against the fastest native setting."""
    rows = []
    for mode in MODES:
        by_setting = {s: _mean_record(t[mode], batch_size) for s, t in native.items()}
        best = best_setting({s: r["mean_s"] for s, r in by_setting.items()})
        a = _mean_record(approx[mode], batch_size)
        n = by_setting[best]
        rows.append(
            {
                "model": name,
                "mode": mode,
                "native": {"mean_s": n["mean_s"], "samples_per_s": n["samples_per_s"]},
                "approx": {"mean_s": a["mean_s"], "samples_per_s": a["samples_per_s"]},
                "native_setting": best,
                "native_by_setting": by_setting,
                "slowdown": a["mean_s"] / n["mean_s"],
                "times_s": {"native": n["times_s"], "approx": a["times_s"]},
            }
        )
    return rows


def format_models_table(result: dict[str, Any]) -> str:
    """A text table of :func:`bench_models`' result.

    Args:
        result: What :func:`bench_models` returned (or its JSON file, loaded).

    Returns:
        A title line and an aligned table, as one string.
    """
    header = (
        "model",
        "mode",
        "fp32 samples/s",
        f"{result['multiplier']} samples/s",
        "slowdown",
        "fp32 best under",
    )
    rows = []
    for r in result["results"]:
        rows.append(
            (
                r["model"],
                r["mode"],
                f"{r['native']['samples_per_s']:.0f}",
                f"{r['approx']['samples_per_s']:.0f}",
                f"{r['slowdown']:.1f}x",
                short_label(r.get("native_setting")),
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
        f"{result['batches']}; {where}; "
        + protocol_line(result.get("native_settings"), result["machine"]),
    )
    out.append("slowdown = approximate time / time of native float32 at its best setting")
    return "\n".join(out)
