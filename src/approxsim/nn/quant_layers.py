"""Quantized approximate layers: ``QuantLinear``, ``QuantConv1d``, ``QuantConv2d``; ``calibrate``.

Each layer subclasses its torch twin (same constructor arguments, Parameters and
``state_dict`` keys, plus the observer buffers ``input_observer.{lo,hi,state}``, which a float
checkpoint may lack) and :class:`QuantModule`. Its forward quantizes the input (per tensor,
range from its :class:`~approxsim.nn.quant.RangeObserver`) and the weight (per output channel
or per tensor, from the weight's own minimum and maximum), runs every code × code product
through the integer multiplier's table with exact integer sums
(:func:`~approxsim.nn.quant_ops.quantized_matmul`), scales back to float and adds the bias in
float. Convolutions are lowered to one batched GEMM over the groups (im2col: patches are
operand A, the kernel operand B).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from approxsim.nn._base import check_float_module, share_parameters
from approxsim.nn.conv import _conv_args
from approxsim.nn.functional import _conv_padding, _tuple
from approxsim.nn.quant import (
    QuantConfig,
    QuantError,
    QuantScheme,
    RangeObserver,
    check_int_multiplier,
    weight_range,
)
from approxsim.nn.quant_ops import quantized_conv2d, quantized_matmul
from approxsim.ops import conv_out_size

__all__ = [
    "QuantModule",
    "QuantLinear",
    "QuantConv1d",
    "QuantConv2d",
    "calibrate",
    "quant_linear",
    "quant_conv",
]

_Q = TypeVar("_Q", bound="QuantModule")
_Size = int | tuple[int, ...]
_PaddingMode = Literal["zeros", "reflect", "replicate", "circular"]
_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


class QuantModule:
    """Mixin of the quantized layers: the resolved scheme and the activation observers.

    ``isinstance(layer, QuantModule)`` finds a model's quantized layers. The multiplier and
    config are configuration, not state: they are not in the ``state_dict``.

    Attributes:
        scheme: The :class:`~approxsim.nn.quant.QuantScheme` (config resolved against the
            multiplier).
    """

    _FLOAT_MODULE: ClassVar[type[nn.Module]]
    #: Names of the layer's RangeObserver submodules.
    _OBSERVERS: ClassVar[tuple[str, ...]] = ("input_observer",)
    scheme: QuantScheme
    training: bool

    def _init_quant(
        self, int_multiplier: Any, quant: QuantConfig | None, device: Any = None
    ) -> None:
        mult = check_int_multiplier(int_multiplier, type(self).__name__)
        if quant is not None and not isinstance(quant, QuantConfig):
            raise QuantError(f"quant must be a QuantConfig, got {type(quant).__name__}")
        self.scheme = (quant or QuantConfig()).resolve(mult)
        self._make_observers(device)

    def _make_observers(self, device: Any) -> None:
        for name in self._OBSERVERS:
            setattr(self, name, RangeObserver(self.scheme.config, device))

    @property
    def int_multiplier(self) -> Any:
        """The :class:`~approxsim.multipliers.integer.IntMultiplier` of the products."""
        return self.scheme.multiplier

    @property
    def quant_config(self) -> QuantConfig:
        """The layer's :class:`~approxsim.nn.quant.QuantConfig`."""
        return self.scheme.config

    def observers(self) -> list[RangeObserver]:
        """The layer's activation observers.

        Returns:
            One :class:`~approxsim.nn.quant.RangeObserver` per quantized activation operand.
        """
        return [getattr(self, name) for name in self._OBSERVERS]

    def _activation_range(self, obs: RangeObserver, x: Tensor, what: str) -> Any:
        """The range to quantize ``x`` with; None while calibrating (the layer runs in
        float then, so later layers see the float model's activations)."""
        if obs.calibrating:
            obs.observe(x)
            return None
        if self.training:
            obs.observe(x)
        return obs.range(f"{type(self).__name__} ({what})")

    def _quant_repr(self) -> str:
        return self.scheme.describe()

    def to_float(self) -> nn.Module:
        """The plain torch layer sharing this layer's Parameters (each layer implements it).

        Returns:
            The float layer; the observer buffers are dropped.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement to_float")


# ---------------------------------------------------------------------------- functional
def quant_linear(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    input_range: tuple[Tensor, Tensor],
    scheme: QuantScheme,
) -> Tensor:
    """Quantized approximate :func:`torch.nn.functional.linear`.

    Args:
        input: ``(*, in_features)``, operand A of every product.
        weight: ``(out_features, in_features)``, operand B (as ``weightᵀ``).
        bias: ``(out_features,)`` or None, added in float.
        input_range: ``(lo, hi)`` of the input (per tensor).
        scheme: The resolved quantization scheme.

    Returns:
        ``(*, out_features)`` float32.

    Raises:
        RuntimeError: the input's last dimension is not ``in_features``.
        QuantError: non-finite values.
    """
    k = weight.shape[1]
    if input.shape[-1:] != weight.shape[-1:]:
        raise RuntimeError(
            f"approxsim quantized linear: input has shape {tuple(input.shape)} but the weight "
            f"expects {k} features in the last dimension"
        )
    per_channel = scheme.config.weight_granularity == "per-channel"
    w_lo, w_hi = weight_range(weight, per_channel)
    if per_channel:
        w_lo, w_hi = w_lo.view(1, 1, -1), w_hi.view(1, 1, -1)
    out = quantized_matmul(
        input.reshape(1, -1, k), weight.t().unsqueeze(0), input_range, (w_lo, w_hi), scheme
    )
    out = out.reshape(*input.shape[:-1], weight.shape[0])
    return out + bias if bias is not None else out


def quant_conv(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: _Size,
    padding: str | _Size,
    dilation: _Size,
    groups: int,
    padding_mode: str,
    input_range: tuple[Tensor, Tensor],
    scheme: QuantScheme,
) -> Tensor:
    """Quantized approximate 1-D or 2-D convolution (``weight.dim()`` decides which).

    The input is padded in float (``padding_mode``; zero padding is real 0, i.e. the zero
    point's code, whose products go through the table like any other) and quantized; the
    codes are unfolded into patches and multiplied with the kernel's codes as one GEMM per
    group (:func:`~approxsim.nn.quant_ops.quantized_conv2d`).

    Args:
        input: ``(N, C_in, *spatial)`` or unbatched ``(C_in, *spatial)``.
        weight: ``(C_out, C_in / groups, *kernel)``.
        bias: ``(C_out,)`` or None, added in float.
        stride: Stride (int or tuple).
        padding: int, tuple, ``"valid"`` or ``"same"``.
        dilation: Dilation (int or tuple).
        groups: Channel groups.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``.
        input_range: ``(lo, hi)`` of the input (per tensor).
        scheme: The resolved quantization scheme.

    Returns:
        The convolution, shaped as torch's.

    Raises:
        RuntimeError: shapes that do not fit.
        ValueError: a bad padding, padding mode or groups.
        QuantError: non-finite values.
    """
    nd = weight.dim() - 2
    if padding_mode not in _PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")
    if input.dim() not in (nd + 1, nd + 2):
        raise RuntimeError(
            f"approxsim quantized conv{nd}d: expected a {nd + 1}-D or {nd + 2}-D input, got "
            f"shape {tuple(input.shape)}"
        )
    if not isinstance(groups, int) or groups < 1 or weight.shape[0] % groups:
        raise ValueError(f"groups must be a positive int dividing out_channels, got {groups!r}")
    kernel = tuple(weight.shape[2:])
    st, dil = _tuple(stride, nd, "stride"), _tuple(dilation, nd, "dilation")
    pads = _conv_padding(padding, kernel, dil, st)
    unbatched = input.dim() == nd + 1
    x = input.unsqueeze(0) if unbatched else input
    c = weight.shape[1] * groups
    if x.shape[1] != c:
        raise RuntimeError(
            f"approxsim quantized conv{nd}d: weight of shape {tuple(weight.shape)} with "
            f"groups={groups} expects {c} input channels, got input shape {tuple(input.shape)}"
        )
    flat = [p for pair in reversed(pads) for p in pair]  # F.pad order: last dim first
    if any(flat):
        x = F.pad(x, flat, mode="constant" if padding_mode == "zeros" else padding_mode)
    w = weight
    if nd == 1:
        x, w, kernel, st, dil = x.unsqueeze(2), w.unsqueeze(2), (1, *kernel), (1, *st), (1, *dil)
    out_size = [conv_out_size(x.shape[2 + i], kernel[i], st[i], dil[i], 0) for i in range(2)]
    if min(out_size) < 1:
        raise RuntimeError(
            f"approxsim quantized conv{nd}d: the (padded) input {tuple(x.shape[2:])} is smaller "
            f"than the dilated kernel {tuple(kernel)}"
        )
    per_channel = scheme.config.weight_granularity == "per-channel"
    y = quantized_conv2d(
        x, w, (st[0], st[1]), (dil[0], dil[1]), groups, input_range,
        weight_range(weight, per_channel), scheme,
    )  # fmt: skip
    if nd == 1:
        y = y.squeeze(2)
    if bias is not None:
        y = y + bias.reshape((1, -1) + (1,) * nd)
    return y.squeeze(0) if unbatched else y


# ---------------------------------------------------------------------------- layers
class QuantLinear(QuantModule, nn.Linear):
    """:class:`torch.nn.Linear` with quantized operands and an integer approximate multiplier.

    ``y = dequant(Σ_k f(q(x), q(W)ᵀ)) + b`` with ``f`` the multiplier's table (see
    ``docs/quantization.md``). Same constructor, Parameters and ``state_dict`` keys as
    :class:`torch.nn.Linear`, plus ``input_observer.{lo,hi,state}``.

    Args:
        in_features: Size of each input sample.
        out_features: Size of each output sample.
        bias: Learn an additive bias.
        device: Device of the parameters.
        dtype: dtype of the parameters.
        int_multiplier: The :class:`~approxsim.multipliers.integer.IntMultiplier`.
        quant: The :class:`~approxsim.nn.quant.QuantConfig` (default ``QuantConfig()``).

    Raises:
        QuantError: not an IntMultiplier, or a config that does not fit it.

    Shape:
        - Input: ``(*, in_features)``; output: ``(*, out_features)``.
    """

    _FLOAT_MODULE = nn.Linear
    input_observer: RangeObserver

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        int_multiplier: Any,
        quant: QuantConfig | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias, device, dtype)
        self._init_quant(int_multiplier, quant, device)

    def forward(self, input: Tensor) -> Tensor:
        """Apply the quantized approximate affine map (float while calibrating).

        Args:
            input: ``(*, in_features)``.

        Returns:
            ``(*, out_features)``.
        """
        rng = self._activation_range(self.input_observer, input, "input")
        if rng is None:
            return F.linear(input, self.weight, self.bias)
        return quant_linear(input, self.weight, self.bias, rng, self.scheme)

    def extra_repr(self) -> str:
        """Torch's description plus the multiplier and scheme."""
        return f"{super().extra_repr()}, {self._quant_repr()}"

    @classmethod
    def from_float(
        cls, module: nn.Linear, int_multiplier: Any, quant: QuantConfig | None = None
    ) -> QuantLinear:
        """A quantized twin of ``module`` sharing its Parameters (nothing is copied).

        Args:
            module: An :class:`torch.nn.Linear` (or a subclass, such as ``ApproxLinear``).
            int_multiplier: The IntMultiplier.
            quant: The QuantConfig (default ``QuantConfig()``).

        Returns:
            The new layer, with empty observers.

        Raises:
            TypeError: ``module`` is not an ``nn.Linear``.
            QuantError: a bad multiplier or config.
        """
        check_float_module(module, nn.Linear, cls.__name__)
        new = cls(
            module.in_features,
            module.out_features,
            bias=module.bias is not None,
            device="meta",
            int_multiplier=int_multiplier,
            quant=quant,
        )
        share_parameters(new, module, ("weight", "bias"))
        new._make_observers(module.weight.device)
        return new

    def to_float(self) -> nn.Linear:
        """A plain :class:`torch.nn.Linear` sharing this layer's Parameters.

        Returns:
            The float layer (the observer buffers are dropped).
        """
        new = nn.Linear(self.in_features, self.out_features, self.bias is not None, "meta")
        share_parameters(new, self, ("weight", "bias"))
        return new


