"""What a run is built from: the dataset splits, the (converted) model and the optimizer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from approxsim.data import ImageDataset, load_dataset
from approxsim.models import create_model, model_info
from approxsim.ops import PassMultipliers
from approxsim.training.config import ResolvedTrainConfig
from approxsim.training.errors import TrainError

__all__ = [
    "load_data",
    "build_model",
    "quantize_model",
    "make_optimizer",
    "make_scheduler",
    "describe_passes",
    "describe_multipliers",
    "multiplier_fingerprints",
]

_ROLES = ("forward", "grad_input", "grad_weight")


def load_data(name: str, data_dir: Any, split: str, max_samples: int | None) -> ImageDataset:
    """Load a split of a registered dataset, optionally only its first samples.

    Args:
        name: Dataset name (:func:`approxsim.data.list_datasets`).
        data_dir: Folder with the dataset's files; ``None``: the default location.
        split: ``"train"`` or ``"test"``.
        max_samples: Keep only the first this many samples; ``None``: all.

    Returns:
        The dataset.

    Raises:
        DatasetError: an unknown dataset or missing files.
    """
    return load_dataset(name, root=data_dir, split=split).subset(max_samples)


def build_model(
    name: str,
    num_classes: int,
    sample_shape: tuple[int, int, int],
    passes: PassMultipliers,
    include: Sequence[str] | None,
    exclude: Sequence[str] | None,
) -> tuple[nn.Module, list[dict[str, str]]]:
    """Create the model, check it takes the data's images, convert it unless all-exact.

    Args:
        name: Registered model name (:func:`approxsim.models.list_models`).
        num_classes: Number of output classes.
        sample_shape: ``(channels, height, width)`` of one image of the dataset.
        passes: The multipliers of the forward and the two backward passes.
        include: Layers to convert (patterns as :func:`approxsim.convert_model`).
        exclude: Layers to keep exact.

    Returns:
        ``(model, converted)``: the model (converted in place unless every pass is exact)
        and one ``{"name", "type", "multiplier"}`` dict per converted layer.

    Raises:
        TrainError: the model does not take the dataset's images, or the patterns select
            no layer to convert.
        ModelError: an unknown model name.
    """
    info = model_info(name)
    want = tuple(info["input_shape"])
    channels_ok = info["any_in_channels"] or want[0] == sample_shape[0]
    size_ok = info["any_image_size"] or want[1:] == tuple(sample_shape[1:])
    if not (channels_ok and size_ok):
        raise TrainError(
            f"model {name!r} takes images of shape {want} but the dataset's are "
            f"{tuple(sample_shape)}; pick a model made for this dataset"
        )
    extra = {"in_channels": sample_shape[0]} if info["any_in_channels"] else {}
    model = create_model(name, num_classes=num_classes, **extra)
    if passes.all_exact:
        return model, []
    from approxsim.convert import conversion_report, convert_model

    model = convert_model(model, passes, include=include, exclude=exclude, inplace=True)
    report = conversion_report(model)
    if not report.converted:
        raise TrainError(
            f"include={list(include or [])} / exclude={list(exclude or [])} select no layer of "
            f"{name!r}, so nothing would multiply approximately; layer names: "
            + ", ".join(n for n, m in model.named_modules() if n)
        )
    converted = [
        {"name": e.name, "type": e.type_name, "multiplier": e.multiplier} for e in report.converted
    ]
    return model, converted


def make_optimizer(cfg: ResolvedTrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD with momentum or Adam over ``model``'s parameters, as ``cfg`` says."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )


def make_scheduler(
    cfg: ResolvedTrainConfig, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The learning-rate schedule (stepped once per epoch), or ``None`` for a constant lr."""
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    return None


def describe_passes(passes: PassMultipliers) -> dict[str, dict[str, Any]]:
    """Each pass's multiplier described (name, fingerprint, provenance, error statistics)."""
    return {
        "forward": passes.forward.describe(),
        "grad_input": passes.grad_input.describe(),
        "grad_weight": passes.grad_weight.describe(),
    }


def describe_multipliers(cfg: ResolvedTrainConfig) -> dict[str, dict[str, Any]]:
    """The ``multipliers`` record of a run: each pass's multiplier described. A quantized
    run's forward is its integer multiplier; its backward passes are named ``"ste"`` or
    ``"lut"`` (the gradient tables of that multiplier, with its fingerprint)."""
    mult = cfg.int_multiplier
    if mult is None:
        return describe_passes(cfg.passes())
    backward = multiplier_fingerprints(cfg)["grad_input"]
    return {"forward": mult.describe(), "grad_input": backward, "grad_weight": dict(backward)}


def multiplier_fingerprints(cfg: ResolvedTrainConfig) -> dict[str, dict[str, str]]:
    """Name and fingerprint of each pass's multiplier (what a resumed run must match)."""
    mult = cfg.int_multiplier
    if mult is None:
        passes = cfg.passes()
        return {
            role: {
                "name": getattr(passes, role).name,
                "fingerprint": getattr(passes, role).fingerprint,
            }
            for role in _ROLES
        }
    # The ste backward is exact float arithmetic: nothing of the table's reaches it.
    grad = cfg.grad or "ste"
    backward = {"name": grad, "fingerprint": mult.fingerprint if grad == "lut" else grad}
    return {
        "forward": {"name": mult.name, "fingerprint": mult.fingerprint},
        "grad_input": dict(backward),
        "grad_weight": dict(backward),
    }


def quantize_model(
    model: nn.Module, cfg: ResolvedTrainConfig, name: str
) -> tuple[nn.Module, list[dict[str, str]]]:
    """Convert a plain model to quantized layers with the run's integer multiplier.

    Args:
        model: The plain (unconverted) model.
        cfg: The run's settings (``cfg.int_multiplier`` set).
        name: The model's registered name, for messages.

    Returns:
        ``(model, converted)`` as :func:`build_model`.

    Raises:
        QuantError: the quantization settings do not fit the multiplier.
        TrainError: the patterns select no layer.
    """
    from approxsim.convert import convert_model
    from approxsim.nn.quant_layers import QuantModule

    mult = cfg.int_multiplier
    if mult is None:
        raise TrainError("quantize_model needs a run with an integer multiplier")
    quant = cfg.quant()
    scheme = quant.resolve(mult)
    model = convert_model(
        model,
        mult,
        quant=quant,
        include=cfg.include,
        exclude=cfg.exclude,
        inplace=True,
    )
    converted = [
        {"name": n, "type": type(m).__name__, "multiplier": scheme.describe()}
        for n, m in model.named_modules()
        if isinstance(m, QuantModule)
    ]
    if not converted:
        raise TrainError(
            f"include={list(cfg.include or [])} / exclude={list(cfg.exclude or [])} select no "
            f"layer of {name!r}, so nothing would be quantized; layer names: "
            + ", ".join(n for n, _ in model.named_modules() if n)
        )
    return model, converted
