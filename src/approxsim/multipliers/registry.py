"""A timm-style registry of built-in multipliers: ``get_multiplier`` / ``list_multipliers``.

Families with an M parameter (``mitchell<M>``, ``mbm<M>``, ``trunc<M>``) are generated for
every M approxsim allows rather than listed by hand. Users add their own with
:func:`register_multiplier`.

Integer multipliers have their own names and functions (``get_int_multiplier``,
``list_int_multipliers``, ``register_int_multiplier``): every built-in integer name ends in
``_u<bits>`` / ``_s<bits>`` (or is ``uint<bits>`` / ``int<bits>``), and each design is built
from the parameters in its name (:mod:`approxsim.multipliers.intdesigns`).
"""

from __future__ import annotations

import fnmatch
import re
import threading
from collections.abc import Callable
from typing import overload

import numpy as np

from approxsim.multipliers import designs, intdesigns
from approxsim.multipliers.core import (
    MAX_MANTISSA_BITS,
    MIN_MANTISSA_BITS,
    Multiplier,
    MultiplierError,
)
from approxsim.multipliers.integer import IntMultiplier

__all__ = [
    "MultiplierLike",
    "IntMultiplierLike",
    "get_multiplier",
    "list_multipliers",
    "register_multiplier",
    "get_int_multiplier",
    "list_int_multipliers",
    "register_int_multiplier",
    "UnknownMultiplierError",
]


class UnknownMultiplierError(MultiplierError, KeyError):
    """No multiplier of that name is registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


Factory = Callable[[], Multiplier]

#: Something that names a multiplier: a :class:`Multiplier`, or the name of a built-in or
#: registered one (``"mitchell7"``, ``"fp32"``). The one alias approxsim uses for it; APIs that
#: also take per-pass multipliers accept ``MultiplierLike | PassMultipliers``.
MultiplierLike = Multiplier | str

_FIXED: dict[str, Factory] = {}
_FAMILIES: dict[str, tuple[Callable[[int], np.ndarray], str, str]] = {
    # prefix: (LUT function of M, rounding, description)
    "mitchell": (designs.mitchell_lut, "truncate", "Mitchell logarithmic multiplier (1962)"),
    "mbm": (designs.mbm_lut, "truncate", "minimally biased multiplier (Saadat et al. 2018)"),
    "trunc": (designs.trunc_lut, "truncate", "exact product of M-bit truncated mantissas"),
}
_LOCK = threading.Lock()
_CACHE: dict[str, Multiplier] = {}


def register_multiplier(name: str) -> Callable[[Factory], Factory]:
    """Decorator registering a zero-argument factory under ``name``.

    Example::

        @approxsim.register_multiplier("my_mul7")
        def my_mul7():
            return approxsim.Multiplier.from_c("my_mul.c", "my_mul", 7)

    Raises:
        MultiplierError: the name is empty, clashes with a built-in, or is taken.
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.\-@+]+", name):
        raise MultiplierError(f"multiplier names use letters, digits and _.-@+ only, got {name!r}")

    def decorator(factory: Factory) -> Factory:
        with _LOCK:
            if name in _FIXED or _family_match(name) is not None:
                raise MultiplierError(f"a multiplier named {name!r} is already registered")
            _FIXED[name] = factory
        return factory

    return decorator


def _family_match(name: str) -> tuple[str, int] | None:
    m = re.fullmatch(r"([a-z_]+?)(\d+)", name)
    if m is None or m.group(1) not in _FAMILIES:
        return None
    return m.group(1), int(m.group(2))


def _all_names() -> list[str]:
    names = list(_FIXED)
    for prefix in _FAMILIES:
        names.extend(f"{prefix}{m}" for m in range(MIN_MANTISSA_BITS, MAX_MANTISSA_BITS + 1))
    return names


def list_multipliers(pattern: str = "*") -> list[str]:
    """Names of the registered multipliers matching a shell-style ``pattern``, sorted.

    Example: ``list_multipliers("mitchell*")``.
    """
    return sorted((n for n in _all_names() if fnmatch.fnmatchcase(n, pattern)), key=_natural_key)


def _natural_key(name: str) -> tuple[str, int]:
    m = re.fullmatch(r"(.*?)(\d*)", name)
    assert m is not None
    return m.group(1), int(m.group(2) or -1)