class _QuantConvMixin(QuantModule):
    """forward / from_float / to_float / repr shared by the quantized convolutions."""

    in_channels: int
    out_channels: int
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: str | tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    weight: Tensor
    bias: Tensor | None
    input_observer: RangeObserver

    def forward(self, input: Tensor) -> Tensor:
        """Apply the quantized approximate convolution (float while calibrating).

        Args:
            input: ``(N, C_in, *spatial)`` or unbatched ``(C_in, *spatial)``.

        Returns:
            The convolution, shaped as the torch twin's.
        """
        rng = self._activation_range(self.input_observer, input, "input")
        if rng is None:
            return super().forward(input)  # type: ignore[misc,no-any-return]
        return quant_conv(
            input,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            self.padding_mode,  # type: ignore[attr-defined]
            rng,
            self.scheme,
        )

    def extra_repr(self) -> str:
        """Torch's convolution description plus the multiplier and scheme."""
        return f"{super().extra_repr()}, {self._quant_repr()}"  # type: ignore[misc]

    @classmethod
    def from_float(
        cls: type[_Q], module: nn.Module, int_multiplier: Any, quant: QuantConfig | None = None
    ) -> _Q:
        """A quantized twin of ``module`` sharing its Parameters (nothing is copied).

        Args:
            module: The torch convolution (``nn.Conv1d`` / ``nn.Conv2d``, subclasses such as
                the ``Approx*`` layers included).
            int_multiplier: The IntMultiplier.
            quant: The QuantConfig (default ``QuantConfig()``).

        Returns:
            The new layer, with the same geometry and empty observers.

        Raises:
            TypeError: ``module`` is not the matching torch convolution.
            QuantError: a bad multiplier or config.
        """
        check_float_module(module, cls._FLOAT_MODULE, cls.__name__)
        new = cls(  # type: ignore[call-arg]
            **_conv_args(module), device="meta", int_multiplier=int_multiplier, quant=quant
        )
        share_parameters(new, module, ("weight", "bias"))  # type: ignore[arg-type]
        new._make_observers(module.weight.device)  # type: ignore[union-attr]
        return new

    def to_float(self) -> nn.Module:
        """The plain torch convolution sharing this layer's Parameters.

        Returns:
            An ``nn.Conv1d`` / ``nn.Conv2d`` (the observer buffers are dropped).
        """
        new = self._FLOAT_MODULE(**_conv_args(self), device="meta")
        share_parameters(new, self, ("weight", "bias"))  # type: ignore[arg-type]
        return new


