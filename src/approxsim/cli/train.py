"""``approxsim train`` and ``approxsim eval``.

The training options are not written out here: :func:`add_training_arguments` generates them
from :class:`~approxsim.training.TrainConfig`'s fields (each field's ``metadata["cli"]``), and
:func:`training_config_from_args` turns the parsed options back into a config, so
``approxsim train`` and ``approxsim cim train`` offer the same options.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from approxsim.cli.common import (
    CLIError,
    add_multiplier_arguments,
    any_multiplier_from_args,
    int_at_least,
    pass_multiplier,
    wants_int_multiplier,
)
from approxsim.training.config import CLIOption, TrainConfig

__all__ = [
    "register",
    "add_training_arguments",
    "training_config_from_args",
    "add_train_parser",
    "run_train_cli",
    "add_eval_parser",
    "run_eval_cli",
]

_positive_int = int_at_least(1)

_TRAIN_DESCRIPTION = (
    "Train a registered model on a dataset with every linear and convolution layer "
    "multiplying through a simulated multiplier (forward and both backward GEMMs). "
    "Writes OUT/config.json, OUT/metrics.jsonl (one line per epoch) and "
    "OUT/checkpoint.pt (after every epoch; --resume continues a stopped run). "
    "Progress goes to stderr. With an integer multiplier (--int-multiplier, --evoapprox, "
    "--c ... --bits) the layers are quantized (quantization-aware training). --init-from RUN "
    "starts from another run's weights (fine-tuning, float or quantized). Under torchrun "
    "(torchrun --nproc-per-node N -m approxsim train ...) the processes train with "
    "DistributedDataParallel; --batch-size is then the global batch, split across them, "
    "and only rank 0 writes files and output."
)


def register(sub: Any) -> None:
    """Add ``approxsim train`` and ``approxsim eval`` to the top-level subparsers."""
    add_train_parser(sub).set_defaults(handler=run_train_cli)
    add_eval_parser(sub).set_defaults(handler=run_eval_cli)


# ---------------------------------------------------------------------------- options
def _options() -> list[tuple[dataclasses.Field[Any], CLIOption]]:
    """The fields of :class:`TrainConfig` with their command-line options, in help order."""
    pairs = [(f, f.metadata["cli"]) for f in dataclasses.fields(TrainConfig)]
    return sorted(pairs, key=lambda pair: pair[1].order)


def _argparse_kwargs(f: dataclasses.Field[Any], opt: CLIOption) -> dict[str, Any]:
    """What ``add_argument`` takes for one option (``type``, ``action``, ``default`` ...)."""
    kw: dict[str, Any] = {"help": opt.help}
    if opt.names is not None:
        kw["help"] = opt.help.format(names=", ".join(opt.names()))
    if opt.kind == "flag":
        kw["action"] = "store_true"
    else:
        if opt.kind == "append":
            kw["action"] = "append"
        elif opt.kind in ("int", "count", "float"):
            kw["type"] = {"int": int, "count": _positive_int, "float": float}[opt.kind]
        if f.default is not dataclasses.MISSING and f.default is not None:
            kw["default"] = f.default
        if opt.choices is not None:
            kw["choices"] = opt.choices
        if opt.metavar is not None:
            kw["metavar"] = opt.metavar
    if opt.dest is not None:
        kw["dest"] = opt.dest
    if opt.required:
        kw["required"] = True
    return kw


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every option of ``approxsim train`` to ``parser`` (same flags, defaults and help).

    The options come from :class:`~approxsim.training.TrainConfig`'s fields; the forward
    multiplier is named by the options of
    :func:`~approxsim.cli.common.add_multiplier_arguments`.

    Args:
        parser: The (sub)command's parser.
    """
    groups: dict[str, Any] = {}
    for f, opt in _options():
        if opt.kind == "source":
            add_multiplier_arguments(parser, integer=True)
            continue
        target: Any = parser
        if opt.group is not None:
            if opt.group not in groups:
                groups[opt.group] = parser.add_argument_group(opt.group)
            target = groups[opt.group]
        target.add_argument(opt.flag, **_argparse_kwargs(f, opt))


