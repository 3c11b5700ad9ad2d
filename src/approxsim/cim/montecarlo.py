"""Monte Carlo over chips: the accuracy distribution under device-to-device variation.

Chip ``i`` of a run with seed ``seed`` draws its deviations from a generator seeded with a
hash of ``(seed, i)`` only, so the first ``k`` chips of a 100-chip run are the chips of a
``k``-chip run, and an interrupted run continues exactly (``previous=``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from approxsim.cim.chip import PatternArg, Perturbation, chip, sample_perturbation, select_layers
from approxsim.cim.device import CIMError, DeviceConfig
from approxsim.cim.evaluation import DataLike, accuracy, num_samples
from approxsim.cim.stats import summarize

__all__ = ["MonteCarloResult", "monte_carlo", "chip_seed"]


def chip_seed(seed: int, index: int, stream: str = "devices") -> int:
    """The generator seed of chip ``index`` of a run seeded ``seed`` (one stream per use)."""
    digest = hashlib.sha256(f"approxsim.cim/{seed}/{index}/{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@dataclass
class MonteCarloResult:
    """Accuracies of sampled chips and their summary.

    Attributes:
        config: The device model sampled.
        seed: The run's seed.
        accuracies: Accuracy of chip ``i`` at index ``i``.
        summary: :func:`approxsim.cim.stats.summarize` of ``accuracies``.
        clean_accuracy: Accuracy of the chip without variation (quantized weights).
        samples: Number of data samples each chip was scored on.
        layers: Names of the mapped layers.
        seconds: Wall time.
        worst_index: Index of the worst chip.
    """

    config: DeviceConfig
    seed: int
    accuracies: list[float]
    summary: dict[str, Any]
    clean_accuracy: float
    samples: int
    layers: list[str]
    seconds: float
    worst_index: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form."""
        return {
            "device": self.config.to_dict(),
            "seed": self.seed,
            "chips": len(self.accuracies),
            "data_samples": self.samples,
            "clean_accuracy": self.clean_accuracy,
            "summary": self.summary,
            "worst_chip": self.worst_index,
            "accuracies": self.accuracies,
            "layers": self.layers,
            "seconds": round(self.seconds, 3),
            **self.extra,
        }


def monte_carlo(
    model: nn.Module,
    data: DataLike,
    config: DeviceConfig,
    *,
    samples: int = 100,
    seed: int = 0,
    include: PatternArg = None,
    exclude: PatternArg = None,
    batch_size: int = 1000,
    confidence: float = 0.95,
    previous: Sequence[float] = (),
    on_chip: Callable[[int, float], None] | None = None,
    progress: Any = None,
) -> MonteCarloResult:
    """Score ``samples`` chips drawn from ``config`` on ``data``.

    Args:
        model: The trained model (plain, or converted to approximate layers).
        data: Dataset or ``(images, labels)`` to score each chip on.
        config: The device model (``sigma``, write-verify, read noise).
        samples: Number of chips ``S``.
        seed: Seed of the run; chip ``i`` depends on ``(seed, i)`` only.
        include: Layers to map (as :func:`~approxsim.cim.select_layers`).
        exclude: Layers to keep digital.
        batch_size: Samples per forward pass.
        confidence: Coverage of the intervals in the summary.
        previous: Accuracies of chips ``0..k-1`` from an interrupted run with the same
            settings; scoring resumes at chip ``k``.
        on_chip: Called with ``(index, accuracy)`` after each chip (to save progress).
        progress: An object with ``update(n)`` counting scored images, or ``None``.

    Returns:
        A :class:`MonteCarloResult`.

    Raises:
        CIMError: invalid arguments or a model whose mapped layers never run.
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise CIMError(f"samples must be an integer >= 1, got {samples!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise CIMError(f"seed must be an integer >= 0, got {seed!r}")
    if len(previous) > samples:
        raise CIMError(f"{len(previous)} chips are already done, more than samples={samples}")
    t0 = time.perf_counter()
    layers = select_layers(model, include, exclude)
    n = num_samples(data)
    with chip(model, config=config, include=include, exclude=exclude, read_seed=seed) as h:
        clean = accuracy(model, data, batch_size=batch_size)
        h.check_called()
    accs = [float(a) for a in previous]
    for i in range(len(accs), samples):
        pert: Perturbation = sample_perturbation(
            model, config, seed=chip_seed(seed, i), include=include, exclude=exclude
        )
        with chip(model, pert, config=config, read_seed=chip_seed(seed, i, "reads")):
            acc = accuracy(model, data, batch_size=batch_size, progress=progress)
        accs.append(acc)
        if on_chip is not None:
            on_chip(i, acc)
    worst = min(range(len(accs)), key=accs.__getitem__)
    return MonteCarloResult(
        config=config,
        seed=seed,
        accuracies=accs,
        summary=summarize(accs, confidence=confidence, seed=seed),
        clean_accuracy=clean,
        samples=n,
        layers=list(layers),
        seconds=time.perf_counter() - t0,
        worst_index=worst,
    )
