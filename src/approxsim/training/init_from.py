"""Start a fresh run from another run's weights (``TrainConfig.init_from``,
``approxsim train --init-from RUN``): fine-tuning, float or quantization-aware.

Only the weights are taken: the optimizer state, the learning-rate schedule and the history
start afresh, so a fine-tuning run's schedule is the one it was given.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from approxsim.training.checkpoint import load_checkpoint
from approxsim.training.config import ResolvedTrainConfig
from approxsim.training.errors import TrainError

__all__ = ["load_init_weights", "without_observers"]


def without_observers(state_dict: dict[str, Any]) -> dict[str, Any]:
    """``state_dict`` without the buffers of quantized layers' range observers (so that the
    weights of a quantized run load into a plain or float-approximate model)."""
    return {k: v for k, v in state_dict.items() if "_observer." not in k}


def load_init_weights(model: nn.Module, cfg: ResolvedTrainConfig) -> bool:
    """Load the weights of ``cfg.init_from`` into ``model`` (before any quantization).

    ``model`` is the run's model as :func:`~approxsim.training.build.build_model` made it
    (plain or with float approximate layers, whose state_dict keys are torch's); the
    checkpoint may come from a float or a quantization-aware run (its range observers are
    left out: a quantized run calibrates its own).

    Args:
        model: The fresh run's model.
        cfg: The run's settings.

    Returns:
        Whether weights were loaded (``False`` when ``cfg.init_from`` is ``None``).

    Raises:
        TrainError: ``init_from`` trained another model, or its weights do not fit (another
            dataset or number of classes).
        CheckpointError: ``init_from`` is missing or damaged.
    """
    if cfg.init_from is None:
        return False
    state = load_checkpoint(cfg.init_from)
    theirs = state["config"]["model"]
    if theirs != cfg.model:
        raise TrainError(
            f"init_from {cfg.init_from} trained model {theirs!r}, this run trains "
            f"{cfg.model!r}; pass --model {theirs} or another run to start from"
        )
    try:
        model.load_state_dict(without_observers(state["model"]))
    except RuntimeError as err:
        raise TrainError(
            f"init_from {cfg.init_from}: its weights do not fit this run's {cfg.model!r} "
            f"(another dataset or number of classes?): {err}"
        ) from None
    return True
