"""``ApproxMultiheadAttention``: :class:`torch.nn.MultiheadAttention` with simulated multipliers.

The in-projections, both attention matmuls (``Q·Kᵀ`` and ``probs·V``) and the out-projection
run through the multiplier (:func:`approxsim.nn.functional.multi_head_attention_forward`).
The forward never takes torch's native fast path (``torch._native_multi_head_attention``),
which would compute exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from approxsim.multipliers import Multiplier, MultiplierLike
from approxsim.nn import functional as AF
from approxsim.nn._attention_common import AttentionOptions, MultiheadAttentionTwin, mha_twin
from approxsim.nn._base import ApproxModule
from approxsim.ops import PassMultipliers

__all__ = ["ApproxMultiheadAttention"]


class ApproxMultiheadAttention(MultiheadAttentionTwin, ApproxModule, nn.MultiheadAttention):
    """A drop-in :class:`torch.nn.MultiheadAttention` with every product approximate.

    Same constructor, parameters, ``state_dict`` keys, forward signature and return values as
    :class:`torch.nn.MultiheadAttention` (``batch_first``, ``kdim``/``vdim``,
    ``add_bias_kv``, ``add_zero_attn``, dropout, masks, ``need_weights``,
    ``average_attn_weights``, ``is_causal``), plus the multiplier keywords. Operand A is the
    activation side everywhere: the inputs of the projections, ``Q`` in ``Q·Kᵀ``, the
    probabilities in ``probs·V``. As in torch, ``is_causal`` is a hint that ``attn_mask`` is
    the causal mask and needs ``attn_mask`` too. One deliberate difference: a query whose keys
    are all masked gets zero weights (torch returns NaN weights there).

    Args:
        embed_dim: Model dimension ``E``.
        num_heads: Number of heads (must divide ``E``).
        dropout: Dropout on the attention probabilities (training mode only).
        bias: Input/output projection biases.
        add_bias_kv: Learn a bias appended to the keys and values.
        add_zero_attn: Append a zero key/value position.
        kdim: Key features (default ``E``).
        vdim: Value features (default ``E``).
        batch_first: Inputs and outputs are ``(N, L, E)`` instead of ``(L, N, E)``.
        device: Device of the parameters.
        dtype: dtype of the parameters.
        multiplier: Forward multiplier (object, name or
            :class:`~approxsim.ops.PassMultipliers`).
        grad_input: Multiplier of the input-gradient GEMMs; default: ``multiplier``.
        grad_weight: Multiplier of the weight-gradient GEMMs; default: ``multiplier``.

    Raises:
        ValueError: non-positive sizes (from torch).
        AssertionError: ``embed_dim`` not divisible by ``num_heads`` (from torch).
        MultiplierError: a bad multiplier argument.

    Shape:
        See :class:`torch.nn.MultiheadAttention`.
    """

    _FLOAT_MODULE = nn.MultiheadAttention

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        multiplier: MultiplierLike | PassMultipliers = "fp32",
        grad_input: Multiplier | str | None = None,
        grad_weight: Multiplier | str | None = None,
    ) -> None:
        super().__init__(
            embed_dim,
            num_heads,
            dropout,
            bias,
            add_bias_kv,
            add_zero_attn,
            kdim,
            vdim,
            batch_first,
            device,
            dtype,
        )
        self.set_multiplier(multiplier, grad_input, grad_weight)

    def _attend(
        self, query: Tensor, key: Tensor, value: Tensor, options: AttentionOptions
    ) -> tuple[Tensor, Tensor | None]:
        """Sequence-first attention through the functional form, with the layer's Parameters."""
        separate = not self._qkv_same_embed_dim
        return AF.multi_head_attention_forward(
            query,
            key,
            value,
            self.embed_dim,
            self.num_heads,
            self.in_proj_weight,
            self.in_proj_bias,
            self.bias_k,
            self.bias_v,
            self.add_zero_attn,
            self.dropout,
            self.out_proj.weight,
            self.out_proj.bias,
            training=self.training,
            key_padding_mask=options.key_padding_mask,
            need_weights=options.need_weights,
            attn_mask=options.attn_mask,
            use_separate_proj_weight=separate,
            q_proj_weight=self.q_proj_weight if separate else None,
            k_proj_weight=self.k_proj_weight if separate else None,
            v_proj_weight=self.v_proj_weight if separate else None,
            average_attn_weights=options.average_attn_weights,
            is_causal=options.is_causal,
            multiplier=self._passes,
        )

    def extra_repr(self) -> str:
        """Head count, layout and the multiplier (torch's MHA prints no extra information)."""
        return self._describe(self._multiplier_repr(), dims=True)

    @classmethod
    def from_float(
        cls,
        module: nn.MultiheadAttention,
        multiplier: MultiplierLike | PassMultipliers,
        *,
        grad_input: Multiplier | str | None = None,
        grad_weight: Multiplier | str | None = None,
    ) -> ApproxMultiheadAttention:
        """An approximate twin of ``module`` sharing its Parameters and its ``out_proj``.

        Args:
            module: An :class:`torch.nn.MultiheadAttention` (an approximate one is accepted).
            multiplier: Forward multiplier (object, name or ``PassMultipliers``).
            grad_input: Multiplier of the input-gradient GEMMs; default: ``multiplier``.
            grad_weight: Multiplier of the weight-gradient GEMMs; default: ``multiplier``.

        Returns:
            The new layer; the out-projection module itself is shared.

        Raises:
            TypeError: ``module`` is not an ``nn.MultiheadAttention``.
            MultiplierError: a bad multiplier argument.
        """
        return mha_twin(
            cls, module, multiplier=multiplier, grad_input=grad_input, grad_weight=grad_weight
        )