def get_multiplier(name: MultiplierLike) -> Multiplier:
    """The built-in or registered multiplier called ``name`` (built once, then shared).

    Raises:
        UnknownMultiplierError: no such name; the message lists what exists.
    """
    if isinstance(name, Multiplier):
        return name
    if not isinstance(name, str):
        raise MultiplierError(f"a multiplier name must be a string, got {type(name).__name__}")
    cached = _CACHE.get(name)  # dict reads are atomic; no lock, so torch.compile can trace it
    if cached is not None:
        return cached
    mult = _build(name)
    with _LOCK:
        return _CACHE.setdefault(name, mult)


def _build(name: str) -> Multiplier:
    factory = _FIXED.get(name)
    if factory is not None:
        mult = factory()
        if not isinstance(mult, Multiplier):
            raise MultiplierError(
                f"the factory registered as {name!r} returned {type(mult).__name__}, "
                "not a Multiplier"
            )
        return mult
    fam = _family_match(name)
    if fam is not None:
        prefix, m = fam
        if not MIN_MANTISSA_BITS <= m <= MAX_MANTISSA_BITS:
            raise UnknownMultiplierError(
                f"{name!r}: {prefix}<M> exists for M from {MIN_MANTISSA_BITS} to "
                f"{MAX_MANTISSA_BITS}"
            )
        fn, rounding, description = _FAMILIES[prefix]
        return Multiplier(
            name,
            m,
            fn(m),
            rounding=rounding,
            provenance={"builder": "builtin", "design": prefix, "description": description},
        )
    if intdesigns.parse_design_name(name) is not None or name in _INT_FIXED:
        raise UnknownMultiplierError(
            f"{name!r} is an integer multiplier; integer multipliers take integer operands "
            "(get_int_multiplier, or a quantized layer), not float tensors"
        )
    families = ", ".join(f"{p}<M> (M={MIN_MANTISSA_BITS}..{MAX_MANTISSA_BITS})" for p in _FAMILIES)
    raise UnknownMultiplierError(
        f"unknown multiplier {name!r}. Known: {', '.join(sorted(_FIXED))}, {families}. "
        "`approxsim multipliers list` prints them all."
    )


def _exact() -> Multiplier:
    return Multiplier(
        "fp32",
        23,
        None,
        provenance={"builder": "builtin", "design": "fp32", "description": "IEEE float32"},
    )


def _bf16() -> Multiplier:
    return Multiplier(
        "bf16",
        7,
        designs.rounded_product_lut(7),
        rounding="nearest",
        provenance={
            "builder": "builtin",
            "design": "bf16",
            "description": "bfloat16 unit: inputs and product rounded to nearest-even bfloat16",
        },
    )


def _bf16_trunc() -> Multiplier:
    return Multiplier(
        "bf16_trunc",
        7,
        designs.truncated_product_lut(7),
        rounding="truncate",
        provenance={
            "builder": "builtin",
            "design": "bf16_trunc",
            "description": "inputs and product truncated to bfloat16 (ApproxTrain's bfloat16)",
        },
    )


_FIXED.update({"fp32": _exact, "bf16": _bf16, "bf16_trunc": _bf16_trunc})


# ---------------------------------------------------------------------- integer multipliers

IntFactory = Callable[[], IntMultiplier]

#: Something that names an integer multiplier: an :class:`IntMultiplier`, or the name of a
#: built-in or registered one (``"drum4_u8"``, ``"int8"``).
IntMultiplierLike = IntMultiplier | str

_INT_FIXED: dict[str, IntFactory] = {}
_INT_CACHE: dict[str, IntMultiplier] = {}


@overload
def register_int_multiplier(name: str) -> Callable[[IntFactory], IntFactory]: ...


@overload
def register_int_multiplier(name: str, factory: IntFactory) -> IntFactory: ...


