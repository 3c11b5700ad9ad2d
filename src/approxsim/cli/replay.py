"""``approxsim replay``: prioritized replay on exact and associative-memory samplers.

Subcommands: ``dqn`` (DQN runs, here), ``fidelity`` and ``bench``
(:mod:`approxsim.cli.replay_tools`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from approxsim.cli.common import int_at_least

__all__ = [
    "register",
    "add_dqn_parser",
    "run_dqn_cli",
    "dqn_config_from_args",
    "add_report_parser",
    "run_report_cli",
]


def register(sub: Any) -> None:
    """Add the ``approxsim replay`` group to the top-level subparsers."""
    p = sub.add_parser(
        "replay",
        help="prioritized experience replay: DQN runs, sampler fidelity, sampler speed",
        description="Prioritized experience replay on exact samplers (sum tree, cumsum, "
        "multinomial) and an emulation of associative-memory sampling (AMPER).",
    )
    group = p.add_subparsers(dest="action", metavar="ACTION")
    group.required = True
    add_dqn_parser(group)
    add_report_parser(group)
    from approxsim.cli.replay_tools import add_commands

    add_commands(group)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def add_dqn_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``approxsim replay dqn`` (defaults: CleanRL's ``dqn.py`` on CartPole-v1)."""
    p = sub.add_parser(
        "dqn",
        help="train DQN agents with a replay sampler (one run folder per seed)",
        description="Train a DQN (CleanRL settings) on a gymnasium environment, its replay "
        "memory drawn by the named sampler. Writes OUT/seed<N>/ per seed: config.json, "
        "metrics.jsonl (return, loss, sampler cost every --log-every steps), checkpoint.pt "
        "(at episode ends; --resume continues), summary.json and priorities/step<N>.pt. "
        "Needs gymnasium: pip install approxsim[replay].",
    )
    p.set_defaults(handler=run_dqn_cli)
    p.add_argument("--out", required=True, metavar="DIR", help="folder of the seed runs")
    p.add_argument("--env", default="CartPole-v1", help="gymnasium id (CartPole-v1)")
    p.add_argument(
        "--replay",
        default="uniform",
        metavar="SAMPLER",
        help="uniform, per-sumtree, per-cumsum, per-multinomial, amper-knn, amper-fr",
    )
    p.add_argument("--seeds", type=int_at_least(1), default=1, metavar="N", help="seeds (1)")
    p.add_argument(
        "--first-seed", type=int_at_least(0), default=0, metavar="S", help="seeds S..S+N-1 (0)"
    )
    p.add_argument("--steps", type=int_at_least(1), default=100_000, help="steps (100000)")
    p.add_argument(
        "--multiplier",
        default="fp32",
        metavar="NAME",
        help="multiplier of the Q-network's linear layers (fp32: exact)",
    )
    g = p.add_argument_group("replay")
    g.add_argument(
        "--is-weights",
        choices=("none", "per", "sampler"),
        default="per",
        help="importance weights: none, PER's formula, or the sampler's own probabilities (per)",
    )
    g.add_argument("--alpha", type=_fraction_or_more, default=0.6, help="priority exponent (0.6)")
    g.add_argument("--beta-start", type=_fraction_or_more, default=0.4, help="beta at step 0 (0.4)")
    g.add_argument("--query", choices=("uniform", "size_biased"), help="AM query rule")
    g.add_argument("--bits", type=int, help="AM priority bits (4..8)")
    g.add_argument("--levels", choices=("linear", "log"), help="AM level spacing")
    g.add_argument("--k", type=int, help="AMPER-k neighbours per search")
    g.add_argument("--radius", type=int, help="AMPER-fr search radius (levels)")
    g.add_argument("--csp", choices=("query", "batch"), help="AM candidate set per query or batch")
    d = p.add_argument_group("DQN (CleanRL defaults)")
    d.add_argument("--buffer-size", type=int_at_least(1), default=10_000, help="(10000)")
    d.add_argument("--batch-size", type=int_at_least(1), default=128, help="(128)")
    d.add_argument("--learning-starts", type=int_at_least(0), default=10_000, help="(10000)")
    d.add_argument("--lr", type=_positive_float, default=2.5e-4, help="Adam rate (2.5e-4)")
    d.add_argument("--gamma", type=_fraction, default=0.99, help="discount (0.99)")
    d.add_argument("--train-every", type=int_at_least(1), default=10, help="(10)")
    d.add_argument("--target-every", type=int_at_least(1), default=500, help="(500)")
    d.add_argument("--explore-fraction", type=_fraction, default=0.5, help="(0.5)")
    r = p.add_argument_group("run")
    r.add_argument("--log-every", type=int_at_least(1), default=1_000, help="steps per record")
    r.add_argument(
        "--checkpoint-every",
        type=int_at_least(1),
        default=10_000,
        help="steps between checkpoints (10000)",
    )
    r.add_argument(
        "--priorities-every",
        type=int_at_least(1),
        default=10_000,
        help="steps between priority snapshots (10000)",
    )
    r.add_argument("--threads", type=int_at_least(1), default=1, help="CPU threads (1)")
    r.add_argument("--resume", action="store_true", help="continue the runs in --out")
    r.add_argument("--overwrite", action="store_true", help="start the runs in --out over")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--json", action="store_true", help="print the summaries as JSON")
    return p


