"""``approxsim compare``: one table (and plot) of several run folders."""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["register", "add_compare_parser", "run_compare_cli"]


def register(sub: Any) -> None:
    """Add ``approxsim compare`` to the top-level subparsers."""
    add_compare_parser(sub).set_defaults(handler=run_compare_cli)


def add_compare_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``approxsim compare`` to the top-level subparsers (sets ``action=None``).

    Args:
        sub: What ``ArgumentParser.add_subparsers(dest="command")`` returned.

    Returns:
        The ``compare`` parser.
    """
    p = sub.add_parser(
        "compare",
        help="compare training runs (accuracy table, curves)",
        description=(
            "Print final and best test accuracy of training runs and their gap to a baseline "
            "run (default: the first exact fp32 run), and optionally plot their curves."
        ),
    )
    p.set_defaults(action=None)
    p.add_argument(
        "runs",
        nargs="+",
        metavar="RUN_DIR",
        help="run folders of approxsim train or approxsim replay dqn",
    )
    p.add_argument("--baseline", metavar="RUN_DIR", help="reference run (default: first fp32 run)")
    p.add_argument("--plot", metavar="FILE.png", help="write train loss / test accuracy curves")
    p.add_argument("--overwrite", action="store_true", help="replace --plot FILE if it exists")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--group-seeds",
        action="store_true",
        help="one row per group of runs that differ only in --seed: mean ± std of complete "
        "runs, as a Markdown table",
    )
    return p


def run_compare_cli(args: argparse.Namespace) -> int:
    """Run ``approxsim compare`` from parsed arguments; prints the table and returns 0.

    Errors (:class:`~approxsim.training.CompareError`, ``PlotError``, ``OutputExistsError``,
    ``OSError``) propagate to the command line's one handler (:func:`approxsim.cli.main`):
    one line on stderr, status 2. ``--plot FILE`` is checked before any run is read.
    """
    from approxsim.training.compare import (
        CompareError,
        compare_runs,
        compare_seed_groups,
        format_comparison,
        format_seed_groups,
    )

    if args.group_seeds:
        if args.baseline or args.plot:
            raise CompareError("--group-seeds takes neither --baseline nor --plot")
        grouped = compare_seed_groups(args.runs)
        print(json.dumps(grouped, indent=1) if args.json else format_seed_groups(grouped))
        return 0
    if args.plot:
        from approxsim.plots.common import check_figure_path

        check_figure_path(args.plot, overwrite=args.overwrite)
    result = compare_runs(args.runs, args.baseline)
    if args.plot:
        runs = [r["run"] for r in result["runs"]]
        if any(r["kind"] == "dqn" for r in result["runs"]):
            from approxsim.plots.replay import plot_dqn_runs as plot_runs
        else:
            from approxsim.plots.curves import plot_runs
        result["plot"] = str(plot_runs(runs, args.plot, overwrite=args.overwrite))
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(format_comparison(result))
        if args.plot:
            print(f"plot written to {result['plot']}")
    return 0
