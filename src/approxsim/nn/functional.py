"""Functional forms of the approximate layers: ``linear``, ``conv1d``/``conv2d`` and attention.

Each function mirrors its :mod:`torch.nn.functional` namesake and adds the keyword-only
``multiplier`` (plus ``grad_input`` / ``grad_weight`` for the backward GEMMs). Every scalar
product of the layer runs through :func:`approxsim.matmul`, with a fixed operand order that
matters for asymmetric multipliers: operand A is always the activation side, operand B the
weight side (ApproxTrain's order):

* ``linear``: A = input, B = weightᵀ.
* ``conv1d`` / ``conv2d``: A = the input patches (im2col), B = the kernel.
* attention: ``Q·Kᵀ`` has A = Q, B = Kᵀ; ``probs·V`` has A = probs, B = V.

When all three passes are exact (``multiplier="fp32"``) the functions call torch's native
kernels, so an exact layer costs nothing extra. Everything that is not a product (bias adds,
padding, softmax, masks, the attention scale) is ordinary float arithmetic. Convolutions check
their arguments and apply padding modes here, then run as patch matrices times the kernel
through :func:`approxsim.ops.im2col_conv2d` (convolution lowering lives in
:mod:`approxsim.ops.conv`; :data:`UNFOLD_CHUNK_BYTES` is re-exported from there).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from approxsim.multipliers import Multiplier, MultiplierLike
from approxsim.nn._attention_common import (
    causal_hint,
    check_attn_mask,
    check_mha_sizes,
    check_padding_mask,
    float_mask,
    mha_shape_check,
)
from approxsim.ops import PassMultipliers, im2col_conv2d, resolve_passes
from approxsim.ops import matmul as approx_matmul
from approxsim.ops.conv import UNFOLD_CHUNK_BYTES

__all__ = [
    "linear",
    "conv1d",
    "conv2d",
    "scaled_dot_product_attention",
    "multi_head_attention_forward",
    "UNFOLD_CHUNK_BYTES",
]

_Size = int | Sequence[int]

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


# ---------------------------------------------------------------------------- linear
def linear(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    multiplier: MultiplierLike | PassMultipliers,
    grad_input: Multiplier | str | None = None,
    grad_weight: Multiplier | str | None = None,
) -> Tensor:
    """Approximate :func:`torch.nn.functional.linear`: ``input ⊗@ weightᵀ + bias``.

    Args:
        input: Activations, ``(*, in_features)``; operand A of every product.
        weight: ``(out_features, in_features)``; operand B (as ``weightᵀ``).
        bias: Optional ``(out_features,)``, added exactly.
        multiplier: Forward multiplier: a :class:`~approxsim.Multiplier`, a name such as
            ``"mitchell7"``, or a :class:`~approxsim.ops.PassMultipliers`.
        grad_input: Multiplier of the input-gradient GEMM; default: ``multiplier``.
        grad_weight: Multiplier of the weight-gradient GEMM; default: ``multiplier``.

    Returns:
        ``(*, out_features)``, in the promoted dtype of ``input`` and ``weight``.

    Raises:
        TypeError: non-floating operands.
        RuntimeError: ``input``'s last dimension is not ``in_features``.
        MultiplierError: a bad multiplier argument.

    Shape:
        - input: ``(*, H_in)``; weight: ``(H_out, H_in)``; output: ``(*, H_out)``.
    """
    passes = resolve_passes(multiplier, grad_input, grad_weight)
    if passes.all_exact:
        return F.linear(input, weight, bias)
    if input.shape[-1:] != weight.shape[-1:]:
        raise RuntimeError(
            f"approxsim linear: input has {input.shape[-1] if input.dim() else 0} features in "
            f"its last dimension but the weight expects {weight.shape[-1]} "
            f"(input shape {tuple(input.shape)}, weight shape {tuple(weight.shape)})"
        )
    out = approx_matmul(input, weight.t(), passes)
    if bias is not None:
        out = out + bias
    return out


# ---------------------------------------------------------------------------- convolution
def _tuple(value: _Size, n: int, what: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    out = tuple(int(v) for v in value)
    if len(out) == 1:
        return out * n
    if len(out) != n:
        raise ValueError(f"{what} must be an int or a tuple of {n} ints, got {value!r}")
    return out


def _conv_padding(
    padding: str | _Size,
    kernel: tuple[int, ...],
    dilation: tuple[int, ...],
    stride: tuple[int, ...],
) -> tuple[tuple[int, int], ...]:
    """(before, after) padding of each spatial dimension, as torch computes it."""
    n = len(kernel)
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * n
        if padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError(
                    "padding='same' is not supported for strided convolutions; use stride=1 "
                    "or give the padding as numbers"
                )
            pads = []
            for d, k in zip(dilation, kernel, strict=True):
                total = d * (k - 1)
                pads.append((total // 2, total - total // 2))  # the extra one goes after
            return tuple(pads)
        raise ValueError(f"padding must be 'valid', 'same', an int or a tuple, got {padding!r}")
    return tuple((p, p) for p in _tuple(padding, n, "padding"))


def _conv_nd(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: _Size,
    padding: str | _Size,
    dilation: _Size,
    groups: int,
    passes: PassMultipliers,
    padding_mode: str,
    nd: int,
) -> Tensor:
    """Shared body of :func:`conv1d` and :func:`conv2d` (``nd`` spatial dimensions)."""
    name = f"conv{nd}d"
    if padding_mode not in _PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")
    if weight.dim() != nd + 2:
        raise RuntimeError(
            f"approxsim {name}: weight must be {nd + 2}-D (out, in/groups, *kernel), got shape "
            f"{tuple(weight.shape)}"
        )
    if input.dim() not in (nd + 1, nd + 2):
        raise RuntimeError(
            f"approxsim {name}: expected a {nd + 1}-D (unbatched) or {nd + 2}-D (batched) "
            f"input, got shape {tuple(input.shape)}"
        )
    if not isinstance(groups, int) or groups < 1 or weight.shape[0] % groups:
        raise ValueError(
            f"approxsim {name}: groups must be a positive int dividing out_channels "
            f"({weight.shape[0]}), got {groups!r}"
        )
    kernel = tuple(weight.shape[2:])
    st = _tuple(stride, nd, "stride")
    dil = _tuple(dilation, nd, "dilation")
    pads = _conv_padding(padding, kernel, dil, st)
    unbatched = input.dim() == nd + 1
    x = input.unsqueeze(0) if unbatched else input
    channels = weight.shape[1] * groups
    if x.shape[1] != channels:
        raise RuntimeError(
            f"approxsim {name}: weight of shape {tuple(weight.shape)} with groups={groups} "
            f"expects input[1] = {channels} channels, but the input has shape "
            f"{tuple(input.shape)}"
        )
    symmetric = all(lo == hi for lo, hi in pads)
    if passes.all_exact:
        if padding_mode == "zeros":
            torch_conv = F.conv1d if nd == 1 else F.conv2d
            out = torch_conv(x, weight, bias, st, padding, dil, groups)  # type: ignore[arg-type]
        else:
            out = _exact_padded_conv(x, weight, bias, st, pads, dil, groups, padding_mode, nd)
        return out.squeeze(0) if unbatched else out
    if padding_mode == "zeros" and symmetric:
        zero_pad = tuple(lo for lo, _ in pads)
    else:
        flat = [p for pair in reversed(pads) for p in pair]  # F.pad order: last dim first
        mode = "constant" if padding_mode == "zeros" else padding_mode
        x = F.pad(x, flat, mode=mode)
        zero_pad = (0,) * nd
    if nd == 1:
        out = im2col_conv2d(
            x.unsqueeze(2),
            weight.unsqueeze(2),
            (1, st[0]),
            (0, zero_pad[0]),
            (1, dil[0]),
            groups,
            passes,
        ).squeeze(2)
    else:
        out = im2col_conv2d(
            x,
            weight,
            (st[0], st[1]),
            (zero_pad[0], zero_pad[1]),
            (dil[0], dil[1]),
            groups,
            passes,
        )
    if bias is not None:
        out = out + bias.reshape((1, -1) + (1,) * nd)
    return out.squeeze(0) if unbatched else out


def _exact_padded_conv(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: tuple[int, ...],
    pads: tuple[tuple[int, int], ...],
    dilation: tuple[int, ...],
    groups: int,
    padding_mode: str,
    nd: int,
) -> Tensor:
    flat = [p for pair in reversed(pads) for p in pair]
    torch_conv = F.conv1d if nd == 1 else F.conv2d
    return torch_conv(  # type: ignore[operator]
        F.pad(x, flat, mode=padding_mode), weight, bias, stride, 0, dilation, groups
    )


def conv1d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: _Size = 1,
    padding: str | _Size = 0,
    dilation: _Size = 1,
    groups: int = 1,
    *,
    multiplier: MultiplierLike | PassMultipliers,
    grad_input: Multiplier | str | None = None,
    grad_weight: Multiplier | str | None = None,
    padding_mode: str = "zeros",
) -> Tensor:
    """Approximate :func:`torch.nn.functional.conv1d` (runs as a 2-D convolution of height 1).

    Args:
        input: ``(N, C_in, L)`` or unbatched ``(C_in, L)``; its patches are operand A.
        weight: ``(C_out, C_in / groups, k)``; operand B.
        bias: Optional ``(C_out,)``, added exactly.
        stride: Stride, int or 1-tuple.
        padding: int, 1-tuple, ``"valid"`` or ``"same"`` (stride 1 only).
        dilation: Kernel dilation.
        groups: Number of channel groups (``groups == C_in`` is depthwise).
        multiplier: Forward multiplier (object, name or
            :class:`~approxsim.ops.PassMultipliers`).
        grad_input: Multiplier of the input-gradient GEMM; default: ``multiplier``.
        grad_weight: Multiplier of the weight-gradient GEMM; default: ``multiplier``.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"`` (as
            :class:`torch.nn.Conv1d`).

    Returns:
        ``(N, C_out, L_out)`` (or ``(C_out, L_out)``), as :func:`torch.nn.functional.conv1d`.

    Raises:
        ValueError: bad padding, padding mode or groups.
        RuntimeError: shapes that do not fit (channels, kernel larger than the padded input).
        MultiplierError: a bad multiplier argument.

    Shape:
        - input: ``(N, C_in, L_in)``; output: ``(N, C_out, L_out)`` with
          ``L_out = (L_in + pad - dilation·(k - 1) - 1) // stride + 1``.
    """
    passes = resolve_passes(multiplier, grad_input, grad_weight)
    return _conv_nd(input, weight, bias, stride, padding, dilation, groups, passes, padding_mode, 1)


def conv2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: _Size = 1,
    padding: str | _Size = 0,
    dilation: _Size = 1,
    groups: int = 1,
    *,
    multiplier: MultiplierLike | PassMultipliers,
    grad_input: Multiplier | str | None = None,
    grad_weight: Multiplier | str | None = None,
    padding_mode: str = "zeros",
) -> Tensor:
    """Approximate :func:`torch.nn.functional.conv2d` via im2col and one batched matmul.

    The input's patches (im2col: one row per output position) of group ``g`` times the kernel
    of group ``g`` is one ``approxsim.matmul`` batched over the groups, with the batch folded
    into the rows (chunked when the patch matrix would exceed :data:`UNFOLD_CHUNK_BYTES`).

    Args:
        input: ``(N, C_in, H, W)`` or unbatched ``(C_in, H, W)``; patches are operand A.
        weight: ``(C_out, C_in / groups, kh, kw)``; operand B.
        bias: Optional ``(C_out,)``, added exactly.
        stride: int or 2-tuple.
        padding: int, 2-tuple, ``"valid"`` or ``"same"`` (stride 1 only; an odd total pads
            one more after than before, as torch does).
        dilation: int or 2-tuple.
        groups: Number of channel groups (``groups == C_in`` is depthwise).
        multiplier: Forward multiplier (object, name or
            :class:`~approxsim.ops.PassMultipliers`).
        grad_input: Multiplier of the input-gradient GEMM; default: ``multiplier``.
        grad_weight: Multiplier of the weight-gradient GEMM; default: ``multiplier``.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``.

    Returns:
        ``(N, C_out, H_out, W_out)`` (or unbatched), as :func:`torch.nn.functional.conv2d`.

    Raises:
        ValueError: bad padding, padding mode or groups.
        RuntimeError: shapes that do not fit (channels, kernel larger than the padded input).
        MultiplierError: a bad multiplier argument.

    Shape:
        - input: ``(N, C_in, H, W)``; weight: ``(C_out, C_in/groups, kh, kw)``;
          output: ``(N, C_out, H_out, W_out)`` as in :class:`torch.nn.Conv2d`.
    """
    passes = resolve_passes(multiplier, grad_input, grad_weight)
    return _conv_nd(input, weight, bias, stride, padding, dilation, groups, passes, padding_mode, 2)


# ---------------------------------------------------------------------------- attention
def _attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None,
    dropout_p: float,
    is_causal: bool,
    scale: float | None,
    passes: PassMultipliers,
    enable_gqa: bool = False,
) -> tuple[Tensor, Tensor]:
    """Explicit attention with approximate ``Q·Kᵀ`` and ``probs·V``; returns (output, probs).

    The scale multiplies the approximate scores afterwards (an exact float multiply), so the
    multiplier sees the actual Q and K values. Rows whose keys are all masked give zero
    probabilities and a zero output, as :func:`torch.nn.functional.scaled_dot_product_attention`.
    """
    if query.dim() < 2 or key.dim() < 2 or value.dim() < 2:
        raise RuntimeError(
            "approxsim scaled_dot_product_attention: query, key and value need at least 2 "
            f"dimensions (…, L, E); got {tuple(query.shape)}, {tuple(key.shape)}, "
            f"{tuple(value.shape)}"
        )
    if is_causal and attn_mask is not None:
        raise RuntimeError(
            "approxsim scaled_dot_product_attention: give either is_causal=True or attn_mask, "
            "not both (as in torch); to combine them, fold the causal mask into attn_mask"
        )
    tgt_len, src_len = query.shape[-2], key.shape[-2]
    scale_factor = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    if enable_gqa:
        if query.dim() < 3 or key.dim() < 3 or query.shape[-3] % key.shape[-3]:
            raise RuntimeError(
                "approxsim scaled_dot_product_attention: enable_gqa needs the query heads "
                f"(dim -3) to be a multiple of the key/value heads; got {tuple(query.shape)} "
                f"and {tuple(key.shape)}"
            )
        key = key.repeat_interleave(query.shape[-3] // key.shape[-3], dim=-3)
        value = value.repeat_interleave(query.shape[-3] // value.shape[-3], dim=-3)
    scores = approx_matmul(query, key.transpose(-2, -1), passes) * scale_factor
    neg_inf = torch.tensor(float("-inf"), dtype=scores.dtype, device=scores.device)
    if is_causal:
        keep = torch.ones(tgt_len, src_len, dtype=torch.bool, device=scores.device).tril()
        scores = torch.where(keep, scores, neg_inf)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = torch.where(attn_mask, scores, neg_inf)  # True = may attend
        else:
            scores = scores + attn_mask
    # A row with every key masked would softmax to NaN: give it zeros (and zero gradients).
    dead = (scores == float("-inf")).all(dim=-1, keepdim=True)
    probs = torch.softmax(scores.masked_fill(dead, 0.0), dim=-1).masked_fill(dead, 0.0)
    if dropout_p > 0.0:
        probs = F.dropout(probs, p=dropout_p, training=True)
    return approx_matmul(probs, value, passes), probs


def scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
    *,
    multiplier: MultiplierLike | PassMultipliers,
    grad_input: Multiplier | str | None = None,
    grad_weight: Multiplier | str | None = None,
) -> Tensor:
    """Approximate :func:`torch.nn.functional.scaled_dot_product_attention`.

    Computes ``softmax(Q ⊗@ Kᵀ · scale + mask) ⊗@ V`` with both matmuls approximate (operand
    A = Q and then the probabilities; operand B = Kᵀ and then V). The scale is applied to the
    approximate scores (an exact multiply), so the multiplier sees Q and K themselves. Masks,
    causal masking, dropout and fully masked rows (zeros) behave as in torch's CPU
    implementation.

    Args:
        query: ``(…, L, E)``.
        key: ``(…, S, E)``.
        value: ``(…, S, Ev)``.
        attn_mask: Optional mask broadcastable to ``(…, L, S)``: bool (True = may attend) or
            float (added to the scores).
        dropout_p: Dropout probability on the attention probabilities (applied whenever it is
            positive, as in torch; pass 0 in eval mode).
        is_causal: Apply a lower-triangular (top-left aligned) causal mask; exclusive with
            ``attn_mask``, as in torch.
        scale: Score scale; default ``1 / sqrt(E)``.
        enable_gqa: Grouped-query attention: repeat the key/value heads (dim -3) to match the
            query heads.
        multiplier: Multiplier of both matmuls (object, name or
            :class:`~approxsim.ops.PassMultipliers`).
        grad_input: Multiplier of the input-gradient GEMMs; default: ``multiplier``.
        grad_weight: Multiplier of the weight-gradient GEMMs; default: ``multiplier``.

    Returns:
        The attention output, ``(…, L, Ev)``.

    Raises:
        RuntimeError: operands with fewer than 2 dimensions, incompatible shapes, heads
            that do not divide for ``enable_gqa``, or both ``is_causal`` and ``attn_mask``.
        MultiplierError: a bad multiplier argument.

    Shape:
        - query ``(N, …, L, E)``, key ``(N, …, S, E)``, value ``(N, …, S, Ev)`` →
          output ``(N, …, L, Ev)``.
    """
    passes = resolve_passes(multiplier, grad_input, grad_weight)
    if passes.all_exact:
        return F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=attn_mask,
            dropout_p=dropout_p,
            is_causal=is_causal,
            scale=scale,
            enable_gqa=enable_gqa,
        )
    out, _ = _attention(
        query, key, value, attn_mask, dropout_p, is_causal, scale, passes, enable_gqa
    )
    return out


def multi_head_attention_forward(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    embed_dim_to_check: int,
    num_heads: int,
    in_proj_weight: Tensor | None,
    in_proj_bias: Tensor | None,
    bias_k: Tensor | None,
    bias_v: Tensor | None,
    add_zero_attn: bool,
    dropout_p: float,
    out_proj_weight: Tensor,
    out_proj_bias: Tensor | None,
    training: bool = True,
    key_padding_mask: Tensor | None = None,
    need_weights: bool = True,
    attn_mask: Tensor | None = None,
    use_separate_proj_weight: bool = False,
    q_proj_weight: Tensor | None = None,
    k_proj_weight: Tensor | None = None,
    v_proj_weight: Tensor | None = None,
    static_k: Tensor | None = None,
    static_v: Tensor | None = None,
    average_attn_weights: bool = True,
    is_causal: bool = False,
    *,
    multiplier: MultiplierLike | PassMultipliers,
    grad_input: Multiplier | str | None = None,
    grad_weight: Multiplier | str | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Approximate :func:`torch.nn.functional.multi_head_attention_forward`.

    Same arguments and results as torch's function (sequence-first layout); the in-projections,
    both attention matmuls and the out-projection run through the multiplier. The one
    deliberate difference: a query row whose keys are all masked gets zero attention weights
    (torch's ``need_weights`` path returns NaN there, its SDPA path zeros).

    Args:
        query: ``(L, N, E)`` or unbatched ``(L, E)``.
        key: ``(S, N, E_k)`` or ``(S, E_k)``.
        value: ``(S, N, E_v)`` or ``(S, E_v)``.
        embed_dim_to_check: Expected ``E``.
        num_heads: Number of heads (must divide ``E``).
        in_proj_weight: Packed ``(3E, E)`` projection (when ``use_separate_proj_weight`` is
            False).
        in_proj_bias: Packed ``(3E,)`` bias or None.
        bias_k: ``(1, 1, E)`` bias appended to the keys, or None.
        bias_v: ``(1, 1, E)`` bias appended to the values, or None.
        add_zero_attn: Append a zero key/value position.
        dropout_p: Dropout on the attention probabilities (only when ``training``).
        out_proj_weight: ``(E, E)``.
        out_proj_bias: ``(E,)`` or None.
        training: Apply dropout.
        key_padding_mask: ``(N, S)`` (or ``(S,)``): bool, True = ignore that key; or float,
            added.
        need_weights: Also return the attention weights.
        attn_mask: ``(L, S)`` or ``(N·num_heads, L, S)``: bool (True = masked) or float.
        use_separate_proj_weight: Use ``q/k/v_proj_weight`` instead of ``in_proj_weight``.
        q_proj_weight: ``(E, E)``.
        k_proj_weight: ``(E, E_k)``.
        v_proj_weight: ``(E, E_v)``.
        static_k: Precomputed keys ``(N·num_heads, S, E / num_heads)``.
        static_v: Precomputed values ``(N·num_heads, S, E / num_heads)``.
        average_attn_weights: Average the returned weights over the heads.
        is_causal: Hint that ``attn_mask`` is the causal mask (``attn_mask`` is still
            required, as in torch).
        multiplier: Multiplier of every product (object, name or
            :class:`~approxsim.ops.PassMultipliers`).
        grad_input: Multiplier of the input-gradient GEMMs; default: ``multiplier``.
        grad_weight: Multiplier of the weight-gradient GEMMs; default: ``multiplier``.

    Returns:
        ``(attn_output, attn_weights)``: ``(L, N, E)`` and ``(N, L, S)`` (averaged) or
        ``(N, num_heads, L, S)``; the weights are None unless ``need_weights``.

    Raises:
        RuntimeError: shapes, batch sizes or masks that do not fit, or ``is_causal`` without
            ``attn_mask``.
        TypeError: an integer mask (masks are bool or floating-point).
        ValueError: inconsistent projection arguments.
        MultiplierError: a bad multiplier argument.

    Shape:
        See :class:`torch.nn.MultiheadAttention`.
    """
    passes = resolve_passes(multiplier, grad_input, grad_weight)
    is_batched = mha_shape_check(query, key, value, key_padding_mask, attn_mask, num_heads)
    if not is_batched:
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.unsqueeze(0)
    tgt_len, bsz, embed_dim = query.shape
    src_len = key.shape[0]
    key_padding_mask = float_mask(key_padding_mask, query.dtype, "key_padding_mask")
    # A trusted hint drops attn_mask (attention applies the causal mask itself); otherwise
    # the mask, merged with the padding mask, does the masking.
    attn_mask, is_causal = causal_hint(is_causal, attn_mask, key_padding_mask, need_weights)
    attn_mask = float_mask(attn_mask, query.dtype, "attn_mask")
    check_mha_sizes(query, key, value, embed_dim_to_check, packed=not use_separate_proj_weight)
    head_dim = embed_dim // num_heads
    if head_dim * num_heads != embed_dim:
        raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")

    # In-projections (operand A = the inputs, B = the projection weights).
    if not use_separate_proj_weight:
        if in_proj_weight is None:
            raise ValueError("in_proj_weight is None but use_separate_proj_weight is False")
        if query is key and key is value:
            q, k, v = linear(query, in_proj_weight, in_proj_bias, multiplier=passes).chunk(3, -1)
        else:
            w_q, w_k, w_v = in_proj_weight.chunk(3)
            b_q, b_k, b_v = (None, None, None) if in_proj_bias is None else in_proj_bias.chunk(3)
            q = linear(query, w_q, b_q, multiplier=passes)
            k = linear(key, w_k, b_k, multiplier=passes)
            v = linear(value, w_v, b_v, multiplier=passes)
    else:
        if q_proj_weight is None or k_proj_weight is None or v_proj_weight is None:
            raise ValueError(
                "use_separate_proj_weight=True needs q_proj_weight, k_proj_weight and v_proj_weight"
            )
        b_q, b_k, b_v = (None, None, None) if in_proj_bias is None else in_proj_bias.chunk(3)
        q = linear(query, q_proj_weight, b_q, multiplier=passes)
        k = linear(key, k_proj_weight, b_k, multiplier=passes)
        v = linear(value, v_proj_weight, b_v, multiplier=passes)

    attn_mask = check_attn_mask(attn_mask, bsz, num_heads, tgt_len, src_len)

    if bias_k is not None and bias_v is not None:
        if static_k is not None or static_v is not None:
            raise ValueError("bias_k/bias_v cannot be added to static keys or values")
        k = torch.cat([k, bias_k.repeat(1, bsz, 1)])
        v = torch.cat([v, bias_v.repeat(1, bsz, 1)])
        if attn_mask is not None:
            attn_mask = F.pad(attn_mask, (0, 1))
        if key_padding_mask is not None:
            key_padding_mask = F.pad(key_padding_mask, (0, 1))
    elif bias_k is not None or bias_v is not None:
        raise ValueError("bias_k and bias_v must be given together")

    q = q.reshape(tgt_len, bsz * num_heads, head_dim).transpose(0, 1)
    if static_k is None:
        k = k.reshape(k.shape[0], bsz * num_heads, head_dim).transpose(0, 1)
    else:
        if tuple(static_k.shape[::2]) != (bsz * num_heads, head_dim):
            raise RuntimeError(
                f"static_k must have shape ({bsz * num_heads}, S, {head_dim}), got "
                f"{tuple(static_k.shape)}"
            )
        k = static_k
    if static_v is None:
        v = v.reshape(v.shape[0], bsz * num_heads, head_dim).transpose(0, 1)
    else:
        if tuple(static_v.shape[::2]) != (bsz * num_heads, head_dim):
            raise RuntimeError(
                f"static_v must have shape ({bsz * num_heads}, S, {head_dim}), got "
                f"{tuple(static_v.shape)}"
            )
        v = static_v

    if add_zero_attn:
        zeros = torch.zeros((bsz * num_heads, 1, head_dim), dtype=k.dtype, device=k.device)
        k = torch.cat([k, zeros], dim=1)
        v = torch.cat([v, zeros.to(v.dtype)], dim=1)
        if attn_mask is not None:
            attn_mask = F.pad(attn_mask, (0, 1))
        if key_padding_mask is not None:
            key_padding_mask = F.pad(key_padding_mask, (0, 1))

    src_len = k.shape[1]
    check_padding_mask(key_padding_mask, bsz, src_len)
    if key_padding_mask is not None:
        kpm = (
            key_padding_mask.view(bsz, 1, 1, src_len)
            .expand(-1, num_heads, -1, -1)
            .reshape(bsz * num_heads, 1, src_len)
        )
        attn_mask = kpm if attn_mask is None else attn_mask + kpm
    if not training:
        dropout_p = 0.0

    q4 = q.reshape(bsz, num_heads, tgt_len, head_dim)
    k4 = k.reshape(bsz, num_heads, src_len, head_dim)
    v4 = v.reshape(bsz, num_heads, src_len, head_dim)
    mask4 = None
    if attn_mask is not None:
        if attn_mask.shape[0] == 1:
            mask4 = attn_mask.unsqueeze(0)
        else:
            mask4 = attn_mask.reshape(bsz, num_heads, -1, src_len)
    weights: Tensor | None = None
    if need_weights:
        out4, weights = _attention(q4, k4, v4, mask4, dropout_p, False, None, passes)
    else:
        out4 = scaled_dot_product_attention(
            q4, k4, v4, mask4, dropout_p, is_causal, multiplier=passes
        )
    out = out4.permute(2, 0, 1, 3).reshape(bsz * tgt_len, embed_dim)
    out = linear(out, out_proj_weight, out_proj_bias, multiplier=passes)
    out = out.reshape(tgt_len, bsz, out.shape[-1])
    if weights is not None and average_attn_weights:
        weights = weights.mean(dim=1)
    if not is_batched:
        out = out.squeeze(1)
        if weights is not None:
            weights = weights.squeeze(0)
    return out, weights
