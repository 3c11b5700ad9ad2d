"""``QuantMultiheadAttention``: :class:`torch.nn.MultiheadAttention` with quantized products.

The in-projections, both attention matmuls (``Q·Kᵀ`` and ``probs·V``) and the out-projection
run through the integer multiplier's table (:func:`~approxsim.nn.quant_ops.quantized_matmul`):
the projection weights are quantized per output channel (or per tensor), every activation
operand per tensor with its own observer: ``query_observer``, ``key_observer`` and
``value_observer`` (the projection inputs), ``q_observer`` (the scaled queries),
``k_observer``, ``probs_observer`` (the attention probabilities), ``v_observer`` and
``out_observer`` (the out-projection's input). Operand A is the activation side everywhere:
the projection inputs, ``Q`` in ``Q·Kᵀ``, the probabilities in ``probs·V``. Softmax, masks
and dropout are float. ``add_bias_kv`` and ``add_zero_attn`` are not supported.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from approxsim.nn._attention_common import (
    AttentionOptions,
    MultiheadAttentionTwin,
    causal_hint,
    check_attn_mask,
    check_mha_sizes,
    check_padding_mask,
    float_mask,
    masked_softmax,
    mha_shape_check,
    mha_twin,
    per_head_padding_mask,
    split_heads,
)
from approxsim.nn.quant import QuantConfig, QuantError, RangeObserver
from approxsim.nn.quant_layers import QuantModule, quant_linear
from approxsim.nn.quant_ops import quantized_matmul

__all__ = ["QuantMultiheadAttention"]


class QuantMultiheadAttention(MultiheadAttentionTwin, QuantModule, nn.MultiheadAttention):
    """:class:`torch.nn.MultiheadAttention` whose every product is a quantized table lookup.

    Same constructor, Parameters, ``state_dict`` keys (plus the observers' ``lo``/``hi``/
    ``state`` buffers, which a float checkpoint may lack), forward signature and return values
    as :class:`torch.nn.MultiheadAttention`, except that ``add_bias_kv`` and
    ``add_zero_attn`` are refused. As in torch, ``is_causal`` is a hint that ``attn_mask`` is
    the causal mask and needs ``attn_mask`` too; masks are bool or floating-point (integer
    masks are refused). A query whose keys are all masked gets zero weights and passes no
    gradient.

    Args:
        embed_dim: Model dimension ``E``.
        num_heads: Number of heads (must divide ``E``).
        dropout: Dropout on the attention probabilities (training mode only).
        bias: Input/output projection biases.
        add_bias_kv: Must be False.
        add_zero_attn: Must be False.
        kdim: Key features (default ``E``).
        vdim: Value features (default ``E``).
        batch_first: Inputs and outputs are ``(N, L, E)`` instead of ``(L, N, E)``.
        device: Device of the parameters.
        dtype: dtype of the parameters.
        int_multiplier: The :class:`~approxsim.multipliers.integer.IntMultiplier`.
        quant: The :class:`~approxsim.nn.quant.QuantConfig` (default ``QuantConfig()``).

    Raises:
        QuantError: ``add_bias_kv`` or ``add_zero_attn``, not an IntMultiplier, or a config
            that does not fit it.
        RuntimeError: in ``forward``, operands or masks that do not fit (the messages of
            :class:`~approxsim.nn.attention.ApproxMultiheadAttention`).
        TypeError: in ``forward``, an integer mask.

    Shape:
        See :class:`torch.nn.MultiheadAttention`.
    """

    _FLOAT_MODULE = nn.MultiheadAttention
    _OBSERVERS = (
        "query_observer",
        "key_observer",
        "value_observer",
        "q_observer",
        "k_observer",
        "probs_observer",
        "v_observer",
        "out_observer",
    )
    query_observer: RangeObserver
    key_observer: RangeObserver
    value_observer: RangeObserver
    q_observer: RangeObserver
    k_observer: RangeObserver
    probs_observer: RangeObserver
    v_observer: RangeObserver
    out_observer: RangeObserver

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
        int_multiplier: Any,
        quant: QuantConfig | None = None,
    ) -> None:
        if add_bias_kv or add_zero_attn:
            raise QuantError(
                "QuantMultiheadAttention does not support add_bias_kv or add_zero_attn; "
                "exclude this layer from conversion (it keeps computing in float)"
            )
        super().__init__(
            embed_dim, num_heads, dropout, bias, False, False, kdim, vdim, batch_first,
            device, dtype,
        )  # fmt: skip
        self._init_quant(int_multiplier, quant, device)

    @staticmethod
    def supports(module: nn.MultiheadAttention) -> bool:
        """Whether ``module`` has a quantized twin (no ``bias_k``/``bias_v``, no zero attn).

        Args:
            module: A torch attention module.

        Returns:
            True when :meth:`from_float` can convert it.
        """
        return module.bias_k is None and module.bias_v is None and not module.add_zero_attn

    # ------------------------------------------------------------------ quantized pieces
    def _linear(self, obs: RangeObserver, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        rng = self._activation_range(obs, x, "projection input")
        if rng is None:
            return nn.functional.linear(x, w, b)
        return quant_linear(x, w, b, rng, self.scheme)

    def _bmm(self, obs_a: RangeObserver, a: Tensor, obs_b: RangeObserver, b: Tensor) -> Tensor:
        ra = self._activation_range(obs_a, a, "attention operand A")
        rb = self._activation_range(obs_b, b, "attention operand B")
        if ra is None or rb is None:
            return torch.bmm(a, b)
        return quantized_matmul(a, b, ra, rb, self.scheme)

    def _projections(self, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, ...]:
        e = self.embed_dim
        if self._qkv_same_embed_dim:
            wq, wk, wv = self.in_proj_weight.split(e)
        else:
            wq, wk, wv = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        bq = bk = bv = None
        if self.in_proj_bias is not None:
            bq, bk, bv = self.in_proj_bias.split(e)
        q = self._linear(self.query_observer, query, wq, bq)
        k = self._linear(self.key_observer, key, wk, bk)
        v = self._linear(self.value_observer, value, wv, bv)
        return q, k, v

    def _attend(
        self, query: Tensor, key: Tensor, value: Tensor, options: AttentionOptions
    ) -> tuple[Tensor, Tensor | None]:
        """Sequence-first quantized attention (float while calibrating)."""
        key_padding_mask = options.key_padding_mask
        batched = mha_shape_check(
            query, key, value, key_padding_mask, options.attn_mask, self.num_heads
        )
        if not batched:
            query, key, value = (x.unsqueeze(1) for x in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        tgt, n, e = query.shape
        src, h = key.shape[0], self.num_heads
        hd = e // h
        dtype = query.dtype
        key_padding_mask = float_mask(key_padding_mask, dtype, "key_padding_mask")
        attn_mask, causal = causal_hint(
            options.is_causal, options.attn_mask, key_padding_mask, options.need_weights
        )
        if causal:
            attn_mask = torch.ones(tgt, src, dtype=torch.bool, device=query.device).triu(1)
        attn_mask = float_mask(attn_mask, dtype, "attn_mask")
        check_mha_sizes(query, key, value, self.embed_dim, packed=self._qkv_same_embed_dim)
        attn_mask = check_attn_mask(attn_mask, n, h, tgt, src)
        check_padding_mask(key_padding_mask, n, src)
        q, k, v = self._projections(query, key, value)
        q = split_heads(q, n, h, hd) * (1.0 / math.sqrt(hd))
        k = split_heads(k, n, h, hd)
        v = split_heads(v, n, h, hd)
        scores = self._bmm(self.q_observer, q, self.k_observer, k.transpose(1, 2))
        mask = _merged_mask(attn_mask, key_padding_mask, n, h, src, dtype)
        if mask is not None:
            scores = scores + mask
        probs = masked_softmax(scores)
        if self.training and self.dropout > 0:
            probs = nn.functional.dropout(probs, p=self.dropout)
        out = self._bmm(self.probs_observer, probs, self.v_observer, v)  # (N·H, L, hd)
        out = out.transpose(0, 1).reshape(tgt, n, e)
        out = self._linear(self.out_observer, out, self.out_proj.weight, self.out_proj.bias)
        weights = None
        if options.need_weights:
            weights = probs.reshape(n, h, tgt, src)
            if options.average_attn_weights:
                weights = weights.mean(dim=1)
            if not batched:
                weights = weights.squeeze(0)
        if not batched:
            out = out.squeeze(1)
        return out, weights

    def extra_repr(self) -> str:
        """Head count, layout, multiplier and scheme."""
        return self._describe(self._quant_repr(), dims=False)

    @classmethod
    def from_float(
        cls, module: nn.MultiheadAttention, int_multiplier: Any, quant: QuantConfig | None = None
    ) -> QuantMultiheadAttention:
        """A quantized twin of ``module`` sharing its Parameters and its ``out_proj``.

        Args:
            module: An :class:`torch.nn.MultiheadAttention` (see :meth:`supports`).
            int_multiplier: The IntMultiplier.
            quant: The QuantConfig (default ``QuantConfig()``).

        Returns:
            The new layer, with empty observers.

        Raises:
            TypeError: ``module`` is not an ``nn.MultiheadAttention``.
            QuantError: an unsupported module, a bad multiplier or config.
        """
        new = mha_twin(cls, module, int_multiplier=int_multiplier, quant=quant)
        new._make_observers(module.out_proj.weight.device)
        return new


def _merged_mask(
    attn_mask: Tensor | None,
    key_padding_mask: Tensor | None,
    n: int,
    h: int,
    src: int,
    dtype: torch.dtype,
) -> Tensor | None:
    """One additive ``(N·H or 1, L, S)`` mask from the checked, additive attention mask
    (``(1 or N·H, L, S)``) and key-padding mask (``(N, S)``), in the scores' dtype."""
    mask = None if attn_mask is None else attn_mask.to(dtype)
    if key_padding_mask is not None:
        kpm = per_head_padding_mask(key_padding_mask.to(dtype), n, h, src)
        mask = kpm if mask is None else mask + kpm
    return mask