def training_config_from_args(args: argparse.Namespace, **overrides: Any) -> TrainConfig:
    """The :class:`~approxsim.training.TrainConfig` that :func:`add_training_arguments`'
    options describe.

    Args:
        args: Parsed arguments of a parser given :func:`add_training_arguments`.
        **overrides: Field values that replace (and are not read from) the options, e.g.
            ``multiplier="fp32"`` for a command whose multiplier options are optional.

    Returns:
        The config (validated).

    Raises:
        TrainError: an invalid setting.
        MultiplierError: no or several multipliers named, or one that cannot be built.
        UnknownModelError, UnknownDatasetError: unknown names.
    """
    if "multiplier" in overrides and wants_int_multiplier(args):
        raise CLIError(
            "this command takes no integer multiplier (--int-multiplier, --evoapprox, --bits, "
            "--signed); quantization-aware training is approxsim train --int-multiplier ..."
        )
    kw: dict[str, Any] = {}
    for f, opt in sorted(_options(), key=lambda pair: _field_index(pair[0].name)):
        if f.name in overrides:
            continue
        if opt.kind == "source":
            kw[f.name] = any_multiplier_from_args(args)
            continue
        value = getattr(args, opt.attribute)
        if opt.kind == "multiplier":
            value = pass_multiplier(value)
        kw[f.name] = not value if opt.inverted else value
    kw.update(overrides)
    return TrainConfig(**kw)


def _field_index(name: str) -> int:
    # Fields are read in declaration order, so the forward multiplier is checked first.
    return [f.name for f in dataclasses.fields(TrainConfig)].index(name)


# ---------------------------------------------------------------------------- train
def add_train_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``approxsim train`` to the top-level subparsers (sets ``action=None``).

    Args:
        sub: What ``ArgumentParser.add_subparsers(dest="command")`` returned.

    Returns:
        The ``train`` parser.
    """
    p = sub.add_parser(
        "train",
        help="train a model with an approximate multiplier",
        description=_TRAIN_DESCRIPTION,
    )
    p.set_defaults(action=None)
    add_training_arguments(p)
    return p


def run_train_cli(args: argparse.Namespace) -> int:
    """Run ``approxsim train`` from parsed arguments; prints a summary and returns 0.

    Errors propagate to the command line's one handler (:func:`approxsim.cli.main`): one
    line on stderr, status 2 (nothing from the processes whose peer failed); Ctrl-C gives
    status 130 with the last complete epoch's checkpoint intact.
    """
    from approxsim.multipliers.integer import IntMultiplier
    from approxsim.training import train
    from approxsim.training.loop import format_loss

    config = training_config_from_args(args)
    result = train(config)
    if result["rank"] != 0:
        return 0  # rank 0 prints the summary
    final = result["final"]
    print(f"run          {result['out_dir']}")
    print(f"model        {result['model']} on {result['dataset']}")
    names = result["multipliers"]
    same = len(set(names.values())) == 1
    if isinstance(config.multiplier, IntMultiplier):
        mult = config.multiplier
        print(
            f"multiplier   {mult.name} (fingerprint {mult.fingerprint[:16]}), quantized, "
            f"grad {names['grad_input']}"
        )
    else:
        print(
            "multiplier   "
            + (names["forward"] if same else ", ".join(f"{k}={v}" for k, v in names.items()))
        )
    if final is not None:
        print(
            f"final        test acc {100 * final['test_acc']:.2f}% (epoch {final['epoch']}), "
            f"train loss {format_loss(final['train_loss'])}"
        )
        print(
            f"best         test acc {100 * result['best_test_acc']:.2f}% "
            f"(epoch {result['best_epoch']})"
        )
    return 0


# ---------------------------------------------------------------------------- eval
def add_eval_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``approxsim eval`` to the top-level subparsers (sets ``action=None``).

    Args:
        sub: What ``ArgumentParser.add_subparsers(dest="command")`` returned.

    Returns:
        The ``eval`` parser.
    """
    p = sub.add_parser(
        "eval",
        help="evaluate a trained checkpoint with a multiplier",
        description=(
            "Run a checkpoint written by `approxsim train` over a dataset split with the "
            "given multiplier in every converted layer (approximate inference). With an "
            "integer multiplier (--int-multiplier, --evoapprox, --c ... --bits) the float "
            "checkpoint is quantized after training: quantized layers calibrated on the "
            "first --calibration-samples training samples, every product through the table."
        ),
    )
    p.set_defaults(action=None)
    p.add_argument("--checkpoint", required=True, metavar="FILE", help="checkpoint.pt or run dir")
    add_multiplier_arguments(p, integer=True)
    _add_quant_arguments(p)
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


