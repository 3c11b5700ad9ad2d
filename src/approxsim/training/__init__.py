"""The training engine: train and evaluate models whose multiplies run on a simulated
approximate multiplier.

:func:`train` takes a frozen :class:`TrainConfig` and writes a run folder a person can read
(``config.json``, ``metrics.jsonl``, ``checkpoint.pt``); a killed or interrupted run loses at
most the epoch in progress and ``resume=True`` continues it. :func:`load_trained` turns a
checkpoint into a ready model (any multiplier, any dataset split); :func:`evaluate` runs its
test set. Under ``torchrun`` the processes train with DistributedDataParallel.

Modules, one concern each:

* :mod:`~approxsim.training.config` — :class:`TrainConfig` and :class:`ResolvedTrainConfig`;
* :mod:`~approxsim.training.rundir` — the run folder's files, writer and reader;
* :mod:`~approxsim.training.checkpoint` — the checkpoint format and :func:`load_trained`;
* :mod:`~approxsim.training.processes` — the multi-process layer and batch sharding;
* :mod:`~approxsim.training.build` — data, model and optimizer of a run;
* :mod:`~approxsim.training.loop` — :func:`train` and :func:`evaluate`;
* :mod:`~approxsim.training.quantized` — integer multipliers: post-training quantization of a
  checkpoint for :func:`evaluate`, and the quantized model of a quantization-aware run;
* :mod:`~approxsim.training.extension` — :class:`TrainExtension`, hooks for other methods;
* :mod:`~approxsim.training.compare` — tables comparing run folders.

Threads, devices, seeding, the environment record and progress bars are
:mod:`approxsim._runtime`'s.
"""

from __future__ import annotations

from approxsim.training.build import build_model, load_data
from approxsim.training.checkpoint import (
    TrainedModel,
    load_checkpoint,
    load_trained,
    save_checkpoint,
)
from approxsim.training.compare import (
    CompareError,
    Run,
    compare_runs,
    compare_seed_groups,
    format_comparison,
    format_seed_groups,
    load_run,
)
from approxsim.training.config import (
    OPTIMIZERS,
    SCHEDULES,
    CLIOption,
    ResolvedTrainConfig,
    TrainConfig,
)
from approxsim.training.errors import CheckpointError, DivergedError, PeerError, TrainError
from approxsim.training.extension import TrainExtension
from approxsim.training.loop import evaluate, train
from approxsim.training.rundir import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    METRICS_FILE,
    RunFolderError,
    read_metrics,
    read_run,
)

__all__ = [
    "TrainError",
    "CheckpointError",
    "DivergedError",
    "PeerError",
    "RunFolderError",
    "TrainConfig",
    "ResolvedTrainConfig",
    "CLIOption",
    "OPTIMIZERS",
    "SCHEDULES",
    "TrainExtension",
    "train",
    "evaluate",
    "TrainedModel",
    "load_trained",
    "load_checkpoint",
    "save_checkpoint",
    "load_data",
    "build_model",
    "CONFIG_FILE",
    "METRICS_FILE",
    "CHECKPOINT_FILE",
    "read_run",
    "read_metrics",
    "CompareError",
    "Run",
    "load_run",
    "compare_runs",
    "format_comparison",
    "compare_seed_groups",
    "format_seed_groups",
]
