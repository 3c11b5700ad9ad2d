"""``approxsim cim``: Monte Carlo, worst-case search, replay, robustness training, sweeps.

Subcommands::

    approxsim cim mc      --checkpoint RUN --sigma 0.02 [--samples 100] [--out mc.json]
    approxsim cim attack  --checkpoint RUN --eps 0.03 [--method auto|pgd|cw] [--save p.pt]
    approxsim cim eval    --checkpoint RUN [--perturbation p.pt | --sigma S --seed K]
    approxsim cim train   --method noise|adversarial|standard --out DIR [train options]
    approxsim cim sweep   --checkpoint RUN... --eps 0.01 0.02 ... --out DIR

This module declares the options; :mod:`approxsim.cli.cim_commands` runs the commands on
:mod:`approxsim.cim`. Checkpoints are those of ``approxsim train`` (or ``approxsim cim
train``). User errors print one line and exit with status 2 (the handler of
:mod:`approxsim.cli`); Ctrl-C exits with 130 after saving what is complete.
"""

from __future__ import annotations

import argparse
from typing import Any

from approxsim._runtime import thread_settings
from approxsim.cim import MAPPINGS, OBJECTIVES, SEARCH_METHODS, SEARCH_SPACES, TRAIN_METHODS
from approxsim.cim.search import BOUND_UNITS
from approxsim.cli.common import add_multiplier_arguments, finite_float, int_at_least
from approxsim.cli.train import add_training_arguments

__all__ = ["register", "add_cim_parser", "run_cim_cli", "CIM_ACTIONS"]

CIM_ACTIONS = ("mc", "attack", "eval", "train", "sweep")


def register(sub: Any) -> None:
    """Add ``approxsim cim`` and its subcommands to the top-level subparsers.

    Args:
        sub: What ``ArgumentParser.add_subparsers(dest="command")`` returned.
    """
    add_cim_parser(sub).set_defaults(handler=run_cim_cli)


def run_cim_cli(args: argparse.Namespace) -> int:
    """Run an ``approxsim cim`` subcommand from parsed arguments with its thread count.

    Errors are raised (:mod:`approxsim.cli` prints them); Ctrl-C where a command keeps
    partial work prints what was kept and returns 130.

    Args:
        args: The parsed command line (``args.action`` names the subcommand).

    Returns:
        The exit status.
    """
    from approxsim.cli.cim_commands import COMMANDS

    with thread_settings(getattr(args, "threads", None)):
        return COMMANDS[args.action](args)


# ---------------------------------------------------------------------------- argument types
_pos_int = int_at_least(1)
_nonneg_int = int_at_least(0)
_nonneg_float = finite_float(positive=False)
_pos_float = finite_float(positive=True)


# ---------------------------------------------------------------------------- option groups
def _add_device_options(
    p: argparse.ArgumentParser, *, sigma: bool, layers: bool = True, clip: bool = False
) -> None:
    g = p.add_argument_group("device model")
    # No argparse defaults (DeviceConfig's apply): `cim eval --perturbation` must tell the
    # options a user gave, which have to agree with the file, from ones left out.
    g.add_argument("--weight-bits", type=_pos_int, help="weight bits N (8)")
    g.add_argument("--device-bits", type=_pos_int, help="bits per device m (2)")
    g.add_argument("--mapping", choices=MAPPINGS, help="signed weights (sign-magnitude)")
    if sigma:
        g.add_argument(
            "--sigma",
            type=_nonneg_float,
            default=0.0,
            help="device-to-device std, fraction of a device's range (0)",
        )
        g.add_argument(
            "--write-verify",
            type=_pos_float,
            metavar="TOL",
            help="write-verify the devices to |dg| <= TOL",
        )
        g.add_argument(
            "--verify-slices",
            type=_pos_int,
            metavar="K",
            help="write-verify only the K most significant slices (default: all)",
        )
        g.add_argument(
            "--read-noise", type=_nonneg_float, default=0.0, help="per-read noise std (0)"
        )
    if sigma or clip:
        g.add_argument(
            "--clip",
            action="store_true",
            help="clip every device's conductance g + dg to its range [0, 1] (default: "
            "additive deviations, unclipped)",
        )
    if layers:
        g.add_argument("--include", action="append", metavar="PAT", help="map only these layers")
        g.add_argument(
            "--exclude", action="append", metavar="PAT", help="keep these layers digital"
        )


def _add_model_options(p: argparse.ArgumentParser, *, many: bool = False) -> None:
    if many:
        p.add_argument(
            "--checkpoint",
            action="append",
            required=True,
            metavar="RUN",
            help="checkpoint.pt or run folder (repeat for several models)",
        )
    else:
        p.add_argument("--checkpoint", required=True, metavar="RUN", help="checkpoint or run dir")
    add_multiplier_arguments(p)
    p.set_defaults(multiplier=None)
    r = p.add_argument_group("data and run")
    r.add_argument("--dataset", help="dataset (default: the checkpoint's)")
    r.add_argument("--data-dir", metavar="DIR", help="folder with the dataset's files")
    r.add_argument("--batch-size", type=_pos_int, default=1000, help="scoring batch size (1000)")
    r.add_argument("--threads", type=_pos_int, metavar="N", help="CPU threads")
    r.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    r.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")