_QUANT_OPTIONS = {
    "quant_bits": "--quant-bits",
    "weight_granularity": "--weight-granularity",
    "calibration": "--calibration",
    "percentile": "--percentile",
    "mapping": "--mapping",
    "calibration_samples": "--calibration-samples",
}


def _add_quant_arguments(parser: argparse.ArgumentParser) -> None:
    # Defaults are None so that a float multiplier given any of them can be refused.
    g = parser.add_argument_group(
        "quantization (integer multipliers only; defaults: those of approxsim.QuantConfig)"
    )
    g.add_argument(
        "--quant-bits",
        type=int_at_least(2),
        metavar="B",
        help="code width, at most the multiplier's (default: the multiplier's)",
    )
    g.add_argument(
        "--weight-granularity",
        choices=["per-channel", "per-tensor"],
        help="weight scales per output channel (default) or one per tensor",
    )
    g.add_argument(
        "--calibration",
        choices=["minmax", "percentile"],
        help="activation ranges from min/max (default) or percentiles",
    )
    g.add_argument(
        "--percentile",
        type=float,
        metavar="P",
        help="upper percentile of --calibration percentile, in (50, 100] (default 99.99)",
    )
    g.add_argument(
        "--mapping",
        "--quant-mapping",
        dest="mapping",
        choices=["auto", "affine", "sign-magnitude", "symmetric"],
        help="how signed values meet the table: affine or sign-magnitude for unsigned "
        "multipliers, symmetric for signed ones (default auto: affine / symmetric)",
    )
    g.add_argument(
        "--calibration-samples",
        type=_positive_int,
        metavar="N",
        help="first N samples of the training split calibrate the activation ranges "
        "(default: the ranges of a quantization-aware run, else 512)",
    )


def _quant_from_args(args: argparse.Namespace, integer: bool) -> Any:
    """The :class:`~approxsim.QuantConfig` of the quantization options, ``None`` when the
    multiplier is a float one (then no option may be given)."""
    given = [flag for dest, flag in _QUANT_OPTIONS.items() if getattr(args, dest) is not None]
    if not integer:
        if given:
            raise CLIError(
                f"{', '.join(given)} set up quantized layers, which only an integer multiplier "
                "has; name one with --int-multiplier NAME, --evoapprox FILE or --c FILE "
                "--function F --bits B, or drop these options for a float multiplier"
            )
        return None
    from approxsim.nn.quant import QuantConfig

    kw = {
        "bits": args.quant_bits,
        "weight_granularity": args.weight_granularity,
        "calibration": args.calibration,
        "percentile": args.percentile,
        "mapping": args.mapping,
    }
    return QuantConfig(**{k: v for k, v in kw.items() if v is not None})


def run_eval_cli(args: argparse.Namespace) -> int:
    """Run ``approxsim eval`` from parsed arguments; prints the result and returns 0.

    Errors propagate to the command line's one handler (:func:`approxsim.cli.main`).
    """
    from approxsim.multipliers.integer import IntMultiplier
    from approxsim.training import evaluate
    from approxsim.training.loop import format_loss

    multiplier = any_multiplier_from_args(args)
    integer = isinstance(multiplier, IntMultiplier)
    result = evaluate(
        args.checkpoint,
        multiplier,
        quant=_quant_from_args(args, integer),
        calibration_samples=args.calibration_samples,
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
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    trained = result["trained_with"]
    print(f"checkpoint   {result['checkpoint']} (epoch {result['epoch']})")
    print(f"model        {result['model']}, trained with {trained['forward']}")
    print(f"data         {result['dataset']} {result['split']}, {result['samples']} samples")
    mult = result["multiplier"]
    if integer:
        q, cal = result["quant"], result["calibration"]
        print(f"multiplier   {mult['name']} (fingerprint {mult['fingerprint'][:16]})")
        source = (
            "the run's ranges"
            if cal["from"] == "checkpoint"
            else f"{q['calibration']} ranges from {cal['samples']} {cal['split']} samples"
        )
        print(
            f"quantized    {q['scheme']} {q['bits']}-bit, weights {q['weight_granularity']}, "
            + source
        )
    else:
        print(f"multiplier   {mult['name']}")
    print(f"accuracy     {100 * result['accuracy']:.2f}%")
    print(f"loss         {format_loss(result['loss'])}")
    return 0