def _fraction_or_more(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def dqn_config_from_args(args: argparse.Namespace, seed: int) -> Any:
    """The :class:`~approxsim.replay.dqn_config.DQNConfig` of one seed of the command."""
    from approxsim.replay.dqn_config import DQNConfig

    return DQNConfig(
        env=args.env,
        replay=args.replay,
        seed=seed,
        steps=args.steps,
        buffer_size=args.buffer_size,
        batch_size=args.batch_size,
        lr=args.lr,
        gamma=args.gamma,
        train_every=args.train_every,
        target_every=args.target_every,
        learning_starts=args.learning_starts,
        explore_fraction=args.explore_fraction,
        alpha=args.alpha,
        beta_start=args.beta_start,
        is_weights=args.is_weights,
        query=args.query,
        bits=args.bits,
        levels=args.levels,
        k=args.k,
        radius=args.radius,
        csp=args.csp,
        multiplier=args.multiplier,
        log_every=args.log_every,
        checkpoint_every=args.checkpoint_every,
        priorities_every=args.priorities_every,
        threads=args.threads,
    )


def run_dqn_cli(args: argparse.Namespace) -> int:
    """Run ``approxsim replay dqn``: every seed's run, then a one-line summary per seed.

    Every seed's settings and folder are checked before the first run starts; errors
    propagate to the command line's one handler (one line, status 2).
    """
    import json

    from approxsim._runtime import Progress
    from approxsim.replay.dqn import train_dqn
    from approxsim.replay.runs import check_dqn_folder

    if args.resume and args.overwrite:
        from approxsim.cli.common import CLIError

        raise CLIError("pass --resume or --overwrite, not both")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        from approxsim.cli.common import CLIError

        raise CLIError(f"--out {out} is a file; name a folder")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    configs = [dqn_config_from_args(args, s) for s in seeds]
    for cfg in configs:
        check_dqn_folder(out / f"seed{cfg.seed}", resume=args.resume, overwrite=args.overwrite)
    summaries = []
    for cfg in configs:
        summary = train_dqn(
            cfg,
            out / f"seed{cfg.seed}",
            resume=args.resume,
            overwrite=args.overwrite,
            progress=lambda desc, total: Progress(total, desc, not args.no_progress, unit="step"),
        )
        summaries.append({"seed": cfg.seed, "run": str(out / f"seed{cfg.seed}"), **summary})
        if not args.json:
            fin = summary["final_return"]
            solved = summary["steps_to_solve"]
            print(
                f"seed {cfg.seed}: final return {'-' if fin is None else f'{fin:.1f}'}, "
                f"AUC {summary['auc']:.1f}, steps to {summary['solved_return']:g}: "
                f"{'not reached' if solved is None else solved}  ({out / f'seed{cfg.seed}'})"
            )
    if args.json:
        print(json.dumps(summaries, indent=1))
    return 0


def add_report_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``approxsim replay report`` (statistics of DQN arms over seeds)."""
    p = sub.add_parser(
        "report",
        help="return curves and statistics of DQN replay arms over their seeds",
        description="Summarize arm folders of approxsim replay dqn (ARM/seed<N>/): mean return "
        "vs steps with 95% bootstrap CIs, final-return IQM, AUC, steps to 475, sampler cost per "
        "batch. Writes OUT.json, OUT.md and OUT.png.",
    )
    p.set_defaults(handler=run_report_cli)
    p.add_argument("arms", nargs="+", metavar="ARM_DIR", help="folders of seed runs")
    p.add_argument("--out", required=True, metavar="PREFIX", help="writes PREFIX.json/.md/.png")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    return p


def run_report_cli(args: argparse.Namespace) -> int:
    """Run ``approxsim replay report``: write the three files, print the Markdown table."""
    from approxsim._io import atomic_write_json, atomic_write_text, check_output
    from approxsim.plots.common import check_figure_path
    from approxsim.plots.replay import plot_return_curves
    from approxsim.replay.runs_summary import format_report, summarize_arms

    prefix = Path(args.out)
    paths = {ext: prefix.with_name(prefix.name + ext) for ext in (".json", ".md", ".png")}
    check_output(paths[".json"], overwrite=args.overwrite)
    check_output(paths[".md"], overwrite=args.overwrite)
    check_figure_path(paths[".png"], overwrite=args.overwrite)
    result = summarize_arms(args.arms)
    table = format_report(result)
    atomic_write_json(paths[".json"], result, overwrite=args.overwrite)
    atomic_write_text(paths[".md"], table + "\n", overwrite=args.overwrite)
    plot_return_curves(result, paths[".png"], overwrite=args.overwrite)
    print(table)
    return 0