_CONV_DOC_ARGS = """
    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Kernel size.
        stride: Stride.
        padding: int, tuple, ``"valid"`` or ``"same"``.
        dilation: Kernel dilation.
        groups: Channel groups (``groups == in_channels`` is depthwise).
        bias: Learn an additive bias.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``.
        device: Device of the parameters.
        dtype: dtype of the parameters.
        int_multiplier: The :class:`~approxsim.multipliers.integer.IntMultiplier`.
        quant: The :class:`~approxsim.nn.quant.QuantConfig` (default ``QuantConfig()``).

    Raises:
        ValueError: invalid geometry (from torch).
        QuantError: not an IntMultiplier, or a config that does not fit it.
"""


class QuantConv1d(_QuantConvMixin, nn.Conv1d):
    __doc__ = (
        """:class:`torch.nn.Conv1d` with quantized operands and an integer approximate multiplier.

    Same constructor, Parameters and ``state_dict`` keys as :class:`torch.nn.Conv1d`, plus
    ``input_observer.{lo,hi,state}``.
"""
        + _CONV_DOC_ARGS
    )

    _FLOAT_MODULE = nn.Conv1d

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
        int_multiplier: Any,
        quant: QuantConfig | None = None,
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
        self._init_quant(int_multiplier, quant, device)


