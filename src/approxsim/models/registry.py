"""A timm-style model registry: ``register_model``, ``list_models``, ``create_model``.

Each entry is a factory ``f(num_classes) -> nn.Module`` (optionally also taking an
``in_channels`` keyword, for models whose first layer adapts to the images' channel count)
plus the training defaults its model was tuned with (optimizer, learning rate, momentum,
weight decay, schedule, batch size), which :func:`approxsim.training.train` uses for
settings the user leaves out.
"""

from __future__ import annotations

import fnmatch
import inspect
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from torch import nn

from approxsim.errors import ApproxsimError

__all__ = [
    "ModelError",
    "UnknownModelError",
    "TrainDefaults",
    "register_model",
    "list_models",
    "create_model",
    "model_info",
    "train_defaults",
    "unregister_model",
]

#: ``f(num_classes) -> nn.Module``, or ``f(num_classes, in_channels=...) -> nn.Module``.
Factory = Callable[..., nn.Module]
_F = TypeVar("_F", bound=Factory)

_OPTIMIZERS = ("sgd", "adam")
_SCHEDULES = ("none", "cosine")


class ModelError(ApproxsimError, ValueError):
    """A model could not be created as asked; the message says what to change."""


class UnknownModelError(ModelError, KeyError):
    """No model of that name is registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def _is_finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class TrainDefaults:
    """Training settings a model is known to train well with (validated on construction).

    Raises:
        ModelError: a value out of range (the message names the field).
    """

    optimizer: str = "sgd"
    """``"sgd"`` (with momentum) or ``"adam"``."""

    lr: float = 0.05
    """Initial learning rate (> 0)."""

    momentum: float = 0.9
    """SGD momentum in [0, 1) (ignored by Adam)."""

    batch_size: int = 128
    """Samples per step (>= 1)."""

    weight_decay: float = 0.0
    """L2 penalty added by the optimizer (>= 0)."""

    schedule: str = "none"
    """Learning-rate schedule: ``"none"`` (constant) or ``"cosine"`` (annealing to 0 over the
    run's epochs)."""

    def __post_init__(self) -> None:
        if self.optimizer not in _OPTIMIZERS:
            raise ModelError(f"optimizer must be one of {_OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in _SCHEDULES:
            raise ModelError(f"schedule must be one of {_SCHEDULES}, got {self.schedule!r}")
        if not (_is_finite(self.lr) and self.lr > 0):
            raise ModelError(f"lr must be a finite number > 0, got {self.lr!r}")
        if not (_is_finite(self.momentum) and 0 <= self.momentum < 1):
            raise ModelError(f"momentum must be a finite number in [0, 1), got {self.momentum!r}")
        if not (_is_finite(self.weight_decay) and self.weight_decay >= 0):
            raise ModelError(
                f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}"
            )
        if (
            isinstance(self.batch_size, bool)
            or not isinstance(self.batch_size, int)
            or self.batch_size < 1
        ):
            raise ModelError(f"batch_size must be a positive integer, got {self.batch_size!r}")


@dataclass(frozen=True)
class _Entry:
    factory: Factory
    defaults: TrainDefaults
    input_shape: tuple[int, int, int]
    description: str
    any_in_channels: bool  # the factory takes an ``in_channels`` keyword
    any_image_size: bool


def _takes_in_channels(factory: Factory) -> bool:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        return False
    p = params.get("in_channels")
    return p is not None and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)


_REGISTRY: dict[str, _Entry] = {}


