"""What the two multi-head attention twins share: layout, conversion, repr and softmax.

:class:`~approxsim.nn.attention.ApproxMultiheadAttention` (float multipliers) and
:class:`~approxsim.nn.quant_attention.QuantMultiheadAttention` (integer tables) differ only in
how they compute attention on sequence-first tensors. Everything around that lives here once:
the ``batch_first`` handling of ``forward``, the Parameters they share with their
:class:`torch.nn.MultiheadAttention` twin, ``from_float`` / ``to_float``, the repr, the
splitting into heads, the per-head key-padding mask and the softmax that gives fully masked
rows zero weights. The input checks live here too, so that both layers (and
:func:`approxsim.nn.functional.multi_head_attention_forward`) refuse the same bad inputs with
the same one-line messages: the operands' dims (:func:`mha_shape_check`) and sizes
(:func:`check_mha_sizes`), the mask dtypes (:func:`float_mask`), the masks' shapes
(:func:`check_attn_mask`, :func:`check_padding_mask`) and the ``is_causal`` hint
(:func:`causal_hint`).
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
    "causal_hint",
    "check_attn_mask",
    "check_mha_sizes",
    "check_padding_mask",
    "float_mask",
    "masked_softmax",
    "mha_args",
    "mha_shape_check",
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


def mha_shape_check(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    key_padding_mask: Tensor | None,
    attn_mask: Tensor | None,
    num_heads: int,
) -> bool:
    """Check the dims of sequence-first attention inputs; tell batched from unbatched.

    Args:
        query: ``(L, N, E)`` (batched) or ``(L, E)`` (unbatched).
        key: Same number of dims as ``query``.
        value: Same number of dims as ``query``.
        key_padding_mask: None, ``(N, S)`` (batched) or ``(S,)`` (unbatched).
        attn_mask: None, 2-D or 3-D; an unbatched 3-D mask must be ``(num_heads, L, S)``.
        num_heads: Number of heads.

    Returns:
        True when the input is batched (3-D ``query``).

    Raises:
        RuntimeError: a tensor with the wrong number of dims, or a wrong unbatched 3-D mask.
    """
    batched = query.dim() == 3
    if not batched and query.dim() != 2:
        raise RuntimeError(
            f"query must be 3-D (batched) or 2-D (unbatched), got {query.dim()}-D; note that "
            "batch_first is handled by the module, not by this function"
        )
    kind = "batched (3-D)" if batched else "unbatched (2-D)"
    if key.dim() != query.dim() or value.dim() != query.dim():
        raise RuntimeError(
            f"for {kind} query, key and value must be {query.dim()}-D too, got "
            f"{key.dim()}-D and {value.dim()}-D"
        )
    want_kpm = "2-D (batch, source)" if batched else "1-D (source)"
    if key_padding_mask is not None and key_padding_mask.dim() != query.dim() - 1:
        raise RuntimeError(
            f"for {kind} query, key_padding_mask must be {want_kpm}, got {key_padding_mask.dim()}-D"
        )
    if attn_mask is not None:
        if attn_mask.dim() not in (2, 3):
            raise RuntimeError(f"attn_mask must be 2-D or 3-D, got {attn_mask.dim()}-D")
        if not batched and attn_mask.dim() == 3:
            want = (num_heads, query.shape[0], key.shape[0])
            if tuple(attn_mask.shape) != want:
                raise RuntimeError(
                    f"for unbatched input a 3-D attn_mask must have shape {want}, got "
                    f"{tuple(attn_mask.shape)}"
                )
    return batched


def check_mha_sizes(
    query: Tensor, key: Tensor, value: Tensor, embed_dim: int, *, packed: bool
) -> None:
    """Check the sizes of batched sequence-first operands ``(L, N, E)``, ``(S, N, ·)``.

    Args:
        query: ``(L, N, E)``.
        key: ``(S, N, kdim)``.
        value: ``(S, N, vdim)``.
        embed_dim: The layer's ``E``.
        packed: The projections are one packed ``in_proj_weight``, so ``key`` and ``value``
            must have the same shape (else only their sequence and batch dims must agree).

    Raises:
        RuntimeError: a wrong embedding dim, batch sizes that differ, or key and value that
            do not fit each other.
    """
    if query.shape[2] != embed_dim:
        raise RuntimeError(f"expected embedding dimension {embed_dim}, got {query.shape[2]}")
    if key.shape[1] != query.shape[1] or value.shape[1] != query.shape[1]:
        raise RuntimeError(
            f"query has batch size {query.shape[1]} but key and value have "
            f"{key.shape[1]} and {value.shape[1]}"
        )
    if packed:
        if key.shape != value.shape:
            raise RuntimeError(
                f"key shape {tuple(key.shape)} does not match value shape {tuple(value.shape)}"
            )
    elif key.shape[:2] != value.shape[:2]:
        raise RuntimeError(
            f"key's sequence and batch dims {tuple(key.shape[:2])} do not match value's "
            f"{tuple(value.shape[:2])}"
        )


def float_mask(mask: Tensor | None, dtype: torch.dtype, what: str) -> Tensor | None:
    """A mask as an additive float mask: bool True (masked out) becomes ``-inf``.

    Args:
        mask: None, a bool mask (True = masked out, as in :class:`torch.nn.MultiheadAttention`)
            or a floating-point mask (returned as it is, to be added to the scores).
        dtype: The dtype of the mask made from a bool mask.
        what: The mask's name, for the error message.

    Returns:
        None, or the additive mask.

    Raises:
        TypeError: any other dtype (integer masks are refused, as in torch).
    """
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
            mask, float("-inf")
        )
    if not torch.is_floating_point(mask):
        raise TypeError(f"only bool and floating-point {what} are supported, got {mask.dtype}")
    return mask


def causal_hint(
    is_causal: bool,
    attn_mask: Tensor | None,
    key_padding_mask: Tensor | None,
    need_weights: bool,
) -> tuple[Tensor | None, bool]:
    """Resolve the ``is_causal`` hint as torch does: it needs ``attn_mask``, and is trusted
    (the mask dropped, the causal mask applied instead) only where no other mask or the
    weights are wanted.

    Args:
        is_causal: The hint that ``attn_mask`` is the causal mask.
        attn_mask: The attention mask.
        key_padding_mask: The key-padding mask.
        need_weights: The attention weights are returned.

    Returns:
        ``(attn_mask, causal)``: ``(None, True)`` when the caller is to apply the causal
        mask itself; otherwise ``attn_mask`` unchanged and False.

    Raises:
        RuntimeError: ``is_causal`` without ``attn_mask``.
    """
    if not is_causal:
        return attn_mask, False
    if attn_mask is None:
        raise RuntimeError(
            "is_causal=True needs attn_mask (the causal mask) as well, as in torch; build it "
            "with nn.Transformer.generate_square_subsequent_mask"
        )
    if key_padding_mask is None and not need_weights:
        return None, True
    return attn_mask, False


def check_attn_mask(
    attn_mask: Tensor | None, batch: int, num_heads: int, tgt_len: int, src_len: int
) -> Tensor | None:
    """Check an attention mask's shape and give it the 3-D layout of the per-head scores.

    Args:
        attn_mask: None, ``(L, S)`` or ``(N·num_heads, L, S)``.
        batch: ``N``.
        num_heads: Number of heads.
        tgt_len: ``L``.
        src_len: ``S``.

    Returns:
        None, or the mask as ``(1, L, S)`` or ``(N·num_heads, L, S)``.

    Raises:
        RuntimeError: a mask of another shape.
    """
    if attn_mask is None:
        return None
    if attn_mask.dim() == 2:
        if tuple(attn_mask.shape) != (tgt_len, src_len):
            raise RuntimeError(
                f"the 2-D attn_mask has shape {tuple(attn_mask.shape)} but should be "
                f"{(tgt_len, src_len)}"
            )
        return attn_mask.unsqueeze(0)
    if tuple(attn_mask.shape) != (batch * num_heads, tgt_len, src_len):
        raise RuntimeError(
            f"the 3-D attn_mask has shape {tuple(attn_mask.shape)} but should be "
            f"{(batch * num_heads, tgt_len, src_len)}"
        )
    return attn_mask


def check_padding_mask(key_padding_mask: Tensor | None, batch: int, src_len: int) -> None:
    """Check that a batched key-padding mask is ``(N, S)``.

    Args:
        key_padding_mask: None or the mask.
        batch: ``N``.
        src_len: ``S`` (counting any key appended to the sequence).

    Raises:
        RuntimeError: a mask of another shape.
    """
    if key_padding_mask is not None and tuple(key_padding_mask.shape) != (batch, src_len):
        raise RuntimeError(
            f"key_padding_mask should have shape {(batch, src_len)}, got "
            f"{tuple(key_padding_mask.shape)}"
        )


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

        Raises:
            RuntimeError: operands or masks whose dims or sizes do not fit, or ``is_causal``
                without ``attn_mask``.
            TypeError: a mask that is neither bool nor floating-point.
        """
        mha_shape_check(query, key, value, key_padding_mask, attn_mask, self.num_heads)
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
