"""Worst-case search: the bounded device deviations that hurt a model's accuracy most.

Following Yan, Hu and Shi (ICCAD 2022), the search looks for the deviation pattern within a
bound that misclassifies as many inputs as possible, by gradient descent on the
classification margin ``m = z_y - max_{j≠y} z_j`` of a split of the data (the *attack*
split), clipped below at ``-κ`` so inputs that are already misclassified stop pulling
(``κ = 0``: only correctly classified inputs count):

* ``"pgd"`` — projected (sign-)gradient descent from a uniform random start in the box, with a
  cosine-decayed step, minibatches of the attack split, and random restarts;
* ``"cw"`` — the Carlini–Wagner-style weight-space formulation: the box is built into the
  variables, ``δ = ε · tanh(θ)``, and Adam minimizes the clipped margin over ``θ`` (the first
  restart starts at ``θ = 0``, i.e. the unperturbed chip; later ones at random points).

Bounds: a per-device bound ``|Δg| ≤ ε_d`` reaches exactly the per-weight box
``|δ| = |Δw|/s ≤ ε_w = ε_d · Σ c_i · sets`` (see :mod:`approxsim.cim.device`), so both
methods search over ``δ`` in that box and the best ``δ`` is stored as device deviations
(every device of a weight moved by the same ``δ / (Σ c_i · sets)``, which stays within
``ε_d``). The returned accuracies are re-scored from the stored perturbation, so replaying the
file gives the same numbers.

Conductance clipping (``DeviceConfig.clip``) is not supported: with it the reachable weight
changes of a per-device box are an interval that depends on each weight's digits, not the
symmetric per-weight box searched here, so :func:`worst_case_search` refuses ``clip=True``.
(Clipping only shrinks deviations, so the unclipped search's worst case is at most the
accuracy of the worst clipped chip: a pessimistic answer for a clipping device.)

Which split is which: the perturbation is found on the attack split and scored there (what
the paper's published code does, on its test set) and on a held-out split it never saw.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from approxsim._runtime import ProgressLike
from approxsim.cim.chip import (
    PatternArg,
    Perturbation,
    chip,
    select_layers,
    weight_deltas,
    weights_digest,
)
from approxsim.cim.device import (
    CIMError,
    DeviceConfig,
    per_device_bound,
    per_weight_bound,
    weight_delta_to_device,
    weight_sign,
)
from approxsim.cim.evaluation import DataLike, accuracy, iter_batches, model_device
from approxsim.cim.montecarlo import chip_seed

__all__ = [
    "SEARCH_METHODS",
    "BOUND_UNITS",
    "SearchConfig",
    "SearchResult",
    "worst_case_search",
    "margin_loss",
]

SEARCH_METHODS = ("pgd", "cw")
#: ``"weight"``: ``eps`` bounds ``|Δw|/s`` per weight; ``"device"``: ``|Δg|`` per device.
BOUND_UNITS = ("weight", "device")


def _pos_int(name: str, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise CIMError(f"{name} must be an integer >= 1, got {v!r}")


def _num(name: str, v: Any, *, positive: bool) -> None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if not ok or (v <= 0 if positive else v < 0):
        raise CIMError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {v!r}")


@dataclass(frozen=True)
class SearchConfig:
    """Settings of a worst-case search (validated on construction).

    Raises:
        CIMError: an invalid field.
    """

    eps: float
    """The bound, in the unit of ``unit`` (e.g. 0.03: 3% of the layer's largest ``|w|``)."""

    unit: str = "weight"
    """``"weight"``: ``|Δw| ≤ eps · s`` per weight (the paper's unit); ``"device"``:
    ``|Δg| ≤ eps`` per device (full-range units); equivalent via
    :func:`~approxsim.cim.device.per_weight_bound`."""

    method: str = "pgd"
    """``"pgd"`` or ``"cw"`` (see the module docstring)."""

    steps: int = 100
    """Gradient steps per restart (one minibatch each)."""

    restarts: int = 2
    """Independent starts; the worst perturbation on the attack split is kept."""

    step_size: float | None = None
    """PGD: first step (cosine-decayed to 0), in units of the per-weight bound; default
    0.25."""

    lr: float = 0.1
    """CW: Adam learning rate on ``θ``."""

    kappa: float = 0.0
    """Margins are clipped below at ``-kappa``: how far past the decision boundary an input
    is still pushed."""

    batch_size: int = 256
    """Attack-split samples per step."""

    seed: int = 0
    """Seed of the starting points and minibatch order."""

    def __post_init__(self) -> None:
        _num("eps", self.eps, positive=True)
        if self.unit not in BOUND_UNITS:
            raise CIMError(f"unit must be one of {BOUND_UNITS}, got {self.unit!r}")
        if self.method not in SEARCH_METHODS:
            raise CIMError(f"method must be one of {SEARCH_METHODS}, got {self.method!r}")
        _pos_int("steps", self.steps)
        _pos_int("restarts", self.restarts)
        if self.step_size is not None:
            _num("step_size", self.step_size, positive=True)
        _num("lr", self.lr, positive=True)
        _num("kappa", self.kappa, positive=False)
        _pos_int("batch_size", self.batch_size)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise CIMError(f"seed must be an integer >= 0, got {self.seed!r}")

    def eps_weight(self, config: DeviceConfig) -> float:
        """The per-weight bound ``ε_w`` (fraction of the layer scale)."""
        return self.eps if self.unit == "weight" else per_weight_bound(self.eps, config)

    def eps_device(self, config: DeviceConfig) -> float:
        """The per-device bound ``ε_d`` (fraction of a device's range)."""
        return self.eps if self.unit == "device" else per_device_bound(self.eps, config)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-serializable dict."""
        return dataclasses.asdict(self)


@dataclass
class SearchResult:
    """What a worst-case search found.

    Attributes:
        perturbation: The worst chip found (device deviations; save it to replay).
        search: The settings.
        eps_weight: Per-weight bound used.
        eps_device: Equivalent per-device bound.
        attack_accuracy: Accuracy on the attack split with the perturbation (the split the
            search optimized on).
        attack_clean_accuracy: Accuracy of the unperturbed (quantized) chip on the attack
            split.
        heldout_accuracy: Accuracy on the held-out split with the perturbation (``None``
            without held-out data).
        heldout_clean_accuracy: Unperturbed chip on the held-out split.
        restart_accuracies: Attack-split accuracy at the end of each restart.
        stats: :meth:`Perturbation.stats` of the result.
        seconds: Wall time.
        interrupted: The search was stopped (Ctrl-C) after at least one restart.
    """

    perturbation: Perturbation
    search: SearchConfig
    eps_weight: float
    eps_device: float
    attack_accuracy: float
    attack_clean_accuracy: float
    heldout_accuracy: float | None
    heldout_clean_accuracy: float | None
    restart_accuracies: list[float]
    stats: dict[str, Any]
    seconds: float
    interrupted: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form (without the deviations themselves)."""
        return {
            "search": self.search.to_dict(),
            "device": self.perturbation.config.to_dict(),
            "eps_weight": self.eps_weight,
            "eps_device": self.eps_device,
            "attack_accuracy": self.attack_accuracy,
            "attack_clean_accuracy": self.attack_clean_accuracy,
            "heldout_accuracy": self.heldout_accuracy,
            "heldout_clean_accuracy": self.heldout_clean_accuracy,
            "restart_accuracies": self.restart_accuracies,
            "perturbation_stats": self.stats,
            "seconds": round(self.seconds, 3),
            "interrupted": self.interrupted,
        }


def margin_loss(logits: Tensor, labels: Tensor, kappa: float = 0.0) -> Tensor:
    """Per-sample ``max(z_y - max_{j≠y} z_j, -kappa)``: positive while correctly classified.

    Shape:
        - logits: ``(B, classes)``; labels: ``(B,)``.
        - Output: ``(B,)``.
    """
    true = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf"))
    return torch.clamp(true - other.amax(dim=1), min=-kappa)


def _batches_forever(
    data: DataLike, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[Tensor, Tensor]]:
    while True:
        yield from iter_batches(data, batch_size, shuffle=True, generator=generator)


def _uniform(shape: torch.Size, eps: float, g: torch.Generator) -> Tensor:
    return (torch.rand(shape, generator=g) * 2 - 1) * eps


def worst_case_search(
    model: nn.Module,
    attack_data: DataLike,
    config: DeviceConfig,
    search: SearchConfig,
    *,
    heldout_data: DataLike | None = None,
    include: PatternArg = None,
    exclude: PatternArg = None,
    eval_batch_size: int = 1000,
    progress: ProgressLike | None = None,
    on_restart: Callable[[int, float], None] | None = None,
) -> SearchResult:
    """Search the bounded device deviations that minimize accuracy on ``attack_data``.

    The model is put in eval mode and its Parameters are frozen during the search (both
    restored afterwards); read noise is left out (the search and its scores are
    deterministic).

    Args:
        model: The trained model (plain or with approximate layers).
        attack_data: Split the search optimizes on (dataset or ``(images, labels)``).
        config: Device model (bits and mapping; ``sigma`` is not used; ``clip`` must be off).
        search: Bound, method and effort.
        heldout_data: Split to score the found perturbation on as well.
        include: Layers to map.
        exclude: Layers to keep digital.
        eval_batch_size: Batch size of the scoring passes.
        progress: An object with ``update(n)`` counting images, or ``None``.
        on_restart: Called with ``(restart, attack-split accuracy)`` after each restart.

    Returns:
        A :class:`SearchResult`. Ctrl-C after the first restart ends the search early and
        returns the worst perturbation so far with ``interrupted=True``.

    Raises:
        CIMError: invalid arguments, or ``config.clip`` (not supported, see the module
            docstring).
        KeyboardInterrupt: when interrupted before a restart completed.
    """
    if not isinstance(search, SearchConfig):
        raise CIMError(f"search must be a SearchConfig, got {type(search).__name__}")
    _check_no_clip(config)
    t0 = time.perf_counter()
    cfg = config.replace(read_noise=0.0)
    eps_w = search.eps_weight(cfg)
    eps_d = search.eps_device(cfg)
    layers = select_layers(model, include, exclude)
    best, restart_accs, interrupted = _restarts(
        model, layers, attack_data, cfg, search, eps_w, eval_batch_size, progress, on_restart
    )
    devs = {}
    for name, d in best.items():
        w = layers[name]._parameters["weight"]
        assert w is not None
        dg = weight_delta_to_device(d, weight_sign(w.detach()), cfg)
        devs[name] = dg.clamp(-eps_d, eps_d).to("cpu", torch.float32)
    pert = Perturbation(
        cfg,
        devs,
        weights_digest(layers),
        {
            "kind": "worst-case",
            "search": search.to_dict(),
            "eps_weight": eps_w,
            "eps_device": eps_d,
        },
    )
    # Scored from the stored perturbation, so replaying the file gives these numbers.
    clean = _scores(
        model,
        attack_data,
        heldout_data,
        eval_batch_size,
        config=cfg,
        include=include,
        exclude=exclude,
    )
    attack_acc, heldout_acc = _scores(model, attack_data, heldout_data, eval_batch_size, pert=pert)
    pert.meta.update(attack_accuracy=attack_acc, heldout_accuracy=heldout_acc)
    return SearchResult(
        perturbation=pert,
        search=search,
        eps_weight=eps_w,
        eps_device=eps_d,
        attack_accuracy=attack_acc,
        attack_clean_accuracy=clean[0],
        heldout_accuracy=heldout_acc,
        heldout_clean_accuracy=clean[1],
        restart_accuracies=restart_accs,
        stats=pert.stats(layers),
        seconds=time.perf_counter() - t0,
        interrupted=interrupted,
    )


def _restarts(
    model: nn.Module,
    layers: dict[str, nn.Module],
    attack_data: DataLike,
    cfg: DeviceConfig,
    search: SearchConfig,
    eps_w: float,
    eval_batch_size: int,
    progress: ProgressLike | None,
    on_restart: Callable[[int, float], None] | None,
) -> tuple[dict[str, Tensor], list[float], bool]:
    """Run the restarts with the model in eval mode and its Parameters frozen (both restored).

    Returns:
        The worst ``δ`` per layer, the attack-split accuracy after each restart, and whether
        Ctrl-C ended the search early.

    Raises:
        KeyboardInterrupt: before the first restart finished.
    """
    dev = model_device(model)
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    best: dict[str, Tensor] | None = None
    best_acc = math.inf
    restart_accs: list[float] = []
    interrupted = False
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        for r in range(search.restarts):
            try:
                deltas = _one_restart(
                    model, layers, attack_data, cfg, search, eps_w, r, dev, progress
                )
            except KeyboardInterrupt:
                if not restart_accs:
                    raise
                interrupted = True
                break
            with torch.no_grad(), weight_deltas(model, deltas, cfg, layers=layers):
                acc = accuracy(model, attack_data, batch_size=eval_batch_size)
            restart_accs.append(acc)
            if acc < best_acc:
                best_acc, best = acc, deltas
            if on_restart is not None:
                on_restart(r, acc)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)
    assert best is not None  # at least one restart finished, or the interrupt was re-raised
    return best, restart_accs, interrupted


