"""The checkpoint format (write, read, verify) and :func:`load_trained`, the one way from a
checkpoint to a ready model.

``checkpoint.pt`` is a magic line, the SHA-256 of the payload and the payload
(``torch.save`` of the state: ``format``, ``epoch``, ``model``, ``optimizer``, ``scheduler``,
``rng``, ``config``, ``multipliers``, ``history``). It is replaced atomically after every
epoch, so a killed run loses at most the epoch in progress, and read with
``torch.load(weights_only=True)``, so a checkpoint cannot run code.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from approxsim._io import SealError, atomic_write_bytes, seal, unseal
from approxsim._runtime import resolve_device, rng_state, set_rng_state
from approxsim.data import ImageDataset
from approxsim.multipliers import Multiplier
from approxsim.ops import PassMultipliers
from approxsim.training.build import build_model, load_data, multiplier_fingerprints
from approxsim.training.config import ResolvedTrainConfig, patterns
from approxsim.training.errors import CheckpointError, TrainError
from approxsim.training.rundir import CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE

__all__ = [
    "CHECKPOINT_FORMAT",
    "save_checkpoint",
    "load_checkpoint",
    "checkpoint_state",
    "check_resumable",
    "check_restartable",
    "restore_training_state",
    "TrainedModel",
    "load_trained",
]

CHECKPOINT_FORMAT = "approxsim.train.checkpoint/1"
_CHECKPOINT_MAGIC = b"APPROXSIM-CHECKPOINT/1\n"


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
    return atomic_write_bytes(path, seal(_CHECKPOINT_MAGIC, buf.getvalue()))


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
    try:
        payload = unseal(raw, _CHECKPOINT_MAGIC, str(p))
    except SealError as err:
        if err.args[1] == "header":
            raise CheckpointError(
                f"{p} is not an approxsim training checkpoint (or its header is damaged); "
                "checkpoints are written by approxsim train"
            ) from None
        raise CheckpointError(
            f"{p} is damaged: its checksum does not match its contents (the file was "
            "truncated or modified). Restore it from a copy, or start the run over with "
            "--overwrite (overwrite=True)"
        ) from None
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise CheckpointError(f"{p} could not be read as a checkpoint: {exc}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{p} is not an approxsim training checkpoint")
    _upgrade(state)
    problems = _content_problems(state)
    if problems:
        # A valid checksum only says the file is as written; what was written may still be
        # wrong (another tool, an edited state), and training on it would fail much later.
        raise CheckpointError(
            f"{p} has a valid checksum but wrong contents ({'; '.join(problems)}); it was not "
            "written by approxsim train or was edited. Restore it from a copy, or start the "
            "run over with --overwrite (overwrite=True)"
        )
    return state


_ROLES = ("forward", "grad_input", "grad_weight")
_STATE_KEYS = (
    "epoch",
    "model",
    "optimizer",
    "scheduler",
    "rng",
    "config",
    "multipliers",
    "history",
)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _content_problems(state: dict[str, Any]) -> list[str]:
    """What is wrong with a checkpoint's state (empty when nothing is): the keys, their
    types and the epoch numbers. Tensor shapes are checked against the model on restore."""
    missing = [k for k in _STATE_KEYS if k not in state]
    if missing:
        return [f"no {', '.join(missing)}"]
    problems: list[str] = []
    epoch, model, config = state["epoch"], state["model"], state["config"]
    if not _is_int(epoch) or epoch < 1:
        problems.append(f"epoch {epoch!r} is not a whole number >= 1")
    if not isinstance(model, Mapping) or not model:
        problems.append("model is not a state dict")
    elif not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items()):
        problems.append("model holds entries that are not named tensors")
    optimizer = state["optimizer"]
    if not isinstance(optimizer, Mapping) or not {"state", "param_groups"} <= set(optimizer):
        problems.append("optimizer is not an optimizer state dict")
    if state["scheduler"] is not None and not isinstance(state["scheduler"], Mapping):
        problems.append("scheduler is neither None nor a state dict")
    if not isinstance(state["rng"], Mapping) or not {"python", "numpy", "torch"} <= set(
        state["rng"]
    ):
        problems.append("rng does not hold the python, numpy and torch generator states")
    problems += _config_problems(config, epoch)
    problems += _multiplier_problems(state["multipliers"])
    history = state["history"]
    if not isinstance(history, list) or not all(isinstance(r, Mapping) for r in history):
        problems.append("history is not a list of epoch records")
    elif _is_int(epoch) and [r.get("epoch") for r in history] != list(range(1, epoch + 1)):
        problems.append(f"history does not hold the records of epochs 1 to {epoch}")
    return problems


#: Settings added to the config after the checkpoint format was first released, with the value
#: a run made before them had. A checkpoint without them is from an earlier approxsim, not a
#: damaged one: it is read as such, so old runs can still be evaluated, resumed and fine-tuned.
_LATER_SETTINGS: dict[str, Any] = {
    "allow_nonfinite": False,
    "grad": None,
    "quant_bits": None,
    "weight_granularity": None,
    "calibration": None,
    "quant_mapping": None,
    "init_from": None,
    "lut_step": None,
}


def _upgrade(state: dict[str, Any]) -> None:
    """Fill the settings an older checkpoint predates with the values they stood for."""
    config = state.get("config")
    if isinstance(config, dict):
        for key, value in _LATER_SETTINGS.items():
            config.setdefault(key, value)


def _config_problems(config: Any, epoch: Any) -> list[str]:
    """What is wrong with a checkpoint's ``config`` section (the settings of the run)."""
    if not isinstance(config, Mapping):
        return ["config is not a dict"]
    lacking = [k for k in (*_RESUME_KEYS, "epochs") if k not in config]
    if lacking:
        return [f"config lacks {', '.join(lacking)}"]
    problems: list[str] = []
    if not (isinstance(config["model"], str) and isinstance(config["dataset"], str)):
        problems.append("config's model and dataset are not names")
    if not _is_int(config["epochs"]) or (_is_int(epoch) and config["epochs"] < epoch):
        problems.append(f"config's epochs {config['epochs']!r} is below epoch {epoch!r}")
    for key in ("include", "exclude"):
        value = config[key]
        if value is not None and not (
            isinstance(value, list) and all(isinstance(p, str) for p in value)
        ):
            problems.append(f"config's {key} {value!r} is not a list of layer patterns")
    if not isinstance(config.get("data_dir"), (str, type(None))):
        problems.append(f"config's data_dir {config['data_dir']!r} is not a folder")
    return problems


