"""``approxsim bench direct``: the LUT engine against direct simulation of the C model.

The baseline is what simulating a multiplier means without approxsim (ApproxTrain's "CPU-based
simulation"): the user's compiled functional model called once per product inside a plain
compiled GEMM loop, summing in float32, on one thread and on all threads; the loops run and are
timed in a child process (the user's code never runs in approxsim's). The same C file is
built into a :class:`~approxsim.Multiplier` (its LUT checked bit for bit against the model),
and ``approxsim.matmul`` runs the same problem, so the speed-up is measured, not assumed. The
two results agree within float32 summation order (every product is the model's). With
``--device cuda`` the LUT engine runs on the GPU (timed with synchronization) against the same
CPU baselines: the GPU simulation against CPU simulation of the model, as ApproxTrain reports it.

The best-against-best protocol of ``ops`` and ``models`` (native timed in a child process per
thread-wait setting, :mod:`approxsim.bench.native`) has nothing to choose here: the direct
baseline already runs in a process of its own, a standard-library interpreter whose loop
threads are plain threads, with no torch and no OpenMP whose waiting a setting could change.
approxsim runs in this process, as its environment is; the table says both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from approxsim._runtime import describe_environment
from approxsim._text import text_table
from approxsim.bench.common import (
    bench_device,
    machine_record,
    run_settings,
    synchronizer,
    time_calls,
    timing,
)
from approxsim.bench.problems import Problem, resolve_problems

__all__ = ["DIRECT_PROBLEMS", "SCHEMA", "bench_direct", "format_direct_table"]

#: Identifies the layout of the result dictionary (and of the JSON file written from it).
SCHEMA = "approxsim.bench.direct/1"
#: Default problems: small enough for the single-threaded direct loop (seconds each).
DIRECT_PROBLEMS = ("lenet5_conv2", "gemm512", "resnet18_layer4")


def _nonzero(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x.abs() < 1e-30, torch.ones_like(x), x)


def bench_direct(
    source: str | Path,
    function: str,
    mantissa_bits: int,
    problems: str | Sequence[str | Problem] | None = None,
    *,
    language: str | None = None,
    rounding: str = "truncate",
    reps: int = 3,
    warmup: int = 1,
    threads: int | None = None,
    device: str | torch.device = "cpu",
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Time direct simulation of a C model against approxsim's LUT engine on GEMM problems.

    Args:
        source: The C/C++ model (path or text), as :func:`approxsim.multipliers.from_c`.
        function: Its ``float function(float, float)``.
        mantissa_bits: M of the LUT built from it.
        problems: Problem names (``approxsim bench ops``' registry; convolutions run as their
            GEMM); default :data:`DIRECT_PROBLEMS`.
        language: ``"c"`` or ``"c++"``; default from the file suffix.
        rounding: Input rounding of the LUT multiplier (as the model does it).
        reps: Timed calls per implementation (median reported).
        warmup: Untimed calls before timing.
        threads: Threads for both engines (default: torch's).
        device: Where the LUT engine runs: ``"cpu"`` or a CUDA device (the direct
            baselines always run on the CPU).
        progress: Called with a line per step.

    Returns:
        ``{"schema", "machine", "model", "threads", "results": [row, ...]}``; each row has the
        problem, ``lut``, ``direct_1_thread`` and ``direct_threads`` timings (median seconds,
        GMAC/s), ``speedup_vs_1_thread``, ``speedup_vs_threads`` and ``max_rel_diff`` (largest
        difference of the two results over the largest |result|).

    Raises:
        BenchError: unknown problems, an unavailable device; CompilerError and
        MultiplierError from the build.
    """
    from approxsim.multipliers.cmodel import from_c, load_cmodel
    from approxsim.ops import matmul

    say = progress or (lambda _line: None)
    probs = resolve_problems(list(problems or DIRECT_PROBLEMS), quick=False)
    dev = bench_device(device)
    sync = synchronizer(dev)
    say(f"building {function} from {source if isinstance(source, Path) else 'the source'}")
    model = load_cmodel(source, function, language=language)
    mult = from_c(source, function, mantissa_bits, language=language, rounding=rounding)
    rows = []
    with run_settings(dev, False, threads):
        nthreads = torch.get_num_threads()
        for i, p in enumerate(probs, 1):
            gen = torch.Generator().manual_seed(i)
            # Nonzero normal operands: C models written like ApproxTrain's handle only those
            # (an exact zero from randn would give the model's garbage, not a zero product).
            a = _nonzero(torch.randn(p.r, p.k, generator=gen))
            b = _nonzero(torch.randn(p.k, p.n, generator=gen))
            an, bn = a.numpy(), b.numpy()
            ad, bd = a.to(dev), b.to(dev)
            say(f"[{i}/{len(probs)}] {p.name} ({p.shape}): approxsim.matmul on {dev}")
            lut_t = time_calls(partial(matmul, ad, bd, mult), reps, warmup, sync)
            # The direct loops run the user's code, so they run (and are timed) in a child
            # process: a crash is a one-line error, and starting the child is not timed.
            say(f"[{i}/{len(probs)}] {p.name}: direct, {nthreads} threads")
            ref, par_t = model.time_gemm(an, bn, nthreads, reps=reps, warmup=warmup)
            say(f"[{i}/{len(probs)}] {p.name}: direct, 1 thread")
            one_t = model.time_gemm(an, bn, 1, reps=reps, warmup=warmup)[1]
            got = matmul(ad, bd, mult).cpu().numpy()
            scale = float(np.abs(ref).max()) or 1.0
            lut, one, par = (timing(t, p.macs) for t in (lut_t, one_t, par_t))
            rows.append(
                {
                    "problem": p.to_dict(),
                    "lut": lut,
                    "direct_1_thread": one,
                    "direct_threads": par,
                    "speedup_vs_1_thread": one["median_s"] / lut["median_s"],
                    "speedup_vs_threads": par["median_s"] / lut["median_s"],
                    "max_rel_diff": float(np.abs(got - ref).max()) / scale,
                }
            )
    return {
        "schema": SCHEMA,
        "machine": machine_record(dev),
        "device": str(dev),
        "model": {
            "function": function,
            "source": str(source) if isinstance(source, Path) else None,
            "mantissa_bits": mantissa_bits,
            "rounding": rounding,
            "multiplier": mult.name,
        },
        "threads": nthreads,
        "results": rows,
    }


