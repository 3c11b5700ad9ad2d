"""Approximate drop-in layers: torch's signatures plus ``multiplier=``.

Each ``Approx*`` layer subclasses its torch twin (so ``isinstance`` checks and ``state_dict``
keys are unchanged) and :class:`ApproxModule`; ``from_float`` builds one around an existing
layer's Parameters and ``to_float`` gives the plain layer back. :mod:`approxsim.nn.functional`
holds the functional forms. To convert a whole model use :func:`approxsim.convert_model`.

The quantized layers (``Quant*``) run every code × code product through an integer
multiplier's table: :mod:`approxsim.nn.quant` (:class:`QuantConfig`, observers, gradient
tables), :mod:`approxsim.nn.quant_ops` (the quantized GEMM and convolution with their ``ste`` and
``lut`` backward), :mod:`approxsim.nn.quant_layers` (layers and :func:`calibrate`) and
:mod:`approxsim.nn.quant_attention`.
"""

from approxsim.nn import functional
from approxsim.nn._base import ApproxModule
from approxsim.nn.attention import ApproxMultiheadAttention
from approxsim.nn.conv import ApproxConv1d, ApproxConv2d
from approxsim.nn.linear import ApproxLinear
from approxsim.nn.quant import QuantConfig, QuantError
from approxsim.nn.quant_attention import QuantMultiheadAttention
from approxsim.nn.quant_layers import (
    QuantConv1d,
    QuantConv2d,
    QuantLinear,
    QuantModule,
    calibrate,
)

__all__ = [
    "ApproxModule",
    "ApproxLinear",
    "ApproxConv1d",
    "ApproxConv2d",
    "ApproxMultiheadAttention",
    "functional",
    "QuantConfig",
    "QuantError",
    "QuantModule",
    "QuantLinear",
    "QuantConv1d",
    "QuantConv2d",
    "QuantMultiheadAttention",
    "calibrate",
]
