"""``approxsim sweep run`` and ``approxsim sweep report``: design-space sweeps from a spec.

Subcommands::

    approxsim sweep run    SPEC.toml --out DIR [--executor local|ray] [--jobs N] [--retries R]
                           [--address auto|HOST:PORT] [--cpus-per-run C] [--gpus-per-run G]
                           [--dry-run] [--no-progress]
    approxsim sweep report DIR [--metric M] [--baseline AXIS=VALUE] [--x METRIC]
                           [--format md|csv|json] [--out FILE] [--plot FILE.png] [--overwrite]

Before anything runs, every point's options are parsed by the base command's own parser and
turned into its settings here (``approxsim train``: the training config, its multipliers
built), so a value the base command would reject is refused up front, naming the point. The
library work is :mod:`approxsim.sweep`; see docs/sweeps.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from approxsim.cli.common import CLIError, finite_float, int_at_least

__all__ = ["register", "add_sweep_parser", "run_sweep_cli", "point_check", "command_options"]

_pos_int = int_at_least(1)
_nonneg_int = int_at_least(0)


def register(sub: Any) -> None:
    """Add ``approxsim sweep`` and its subcommands to the top-level subparsers."""
    add_sweep_parser(sub).set_defaults(handler=run_sweep_cli)


def add_sweep_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``approxsim sweep`` (``run``, ``report``; ``dest="action"``).

    Args:
        sub: What ``ArgumentParser.add_subparsers(dest="command")`` returned.

    Returns:
        The ``sweep`` parser.
    """
    p = sub.add_parser(
        "sweep",
        help="many runs of one command from a spec file (local or Ray), and their report",
        description="Cross the axes of a TOML spec (model, multiplier, seed, lr, eps ...) "
        "over a base command (train, eval, cim mc, cim attack, replay dqn): one ordinary run "
        "folder per point under --out, complete points skipped, interrupted ones resumed; then a "
        "table "
        "(mean ± std over seeds, gap to a baseline) and a Pareto plot. See docs/sweeps.md.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    _add_run(actions)
    _add_report(actions)
    return p


def _add_run(sub: Any) -> None:
    from approxsim.sweep import EXECUTORS

    r = sub.add_parser(
        "run",
        help="run the points of a spec that are not complete yet",
        description="Check every point of SPEC against the base command (nothing runs if "
        "one is refused), then run the points that are not complete in DIR/<point> and "
        "record the sweep in DIR/sweep-state.json. A failed point is retried --retries "
        "times, reported, and never stops the sweep. Exit status 1 when points failed.",
    )
    r.add_argument("spec", metavar="SPEC.toml", help="the sweep spec (docs/sweeps.md)")
    r.add_argument("--out", required=True, metavar="DIR", help="the sweep's folder")
    r.add_argument("--executor", choices=EXECUTORS, default="local", help="local (default) or ray")
    r.add_argument(
        "--jobs",
        type=_pos_int,
        default=1,
        help="points at a time with --executor local, each given cores/N threads (1)",
    )
    r.add_argument("--retries", type=_nonneg_int, default=1, help="retries of a failed point (1)")
    r.add_argument(
        "--address",
        metavar="auto|HOST:PORT",
        help="Ray cluster to join (default: start Ray on this machine)",
    )
    r.add_argument(
        "--cpus-per-run",
        type=finite_float(positive=True),
        default=1.0,
        help="CPUs a Ray task asks for, and threads its run uses (1)",
    )
    r.add_argument(
        "--gpus-per-run",
        type=finite_float(positive=False),
        default=0.0,
        help='GPUs a Ray task asks for (0; the spec then sets device = "cuda")',
    )
    r.add_argument("--dry-run", action="store_true", help="check the spec, print the points")
    r.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _add_report(sub: Any) -> None:
    from approxsim.sweep import X_METRICS

    r = sub.add_parser(
        "report",
        help="table and Pareto plot of a sweep's results",
        description="One row per point less its seed: mean ± std over the complete seeds, "
        "the gap to a baseline and a multiplier metric, Pareto-optimal rows marked. Reads "
        "DIR only, so it works while the sweep runs.",
    )
    r.add_argument("dir", metavar="DIR", help="the sweep's folder (--out of sweep run)")
    r.add_argument(
        "--metric",
        help="number to summarize (train: final_test_acc, best_test_acc; eval: accuracy; "
        "cim mc: mean, p1, min; cim attack: heldout_accuracy, attack_accuracy; replay dqn: "
        "final_return, auc)",
    )
    r.add_argument(
        "--baseline",
        metavar="AXIS=VALUE",
        help="reference rows: the same values with AXIS=VALUE (default multiplier=fp32)",
    )
    r.add_argument("--x", choices=X_METRICS, help="multiplier metric of the plot")
    r.add_argument("--format", choices=["md", "csv", "json"], default="md", help="table (md)")
    r.add_argument("--out", metavar="FILE", help="write the table to FILE instead of stdout")
    r.add_argument("--plot", metavar="FILE.png", help="write the Pareto plot")
    r.add_argument("--overwrite", action="store_true", help="replace --out / --plot files")


def run_sweep_cli(args: argparse.Namespace) -> int:
    """Run an ``approxsim sweep`` subcommand from parsed arguments; returns the exit status."""
    return _run(args) if args.action == "run" else _report(args)


# ---------------------------------------------------------------------------- run
def _run(args: argparse.Namespace) -> int:
    from approxsim._runtime import Progress, say
    from approxsim.sweep import load_spec, plan_sweep, run_sweep

    spec = load_spec(args.spec)
    plan = plan_sweep(
        spec, args.out, options=command_options(spec.command), check=point_check(spec.command)
    )
    if args.dry_run:
        for p in plan.points:
            print(f"{p.name}: approxsim {' '.join(plan.command.words + p.argv)}")
        print(f"{len(plan.points)} points, checked; nothing ran")
        return 0
    show = not args.no_progress
    result = run_sweep(
        plan,
        executor=args.executor,
        jobs=args.jobs,
        retries=args.retries,
        address=args.address,
        cpus_per_run=args.cpus_per_run,
        gpus_per_run=args.gpus_per_run,
        progress=lambda desc, total: Progress(total, desc, show, unit="run"),
        report=lambda line: say(True, f"sweep: {line}"),
    )
    print(
        f"sweep {result['out']}: {result['points']} points, {result['done']} done "
        f"({result['skipped']} complete before), {len(result['failed'])} failed"
    )
    for name, error in result["errors"].items():
        print(f"  FAILED {name}: {error} (log: {Path(result['out']) / 'logs' / name}.log)")
    print(f"report: approxsim sweep report {result['out']}")
    return 1 if result["failed"] else 0


def command_options(words: tuple[str, ...]) -> set[str]:
    """The option strings of ``approxsim <words>`` (``--model``, ``--seed`` ...).

    Args:
        words: The command (``("cim", "mc")``).

    Returns:
        Its options.
    """
    from approxsim.cli import build_parser

    parser: argparse.ArgumentParser = build_parser()
    for word in words:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
    return {s for a in parser._actions for s in a.option_strings}


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """``parser.parse_args(argv)`` with argparse's usage error as a :class:`CLIError`."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return parser.parse_args(argv)
    except SystemExit:
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        message = lines[-1] if lines else "the options are refused"
        raise CLIError(message.split(": error: ", 1)[-1]) from None


def point_check(words: tuple[str, ...]) -> Callable[[list[str]], dict[str, Any] | None]:
    """What checks one point of a sweep of ``approxsim <words>``: its options parsed by the
    command's own parser, then turned into the command's settings (the training config, the
    multiplier, the device model; the checkpoint named must exist).

    Args:
        words: The base command.

    Returns:
        A function of the point's full option list (the command's words first) that returns
        ``{"multiplier": {...}}`` (name, kind, error statistics, power) and raises an
        :class:`~approxsim.ApproxsimError` for a value the command rejects.
    """
    from approxsim.cli import build_parser

    parser = build_parser()
    settings = _SETTINGS[" ".join(words)]

    def check(argv: list[str]) -> dict[str, Any] | None:
        args = _parse(parser, argv)
        try:
            multiplier = settings(args)
        except OSError as exc:
            raise CLIError(str(exc)) from None
        return {"multiplier": multiplier_info(multiplier)}

    return check


def _train_settings(args: argparse.Namespace) -> Any:
    from approxsim.cli.common import any_multiplier_from_args
    from approxsim.cli.train import training_config_from_args

    training_config_from_args(args)
    return any_multiplier_from_args(args)


def _eval_settings(args: argparse.Namespace) -> Any:
    from approxsim.cli.common import any_multiplier_from_args

    _need_file(args.checkpoint)
    return any_multiplier_from_args(args)


def _cim_settings(args: argparse.Namespace) -> Any:
    from approxsim.cli.cim_commands import device_config_from_args
    from approxsim.cli.common import multiplier_from_args

    _need_file(args.checkpoint)
    device_config_from_args(args)
    if not any(getattr(args, k, None) for k in ("multiplier", "c", "approxtrain_lut", "lut")):
        return "fp32"
    return multiplier_from_args(args)


def _need_file(path: str) -> None:
    if not Path(path).exists():
        raise CLIError(f"--checkpoint {path} does not exist")


def _dqn_settings(args: argparse.Namespace) -> Any:
    from approxsim.cli.replay import dqn_config_from_args

    for seed in range(args.first_seed, args.first_seed + args.seeds):
        dqn_config_from_args(args, seed)
    return args.multiplier or "fp32"


_SETTINGS: dict[str, Callable[[argparse.Namespace], Any]] = {
    "train": _train_settings,
    "eval": _eval_settings,
    "cim mc": _cim_settings,
    "cim attack": _cim_settings,
    "replay dqn": _dqn_settings,
}


def multiplier_info(multiplier: Any) -> dict[str, Any]:
    """What a sweep records about a point's multiplier: name, kind, exactness, error
    statistics, and the circuit's power when its file gives one (EvoApproxLib ``PDK45_PWR``).

    Args:
        multiplier: A :class:`~approxsim.Multiplier`, an
            :class:`~approxsim.multipliers.IntMultiplier` or a float multiplier's name.

    Returns:
        A JSON-ready dictionary.
    """
    from approxsim.multipliers import get_multiplier
    from approxsim.multipliers.integer import IntMultiplier

    if isinstance(multiplier, str):
        multiplier = get_multiplier(multiplier)
    circuit = (multiplier.provenance.get("evoapprox") or {}).get("circuit") or {}
    power = (circuit.get("PDK45_PWR") or {}).get("value")
    if isinstance(multiplier, IntMultiplier):
        return {
            "name": multiplier.name,
            "kind": "integer",
            "exact": False,
            "fingerprint": multiplier.fingerprint,
            "error_stats": multiplier.error_stats(),
            "power_mw": power,
        }
    return {
        "name": multiplier.name,
        "kind": "float",
        "exact": bool(multiplier.is_exact),
        "error_stats": None if multiplier.is_exact else multiplier.error_stats(),
        "power_mw": power,
    }


# ---------------------------------------------------------------------------- report
def _report(args: argparse.Namespace) -> int:
    from approxsim._io import atomic_write_text, check_output
    from approxsim.sweep import format_report, sweep_report

    if args.out:
        check_output(args.out, overwrite=args.overwrite)
    if args.plot:
        from approxsim.plots.common import check_figure_path

        check_figure_path(args.plot, overwrite=args.overwrite)
    report = sweep_report(args.dir, metric=args.metric, baseline=args.baseline, x=args.x)
    text = format_report(report, args.format)
    if args.out:
        atomic_write_text(args.out, text, overwrite=args.overwrite)
        print(f"table written to {args.out}")
    else:
        print(text, end="")
    if args.plot:
        from approxsim.plots.sweep import plot_sweep_report

        print(f"plot written to {plot_sweep_report(report, args.plot, overwrite=args.overwrite)}")
    return 0
