"""``ApproxConv1d`` / ``ApproxConv2d``: torch convolutions with simulated multipliers.

Both run as im2col (the input's patches gathered into a matrix) plus one batched
:func:`approxsim.matmul` over the groups (see :func:`approxsim.nn.functional.conv2d`); the
patches are operand A, the kernel operand B.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

import torch
from torch import Tensor, nn

from approxsim.multipliers import Multiplier, MultiplierLike
from approxsim.nn import functional as AF
from approxsim.nn._base import ApproxModule, check_float_module, share_parameters
from approxsim.ops import PassMultipliers

__all__ = ["ApproxConv1d", "ApproxConv2d"]

_C = TypeVar("_C", bound="_ApproxConvMixin")
_Size = int | tuple[int, ...]
_PaddingMode = Literal["zeros", "reflect", "replicate", "circular"]


class _ApproxConvMixin(ApproxModule):
    """forward / from_float / to_float / repr shared by the approximate convolutions."""

    #: The approximate functional twin (``approxsim.nn.functional.conv1d`` / ``conv2d``).
    _approx_conv: Any

    # Provided by the nn.Conv*d base class.
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: str | tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    weight: Tensor
    bias: Tensor | None

    def forward(self, input: Tensor) -> Tensor:
        """Apply the approximate convolution (torch's own when every pass is exact).

        Args:
            input: ``(N, C_in, *spatial)`` or unbatched ``(C_in, *spatial)``.

        Returns:
            The convolution, shaped as the torch twin would.
        """
        if self._passes.all_exact:
            return super().forward(input)  # type: ignore[misc,no-any-return]
        return self._approx_conv(  # type: ignore[no-any-return]
            input,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            multiplier=self._passes,
            padding_mode=self.padding_mode,  # type: ignore[attr-defined]
        )

    def extra_repr(self) -> str:
        """Torch's convolution description plus the multiplier."""
        return f"{super().extra_repr()}, {self._multiplier_repr()}"  # type: ignore[misc]

    @classmethod
    def from_float(
        cls: type[_C],
        module: nn.Module,
        multiplier: MultiplierLike | PassMultipliers,
        *,
        grad_input: Multiplier | str | None = None,
        grad_weight: Multiplier | str | None = None,
    ) -> _C:
        """An approximate twin of ``module`` that shares its Parameters (nothing is copied).

        Args:
            module: The torch convolution (``nn.Conv1d`` for ``ApproxConv1d``, ``nn.Conv2d``
                for ``ApproxConv2d``; an approximate one is accepted too).
            multiplier: Forward multiplier (object, name or ``PassMultipliers``).
            grad_input: Multiplier of the input-gradient GEMM; default: ``multiplier``.
            grad_weight: Multiplier of the weight-gradient GEMM; default: ``multiplier``.

        Returns:
            The new layer, with the same geometry, padding mode and Parameters.

        Raises:
            TypeError: ``module`` is not the matching torch convolution.
            MultiplierError: a bad multiplier argument.
        """
        check_float_module(module, cls._FLOAT_MODULE, cls.__name__)
        new = cls(  # type: ignore[call-arg]
            **_conv_args(module),
            device="meta",
            multiplier=multiplier,
            grad_input=grad_input,
            grad_weight=grad_weight,
        )
        share_parameters(new, module, ("weight", "bias"))  # type: ignore[arg-type]
        return new

    def to_float(self) -> nn.Module:
        """The plain torch convolution sharing this layer's Parameters.

        Returns:
            An ``nn.Conv1d`` / ``nn.Conv2d`` with the same ``state_dict``.
        """
        new = self._FLOAT_MODULE(**_conv_args(self), device="meta")
        share_parameters(new, self, ("weight", "bias"))  # type: ignore[arg-type]
        return new


def _conv_args(m: Any) -> dict[str, Any]:
    return {
        "in_channels": m.in_channels,
        "out_channels": m.out_channels,
        "kernel_size": m.kernel_size,
        "stride": m.stride,
        "padding": m.padding,
        "dilation": m.dilation,
        "groups": m.groups,
        "bias": m.bias is not None,
        "padding_mode": m.padding_mode,
    }


class ApproxConv1d(_ApproxConvMixin, nn.Conv1d):
    """A drop-in :class:`torch.nn.Conv1d` whose products run through a simulated multiplier.

    Same constructor, parameters and ``state_dict`` keys as :class:`torch.nn.Conv1d` (every
    padding, padding mode, stride, dilation and groups setting), plus the multiplier keywords.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Kernel length.
        stride: Stride.
        padding: int, tuple, ``"valid"`` or ``"same"``.
        dilation: Kernel dilation.
        groups: Channel groups (``groups == in_channels`` is depthwise).
        bias: Learn an additive bias.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``.
        device: Device of the parameters.
        dtype: dtype of the parameters.
        multiplier: Forward multiplier (object, name or
            :class:`~approxsim.ops.PassMultipliers`); ``"fp32"`` runs torch's convolution.
        grad_input: Multiplier of the input-gradient GEMM; default: ``multiplier``.
        grad_weight: Multiplier of the weight-gradient GEMM; default: ``multiplier``.

    Raises:
        ValueError: invalid geometry (from :class:`torch.nn.Conv1d`).
        MultiplierError: a bad multiplier argument.

    Shape:
        - Input: ``(N, C_in, L_in)`` or ``(C_in, L_in)``.
        - Output: ``(N, C_out, L_out)`` or ``(C_out, L_out)``, as :class:`torch.nn.Conv1d`.
    """

    _FLOAT_MODULE = nn.Conv1d
    _approx_conv = staticmethod(AF.conv1d)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _Size,
        stride: _Size = 1,
        padding: str | _Size = 0,
        dilation: _Size = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: _PaddingMode = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        multiplier: MultiplierLike | PassMultipliers = "fp32",
        grad_input: Multiplier | str | None = None,
        grad_weight: Multiplier | str | None = None,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,  # type: ignore[arg-type]
            stride,  # type: ignore[arg-type]
            padding,  # type: ignore[arg-type]
            dilation,  # type: ignore[arg-type]
            groups,
            bias,
            padding_mode,
            device,
            dtype,
        )
        self.set_multiplier(multiplier, grad_input, grad_weight)


