"""``approxsim cim mc | attack | eval | train | sweep`` (analog compute-in-memory)."""

from __future__ import annotations

from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``approxsim cim`` to the top-level subparsers."""
    from approxsim.cim.cli import add_cim_parser, run_cim_cli

    add_cim_parser(sub)
    sub.choices["cim"].set_defaults(handler=run_cim_cli)
