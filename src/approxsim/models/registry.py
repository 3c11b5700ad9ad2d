"""A timm-style model registry: ``register_model``, ``list_models``, ``create_model``.

Each entry is a factory ``f(num_classes) -> nn.Module`` plus the training defaults its model
was tuned with (optimizer, learning rate, momentum, batch size), which
:func:`approxsim.experiments.train.train` uses for every setting the user leaves out.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

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

Factory = Callable[[int], nn.Module]


class ModelError(ValueError):
    """A model could not be created as asked; the message says what to change."""


class UnknownModelError(ModelError, KeyError):
    """No model of that name is registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class TrainDefaults:
    """Training settings a model is known to train well with.

    Attributes:
        optimizer: ``"sgd"`` (with momentum) or ``"adam"``.
        lr: Learning rate.
        momentum: SGD momentum (ignored by Adam).
        batch_size: Samples per step.
    """

    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    batch_size: int = 128


@dataclass(frozen=True)
class _Entry:
    factory: Factory
    defaults: TrainDefaults
    input_shape: tuple[int, int, int]
    description: str


_REGISTRY: dict[str, _Entry] = {}


def register_model(
    name: str,
    *,
    defaults: TrainDefaults | None = None,
    input_shape: tuple[int, int, int] = (1, 28, 28),
    description: str = "",
) -> Callable[[Factory], Factory]:
    """Decorator registering a model factory ``f(num_classes) -> nn.Module`` under ``name``.

    Args:
        name: Registry name (letters, digits, ``_.-``).
        defaults: Training defaults for the model (default: :class:`TrainDefaults`).
        input_shape: ``(C, H, W)`` of the images the model takes.
        description: One line shown by ``list_models`` users.

    Raises:
        ModelError: a bad or already registered name.

    Example::

        @register_model("tiny_mlp")
        def tiny_mlp(num_classes: int) -> nn.Module:
            return nn.Sequential(nn.Flatten(), nn.Linear(784, num_classes))
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
        raise ModelError(f"model names use letters, digits and _.- only, got {name!r}")

    def decorator(factory: Factory) -> Factory:
        if name in _REGISTRY:
            raise ModelError(f"a model named {name!r} is already registered")
        c, h, w = input_shape
        _REGISTRY[name] = _Entry(factory, defaults or TrainDefaults(), (c, h, w), description)
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


def create_model(name: str, num_classes: int = 10) -> nn.Module:
    """Build a registered model with freshly initialized weights (from torch's global RNG).

    Args:
        name: A name from :func:`list_models`.
        num_classes: Outputs of the final layer.

    Returns:
        The model, in training mode, on the CPU.

    Raises:
        UnknownModelError: no such model (the message lists the valid names).
        ModelError: ``num_classes`` is not a positive integer.
    """
    entry = _entry(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ModelError(f"num_classes must be a positive integer, got {num_classes!r}")
    return entry.factory(num_classes)


def train_defaults(name: str) -> TrainDefaults:
    """The training defaults registered with a model.

    Raises:
        UnknownModelError: no such model.
    """
    return _entry(name).defaults


def model_info(name: str) -> dict[str, Any]:
    """Name, description, input shape and training defaults of a registered model.

    Raises:
        UnknownModelError: no such model.
    """
    e = _entry(name)
    return {
        "name": name,
        "description": e.description,
        "input_shape": list(e.input_shape),
        "train_defaults": asdict(e.defaults),
    }