def _multiplier_problems(multipliers: Any) -> list[str]:
    if not isinstance(multipliers, Mapping) or not all(
        isinstance(multipliers.get(role), Mapping)
        and isinstance(multipliers[role].get("name"), str)
        and isinstance(multipliers[role].get("fingerprint"), str)
        for role in _ROLES
    ):
        return [f"multipliers does not name the {', '.join(_ROLES)} multipliers"]
    return []


# ---------------------------------------------------------------------------- training state
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
        "multipliers": multiplier_fingerprints(cfg),
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
    "quant_bits",
    "weight_granularity",
    "calibration",
    "quant_mapping",
    "lut_step",
)


def _differences(
    saved: Mapping[str, Any], multipliers: Mapping[str, Any], cfg: ResolvedTrainConfig
) -> list[str]:
    """The settings and multipliers of a run (as its files record them) that ``cfg``
    changes, one phrase each."""
    now = cfg.to_dict()
    diffs = [
        f"{k}={saved.get(k)!r} (now {now[k]!r})" for k in _RESUME_KEYS if saved.get(k) != now[k]
    ]
    for role, current in multiplier_fingerprints(cfg).items():
        old = multipliers[role]
        if old["fingerprint"] != current["fingerprint"]:
            same = " (same name, different LUT)" if current["name"] == old["name"] else ""
            diffs.append(f"{role} multiplier {old['name']} (now {current['name']}{same})")
    return diffs


def check_resumable(state: dict[str, Any], cfg: ResolvedTrainConfig, out: Path) -> None:
    """Check that the run in ``out`` (its checkpoint ``state``) may continue with ``cfg``.

    Args:
        state: The run's checkpoint (:func:`load_checkpoint`).
        cfg: The settings of the resumed run.
        out: The run folder, for messages.

    Raises:
        TrainError: a setting or a multiplier differs (the message lists them all).
    """
    saved = state["config"]
    diffs = _differences(saved, state["multipliers"], cfg)
    if saved["epochs"] != cfg.epochs and cfg.schedule == "cosine":
        diffs.append(f"epochs={saved['epochs']} (now {cfg.epochs}; the cosine schedule spans it)")
    if diffs:
        raise TrainError(
            f"cannot resume the run in {out}: it was trained with " + "; ".join(diffs) + ". "
            "Pass the same settings, or start over with --overwrite (overwrite=True)"
        )


