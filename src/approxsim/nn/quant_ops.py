"""The quantized GEMM every quantized layer runs, with its two backward passes.

:func:`quantized_matmul` multiplies float operands ``a: (G, R, K)`` and ``b: (G, K, N)`` the
way integer hardware would: both are quantized to codes, every code × code product is read
from the integer multiplier's table, the products are summed exactly in integers and the sum
is scaled back to float. The backward is ``ste`` (exact float GEMMs of the dequantized
operands) or ``lut`` (difference-based gradient tables applied per product by
:func:`approxsim.ops.lutgrad.lut_grad_bmm`: a compiled CPU kernel, or the torch reference
:func:`lut_backward_reference`). ``docs/quantization.md`` gives the formulas.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.grad import conv2d_input, conv2d_weight

from approxsim.multipliers.integer import IntMultiplier
from approxsim.nn.quant import QuantScheme, lut_gradient_tables
from approxsim.ops import conv_out_size
from approxsim.ops import matmul as approx_matmul
from approxsim.ops.lutgrad import lut_grad_bmm
from approxsim.ops.lutgrad import lut_grad_reference as lut_backward_reference

__all__ = [
    "quantized_matmul",
    "quantized_conv2d",
    "patch_codes",
    "table_matmul",
    "lut_backward_reference",
]


#: A quantized convolution hands the integer GEMM its patch codes k-major (each column
#: contiguous; the unfold is then a few long copies) when the reduction is at least this long
#: and there are at most :data:`K_MAJOR_MAX_COLUMNS` output channels per group. Measured on one
#: Zen 3 thread, unfold and GEMM together: LeNet-5's conv2 (K 150, 16 channels) 12.9 -> 4.4 ms,
#: K 144 with 32 channels 7.6 -> 4.6 ms; K 576 with 64 channels the same either way (212 and
#: 218 ms); LeNet-5's conv1 (K 25, 6 channels) 8.8 ms row-major against 10.6 k-major.
K_MAJOR_MIN_K = 64
K_MAJOR_MAX_COLUMNS = 32


def table_matmul(qa: Tensor, qb: Tensor, multiplier: IntMultiplier) -> Tensor:
    """``out[g, r, n] = Σ_k table[qa[g, r, k] - min, qb[g, k, n] - min]``, exact.

    Args:
        qa: ``(G, R, K)`` integer operand values (row operand of the table).
        qb: ``(G, K, N)`` integer operand values.
        multiplier: The integer multiplier.

    Returns:
        ``(G, R, N)`` sums, int32 where they cannot overflow it, else int64 (the integer
        GEMM's accumulator; the callers widen them to float64, which holds them exactly).
    """
    return approx_matmul(qa, qb, multiplier)  # type: ignore[arg-type]


def _dequantize(acc: Tensor, sa: Tensor, sb: Tensor) -> Tensor:
    """``float32(float64(acc)·(float64(sa)·float64(sb)))``: one rounding, at the end (``acc``
    integer, or float64 holding integers, which is then scaled in place)."""
    out = acc.to(torch.float64)
    return _columns_(out, sa.double() * sb.double(), "mul").to(torch.float32)


def _columns_(t: Tensor, v: Tensor, op: str) -> Tensor:
    """``t *= v`` (``op`` "mul") or ``t += v`` ("add") in place, ``v`` one value per column of
    ``t``'s last axis (or one value in all).

    Elementwise, so the same numbers whatever the layout; a few columns (LeNet-5's 6 or 16 are
    fine, 6 is not a multiple of the vector width) are viewed as rows of a multiple of 16
    values with ``v`` repeated along them, which torch runs in whole vectors (one thread, a
    100352×6 float64 scaling in place: 0.64 ms broadcast against 0.23 ms).
    """
    n = t.shape[-1]
    reps = 16 // math.gcd(n, 16)
    flat = v.reshape(-1)
    if reps > 1 and flat.numel() == n and t.is_contiguous() and t.numel() % (n * reps) == 0:
        rows = t.view(-1, n * reps)
        wide = flat.repeat(reps)
        if op == "mul":
            rows.mul_(wide)
        else:
            rows.add_(wide)
        return t
    return t.mul_(v) if op == "mul" else t.add_(v)


def _affine_correct(
    acc: Tensor,
    qa: Tensor,
    qb: Tensor,
    za: Tensor,
    zb: Tensor,
    k: int,
    a_sums: Tensor | None = None,
) -> Tensor:
    """``Σ f(qa, qb) − zb·Σ qa − za·Σ qb + K·za·zb``: the exact zero-point terms, as float64.

    Every term and partial sum is an integer below 2^53 (``K`` below 2^29 with codes of at most
    12 bits), so float64 holds them exactly: the value is the integer one, in two passes over
    the output instead of four int64 ones. The code sums are taken in int32 (K·(2^12 − 1) <
    2^31 for any K below half a million; torch's int64 reductions are many times slower);
    ``a_sums`` (the shape of ``Σ qa`` with ``keepdim``) gives A's sums where the caller has
    them cheaper."""
    sum_dtype = torch.int32 if k * 4096 < 2**31 else torch.int64
    if a_sums is None:
        a_sums = torch.sum(qa, -1, keepdim=True, dtype=sum_dtype)
    b_sums = torch.sum(qb, -2, keepdim=True, dtype=sum_dtype).double()
    za64 = torch.as_tensor(za, dtype=torch.float64)
    zb64 = torch.as_tensor(zb, dtype=torch.float64)
    const = k * za64 * zb64 - za64 * b_sums  # per output column
    out = acc.to(torch.float64)
    out.addcmul_(a_sums.double(), zb64, value=-1)
    return _columns_(out, const, "add")


def patch_code_sums(
    q: Tensor,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
) -> Tensor | None:
    """The sum of each patch's codes, ``(G, N·Ho·Wo, 1)`` int64: what summing
    :func:`patch_codes` (same arguments) along its last axis gives, from a summed-area table
    of the (much smaller) code image instead of the patch matrix; ``None`` for dilated
    kernels."""
    if dilation != (1, 1):
        return None
    n, c, h, w = q.shape
    kh, kw = kernel
    sh, sw = stride
    ho, wo = conv_out_size(h, kh, sh, 1, 0), conv_out_size(w, kw, sw, 1, 0)
    per_group = q.reshape(n, groups, c // groups, h, w).sum(2, dtype=torch.int64)
    table = F.pad(per_group.cumsum(2).cumsum(3), (1, 0, 1, 0))  # table[..., i, j] = Σ above-left
    top, bottom = slice(0, (ho - 1) * sh + 1, sh), slice(kh, kh + (ho - 1) * sh + 1, sh)
    left, right = slice(0, (wo - 1) * sw + 1, sw), slice(kw, kw + (wo - 1) * sw + 1, sw)
    box = (
        table[:, :, bottom, right]
        - table[:, :, top, right]
        - table[:, :, bottom, left]
        + table[:, :, top, left]
    )
    return box.permute(1, 0, 2, 3).reshape(groups, n * ho * wo, 1)


def _lut_grads(
    qa: Tensor,
    qb: Tensor,
    grad: Tensor,
    qp: tuple[Tensor, Tensor, Tensor, Tensor],
    scheme: QuantScheme,
    need: tuple[bool, bool],
) -> tuple[Tensor | None, Tensor | None]:
    """The ``lut`` gradients of ``y = sa·sb·(Σ f(qa, qb) − …)`` with respect to the float
    operands (before the clipping mask): ``∂y/∂a = sb·(Ga − zb)``, ``∂y/∂b = sa·(Gb − za)``
    per product (``qa ≈ a / sa``, ``qb ≈ b / sb``)."""
    sa, za, sb, zb = qp
    ga_table, gb_table = lut_gradient_tables(scheme, grad.device)
    g_a = grad * sb if need[0] else None
    grad_a, gb = lut_grad_bmm(
        qa, qb, g_a, grad if need[1] else None, ga_table, gb_table, scheme.qmin
    )
    if grad_a is not None and g_a is not None:
        grad_a = grad_a - (g_a * zb).sum(-1, keepdim=True)
    grad_b = None if gb is None else sa * (gb - za * grad.sum(-2, keepdim=True))
    return grad_a, grad_b


def _warm_table(scheme: QuantScheme, device: torch.device) -> None:
    """Fill the multiplier's per-device table cache before the autograd.Function: under
    torch.compile a cache write inside the Function's traced forward is refused."""
    scheme.table_multiplier.table_on(device)


class _QuantGemm(torch.autograd.Function):
    """Quantize, table GEMM, exact integer corrections, dequantize; STE or LUT backward."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        a: Tensor,
        b: Tensor,
        qp: tuple[Tensor, Tensor, Tensor, Tensor],
        scheme: QuantScheme,
        track: bool,
    ) -> Tensor:
        sa, za, sb, zb = qp
        qa, in_a = scheme.quantize(a, sa, za, track)
        qb, in_b = scheme.quantize(b, sb, zb, track)
        acc = table_matmul(qa, qb, scheme.table_multiplier)
        if scheme.kind == "affine":
            acc = _affine_correct(acc, qa, qb, za, zb, a.shape[-1])
        if track:
            ctx.scheme, ctx.qp = scheme, qp
            ctx.save_for_backward(qa, qb, in_a, in_b)
        return _dequantize(acc, sa, sb)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        qa, qb, in_a, in_b = ctx.saved_tensors
        scheme: QuantScheme = ctx.scheme
        sa, za, sb, zb = ctx.qp
        need = (ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        grad = grad.float()
        grad_a = grad_b = None
        if scheme.config.grad == "ste":
            if need[0]:
                grad_a = grad @ ((qb.to(torch.float32) - zb) * sb).transpose(-1, -2)
            if need[1]:
                grad_b = ((qa.to(torch.float32) - za) * sa).transpose(-1, -2) @ grad
        else:
            grad_a, grad_b = _lut_grads(qa, qb, grad, ctx.qp, scheme, need)
        # Straight through the rounding, zero where the value was clipped.
        if grad_a is not None:
            grad_a = grad_a * in_a
        if grad_b is not None:
            grad_b = grad_b * in_b
        return grad_a, grad_b, None, None, None


def quantized_matmul(
    a: Tensor,
    b: Tensor,
    a_range: tuple[Tensor, Tensor],
    b_range: tuple[Tensor, Tensor],
    scheme: QuantScheme,
) -> Tensor:
    """Quantized approximate ``a @ b`` with every code product through the scheme's table.

    Args:
        a: ``(G, R, K)`` float operand (the table's row operand).
        b: ``(G, K, N)`` float operand.
        a_range: ``(lo, hi)`` of ``a``, each a scalar or broadcastable to ``(G, R, 1)`` (per
            tensor, or per row of A).
        b_range: ``(lo, hi)`` of ``b``, each broadcastable to ``(G, 1, N)`` (per column of B,
            i.e. per output channel of a layer, or per tensor).
        scheme: The resolved :class:`~approxsim.nn.quant.QuantScheme`.

    Returns:
        ``(G, R, N)`` float32: ``sa·sb·Σ_k f(qa, qb)`` with the affine zero-point terms exact.

    Raises:
        QuantError: non-finite operands.
    """
    sa, za = scheme.qparams(*a_range)
    sb, zb = scheme.qparams(*b_range)
    track = torch.is_grad_enabled() and (a.requires_grad or b.requires_grad)
    _warm_table(scheme, a.device)
    return _QuantGemm.apply(a, b, (sa, za, sb, zb), scheme, track)  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------- convolution
def patch_codes(
    q: Tensor,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
    k_major: bool = False,
) -> Tensor:
    """im2col of a (padded) code image in its own dtype: ``(G, N·Ho·Wo, C/G·kh·kw)``.

    The columns are ordered (channel, kernel row, kernel column), as ``F.unfold`` orders them
    and as the kernel ``(O, C/G, kh, kw)`` flattens. One strided view, one copy.

    Args:
        q: ``(N, C, H, W)`` codes (contiguous or not).
        kernel: ``(kh, kw)``.
        stride: ``(sh, sw)``.
        dilation: ``(dh, dw)``.
        groups: Channel groups.
        k_major: Lay the result out as the transpose of a contiguous ``(G, C/G·kh·kw,
            N·Ho·Wo)`` tensor (each column's codes contiguous, as the ``lut`` backward's
            kernel reads them), else contiguous.

    Returns:
        The patch matrix of each group.
    """
    q = q.contiguous()
    n, c, h, w = q.shape
    kh, kw = kernel
    ho = conv_out_size(h, kh, stride[0], dilation[0], 0)
    wo = conv_out_size(w, kw, stride[1], dilation[1], 0)
    cg = c // groups
    sn, sc, sh, sw = q.stride()
    view = q.as_strided(
        (groups, n, ho, wo, cg, kh, kw),
        (cg * sc, sn, sh * stride[0], sw * stride[1], sc, sh * dilation[0], sw * dilation[1]),
    )
    if k_major:
        cols = view.permute(0, 4, 5, 6, 1, 2, 3).reshape(groups, cg * kh * kw, n * ho * wo)
        return cols.transpose(1, 2)
    # Row-major: one copy per kernel tap, each a whole (G, N, Ho, Wo, C/G) block, beats one
    # copy of the 7-D view (one thread: LeNet-5's conv1 4.3 -> 3.4 ms, a 3-channel 3x3 stem
    # at batch 128 11.6 -> 3.6 ms, ResNet-18's layer1 at batch 32 97 -> 69 ms).
    out = q.new_empty((groups, n, ho, wo, cg, kh, kw))
    taps = view.permute(0, 1, 2, 3, 5, 6, 4)  # (G, N, Ho, Wo, kh, kw, C/G)
    for i in range(kh):
        for j in range(kw):
            out[..., i, j] = taps[:, :, :, :, i, j]
    return out.view(groups, n * ho * wo, cg * kh * kw)


class _QuantConv2d(torch.autograd.Function):
    """Quantized convolution of a padded input: codes first, then im2col of the codes (the
    float input is never unfolded); STE backward by torch's own convolution gradients of the
    dequantized operands, LUT backward by gradient-table GEMMs folded back to the image."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor,
        w: Tensor,
        qp: tuple[Tensor, Tensor, Tensor, Tensor],
        geometry: tuple[tuple[int, int], tuple[int, int], int],
        scheme: QuantScheme,
        track: bool,
    ) -> Tensor:
        sa, za, sb, zb = qp  # sb, zb: (O,)
        stride, dilation, groups = geometry
        o, cg, kh, kw = w.shape
        qx, in_x = scheme.quantize(x, sa, za, track)
        qw, in_w = scheme.quantize(w, sb.view(-1, 1, 1, 1), zb.view(-1, 1, 1, 1), track)
        k_major = cg * kh * kw >= K_MAJOR_MIN_K and o // groups <= K_MAJOR_MAX_COLUMNS
        qa = patch_codes(qx, (kh, kw), stride, dilation, groups, k_major)  # (G, N·L, K)
        qb = qw.reshape(groups, o // groups, cg * kh * kw).transpose(1, 2)  # (G, K, O/G)
        acc = table_matmul(qa, qb, scheme.table_multiplier)
        sb_g = sb.view(groups, 1, o // groups)
        if scheme.kind == "affine":
            sums = patch_code_sums(qx, (kh, kw), stride, dilation, groups)
            acc = _affine_correct(
                acc, qa, qb, za, zb.view(groups, 1, o // groups), qa.shape[2], sums
            )
        y = _dequantize(acc, sa, sb_g)  # (G, N·L, O/G)
        n = x.shape[0]
        ho = conv_out_size(x.shape[2], kh, stride[0], dilation[0], 0)
        wo = conv_out_size(x.shape[3], kw, stride[1], dilation[1], 0)
        y = y.reshape(groups, n, ho, wo, o // groups).permute(1, 0, 4, 2, 3)
        if track:
            ctx.scheme, ctx.qp, ctx.geometry = scheme, qp, geometry
            ctx.shapes = (tuple(x.shape), tuple(w.shape))
            ctx.save_for_backward(qx, qw, in_x, in_w)
        return y.reshape(n, o, ho, wo)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        qx, qw, in_x, in_w = ctx.saved_tensors
        scheme: QuantScheme = ctx.scheme
        sa, za, sb, zb = ctx.qp
        stride, dilation, groups = ctx.geometry
        x_shape, w_shape = ctx.shapes
        need = (ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        grad = grad.float()
        grad_x = grad_w = None
        if scheme.config.grad == "ste":
            conv = (stride, 0, dilation, groups)
            if need[0]:
                w_hat = (qw.to(torch.float32) - zb.view(-1, 1, 1, 1)) * sb.view(-1, 1, 1, 1)
                grad_x = conv2d_input(x_shape, w_hat, grad, *conv)
            if need[1]:
                x_hat = (qx.to(torch.float32) - za) * sa
                grad_w = conv2d_weight(x_hat, w_shape, grad, *conv)
        else:
            grad_x, grad_w = _conv_lut_grads(ctx, qx, qw, grad, need)
        if grad_x is not None:
            grad_x = grad_x * in_x
        if grad_w is not None:
            grad_w = grad_w * in_w
        return grad_x, grad_w, None, None, None, None


def _conv_lut_grads(
    ctx: Any, qx: Tensor, qw: Tensor, grad: Tensor, need: tuple[bool, bool]
) -> tuple[Tensor | None, Tensor | None]:
    """``lut`` gradients of the convolution: the patch gradients of :func:`_lut_grads`,
    summed back into the image (``F.fold``, the adjoint of im2col)."""
    sa, za, sb, zb = ctx.qp
    stride, dilation, groups = ctx.geometry
    x_shape, w_shape = ctx.shapes
    n, c, h, w = x_shape
    o, cg, kh, kw = w_shape
    og = o // groups
    qa = patch_codes(qx, (kh, kw), stride, dilation, groups, k_major=True)
    qb = qw.reshape(groups, og, cg * kh * kw).transpose(1, 2)
    ho, wo = grad.shape[2], grad.shape[3]
    g = grad.reshape(n, groups, og, ho * wo).permute(1, 0, 3, 2).reshape(groups, -1, og)
    qp = (sa, za, sb.view(groups, 1, og), zb.view(groups, 1, og))
    grad_a, grad_b = _lut_grads(qa, qb, g, qp, ctx.scheme, need)
    grad_x = grad_w = None
    if grad_a is not None:
        # (G, K, N·L) → (N, G·K, L); one copy where grad_a is K-major (the kernel's layout).
        cols = grad_a.transpose(1, 2).reshape(groups, cg * kh * kw, n, ho * wo)
        cols = cols.permute(2, 0, 1, 3).reshape(n, c * kh * kw, ho * wo)
        grad_x = F.fold(cols, (h, w), (kh, kw), dilation=dilation, stride=stride)
    if grad_b is not None:
        grad_w = grad_b.transpose(1, 2).reshape(o, cg, kh, kw)
    return grad_x, grad_w


def quantized_conv2d(
    x: Tensor,
    weight: Tensor,
    stride: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
    x_range: tuple[Tensor, Tensor],
    weight_range: tuple[Tensor, Tensor],
    scheme: QuantScheme,
) -> Tensor:
    """Quantized approximate 2-D convolution of an already padded input (no bias).

    Every product pairs a patch code (operand A, the table's row) with a kernel code.

    Args:
        x: ``(N, C, H, W)`` float, padded.
        weight: ``(O, C / groups, kh, kw)`` float.
        stride: ``(sh, sw)``.
        dilation: ``(dh, dw)``.
        groups: Channel groups.
        x_range: ``(lo, hi)`` of the input (per tensor).
        weight_range: ``(lo, hi)`` of the weight, each ``(O,)`` or a scalar.
        scheme: The resolved quantization scheme.

    Returns:
        ``(N, O, Ho, Wo)`` float32.

    Raises:
        QuantError: non-finite operands.
    """
    sa, za = scheme.qparams(*x_range)
    o = weight.shape[0]
    lo, hi = (t.expand(o) if t.dim() == 0 else t for t in weight_range)
    sb, zb = scheme.qparams(lo, hi)
    track = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    _warm_table(scheme, x.device)
    return _QuantConv2d.apply(  # type: ignore[no-any-return]
        x, weight, (sa, za, sb, zb), (stride, dilation, groups), scheme, track
    )
