"""Worst-case search: the bounded device deviations that hurt a model's accuracy most.

Following Yan, Hu and Shi (ICCAD 2022), the search looks for the deviation pattern within a
bound that misclassifies as many inputs as possible, by gradient descent on an objective over
a split of the data (the *attack* split; objectives in :mod:`approxsim.cim.search_steps`:
the classification margin ``m = z_y - max_{j≠y} z_j`` clipped below at ``-κ``, the unclipped
margin, or minus the cross-entropy). Methods:

* ``"auto"`` (the default) — the runs of :data:`AUTO_SCHEDULE` (complementary objectives and
  starts), each with an equal share of the budget; the worst chip on the attack split is kept
  and :attr:`SearchResult.found_by` names the run that found it;
* ``"pgd"`` — projected (sign-)gradient descent from a uniform random start in the box, with a
  cosine-decayed step, minibatches of the attack split, and random restarts;
* ``"cw"`` — the Carlini–Wagner-style formulation: the box is built into the variables,
  ``v = mid + half · tanh(θ)``, and Adam minimizes the objective over ``θ`` (the first
  restart starts at the unperturbed chip; later ones at random points).

The budget is counted in gradient steps (one minibatch forward and backward pass each):
``SearchConfig.budget``, by default ``steps × restarts``; :attr:`SearchResult.cost` records
what a search spent, scoring passes included.

Bounds and spaces: a per-device bound ``|Δg| ≤ ε_d`` reaches exactly the per-weight box
``|δ| = |Δw|/s ≤ ε_w = ε_d · Σ c_i · sets`` (see :mod:`approxsim.cim.device`), so without
conductance clipping the search runs over ``δ`` in that box (``space="weight"``) and stores the
best ``δ`` as device deviations (every device of a weight moved alike). With clipping
(``DeviceConfig.clip``) a device at level ``g`` only reaches ``[-g, 1 - g]``, so the search
runs over the devices themselves (``space="device"``, chosen by ``"auto"``) in the box
``[-ε_d, ε_d] ∩ [-g, 1 - g]``. The returned accuracies are re-scored from the stored
perturbation, so replaying the file gives the same numbers.

Which split is which: the perturbation is found on the attack split and scored there (what
the paper's published code does, on its test set) and on a held-out split it never saw.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
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
from approxsim.cim.device import CIMError, DeviceConfig, per_device_bound, per_weight_bound
from approxsim.cim.evaluation import DataLike, accuracy, model_device, num_samples
from approxsim.cim.montecarlo import chip_seed
from approxsim.cim.search_steps import (
    OBJECTIVES,
    Component,
    SearchBox,
    margin_loss,
    run_component,
)

__all__ = [
    "SEARCH_METHODS",
    "BOUND_UNITS",
    "SEARCH_SPACES",
    "OBJECTIVES",
    "AUTO_SCHEDULE",
    "SearchConfig",
    "SearchResult",
    "worst_case_search",
    "margin_loss",
]

#: ``"auto"`` runs the :data:`AUTO_SCHEDULE` (the default); ``"pgd"`` / ``"cw"`` one method.
SEARCH_METHODS = ("auto", "pgd", "cw")
#: ``"weight"``: ``eps`` bounds ``|Δw|/s`` per weight; ``"device"``: ``|Δg|`` per device.
BOUND_UNITS = ("weight", "device")
#: ``"auto"``: per device with clipping, else per weight (the same reachable set).
SEARCH_SPACES = ("auto", "weight", "device")

#: The runs of ``method="auto"``: ``(method, objective, κ)``, each given an equal share of
#: the budget from its own start; the worst on the attack split is kept. Chosen from the
#: measurements in docs/cim.md §5 (objective × ε × model).
AUTO_SCHEDULE: tuple[tuple[str, str, float], ...] = (
    ("pgd", "margin", 1.0),
    ("pgd", "ce", 0.0),
)


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

    method: str = "auto"
    """``"auto"`` (the :data:`AUTO_SCHEDULE`), ``"pgd"`` or ``"cw"`` (see the module
    docstring)."""

    steps: int = 100
    """Gradient steps per restart (one minibatch each); with ``budget`` unset the budget is
    ``steps × restarts``."""

    restarts: int = 2
    """Independent starts of ``"pgd"`` / ``"cw"``; the worst on the attack split is kept."""

    step_size: float | None = None
    """PGD: first step (cosine-decayed to 0), in units of the bound; default 0.25."""

    lr: float = 0.1
    """CW: Adam learning rate on ``θ``."""

    kappa: float = 0.0
    """``"pgd"`` / ``"cw"`` with ``objective="margin"``: margins are clipped below at
    ``-kappa`` (how far past the decision boundary an input is still pushed). ``"auto"``
    sets its own per run."""

    objective: str = "margin"
    """What ``"pgd"`` / ``"cw"`` minimize: ``"margin"``, ``"margin-unclipped"`` or ``"ce"``
    (:mod:`approxsim.cim.search_steps`). ``"auto"`` sets its own per run."""

    space: str = "auto"
    """Search variables: ``"weight"`` (one per weight), ``"device"`` (one per device) or
    ``"auto"`` (per device when the device model clips conductances, else per weight)."""

    budget: int | None = None
    """Gradient steps of the whole search, shared equally by its runs (restarts, or the
    runs of ``"auto"``); ``None``: ``steps × restarts``."""

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
        if self.objective not in OBJECTIVES:
            raise CIMError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.space not in SEARCH_SPACES:
            raise CIMError(f"space must be one of {SEARCH_SPACES}, got {self.space!r}")
        _pos_int("steps", self.steps)
        _pos_int("restarts", self.restarts)
        if self.budget is not None:
            _pos_int("budget", self.budget)
        if self.step_size is not None:
            _num("step_size", self.step_size, positive=True)
        _num("lr", self.lr, positive=True)
        _num("kappa", self.kappa, positive=False)
        _pos_int("batch_size", self.batch_size)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise CIMError(f"seed must be an integer >= 0, got {self.seed!r}")

    @property
    def total_budget(self) -> int:
        """Gradient steps of the whole search: ``budget``, or ``steps × restarts``."""
        return self.budget if self.budget is not None else self.steps * self.restarts

    def eps_weight(self, config: DeviceConfig) -> float:
        """The per-weight bound ``ε_w`` (fraction of the layer scale)."""
        return self.eps if self.unit == "weight" else per_weight_bound(self.eps, config)

    def eps_device(self, config: DeviceConfig) -> float:
        """The per-device bound ``ε_d`` (fraction of a device's range)."""
        return self.eps if self.unit == "device" else per_device_bound(self.eps, config)

    def device_space(self, config: DeviceConfig) -> bool:
        """Whether the search runs over devices (``space``, or ``"auto"``: with clipping)."""
        return self.space == "device" or (self.space == "auto" and config.clip)

    def components(self) -> list[Component]:
        """The runs of the search, in order, with the budget shared equally.

        Raises:
            CIMError: a budget smaller than the number of runs.
        """
        if self.method == "auto":
            plan = [(m, o, k) for m, o, k in AUTO_SCHEDULE]
        else:
            plan = [(self.method, self.objective, self.kappa)] * self.restarts
        if self.total_budget < len(plan):
            raise CIMError(
                f"budget {self.total_budget} is smaller than the {len(plan)} runs of the "
                f"search ({self.method}); give at least one step per run"
            )
        steps = self.total_budget // len(plan)
        seen: set[str] = set()
        out = []
        for i, (method, objective, kappa) in enumerate(plan):
            out.append(Component(method, objective, kappa, steps, i, method not in seen))
            seen.add(method)
        return out

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
        restart_accuracies: Attack-split accuracy at the end of each run (restart).
        stats: :meth:`Perturbation.stats` of the result.
        seconds: Wall time.
        interrupted: The search was stopped (Ctrl-C) after at least one run.
        found_by: Label of the run that found the kept chip (e.g. ``"pgd/margin κ=1"``).
        runs: Each finished run's label, steps and attack-split accuracy.
        cost: What the search spent: ``gradient_steps`` (minibatch forward and backward
            passes), ``gradient_samples`` (steps × batch size), ``scoring_samples``
            (attack-split samples run forward to score each run, the nominal chip and the
            result; the held-out scoring is not counted), ``budget``.
        space: ``"weight"`` or ``"device"``: the variables searched.
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
    found_by: str = ""
    runs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    cost: dict[str, int] = dataclasses.field(default_factory=dict)
    space: str = "weight"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form (without the deviations themselves)."""
        return {
            "search": self.search.to_dict(),
            "device": self.perturbation.config.to_dict(),
            "eps_weight": self.eps_weight,
            "eps_device": self.eps_device,
            "space": self.space,
            "attack_accuracy": self.attack_accuracy,
            "attack_clean_accuracy": self.attack_clean_accuracy,
            "heldout_accuracy": self.heldout_accuracy,
            "heldout_clean_accuracy": self.heldout_clean_accuracy,
            "found_by": self.found_by,
            "runs": self.runs,
            "restart_accuracies": self.restart_accuracies,
            "cost": self.cost,
            "perturbation_stats": self.stats,
            "seconds": round(self.seconds, 3),
            "interrupted": self.interrupted,
        }


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
        config: Device model (bits, mapping, ``clip``; ``sigma`` is not used).
        search: Bound, method, budget.
        heldout_data: Split to score the found perturbation on as well.
        include: Layers to map.
        exclude: Layers to keep digital.
        eval_batch_size: Batch size of the scoring passes.
        progress: An object with ``update(n)`` counting images, or ``None``.
        on_restart: Called with ``(run, attack-split accuracy)`` after each run.

    Returns:
        A :class:`SearchResult`. Ctrl-C after the first run ends the search early and
        returns the worst perturbation so far with ``interrupted=True``.

    Raises:
        CIMError: invalid arguments, a budget below the number of runs, a per-weight space
            with a clipping device model.
        KeyboardInterrupt: when interrupted before a run completed.
    """
    if not isinstance(search, SearchConfig):
        raise CIMError(f"search must be a SearchConfig, got {type(search).__name__}")
    t0 = time.perf_counter()
    cfg = config.replace(read_noise=0.0)
    layers = select_layers(model, include, exclude)
    box = SearchBox.build(
        layers,
        cfg,
        device_space=search.device_space(cfg),
        eps_weight=search.eps_weight(cfg),
        eps_device=search.eps_device(cfg),
    )
    comps = search.components()  # validates the budget before any work
    state = _Schedule(model, box, attack_data, search, eval_batch_size, progress, on_restart)
    state.run(comps)
    assert state.best is not None  # at least one run finished, or the interrupt was re-raised
    devs = {n: box.to_devices(n, v).to("cpu", torch.float32) for n, v in state.best.items()}
    pert = Perturbation(
        cfg,
        devs,
        weights_digest(layers),
        {
            "kind": "worst-case",
            "search": search.to_dict(),
            "eps_weight": box.eps_weight,
            "eps_device": box.eps_device,
            "found_by": state.best_label,
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
    state.scoring_samples += 2 * num_samples(attack_data)
    pert.meta.update(attack_accuracy=attack_acc, heldout_accuracy=heldout_acc)
    return SearchResult(
        perturbation=pert,
        search=search,
        eps_weight=box.eps_weight,
        eps_device=box.eps_device,
        attack_accuracy=attack_acc,
        attack_clean_accuracy=clean[0],
        heldout_accuracy=heldout_acc,
        heldout_clean_accuracy=clean[1],
        restart_accuracies=[r["attack_accuracy"] for r in state.runs],
        stats=pert.stats(layers),
        seconds=time.perf_counter() - t0,
        interrupted=state.interrupted,
        found_by=state.best_label,
        runs=state.runs,
        cost={
            "budget": search.total_budget,
            "gradient_steps": state.gradient_steps,
            "gradient_samples": state.gradient_steps * search.batch_size,
            "scoring_samples": state.scoring_samples,
        },
        space="device" if box.device_space else "weight",
    )


@dataclass
class _Schedule:
    """The runs of one search, the worst chip so far and what they cost."""

    model: nn.Module
    box: SearchBox
    data: DataLike
    search: SearchConfig
    eval_batch_size: int
    progress: ProgressLike | None
    on_restart: Callable[[int, float], None] | None
    best: dict[str, Tensor] | None = None
    best_acc: float = math.inf
    best_label: str = ""
    runs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    interrupted: bool = False
    gradient_steps: int = 0
    scoring_samples: int = 0

    def score(self, variables: dict[str, Tensor]) -> float:
        """Attack-split accuracy of the chip of ``variables``."""
        deltas = {n: self.box.to_delta(n, v) for n, v in variables.items()}
        with (
            torch.no_grad(),
            weight_deltas(self.model, deltas, self.box.config, layers=self.box.layers),
        ):
            acc = accuracy(self.model, self.data, batch_size=self.eval_batch_size)
        self.scoring_samples += num_samples(self.data)
        return acc

    def run(self, comps: list[Component]) -> None:
        """Run the components with the model in eval mode and its Parameters frozen (both
        restored); Ctrl-C after a finished run keeps the worst so far.

        Raises:
            KeyboardInterrupt: before any run finished.
        """
        dev = model_device(self.model)
        was_training = self.model.training
        flags = [(p, p.requires_grad) for p in self.model.parameters()]
        self.model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        try:
            for i, comp in enumerate(comps):
                try:
                    variables = run_component(
                        self.model,
                        self.box,
                        self.data,
                        comp,
                        batch_size=self.search.batch_size,
                        step_size=self.search.step_size,
                        lr=self.search.lr,
                        g_init=torch.Generator().manual_seed(
                            chip_seed(self.search.seed, comp.start, "search-init")
                        ),
                        g_data=torch.Generator().manual_seed(
                            chip_seed(self.search.seed, comp.start, "search-batches")
                        ),
                        dev=dev,
                        progress=self.progress,
                    )
                except KeyboardInterrupt:
                    if self.best is None:
                        raise
                    self.interrupted = True
                    break
                self.gradient_steps += comp.steps
                acc = self.score(variables)
                self.runs.append({"run": comp.label, "steps": comp.steps, "attack_accuracy": acc})
                if acc < self.best_acc:
                    self.best, self.best_acc, self.best_label = variables, acc, comp.label
                if self.on_restart is not None:
                    self.on_restart(i, acc)
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)
            self.model.train(was_training)


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