def check_restartable(
    meta: dict[str, Any] | None,
    history: list[dict[str, Any]],
    cfg: ResolvedTrainConfig,
    out: Path,
    extension: tuple[str, Mapping[str, Any]] | None = None,
) -> None:
    """Check that ``resume`` may start the run in ``out`` afresh: the folder has run files
    but no checkpoint, so what it holds must be the start of this very run.

    Args:
        meta: The folder's ``config.json`` (``None``: absent or unreadable).
        history: The records of its ``metrics.jsonl``.
        cfg: The settings of the run being resumed.
        out: The run folder, for messages.
        extension: ``(section, settings)`` of a training extension, checked against
            ``meta``'s section of that name; ``None``: none.

    Raises:
        TrainError: ``metrics.jsonl`` holds finished epochs (no checkpoint can continue
            them), or ``config.json`` is unreadable or records other settings.
    """
    fix = "start the run over with --overwrite (overwrite=True), or choose another --out"
    if history:
        raise TrainError(
            f"cannot resume the run in {out}: its {METRICS_FILE} holds {len(history)} "
            f"finished epoch(s) but there is no {CHECKPOINT_FILE} to continue them from. "
            f"Restore {CHECKPOINT_FILE} from a copy, or {fix}"
        )
    if meta is None:
        if (out / CONFIG_FILE).exists():
            raise TrainError(
                f"cannot resume the run in {out}: its {CONFIG_FILE} is unreadable; {fix}"
            )
        return
    saved, multipliers = meta.get("config"), meta.get("multipliers")
    if (
        not isinstance(saved, Mapping)
        or not isinstance(multipliers, Mapping)
        or _multiplier_problems(multipliers)
    ):
        raise TrainError(
            f"cannot resume the run in {out}: its {CONFIG_FILE} was not written by approxsim "
            f"train; {fix}"
        )
    diffs = _differences(saved, multipliers, cfg)
    if extension is not None:
        section = extension[0]
        # config.json holds the settings as JSON (tuples as lists): compare them so.
        settings = json.loads(json.dumps(dict(extension[1]), default=str))
        recorded = meta.get(section)
        recorded = recorded if isinstance(recorded, Mapping) else {}
        diffs += [
            f"{section} {k}={recorded.get(k)!r} (now {v!r})"
            for k, v in settings.items()
            if recorded.get(k) != v
        ]
    if diffs:
        raise TrainError(
            f"cannot resume the run in {out}: it was started with " + "; ".join(diffs) + ". "
            f"Pass the same settings, or {fix}"
        )


def restore_training_state(
    state: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    path: Path,
) -> None:
    """Load a checkpoint's weights, optimizer, schedule and RNG states into a built run.

    Args:
        state: A checkpoint checked by :func:`load_checkpoint`.
        model: The run's model, built and converted as the checkpoint's settings say.
        optimizer: Its optimizer.
        scheduler: Its learning-rate schedule, if any.
        path: The checkpoint, for messages.

    Raises:
        CheckpointError: weights or optimizer state that do not fit the model (missing or
            unexpected entries, other shapes), or unusable schedule or RNG states.
    """
    what = "weights"
    try:
        model.load_state_dict(state["model"])
        what = "optimizer state"
        optimizer.load_state_dict(state["optimizer"])
        _check_optimizer_shapes(optimizer)
        what = "learning-rate schedule"
        if scheduler is not None:
            if state["scheduler"] is None:
                raise ValueError("the checkpoint has none")
            scheduler.load_state_dict(state["scheduler"])
        what = "random generator states"
        set_rng_state(state["rng"])
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as err:
        raise CheckpointError(
            f"{path}: its {what} do not fit the run ({str(err).splitlines()[0]}); the file was "
            "not written by approxsim train for these settings. Restore it from a copy, or "
            "start the run over with --overwrite (overwrite=True)"
        ) from None


def _check_optimizer_shapes(optimizer: torch.optim.Optimizer) -> None:
    # load_state_dict checks the number of parameters, not the shapes of their buffers; a
    # momentum buffer of another shape would fail in the first step instead.
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                if isinstance(value, torch.Tensor) and value.dim() and value.shape != param.shape:
                    raise ValueError(
                        f"{key} of shape {tuple(value.shape)} for a parameter of shape "
                        f"{tuple(param.shape)}"
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
    weights = state["model"]
    if not any("_observer." in k for k in model.state_dict()):
        # A quantization-aware run's activation ranges have no place in a float model.
        weights = {k: v for k, v in weights.items() if "_observer." not in k}
    try:
        model.load_state_dict(weights)
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
