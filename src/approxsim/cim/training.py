"""Robustness training for CIM chips: noise injection and adversarial weight perturbation.

:func:`train_cim` is ``approxsim train`` with another step: the run folder, ``config.json``,
``metrics.jsonl``, the atomic checksummed ``checkpoint.pt``, ``resume`` / ``overwrite``, the
data order per ``(seed, epoch)`` and the progress bar are those of
:mod:`approxsim.training` (reused, not copied), so ``approxsim eval`` and every
``approxsim cim`` command load the checkpoints, and a ``"standard"`` run gives the same
weights as ``approxsim train`` with the same settings. The checkpoint adds a ``cim``
section (method and device model) that the CIM commands use as the model's label.

Methods (every step sees the chip's quantized weights through a straight-through estimator,
``Q(w) + s · δ``, and updates the float weights):

* ``"standard"`` — plain training (float weights, no chip), for comparison;
* ``"noise"`` — noise injection: every minibatch draws a fresh chip from the device model
  (``sigma``, write-verify, conductance clipping, read noise) and trains on it;
* ``"adversarial"`` — adversarial weight perturbation: every minibatch first searches the
  per-weight box ``|δ| ≤ eps`` for the perturbation that raises the loss most
  (``adv_steps`` of projected sign-gradient ascent from a uniform random start, step
  ``adv_step_size · eps``) and trains on the perturbed chip.

Single process only (no ``torchrun``).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from approxsim.cim.chip import chip, select_layers, weight_deltas
from approxsim.cim.device import (
    CIMError,
    DeviceConfig,
    device_to_weight_delta,
    effective_deviations,
    sample_device_deviations,
    weight_sign,
)
from approxsim.cim.evaluation import accuracy

# The run-folder machinery of `approxsim train`, reused so both write the same files.
from approxsim.training import ResolvedTrainConfig, TrainConfig, TrainExtension, train

__all__ = ["TRAIN_METHODS", "CIMTrainConfig", "train_cim", "checkpoint_method"]

TRAIN_METHODS = ("standard", "noise", "adversarial")
_CIM_SCHEMA = "approxsim.cim.train/1"


def _default_device_model() -> DeviceConfig:
    return DeviceConfig(sigma=0.02)


@dataclass(frozen=True)
class CIMTrainConfig:
    """A robustness training run: an ``approxsim train`` configuration plus the CIM method.

    Raises:
        CIMError: an invalid CIM field.
        TrainError: (from :class:`~approxsim.training.TrainConfig`) invalid base
            settings.
    """

    train: TrainConfig
    """Everything ``approxsim train`` takes: run folder, model, dataset, schedule, seed,
    multiplier, ``resume`` / ``overwrite`` ... (``include`` / ``exclude`` there choose the
    layers converted to the multiplier, not the mapped ones)."""

    method: str = "noise"
    """``"standard"``, ``"noise"`` or ``"adversarial"``."""

    device_model: DeviceConfig = field(default_factory=_default_device_model)
    """The chip trained for: bits, mapping; ``"noise"`` injects its ``sigma``, write-verify,
    ``clip`` and read noise. ``"adversarial"`` searches a per-weight box and refuses
    ``clip=True``."""

    eps: float = 0.02
    """``"adversarial"``: the per-weight bound ``|Δw| ≤ eps · s``."""

    adv_steps: int = 1
    """``"adversarial"``: ascent steps per minibatch."""

    adv_step_size: float | None = None
    """``"adversarial"``: ascent step in units of ``eps``; default ``2.5 / adv_steps``
    (1.25 for one step, after a random start, as in fast adversarial training)."""

    include: tuple[str, ...] | None = None
    """Layers mapped to the chip (fnmatch patterns); ``None``: every linear and
    convolution layer."""

    exclude: tuple[str, ...] | None = None
    """Layers kept digital."""

    def __post_init__(self) -> None:
        if not isinstance(self.train, TrainConfig):
            raise CIMError(f"train must be a TrainConfig, got {type(self.train).__name__}")
        if self.method not in TRAIN_METHODS:
            raise CIMError(f"method must be one of {TRAIN_METHODS}, got {self.method!r}")
        if not isinstance(self.device_model, DeviceConfig):
            raise CIMError("device_model must be a DeviceConfig")
        if (
            self.method == "noise"
            and self.device_model.sigma == 0
            and self.device_model.read_noise == 0
        ):
            raise CIMError(
                "noise-injection training needs a device model with sigma > 0 (or read_noise "
                "> 0): there is no noise to inject"
            )
        if self.method == "adversarial" and self.device_model.clip:
            raise CIMError(
                "adversarial training searches a per-weight box |dw| <= eps * s, which "
                "conductance clipping does not fit (the reachable range would depend on each "
                "weight's digits); use a device model with clip=False (drop --clip)"
            )
        ok = isinstance(self.eps, (int, float)) and not isinstance(self.eps, bool)
        if not ok or not math.isfinite(self.eps) or self.eps <= 0:
            raise CIMError(f"eps must be a finite number > 0, got {self.eps!r}")
        if (
            isinstance(self.adv_steps, bool)
            or not isinstance(self.adv_steps, int)
            or self.adv_steps < 1
        ):
            raise CIMError(f"adv_steps must be an integer >= 1, got {self.adv_steps!r}")
        if self.adv_step_size is not None and not (
            isinstance(self.adv_step_size, (int, float)) and 0 < self.adv_step_size < math.inf
        ):
            raise CIMError(f"adv_step_size must be a number > 0, got {self.adv_step_size!r}")
        for name in ("include", "exclude"):
            v = getattr(self, name)
            if v is None:
                continue
            items = (v,) if isinstance(v, str) else tuple(v)
            if not items or not all(isinstance(p, str) and p for p in items):
                raise CIMError(f"{name} takes module name patterns, got {v!r}")
            object.__setattr__(self, name, items)

    def cim_dict(self) -> dict[str, Any]:
        """The ``cim`` section of ``config.json`` and of the checkpoint."""
        return {
            "schema": _CIM_SCHEMA,
            "method": self.method,
            "device_model": self.device_model.to_dict(),
            "eps": self.eps if self.method == "adversarial" else None,
            "adv_steps": self.adv_steps if self.method == "adversarial" else None,
            "adv_step_size": self._step_size() if self.method == "adversarial" else None,
            "include": list(self.include) if self.include else None,
            "exclude": list(self.exclude) if self.exclude else None,
        }

    def _step_size(self) -> float:
        return 2.5 / self.adv_steps if self.adv_step_size is None else float(self.adv_step_size)


def checkpoint_method(state: dict[str, Any]) -> str:
    """The training method recorded in a checkpoint: its ``cim`` method, or ``"standard"``
    for a plain ``approxsim train`` checkpoint (``"standard+<multiplier>"`` when it trained
    with an approximate forward multiplier)."""
    cim = state.get("cim")
    if isinstance(cim, dict) and cim.get("method") in TRAIN_METHODS:
        return str(cim["method"])
    fwd = (state.get("multipliers") or {}).get("forward", {}).get("name", "fp32")
    return "standard" if fwd == "fp32" else f"standard+{fwd}"


def _noise_deltas(layers: dict[str, nn.Module], cfg: DeviceConfig) -> dict[str, Tensor | None]:
    """A fresh chip's weight changes (from torch's global RNG, so resumes replay it); with
    ``cfg.clip`` the devices are clipped to their range around the current weights' digits."""
    out: dict[str, Tensor | None] = {}
    for name, m in layers.items():
        w = m._parameters["weight"]
        assert w is not None
        dg = effective_deviations(sample_device_deviations(w.shape, cfg).to(w.device), w, cfg)
        out[name] = device_to_weight_delta(dg, weight_sign(w.detach()), cfg)
    return out


