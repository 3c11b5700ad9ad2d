"""Robustness training for CIM chips: noise injection and adversarial weight perturbation.

:func:`train_cim` is ``approxsim train`` with another step: the run folder, ``config.json``,
``metrics.jsonl``, the atomic checksummed ``checkpoint.pt``, ``resume`` / ``overwrite``, the
data order per ``(seed, epoch)`` and the progress bar are those of
:mod:`approxsim.experiments.train` (reused, not copied), so ``approxsim eval`` and every
``approxsim cim`` command load the checkpoints, and a ``"standard"`` run gives the same
weights as ``approxsim train`` with the same settings. The checkpoint adds a ``cim``
section (method and device model) that the CIM commands use as the model's label.

Methods (every step sees the chip's quantized weights through a straight-through estimator,
``Q(w) + s · δ``, and updates the float weights):

* ``"standard"`` — plain training (float weights, no chip), for comparison;
* ``"noise"`` — noise injection: every minibatch draws a fresh chip from the device model
  (``sigma``, write-verify, read noise) and trains on it;
* ``"adversarial"`` — adversarial weight perturbation: every minibatch first searches the
  per-weight box ``|δ| ≤ eps`` for the perturbation that raises the loss most
  (``adv_steps`` of projected sign-gradient ascent from a uniform random start, step
  ``adv_step_size · eps``) and trains on the perturbed chip.

Single process only (no ``torchrun``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from approxsim.cim.chip import chip, select_layers, weight_deltas
from approxsim.cim.device import (
    CIMError,
    DeviceConfig,
    device_to_weight_delta,
    sample_device_deviations,
    weight_sign,
)
from approxsim.cim.evaluation import accuracy

# The run-folder machinery of `approxsim train`, reused so both write the same files.
from approxsim.experiments.train import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    METRICS_FILE,
    TrainConfig,
    TrainError,
    _append_metrics,
    _build_model,
    _check_resumable,
    _checkpoint_state,
    _epoch_generator,
    _epoch_line,
    _eval_batch_size,
    _evaluate_sums,
    _finite,
    _load_data,
    _make_optimizer,
    _prepare_out_dir,
    _Progress,
    _read_json,
    _run_metadata,
    _say,
    _seed_everything,
    _set_rng_state,
    _thread_settings,
    _World,
    _write_json,
    _write_metrics,
    load_checkpoint,
    save_checkpoint,
)

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
        TrainError: (from :class:`~approxsim.experiments.train.TrainConfig`) invalid base
            settings.
    """

    train: TrainConfig
    """Everything ``approxsim train`` takes: run folder, model, dataset, schedule, seed,
    multiplier, ``resume`` / ``overwrite`` ... (``include`` / ``exclude`` there choose the
    layers converted to the multiplier, not the mapped ones)."""

    method: str = "noise"
    """``"standard"``, ``"noise"`` or ``"adversarial"``."""

    device_model: DeviceConfig = field(default_factory=_default_device_model)
    """The chip trained for: bits, mapping; ``"noise"`` injects its ``sigma``, write-verify
    and read noise."""

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
    """A fresh chip's weight changes (from torch's global RNG, so resumes replay it)."""
    out: dict[str, Tensor | None] = {}
    for name, m in layers.items():
        w = m._parameters["weight"]
        assert w is not None
        dg = sample_device_deviations(w.shape, cfg).to(w.device)
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


def _train_epoch(
    cfg: CIMTrainConfig,
    model: nn.Module,
    layers: dict[str, nn.Module],
    optimizer: torch.optim.Optimizer,
    data: Any,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
    bar: _Progress,
) -> tuple[float, int, int]:
    model.train()
    dm = cfg.device_model
    total, correct, seen = 0.0, 0, 0
    for x, y in data.batches(batch_size, shuffle=True, generator=generator):
        x, y = x.to(device), y.to(device)
        if cfg.method == "standard":
            logits = model(x)
        else:
            if cfg.method == "noise":
                deltas = _noise_deltas(layers, dm)
            else:
                deltas = _adversarial_deltas(
                    model, layers, dm, x, y, cfg.eps, cfg.adv_steps, cfg._step_size()
                )
            with weight_deltas(model, deltas, dm, layers=layers, straight_through=True):
                logits = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        n = int(y.shape[0])
        total += float(loss.detach()) * n
        correct += int((logits.detach().argmax(dim=1) == y).sum())
        seen += n
        bar.update(n, total / seen, correct / seen)
    return total, correct, seen


