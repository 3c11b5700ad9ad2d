"""``approxsim train`` and ``approxsim eval``."""

from __future__ import annotations

from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``approxsim train`` and ``approxsim eval`` to the top-level subparsers."""
    from approxsim.experiments.train import (
        add_eval_parser,
        add_train_parser,
        run_eval_cli,
        run_train_cli,
    )

    add_train_parser(sub).set_defaults(handler=run_train_cli)
    add_eval_parser(sub).set_defaults(handler=run_eval_cli)
