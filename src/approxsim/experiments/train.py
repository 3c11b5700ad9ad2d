"""Train and evaluate models whose multiplies run on a simulated approximate multiplier.

:func:`train` takes a frozen :class:`TrainConfig` and writes a run folder a person can read:

* ``config.json`` — the resolved settings (per-model defaults filled in), the multipliers of
  the three passes with their fingerprints and provenance, the converted layers, the dataset
  and the software versions;
* ``metrics.jsonl`` — one JSON object per epoch (``epoch``, ``train_loss``, ``train_acc``,
  ``test_loss``, ``test_acc``, ``seconds``, ``lr``, ``samples_per_s``);
* ``checkpoint.pt`` — model, optimizer, scheduler and RNG states after the last complete
  epoch, replaced atomically (temporary file + ``os.replace``) and protected by a SHA-256
  checksum, so a killed or interrupted run loses at most the epoch in progress and
  ``resume=True`` continues it. On the CPU a resumed run gives the same numbers as an
  uninterrupted one: data order depends only on ``(seed, epoch)`` and every RNG is restored.

:func:`evaluate` runs a trained checkpoint's test set through any multiplier (approximate
inference of a model trained exactly, or the other way round).

Several processes: launched by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment), or with a
process group the caller has initialized, :func:`train` trains with
:class:`~torch.nn.parallel.DistributedDataParallel` (gloo on the CPU, NCCL on CUDA with one GPU
per process, ``cuda:LOCAL_RANK``). ``batch_size`` stays *global*: every optimizer step takes
the same samples as a single-process run with the same seed, split across the processes, and
the loss is weighted so that DDP's gradient average equals the single-process gradient. Epoch
metrics are summed over the processes; only rank 0 writes files and progress output.

Command line (wired in ``approxsim.cli``): ``approxsim train ...`` and ``approxsim eval ...``
through :func:`add_train_parser` / :func:`run_train_cli` and :func:`add_eval_parser` /
:func:`run_eval_cli`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import hashlib
import io
import itertools
import json
import math
import os
import platform
import random
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch import distributed as dist

from approxsim.cli.common import add_multiplier_arguments, int_at_least, multiplier_from_args
from approxsim.data import DatasetError, ImageDataset, dataset_info, load_dataset
from approxsim.errors import ApproxsimError
from approxsim.models import ModelError, create_model, model_info, train_defaults
from approxsim.multipliers import Multiplier, MultiplierError, get_multiplier
from approxsim.ops import PassMultipliers

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

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"
#: Files a run folder holds; ``overwrite`` deletes these and nothing else.
_RUN_FILES = (CONFIG_FILE, METRICS_FILE, CHECKPOINT_FILE)

CONFIG_SCHEMA = "approxsim.train.config/1"
EVAL_SCHEMA = "approxsim.eval/1"
_CHECKPOINT_FORMAT = "approxsim.train.checkpoint/1"
_CHECKPOINT_MAGIC = b"APPROXSIM-CHECKPOINT/1\n"
_DIGEST_LEN = 64  # hex SHA-256

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("none", "cosine")
#: Learning rate used when the optimizer differs from the model's default one and no lr is
#: given (the model's tuned lr belongs to its tuned optimizer).
_OPTIMIZER_LR = {"sgd": 0.05, "adam": 1e-3}
_SEED_LIMIT = 2**32

MultiplierArg = Multiplier | str


class TrainError(ApproxsimError, ValueError):
    """A training or evaluation setting that cannot run; the message says what to change."""


class CheckpointError(TrainError):
    """A checkpoint file is missing, damaged or not an approxsim checkpoint."""


# ---------------------------------------------------------------------------- config
def _check_int(name: str, value: Any, minimum: int, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise TrainError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_float(
    name: str, value: Any, *, positive: bool = False, upper: float | None = None
) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value > 0 if positive else value >= 0)
    ok = ok and (upper is None or value < upper)
    if not ok:
        bound = "> 0" if positive else ">= 0"
        if upper is not None:
            bound += f" and < {upper}"
        raise TrainError(f"{name} must be a finite number {bound}, got {value!r}")


def _check_multiplier(name: str, value: Any, *, optional: bool) -> None:
    if value is None and optional:
        return
    if isinstance(value, Multiplier):
        return
    if isinstance(value, str):
        get_multiplier(value)  # raises UnknownMultiplierError listing the names
        return
    raise TrainError(
        f"{name} must be an approxsim.Multiplier or a multiplier name, got {type(value).__name__}"
    )


def _patterns(name: str, value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = (value,) if isinstance(value, str) else tuple(value)
    if not items or not all(isinstance(p, str) and p for p in items):
        raise TrainError(
            f"{name} takes module name patterns such as 'features.*' (a string or a list of "
            f"them), got {value!r}"
        )
    return items


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (validated on construction).

    Settings left as ``None`` take the model's registered defaults
    (:func:`approxsim.models.train_defaults`); :meth:`resolve` fills them in.

    Raises:
        TrainError: an invalid value (the message names the field).
        UnknownModelError, UnknownDatasetError, UnknownMultiplierError: unknown names.
    """

    out_dir: str | os.PathLike[str]
    """Run folder for ``config.json``, ``metrics.jsonl`` and ``checkpoint.pt``. It must be
    empty or absent unless ``resume`` or ``overwrite`` is set."""

    model: str = "lenet5"
    """Registered model name (``approxsim.models.list_models()``)."""

    dataset: str = "fashion-mnist"
    """Registered dataset name (``approxsim.data.list_datasets()``)."""

    multiplier: MultiplierArg = "fp32"
    """Forward multiplier: a :class:`~approxsim.Multiplier` or a name (``"mitchell7"``;
    ``"fp32"`` trains with exact float32 and converts no layer)."""

    grad_input: MultiplierArg | None = None
    """Multiplier of the input-gradient GEMMs; ``None``: same as ``multiplier``."""

    grad_weight: MultiplierArg | None = None
    """Multiplier of the weight-gradient GEMMs; ``None``: same as ``multiplier``."""

    epochs: int = 5
    """Number of passes over the training set."""

    batch_size: int | None = None
    """Samples per optimizer step; ``None``: the model's default (128 for the LeNets). With
    several processes (torchrun) this is the global batch: each process computes its part
    (``batch_size / world_size``, rounded up or down), so results do not depend on the
    number of processes beyond floating-point summation order."""

    optimizer: str | None = None
    """``"sgd"`` (with momentum) or ``"adam"``; ``None``: the model's default."""

    lr: float | None = None
    """Initial learning rate; ``None``: the model's default for its default optimizer
    (0.05 for SGD on the LeNets), else 0.05 for SGD and 1e-3 for Adam."""

    momentum: float | None = None
    """SGD momentum in [0, 1); ``None``: the model's default (0.9). Unused by Adam."""

    weight_decay: float | None = None
    """L2 penalty added by the optimizer; ``None``: the model's default (0 for the LeNets,
    5e-4 for the CIFAR ResNets)."""

    schedule: str | None = None
    """Learning-rate schedule: ``"none"`` (constant) or ``"cosine"`` (cosine annealing to 0
    over ``epochs``, stepped once per epoch); ``None``: the model's default (none for the
    LeNets, cosine for the ResNets)."""

    seed: int = 0
    """Seeds Python, NumPy and torch (weights) and the data order (shuffle of epoch ``e``
    uses seed ``(seed, e)``), in [0, 2^32)."""

    data_dir: str | os.PathLike[str] | None = None
    """Folder holding the dataset files; ``None``: the dataset's default folders."""

    max_train_samples: int | None = None
    """Train on the first N training samples only (quick runs); ``None``: all."""

    max_test_samples: int | None = None
    """Evaluate on the first N test samples only; ``None``: all."""

    include: str | Sequence[str] | None = None
    """Convert only the layers whose qualified names match these fnmatch patterns (and
    everything inside them); ``None``: every linear and convolution layer."""

    exclude: str | Sequence[str] | None = None
    """Keep these layers exact (fnmatch patterns); wins over ``include``."""

    threads: int | None = None
    """CPU threads for torch and the Numba kernels during the run; ``None``: unchanged."""

    device: str = "cpu"
    """``"cpu"`` or ``"cuda[:N]"``. Resumed runs are bit-identical to uninterrupted ones on
    the CPU; on CUDA only up to the non-determinism of the GPU kernels."""

    resume: bool = False
    """Continue the run in ``out_dir`` from its checkpoint (settings must match; ``epochs``
    may grow unless the schedule is cosine). Starts afresh when there is no checkpoint."""

    overwrite: bool = False
    """Delete the run files in a non-empty ``out_dir`` and start over (other files in it are
    left alone)."""

    progress: bool = True
    """Show a progress bar per epoch and a summary line per epoch on stderr."""

    def __post_init__(self) -> None:
        if not isinstance(self.out_dir, (str, os.PathLike)) or not str(self.out_dir):
            raise TrainError(f"out_dir must be a folder path, got {self.out_dir!r}")
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        model_info(self.model)  # raises UnknownModelError listing the valid names
        dataset_info(self.dataset)  # raises UnknownDatasetError listing the valid names
        _check_multiplier("multiplier", self.multiplier, optional=False)
        _check_multiplier("grad_input", self.grad_input, optional=True)
        _check_multiplier("grad_weight", self.grad_weight, optional=True)
        _check_int("epochs", self.epochs, 1)
        _check_int("batch_size", self.batch_size, 1, optional=True)
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise TrainError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.lr is not None:
            _check_float("lr", self.lr, positive=True)
        if self.momentum is not None:
            _check_float("momentum", self.momentum, upper=1.0)
        if self.weight_decay is not None:
            _check_float("weight_decay", self.weight_decay)
        if self.schedule is not None and self.schedule not in SCHEDULES:
            raise TrainError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        _check_int("seed", self.seed, 0)
        if self.seed >= _SEED_LIMIT:
            raise TrainError(f"seed must be below 2^32, got {self.seed}")
        if self.data_dir is not None and not isinstance(self.data_dir, (str, os.PathLike)):
            raise TrainError(f"data_dir must be a folder path, got {self.data_dir!r}")
        _check_int("max_train_samples", self.max_train_samples, 1, optional=True)
        _check_int("max_test_samples", self.max_test_samples, 1, optional=True)
        object.__setattr__(self, "include", _patterns("include", self.include))
        object.__setattr__(self, "exclude", _patterns("exclude", self.exclude))
        _check_int("threads", self.threads, 1, optional=True)
        if not isinstance(self.device, str) or not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):
            raise TrainError(f"device must be 'cpu' or 'cuda[:N]', got {self.device!r}")
        for flag in ("resume", "overwrite", "progress"):
            if not isinstance(getattr(self, flag), bool):
                raise TrainError(f"{flag} must be True or False, got {getattr(self, flag)!r}")
        if self.resume and self.overwrite:
            raise TrainError("resume and overwrite exclude each other: continue or start over")

    # ------------------------------------------------------------------ derived
    def resolve(self) -> TrainConfig:
        """A copy with every ``None`` setting filled in: the backward multipliers by the
        forward one, the optimization settings by the model's defaults."""
        d = train_defaults(self.model)
        optimizer = self.optimizer or d.optimizer
        lr = self.lr
        if lr is None:
            lr = d.lr if optimizer == d.optimizer else _OPTIMIZER_LR[optimizer]
        momentum = self.momentum
        if momentum is None:
            momentum = d.momentum if optimizer == "sgd" else 0.0
        return dataclasses.replace(
            self,
            grad_input=self.multiplier if self.grad_input is None else self.grad_input,
            grad_weight=self.multiplier if self.grad_weight is None else self.grad_weight,
            batch_size=self.batch_size or d.batch_size,
            optimizer=optimizer,
            lr=float(lr),
            momentum=float(momentum),
            weight_decay=float(d.weight_decay if self.weight_decay is None else self.weight_decay),
            schedule=d.schedule if self.schedule is None else self.schedule,
        )

    def passes(self) -> PassMultipliers:
        """The multipliers of the forward, input-gradient and weight-gradient passes."""
        return PassMultipliers(self.multiplier, self.grad_input, self.grad_weight)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable settings (multipliers by name, paths as strings)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Multiplier):
                v = v.name
            elif isinstance(v, os.PathLike):
                v = str(v)
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name] = v
        return out


