"""The old home of the training engine, kept so existing imports work.

Everything here now lives in :mod:`approxsim.training` (config, run folder, checkpoint,
processes, loop), :mod:`approxsim._runtime` (threads, devices, progress) and
:mod:`approxsim.cli.train` (``approxsim train`` / ``approxsim eval``); new code should import
from there. The command-line names are loaded on first use, so importing this module does not
import the command line.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import torch

from approxsim import _runtime
from approxsim._runtime import Progress, thread_settings
from approxsim.multipliers import MultiplierLike
from approxsim.training import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    METRICS_FILE,
    OPTIMIZERS,
    SCHEDULES,
    CheckpointError,
    ResolvedTrainConfig,
    TrainConfig,
    TrainedModel,
    TrainError,
    TrainExtension,
    build_model,
    evaluate,
    load_checkpoint,
    load_data,
    load_trained,
    save_checkpoint,
    train,
)
from approxsim.training.loop import EVAL_SCHEMA
from approxsim.training.rundir import CONFIG_SCHEMA

if TYPE_CHECKING:  # loaded by __getattr__ at run time
    from approxsim.cli.common import add_multiplier_arguments, multiplier_from_args
    from approxsim.cli.train import add_eval_parser, add_train_parser, run_eval_cli, run_train_cli

#: The old name of :data:`approxsim.multipliers.MultiplierLike`.
MultiplierArg = MultiplierLike

__all__ = [
    "TrainError",
    "CheckpointError",
    "TrainConfig",
    "train",
    "evaluate",
    "load_checkpoint",
    "save_checkpoint",
    "CONFIG_FILE",
    "METRICS_FILE",
    "CHECKPOINT_FILE",
    "add_multiplier_arguments",
    "multiplier_from_args",
    "add_train_parser",
    "run_train_cli",
    "add_eval_parser",
    "run_eval_cli",
    "Progress",
    "thread_settings",
    "resolve_device",
    "load_data",
    "build_model",
]

# Also importable from here as before (not in __all__ then either).
_ALSO = (
    CONFIG_SCHEMA,
    EVAL_SCHEMA,
    OPTIMIZERS,
    SCHEDULES,
    MultiplierArg,
    ResolvedTrainConfig,
    TrainExtension,
    TrainedModel,
    load_trained,
)

#: Command-line names, imported from their module on first access.
_LAZY = {
    "add_multiplier_arguments": "approxsim.cli.common",
    "multiplier_from_args": "approxsim.cli.common",
    "add_train_parser": "approxsim.cli.train",
    "run_train_cli": "approxsim.cli.train",
    "add_eval_parser": "approxsim.cli.train",
    "run_eval_cli": "approxsim.cli.train",
}


def resolve_device(name: str) -> torch.device:
    """The torch device named ``name``, checked to be usable
    (:func:`approxsim._runtime.resolve_device`, raising :class:`TrainError` as before).

    Raises:
        TrainError: not a CPU or CUDA device, or CUDA was asked for and is not available.
    """
    return _runtime.resolve_device(name, error=TrainError)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
