"""Approximate drop-in layers: torch's signatures plus ``multiplier=``.

Each ``Approx*`` layer subclasses its torch twin (so ``isinstance`` checks and ``state_dict``
keys are unchanged) and :class:`ApproxModule`; ``from_float`` builds one around an existing
layer's Parameters and ``to_float`` gives the plain layer back. :mod:`approxsim.nn.functional`
holds the functional forms. To convert a whole model use :func:`approxsim.convert_model`.
"""

from approxsim.nn import functional
from approxsim.nn._base import ApproxModule
from approxsim.nn.attention import ApproxMultiheadAttention
from approxsim.nn.conv import ApproxConv1d, ApproxConv2d
from approxsim.nn.linear import ApproxLinear

__all__ = [
    "ApproxModule",
    "ApproxLinear",
    "ApproxConv1d",
    "ApproxConv2d",
    "ApproxMultiheadAttention",
    "functional",
]