# ---------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write a checkpoint atomically: a temporary file in the same folder, then ``os.replace``.

    The file is a magic line, the SHA-256 of the payload and the payload (``torch.save`` of
    ``state``); an interruption at any moment leaves either the old file or the new one.

    Args:
        path: Destination file.
        state: Tensors, numbers, strings, lists, tuples and dicts.

    Returns:
        The path written.
    """
    p = Path(path)
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    digest = hashlib.sha256(payload).hexdigest().encode("ascii")
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_CHECKPOINT_MAGIC + digest + b"\n")
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and verify a checkpoint written by :func:`train` (or :func:`save_checkpoint`).

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
    if not isinstance(state, dict) or state.get("format") != _CHECKPOINT_FORMAT:
        raise CheckpointError(f"{p} is not an approxsim training checkpoint")
    return state


# ---------------------------------------------------------------------------- RNG and threads
def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, gauss = np.random.get_state()  # type: ignore[misc]
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(x: Any) -> Any:
    return tuple(_as_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    # The data order depends on (seed, epoch) only, never on how much randomness earlier
    # epochs used, so a resumed run sees the same batches as an uninterrupted one.
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


@contextlib.contextmanager
def thread_settings(threads: int | None) -> Iterator[None]:
    """Set torch's and Numba's thread counts for the run; restore them afterwards.

    Args:
        threads: Threads for torch's intra-op pool and Numba's (capped at Numba's pool
            size, fixed at import); ``None``: leave both as they are.

    Yields:
        Nothing; the previous thread counts are back when the block ends (also on errors).
    """
    if threads is None:
        yield
        return
    saved = torch.get_num_threads()
    numba: Any
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dependency
        numba = None
    saved_numba = numba.get_num_threads() if numba is not None else None
    try:
        torch.set_num_threads(threads)
        if numba is not None:
            # Numba's pool cannot grow past NUMBA_NUM_THREADS (fixed at import).
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        yield
    finally:
        torch.set_num_threads(saved)
        if numba is not None:
            numba.set_num_threads(saved_numba)


def resolve_device(name: str) -> torch.device:
    """The torch device named ``name``, checked to be usable.

    Args:
        name: A torch device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``).

    Returns:
        The ``torch.device``.

    Raises:
        TrainError: a CUDA device was asked for but CUDA is not available.
    """
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrainError(f"device {name!r} was asked for but CUDA is not available; use 'cpu'")
    return dev


# ---------------------------------------------------------------------------- processes
class _PeerError(TrainError):
    """Raised on the processes that did not fail themselves when another one did.

    The failing process reports its own error; the command line prints nothing for this one,
    so a failure shows up once, not once per process.
    """


@dataclass
class _World:
    """The processes of a run: one (the default) or a ``torch.distributed`` process group."""

    size: int = 1
    """Number of processes; 1 means no process group and no DDP."""

    rank: int = 0
    """This process's rank; rank 0 writes the run files and the progress output."""

    backend: str | None = None
    """``"gloo"`` or ``"nccl"`` when ``size > 1``."""

    owns_group: bool = False
    """Whether :func:`train` created the process group (and so destroys it)."""

    @property
    def enabled(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self, batch_size: int) -> dict[str, Any]:
        """The ``distributed`` section of ``config.json``."""
        return {
            "world_size": self.size,
            "backend": self.backend,
            # batch_size is the number of samples of one optimizer step over all processes.
            "batch_size_scope": "global",
            "batch_size_per_process": -(-batch_size // self.size),
        }

    @contextlib.contextmanager
    def shared_errors(self) -> Iterator[None]:
        """Run a block on every process and let all of them fail when one of them fails.

        The block ends with a collective (so it is also a barrier): without it, the other
        processes would wait in their next collective until the launcher kills them.

        Raises:
            The process's own exception, or :class:`_PeerError` naming the failed process.
        """
        if not self.enabled:
            yield
            return
        failure: Exception | None = None
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - re-raised below once all processes know
            failure = exc
        messages: list[Any] = [None] * self.size
        dist.all_gather_object(
            messages, None if failure is None else f"{type(failure).__name__}: {failure}"
        )
        failed = [r for r, m in enumerate(messages) if m is not None]
        if not failed:
            return
        if failure is not None and (self.is_main or messages[0] is None):
            raise failure
        first = failed[0]
        raise _PeerError(f"process {first} of {self.size} failed: {messages[first]}") from failure

    def sum(self, values: Sequence[float], device: torch.device) -> list[float]:
        """``values`` summed element-wise over the processes (unchanged with one process)."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return [float(v) for v in t.tolist()]

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """``model`` in :class:`~torch.nn.parallel.DistributedDataParallel` when several
        processes train; the converted layers are ordinary modules, so DDP's gradient hooks
        see the gradients the approximate backward GEMMs produce."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, output_device=None)

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


#: Process groups :func:`train` created in this process (the same count on every rank).
_GROUPS_CREATED = itertools.count()


def _env_int(name: str) -> int | None:
    text = os.environ.get(name)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise TrainError(
            f"environment variable {name}={text!r} is not an integer; launch several "
            "processes with torchrun, which sets WORLD_SIZE, RANK and LOCAL_RANK"
        ) from None


def _launch() -> tuple[int, int, int] | None:
    """``(world_size, rank, local_rank)`` of a multi-process launch, else ``None``.

    A process group initialized by the caller wins; otherwise torchrun's environment
    variables decide (``WORLD_SIZE`` of 1 or unset: a single process).
    """
    if dist.is_available() and dist.is_initialized():
        group_size, group_rank = dist.get_world_size(), dist.get_rank()
        group_local = _env_int("LOCAL_RANK")
        if group_size <= 1:
            return None
        return group_size, group_rank, group_rank if group_local is None else group_local
    size = _env_int("WORLD_SIZE")
    if size is None or size <= 1:
        return None
    rank, local = _env_int("RANK"), _env_int("LOCAL_RANK")
    if rank is None or local is None or not 0 <= rank < size:
        raise TrainError(
            f"WORLD_SIZE={size} is set but RANK/LOCAL_RANK are missing or out of range; "
            "launch several processes with torchrun (torchrun --nproc-per-node N -m approxsim "
            "train ...), or unset WORLD_SIZE for a single process"
        )
    return size, rank, local


def _setup_world(device_name: str) -> tuple[_World, torch.device]:
    """Join the process group of a torchrun launch (if any) and pick this process's device.

    Raises:
        TrainError: torch.distributed or the backend is missing, an explicit CUDA index
            under several processes, more processes than GPUs, or a failed rendezvous.
    """
    launch = _launch()
    dev = resolve_device(device_name)
    if launch is None:
        return _World(), dev
    size, rank, local = launch
    if not dist.is_available():
        raise TrainError(
            f"{size} processes were launched but this torch build has no torch.distributed; "
            "install a build with it or run a single process"
        )
    if dev.type == "cuda":
        if dev.index is not None:
            raise TrainError(
                f"device {device_name!r}: with several processes pass --device cuda "
                "(device='cuda'); each process then uses cuda:LOCAL_RANK"
            )
        if local >= torch.cuda.device_count():
            raise TrainError(
                f"process with LOCAL_RANK={local} has no GPU: only "
                f"{torch.cuda.device_count()} visible; start at most that many processes "
                "per node (--nproc-per-node)"
            )
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
        backend = "nccl"
    else:
        backend = "gloo"
    if dist.is_initialized():
        return _World(size, rank, dist.get_backend(), owns_group=False), dev
    available = dist.is_nccl_available() if backend == "nccl" else dist.is_gloo_available()
    if not available:
        raise TrainError(
            f"torch.distributed's {backend} backend is not available in this torch build; "
            f"{'use --device cpu (gloo)' if backend == 'nccl' else 'install a build with gloo'}"
        )
    try:
        store, _, _ = next(dist.rendezvous("env://", rank, size))
        # A fresh key prefix per group: after destroy_process_group the launcher's store still
        # holds the previous group's addresses, and a second train() in the same processes
        # would read them under the default prefix (connection refused, or a hang).
        store = dist.PrefixStore(f"approxsim.train/{next(_GROUPS_CREATED)}", store)
        dist.init_process_group(backend, store=store, world_size=size, rank=rank)
    except (ValueError, RuntimeError) as exc:
        raise TrainError(
            f"process {rank} of {size} could not join the process group ({backend}): {exc}. "
            "torchrun sets MASTER_ADDR and MASTER_PORT; check that they are reachable"
        ) from None
    return _World(size, rank, backend, owns_group=True), dev


def _shard_batches(
    n: int, batch_size: int, generator: torch.Generator, world: _World
) -> Iterator[tuple[Tensor, float, int]]:
    """This process's part of every batch of one epoch in the single-process order.

    The epoch's order is the single-process one (``randperm`` of ``generator``); each global
    batch of ``batch_size`` samples is cut into ``world.size`` contiguous parts whose sizes
    differ by at most one, and process ``r`` takes part ``r``. A last batch with fewer
    samples than processes is skipped by all of them (DDP needs every process in every
    step).

    Yields:
        ``(indices, loss_scale, global_batch)``: the sample indices of this process,
        the factor for its mean loss that makes DDP's gradient average the mean over the
        global batch (``size * part / global_batch``; exactly 1.0 when the parts are equal),
        and the global batch's size.
    """
    order = torch.randperm(n, generator=generator)
    size, rank = world.size, world.rank
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        if m < size:
            break
        base, extra = divmod(m, size)
        lo = start + rank * base + min(rank, extra)
        part = base + (1 if rank < extra else 0)
        yield order[lo : lo + part], size * part / m, m


def _shard_span(n: int, world: _World) -> tuple[int, int]:
    """The contiguous ``[lo, hi)`` range of ``n`` samples this process evaluates."""
    base, extra = divmod(n, world.size)
    lo = world.rank * base + min(world.rank, extra)
    return lo, lo + base + (1 if world.rank < extra else 0)


# ---------------------------------------------------------------------------- progress
class Progress:
    """A per-epoch progress bar on stderr: tqdm when installed, else a one-line fallback.

    Args:
        total: Number of items (images) the bar counts to.
        desc: Label shown before the bar.
        enabled: Draw anything at all; ``False`` counts silently.
    """

    def __init__(self, total: int, desc: str, enabled: bool) -> None:
        self._enabled = enabled
        self._total = total
        self._desc = desc
        self._done = 0
        self._start = time.perf_counter()
        self._last_draw = 0.0
        self._tqdm: Any = None
        self._tty = enabled and sys.stderr.isatty()
        if not enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self._tqdm = tqdm(
            total=total,
            desc=desc,
            unit="img",
            unit_scale=False,
            file=sys.stderr,
            leave=False,
            dynamic_ncols=True,
            # A terminal redraws in place; a log file keeps every update, so fewer there.
            mininterval=0.5 if self._tty else 15.0,
        )

    def update(self, n: int, loss: float | None = None, acc: float | None = None) -> None:
        """Count ``n`` more items; show the running ``loss`` and ``acc`` when both are given."""
        self._done += n
        if not self._enabled:
            return
        if self._tqdm is not None:
            if loss is not None and acc is not None:
                self._tqdm.set_postfix(loss=f"{loss:.4f}", acc=f"{100 * acc:.2f}%", refresh=False)
            self._tqdm.update(n)
            return
        now = time.perf_counter()
        if self._tty and (now - self._last_draw > 0.2 or self._done >= self._total):
            self._last_draw = now
            rate = self._done / max(now - self._start, 1e-9)
            width = 24
            filled = int(width * self._done / max(self._total, 1))
            bar = "#" * filled + "." * (width - filled)
            stats = "" if loss is None or acc is None else f" loss {loss:.4f} acc {100 * acc:.2f}%"
            sys.stderr.write(
                f"\r{self._desc} [{bar}] {self._done}/{self._total}{stats} {rate:.0f} img/s"
            )
            sys.stderr.flush()

    def close(self) -> None:
        """Remove the bar from the terminal."""
        if self._tqdm is not None:
            self._tqdm.close()
        elif self._tty:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def _say(enabled: bool, line: str) -> None:
    if enabled:
        print(line, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- epochs
def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _epoch_batches(
    data: ImageDataset, batch_size: int, generator: torch.Generator, world: _World
) -> Iterator[tuple[Tensor, Tensor, float, int]]:
    """``(images, labels, loss_scale, global_batch)`` of one epoch for this process."""
    if not world.enabled:
        for x, y in data.batches(batch_size, shuffle=True, generator=generator):
            yield x, y, 1.0, int(y.shape[0])
        return
    for idx, scale, m in _shard_batches(len(data), batch_size, generator, world):
        # Each rank draws its slice's augmentation from the shared per-epoch generator, after
        # the order: deterministic per (seed, epoch, world size).
        x, y = data.batch(idx, augment=data.augments, generator=generator)
        yield x, y, scale, m


def _train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: ImageDataset,
    *,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
    bar: Progress,
    world: _World,
    forward: Callable[[nn.Module, Tensor, Tensor], contextlib.AbstractContextManager[object]]
    | None = None,
) -> tuple[float, int, int]:
    """One pass over ``data`` (this process's share of it); ``forward(model, x, y)``, if
    given, is a context around each batch's forward pass.

    Returns:
        ``(loss_sum, correct, samples)`` over this process's samples; the sums of several
        processes add up to the epoch's.
    """
    model.train()
    total_loss = 0.0
    correct = 0
    seen = 0
    for x, y, scale, global_n in _epoch_batches(data, batch_size, generator, world):
        x, y = x.to(device), y.to(device)
        with forward(model, x, y) if forward is not None else contextlib.nullcontext():
            logits = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        # DDP averages the processes' gradients; unequal parts need their mean loss weighted
        # so that the average is the mean over the global batch.
        (loss if scale == 1.0 else loss * scale).backward()
        optimizer.step()
        n = int(y.shape[0])
        total_loss += float(loss.detach()) * n
        correct += int((logits.detach().argmax(dim=1) == y).sum())
        seen += n
        bar.update(global_n, total_loss / seen, correct / seen)
    return total_loss, correct, seen


@torch.no_grad()
def _evaluate_sums(
    model: nn.Module,
    data: ImageDataset,
    *,
    batch_size: int,
    device: torch.device,
    progress: bool = False,
    desc: str = "eval",
    span: tuple[int, int] | None = None,
) -> tuple[float, int, int]:
    """``(loss_sum, correct, samples)`` of ``model`` in eval mode on ``data`` (or on the
    samples ``span = (lo, hi)`` of it)."""
    was_training = model.training
    model.eval()
    total_loss = 0.0
    correct = 0
    lo, hi = (0, len(data)) if span is None else span
    bar = Progress(hi - lo, desc, progress)
    batches: Iterable[tuple[Tensor, Tensor]] = (
        data.batches(batch_size)
        if span is None
        else (
            data.batch(torch.arange(i, min(i + batch_size, hi))) for i in range(lo, hi, batch_size)
        )
    )
    try:
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            logits = model(x)
            total_loss += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(dim=1) == y).sum())
            bar.update(int(y.shape[0]))
    finally:
        bar.close()
        model.train(was_training)
    return total_loss, correct, hi - lo


