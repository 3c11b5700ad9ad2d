"""What the two multi-head attention twins share: layout, conversion, repr and softmax.

:class:`~approxsim.nn.attention.ApproxMultiheadAttention` (float multipliers) and
:class:`~approxsim.nn.quant_attention.QuantMultiheadAttention` (integer tables) differ only in
how they compute attention on sequence-first tensors. Everything around that lives here once:
the ``batch_first`` handling of ``forward``, the Parameters they share with their
:class:`torch.nn.MultiheadAttention` twin, ``from_float`` / ``to_float``, the repr, the
splitting into heads, the per-head key-padding mask and the softmax that gives fully masked
rows zero weights.
"""

from __future__ import annotations

from typing import Any, NamedTuple, TypeVar, cast

import torch
from torch import Tensor, nn

from approxsim.nn._base import check_float_module, share_parameters

__all__ = [
    "MHA_PARAMETER_NAMES",
    "AttentionOptions",
    "MultiheadAttentionTwin",
    "masked_softmax",
    "mha_args",
    "mha_twin",
    "per_head_padding_mask",
    "split_heads",
]

#: Parameters (and the ``out_proj`` submodule) a twin shares with its torch module.
MHA_PARAMETER_NAMES = (
    "in_proj_weight",
    "q_proj_weight",
    "k_proj_weight",
    "v_proj_weight",
    "in_proj_bias",
    "bias_k",
    "bias_v",
    "out_proj",
)

_MHA = TypeVar("_MHA", bound=nn.MultiheadAttention)


def mha_args(m: nn.MultiheadAttention) -> dict[str, Any]:
    """The constructor arguments that rebuild ``m``'s shape (no device, dtype or multiplier).

    Args:
        m: Any :class:`torch.nn.MultiheadAttention` (a twin included).

    Returns:
        Keyword arguments for the :class:`torch.nn.MultiheadAttention` constructor.
    """
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


def mha_twin(cls: type[_MHA], module: nn.MultiheadAttention, **kwargs: Any) -> _MHA:
    """A ``cls`` shaped like ``module`` that uses ``module``'s Parameters and ``out_proj``.

    The new layer is built on the meta device (no memory, no initialization), then takes over
    the Parameters, so both modules train the same tensors and share a ``state_dict``.

    Args:
        cls: The class to build (a twin, or :class:`torch.nn.MultiheadAttention` itself).
        module: The attention module to take the shape and the Parameters from.
        **kwargs: Further constructor arguments of ``cls`` (the multiplier, the config).

    Returns:
        The new module, in ``module``'s training mode.

    Raises:
        TypeError: ``module`` is not an ``nn.MultiheadAttention``.
    """
    check_float_module(module, nn.MultiheadAttention, cls.__name__)
    new = cls(**mha_args(module), device="meta", **kwargs)
    share_parameters(new, module, MHA_PARAMETER_NAMES)
    return new


def split_heads(x: Tensor, batch: int, num_heads: int, head_dim: int) -> Tensor:
    """``(S, N, H·hd)`` → ``(N·H, S, hd)``, the layout of the per-head matmuls."""
    return x.reshape(x.shape[0], batch * num_heads, head_dim).transpose(0, 1)


def per_head_padding_mask(mask: Tensor, batch: int, num_heads: int, src_len: int) -> Tensor:
    """An additive ``(N, S)`` key-padding mask repeated for every head: ``(N·H, 1, S)``."""
    heads = mask.reshape(batch, 1, 1, src_len).expand(batch, num_heads, 1, src_len)
    return heads.reshape(batch * num_heads, 1, src_len)


def masked_softmax(scores: Tensor) -> Tensor:
    """Softmax over the last dim; a row whose every score is ``-inf`` gets zeros.

    A plain softmax makes such a row NaN, and NaN outputs give NaN gradients even where
    they are replaced by zeros afterwards; filling the row before the softmax keeps both the
    weights and the gradients zero there. Other rows are computed exactly as by
    :func:`torch.softmax`.

    Args:
        scores: Attention scores with the masks already added.

    Returns:
        The attention probabilities, the shape of ``scores``.
    """
    dead = (scores == float("-inf")).all(dim=-1, keepdim=True)
    return torch.softmax(scores.masked_fill(dead, 0.0), dim=-1).masked_fill(dead, 0.0)


