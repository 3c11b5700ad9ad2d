"""Sample and update time of every replay sampler, with the cost counts of a batch.

For each sampler, buffer size ``N`` and batch size ``B`` the buffer is filled with half-normal
TD errors; then ``repeats`` steady-state training steps are timed, each an ``update`` of the
``B`` slots drawn last followed by a ``sample`` of ``B`` slots (so the AM emulation's rebuild
of its level index after an update is counted in the sample time, as a learner pays it). The
median of each is reported. On a CUDA device every timed call is synchronised.

The times are those of this software emulation on the machine recorded; the AM sampler's
times say nothing about TCAM hardware latency (AMPER's hardware figures are not reproduced).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from approxsim.bench.common import synchronizer
from approxsim.replay.base import Sampler
from approxsim.replay.fidelity import filled_sampler, synthetic_td_errors
from approxsim.replay.samplers import SAMPLER_NAMES

__all__ = ["DEFAULT_OPTIONS", "bench_samplers", "bench_one"]

#: Options each sampler is timed with (the AM samplers' defaults, named in the result).
DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    "amper-knn": {"bits": 6, "k": 32, "query": "uniform", "csp": "query"},
    "amper-fr": {"bits": 6, "radius": 1, "query": "uniform", "csp": "query"},
}


def bench_one(
    sampler: Sampler, batch: int, repeats: int, sync: Callable[[], None], seed: int = 0
) -> dict[str, Any]:
    """Time ``repeats`` update+sample steps of one filled sampler.

    Args:
        sampler: A filled sampler.
        batch: B.
        repeats: Timed steps (after two untimed ones).
        sync: Waits for the device (:func:`approxsim.bench.common.synchronizer`).
        seed: Seed of the draws and the new TD errors.

    Returns:
        ``sample_ms`` and ``update_ms`` (medians) and ``cost`` (of the last batch).
    """
    g = torch.Generator(device=sampler.device).manual_seed(seed)
    td = torch.randn(batch, generator=g, device=sampler.device, dtype=torch.float64)
    indices = sampler.sample(batch, beta=0.4, generator=g).indices
    sample_t, update_t = [], []
    cost: dict[str, int] = {}
    for step in range(repeats + 2):
        sync()
        t0 = time.perf_counter()
        sampler.update(indices, td)
        sync()
        t1 = time.perf_counter()
        b = sampler.sample(batch, beta=0.4, generator=g)
        sync()
        t2 = time.perf_counter()
        indices, cost = b.indices, b.cost
        if step >= 2:
            update_t.append(t1 - t0)
            sample_t.append(t2 - t1)
    return {
        "sample_ms": 1e3 * statistics.median(sample_t),
        "update_ms": 1e3 * statistics.median(update_t),
        "cost": cost,
    }


def bench_samplers(
    sizes: Sequence[int],
    batches: Sequence[int],
    samplers: Sequence[str] = SAMPLER_NAMES,
    *,
    device: torch.device | str = "cpu",
    repeats: int = 20,
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Time every sampler at every buffer size and batch size.

    Args:
        sizes: Buffer sizes N (filled completely).
        batches: Batch sizes B (cells with ``B > N`` are skipped).
        samplers: Sampler names.
        device: Where the samplers run.
        repeats: Timed steps per cell.
        progress: Called with 1 after each cell.

    Returns:
        One record per cell: ``sampler``, ``options``, ``n``, ``batch``, ``sample_ms``,
        ``update_ms``, ``cost``.
    """
    sync = synchronizer(torch.device(device))
    rows: list[dict[str, Any]] = []
    for name in samplers:
        options = DEFAULT_OPTIONS.get(name, {})
        for n in sizes:
            td = synthetic_td_errors("half-normal", n, seed=n)
            s = filled_sampler(name, td.to(device), device=device, **options)
            for b in batches:
                if b <= n:
                    rec = bench_one(s, b, repeats, sync)
                    rows.append({"sampler": name, "options": options, "n": n, "batch": b, **rec})
                if progress is not None:
                    progress(1)
    return rows
