"""Simulated multipliers: the float :class:`Multiplier` and the integer :class:`IntMultiplier`,
their builders and the built-in registries."""

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
from approxsim.multipliers.evoapprox import (
    EvoApproxError,
    EvoApproxHeaderError,
    EvoApproxHeaderWarning,
    from_evoapprox,
)
from approxsim.multipliers.intc import int_from_c
from approxsim.multipliers.integer import MAX_INT_BITS, MIN_INT_BITS, IntMultiplier
from approxsim.multipliers.registry import (
    IntMultiplierLike,
    MultiplierLike,
    UnknownMultiplierError,
    get_int_multiplier,
    get_multiplier,
    list_int_multipliers,
    list_multipliers,
    register_int_multiplier,
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
    "IntMultiplier",
    "IntMultiplierLike",
    "MIN_INT_BITS",
    "MAX_INT_BITS",
    "get_int_multiplier",
    "list_int_multipliers",
    "register_int_multiplier",
    "int_from_c",
    "from_evoapprox",
    "EvoApproxError",
    "EvoApproxHeaderError",
    "EvoApproxHeaderWarning",
]