def register_model(
    name: str,
    *,
    defaults: TrainDefaults | None = None,
    input_shape: tuple[int, int, int] = (1, 28, 28),
    description: str = "",
    any_image_size: bool = False,
) -> Callable[[_F], _F]:
    """Decorator registering a model factory ``f(num_classes) -> nn.Module`` under ``name``.

    A factory that also takes an ``in_channels`` keyword builds models for images with any
    channel count (:func:`create_model` passes it on); one without it takes
    ``input_shape[0]`` channels only.

    Args:
        name: Registry name (letters, digits, ``_.-``).
        defaults: Training defaults for the model (default: :class:`TrainDefaults`).
        input_shape: ``(C, H, W)`` of the images the model is designed for (and the only
            shape it takes unless the factory has ``in_channels`` / ``any_image_size`` is set).
        description: One line shown by ``list_models`` users.
        any_image_size: The model takes images of any height and width (e.g. it pools
            globally before its classifier), not only ``input_shape[1:]``.

    Raises:
        ModelError: a bad or already registered name.

    Example::

        @register_model("tiny_mlp")
        def tiny_mlp(num_classes: int) -> nn.Module:
            return nn.Sequential(nn.Flatten(), nn.Linear(784, num_classes))
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
        raise ModelError(f"model names use letters, digits and _.- only, got {name!r}")

    def decorator(factory: _F) -> _F:
        if name in _REGISTRY:
            raise ModelError(f"a model named {name!r} is already registered")
        c, h, w = input_shape
        _REGISTRY[name] = _Entry(
            factory,
            defaults or TrainDefaults(),
            (c, h, w),
            description,
            _takes_in_channels(factory),
            bool(any_image_size),
        )
        return factory

    return decorator


def unregister_model(name: str) -> None:
    """Remove a registered model (for tests and interactive sessions); no error if absent."""
    _REGISTRY.pop(name, None)


def list_models(pattern: str = "*") -> list[str]:
    """Names of the registered models matching a shell pattern (``"lenet*"``), sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def _entry(name: str) -> _Entry:
    entry = _REGISTRY.get(name) if isinstance(name, str) else None
    if entry is None:
        raise UnknownModelError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return entry


def create_model(name: str, num_classes: int = 10, in_channels: int | None = None) -> nn.Module:
    """Build a registered model with freshly initialized weights (from torch's global RNG).

    Args:
        name: A name from :func:`list_models`.
        num_classes: Outputs of the final layer.
        in_channels: Channels of the input images (1 for Fashion-MNIST, 3 for CIFAR);
            ``None``: the model's registered ``input_shape[0]``. Models whose factory has
            no ``in_channels`` parameter (the LeNets) accept only their registered count.

    Returns:
        The model, in training mode, on the CPU.

    Raises:
        UnknownModelError: no such model (the message lists the valid names).
        ModelError: ``num_classes`` or ``in_channels`` is not a positive integer, or the
            model cannot take ``in_channels`` channels.
    """
    entry = _entry(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ModelError(f"num_classes must be a positive integer, got {num_classes!r}")
    if in_channels is None:
        return entry.factory(num_classes)
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ModelError(f"in_channels must be a positive integer or None, got {in_channels!r}")
    if entry.any_in_channels:
        return entry.factory(num_classes, in_channels=in_channels)
    if in_channels != entry.input_shape[0]:
        raise ModelError(
            f"model {name!r} takes {entry.input_shape[0]}-channel images only, not "
            f"{in_channels}; pick a model that adapts its first layer (e.g. list_models('resnet*'))"
        )
    return entry.factory(num_classes)


def train_defaults(name: str) -> TrainDefaults:
    """The training defaults registered with a model.

    Raises:
        UnknownModelError: no such model.
    """
    return _entry(name).defaults


def model_info(name: str) -> dict[str, Any]:
    """Name, description, input shape, input flexibility and training defaults of a model.

    ``any_in_channels``: :func:`create_model` takes any ``in_channels``; ``any_image_size``:
    the model takes any height and width, not only ``input_shape[1:]``.

    Raises:
        UnknownModelError: no such model.
    """
    e = _entry(name)
    return {
        "name": name,
        "description": e.description,
        "input_shape": list(e.input_shape),
        "any_in_channels": e.any_in_channels,
        "any_image_size": e.any_image_size,
        "train_defaults": asdict(e.defaults),
    }