class AttentionOptions(NamedTuple):
    """The arguments of ``forward`` besides the three operands, as ``_attend`` receives them.

    Each field is the :meth:`MultiheadAttentionTwin.forward` argument of the same name.
    """

    key_padding_mask: Tensor | None
    need_weights: bool
    attn_mask: Tensor | None
    average_attn_weights: bool
    is_causal: bool


class MultiheadAttentionTwin:
    """Mixin of the attention twins: ``forward``'s layout, ``to_float`` and the repr.

    A subclass lists this mixin first (before its arithmetic mixin and
    :class:`torch.nn.MultiheadAttention`) and implements :meth:`_attend`, which sees
    sequence-first tensors, batched ``(L, N, E)`` or unbatched ``(L, E)``.
    """

    embed_dim: int
    num_heads: int
    kdim: int
    vdim: int
    batch_first: bool

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
        """Multi-head attention with the layer's arithmetic (never torch's native fast path).

        Args:
            query: ``(L, N, E)``, ``(N, L, E)`` with ``batch_first``, or unbatched ``(L, E)``.
            key: ``(S, N, kdim)`` (or batch-first / unbatched).
            value: ``(S, N, vdim)`` (or batch-first / unbatched).
            key_padding_mask: ``(N, S)`` or ``(S,)``; bool (True = ignore) or float (added).
            need_weights: Also return the attention weights.
            attn_mask: ``(L, S)`` or ``(N·num_heads, L, S)``; bool (True = masked) or float.
            average_attn_weights: Average the returned weights over the heads.
            is_causal: The causal-mask hint (what each layer makes of it: see its class).

        Returns:
            ``(attn_output, attn_weights)`` as :class:`torch.nn.MultiheadAttention` returns
            them (``attn_weights`` is None unless ``need_weights``).
        """
        swap = self.batch_first and query.dim() == 3
        if swap:
            query, key, value = _seq_first(query, key, value)
        options = AttentionOptions(
            key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal
        )
        out, weights = self._attend(query, key, value, options)
        if swap:
            out = out.transpose(1, 0)
        return out, weights

    def _attend(
        self, query: Tensor, key: Tensor, value: Tensor, options: AttentionOptions
    ) -> tuple[Tensor, Tensor | None]:
        """:meth:`forward` on sequence-first tensors (each twin implements it)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _attend")

    def to_float(self) -> nn.MultiheadAttention:
        """A plain :class:`torch.nn.MultiheadAttention` sharing the Parameters and out_proj.

        Returns:
            The float module, with the same Parameters (a quantized layer's observer buffers
            are dropped).
        """
        return mha_twin(nn.MultiheadAttention, cast(nn.MultiheadAttention, self))

    def _describe(self, arithmetic: str, *, dims: bool) -> str:
        """The repr body: head count, ``kdim``/``vdim`` (when ``dims``), layout, arithmetic."""
        parts = [f"embed_dim={self.embed_dim}", f"num_heads={self.num_heads}"]
        if dims and (self.kdim != self.embed_dim or self.vdim != self.embed_dim):
            parts.append(f"kdim={self.kdim}, vdim={self.vdim}")
        if self.batch_first:
            parts.append("batch_first=True")
        parts.append(arithmetic)
        return ", ".join(parts)


def _seq_first(query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Batch-first ``(N, L, E)`` operands as ``(L, N, E)``, keeping which ones are the same
    tensor (self-attention packs its three projections into one when they are)."""
    if key is value:
        if query is key:
            query = key = value = query.transpose(1, 0)
        else:
            query, key = query.transpose(1, 0), key.transpose(1, 0)
            value = key
    else:
        query, key, value = (x.transpose(1, 0) for x in (query, key, value))
    return query, key, value
