"""``approxsim bench ops | direct | models``."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``approxsim bench`` to the top-level subparsers."""
    from approxsim.experiments.bench import add_bench_parser

    add_bench_parser(sub)
    sub.choices["bench"].set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from approxsim.experiments.bench import run_bench_cli
    from approxsim.experiments.bench_direct import run_direct_cli
    from approxsim.experiments.bench_models import run_models_cli

    handlers = {"ops": run_bench_cli, "direct": run_direct_cli, "models": run_models_cli}
    return handlers[args.action](args)
