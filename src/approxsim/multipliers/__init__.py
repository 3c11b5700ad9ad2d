"""Simulated multipliers: the :class:`Multiplier`, its builders and the built-in registry."""

from approxsim.multipliers import numformat
from approxsim.multipliers.approxtrain import read_approxtrain_lut, write_approxtrain_lut
from approxsim.multipliers.build import NotDecomposableError
from approxsim.multipliers.cmodel import (
    CModelCrashError,
    CModelError,
    CModelExitError,
    CModelLoadError,
    CModelTimeoutError,
    CompilerError,
    CompilerNotFoundError,
    FunctionNotFoundError,
    WrongSignatureError,
)
from approxsim.multipliers.core import (
    MAX_MANTISSA_BITS,
    MIN_MANTISSA_BITS,
    Multiplier,
    MultiplierError,
)
from approxsim.multipliers.registry import (
    MultiplierLike,
    UnknownMultiplierError,
    get_multiplier,
    list_multipliers,
    register_multiplier,
)

__all__ = [
    "Multiplier",
    "MultiplierLike",
    "MultiplierError",
    "NotDecomposableError",
    "CompilerError",
    "CompilerNotFoundError",
    "FunctionNotFoundError",
    "WrongSignatureError",
    "CModelError",
    "CModelCrashError",
    "CModelTimeoutError",
    "CModelExitError",
    "CModelLoadError",
    "UnknownMultiplierError",
    "MIN_MANTISSA_BITS",
    "MAX_MANTISSA_BITS",
    "get_multiplier",
    "list_multipliers",
    "register_multiplier",
    "read_approxtrain_lut",
    "write_approxtrain_lut",
    "numformat",
]