def _add_split_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data to score")
    g.add_argument("--split", choices=["test", "train"], default="test", help="split (test)")
    g.add_argument("--offset", type=_nonneg_int, default=0, help="skip the first K samples")
    g.add_argument("--max-samples", type=_pos_int, metavar="N", help="score N samples only")


def _add_attack_split_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("attack and held-out splits")
    g.add_argument(
        "--attack-split",
        choices=["test", "train"],
        default="test",
        help="test: attack the first --attack-samples test images, hold out the rest; "
        "train: attack training images, hold out the whole test set (test)",
    )
    g.add_argument(
        "--attack-samples",
        type=_pos_int,
        metavar="N",
        help="attack-split size (default: half the test set, or 5000 training images)",
    )
    g.add_argument(
        "--heldout-samples", type=_pos_int, metavar="N", help="score N held-out samples only"
    )


def _add_search_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("search")
    g.add_argument(
        "--unit",
        choices=BOUND_UNITS,
        default="weight",
        help="weight: eps is |dw|/max|w| per weight (the paper's); device: |dg| per device",
    )
    g.add_argument(
        "--budget",
        type=_pos_int,
        metavar="STEPS",
        help="gradient steps (minibatch forward+backward passes) of the whole search, shared "
        "by its runs (default: --steps x --restarts = 200)",
    )
    g.add_argument("--steps", type=_pos_int, default=100, help="steps per restart (100)")
    g.add_argument("--restarts", type=_pos_int, default=2, help="random restarts of pgd / cw (2)")
    g.add_argument("--step-size", type=_pos_float, help="PGD first step, in units of eps (0.25)")
    g.add_argument("--lr", type=_pos_float, default=0.1, help="CW Adam learning rate (0.1)")
    g.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default="margin",
        help="what pgd / cw minimize (margin; auto runs several)",
    )
    g.add_argument("--kappa", type=_nonneg_float, default=0.0, help="margin clip of pgd / cw (0)")
    g.add_argument(
        "--space",
        choices=SEARCH_SPACES,
        default="auto",
        help="search variables: per weight, per device, or auto (per device with --clip)",
    )
    g.add_argument("--search-batch-size", type=_pos_int, default=256, help="samples per step (256)")
    g.add_argument("--seed", type=_nonneg_int, default=0, help="seed (0)")