def _evaluate_model(
    model: nn.Module,
    data: ImageDataset,
    *,
    batch_size: int,
    device: torch.device,
    progress: bool = False,
    desc: str = "eval",
) -> tuple[float, float]:
    """(mean loss, accuracy) of ``model`` on ``data`` in eval mode."""
    total_loss, correct, n = _evaluate_sums(
        model, data, batch_size=batch_size, device=device, progress=progress, desc=desc
    )
    n = max(n, 1)
    return total_loss / n, correct / n


def _eval_batch_size(batch_size: int) -> int:
    # Inference holds no activations for backward; larger batches amortize kernel set-up.
    return max(batch_size, 256)


# ---------------------------------------------------------------------------- set-up
def _describe_passes(passes: PassMultipliers) -> dict[str, dict[str, Any]]:
    return {
        "forward": passes.forward.describe(),
        "grad_input": passes.grad_input.describe(),
        "grad_weight": passes.grad_weight.describe(),
    }


def _fingerprints(passes: PassMultipliers) -> dict[str, str]:
    return {
        "forward": passes.forward.fingerprint,
        "grad_input": passes.grad_input.fingerprint,
        "grad_weight": passes.grad_weight.fingerprint,
    }


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


def _make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    assert cfg.lr is not None and cfg.momentum is not None  # resolved
    assert cfg.weight_decay is not None
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )


