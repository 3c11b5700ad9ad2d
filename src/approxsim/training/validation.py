"""Checks of training settings shared by :mod:`approxsim.training.config` and the modules
that read settings back (checkpoints, quantized evaluation): each raises
:class:`~approxsim.training.errors.TrainError` with a message naming the bad value.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from approxsim.multipliers import Multiplier, UnknownMultiplierError, get_multiplier
from approxsim.multipliers.integer import IntMultiplier
from approxsim.training.errors import TrainError

__all__ = [
    "check_choice",
    "check_float",
    "check_int",
    "check_multiplier",
    "int_multiplier_of",
    "patterns",
]


def int_multiplier_of(value: Any) -> IntMultiplier | None:
    """The integer multiplier that a ``multiplier`` setting is or names, else ``None``.

    A name is a float multiplier's first; only a name no float multiplier has is looked up
    among the integer ones (``"drum4_u8"``).
    """
    if isinstance(value, IntMultiplier):
        return value
    if not isinstance(value, str):
        return None
    try:
        get_multiplier(value)
        return None
    except UnknownMultiplierError:
        pass
    from approxsim.multipliers.registry import get_int_multiplier

    try:
        return get_int_multiplier(value)
    except UnknownMultiplierError:
        return None


def check_int(name: str, value: Any, minimum: int, *, optional: bool = False) -> None:
    """Check that ``value`` is an integer ``>= minimum`` (or ``None`` when ``optional``).

    Raises:
        TrainError: it is not.
    """
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise TrainError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_float(
    name: str, value: Any, *, positive: bool = False, upper: float | None = None
) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value > 0 if positive else value >= 0)
    ok = ok and (upper is None or value < upper)
    if not ok:
        bound = "> 0" if positive else ">= 0"
        if upper is not None:
            bound += f" and < {upper}"
        raise TrainError(f"{name} must be a finite number {bound}, got {value!r}")


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value is not None and value not in choices:
        raise TrainError(f"{name} must be one of {choices}, got {value!r}")


def check_multiplier(name: str, value: Any, *, optional: bool, integer: bool = False) -> None:
    """Check that ``value`` names a multiplier (or is ``None`` when ``optional``).

    Args:
        name: The setting, for messages.
        value: Its value.
        optional: ``None`` is allowed.
        integer: An :class:`~approxsim.IntMultiplier` (or an integer built-in's name) is
            allowed too.

    Raises:
        TrainError: neither a :class:`~approxsim.Multiplier` nor a string.
        UnknownMultiplierError: an unknown name (the message lists the names).
    """
    if value is None and optional:
        return
    if isinstance(value, Multiplier):
        return
    if integer and int_multiplier_of(value) is not None:
        return
    if isinstance(value, str):
        get_multiplier(value)  # raises UnknownMultiplierError listing the names
        return
    if isinstance(value, IntMultiplier):
        raise TrainError(
            f"{name} takes float multipliers here; integer multipliers go to the forward "
            "multiplier of approxsim train (quantized layers)"
        )
    raise TrainError(
        f"{name} must be an approxsim.Multiplier or a multiplier name, got {type(value).__name__}"
    )


def patterns(name: str, value: Any) -> tuple[str, ...] | None:
    """Layer-name patterns as a tuple (``None`` stays ``None``).

    Raises:
        TrainError: not a non-empty string or a non-empty list of them.
    """
    if value is None:
        return None
    items = (value,) if isinstance(value, str) else tuple(value)
    if not items or not all(isinstance(p, str) and p for p in items):
        raise TrainError(
            f"{name} takes module name patterns such as 'features.*' (a string or a list of "
            f"them), got {value!r}"
        )
    return items