class ApproxConv2d(_ApproxConvMixin, nn.Conv2d):
    """A drop-in :class:`torch.nn.Conv2d` whose products run through a simulated multiplier.

    Same constructor, parameters and ``state_dict`` keys as :class:`torch.nn.Conv2d` (every
    padding, padding mode, stride, dilation and groups setting, depthwise included), plus the
    multiplier keywords. Runs as im2col and one batched :func:`approxsim.matmul` over the
    groups; large batches are processed in chunks so the unfolded input stays below
    :data:`approxsim.nn.functional.UNFOLD_CHUNK_BYTES`.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: int or 2-tuple.
        stride: int or 2-tuple.
        padding: int, 2-tuple, ``"valid"`` or ``"same"``.
        dilation: int or 2-tuple.
        groups: Channel groups (``groups == in_channels`` is depthwise).
        bias: Learn an additive bias.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``.
        device: Device of the parameters.
        dtype: dtype of the parameters.
        multiplier: Forward multiplier (object, name or
            :class:`~approxsim.ops.PassMultipliers`); ``"fp32"`` runs torch's convolution.
        grad_input: Multiplier of the input-gradient GEMM; default: ``multiplier``.
        grad_weight: Multiplier of the weight-gradient GEMM; default: ``multiplier``.

    Raises:
        ValueError: invalid geometry (from :class:`torch.nn.Conv2d`).
        MultiplierError: a bad multiplier argument.

    Shape:
        - Input: ``(N, C_in, H, W)`` or ``(C_in, H, W)``.
        - Output: ``(N, C_out, H_out, W_out)``, as :class:`torch.nn.Conv2d`.
    """

    _FLOAT_MODULE = nn.Conv2d
    _approx_conv = staticmethod(AF.conv2d)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _Size,
        stride: _Size = 1,
        padding: str | _Size = 0,
        dilation: _Size = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: _PaddingMode = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        multiplier: MultiplierLike | PassMultipliers = "fp32",
        grad_input: Multiplier | str | None = None,
        grad_weight: Multiplier | str | None = None,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,  # type: ignore[arg-type]
            stride,  # type: ignore[arg-type]
            padding,  # type: ignore[arg-type]
            dilation,  # type: ignore[arg-type]
            groups,
            bias,
            padding_mode,
            device,
            dtype,
        )
        self.set_multiplier(multiplier, grad_input, grad_weight)
