"""Post-training quantization of a trained float checkpoint, for :func:`~approxsim.training.
evaluate` with an integer multiplier (``approxsim eval --int-multiplier ...``).

A float run's weights are loaded into the plain model, its layers are converted to quantized
approximate layers (:func:`approxsim.convert_model` with ``quant=``) and the activation ranges
are calibrated on the first samples of the training split, never on the split being
evaluated, so the reported accuracy is not tuned on its own data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from approxsim._runtime import resolve_device
from approxsim.data import DatasetError, ImageDataset
from approxsim.multipliers.integer import IntMultiplier
from approxsim.nn.quant import QuantConfig, check_int_multiplier
from approxsim.nn.quant_layers import calibrate
from approxsim.training.build import quantize_model
from approxsim.training.checkpoint import TrainedModel
from approxsim.training.config import (
    ResolvedTrainConfig,
    check_int,
    int_multiplier_of,
    patterns,
)
from approxsim.training.errors import TrainError
from approxsim.training.init_from import load_init_weights, without_observers

__all__ = [
    "DEFAULT_CALIBRATION_SAMPLES",
    "resolve_quantized",
    "quantize_trained",
    "prepare_quantized_run",
    "without_observers",
]

DEFAULT_CALIBRATION_SAMPLES = 512
"""Training samples that calibrate the activation ranges when none are asked for."""


def resolve_quantized(
    multiplier: Any, quant: QuantConfig | None, calibration_samples: int | None
) -> tuple[IntMultiplier, QuantConfig, int | None] | None:
    """Decide whether an evaluation is quantized, and check its settings.

    Args:
        multiplier: What :func:`~approxsim.training.evaluate` was given.
        quant: Its ``quant`` argument.
        calibration_samples: Its ``calibration_samples`` argument.

    Returns:
        ``(int_multiplier, quant, calibration_samples)`` (``quant`` defaulted) when the
        evaluation runs quantized layers (``multiplier`` is an IntMultiplier or an integer
        built-in's name that no float multiplier has, or ``quant`` is given), else ``None``
        (a float multiplier, evaluated as before).

    Raises:
        QuantError: ``quant`` with a float multiplier.
        TrainError: ``calibration_samples`` with a float multiplier, or below 1.
        UnknownMultiplierError: ``quant`` with a name that is no integer multiplier's.
    """
    if quant is None and int_multiplier_of(multiplier) is None:
        if calibration_samples is not None:
            raise TrainError(
                "calibration_samples calibrates quantized layers, which only an integer "
                "multiplier has; drop it, or pass an IntMultiplier (approxsim eval: "
                "--int-multiplier NAME, --evoapprox FILE or --c FILE --function F --bits B)"
            )
        return None
    if quant is not None and not isinstance(quant, QuantConfig):
        raise TrainError(f"quant must be an approxsim.QuantConfig or None, got {quant!r}")
    mult = check_int_multiplier(multiplier, "evaluate")
    check_int("calibration_samples", calibration_samples, 1, optional=True)
    return mult, quant or QuantConfig(), calibration_samples


def quantize_trained(
    trained: TrainedModel,
    multiplier: IntMultiplier,
    quant: QuantConfig,
    *,
    calibration_samples: int | None,
    batch_size: int,
    include: str | Sequence[str] | None,
    exclude: str | Sequence[str] | None,
    device: str,
) -> tuple[nn.Module, dict[str, Any]]:
    """Turn a loaded float checkpoint's model into a calibrated quantized model.

    ``trained`` must come from :func:`~approxsim.training.load_trained` with no multiplier
    (plain float layers, trained weights). Its model is converted with ``multiplier`` and
    ``quant`` (the layers the run converted, unless ``include`` / ``exclude`` say otherwise),
    then :func:`approxsim.calibrate` fixes the activation ranges on the first
    ``calibration_samples`` samples of the training split of ``trained.dataset``.

    Args:
        trained: The loaded checkpoint; its model is converted in place.
        multiplier: The integer multiplier of every product.
        quant: How operands become codes.
        calibration_samples: Training samples for calibration (fewer if the split is
            smaller); ``None``: the activation ranges a quantization-aware run saved in
            its checkpoint when it has them for every quantized layer, else 512.
        batch_size: Samples per calibration batch.
        include: Layers to convert (fnmatch patterns); ``None``: the training run's.
        exclude: Layers to keep float; ``None``: the training run's.
        device: Where the model runs.

    Returns:
        ``(model, record)``: the quantized model in eval mode, and a JSON-ready record:
        ``quant`` (the config's fields plus the resolved ``scheme``, ``bits``, ``qmin``,
        ``qmax``), ``calibration`` (``from``: ``"calibration"`` with ``split``, ``samples``
        and ``batches``, or ``"checkpoint"``) and ``converted`` (the quantized layers' names).

    Raises:
        QuantError: ``quant`` does not fit the multiplier (bits wider than it, a mapping for
            the other signedness).
        DatasetError: the training split, which calibration needs, cannot be read.
        TrainError: the patterns select no layer.
    """
    from approxsim.convert import convert_model
    from approxsim.nn.quant_layers import QuantModule

    scheme = quant.resolve(multiplier)  # a bits or mapping mismatch fails before any work
    saved = trained.config
    inc = patterns("include", include) if include is not None else saved.get("include")
    exc = patterns("exclude", exclude) if exclude is not None else saved.get("exclude")
    dev = resolve_device(device, error=TrainError)
    model = convert_model(
        trained.model, multiplier, quant=quant, include=inc, exclude=exc, inplace=True
    ).to(dev)
    converted = [name for name, m in model.named_modules() if isinstance(m, QuantModule)]
    if not converted:
        raise TrainError(
            f"include={list(inc or [])} / exclude={list(exc or [])} select no layer of "
            f"{trained.model_name!r}, so nothing would be quantized; layer names: "
            + ", ".join(n for n, _ in model.named_modules() if n)
        )
    if calibration_samples is None and _load_run_ranges(model, trained.state["model"]):
        calibration: dict[str, Any] = {"from": "checkpoint"}
    else:
        n = calibration_samples or DEFAULT_CALIBRATION_SAMPLES
        try:
            data = trained.split("train").subset(n)
        except DatasetError as err:
            raise DatasetError(
                f"calibrating the quantized layers needs the training split of "
                f"{trained.dataset} (its first {n} samples): {err}"
            ) from None
        batches = calibrate(model, _inputs(data.batches(batch_size), dev))
        calibration = {"from": "calibration", "split": "train", "samples": len(data)}
        calibration["batches"] = batches
    return model.eval(), {
        "quant": {
            **dataclasses.asdict(quant),
            "scheme": scheme.kind,
            "bits": scheme.bits,
            "qmin": scheme.qmin,
            "qmax": scheme.qmax,
        },
        "calibration": calibration,
        "converted": converted,
    }


def _load_run_ranges(model: nn.Module, weights: dict[str, Any]) -> bool:
    """Load the activation ranges a quantization-aware run saved, when it has them for every
    observer of ``model``; returns whether it did."""
    wanted = [k for k in model.state_dict() if "_observer." in k]
    if not wanted or any(k not in weights for k in wanted):
        return False
    model.load_state_dict({k: weights[k] for k in wanted}, strict=False)
    return True


def _inputs(batches: Iterator[tuple[Tensor, Tensor]], device: torch.device) -> Iterator[Tensor]:
    for x, _ in batches:
        yield x.to(device)


def prepare_quantized_run(
    model: nn.Module,
    cfg: ResolvedTrainConfig,
    train_set: ImageDataset,
    device: torch.device,
    *,
    fresh: bool,
) -> tuple[nn.Module, list[dict[str, str]]]:
    """Make a quantization-aware run's model: weights of ``cfg.init_from`` (fresh runs),
    quantized layers, activation ranges calibrated on the first training samples and left
    to follow the data by EMA (fresh runs; a resumed run restores them from its checkpoint).

    Args:
        model: The plain model, seeded.
        cfg: The run's settings (``cfg.int_multiplier`` set).
        train_set: The training split (its first samples calibrate).
        device: Where the model runs.
        fresh: A new run (not resumed from a checkpoint).

    Returns:
        ``(model, converted)`` as :func:`~approxsim.training.build.build_model`.

    Raises:
        TrainError: ``init_from`` trained another model, or its weights do not fit.
        CheckpointError: ``init_from`` is missing or damaged.
        QuantError: the quantization settings do not fit the multiplier.
    """
    if fresh:
        load_init_weights(model, cfg)
    model, converted = quantize_model(model, cfg, cfg.model)
    model.to(device)
    if fresh:
        data = train_set.subset(DEFAULT_CALIBRATION_SAMPLES)
        calibrate(model, _inputs(data.batches(cfg.batch_size), device), freeze=False)
    return model, converted
