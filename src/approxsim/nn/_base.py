"""The mixin shared by every approximate layer: its multipliers, repr, copies and conversion.

An approximate layer is a subclass of its torch twin (``ApproxLinear(nn.Linear)`` …) plus
:class:`ApproxModule`, which holds the layer's :class:`~approxsim.ops.PassMultipliers`. The
multipliers are not part of the ``state_dict`` (they are configuration, like a layer's
``stride``), so checkpoints move freely between plain and converted models.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar, TypeVar

from torch import nn

from approxsim.multipliers import Multiplier, MultiplierLike
from approxsim.ops import PassMultipliers, resolve_passes

__all__ = ["ApproxModule"]

_M = TypeVar("_M", bound="ApproxModule")


class ApproxModule:
    """Mixin of the approximate layers: the multipliers of the forward and backward passes.

    Every ``Approx*`` layer derives from this class and from its torch twin, so
    ``isinstance(layer, approxsim.nn.ApproxModule)`` finds the converted layers of a model and
    ``isinstance(layer, nn.Linear)`` still holds.

    Attributes:
        multiplier: The layer's :class:`~approxsim.ops.PassMultipliers` (forward, grad-input and
            grad-weight multipliers). Assigning a :class:`~approxsim.Multiplier`, a name such
            as ``"mitchell7"`` or a ``PassMultipliers`` replaces all three passes.
    """

    #: The plain torch class this layer converts from and back to (set by each subclass).
    _FLOAT_MODULE: ClassVar[type[nn.Module]]
    _passes: PassMultipliers

    @property
    def multiplier(self) -> PassMultipliers:
        """The multipliers of the forward, input-gradient and weight-gradient products."""
        return self._passes

    @multiplier.setter
    def multiplier(self, value: MultiplierLike | PassMultipliers) -> None:
        self.set_multiplier(value)

    def set_multiplier(
        self,
        multiplier: MultiplierLike | PassMultipliers,
        grad_input: Multiplier | str | None = None,
        grad_weight: Multiplier | str | None = None,
    ) -> None:
        """Replace the layer's multipliers (parameters and state are untouched).

        Args:
            multiplier: Forward multiplier (a :class:`~approxsim.Multiplier`, a name, or a
                :class:`~approxsim.ops.PassMultipliers` for all three passes).
            grad_input: Multiplier of the input-gradient GEMM; default: the forward one.
            grad_weight: Multiplier of the weight-gradient GEMM; default: the forward one.

        Raises:
            MultiplierError: an unknown name or a wrong type.
        """
        # object.__setattr__: nn.Module.__setattr__ would look the name up in its dicts first.
        object.__setattr__(self, "_passes", resolve_passes(multiplier, grad_input, grad_weight))

    def to_float(self) -> nn.Module:
        """The plain torch layer sharing this layer's Parameters (each layer implements it).

        Returns:
            The exact torch twin, with the same ``state_dict``.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement to_float")

    def _multiplier_repr(self) -> str:
        return f"multiplier={self._passes!r}"

    def __deepcopy__(self: _M, memo: dict[int, Any]) -> _M:
        # Multipliers are immutable and may hold large LUTs: copies of a layer share them
        # (the default deep copy would rebuild and re-hash every LUT).
        passes = self._passes
        memo[id(passes)] = passes
        for m in (passes.forward, passes.grad_input, passes.grad_weight):
            memo[id(m)] = m
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        new.__setstate__(copy.deepcopy(self.__dict__, memo))  # type: ignore[attr-defined]
        return new


def check_float_module(module: Any, expected: type[nn.Module], cls_name: str) -> None:
    """Raise a helpful TypeError unless ``module`` is an instance of ``expected``."""
    if not isinstance(module, expected):
        raise TypeError(
            f"{cls_name}.from_float expects an nn.{expected.__name__}, got "
            f"{type(module).__name__}; use approxsim.convert_model to convert a whole model"
        )


def share_parameters(dst: nn.Module, src: nn.Module, names: tuple[str, ...]) -> None:
    """Make ``dst`` use ``src``'s Parameters (or submodules) under ``names``, and its mode."""
    for name in names:
        setattr(dst, name, getattr(src, name))
    dst.training = src.training
