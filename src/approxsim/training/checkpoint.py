"""The checkpoint format (write, read, verify) and :func:`load_trained`, the one way from a
checkpoint to a ready model.

``checkpoint.pt`` is a magic line, the SHA-256 of the payload and the payload
(``torch.save`` of the state: ``format``, ``epoch``, ``model``, ``optimizer``, ``scheduler``,
``rng``, ``config``, ``multipliers``, ``history``). It is replaced atomically after every
epoch, so a killed run loses at most the epoch in progress, and read with
``torch.load(weights_only=True)``, so a checkpoint cannot run code.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from approxsim._io import atomic_write_bytes
from approxsim._runtime import resolve_device, rng_state
from approxsim.data import ImageDataset
from approxsim.multipliers import Multiplier
from approxsim.ops import PassMultipliers
from approxsim.training.build import build_model, load_data
from approxsim.training.config import ResolvedTrainConfig, patterns
from approxsim.training.errors import CheckpointError, TrainError
from approxsim.training.rundir import CHECKPOINT_FILE

__all__ = [
    "CHECKPOINT_FORMAT",
    "save_checkpoint",
    "load_checkpoint",
    "checkpoint_state",
    "check_resumable",
    "TrainedModel",
    "load_trained",
]

CHECKPOINT_FORMAT = "approxsim.train.checkpoint/1"
_CHECKPOINT_MAGIC = b"APPROXSIM-CHECKPOINT/1\n"
_DIGEST_LEN = 64  # hex SHA-256


# ---------------------------------------------------------------------------- the file
def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write a checkpoint atomically: a temporary file in the same folder, then a rename.

    The file is a magic line, the SHA-256 of the payload and the payload (``torch.save`` of
    ``state``); an interruption at any moment leaves either the old file or the new one.

    Args:
        path: Destination file.
        state: Tensors, numbers, strings, lists, tuples and dicts.

    Returns:
        The path written.
    """
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    digest = hashlib.sha256(payload).hexdigest().encode("ascii")
    return atomic_write_bytes(path, _CHECKPOINT_MAGIC + digest + b"\n" + payload)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and verify a checkpoint written by :func:`~approxsim.training.train` (or
    :func:`save_checkpoint`).

    Loading uses ``torch.load(weights_only=True)``: a checkpoint cannot run code.

    Args:
        path: The checkpoint file (or a run folder holding ``checkpoint.pt``).

    Returns:
        The state dict (``model``, ``optimizer``, ``scheduler``, ``rng``, ``epoch``,
        ``config``, ``multipliers``, ``history``).

    Raises:
        CheckpointError: the file is missing, truncated, modified or not a checkpoint.
    """
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT_FILE
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {p}") from None
    head = len(_CHECKPOINT_MAGIC)
    if not raw.startswith(_CHECKPOINT_MAGIC):
        raise CheckpointError(
            f"{p} is not an approxsim training checkpoint (or its header is damaged); "
            "checkpoints are written by approxsim train"
        )
    digest = raw[head : head + _DIGEST_LEN]
    payload = raw[head + _DIGEST_LEN + 1 :]
    if hashlib.sha256(payload).hexdigest().encode("ascii") != digest:
        raise CheckpointError(
            f"{p} is damaged: its checksum does not match its contents (the file was "
            "truncated or modified). Restore it from a copy, or start the run over with "
            "--overwrite (overwrite=True)"
        )
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise CheckpointError(f"{p} could not be read as a checkpoint: {exc}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{p} is not an approxsim training checkpoint")
    return state


# ---------------------------------------------------------------------------- training state
def _fingerprints(passes: PassMultipliers) -> dict[str, dict[str, str]]:
    return {
        role: {"name": m.name, "fingerprint": m.fingerprint}
        for role, m in (
            ("forward", passes.forward),
            ("grad_input", passes.grad_input),
            ("grad_weight", passes.grad_weight),
        )
    }


def checkpoint_state(
    cfg: ResolvedTrainConfig,
    epoch: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    history: list[dict[str, Any]],
) -> dict[str, Any]:
    """What ``checkpoint.pt`` holds after ``epoch``.

    Args:
        cfg: The run's settings.
        epoch: The last complete epoch.
        model: The model, unwrapped (no DDP prefix in its state dict).
        optimizer: Its optimizer.
        scheduler: Its learning-rate schedule, if any.
        history: Every epoch's record so far.

    Returns:
        The state to pass to :func:`save_checkpoint` (RNG states captured now).
    """
    return {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": rng_state(),
        "config": cfg.to_dict(),
        "multipliers": _fingerprints(cfg.passes()),
        "history": history,
    }


#: Settings that must match between a checkpoint and a resumed run.
_RESUME_KEYS = (
    "model",
    "dataset",
    "batch_size",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "schedule",
    "seed",
    "max_train_samples",
    "max_test_samples",
    "include",
    "exclude",
)


def check_resumable(state: dict[str, Any], cfg: ResolvedTrainConfig, out: Path) -> None:
    """Check that the run in ``out`` (its checkpoint ``state``) may continue with ``cfg``.

    Raises:
        TrainError: a setting or a multiplier differs (the message lists them all).
    """
    saved = state["config"]
    now = cfg.to_dict()
    diffs = [
        f"{k}={saved.get(k)!r} (now {now[k]!r})" for k in _RESUME_KEYS if saved.get(k) != now[k]
    ]
    passes = cfg.passes()
    for role, current in _fingerprints(passes).items():
        old = state["multipliers"][role]
        if old["fingerprint"] != current["fingerprint"]:
            same = " (same name, different LUT)" if current["name"] == old["name"] else ""
            diffs.append(f"{role} multiplier {old['name']} (now {current['name']}{same})")
    if saved["epochs"] != cfg.epochs and cfg.schedule == "cosine":
        diffs.append(f"epochs={saved['epochs']} (now {cfg.epochs}; the cosine schedule spans it)")
    if diffs:
        raise TrainError(
            f"cannot resume the run in {out}: it was trained with " + "; ".join(diffs) + ". "
            "Pass the same settings, or start over with --overwrite (overwrite=True)"
        )


# ---------------------------------------------------------------------------- trained models
@dataclass(frozen=True)
class TrainedModel:
    """A trained checkpoint made ready to run: verified, converted, weights loaded.

    Attributes:
        path: The checkpoint file.
        state: The verified checkpoint (:func:`load_checkpoint`).
        config: The settings the run was trained with (``state["config"]``).
        model_name: The registered model name.
        epoch: The last complete epoch of the run.
        dataset: The dataset the model runs on (the training one unless another was named).
        data_dir: That dataset's folder (``None``: its default folders).
        passes: The multipliers of the model's converted layers.
        model: The model, converted with ``passes``, weights loaded, on the device, in eval
            mode.
        test: The test split of ``dataset``.
    """

    path: Path
    state: dict[str, Any]
    config: dict[str, Any]
    model_name: str
    epoch: int
    dataset: str
    data_dir: str | None
    passes: PassMultipliers
    model: nn.Module
    test: ImageDataset

    def split(self, name: str) -> ImageDataset:
        """The ``"test"`` or ``"train"`` split of :attr:`dataset` (all its samples).

        Raises:
            TrainError: another split name.
            DatasetError: the split's files are missing.
        """
        if name == "test":
            return self.test
        if name != "train":
            raise TrainError(f"split must be 'test' or 'train', got {name!r}")
        return load_data(self.dataset, self.data_dir, "train", None)


def load_trained(
    checkpoint: str | os.PathLike[str],
    multiplier: Multiplier | PassMultipliers | None = None,
    *,
    dataset: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
) -> TrainedModel:
    """Load a trained checkpoint as a model running on ``multiplier``, with its test data.

    ``approxsim eval`` and ``approxsim cim`` load through this function.

    Args:
        checkpoint: A ``checkpoint.pt`` written by :func:`~approxsim.training.train`, or
            its run folder.
        multiplier: The multiplier of every converted layer (or one per pass); a name works
            too. ``None``: exact float32 with no layer converted (as ``approxsim cim`` does
            when no multiplier is named) -- not the multiplier the run trained with, which
            the caller reads from ``state["multipliers"]`` when it wants it.
        dataset: Dataset name; ``None``: the training dataset.
        data_dir: Dataset folder; ``None``: the training run's folder when ``dataset`` is
            the training one, else the dataset's default folders.
        include: Layers to convert (fnmatch patterns); ``None``: the training run's.
        exclude: Layers to keep exact; ``None``: the training run's.
        device: Where the model runs (``"cpu"``, ``"cuda"``, ``"cuda:N"``).

    Returns:
        The :class:`TrainedModel`.

    Raises:
        CheckpointError: a missing or damaged checkpoint, or weights that do not fit the
            model built for the dataset.
        TrainError: bad patterns or device, or a model that does not take the data.
        DatasetError, MultiplierError: data or multiplier problems.
    """
    state = load_checkpoint(checkpoint)
    path = Path(checkpoint)
    path = path / CHECKPOINT_FILE if path.is_dir() else path
    saved = state["config"]
    if isinstance(multiplier, PassMultipliers):
        passes = multiplier
    else:
        passes = PassMultipliers("fp32" if multiplier is None else multiplier)
    ds_name = dataset or saved["dataset"]
    if data_dir is None and dataset in (None, saved["dataset"]):
        data_dir = saved.get("data_dir")
    inc = patterns("include", include) if include is not None else saved.get("include")
    exc = patterns("exclude", exclude) if exclude is not None else saved.get("exclude")
    dev = resolve_device(device, error=TrainError)
    test = load_data(ds_name, data_dir, "test", None)
    model, _ = build_model(saved["model"], test.num_classes, test.sample_shape, passes, inc, exc)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise CheckpointError(
            f"{checkpoint}: its weights do not fit model {saved['model']!r} with "
            f"{test.num_classes} classes: {err}"
        ) from None
    return TrainedModel(
        path=path,
        state=state,
        config=saved,
        model_name=saved["model"],
        epoch=int(state["epoch"]),
        dataset=ds_name,
        data_dir=None if data_dir is None else str(data_dir),
        passes=passes,
        model=model.to(dev).eval(),
        test=test,
    )
