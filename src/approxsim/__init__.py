"""approxsim: train and evaluate PyTorch models on simulated approximate hardware.

Importing approxsim compiles nothing; C models are compiled (and cached) when built.
"""

from approxsim import nn
from approxsim.convert import (
    ConversionReport,
    UnsupportedModuleWarning,
    conversion_report,
    convert_model,
    restore_model,
)
from approxsim.errors import ApproxsimError
from approxsim.multipliers import (
    MAX_MANTISSA_BITS,
    MIN_MANTISSA_BITS,
    CModelError,
    CompilerError,
    EvoApproxHeaderError,
    EvoApproxHeaderWarning,
    FunctionNotFoundError,
    IntMultiplier,
    IntMultiplierLike,
    Multiplier,
    MultiplierError,
    MultiplierLike,
    NotDecomposableError,
    UnknownMultiplierError,
    WrongSignatureError,
    get_int_multiplier,
    get_multiplier,
    list_int_multipliers,
    list_multipliers,
    register_int_multiplier,
    register_multiplier,
)
from approxsim.nn import (
    ApproxConv1d,
    ApproxConv2d,
    ApproxLinear,
    ApproxModule,
    ApproxMultiheadAttention,
)
from approxsim.ops import PassMultipliers, matmul, mul

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "ApproxsimError",
    "Multiplier",
    "MultiplierLike",
    "MultiplierError",
    "NotDecomposableError",
    "CompilerError",
    "FunctionNotFoundError",
    "WrongSignatureError",
    "CModelError",
    "UnknownMultiplierError",
    "MIN_MANTISSA_BITS",
    "MAX_MANTISSA_BITS",
    "get_multiplier",
    "list_multipliers",
    "register_multiplier",
    "IntMultiplier",
    "EvoApproxHeaderError",
    "EvoApproxHeaderWarning",
    "IntMultiplierLike",
    "get_int_multiplier",
    "list_int_multipliers",
    "register_int_multiplier",
    "matmul",
    "mul",
    "PassMultipliers",
    "nn",
    "ApproxModule",
    "ApproxLinear",
    "ApproxConv1d",
    "ApproxConv2d",
    "ApproxMultiheadAttention",
    "convert_model",
    "restore_model",
    "conversion_report",
    "ConversionReport",
    "UnsupportedModuleWarning",
]
