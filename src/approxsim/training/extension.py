"""Hooks through which another training method runs on :func:`~approxsim.training.train`'s
machinery (the run folder, checkpoints, resume, progress and data order stay the same)."""

from __future__ import annotations

import contextlib
from typing import Any

from torch import Tensor, nn

from approxsim.data import ImageDataset
from approxsim.training.config import ResolvedTrainConfig

__all__ = ["TrainExtension"]


class TrainExtension:
    """Hooks through which another training method runs on :func:`~approxsim.training.train`.

    :func:`approxsim.cim.train_cim` is one: the run folder, checkpoints, resume, progress
    and data order stay those of ``approxsim train``, while the extension stores its settings
    in a section of ``config.json`` and ``checkpoint.pt`` (a resumed run must have the same),
    wraps each training forward pass, and adds fields to every epoch's record. Extensions run
    in a single process only. Every hook defaults to doing nothing.
    """

    #: Key of the extension's section in ``config.json`` and ``checkpoint.pt``.
    section: str = "extension"
    #: How messages name the settings (e.g. ``"CIM"``).
    label: str = "extension"

    def settings(self) -> dict[str, Any]:
        """What the checkpoint records (and a resumed run must match)."""
        return {}

    def attach(self, model: nn.Module) -> dict[str, Any]:
        """Called once the model is built; returns extra fields for ``config.json``."""
        return {}

    def start_message(
        self, cfg: ResolvedTrainConfig, train_size: int, test_size: int
    ) -> str | None:
        """The line announcing a fresh run (``None``: ``approxsim train``'s)."""
        return None

    def forward(
        self, model: nn.Module, x: Tensor, y: Tensor
    ) -> contextlib.AbstractContextManager[object]:
        """A context around the training forward pass of one batch."""
        return contextlib.nullcontext()

    def epoch_metrics(
        self, model: nn.Module, test_set: ImageDataset, batch_size: int
    ) -> dict[str, Any]:
        """Fields added to the epoch's record after ``test_acc``."""
        return {}

    def epoch_suffix(self, record: dict[str, Any]) -> str:
        """Text appended to the epoch's progress line."""
        return ""
