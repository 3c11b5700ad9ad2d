"""Command-line options that name a multiplier, shared by every ``approxsim`` subcommand.

A multiplier is named by exactly one of: a name (``--multiplier NAME``, or a positional
``NAME``), ``--c FILE --function F --mantissa-bits M`` (with ``--language``, ``--rounding``,
``--accept-mismatch``), ``--approxtrain-lut FILE`` or ``--lut FILE.npz``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from approxsim.multipliers.core import Multiplier, MultiplierError
from approxsim.multipliers.registry import get_multiplier

__all__ = ["add_multiplier_arguments", "multiplier_from_args"]


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