class QuantConv2d(_QuantConvMixin, nn.Conv2d):
    __doc__ = (
        """:class:`torch.nn.Conv2d` with quantized operands and an integer approximate multiplier.

    Same constructor, Parameters and ``state_dict`` keys as :class:`torch.nn.Conv2d`, plus
    ``input_observer.{lo,hi,state}``. Depthwise, grouped, strided, dilated and every padding
    mode are supported.
"""
        + _CONV_DOC_ARGS
    )

    _FLOAT_MODULE = nn.Conv2d

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
        int_multiplier: Any,
        quant: QuantConfig | None = None,
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
        self._init_quant(int_multiplier, quant, device)


# ---------------------------------------------------------------------------- calibration
def calibrate(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    freeze: bool = True,
    forward: Callable[[nn.Module, Any], Any] | None = None,
) -> int:
    """Post-training quantization: observe activation ranges on ``batches``, then fix them.

    Every quantized layer's observers start afresh; the model runs in eval mode without
    gradients, each quantized layer computing in float (so every layer sees the float model's
    activations) while its observers collect ``minmax`` or ``percentile`` ranges. Afterwards
    the ranges are frozen (``freeze=True``) or left to follow the data by EMA in training
    mode (``freeze=False``, for quantization-aware fine-tuning). The model's training mode is
    restored.

    Args:
        model: A model holding quantized layers (see :func:`approxsim.convert_model`).
        batches: Inputs: tensors, or ``(input, target, …)`` tuples / lists whose first element
            is the input (a data loader works as is).
        freeze: Freeze the ranges after calibration.
        forward: ``forward(model, batch)`` to run one batch, for models that take something
            else than one tensor.

    Returns:
        The number of batches run.

    Raises:
        QuantError: the model has no quantized layer, ``batches`` was empty, or a layer saw
            no data.
    """
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, QuantModule)]
    if not layers:
        raise QuantError(
            "calibrate: the model has no quantized layers; convert it first with "
            "approxsim.convert_model(model, int_multiplier, quant=QuantConfig())"
        )
    observers = [(name, obs) for name, m in layers for obs in m.observers()]
    for _, obs in observers:
        obs.begin_calibration()
    was_training = model.training
    model.eval()
    count = 0
    try:
        with torch.no_grad():
            for batch in batches:
                if forward is not None:
                    forward(model, batch)
                elif isinstance(batch, (tuple, list)):
                    model(batch[0])
                else:
                    model(batch)
                count += 1
    finally:
        seen: dict[str, int] = {}
        for name, obs in observers:
            n = obs.end_calibration(freeze)
            seen[name] = min(n, seen.get(name, n))
        model.train(was_training)
    if count == 0:
        raise QuantError("calibrate: no batches were given; pass a few batches of inputs")
    unseen = sorted({name or "(model)" for name, n in seen.items() if n == 0})
    if unseen:
        raise QuantError(
            f"calibrate: {len(unseen)} quantized layer(s) saw no data: {', '.join(unseen)}; "
            "check that the model calls them (or pass forward=) or exclude them from conversion"
        )
    return count
