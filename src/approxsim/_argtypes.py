"""Argument types shared by approxsim's command-line parsers (``type=`` of ``add_argument``).

Each raises :class:`argparse.ArgumentTypeError`, so argparse reports a one-line usage error.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["finite_float", "int_at_least"]


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