def train_cim(config: CIMTrainConfig) -> dict[str, Any]:
    """Train with noise injection or adversarial weight perturbation (or plainly).

    Writes ``config.json`` (with a ``cim`` section), ``metrics.jsonl`` (``approxsim train``'s
    fields plus ``test_acc_chip``: the test accuracy of the nominal quantized chip) and
    ``checkpoint.pt`` after every epoch, as :func:`approxsim.experiments.train.train`.
    Ctrl-C keeps the last complete epoch; ``resume=True`` continues it.

    Args:
        config: The run's settings.

    Returns:
        The summary :func:`~approxsim.experiments.train.train` returns, plus ``method``.

    Raises:
        TrainError, CheckpointError, CIMError, DatasetError, ModelError, MultiplierError: as
            ``approxsim train``, and a resumed run whose CIM settings differ.
    """
    start_time = time.perf_counter()
    cfg = config.train.resolve()
    assert cfg.batch_size is not None
    world = _World()
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainError(f"device {cfg.device!r} was asked for but CUDA is not available")
    out = Path(cfg.out_dir)
    passes = cfg.passes()
    ckpt_path, metrics_path = out / CHECKPOINT_FILE, out / METRICS_FILE
    verbose = cfg.progress
    cim = config.cim_dict()

    state: dict[str, Any] | None = None
    if cfg.resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        _check_resumable(state, cfg, passes, out)
        if state.get("cim") != cim:
            raise TrainError(
                f"cannot resume the run in {out}: it was trained with CIM settings "
                f"{state.get('cim')}, now {cim}; pass the same settings or --overwrite"
            )
    else:
        _prepare_out_dir(out, cfg)

    with _thread_settings(cfg.threads):
        train_set = _load_data(cfg.dataset, cfg.data_dir, "train", cfg.max_train_samples)
        test_set = _load_data(cfg.dataset, cfg.data_dir, "test", cfg.max_test_samples)
        _seed_everything(cfg.seed)
        model, converted = _build_model(
            cfg.model,
            train_set.num_classes,
            train_set.sample_shape,
            passes,
            cfg.include,  # type: ignore[arg-type]
            cfg.exclude,  # type: ignore[arg-type]
        )
        model.to(device)
        layers = select_layers(model, config.include, config.exclude)
        optimizer = _make_optimizer(cfg, model)
        scheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
            if cfg.schedule == "cosine"
            else None
        )
        history: list[dict[str, Any]] = []
        start_epoch = 0
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(state["scheduler"])
            history = list(state["history"])
            start_epoch = int(state["epoch"])
            _set_rng_state(state["rng"])
            _write_metrics(metrics_path, history)
            meta = _read_json(out / CONFIG_FILE) or {}
            meta["config"] = cfg.to_dict()
            meta.setdefault("resumed", []).append({"after_epoch": start_epoch})
            _write_json(out / CONFIG_FILE, meta)
            _say(verbose, f"resuming {out} after epoch {start_epoch}/{cfg.epochs}")
        else:
            meta = _run_metadata(cfg, passes, model, converted, train_set, test_set, device, world)
            meta["cim"] = {**cim, "mapped_layers": list(layers)}
            _write_json(out / CONFIG_FILE, meta)
            _write_metrics(metrics_path, [])
            _say(
                verbose,
                f"cim training ({config.method}) {cfg.model} on {cfg.dataset} "
                f"({len(train_set)} train / {len(test_set)} test samples), "
                f"{len(layers)} mapped layers -> {out}",
            )
        epoch = saved_epoch = start_epoch
        eval_bs = _eval_batch_size(cfg.batch_size)
        try:
            for epoch in range(start_epoch + 1, cfg.epochs + 1):
                t0 = time.perf_counter()
                lr = float(optimizer.param_groups[0]["lr"])
                bar = _Progress(len(train_set), f"epoch {epoch}/{cfg.epochs}", verbose)
                try:
                    loss_sum, correct, seen = _train_epoch(
                        config,
                        model,
                        layers,
                        optimizer,
                        train_set,
                        cfg.batch_size,
                        _epoch_generator(cfg.seed, epoch),
                        device,
                        bar,
                    )
                finally:
                    bar.close()
                train_seconds = time.perf_counter() - t0
                t_loss, t_correct, t_seen = _evaluate_sums(
                    model, test_set, batch_size=eval_bs, device=device
                )
                nominal = config.device_model.replace(read_noise=0.0)
                with chip(model, config=nominal, include=config.include, exclude=config.exclude):
                    chip_acc = accuracy(model, test_set, batch_size=eval_bs)
                if scheduler is not None:
                    scheduler.step()
                seen, t_seen = max(seen, 1), max(t_seen, 1)
                record = {
                    "epoch": epoch,
                    "train_loss": _finite(loss_sum / seen),
                    "train_acc": correct / seen,
                    "test_loss": _finite(t_loss / t_seen),
                    "test_acc": t_correct / t_seen,
                    "test_acc_chip": chip_acc,
                    "seconds": round(time.perf_counter() - t0, 3),
                    "lr": lr,
                    "samples_per_s": round(len(train_set) / max(train_seconds, 1e-9), 1),
                }
                history.append(record)
                _append_metrics(metrics_path, record)
                ckpt = _checkpoint_state(cfg, passes, epoch, model, optimizer, scheduler, history)
                ckpt["cim"] = cim
                save_checkpoint(ckpt_path, ckpt)
                saved_epoch = epoch
                _say(verbose, _epoch_line(record, cfg.epochs) + f" | chip {100 * chip_acc:.2f}%")
        except KeyboardInterrupt:
            where = (
                f"{ckpt_path} holds epoch {saved_epoch} intact"
                if saved_epoch
                else "no epoch was complete, so there is no checkpoint yet"
            )
            _say(True, f"interrupted in epoch {epoch}; {where}: continue with --resume")
            raise
    best = max(history, key=lambda r: r["test_acc"]) if history else None
    return {
        "out_dir": str(out),
        "model": cfg.model,
        "dataset": cfg.dataset,
        "method": config.method,
        "multipliers": passes.names(),
        "epochs": cfg.epochs,
        "epochs_completed": len(history),
        "resumed_from": start_epoch if state is not None else None,
        "final": history[-1] if history else None,
        "best_test_acc": best["test_acc"] if best else None,
        "best_epoch": best["epoch"] if best else None,
        "history": history,
        "seconds": round(time.perf_counter() - start_time, 3),
        "world_size": 1,
        "rank": 0,
    }