def _adversarial_deltas(
    model: nn.Module,
    layers: dict[str, nn.Module],
    cfg: DeviceConfig,
    x: Tensor,
    y: Tensor,
    eps: float,
    steps: int,
    step: float,
) -> dict[str, Tensor | None]:
    deltas = {
        n: ((torch.rand(m._parameters["weight"].shape) * 2 - 1) * eps).to(x.device)  # type: ignore[union-attr]
        for n, m in layers.items()
    }
    for _ in range(steps):
        for d in deltas.values():
            d.requires_grad_(True)
        with weight_deltas(model, deltas, cfg, layers=layers, straight_through=True):
            loss = F.cross_entropy(model(x), y)
        grads = torch.autograd.grad(loss, list(deltas.values()), allow_unused=True)
        with torch.no_grad():
            deltas = {
                n: (d.detach() + (0 if g is None else step * eps * g.sign())).clamp_(-eps, eps)
                for (n, d), g in zip(deltas.items(), grads, strict=True)
            }
    return {n: d.detach() for n, d in deltas.items()}


class _CIMExtension(TrainExtension):
    """:class:`~approxsim.training.TrainExtension` of one CIM training run."""

    section = "cim"
    label = "CIM"

    def __init__(self, config: CIMTrainConfig) -> None:
        self.config = config
        self.layers: dict[str, nn.Module] = {}

    def settings(self) -> dict[str, Any]:
        return self.config.cim_dict()

    def attach(self, model: nn.Module) -> dict[str, Any]:
        self.layers = select_layers(model, self.config.include, self.config.exclude)
        return {"mapped_layers": list(self.layers)}

    def start_message(self, cfg: ResolvedTrainConfig, train_size: int, test_size: int) -> str:
        return (
            f"cim training ({self.config.method}) {cfg.model} on {cfg.dataset} "
            f"({train_size} train / {test_size} test samples), "
            f"{len(self.layers)} mapped layers"
        )

    def forward(
        self, model: nn.Module, x: Tensor, y: Tensor
    ) -> contextlib.AbstractContextManager[object]:
        cfg, dm = self.config, self.config.device_model
        if cfg.method == "standard":
            return contextlib.nullcontext()
        if cfg.method == "noise":
            deltas = _noise_deltas(self.layers, dm)
        else:
            deltas = _adversarial_deltas(
                model, self.layers, dm, x, y, cfg.eps, cfg.adv_steps, cfg._step_size()
            )
        return weight_deltas(model, deltas, dm, layers=self.layers, straight_through=True)

    def epoch_metrics(self, model: nn.Module, test_set: Any, batch_size: int) -> dict[str, Any]:
        cfg = self.config
        nominal = cfg.device_model.replace(read_noise=0.0)
        with chip(model, config=nominal, include=cfg.include, exclude=cfg.exclude):
            return {"test_acc_chip": accuracy(model, test_set, batch_size=batch_size)}

    def epoch_suffix(self, record: dict[str, Any]) -> str:
        return f" | chip {100 * record['test_acc_chip']:.2f}%"


def train_cim(config: CIMTrainConfig) -> dict[str, Any]:
    """Train with noise injection or adversarial weight perturbation (or plainly).

    Writes ``config.json`` (with a ``cim`` section), ``metrics.jsonl`` (``approxsim train``'s
    fields plus ``test_acc_chip``: the test accuracy of the nominal quantized chip) and
    ``checkpoint.pt`` after every epoch, through :func:`approxsim.training.train`.
    Ctrl-C keeps the last complete epoch; ``resume=True`` continues it.

    Args:
        config: The run's settings.

    Returns:
        The summary :func:`~approxsim.training.train` returns, plus ``method``.

    Raises:
        TrainError, CheckpointError, CIMError, DatasetError, ModelError, MultiplierError: as
            ``approxsim train``, and a resumed run whose CIM settings differ.
    """
    result = train(config.train, extension=_CIMExtension(config))
    result["method"] = config.method
    return result
