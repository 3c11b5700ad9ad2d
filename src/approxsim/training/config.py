"""What determines a training run: :class:`TrainConfig` (as given) and
:class:`ResolvedTrainConfig` (every model default filled in).

Each field of :class:`TrainConfig` carries its documentation (the docstring under it) and, in
its ``metadata["cli"]``, a :class:`CLIOption` saying how ``approxsim train`` offers it; the
command line builds its options from these (``approxsim.cli.train.add_training_arguments``),
so a new setting is declared in one place.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from approxsim.data import dataset_info, list_datasets
from approxsim.models import list_models, model_info, train_defaults
from approxsim.multipliers import (
    Multiplier,
    MultiplierLike,
)
from approxsim.multipliers.integer import IntMultiplier
from approxsim.ops import PassMultipliers
from approxsim.training.errors import TrainError
from approxsim.training.validation import (
    check_choice,
    check_float,
    check_int,
    check_multiplier,
    int_multiplier_of,
    patterns,
)

__all__ = [
    "CLIOption",
    "OPTIMIZERS",
    "SCHEDULES",
    "TrainConfig",
    "ResolvedTrainConfig",
    "check_int",
    "check_multiplier",
    "int_multiplier_of",
    "patterns",
    "QUANT_FIELDS",
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
_QUANT = "quantized layers (integer multipliers only; defaults: those of approxsim.QuantConfig)"
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

    multiplier: MultiplierLike | IntMultiplier = field(
        default="fp32", metadata=_cli("--multiplier", "", 4, kind="source")
    )
    """Forward multiplier: a :class:`~approxsim.Multiplier` or a name (``"mitchell7"``;
    ``"fp32"`` trains with exact float32 and converts no layer), or an
    :class:`~approxsim.IntMultiplier` (or an integer built-in's name, ``"drum4_u8"``):
    quantization-aware training, the layers quantized (:func:`approxsim.convert_model` with
    ``quant=``, see the quantization fields) and calibrated on the first training samples
    before the first epoch. On the command line it is named by the options of
    ``approxsim.cli.common.add_multiplier_arguments`` (with the integer ones)."""

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

    grad: str | None = field(
        default=None,
        metadata=_cli(
            "--grad",
            "backward of quantized layers: ste (default) or lut",
            12,
            group=_QUANT,
            choices=("ste", "lut"),
        ),
    )
    """Backward of the quantized layers (integer multipliers only): ``"ste"`` (exact float
    GEMMs of the dequantized operands) or ``"lut"`` (difference tables of the approximate
    product); ``None``: ``"ste"``."""

    lut_step: int | None = field(
        default=None,
        metadata=_cli(
            "--lut-step",
            "half-width of the lut gradient tables' difference stencil, in codes (default 1)",
            12,
            group=_QUANT,
            kind="count",
            metavar="H",
        ),
    )
    """``QuantConfig.lut_step`` (``grad="lut"`` only): the gradient tables take
    ``(f(a+h, b) - f(a-h, b)) / 2h``; ``None``: 1."""

    quant_bits: int | None = field(
        default=None,
        metadata=_cli(
            "--quant-bits",
            "code width, at most the multiplier's (default: the multiplier's)",
            13,
            group=_QUANT,
            kind="count",
            metavar="B",
        ),
    )
    """Code width of the quantized layers (``QuantConfig.bits``); ``None``: the integer
    multiplier's operand width."""

    weight_granularity: str | None = field(
        default=None,
        metadata=_cli(
            "--weight-granularity",
            "weight scales per-channel (default) or per-tensor",
            14,
            group=_QUANT,
            choices=("per-channel", "per-tensor"),
        ),
    )
    """``QuantConfig.weight_granularity``; ``None``: per-channel."""

    calibration: str | None = field(
        default=None,
        metadata=_cli(
            "--calibration",
            "activation ranges from minmax (default) or percentile",
            15,
            group=_QUANT,
            choices=("minmax", "percentile"),
        ),
    )
    """``QuantConfig.calibration``; ``None``: minmax."""

    quant_mapping: str | None = field(
        default=None,
        metadata=_cli(
            "--quant-mapping",
            "affine or sign-magnitude (unsigned tables), symmetric (signed); default: auto",
            16,
            group=_QUANT,
            choices=("auto", "affine", "sign-magnitude", "symmetric"),
        ),
    )
    """``QuantConfig.mapping``; ``None``: auto (affine for unsigned multipliers, symmetric
    for signed ones)."""

    init_from: str | os.PathLike[str] | None = field(
        default=None,
        metadata=_cli(
            "--init-from",
            "start from the weights of this run or checkpoint (fine-tuning; fresh optimizer)",
            29,
            group=_RUN,
            metavar="RUN",
        ),
    )
    """A ``checkpoint.pt`` or run folder whose weights start a fresh run (the model must be
    the same; optimizer state, learning-rate schedule and history are not taken, so the run
    follows its own schedule). Typically a float run, fine-tuned here with an integer
    multiplier (quantization-aware) or with float32 as a control with the same schedule; a
    quantized run's range observers are left out. Read only when the run starts, not on
    resume."""

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
        check_multiplier("multiplier", self.multiplier, optional=False, integer=True)
        check_multiplier("grad_input", self.grad_input, optional=True)
        check_multiplier("grad_weight", self.grad_weight, optional=True)
        _check_quant_fields(self)
        check_int("epochs", self.epochs, 1)
        check_int("batch_size", self.batch_size, 1, optional=True)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        if self.lr is not None:
            check_float("lr", self.lr, positive=True)
        if self.momentum is not None:
            check_float("momentum", self.momentum, upper=1.0)
        if self.weight_decay is not None:
            check_float("weight_decay", self.weight_decay)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_int("seed", self.seed, 0)
        if self.seed >= _SEED_LIMIT:
            raise TrainError(f"seed must be below 2^32, got {self.seed}")
        if self.data_dir is not None and not isinstance(self.data_dir, (str, os.PathLike)):
            raise TrainError(f"data_dir must be a folder path, got {self.data_dir!r}")
        if self.init_from is not None and not isinstance(self.init_from, (str, os.PathLike)):
            raise TrainError(
                f"init_from must be a checkpoint or run folder, got {self.init_from!r}"
            )
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
        integer = int_multiplier_of(self.multiplier)
        if integer is not None:
            given["multiplier"] = integer
        backward = "fp32" if integer is not None else self.multiplier
        given.update(
            grad_input=backward if self.grad_input is None else self.grad_input,
            grad_weight=backward if self.grad_weight is None else self.grad_weight,
            grad=(self.grad or "ste") if integer is not None else None,
            batch_size=self.batch_size or d.batch_size,
            optimizer=optimizer,
            lr=float(lr),
            momentum=float(momentum),
            weight_decay=float(d.weight_decay if self.weight_decay is None else self.weight_decay),
            schedule=d.schedule if self.schedule is None else self.schedule,
        )
        return ResolvedTrainConfig(**given)

    def passes(self) -> PassMultipliers:
        """The float multipliers of the forward, input-gradient and weight-gradient passes
        (exact float32 for an integer multiplier, whose layers are quantized instead)."""
        return _passes(self)

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
    multiplier: MultiplierLike | IntMultiplier
    """Forward multiplier (an :class:`~approxsim.IntMultiplier` object for a quantized run)."""
    grad_input: MultiplierLike
    """Input-gradient multiplier (``"fp32"`` with an integer multiplier)."""
    grad_weight: MultiplierLike
    """Weight-gradient multiplier (``"fp32"`` with an integer multiplier)."""
    grad: str | None
    """Backward of the quantized layers (``"ste"`` / ``"lut"``); ``None``: a float run."""
    lut_step: int | None
    """``QuantConfig.lut_step``; ``None``: 1 (or a float run, or ``grad="ste"``)."""
    quant_bits: int | None
    """Code width; ``None``: the integer multiplier's (or a float run)."""
    weight_granularity: str | None
    """``QuantConfig.weight_granularity``; ``None``: its default (or a float run)."""
    calibration: str | None
    """``QuantConfig.calibration``; ``None``: its default (or a float run)."""
    quant_mapping: str | None
    """``QuantConfig.mapping``; ``None``: its default (or a float run)."""
    init_from: str | os.PathLike[str] | None
    """Run whose weights start a fresh run; ``None``: the seeded initialization."""
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
        """The float multipliers of the forward, input-gradient and weight-gradient passes
        (exact float32 for an integer multiplier, whose layers are quantized instead)."""
        return _passes(self)

    @property
    def int_multiplier(self) -> IntMultiplier | None:
        """The integer multiplier of a quantized run; ``None``: a float run."""
        return self.multiplier if isinstance(self.multiplier, IntMultiplier) else None

    def quant(self) -> Any:
        """The run's :class:`~approxsim.QuantConfig`; ``None`` for a float run."""
        if self.int_multiplier is None:
            return None
        from approxsim.nn.quant import QuantConfig

        kw: dict[str, Any] = {"grad": self.grad}
        kw.update({k: getattr(self, f) for f, k in QUANT_FIELDS.items() if k != "grad"})
        return QuantConfig(**{k: v for k, v in kw.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable settings (multipliers by name, paths as strings): the ``config``
        section of ``config.json`` and of the checkpoint."""
        return _settings_dict(self)


#: The quantization fields of :class:`TrainConfig` and the :class:`~approxsim.QuantConfig`
#: fields they set.
QUANT_FIELDS = {
    "grad": "grad",
    "lut_step": "lut_step",
    "quant_bits": "bits",
    "weight_granularity": "weight_granularity",
    "calibration": "calibration",
    "quant_mapping": "mapping",
}


def _passes(cfg: TrainConfig | ResolvedTrainConfig) -> PassMultipliers:
    if int_multiplier_of(cfg.multiplier) is not None:
        return PassMultipliers("fp32")
    return PassMultipliers(cast(MultiplierLike, cfg.multiplier), cfg.grad_input, cfg.grad_weight)


def _check_quant_fields(cfg: TrainConfig) -> None:
    given = [f for f in QUANT_FIELDS if getattr(cfg, f) is not None]
    if int_multiplier_of(cfg.multiplier) is None:
        if given:
            raise TrainError(
                f"{', '.join(given)} set up quantization-aware training, which needs an integer "
                "multiplier (an IntMultiplier; approxsim train: --int-multiplier NAME, "
                "--evoapprox FILE or --c FILE --function F --bits B); drop them for a float one"
            )
        return
    if cfg.grad_input is not None or cfg.grad_weight is not None:
        raise TrainError(
            "grad_input / grad_weight name float multipliers of float layers; the backward of "
            "quantized layers is grad='ste' or grad='lut' (--grad)"
        )
    check_choice("grad", cfg.grad, ("ste", "lut"))
    check_int("lut_step", cfg.lut_step, 1, optional=True)
    if cfg.lut_step is not None and cfg.grad != "lut":
        raise TrainError(
            f"lut_step={cfg.lut_step} shapes the gradient tables of grad='lut' (--grad lut); "
            f"this run's grad is {cfg.grad or 'ste'!r}"
        )
    check_int("quant_bits", cfg.quant_bits, 2, optional=True)
    check_choice("weight_granularity", cfg.weight_granularity, ("per-channel", "per-tensor"))
    check_choice("calibration", cfg.calibration, ("minmax", "percentile"))
    check_choice(
        "quant_mapping", cfg.quant_mapping, ("auto", "affine", "sign-magnitude", "symmetric")
    )


def _settings_dict(cfg: TrainConfig | ResolvedTrainConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if isinstance(v, (Multiplier, IntMultiplier)):
            v = v.name
        elif isinstance(v, os.PathLike):
            v = str(v)
        elif isinstance(v, tuple):
            v = list(v)
        out[f.name] = v
    return out
