"""``ApproxMultiheadAttention``: :class:`torch.nn.MultiheadAttention` with simulated multipliers.

The in-projections, both attention matmuls (``Q·Kᵀ`` and ``probs·V``) and the out-projection
run through the multiplier (:func:`approxsim.nn.functional.multi_head_attention_forward`).
The forward never takes torch's native fast path (``torch._native_multi_head_attention``),
which would compute exactly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from approxsim.multipliers import Multiplier, MultiplierLike
from approxsim.nn import functional as AF
from approxsim.nn._base import ApproxModule, check_float_module, share_parameters
from approxsim.ops import PassMultipliers

__all__ = ["ApproxMultiheadAttention"]

_PARAMETER_NAMES = (
    "in_proj_weight",
    "q_proj_weight",
    "k_proj_weight",
    "v_proj_weight",
    "in_proj_bias",
    "bias_k",
    "bias_v",
    "out_proj",
)


class ApproxMultiheadAttention(ApproxModule, nn.MultiheadAttention):
    """A drop-in :class:`torch.nn.MultiheadAttention` with every product approximate.

    Same constructor, parameters, ``state_dict`` keys, forward signature and return values as
    :class:`torch.nn.MultiheadAttention` (``batch_first``, ``kdim``/``vdim``,
    ``add_bias_kv``, ``add_zero_attn``, dropout, masks, ``need_weights``,
    ``average_attn_weights``, ``is_causal``), plus the multiplier keywords. Operand A is the
    activation side everywhere: the inputs of the projections, ``Q`` in ``Q·Kᵀ``, the
    probabilities in ``probs·V``. One deliberate difference: a query whose keys are all masked
    gets zero weights (torch returns NaN weights there).

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

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Approximate multi-head attention (never torch's native fast path).

        Args:
            query: ``(L, N, E)``, ``(N, L, E)`` with ``batch_first``, or unbatched ``(L, E)``.
            key: ``(S, N, kdim)`` (or batch-first / unbatched).
            value: ``(S, N, vdim)`` (or batch-first / unbatched).
            key_padding_mask: ``(N, S)`` or ``(S,)``; bool (True = ignore) or float (added).
            need_weights: Also return the attention weights.
            attn_mask: ``(L, S)`` or ``(N·num_heads, L, S)``; bool (True = masked) or float.
            average_attn_weights: Average the returned weights over the heads.
            is_causal: Hint that ``attn_mask`` is the causal mask (as in torch).

        Returns:
            ``(attn_output, attn_weights)`` exactly as :class:`torch.nn.MultiheadAttention`
            returns them (``attn_weights`` is None unless ``need_weights``).
        """
        is_batched = query.dim() == 3
        if self.batch_first and is_batched:
            # Keep the "query is key is value" identity (self-attention packs one projection).
            if key is value:
                if query is key:
                    query = key = value = query.transpose(1, 0)
                else:
                    query, key = (x.transpose(1, 0) for x in (query, key))
                    value = key
            else:
                query, key, value = (x.transpose(1, 0) for x in (query, key, value))
        separate = not self._qkv_same_embed_dim
        out, weights = AF.multi_head_attention_forward(
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
            key_padding_mask=key_padding_mask,
            need_weights=need_weights,
            attn_mask=attn_mask,
            use_separate_proj_weight=separate,
            q_proj_weight=self.q_proj_weight if separate else None,
            k_proj_weight=self.k_proj_weight if separate else None,
            v_proj_weight=self.v_proj_weight if separate else None,
            average_attn_weights=average_attn_weights,
            is_causal=is_causal,
            multiplier=self._passes,
        )
        if self.batch_first and is_batched:
            out = out.transpose(1, 0)
        return out, weights

    def extra_repr(self) -> str:
        """Head count, layout and the multiplier (torch's MHA prints no extra information)."""
        parts = [f"embed_dim={self.embed_dim}", f"num_heads={self.num_heads}"]
        if self.kdim != self.embed_dim or self.vdim != self.embed_dim:
            parts.append(f"kdim={self.kdim}, vdim={self.vdim}")
        if self.batch_first:
            parts.append("batch_first=True")
        parts.append(self._multiplier_repr())
        return ", ".join(parts)

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
        check_float_module(module, nn.MultiheadAttention, cls.__name__)
        new = cls(
            **_mha_args(module),
            device="meta",
            multiplier=multiplier,
            grad_input=grad_input,
            grad_weight=grad_weight,
        )
        share_parameters(new, module, _PARAMETER_NAMES)
        return new

    def to_float(self) -> nn.MultiheadAttention:
        """A plain :class:`torch.nn.MultiheadAttention` sharing the Parameters and out_proj.

        Returns:
            The exact module (same ``state_dict``).
        """
        new = nn.MultiheadAttention(**_mha_args(self), device="meta")
        share_parameters(new, self, _PARAMETER_NAMES)
        return new


def _mha_args(m: nn.MultiheadAttention) -> dict[str, Any]:
    return {
        "embed_dim": m.embed_dim,
        "num_heads": m.num_heads,
        "dropout": m.dropout,
        "bias": m.in_proj_bias is not None,
        "add_bias_kv": m.bias_k is not None,
        "add_zero_attn": m.add_zero_attn,
        "kdim": m.kdim,
        "vdim": m.vdim,
        "batch_first": m.batch_first,
    }