def _scores(
    model: nn.Module,
    attack_data: DataLike,
    heldout_data: DataLike | None,
    batch_size: int,
    *,
    pert: Perturbation | None = None,
    config: DeviceConfig | None = None,
    include: PatternArg = None,
    exclude: PatternArg = None,
) -> tuple[float, float | None]:
    """Accuracy on the attack and the held-out split (``None`` without one) of the chip
    ``pert`` (or, without it, of the nominal chip of ``config``)."""
    with chip(model, pert, config=config, include=include, exclude=exclude) as h:
        attack = accuracy(model, attack_data, batch_size=batch_size)
        if pert is None:
            h.check_called()
        held = (
            accuracy(model, heldout_data, batch_size=batch_size)
            if heldout_data is not None
            else None
        )
    return attack, held


def _check_no_clip(config: DeviceConfig) -> None:
    """Refuse a clipping device model (the search's per-weight box does not model it)."""
    if config.clip:
        raise CIMError(
            "the worst-case search does not support conductance clipping (clip=True): it "
            "searches a symmetric per-weight box, while clipped devices reach a range that "
            "depends on each weight's digits. Use a device model with clip=False; clipping "
            "only shrinks deviations, so that worst case is a pessimistic bound for a "
            "clipping chip"
        )


def _one_restart(
    model: nn.Module,
    layers: dict[str, nn.Module],
    data: DataLike,
    cfg: DeviceConfig,
    search: SearchConfig,
    eps: float,
    restart: int,
    dev: torch.device,
    progress: ProgressLike | None,
) -> dict[str, Tensor]:
    """One start of PGD or CW; returns the final ``δ`` per layer (detached, in the box)."""
    g_init = torch.Generator().manual_seed(chip_seed(search.seed, restart, "search-init"))
    g_data = torch.Generator().manual_seed(chip_seed(search.seed, restart, "search-batches"))
    shapes = {n: m._parameters["weight"].shape for n, m in layers.items()}  # type: ignore[union-attr]
    batches = _batches_forever(data, search.batch_size, g_data)
    if search.method == "pgd":
        deltas = {n: _uniform(s, eps, g_init).to(dev) for n, s in shapes.items()}
        alpha0 = (0.25 if search.step_size is None else search.step_size) * eps
        for t in range(search.steps):
            x, y = next(batches)
            x, y = x.to(dev), y.to(dev)
            for d in deltas.values():
                d.requires_grad_(True)
            with weight_deltas(model, deltas, cfg, layers=layers):
                loss = margin_loss(model(x), y, search.kappa).mean()
            grads = torch.autograd.grad(loss, list(deltas.values()), allow_unused=True)
            alpha = alpha0 * 0.5 * (1.0 + math.cos(math.pi * t / search.steps))
            with torch.no_grad():
                for (n, d), gr in zip(list(deltas.items()), grads, strict=True):
                    step = torch.zeros_like(d) if gr is None else gr.sign()
                    deltas[n] = (d.detach() - alpha * step).clamp_(-eps, eps)
            if progress is not None:
                progress.update(int(y.shape[0]))
        return {n: d.detach() for n, d in deltas.items()}
    # CW: δ = ε tanh(θ); the first restart starts at the unperturbed chip.
    thetas = {}
    for n, s in shapes.items():
        start = torch.zeros(s) if restart == 0 else torch.atanh(_uniform(s, 0.9, g_init))
        thetas[n] = start.to(dev).requires_grad_(True)
    opt = torch.optim.Adam(list(thetas.values()), lr=search.lr)
    for _ in range(search.steps):
        x, y = next(batches)
        x, y = x.to(dev), y.to(dev)
        deltas = {n: eps * torch.tanh(th) for n, th in thetas.items()}
        with weight_deltas(model, deltas, cfg, layers=layers):
            loss = margin_loss(model(x), y, search.kappa).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if progress is not None:
            progress.update(int(y.shape[0]))
    with torch.no_grad():
        return {n: (eps * torch.tanh(th)).clamp(-eps, eps) for n, th in thetas.items()}
