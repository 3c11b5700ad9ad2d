"""``approxsim compare``: one table (and plot) of several run folders."""

from __future__ import annotations

from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``approxsim compare`` to the top-level subparsers."""
    from approxsim.experiments.compare import add_compare_parser, run_compare_cli

    add_compare_parser(sub).set_defaults(handler=run_compare_cli)