def register_int_multiplier(
    name: str, factory: IntFactory | None = None
) -> Callable[[IntFactory], IntFactory] | IntFactory:
    """Register a zero-argument factory of an :class:`IntMultiplier` under ``name``.

    Call it with the factory, or use it as a decorator::

        approxsim.register_int_multiplier("my8", lambda: IntMultiplier.from_lut(...))

        @approxsim.register_int_multiplier("my8")
        def my8():
            return IntMultiplier.from_python(my_model, 8, signed=False)

    The factory runs on the first :func:`get_int_multiplier` of the name; the multiplier is
    then shared.

    Args:
        name: Letters, digits and ``_.-@+``; not a built-in design name or pattern.
        factory: The factory; omitted when used as a decorator.

    Returns:
        ``factory`` (or, without it, a decorator that registers and returns its argument).

    Raises:
        MultiplierError: a bad name, one that follows a built-in design's pattern, or one
            already registered.
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.\-@+]+", name):
        raise MultiplierError(f"multiplier names use letters, digits and _.-@+ only, got {name!r}")

    def decorator(fn: IntFactory) -> IntFactory:
        if not callable(fn):
            raise MultiplierError(f"the factory for {name!r} must be callable")
        with _LOCK:
            if name in _INT_FIXED or intdesigns.parse_design_name(name) is not None:
                raise MultiplierError(
                    f"an integer multiplier named {name!r} is already registered or built in; "
                    "choose another name"
                )
            _INT_FIXED[name] = fn
        return fn

    return decorator if factory is None else decorator(factory)


def list_int_multipliers(pattern: str = "*") -> list[str]:
    """Names of the listed integer multipliers matching a shell-style ``pattern``, sorted.

    The built-in list is a curated 8-bit set spanning small to large errors (exact
    ``uint8``/``int8`` and each family at several parameters), plus every registered name.
    Other parameters and widths (2..12 bits) are built on demand from their names, e.g.
    ``get_int_multiplier("drum7_s12")``.

    Args:
        pattern: Shell-style pattern (``"drum*"``, ``"*_s8"``).

    Returns:
        The matching names.
    """
    names = set(intdesigns.LISTED_DESIGNS) | set(_INT_FIXED)
    return sorted((n for n in names if fnmatch.fnmatchcase(n, pattern)), key=_digits_key)


def _digits_key(name: str) -> list[int | str]:
    # Digit runs compare as numbers (drum3 < drum10); re.split puts them at odd positions.
    return [int(p) if i % 2 else p for i, p in enumerate(re.split(r"(\d+)", name))]


def get_int_multiplier(name: IntMultiplierLike) -> IntMultiplier:
    """The built-in or registered integer multiplier called ``name`` (built once, then shared).

    Args:
        name: A name (``"drum4_u8"``, ``"bam_h2v6_s8"``, ``"int8"``, a registered name) or an
            :class:`IntMultiplier`, returned as is.

    Returns:
        The multiplier.

    Raises:
        UnknownMultiplierError: no such name (the message lists the families), or the name of
            a float multiplier.
        MultiplierError: a built-in name whose parameters are out of range, or a factory that
            does not return an IntMultiplier.
    """
    if isinstance(name, IntMultiplier):
        return name
    if not isinstance(name, str):
        raise MultiplierError(
            f"an integer multiplier name must be a string, got {type(name).__name__}"
        )
    cached = _INT_CACHE.get(name)  # dict reads are atomic; no lock needed to read
    if cached is not None:
        return cached
    mult = _build_int(name)
    with _LOCK:
        return _INT_CACHE.setdefault(name, mult)


def _build_int(name: str) -> IntMultiplier:
    factory = _INT_FIXED.get(name)
    if factory is not None:
        mult = factory()
        if not isinstance(mult, IntMultiplier):
            raise MultiplierError(
                f"the factory registered as {name!r} returned {type(mult).__name__}, "
                "not an IntMultiplier"
            )
        return mult
    if intdesigns.parse_design_name(name) is not None:
        return intdesigns.build_design(name)
    if name in _FIXED or _family_match(name) is not None:
        raise UnknownMultiplierError(
            f"{name!r} is a float multiplier; use get_multiplier, or name an integer one "
            "(`approxsim multipliers list` prints them)"
        )
    families = "; ".join(intdesigns.DESIGN_FAMILIES)
    registered = ", ".join(sorted(_INT_FIXED))
    raise UnknownMultiplierError(
        f"unknown integer multiplier {name!r}. Built-in families: {families}"
        + (f". Registered: {registered}" if registered else "")
        + ". `approxsim multipliers list` prints them."
    )
