"""The inner loops of the worst-case search: objectives, the search box, one PGD or CW run.

:func:`approxsim.cim.search.worst_case_search` schedules runs of :func:`run_component`; each
run minimizes one objective over one box from one start and returns its end point.

**Objectives** (minimized over the deviations, on minibatches of the attack split):

* ``"margin"`` — ``max(m, -κ)`` with the classification margin ``m = z_y - max_{j≠y} z_j``:
  an input stops pulling once it is misclassified by ``κ`` (``κ = 0``: as soon as it is
  misclassified);
* ``"margin-unclipped"`` — ``m`` itself (``κ = ∞``): every input keeps pulling;
* ``"ce"`` — minus the cross-entropy (the loss the paper's published PGD ascends).

**Search spaces.** ``"weight"``: one variable ``δ = Δw/s`` per weight in the box
``|δ| ≤ ε_w`` (exactly the set a per-device box reaches without clipping, see
:mod:`approxsim.cim.device`). ``"device"``: one variable ``Δg`` per device, in the box
``[-ε_d, ε_d]`` — intersected with ``[-g, 1 - g]`` when the device model clips conductances
(``g`` the device's programmed level) — and the weight change is formed from the devices as
the chip forms it (:func:`~approxsim.cim.device.device_to_weight_delta`). Device-space PGD
starts from the per-weight start lifted to the devices (every device of a weight moved
alike) and takes steps of ``ε_d`` units, so without clipping it follows the per-weight
search's path step for step (tested).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from approxsim._runtime import ProgressLike
from approxsim.cim.chip import weight_deltas
from approxsim.cim.device import (
    CIMError,
    DeviceConfig,
    device_conductances,
    device_to_weight_delta,
    weight_delta_to_device,
    weight_sign,
)
from approxsim.cim.evaluation import DataLike, iter_batches

__all__ = ["OBJECTIVES", "SearchBox", "Component", "margin_loss", "objective_loss", "run_component"]

#: What a search run minimizes (see the module docstring).
OBJECTIVES = ("margin", "margin-unclipped", "ce")


def margin_loss(logits: Tensor, labels: Tensor, kappa: float = 0.0) -> Tensor:
    """Per-sample ``max(z_y - max_{j≠y} z_j, -kappa)``: positive while correctly classified.

    ``kappa = math.inf`` gives the unclipped margin.

    Shape:
        - logits: ``(B, classes)``; labels: ``(B,)``.
        - Output: ``(B,)``.
    """
    true = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf"))
    m = true - other.amax(dim=1)
    return m if math.isinf(kappa) else torch.clamp(m, min=-kappa)


def objective_loss(logits: Tensor, labels: Tensor, objective: str, kappa: float) -> Tensor:
    """The scalar a search run minimizes on one minibatch.

    Args:
        logits: ``(B, classes)`` model outputs.
        labels: ``(B,)`` true classes.
        objective: One of :data:`OBJECTIVES`.
        kappa: Margin clip of ``"margin"``.

    Returns:
        A 0-d tensor.

    Raises:
        CIMError: an unknown objective.
    """
    if objective == "margin":
        return margin_loss(logits, labels, kappa).mean()
    if objective == "margin-unclipped":
        return margin_loss(logits, labels, math.inf).mean()
    if objective == "ce":
        return -F.cross_entropy(logits, labels)
    raise CIMError(f"objective must be one of {OBJECTIVES}, got {objective!r}")


@dataclass
class SearchBox:
    """The variables of a search and the box they live in, per mapped layer.

    Attributes:
        layers: The mapped layers by name.
        config: The device model (``clip`` shapes the device box).
        device_space: Variables per device (``Δg``) instead of per weight (``δ``).
        eps_weight: Per-weight bound ``ε_w``.
        eps_device: Per-device bound ``ε_d``.
        lo: Lower end of the box per layer (broadcastable to the variables).
        hi: Upper end of the box per layer.
        signs: Each weight's sign bit per layer (:func:`weight_sign`).
    """

    layers: dict[str, nn.Module]
    config: DeviceConfig
    device_space: bool
    eps_weight: float
    eps_device: float
    lo: dict[str, Tensor]
    hi: dict[str, Tensor]
    signs: dict[str, Tensor]

    @classmethod
    def build(
        cls,
        layers: dict[str, nn.Module],
        config: DeviceConfig,
        *,
        device_space: bool,
        eps_weight: float,
        eps_device: float,
    ) -> SearchBox:
        """The box of ``layers`` (on the weights' device).

        Raises:
            CIMError: a per-weight box for a clipping device model (it does not model the
                clipped devices).
        """
        if config.clip and not device_space:
            raise CIMError(
                "the per-weight search space does not model conductance clipping (clip=True): "
                "clipped devices reach a range that depends on each weight's digits. Search "
                "in device space (space='device' or 'auto', the default)"
            )
        lo: dict[str, Tensor] = {}
        hi: dict[str, Tensor] = {}
        signs: dict[str, Tensor] = {}
        eps = eps_device if device_space else eps_weight
        for name, m in layers.items():
            w = m._parameters["weight"]
            assert w is not None
            wd = w.detach()
            signs[name] = weight_sign(wd)
            full = torch.full((), eps, dtype=wd.dtype, device=wd.device)
            if device_space and config.clip:
                g = device_conductances(wd, config)
                lo[name], hi[name] = torch.maximum(-full, -g), torch.minimum(full, 1.0 - g)
            else:
                lo[name], hi[name] = -full, full
        return cls(layers, config, device_space, eps_weight, eps_device, lo, hi, signs)

    def shape(self, name: str) -> torch.Size:
        """The variables' shape of layer ``name``."""
        w = self.layers[name]._parameters["weight"]
        assert w is not None
        if self.device_space:
            return torch.Size((self.config.devices_per_weight, *w.shape))
        return w.shape

    @property
    def step_unit(self) -> float:
        """The bound in the variables' unit (PGD steps are fractions of it)."""
        return self.eps_device if self.device_space else self.eps_weight

    def to_delta(self, name: str, v: Tensor) -> Tensor:
        """The weight change ``δ`` (units of ``s``) of variables ``v`` (differentiable)."""
        if not self.device_space:
            return v
        return device_to_weight_delta(v, self.signs[name], self.config)

    def lift(self, name: str, delta: Tensor) -> Tensor:
        """Variables realizing the per-weight change ``delta`` (every device alike), in the
        box."""
        if not self.device_space:
            return delta
        dg = weight_delta_to_device(delta, self.signs[name], self.config)
        return torch.maximum(torch.minimum(dg, self.hi[name]), self.lo[name])

    def project(self, name: str, v: Tensor) -> Tensor:
        """``v`` clamped into the box."""
        return torch.maximum(torch.minimum(v, self.hi[name]), self.lo[name])

    def to_devices(self, name: str, v: Tensor) -> Tensor:
        """The device deviations (within ``ε_d`` and, with clipping, inside the range) of
        variables ``v``."""
        if self.device_space:
            return self.project(name, v)
        dg = weight_delta_to_device(v, self.signs[name], self.config)
        return dg.clamp(-self.eps_device, self.eps_device)


@dataclass(frozen=True)
class Component:
    """One run of a search schedule: a method, an objective and a start.

    Attributes:
        method: ``"pgd"`` or ``"cw"``.
        objective: One of :data:`OBJECTIVES`.
        kappa: Margin clip of ``"margin"``.
        steps: Gradient steps (one minibatch forward and backward each).
        start: Index of the start (seeds the start point and the minibatch order).
        zero_start: CW: start at the unperturbed chip.
    """

    method: str
    objective: str
    kappa: float
    steps: int
    start: int
    zero_start: bool = False

    @property
    def label(self) -> str:
        """E.g. ``"pgd/margin κ=1"``, ``"cw/ce"``."""
        obj = f"margin κ={self.kappa:g}" if self.objective == "margin" else self.objective
        return f"{self.method}/{obj}"


def _batches_forever(
    data: DataLike, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[Tensor, Tensor]]:
    while True:
        yield from iter_batches(data, batch_size, shuffle=True, generator=generator)


def run_component(
    model: nn.Module,
    box: SearchBox,
    data: DataLike,
    comp: Component,
    *,
    batch_size: int,
    step_size: float | None,
    lr: float,
    g_init: torch.Generator,
    g_data: torch.Generator,
    dev: torch.device,
    progress: ProgressLike | None,
) -> dict[str, Tensor]:
    """One PGD or CW run; returns the end point's variables per layer (detached, in the box).

    Args:
        model: The model (eval mode, Parameters frozen by the caller).
        box: Variables and box.
        data: The attack split.
        comp: Method, objective, steps and start.
        batch_size: Samples per step.
        step_size: PGD first step in units of the bound (default 0.25), cosine-decayed to 0.
        lr: CW Adam learning rate on ``θ``.
        g_init: Generator of the start point.
        g_data: Generator of the minibatch order.
        dev: The model's device.
        progress: Counts images, or ``None``.
    """
    batches = _batches_forever(data, batch_size, g_data)
    names = list(box.layers)

    def loss_of(vs: dict[str, Tensor]) -> Tensor:
        x, y = next(batches)
        x, y = x.to(dev), y.to(dev)
        deltas = {n: box.to_delta(n, v) for n, v in vs.items()}
        with weight_deltas(model, deltas, box.config, layers=box.layers):
            loss = objective_loss(model(x), y, comp.objective, comp.kappa)
        if progress is not None:
            progress.update(int(y.shape[0]))
        return loss

    if comp.method == "pgd":
        # The per-weight start, lifted to the devices in device space (same generator draws).
        vs = {}
        for n in names:
            w = box.layers[n]._parameters["weight"]
            assert w is not None
            u = (torch.rand(w.shape, generator=g_init) * 2 - 1) * box.eps_weight
            vs[n] = box.lift(n, u.to(dev, w.dtype))
        alpha0 = (0.25 if step_size is None else step_size) * box.step_unit
        for t in range(comp.steps):
            for v in vs.values():
                v.requires_grad_(True)
            grads = torch.autograd.grad(loss_of(vs), list(vs.values()), allow_unused=True)
            alpha = alpha0 * 0.5 * (1.0 + math.cos(math.pi * t / comp.steps))
            with torch.no_grad():
                for n, gr in zip(names, grads, strict=True):
                    v = vs[n].detach()
                    step = torch.zeros_like(v) if gr is None else gr.sign()
                    vs[n] = box.project(n, v - alpha * step)
        return {n: v.detach() for n, v in vs.items()}
    # CW: v = mid + half · tanh(θ) spans the box; the zero start is the unperturbed chip.
    mids = {n: (box.hi[n] + box.lo[n]) / 2 for n in names}
    halves = {n: (box.hi[n] - box.lo[n]) / 2 for n in names}
    thetas = {}
    for n in names:
        shape = box.shape(n)
        if comp.zero_start:
            t0 = torch.atanh((-mids[n] / halves[n]).clamp(-1 + 1e-6, 1 - 1e-6))
            start = t0.expand(shape).to(dev).clone()
        else:
            start = torch.atanh((torch.rand(shape, generator=g_init) * 2 - 1) * 0.9).to(dev)
        thetas[n] = start.requires_grad_(True)
    opt = torch.optim.Adam(list(thetas.values()), lr=lr)
    for _ in range(comp.steps):
        loss = loss_of({n: mids[n] + halves[n] * torch.tanh(th) for n, th in thetas.items()})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        return {n: box.project(n, mids[n] + halves[n] * torch.tanh(th)) for n, th in thetas.items()}
