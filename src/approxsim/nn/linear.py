"""``ApproxLinear``: :class:`torch.nn.Linear` with every product through a simulated multiplier."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from approxsim.multipliers import Multiplier, MultiplierLike
from approxsim.nn import functional as AF
from approxsim.nn._base import ApproxModule, check_float_module, share_parameters
from approxsim.ops import PassMultipliers

__all__ = ["ApproxLinear"]


class ApproxLinear(ApproxModule, nn.Linear):
    """A drop-in :class:`torch.nn.Linear` whose products run through a simulated multiplier.

    ``y = x ⊗@ Wᵀ + b``: operand A of every product is the input, operand B the weight. The
    input- and weight-gradient GEMMs are approximate too (see :func:`approxsim.matmul`). Same
    constructor, parameters and ``state_dict`` keys as :class:`torch.nn.Linear`, plus the
    multiplier keywords.

    Args:
        in_features: Size of each input sample.
        out_features: Size of each output sample.
        bias: Learn an additive bias.
        device: Device of the parameters.
        dtype: dtype of the parameters (the products are float32 whatever it is).
        multiplier: Forward multiplier: a :class:`~approxsim.Multiplier`, a name such as
            ``"mitchell7"``, or a :class:`~approxsim.ops.PassMultipliers`. ``"fp32"`` (the
            default) is exact and runs :func:`torch.nn.functional.linear`.
        grad_input: Multiplier of the input-gradient GEMM; default: ``multiplier``.
        grad_weight: Multiplier of the weight-gradient GEMM; default: ``multiplier``.

    Raises:
        MultiplierError: an unknown multiplier name or a wrong type.

    Shape:
        - Input: ``(*, in_features)``, any number of leading dimensions.
        - Output: ``(*, out_features)``.

    Example:
        >>> layer = ApproxLinear(16, 4, multiplier="mitchell7")
        >>> layer(torch.randn(2, 3, 16)).shape
        torch.Size([2, 3, 4])
    """

    _FLOAT_MODULE = nn.Linear

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        multiplier: MultiplierLike | PassMultipliers = "fp32",
        grad_input: Multiplier | str | None = None,
        grad_weight: Multiplier | str | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias, device, dtype)
        self.set_multiplier(multiplier, grad_input, grad_weight)

    def forward(self, input: Tensor) -> Tensor:
        """Apply the approximate affine map.

        Args:
            input: ``(*, in_features)``.

        Returns:
            ``(*, out_features)``.
        """
        return AF.linear(input, self.weight, self.bias, multiplier=self._passes)

    def extra_repr(self) -> str:
        """Torch's ``in_features=…, out_features=…, bias=…`` plus the multiplier."""
        return f"{super().extra_repr()}, {self._multiplier_repr()}"

    @classmethod
    def from_float(
        cls,
        module: nn.Linear,
        multiplier: MultiplierLike | PassMultipliers,
        *,
        grad_input: Multiplier | str | None = None,
        grad_weight: Multiplier | str | None = None,
    ) -> ApproxLinear:
        """An approximate twin of ``module`` that shares its Parameters (nothing is copied).

        Args:
            module: An :class:`torch.nn.Linear` (an ``ApproxLinear`` is accepted too).
            multiplier: Forward multiplier (object, name or ``PassMultipliers``).
            grad_input: Multiplier of the input-gradient GEMM; default: ``multiplier``.
            grad_weight: Multiplier of the weight-gradient GEMM; default: ``multiplier``.

        Returns:
            The new layer; training a step updates ``module``'s parameters too.

        Raises:
            TypeError: ``module`` is not an ``nn.Linear``.
            MultiplierError: a bad multiplier argument.
        """
        check_float_module(module, nn.Linear, cls.__name__)
        # Built on the meta device so no memory is allocated or initialized, then the
        # original Parameters are put in place.
        new = cls(
            module.in_features,
            module.out_features,
            bias=module.bias is not None,
            device="meta",
            multiplier=multiplier,
            grad_input=grad_input,
            grad_weight=grad_weight,
        )
        share_parameters(new, module, ("weight", "bias"))
        return new

    def to_float(self) -> nn.Linear:
        """A plain :class:`torch.nn.Linear` sharing this layer's Parameters.

        Returns:
            The exact layer (same ``state_dict``).
        """
        new = nn.Linear(self.in_features, self.out_features, self.bias is not None, "meta")
        share_parameters(new, self, ("weight", "bias"))
        return new