def format_direct_table(result: dict[str, Any]) -> str:
    """A text table of :func:`bench_direct`'s result.

    Args:
        result: What :func:`bench_direct` returned (or its JSON file, loaded).

    Returns:
        A title line and an aligned table, as one string.
    """
    t = result["threads"]
    header = (
        "problem",
        "shape RxKxN",
        "LUT GMAC/s",
        "direct 1T GMAC/s",
        f"direct {t}T GMAC/s",
        "speed-up vs 1T",
        f"vs {t}T",
        "max rel diff",
    )
    rows = []
    for r in result["results"]:
        p = r["problem"]
        rows.append(
            (
                p["name"],
                f"{p['r']}x{p['k']}x{p['n']}",
                f"{r['lut']['gmac_per_s']:.3g}",
                f"{r['direct_1_thread']['gmac_per_s']:.3g}",
                f"{r['direct_threads']['gmac_per_s']:.3g}",
                f"{r['speedup_vs_1_thread']:.1f}x",
                f"{r['speedup_vs_threads']:.1f}x",
                f"{r['max_rel_diff']:.1e}",
            )
        )
    out = text_table(header, rows, left=2)
    m = result["model"]
    out.insert(
        0,
        f"approxsim bench direct: {m['function']} (M={m['mantissa_bits']}), "
        f"{result['machine']['cpu']}, {t} threads, median of the timed calls"
        + (
            f"; LUT engine on {result['machine'].get('gpu')} ({result['device']})"
            if str(result.get("device", "cpu")).startswith("cuda")
            else ""
        )
        + "; direct simulation: a process of its own without torch or OpenMP (thread-wait "
        + f"settings do not apply); approxsim: {describe_environment(result['machine'])}",
    )
    return "\n".join(out)
