"""What determines a training run: :class:`TrainConfig` (as given) and
:class:`ResolvedTrainConfig` (every model default filled in).

Each field of :class:`TrainConfig` carries its documentation (the docstring under it) and, in
its ``metadata["cli"]``, a :class:`CLIOption` saying how ``approxsim train`` offers it; the
command line builds its options from these (``approxsim.cli.train.add_training_arguments``),
so a new setting is declared in one place.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from approxsim.data import dataset_info, list_datasets
from approxsim.models import list_models, model_info, train_defaults
from approxsim.multipliers import Multiplier, MultiplierLike, get_multiplier
from approxsim.ops import PassMultipliers
from approxsim.training.errors import TrainError

__all__ = [
    "CLIOption",
    "OPTIMIZERS",
    "SCHEDULES",
    "TrainConfig",
    "ResolvedTrainConfig",
    "check_int",
    "check_multiplier",
    "patterns",
]

#: A multiplier as a setting: the object, or a registered name.

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("none", "cosine")
#: Learning rate used when the optimizer differs from the model's default one and no lr is
#: given (the model's tuned lr belongs to its tuned optimizer).
_OPTIMIZER_LR = {"sgd": 0.05, "adam": 1e-3}
_SEED_LIMIT = 2**32


@dataclass(frozen=True)
class CLIOption:
    """How a :class:`TrainConfig` field appears on the command line (no argparse here).

    Attributes:
        flag: The option, e.g. ``"--batch-size"``.
        help: One-line help; ``{names}`` is replaced by ``", ".join(names())``.
        order: Position in ``--help`` (options are listed by it, not by field order).
        group: Title of the argument group; ``None``: the command's main options.
        dest: Attribute of the parsed arguments; default: from the flag.
        kind: ``"str"``, ``"int"`` (any integer), ``"count"`` (an integer >= 1), ``"float"``,
            ``"flag"`` (``store_true``), ``"append"`` (repeatable) or ``"multiplier"``
            (a name or a saved ``.npz`` multiplier, read after parsing) or ``"source"`` (the
            forward multiplier: the options of ``add_multiplier_arguments``).
        metavar: Placeholder in the help text.
        choices: Allowed values.
        required: The option must be given.
        inverted: A ``"flag"`` whose presence sets the field to ``False``.
        names: Gives the names ``help`` lists (evaluated when the parser is built).
    """

    flag: str
    help: str
    order: int
    group: str | None = None
    dest: str | None = None
    kind: str = "str"
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    required: bool = False
    inverted: bool = False
    names: Callable[[], Sequence[str]] | None = None

    @property
    def attribute(self) -> str:
        """The attribute of the parsed arguments that holds the value."""
        return self.dest or self.flag.lstrip("-").replace("-", "_")


_BACKWARD = "backward passes"
_OPTIMIZATION = "optimization (defaults: the model's)"
_RUN = "data and run"


def _cli(flag: str, help: str, order: int, **kw: Any) -> dict[str, CLIOption]:
    return {"cli": CLIOption(flag, help, order, **kw)}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (validated on construction).

    Settings left as ``None`` take the model's registered defaults
    (:func:`approxsim.models.train_defaults`); :meth:`resolve` fills them in.

    Raises:
        TrainError: an invalid value (the message names the field).
        UnknownModelError, UnknownDatasetError, UnknownMultiplierError: unknown names.
    """

    out_dir: str | os.PathLike[str] = field(
        metadata=_cli(
            "--out", "run folder (empty or new)", 3, dest="out", metavar="DIR", required=True
        )
    )
    """Run folder for ``config.json``, ``metrics.jsonl`` and ``checkpoint.pt``. It must be
    empty or absent unless ``resume`` or ``overwrite`` is set."""

    model: str = field(
        default="lenet5", metadata=_cli("--model", "one of {names}", 0, names=list_models)
    )
    """Registered model name (``approxsim.models.list_models()``)."""

    dataset: str = field(
        default="fashion-mnist",
        metadata=_cli("--dataset", "one of {names}", 1, names=list_datasets),
    )
    """Registered dataset name (``approxsim.data.list_datasets()``)."""

    multiplier: MultiplierLike = field(
        default="fp32", metadata=_cli("--multiplier", "", 4, kind="source")
    )
    """Forward multiplier: a :class:`~approxsim.Multiplier` or a name (``"mitchell7"``;
    ``"fp32"`` trains with exact float32 and converts no layer). On the command line it is
    named by the options of ``approxsim.cli.common.add_multiplier_arguments``."""

    grad_input: MultiplierLike | None = field(
        default=None,
        metadata=_cli(
            "--grad-input",
            "multiplier of the input-gradient GEMMs (default: same)",
            10,
            group=_BACKWARD,
            kind="multiplier",
            metavar="M",
        ),
    )
    """Multiplier of the input-gradient GEMMs; ``None``: same as ``multiplier``."""

    grad_weight: MultiplierLike | None = field(
        default=None,
        metadata=_cli(
            "--grad-weight",
            "multiplier of the weight-gradient GEMMs (default: same)",
            11,
            group=_BACKWARD,
            kind="multiplier",
            metavar="M",
        ),
    )
    """Multiplier of the weight-gradient GEMMs; ``None``: same as ``multiplier``."""

    epochs: int = field(
        default=5, metadata=_cli("--epochs", "epochs (default: 5)", 2, kind="count")
    )
    """Number of passes over the training set."""

    batch_size: int | None = field(
        default=None,
        metadata=_cli(
            "--batch-size",
            "samples per step, over all processes (LeNets: 128)",
            21,
            group=_OPTIMIZATION,
            kind="count",
        ),
    )
    """Samples per optimizer step; ``None``: the model's default (128 for the LeNets). With
    several processes (torchrun) this is the global batch: each process computes its part
    (``batch_size / world_size``, rounded up or down), so results do not depend on the
    number of processes beyond floating-point summation order."""

    optimizer: str | None = field(
        default=None,
        metadata=_cli(
            "--optimizer",
            "sgd (with momentum) or adam",
            25,
            group=_OPTIMIZATION,
            choices=OPTIMIZERS,
        ),
    )
    """``"sgd"`` (with momentum) or ``"adam"``; ``None``: the model's default."""

    lr: float | None = field(
        default=None,
        metadata=_cli(
            "--lr", "learning rate (LeNets: 0.05 with SGD)", 22, group=_OPTIMIZATION, kind="float"
        ),
    )
    """Initial learning rate; ``None``: the model's default for its default optimizer
    (0.05 for SGD on the LeNets), else 0.05 for SGD and 1e-3 for Adam."""

    momentum: float | None = field(
        default=None,
        metadata=_cli(
            "--momentum", "SGD momentum (LeNets: 0.9)", 23, group=_OPTIMIZATION, kind="float"
        ),
    )
    """SGD momentum in [0, 1); ``None``: the model's default (0.9). Unused by Adam."""

    weight_decay: float | None = field(
        default=None,
        metadata=_cli(
            "--weight-decay",
            "L2 penalty (model default: LeNets 0, ResNets 5e-4)",
            24,
            group=_OPTIMIZATION,
            kind="float",
        ),
    )
    """L2 penalty added by the optimizer; ``None``: the model's default (0 for the LeNets,
    5e-4 for the CIFAR ResNets)."""

    schedule: str | None = field(
        default=None,
        metadata=_cli(
            "--schedule",
            "lr schedule (model default: LeNets none, ResNets cosine)",
            26,
            group=_OPTIMIZATION,
            choices=SCHEDULES,
        ),
    )
    """Learning-rate schedule: ``"none"`` (constant) or ``"cosine"`` (cosine annealing to 0
    over ``epochs``, stepped once per epoch); ``None``: the model's default (none for the
    LeNets, cosine for the ResNets)."""

    seed: int = field(
        default=0,
        metadata=_cli(
            "--seed", "seed of weights and data order (0)", 20, group=_OPTIMIZATION, kind="int"
        ),
    )
    """Seeds Python, NumPy and torch (weights) and the data order (shuffle of epoch ``e``
    uses seed ``(seed, e)``), in [0, 2^32)."""

    data_dir: str | os.PathLike[str] | None = field(
        default=None,
        metadata=_cli(
            "--data-dir", "folder with the dataset's files", 30, group=_RUN, metavar="DIR"
        ),
    )
    """Folder holding the dataset files; ``None``: the dataset's default folders."""

    max_train_samples: int | None = field(
        default=None,
        metadata=_cli(
            "--max-train-samples", "use the first N only", 31, group=_RUN, kind="count", metavar="N"
        ),
    )
    """Train on the first N training samples only (quick runs); ``None``: all."""

    max_test_samples: int | None = field(
        default=None,
        metadata=_cli(
            "--max-test-samples",
            "evaluate the first N only",
            32,
            group=_RUN,
            kind="count",
            metavar="N",
        ),
    )
    """Evaluate on the first N test samples only; ``None``: all."""

    include: str | Sequence[str] | None = field(
        default=None,
        metadata=_cli(
            "--include",
            "convert only layers matching PAT (fnmatch on names; repeatable)",
            33,
            group=_RUN,
            kind="append",
            metavar="PAT",
        ),
    )
    """Convert only the layers whose qualified names match these fnmatch patterns (and
    everything inside them); ``None``: every linear and convolution layer."""

    exclude: str | Sequence[str] | None = field(
        default=None,
        metadata=_cli(
            "--exclude",
            "keep layers matching PAT exact",
            34,
            group=_RUN,
            kind="append",
            metavar="PAT",
        ),
    )
    """Keep these layers exact (fnmatch patterns); wins over ``include``."""

    threads: int | None = field(
        default=None,
        metadata=_cli("--threads", "CPU threads", 35, group=_RUN, kind="count", metavar="N"),
    )
    """CPU threads for torch and the Numba kernels during the run; ``None``: unchanged."""

    device: str = field(
        default="cpu", metadata=_cli("--device", "cpu (default) or cuda[:N]", 36, group=_RUN)
    )
    """``"cpu"`` or ``"cuda[:N]"``. Resumed runs are bit-identical to uninterrupted ones on
    the CPU; on CUDA only up to the non-determinism of the GPU kernels."""

    resume: bool = field(
        default=False,
        metadata=_cli("--resume", "continue the run in --out", 37, group=_RUN, kind="flag"),
    )
    """Continue the run in ``out_dir`` from its checkpoint (settings must match; ``epochs``
    may grow unless the schedule is cosine). Without a checkpoint the run starts afresh, but
    only when the folder is empty or holds the start of this same run (matching
    ``config.json``, no finished epoch in ``metrics.jsonl``)."""

    overwrite: bool = field(
        default=False,
        metadata=_cli("--overwrite", "start the run in --out over", 38, group=_RUN, kind="flag"),
    )
    """Replace the run in a non-empty ``out_dir`` and start over. Its files are deleted only
    once the new run is built (data, model, multipliers checked), and other files in the
    folder are left alone."""

    progress: bool = field(
        default=True,
        metadata=_cli(
            "--no-progress",
            "no progress output on stderr",
            39,
            group=_RUN,
            kind="flag",
            inverted=True,
        ),
    )
    """Show a progress bar per epoch and a summary line per epoch on stderr."""

    allow_nonfinite: bool = field(
        default=False,
        metadata=_cli(
            "--allow-nonfinite",
            "train on when the loss becomes nan or inf (default: stop with an error)",
            40,
            group=_RUN,
            kind="flag",
        ),
    )
    """Keep training when the training loss becomes NaN or infinite. By default the run
    stops with a :class:`~approxsim.training.DivergedError` at the first such batch (the
    checkpoint of the last complete epoch stays): a diverged run would otherwise train NaN
    for every remaining epoch, and slowly, since GEMMs with NaN operands take the exact
    reference path."""

    def __post_init__(self) -> None:
        if not isinstance(self.out_dir, (str, os.PathLike)) or not str(self.out_dir):
            raise TrainError(f"out_dir must be a folder path, got {self.out_dir!r}")
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        model_info(self.model)  # raises UnknownModelError listing the valid names
        dataset_info(self.dataset)  # raises UnknownDatasetError listing the valid names
        check_multiplier("multiplier", self.multiplier, optional=False)
        check_multiplier("grad_input", self.grad_input, optional=True)
        check_multiplier("grad_weight", self.grad_weight, optional=True)
        check_int("epochs", self.epochs, 1)
        check_int("batch_size", self.batch_size, 1, optional=True)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        if self.lr is not None:
            _check_float("lr", self.lr, positive=True)
        if self.momentum is not None:
            _check_float("momentum", self.momentum, upper=1.0)
        if self.weight_decay is not None:
            _check_float("weight_decay", self.weight_decay)
        _check_choice("schedule", self.schedule, SCHEDULES)
        check_int("seed", self.seed, 0)
        if self.seed >= _SEED_LIMIT:
            raise TrainError(f"seed must be below 2^32, got {self.seed}")
        if self.data_dir is not None and not isinstance(self.data_dir, (str, os.PathLike)):
            raise TrainError(f"data_dir must be a folder path, got {self.data_dir!r}")
        check_int("max_train_samples", self.max_train_samples, 1, optional=True)
        check_int("max_test_samples", self.max_test_samples, 1, optional=True)
        object.__setattr__(self, "include", patterns("include", self.include))
        object.__setattr__(self, "exclude", patterns("exclude", self.exclude))
        check_int("threads", self.threads, 1, optional=True)
        if not isinstance(self.device, str) or not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):
            raise TrainError(f"device must be 'cpu' or 'cuda[:N]', got {self.device!r}")
        for flag in ("resume", "overwrite", "progress", "allow_nonfinite"):
            if not isinstance(getattr(self, flag), bool):
                raise TrainError(f"{flag} must be True or False, got {getattr(self, flag)!r}")
        if self.resume and self.overwrite:
            raise TrainError("resume and overwrite exclude each other: continue or start over")

    def resolve(self) -> ResolvedTrainConfig:
        """The settings with every ``None`` that means "the default" filled in.

        The backward multipliers become the forward one; batch size, optimizer, learning
        rate, momentum, weight decay and schedule become the model's defaults.

        Returns:
            The :class:`ResolvedTrainConfig`.
        """
        d = train_defaults(self.model)
        optimizer = self.optimizer or d.optimizer
        lr = self.lr
        if lr is None:
            lr = d.lr if optimizer == d.optimizer else _OPTIMIZER_LR[optimizer]
        momentum = self.momentum
        if momentum is None:
            momentum = d.momentum if optimizer == "sgd" else 0.0
        given = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        given.update(
            grad_input=self.multiplier if self.grad_input is None else self.grad_input,
            grad_weight=self.multiplier if self.grad_weight is None else self.grad_weight,
            batch_size=self.batch_size or d.batch_size,
            optimizer=optimizer,
            lr=float(lr),
            momentum=float(momentum),
            weight_decay=float(d.weight_decay if self.weight_decay is None else self.weight_decay),
            schedule=d.schedule if self.schedule is None else self.schedule,
        )
        return ResolvedTrainConfig(**given)

    def passes(self) -> PassMultipliers:
        """The multipliers of the forward, input-gradient and weight-gradient passes."""
        return PassMultipliers(self.multiplier, self.grad_input, self.grad_weight)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable settings (multipliers by name, paths as strings)."""
        return _settings_dict(self)


@dataclass(frozen=True)
class ResolvedTrainConfig:
    """A :class:`TrainConfig` after :meth:`TrainConfig.resolve`: nothing left to a default.

    The fields are :class:`TrainConfig`'s, in the same order (``config.json`` lists them so);
    the optimization settings and the backward multipliers always hold values. Fields
    that stay ``None`` mean a setting of their own (all samples, all layers, the dataset's
    default folders, threads unchanged), not "use a default".
    """

    out_dir: Path
    """Run folder."""
    model: str
    """Registered model name."""
    dataset: str
    """Registered dataset name."""
    multiplier: MultiplierLike
    """Forward multiplier."""
    grad_input: MultiplierLike
    """Input-gradient multiplier."""
    grad_weight: MultiplierLike
    """Weight-gradient multiplier."""
    epochs: int
    """Number of epochs."""
    batch_size: int
    """Global samples per optimizer step."""
    optimizer: str
    """``"sgd"`` or ``"adam"``."""
    lr: float
    """Initial learning rate."""
    momentum: float
    """SGD momentum (0.0 with Adam)."""
    weight_decay: float
    """L2 penalty."""
    schedule: str
    """``"none"`` or ``"cosine"``."""
    seed: int
    """Seed of weights and data order."""
    data_dir: str | os.PathLike[str] | None
    """Dataset folder; ``None``: the dataset's default folders."""
    max_train_samples: int | None
    """First N training samples; ``None``: all."""
    max_test_samples: int | None
    """First N test samples; ``None``: all."""
    include: tuple[str, ...] | None
    """Layers to convert; ``None``: every linear and convolution layer."""
    exclude: tuple[str, ...] | None
    """Layers kept exact; ``None``: none."""
    threads: int | None
    """CPU threads; ``None``: unchanged."""
    device: str
    """``"cpu"`` or ``"cuda[:N]"``."""
    resume: bool
    """Continue the run in ``out_dir``."""
    overwrite: bool
    """Start the run in ``out_dir`` over."""
    progress: bool
    """Progress output on stderr."""
    allow_nonfinite: bool
    """Train on when the training loss becomes NaN or infinite."""

    def passes(self) -> PassMultipliers:
        """The multipliers of the forward, input-gradient and weight-gradient passes."""
        return PassMultipliers(self.multiplier, self.grad_input, self.grad_weight)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable settings (multipliers by name, paths as strings): the ``config``
        section of ``config.json`` and of the checkpoint."""
        return _settings_dict(self)


def _settings_dict(cfg: TrainConfig | ResolvedTrainConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if isinstance(v, Multiplier):
            v = v.name
        elif isinstance(v, os.PathLike):
            v = str(v)
        elif isinstance(v, tuple):
            v = list(v)
        out[f.name] = v
    return out


# ---------------------------------------------------------------------------- validation
def check_int(name: str, value: Any, minimum: int, *, optional: bool = False) -> None:
    """Check that ``value`` is an integer ``>= minimum`` (or ``None`` when ``optional``).

    Raises:
        TrainError: it is not.
    """
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


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value is not None and value not in choices:
        raise TrainError(f"{name} must be one of {choices}, got {value!r}")


def check_multiplier(name: str, value: Any, *, optional: bool) -> None:
    """Check that ``value`` names a multiplier (or is ``None`` when ``optional``).

    Raises:
        TrainError: neither a :class:`~approxsim.Multiplier` nor a string.
        UnknownMultiplierError: an unknown name (the message lists the names).
    """
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


def patterns(name: str, value: Any) -> tuple[str, ...] | None:
    """Layer-name patterns as a tuple (``None`` stays ``None``).

    Raises:
        TrainError: not a non-empty string or a non-empty list of them.
    """
    if value is None:
        return None
    items = (value,) if isinstance(value, str) else tuple(value)
    if not items or not all(isinstance(p, str) and p for p in items):
        raise TrainError(
            f"{name} takes module name patterns such as 'features.*' (a string or a list of "
            f"them), got {value!r}"
        )
    return items