def add_cim_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add ``approxsim cim`` and its subcommands (``dest="action"``).

    Args:
        subparsers: What ``ArgumentParser.add_subparsers(dest="command")`` returned.

    Returns:
        The ``cim`` parser.
    """
    cim = subparsers.add_parser(
        "cim",
        help="analog compute-in-memory: device variation, Monte Carlo, worst case",
        description=(
            "Map a trained model's linear and convolution layers to non-volatile devices "
            "(weights scaled to the layer's max |w|, quantized to N bits, bit-sliced over "
            "devices of m bits) and measure accuracy under device variation: Monte Carlo over "
            "chips, worst-case search within a bound, robustness training and sweeps. See "
            "docs/cim.md."
        ),
    )
    sub = cim.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    for add in (_add_mc, _add_attack, _add_eval, _add_train, _add_sweep):
        add(sub)
    return cim


# ---------------------------------------------------------------------------- subcommands
def _add_mc(sub: Any) -> None:
    mc = sub.add_parser(
        "mc",
        help="Monte Carlo accuracy over sampled chips",
        description="Score S chips with device variation sigma; print mean, std, low "
        "percentiles and their confidence intervals.",
    )
    _add_model_options(mc)
    _add_device_options(mc, sigma=True)
    _add_split_options(mc)
    mc.add_argument("--samples", type=_pos_int, default=100, help="chips S (100)")
    mc.add_argument("--seed", type=_nonneg_int, default=0, help="seed (0)")
    mc.add_argument("--confidence", type=float, default=0.95, help="interval coverage (0.95)")
    mc.add_argument("--out", metavar="FILE.json", help="write the result (kept up to date)")
    mc.add_argument("--resume", action="store_true", help="continue the run in --out")
    mc.add_argument("--save-worst", metavar="FILE.pt", help="save the worst chip for replay")
    mc.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --out and --save-worst if they exist (a new run)",
    )
    mc.add_argument("--json", action="store_true", help="print JSON")


def _add_attack(sub: Any) -> None:
    at = sub.add_parser(
        "attack",
        help="worst-case search of the device deviations within a bound",
        description="Search |dg| <= eps (or the equivalent per-weight bound) for the "
        "deviations that minimize accuracy on the attack split (auto: several objectives "
        "and starts within one budget, the worst chip kept; or PGD / the CW-style search "
        "alone); score on the attack and the held-out split; print which run found the "
        "chip and what the search cost; save the perturbation for replay. With --clip the "
        "search runs over the devices, inside their conductance range.",
    )
    _add_model_options(at)
    _add_device_options(at, sigma=False, clip=True)
    _add_attack_split_options(at)
    at.add_argument("--eps", type=_pos_float, required=True, help="the bound (see --unit)")
    at.add_argument(
        "--method", choices=SEARCH_METHODS, default="auto", help="auto (default), pgd or cw"
    )
    _add_search_options(at)
    at.add_argument("--save", metavar="FILE.pt", help="save the perturbation (replay: cim eval)")
    at.add_argument("--out", metavar="FILE.json", help="write the result")
    at.add_argument(
        "--overwrite", action="store_true", help="replace --save and --out if they exist"
    )
    at.add_argument("--json", action="store_true", help="print JSON")


def _add_eval(sub: Any) -> None:
    ev = sub.add_parser(
        "eval",
        help="score one chip: nominal, sampled, or a saved perturbation",
        description="Accuracy of the chip without variation, of chip --seed drawn with "
        "--sigma, or of a saved perturbation (--perturbation FILE.pt, e.g. from cim attack "
        "--save or cim mc --save-worst).",
    )
    _add_model_options(ev)
    _add_device_options(ev, sigma=True)
    _add_split_options(ev)
    ev.add_argument("--perturbation", metavar="FILE.pt", help="a saved perturbation")
    ev.add_argument(
        "--no-strict", action="store_true", help="apply a perturbation made for other weights"
    )
    ev.add_argument("--seed", type=_nonneg_int, default=0, help="chip seed with --sigma (0)")
    ev.add_argument("--json", action="store_true", help="print JSON")


def _add_train(sub: Any) -> None:
    tr = sub.add_parser(
        "train",
        help="noise-injection or adversarial weight-perturbation training",
        description="approxsim train with a CIM training step: noise injection (a fresh chip "
        "drawn with --sigma per minibatch) or adversarial weight perturbation (the worst "
        "chip within --eps per minibatch). Takes every option of approxsim train (the "
        "multiplier is optional here: exact float32 by default); --include / --exclude name "
        "the layers that run on the simulated hardware, converted to the multiplier and "
        "mapped to the chip. Writes the same run folder as approxsim train.",
    )
    # Every option of `approxsim train`, declared once there; the CIM options come on top.
    # --include / --exclude are the training ones: the layers they name are converted to the
    # multiplier and mapped to the chip (see the description).
    add_training_arguments(tr)
    tr.add_argument("--method", choices=TRAIN_METHODS, required=True, help="training method")
    _add_device_options(tr, sigma=True, layers=False)
    g = tr.add_argument_group("adversarial weight perturbation")
    g.add_argument("--eps", type=_pos_float, default=0.02, help="per-weight bound (0.02)")
    g.add_argument("--adv-steps", type=_pos_int, default=1, help="ascent steps per batch (1)")
    g.add_argument("--adv-step-size", type=_pos_float, help="step in units of eps (2.5/steps)")


def _add_sweep(sub: Any) -> None:
    sw = sub.add_parser(
        "sweep",
        help="Monte Carlo and worst case over several bounds and models, with a plot",
        description="For each checkpoint and each eps: Monte Carlo with sigma = eps (per "
        "device) on the held-out split, and the worst case within eps searched on the attack "
        "split. Writes OUT/sweep.json (after every piece; --resume continues) and "
        "OUT/sweep.png.",
    )
    _add_model_options(sw, many=True)
    _add_device_options(sw, sigma=False, clip=True)
    _add_attack_split_options(sw)
    sw.add_argument("--eps", type=_pos_float, nargs="+", required=True, help="bounds (see --unit)")
    sw.add_argument("--label", action="append", help="label per checkpoint (default: method)")
    sw.add_argument("--samples", type=_pos_int, default=50, help="Monte Carlo chips (50)")
    sw.add_argument(
        "--mc-bounded",
        action="store_true",
        help="write-verify the Monte Carlo chips to |dg| <= eps (inside the search box)",
    )
    sw.add_argument(
        "--methods",
        nargs="+",
        choices=SEARCH_METHODS,
        default=["auto"],
        help="search methods (auto)",
    )
    _add_search_options(sw)
    sw.add_argument("--out", required=True, metavar="DIR", help="folder for sweep.json/.png")
    sw.add_argument("--resume", action="store_true", help="continue the sweep in --out")
    sw.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUT/sweep.json and OUT/sweep.png if they exist (a new sweep)",
    )