def _environment(device: torch.device) -> dict[str, Any]:
    from approxsim import __version__

    return {
        "approxsim": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
    }


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or ``None`` when it is missing or unreadable."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _run_metadata(
    cfg: TrainConfig,
    passes: PassMultipliers,
    model: nn.Module,
    converted: list[dict[str, str]],
    train_set: ImageDataset,
    test_set: ImageDataset,
    device: torch.device,
    world: _World,
) -> dict[str, Any]:
    """The contents of ``config.json``."""
    assert cfg.batch_size is not None  # resolved
    return {
        "schema": CONFIG_SCHEMA,
        "created": _now(),
        "config": cfg.to_dict(),
        "multipliers": _describe_passes(passes),
        "model": {
            **model_info(cfg.model),
            "parameters": sum(p.numel() for p in model.parameters()),
            "converted_layers": converted,
        },
        "dataset": {
            "name": cfg.dataset,
            "root": str(train_set.root) if train_set.root else None,
            "train_samples": len(train_set),
            "test_samples": len(test_set),
            "classes": list(train_set.classes),
        },
        "distributed": world.describe(cfg.batch_size),
        "environment": _environment(device),
    }


def _write_json(path: Path, obj: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(obj, indent=1) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_metrics(path: Path, records: Iterable[dict[str, Any]]) -> None:
    text = "".join(json.dumps(r) + "\n" for r in records)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _append_metrics(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _is_own_file(p: Path) -> bool:
    return p.name in _RUN_FILES or (
        p.name.startswith(tuple(f".{n}." for n in _RUN_FILES)) and p.name.endswith(".tmp")
    )


def _prepare_out_dir(out: Path, cfg: TrainConfig) -> None:
    """Create ``out`` or check it may be (re)used; clear old run files when allowed."""
    if out.exists() and not out.is_dir():
        raise TrainError(f"--out {out} is a file; name a folder for the run")
    entries = sorted(out.iterdir()) if out.is_dir() else []
    if entries:
        others = [p.name for p in entries if not _is_own_file(p)]
        if cfg.overwrite or (cfg.resume and not others):
            for p in entries:
                if _is_own_file(p):
                    p.unlink()
        elif cfg.resume:
            raise TrainError(
                f"cannot resume in {out}: it has no {CHECKPOINT_FILE} and holds other files "
                f"({', '.join(others[:5])}); choose another --out"
            )
        else:
            raise TrainError(
                f"{out} is not empty; pass --resume (resume=True) to continue the run in it, "
                "--overwrite (overwrite=True) to start it over, or choose another --out"
            )
    out.mkdir(parents=True, exist_ok=True)


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


def _check_resumable(
    state: dict[str, Any], cfg: TrainConfig, passes: PassMultipliers, out: Path
) -> None:
    saved = state["config"]
    now = cfg.to_dict()
    diffs = [
        f"{k}={saved.get(k)!r} (now {now[k]!r})" for k in _RESUME_KEYS if saved.get(k) != now[k]
    ]
    for role, fp in _fingerprints(passes).items():
        old = state["multipliers"][role]
        if old["fingerprint"] != fp:
            now_name = getattr(passes, role).name
            same = " (same name, different LUT)" if now_name == old["name"] else ""
            diffs.append(f"{role} multiplier {old['name']} (now {now_name}{same})")
    if saved["epochs"] != cfg.epochs and cfg.schedule == "cosine":
        diffs.append(f"epochs={saved['epochs']} (now {cfg.epochs}; the cosine schedule spans it)")
    if diffs:
        raise TrainError(
            f"cannot resume the run in {out}: it was trained with " + "; ".join(diffs) + ". "
            "Pass the same settings, or start over with --overwrite (overwrite=True)"
        )


# ---------------------------------------------------------------------------- train
class TrainExtension:
    """Hooks through which another training method runs on :func:`train`'s machinery.

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

    def start_message(self, cfg: TrainConfig, train_size: int, test_size: int) -> str | None:
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


def train(config: TrainConfig, extension: TrainExtension | None = None) -> dict[str, Any]:
    """Train ``config.model`` on ``config.dataset`` with the configured multipliers.

    Seeds every RNG, builds the model, converts its linear and convolution layers with
    :func:`approxsim.convert.convert_model` (unless all three passes are ``fp32``), trains
    with SGD+momentum or Adam and an optional cosine schedule, evaluates on the test split
    after each epoch (with the same approximate forward pass), and writes ``config.json``,
    ``metrics.jsonl`` and ``checkpoint.pt`` in ``config.out_dir``.

    Under ``torchrun`` (``WORLD_SIZE`` > 1), or inside a process group the caller has
    initialized, every process runs this function: the converted model is wrapped in
    :class:`~torch.nn.parallel.DistributedDataParallel`, ``batch_size`` is the global batch
    (each process takes its contiguous part of every batch of the single-process order), the
    test set is split across the processes, the epoch metrics are summed over them, and only
    rank 0 writes files and progress output. All processes load the checkpoint on resume. A
    process group this function created is destroyed when it returns or fails.

    Interrupting (Ctrl-C) leaves the checkpoint of the last complete epoch intact; the
    ``KeyboardInterrupt`` propagates after a note on stderr.

    Args:
        config: The run's settings.
        extension: Another training method on this machinery (:class:`TrainExtension`).

    Returns:
        A summary: ``out_dir``, ``model``, ``dataset``, ``multipliers`` (names per pass),
        ``epochs``, ``epochs_completed``, ``resumed_from`` (epoch or ``None``), ``final``
        (last epoch's record), ``best_test_acc``, ``best_epoch``, ``history`` (all records),
        ``seconds`` (this call's wall time), ``world_size`` and ``rank`` (1 and 0 for a
        single process).

    Raises:
        TrainError: a non-empty ``out_dir`` without ``resume``/``overwrite``, settings that
            differ from the checkpoint being resumed, a model that does not fit the data, a
            multi-process launch that cannot start (also raised on the processes whose peer
            failed).
        CheckpointError: the checkpoint to resume from is damaged.
        DatasetError, ModelError, MultiplierError: data, model or multiplier problems.
    """
    start_time = time.perf_counter()
    cfg = config.resolve()
    world, device = _setup_world(cfg.device)
    try:
        if extension is not None and world.enabled:
            raise TrainError(f"{extension.label} training runs in a single process only")
        return _train(cfg, world, device, start_time, extension)
    finally:
        world.close()


def _train(
    cfg: TrainConfig,
    world: _World,
    device: torch.device,
    start_time: float,
    ext: TrainExtension | None,
) -> dict[str, Any]:
    """:func:`train` after the process group (if any) is up."""
    assert cfg.batch_size is not None
    out = Path(cfg.out_dir)
    passes = cfg.passes()
    ckpt_path = out / CHECKPOINT_FILE
    metrics_path = out / METRICS_FILE
    main = world.is_main
    verbose = cfg.progress and main

    state: dict[str, Any] | None = None
    with world.shared_errors():
        # Every process reads the checkpoint it resumes from; only rank 0 touches the folder.
        if cfg.resume and ckpt_path.exists():
            state = load_checkpoint(ckpt_path)
            _check_resumable(state, cfg, passes, out)
            if ext is not None and state.get(ext.section) != ext.settings():
                raise TrainError(
                    f"cannot resume the run in {out}: it was trained with {ext.label} "
                    f"settings {state.get(ext.section)}, now {ext.settings()}; pass the same "
                    "settings or --overwrite"
                )
        elif main:
            _prepare_out_dir(out, cfg)

    with thread_settings(cfg.threads):
        with world.shared_errors():
            train_set = load_data(cfg.dataset, cfg.data_dir, "train", cfg.max_train_samples)
            test_set = load_data(cfg.dataset, cfg.data_dir, "test", cfg.max_test_samples)
            _seed_everything(cfg.seed)
            model, converted = build_model(
                cfg.model,
                train_set.num_classes,
                train_set.sample_shape,
                passes,
                cfg.include,  # type: ignore[arg-type]
                cfg.exclude,  # type: ignore[arg-type]
            )
            model.to(device)
            ext_meta = ext.attach(model) if ext is not None else {}
            optimizer = _make_optimizer(cfg, model)
            scheduler = (
                torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
                if cfg.schedule == "cosine"
                else None
            )

            def metadata() -> dict[str, Any]:
                meta = _run_metadata(
                    cfg, passes, model, converted, train_set, test_set, device, world
                )
                if ext is not None:
                    meta[ext.section] = {**ext.settings(), **ext_meta}
                return meta

            history: list[dict[str, Any]] = []
            start_epoch = 0
            if state is not None:
                model.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
                if scheduler is not None:
                    scheduler.load_state_dict(state["scheduler"])
                history = list(state["history"])
                start_epoch = int(state["epoch"])
                _set_rng_state(state["rng"])
                if main:
                    # metrics.jsonl may hold a line of the epoch that was interrupted: the
                    # checkpoint's history is the truth.
                    _write_metrics(metrics_path, history)
                    meta = _read_json(out / CONFIG_FILE) or metadata()
                    meta["config"] = cfg.to_dict()  # epochs may have grown
                    meta["distributed"] = world.describe(cfg.batch_size)
                    resumed: dict[str, Any] = {"after_epoch": start_epoch, "time": _now()}
                    if world.enabled:
                        resumed["world_size"] = world.size
                    meta.setdefault("resumed", []).append(resumed)
                    _write_json(out / CONFIG_FILE, meta)
                _say(verbose, f"resuming {out} after epoch {start_epoch}/{cfg.epochs}")
            elif main:
                _write_json(out / CONFIG_FILE, metadata())
                _write_metrics(metrics_path, [])
                start = ext.start_message(cfg, len(train_set), len(test_set)) if ext else None
                _say(
                    verbose,
                    f"{start} -> {out}"
                    if start is not None
                    else f"training {cfg.model} on {cfg.dataset} ({len(train_set)} train / "
                    f"{len(test_set)} test samples) with multiplier {passes!r}"
                    + (f", {len(converted)} layers converted" if converted else " (exact float32)")
                    + (
                        f", {world.size} processes ({world.backend}; batch {cfg.batch_size} = "
                        f"up to {world.describe(cfg.batch_size)['batch_size_per_process']} "
                        "per process)"
                        if world.enabled
                        else ""
                    )
                    + f" -> {out}",
                )
        # Wrapped after convert_model and after loading the checkpoint: DDP broadcasts rank
        # 0's parameters at construction and hooks the gradients of the converted layers.
        train_model = world.wrap(model, device)
        test_span = _shard_span(len(test_set), world) if world.enabled else None

        epoch = saved_epoch = start_epoch
        try:
            for epoch in range(start_epoch + 1, cfg.epochs + 1):
                t0 = time.perf_counter()
                lr = float(optimizer.param_groups[0]["lr"])
                bar = Progress(len(train_set), f"epoch {epoch}/{cfg.epochs}", verbose)
                try:
                    train_sums = _train_one_epoch(
                        train_model,
                        optimizer,
                        train_set,
                        batch_size=cfg.batch_size,
                        generator=_epoch_generator(cfg.seed, epoch),
                        device=device,
                        bar=bar,
                        world=world,
                        forward=ext.forward if ext is not None else None,
                    )
                finally:
                    bar.close()
                train_seconds = time.perf_counter() - t0
                # The unwrapped model: every process evaluates its own part of the test set,
                # and DDP's forward would expect the same number of calls on all of them.
                test_sums = _evaluate_sums(
                    model,
                    test_set,
                    batch_size=_eval_batch_size(cfg.batch_size),
                    device=device,
                    progress=verbose,
                    desc=f"test {epoch}/{cfg.epochs}",
                    span=test_span,
                )
                # One all-reduce for both; it is also the barrier before rank 0 saves.
                loss_sum, correct, seen, t_loss_sum, t_correct, t_seen = world.sum(
                    (*train_sums, *test_sums), device
                )
                extra = (
                    ext.epoch_metrics(model, test_set, _eval_batch_size(cfg.batch_size))
                    if ext is not None
                    else {}
                )
                seen, t_seen = max(seen, 1), max(t_seen, 1)
                train_loss, train_acc = loss_sum / seen, correct / seen
                test_loss, test_acc = t_loss_sum / t_seen, t_correct / t_seen
                if scheduler is not None:
                    scheduler.step()
                seconds = time.perf_counter() - t0
                record = {
                    "epoch": epoch,
                    "train_loss": _finite(train_loss),
                    "train_acc": train_acc,
                    "test_loss": _finite(test_loss),
                    "test_acc": test_acc,
                    **extra,
                    "seconds": round(seconds, 3),
                    "lr": lr,
                    "samples_per_s": round(
                        (seen if world.enabled else len(train_set)) / max(train_seconds, 1e-9),
                        1,
                    ),
                }
                history.append(record)
                with world.shared_errors():  # the barrier after rank 0's writes
                    if main:
                        _append_metrics(metrics_path, record)
                        ckpt = _checkpoint_state(
                            cfg, passes, epoch, model, optimizer, scheduler, history
                        )
                        if ext is not None:
                            ckpt[ext.section] = ext.settings()
                        save_checkpoint(ckpt_path, ckpt)
                saved_epoch = epoch
                suffix = ext.epoch_suffix(record) if ext is not None else ""
                _say(verbose, _epoch_line(record, cfg.epochs) + suffix)
        except KeyboardInterrupt:
            where = (
                f"{ckpt_path} holds epoch {saved_epoch} intact"
                if saved_epoch
                else "no epoch was complete, so there is no checkpoint yet"
            )
            _say(main, f"interrupted in epoch {epoch}; {where}: continue with --resume")
            raise

    best = max(history, key=lambda r: r["test_acc"]) if history else None
    return {
        "out_dir": str(out),
        "model": cfg.model,
        "dataset": cfg.dataset,
        "multipliers": passes.names(),
        "epochs": cfg.epochs,
        "epochs_completed": len(history),
        "resumed_from": start_epoch if state is not None else None,
        "final": history[-1] if history else None,
        "best_test_acc": best["test_acc"] if best else None,
        "best_epoch": best["epoch"] if best else None,
        "history": history,
        "seconds": round(time.perf_counter() - start_time, 3),
        "world_size": world.size,
        "rank": world.rank,
    }


def _checkpoint_state(
    cfg: TrainConfig,
    passes: PassMultipliers,
    epoch: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    history: list[dict[str, Any]],
) -> dict[str, Any]:
    """What ``checkpoint.pt`` holds after ``epoch`` (``model`` unwrapped: no DDP prefix)."""
    return {
        "format": _CHECKPOINT_FORMAT,
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": _rng_state(),
        "config": cfg.to_dict(),
        "multipliers": {
            role: {"name": m.name, "fingerprint": m.fingerprint}
            for role, m in (
                ("forward", passes.forward),
                ("grad_input", passes.grad_input),
                ("grad_weight", passes.grad_weight),
            )
        },
        "history": history,
    }


def _fmt_loss(x: float | None) -> str:
    return "nan" if x is None else f"{x:.4f}"


def _epoch_line(r: dict[str, Any], epochs: int) -> str:
    return (
        f"epoch {r['epoch']}/{epochs}: train loss {_fmt_loss(r['train_loss'])} "
        f"acc {100 * r['train_acc']:.2f}% | test loss {_fmt_loss(r['test_loss'])} "
        f"acc {100 * r['test_acc']:.2f}% | lr {r['lr']:.4g} | {r['seconds']:.1f} s "
        f"({r['samples_per_s']:.0f} img/s)"
    )


# ---------------------------------------------------------------------------- evaluate
def evaluate(
    checkpoint: str | os.PathLike[str],
    multiplier: MultiplierArg,
    *,
    dataset: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    split: str = "test",
    batch_size: int = 256,
    max_samples: int | None = None,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    device: str = "cpu",
    threads: int | None = None,
) -> dict[str, Any]:
    """Evaluate a trained checkpoint with ``multiplier`` in every converted layer.

    Args:
        checkpoint: A ``checkpoint.pt`` written by :func:`train`, or its run folder.
        multiplier: Multiplier of the inference products (``"fp32"``: exact).
        dataset: Dataset name; default: the one the checkpoint was trained on.
        data_dir: Dataset folder; default: the one used in training, else the defaults.
        split: ``"test"`` or ``"train"``.
        batch_size: Samples per forward pass.
        max_samples: Evaluate the first N samples only.
        include: Layers to convert (fnmatch patterns); default: as in training.
        exclude: Layers to keep exact; default: as in training.
        device: ``"cpu"`` or ``"cuda[:N]"``.
        threads: CPU threads for the run; ``None``: unchanged.

    Returns:
        A JSON-serializable dict: ``schema``, ``checkpoint``, ``epoch``, ``model``,
        ``dataset``, ``split``, ``samples``, ``multiplier`` (name, fingerprint, provenance,
        error statistics), ``trained_with`` (names per pass), ``loss``, ``accuracy``,
        ``seconds``.

    Raises:
        CheckpointError: a missing or damaged checkpoint.
        TrainError: invalid arguments.
        DatasetError, MultiplierError: data or multiplier problems.
    """
    t0 = time.perf_counter()
    _check_int("batch_size", batch_size, 1)
    _check_int("max_samples", max_samples, 1, optional=True)
    _check_int("threads", threads, 1, optional=True)
    _check_multiplier("multiplier", multiplier, optional=False)
    state = load_checkpoint(checkpoint)
    saved = state["config"]
    dev = resolve_device(device)
    passes = PassMultipliers(multiplier)
    ds_name = dataset or saved["dataset"]
    if data_dir is None and dataset in (None, saved["dataset"]):
        data_dir = saved.get("data_dir")
    inc = _patterns("include", include) if include is not None else saved.get("include")
    exc = _patterns("exclude", exclude) if exclude is not None else saved.get("exclude")
    with thread_settings(threads):
        data = load_data(ds_name, data_dir, split, max_samples)
        model, _ = build_model(
            saved["model"], data.num_classes, data.sample_shape, passes, inc, exc
        )
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as exc_:
            raise CheckpointError(
                f"{checkpoint}: its weights do not fit model {saved['model']!r} with "
                f"{data.num_classes} classes: {exc_}"
            ) from None
        model.to(dev)
        loss, acc = _evaluate_model(model, data, batch_size=batch_size, device=dev)
    return {
        "schema": EVAL_SCHEMA,
        "checkpoint": str(checkpoint),
        "epoch": int(state["epoch"]),
        "model": saved["model"],
        "dataset": ds_name,
        "split": split,
        "samples": len(data),
        "multiplier": passes.forward.describe(),
        "trained_with": {role: m["name"] for role, m in state["multipliers"].items()},
        "loss": _finite(loss),
        "accuracy": acc,
        "seconds": round(time.perf_counter() - t0, 3),
    }


# ---------------------------------------------------------------------------- CLI
_positive_int = int_at_least(1)


def _pass_multiplier(value: str | None) -> Multiplier | None:
    """``--grad-input`` / ``--grad-weight``: a name, or a saved ``.npz`` multiplier."""
    if value is None:
        return None
    if value.endswith(".npz") and Path(value).is_file():
        return Multiplier.load(Path(value))
    return get_multiplier(value)


def add_train_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add ``approxsim train`` to the top-level subparsers (sets ``action=None``).

    Args:
        subparsers: What ``ArgumentParser.add_subparsers(dest="command")`` returned.

    Returns:
        The ``train`` parser.
    """
    from approxsim.data import list_datasets
    from approxsim.models import list_models

    p = subparsers.add_parser(
        "train",
        help="train a model with an approximate multiplier",
        description=(
            "Train a registered model on a dataset with every linear and convolution layer "
            "multiplying through a simulated multiplier (forward and both backward GEMMs). "
            "Writes OUT/config.json, OUT/metrics.jsonl (one line per epoch) and "
            "OUT/checkpoint.pt (after every epoch; --resume continues a stopped run). "
            "Progress goes to stderr. Under torchrun (torchrun --nproc-per-node N -m approxsim "
            "train ...) the processes train with DistributedDataParallel; --batch-size is then "
            "the global batch, split across them, and only rank 0 writes files and output."
        ),
    )
    p.set_defaults(action=None)
    p.add_argument("--model", default="lenet5", help=f"one of {', '.join(list_models())}")
    p.add_argument(
        "--dataset", default="fashion-mnist", help=f"one of {', '.join(list_datasets())}"
    )
    p.add_argument("--epochs", type=_positive_int, default=5, help="epochs (default: 5)")
    p.add_argument("--out", required=True, metavar="DIR", help="run folder (empty or new)")
    add_multiplier_arguments(p)
    g = p.add_argument_group("backward passes")
    g.add_argument(
        "--grad-input", metavar="M", help="multiplier of the input-gradient GEMMs (default: same)"
    )
    g.add_argument(
        "--grad-weight", metavar="M", help="multiplier of the weight-gradient GEMMs (default: same)"
    )
    h = p.add_argument_group("optimization (defaults: the model's)")
    h.add_argument("--seed", type=int, default=0, help="seed of weights and data order (0)")
    h.add_argument(
        "--batch-size",
        type=_positive_int,
        help="samples per step, over all processes (LeNets: 128)",
    )
    h.add_argument("--lr", type=float, help="learning rate (LeNets: 0.05 with SGD)")
    h.add_argument("--momentum", type=float, help="SGD momentum (LeNets: 0.9)")
    h.add_argument(
        "--weight-decay", type=float, help="L2 penalty (model default: LeNets 0, ResNets 5e-4)"
    )
    h.add_argument("--optimizer", choices=OPTIMIZERS, help="sgd (with momentum) or adam")
    h.add_argument(
        "--schedule",
        choices=SCHEDULES,
        help="lr schedule (model default: LeNets none, ResNets cosine)",
    )
    r = p.add_argument_group("data and run")
    r.add_argument("--data-dir", metavar="DIR", help="folder with the dataset's files")
    r.add_argument(
        "--max-train-samples", type=_positive_int, metavar="N", help="use the first N only"
    )
    r.add_argument(
        "--max-test-samples", type=_positive_int, metavar="N", help="evaluate the first N only"
    )
    r.add_argument(
        "--include",
        action="append",
        metavar="PAT",
        help="convert only layers matching PAT (fnmatch on names; repeatable)",
    )
    r.add_argument(
        "--exclude", action="append", metavar="PAT", help="keep layers matching PAT exact"
    )
    r.add_argument("--threads", type=_positive_int, metavar="N", help="CPU threads")
    r.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    r.add_argument("--resume", action="store_true", help="continue the run in --out")
    r.add_argument("--overwrite", action="store_true", help="start the run in --out over")
    r.add_argument("--no-progress", action="store_true", help="no progress output on stderr")
    return p


def _error(exc: BaseException, rank: int = 0) -> int:
    where = f" (process {rank})" if rank else ""
    print(f"approxsim: error{where}: {exc}", file=sys.stderr)
    return 2


def _launch_rank() -> int:
    """This process's rank under torchrun (0 for a single process or unreadable variables)."""
    try:
        return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0
    except ValueError:
        return 0


_USER_ERRORS = (TrainError, DatasetError, ModelError, MultiplierError, OSError)


def run_train_cli(args: argparse.Namespace) -> int:
    """Run ``approxsim train`` from parsed arguments; returns the exit status.

    Prints a summary to stdout. User errors print one line to stderr and return 2; Ctrl-C
    returns 130 with the last complete epoch's checkpoint intact.
    """
    try:
        config = TrainConfig(
            out_dir=args.out,
            model=args.model,
            dataset=args.dataset,
            multiplier=multiplier_from_args(args),
            grad_input=_pass_multiplier(args.grad_input),
            grad_weight=_pass_multiplier(args.grad_weight),
            epochs=args.epochs,
            batch_size=args.batch_size,
            optimizer=args.optimizer,
            lr=args.lr,
            momentum=args.momentum,
            weight_decay=args.weight_decay,
            schedule=args.schedule,
            seed=args.seed,
            data_dir=args.data_dir,
            max_train_samples=args.max_train_samples,
            max_test_samples=args.max_test_samples,
            include=args.include,
            exclude=args.exclude,
            threads=args.threads,
            device=args.device,
            resume=args.resume,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
        result = train(config)
    except _PeerError:
        return 2  # the process that failed printed the error
    except _USER_ERRORS as exc:
        return _error(exc, _launch_rank())
    except KeyboardInterrupt:
        if _launch_rank() == 0:
            print("approxsim: interrupted", file=sys.stderr)
        return 130
    if result["rank"] != 0:
        return 0  # rank 0 prints the summary
    final = result["final"]
    print(f"run          {result['out_dir']}")
    print(f"model        {result['model']} on {result['dataset']}")
    names = result["multipliers"]
    print(
        "multiplier   "
        + (
            names["forward"]
            if len(set(names.values())) == 1
            else ", ".join(f"{k}={v}" for k, v in names.items())
        )
    )
    if final is not None:
        print(
            f"final        test acc {100 * final['test_acc']:.2f}% (epoch {final['epoch']}), "
            f"train loss {_fmt_loss(final['train_loss'])}"
        )
        print(
            f"best         test acc {100 * result['best_test_acc']:.2f}% "
            f"(epoch {result['best_epoch']})"
        )
    return 0


def add_eval_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add ``approxsim eval`` to the top-level subparsers (sets ``action=None``).

    Args:
        subparsers: What ``ArgumentParser.add_subparsers(dest="command")`` returned.

    Returns:
        The ``eval`` parser.
    """
    p = subparsers.add_parser(
        "eval",
        help="evaluate a trained checkpoint with a multiplier",
        description=(
            "Run a checkpoint written by `approxsim train` over a dataset split with the "
            "given multiplier in every converted layer (approximate inference)."
        ),
    )
    p.set_defaults(action=None)
    p.add_argument("--checkpoint", required=True, metavar="FILE", help="checkpoint.pt or run dir")
    add_multiplier_arguments(p)
    p.add_argument("--dataset", help="dataset (default: the training dataset)")
    p.add_argument("--data-dir", metavar="DIR", help="folder with the dataset's files")
    p.add_argument("--split", choices=["test", "train"], default="test", help="split (test)")
    p.add_argument("--batch-size", type=_positive_int, default=256, help="batch size (256)")
    p.add_argument("--max-samples", type=_positive_int, metavar="N", help="first N samples only")
    p.add_argument("--include", action="append", metavar="PAT", help="layers to convert")
    p.add_argument("--exclude", action="append", metavar="PAT", help="layers to keep exact")
    p.add_argument("--threads", type=_positive_int, metavar="N", help="CPU threads")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    p.add_argument("--json", action="store_true", help="print JSON")
    return p


def run_eval_cli(args: argparse.Namespace) -> int:
    """Run ``approxsim eval`` from parsed arguments; returns the exit status (2: user error)."""
    try:
        result = evaluate(
            args.checkpoint,
            multiplier_from_args(args),
            dataset=args.dataset,
            data_dir=args.data_dir,
            split=args.split,
            batch_size=args.batch_size,
            max_samples=args.max_samples,
            include=args.include,
            exclude=args.exclude,
            device=args.device,
            threads=args.threads,
        )
    except _USER_ERRORS as exc:
        return _error(exc)
    except KeyboardInterrupt:
        print("approxsim: interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    trained = result["trained_with"]
    print(f"checkpoint   {result['checkpoint']} (epoch {result['epoch']})")
    print(f"model        {result['model']}, trained with {trained['forward']}")
    print(f"data         {result['dataset']} {result['split']}, {result['samples']} samples")
    print(f"multiplier   {result['multiplier']['name']}")
    print(f"accuracy     {100 * result['accuracy']:.2f}%")
    print(f"loss         {_fmt_loss(result['loss'])}")
    return 0
