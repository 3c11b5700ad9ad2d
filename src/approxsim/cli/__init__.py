"""The ``approxsim`` command line: one module per command group, one error handler.

Subcommands:
    ``approxsim multipliers list [PATTERN]``
    ``approxsim multipliers show NAME | --c FILE --function F --mantissa-bits M |
    --approxtrain-lut FILE [--plot FILE.png] [--json]``
    ``approxsim train --model lenet5 --dataset fashion-mnist --multiplier mitchell7 --out DIR``
    ``approxsim eval --checkpoint FILE --multiplier NAME``
    ``approxsim compare RUN_DIR... [--plot curves.png]``
    ``approxsim bench ops | direct | models ...``
    ``approxsim cim mc | attack | eval | train | sweep ...`` (analog compute-in-memory)
    ``approxsim replay dqn | fidelity | bench ...`` (prioritized replay, AMPER emulation)
    ``approxsim sweep run SPEC.toml --out DIR`` / ``approxsim sweep report DIR [--plot FILE.png]``

Each group module (:mod:`approxsim.cli.multipliers`, ``train``, ``compare``, ``bench``,
``cim``, ``replay``, ``sweep``) has a ``register(subparsers)`` that adds its parsers and sets
``handler`` on each;
:func:`main` runs the handler under the one error rule of the command line: any
:class:`~approxsim.ApproxsimError` or ``OSError`` prints one line ``approxsim: error: ...`` on
stderr and exits with status 2; Ctrl-C exits with 130. argparse is imported nowhere else.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from approxsim.cli.common import CLIError
from approxsim.errors import ApproxsimError

__all__ = ["main", "build_parser", "CLIError"]

#: Command-group modules, in the order ``approxsim --help`` lists them.
GROUPS = ("multipliers", "train", "compare", "bench", "cim", "replay", "sweep")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``approxsim`` command."""
    from approxsim import __version__

    parser = argparse.ArgumentParser(
        prog="approxsim",
        description="Simulate approximate multipliers in PyTorch models.",
    )
    parser.add_argument("--version", action="version", version=f"approxsim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for group in GROUPS:
        importlib.import_module(f"approxsim.cli.{group}").register(sub)
    return parser


def launch_rank() -> int:
    """This process's rank under torchrun (0 for a single process or unreadable variables)."""
    try:
        return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0
    except ValueError:
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``approxsim`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    rank = launch_rank()
    try:
        return int(args.handler(args))
    except (ApproxsimError, OSError) as exc:
        if getattr(exc, "peer_failed", False):
            return 2  # another process of a multi-process run failed and printed the error
        where = f" (process {rank})" if rank else ""
        print(f"approxsim: error{where}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if rank == 0:
            print("approxsim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
