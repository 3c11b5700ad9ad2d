"""What every ``approxsim`` subcommand shares: argument types, the options that name a
multiplier, and :class:`CLIError`.

Argument types raise :class:`argparse.ArgumentTypeError`, so argparse reports a one-line usage
error. A multiplier is named by exactly one of: a name (``--multiplier NAME``, or a positional
``NAME``), ``--c FILE --function F --mantissa-bits M`` (with ``--language``, ``--rounding``,
``--accept-mismatch``), ``--approxtrain-lut FILE`` or ``--lut FILE.npz``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

from approxsim.errors import ApproxsimError
from approxsim.multipliers import Multiplier, MultiplierError, get_multiplier

__all__ = [
    "CLIError",
    "finite_float",
    "int_at_least",
    "add_multiplier_arguments",
    "multiplier_from_args",
    "pass_multiplier",
]


class CLIError(ApproxsimError, ValueError):
    """A user error found by the command line itself: printed as one line, exit status 2."""


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An integer argument ``>= minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def finite_float(*, positive: bool) -> Callable[[str], float]:
    """A finite number ``>= 0`` (``> 0`` with ``positive``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < 0:
            raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
        if positive and value == 0:
            raise argparse.ArgumentTypeError("must be > 0")
        return value

    return parse


def add_multiplier_arguments(parser: argparse.ArgumentParser, *, positional: bool = False) -> None:
    """Add the options of :func:`multiplier_from_args` to ``parser``.

    Args:
        parser: The (sub)command's parser.
        positional: Take the name as an optional positional ``NAME`` instead of
            ``--multiplier NAME``. Either way it lands in ``args.multiplier``.
    """
    name_help = "built-in or registered multiplier, e.g. mitchell7; fp32 for exact float32"
    if positional:
        parser.add_argument("multiplier", nargs="?", metavar="NAME", help=name_help)
    g = parser.add_argument_group("the multiplier (name exactly one)")
    if not positional:
        g.add_argument("--multiplier", metavar="NAME", help=name_help)
    parser.set_defaults(_multiplier_name_form="NAME" if positional else "--multiplier NAME")
    g.add_argument("--c", metavar="FILE", help="C/C++ source defining float F(float, float)")
    g.add_argument("--function", metavar="F", help="function name in --c FILE")
    g.add_argument("--mantissa-bits", type=int, metavar="M", help="mantissa bits M (1..11)")
    g.add_argument("--language", choices=["c", "c++"], help="default: from the file suffix")
    g.add_argument(
        "--rounding",
        choices=["truncate", "nearest"],
        default="truncate",
        help="how --c operands are reduced to M bits (default: truncate)",
    )
    g.add_argument(
        "--accept-mismatch",
        action="store_true",
        help="accept a --c model that fails the decomposability check (the rate is recorded)",
    )
    g.add_argument("--approxtrain-lut", metavar="FILE", help="ApproxTrain LUT file NAME_<M>.bin")
    g.add_argument("--lut", metavar="FILE.npz", help="a multiplier saved by Multiplier.save")


def multiplier_from_args(args: argparse.Namespace) -> Multiplier:
    """The multiplier named by :func:`add_multiplier_arguments`' options.

    Raises:
        MultiplierError: none or several sources named, ``--c`` without its companions, or a
            multiplier that cannot be built.
        FileNotFoundError: a named file does not exist.
    """
    given = [x for x in (args.multiplier, args.c, args.approxtrain_lut, args.lut) if x]
    if len(given) != 1:
        form = getattr(args, "_multiplier_name_form", "--multiplier NAME")
        raise MultiplierError(
            f"name exactly one multiplier: {form} (fp32 for exact float32), "
            "--c FILE --function F --mantissa-bits M, --approxtrain-lut FILE or --lut FILE.npz"
        )
    if args.c:
        if not args.function or args.mantissa_bits is None:
            raise MultiplierError("--c FILE needs --function F and --mantissa-bits M")
        return Multiplier.from_c(
            Path(args.c),
            args.function,
            args.mantissa_bits,
            language=args.language,
            rounding=args.rounding,
            accept_mismatch=args.accept_mismatch,
        )
    if args.approxtrain_lut:
        return Multiplier.from_approxtrain_lut(Path(args.approxtrain_lut), args.mantissa_bits)
    if args.lut:
        return Multiplier.load(Path(args.lut))
    return get_multiplier(args.multiplier)


def pass_multiplier(value: str | None) -> Multiplier | None:
    """The multiplier of ``--grad-input`` / ``--grad-weight``: a name, a saved ``.npz``
    multiplier, or ``None`` (the forward pass's)."""
    if value is None:
        return None
    if value.endswith(".npz") and Path(value).is_file():
        return Multiplier.load(Path(value))
    return get_multiplier(value)
