"""What every ``approxsim`` subcommand shares: argument types, the options that name a
multiplier, and :class:`CLIError`.

Argument types raise :class:`argparse.ArgumentTypeError`, so argparse reports a one-line usage
error. A multiplier is named by exactly one of: a name (``--multiplier NAME``, or a positional
``NAME``), ``--c FILE --function F --mantissa-bits M`` (with ``--language``, ``--rounding``,
``--accept-mismatch``), ``--approxtrain-lut FILE`` or ``--lut FILE.npz``.

Commands that also take integer multipliers add the integer options
(``add_multiplier_arguments(..., integer=True)``): ``--int-multiplier NAME``, ``--evoapprox
FILE``, or ``--c FILE --function F --bits B [--signed]``. ``--bits`` says an integer model,
``--mantissa-bits`` a float one; :func:`int_multiplier_from_args` builds the integer one.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

from approxsim.errors import ApproxsimError
from approxsim.multipliers import (
    Multiplier,
    MultiplierError,
    UnknownMultiplierError,
    get_multiplier,
)
from approxsim.multipliers.integer import IntMultiplier

__all__ = [
    "CLIError",
    "finite_float",
    "int_at_least",
    "add_multiplier_arguments",
    "multiplier_from_args",
    "wants_int_multiplier",
    "int_multiplier_from_args",
    "any_multiplier_from_args",
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


def add_multiplier_arguments(
    parser: argparse.ArgumentParser, *, positional: bool = False, integer: bool = False
) -> None:
    """Add the options of :func:`multiplier_from_args` to ``parser``.

    Args:
        parser: The (sub)command's parser.
        positional: Take the name as an optional positional ``NAME`` instead of
            ``--multiplier NAME``. Either way it lands in ``args.multiplier``.
        integer: Also add the options of :func:`int_multiplier_from_args`
            (``--int-multiplier NAME`` unless ``positional``, ``--evoapprox FILE``, ``--bits
            B``, ``--signed``); with ``positional``, ``NAME`` may name an integer built-in too.
    """
    name_help = "built-in or registered multiplier, e.g. mitchell7; fp32 for exact float32"
    if integer and positional:
        name_help = (
            "built-in or registered multiplier: float (mitchell7, fp32) or integer (drum4_u8)"
        )
    if positional:
        parser.add_argument("multiplier", nargs="?", metavar="NAME", help=name_help)
    g = parser.add_argument_group("the multiplier (name exactly one)")
    if not positional:
        g.add_argument("--multiplier", metavar="NAME", help=name_help)
    parser.set_defaults(_multiplier_name_form="NAME" if positional else "--multiplier NAME")
    c_help = "C/C++ source defining float F(float, float)"
    if integer:
        c_help += " (with --mantissa-bits) or an integer F(a, b) (with --bits)"
    g.add_argument("--c", metavar="FILE", help=c_help)
    g.add_argument("--function", metavar="F", help="function name in --c FILE")
    g.add_argument("--mantissa-bits", type=int, metavar="M", help="mantissa bits M (1..11)")
    if integer:
        _add_int_arguments(parser, g, positional=positional)
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


def _add_int_arguments(
    parser: argparse.ArgumentParser, g: argparse._ArgumentGroup, *, positional: bool
) -> None:
    if not positional:
        g.add_argument(
            "--int-multiplier",
            metavar="NAME",
            help="built-in or registered integer multiplier (e.g. drum4_u8, int8), or a saved "
            "FILE.npz",
        )
    g.add_argument(
        "--evoapprox",
        metavar="FILE",
        help="an EvoApproxLib C file (mul8u_..., mul8s_...): bits and signedness from its name, "
        "its header metrics checked against the table",
    )
    g.add_argument(
        "--bits", type=int, metavar="B", help="operand bits (2..12) of an integer --c model"
    )
    g.add_argument(
        "--signed",
        action="store_true",
        help="the integer --c model is signed (two's complement operands and product)",
    )
    parser.set_defaults(_integer_options=True)


def wants_int_multiplier(args: argparse.Namespace) -> bool:
    """Whether the integer options of :func:`add_multiplier_arguments` name the multiplier.

    Args:
        args: Parsed arguments.

    Returns:
        True when ``--int-multiplier``, ``--evoapprox``, ``--bits`` or ``--signed`` is given.
    """
    return bool(
        getattr(args, "int_multiplier", None)
        or getattr(args, "evoapprox", None)
        or getattr(args, "bits", None) is not None
        or getattr(args, "signed", False)
    )


def _int_name_or_file(value: str) -> IntMultiplier:
    from approxsim.multipliers.registry import get_int_multiplier

    if value.endswith(".npz") and Path(value).is_file():
        return IntMultiplier.load(Path(value))
    return get_int_multiplier(value)


def int_multiplier_from_args(args: argparse.Namespace) -> IntMultiplier:
    """The integer multiplier named by ``--int-multiplier NAME``, ``--evoapprox FILE`` or
    ``--c FILE --function F --bits B [--signed]`` (see :func:`add_multiplier_arguments`).

    Args:
        args: Parsed arguments of a parser given ``integer=True``.

    Returns:
        The multiplier.

    Raises:
        MultiplierError: none or several sources named, ``--c`` without ``--function`` and
            ``--bits``, ``--mantissa-bits`` with them, ``--signed`` where the source decides,
            or a multiplier that cannot be built (compile errors, a refused header...).
        FileNotFoundError: a named file does not exist.
    """
    from approxsim.multipliers.evoapprox import from_evoapprox
    from approxsim.multipliers.intc import int_from_c

    name = getattr(args, "int_multiplier", None)
    given = [x for x in (name, args.evoapprox, args.c) if x]
    if len(given) != 1:
        raise MultiplierError(
            "name exactly one integer multiplier: --int-multiplier NAME, --evoapprox FILE or "
            "--c FILE --function F --bits B [--signed]"
        )
    if args.mantissa_bits is not None:
        raise MultiplierError(
            "--mantissa-bits M names a float multiplier's mantissa; an integer --c model "
            "takes --bits B (its operand width)"
        )
    if args.accept_mismatch or args.rounding != "truncate":
        raise MultiplierError(
            "--rounding and --accept-mismatch apply to float --c models (--mantissa-bits); "
            "an integer model takes operands as they are"
        )
    if args.c:
        if not args.function or args.bits is None:
            raise MultiplierError(
                "an integer --c FILE needs --function F and --bits B (operand width, 2..12); "
                "add --signed for two's complement operands"
            )
        return int_from_c(
            Path(args.c), args.function, args.bits, args.signed, language=args.language
        )
    if args.bits is not None or args.signed:
        what = (
            "--evoapprox FILE (its function's name, mul8u_/mul8s_...)"
            if args.evoapprox
            else ("--int-multiplier NAME (the name, e.g. drum4_u8 / drum4_s8)")
        )
        raise MultiplierError(f"--bits and --signed go with --c FILE; {what} says them itself")
    if args.evoapprox:
        return from_evoapprox(Path(args.evoapprox), language=args.language)
    return _int_name_or_file(str(name))


def any_multiplier_from_args(
    args: argparse.Namespace,
    *,
    float_multiplier: Callable[[argparse.Namespace], Multiplier] | None = None,
) -> Multiplier | IntMultiplier:
    """The float or integer multiplier named by :func:`add_multiplier_arguments`' options
    (given ``integer=True``): integer options build an integer one; a name is looked up
    among float multipliers, then integer ones; ``--lut FILE.npz`` loads either kind.

    Args:
        args: Parsed arguments.
        float_multiplier: What builds a float multiplier from the other options (default
            :func:`multiplier_from_args`).

    Returns:
        The multiplier.

    Raises:
        MultiplierError: as :func:`multiplier_from_args` and :func:`int_multiplier_from_args`.
        FileNotFoundError: a named file does not exist.
    """
    if wants_int_multiplier(args) or (args.c and args.bits is not None):
        if args.multiplier or args.approxtrain_lut or args.lut:
            raise MultiplierError(
                "name exactly one multiplier: a float one (NAME, --c with --mantissa-bits, "
                "--approxtrain-lut, --lut) or an integer one (--evoapprox, --c with --bits)"
            )
        return int_multiplier_from_args(args)
    only_name = args.multiplier and not (args.c or args.approxtrain_lut or args.lut)
    if only_name:
        from approxsim.multipliers.registry import get_int_multiplier

        try:
            return get_multiplier(args.multiplier)
        except UnknownMultiplierError as float_error:
            try:
                return get_int_multiplier(args.multiplier)
            except UnknownMultiplierError:
                raise float_error from None
    if args.lut and not (args.multiplier or args.c or args.approxtrain_lut):
        try:
            return Multiplier.load(Path(args.lut))
        except MultiplierError as float_error:
            try:
                return IntMultiplier.load(Path(args.lut))
            except MultiplierError:
                raise float_error from None
    return (float_multiplier or multiplier_from_args)(args)


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
            hint = (
                " (a float model; an integer one takes --bits B)"
                if getattr(args, "_integer_options", False)
                else ""
            )
            raise MultiplierError(f"--c FILE needs --function F and --mantissa-bits M{hint}")
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
