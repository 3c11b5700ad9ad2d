"""Convolution lowering: a 2-D convolution as patch matrices and one approximate matmul.

:func:`im2col_conv2d` runs a (zero-padded, strided, dilated, grouped) 2-D convolution as
``A: (G, N·L, K) × B: (G, K, O/G)``: the rows of A are the input's patches (im2col), B is the
kernel of each group. Its parts:

* the patch matrix and its adjoint (the gradient summed back into the input): the compiled CPU
  kernel's ``im2col``/``col2im`` for plain CPU tensors in eager mode, otherwise stacked
  shifted windows of the padded input (GPU, ``torch.compile``), with an adjoint that adds each
  window's gradient in place — the same values and the same gradient sums either way;
* four autograd Functions (:class:`_ShiftedSlices`, :class:`_PatchesT`, :class:`_Transposed`,
  :class:`_ChannelsFirst`) that give those paths their backward passes; none wraps a custom
  op, the approximate products all go through :func:`approxsim.ops.matmul`;
* the input's layout for the compiled im2col: a channels-last input (what an approximate
  convolution puts out) is copied to ``(C, N, H, W)`` first and gets its gradient back
  channels-last;
* chunking of the batch so a patch matrix stays below :data:`UNFOLD_CHUNK_BYTES`.

The layers (:mod:`approxsim.nn`) check arguments and handle padding modes, then call
:func:`im2col_conv2d`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from approxsim.ops import _cpu_layout, _cpu_native
from approxsim.ops._cpu_layout import ConvGeometry2d, conv_out_size
from approxsim.ops.matmul import PassMultipliers, _eager_cpu
from approxsim.ops.matmul import matmul as approx_matmul

__all__ = ["UNFOLD_CHUNK_BYTES", "ConvGeometry2d", "conv_out_size", "im2col_conv2d"]

#: Largest patch (im2col) matrix, in bytes, materialized at once; bigger batches are chunked.
UNFOLD_CHUNK_BYTES = 256 << 20
#: Channels per group from which the patches are gathered from a channels-last copy.
_SLICE_MIN_CHANNELS = 16


class _ShiftedSlices(torch.autograd.Function):
    """``torch.stack`` of the kh·kw shifted, strided windows of a padded input, with a
    backward that adds each window's gradient into one zero tensor in place (autograd's own
    backward of the slices would build and sum kh·kw input-sized tensors)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor,
        dims: tuple[int, int],
        stack_dim: int,
        kernel: tuple[int, int],
        out_size: tuple[int, int],
        stride: tuple[int, int],
        dilation: tuple[int, int],
    ) -> Tensor:
        ctx.shape = x.shape
        ctx.args = (dims, stack_dim, kernel, out_size, stride, dilation)
        return torch.stack(
            [x[w] for w in _windows(x.dim(), dims, kernel, out_size, stride, dilation)],
            dim=stack_dim,
        )

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        return _windows_adjoint(grad, ctx.shape, *ctx.args), None, None, None, None, None, None


def _windows_adjoint(
    grad: Tensor,
    shape: Sequence[int],
    dims: tuple[int, int],
    stack_dim: int,
    kernel: tuple[int, int],
    out_size: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
) -> Tensor:
    """The backward of :class:`_ShiftedSlices`: each window's gradient (``grad`` along
    ``stack_dim``) added, windows in order, into one zero tensor of ``shape``."""
    gx = grad.new_zeros(tuple(shape))
    windows = _windows(len(shape), dims, kernel, out_size, stride, dilation)
    for q, w in enumerate(windows):
        gx[w] += grad.select(stack_dim, q)
    return gx


class _Transposed(torch.autograd.Function):
    """``x.transpose(1, 2)`` whose backward makes the gradient contiguous in ``x``'s layout:
    the convolution's patches are built as Aᵀ, and the input gradient that comes back as A
    would otherwise reach :class:`_ShiftedSlices` or col2im as a transposed view (slow to read
    window by window). The compiled CPU GEMM already writes it in that layout (the gradient
    of a column-major operand is column-major); other gradients go through the kernel's
    blocked transpose or torch's copy."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # type: ignore[override]
        return x.transpose(1, 2)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        if grad.transpose(1, 2).is_contiguous():  # the CPU GEMM wrote it in x's layout
            return grad.transpose(1, 2)
        if _backward_kernels(grad) is None:
            return grad.transpose(1, 2).contiguous()
        return _cpu_layout.transposed_copy(grad.contiguous())


class _ChannelsFirst(torch.autograd.Function):
    """An input ``x`` ``(N, C, H, W)`` as the ``(C, N, H, W)`` tensor the compiled im2col reads
    (plain CPU tensors in eager mode only).

    For most layouts that is the view ``x.transpose(0, 1)``. A channels-last ``x`` (what
    approximate convolutions put out, so every layer after the first in a CNN gets one) is
    copied by the kernel's blocked transpose into a contiguous ``(C, N, H, W)`` tensor instead:
    im2col then copies whole rows rather than gathering every C-th float (ResNet-18 layer1,
    batch 32, one thread: 15 ms for the copy and im2col against 44 ms reading ``x`` in place).
    The backward hands the input gradient back contiguous in ``x``'s memory format (channels
    last for a channels-last ``x``, as torch's own convolution does), the same values either
    way."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # type: ignore[override]
        n, c, h, w = x.shape
        ctx.channels_last = _is_channels_last(x)
        if ctx.channels_last:
            rows = x.permute(0, 2, 3, 1).reshape(n * h * w, c)  # a view: x is channels-last
            return _cpu_layout.transposed_copy(rows).view(c, n, h, w)
        return x.transpose(0, 1)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        c, n, h, w = grad.shape
        if not ctx.channels_last:
            return grad.transpose(0, 1).contiguous()
        if _backward_kernels(grad) is None:
            return grad.transpose(0, 1).contiguous(memory_format=torch.channels_last)
        rows = _cpu_layout.transposed_copy(grad.contiguous().view(c, n * h * w))
        return rows.view(n, h, w, c).permute(0, 3, 1, 2)


def _is_channels_last(x: Tensor) -> bool:
    """True when ``x`` ``(N, C, H, W)`` is dense in channels-last order and not also in the
    default one (one channel, or one pixel, is both)."""
    return not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


class _PatchesT(torch.autograd.Function):
    """The transposed patch matrix ``(C·kh·kw, N, Ho, Wo)`` of an input ``x`` given as
    ``(C, N, H, W)`` (any strides), zero padding included: rows in ``F.unfold``'s (channel, kh,
    kw) order, each a copy of whole output rows. The compiled kernel's im2col/col2im for plain
    CPU tensors in eager mode; :class:`_ShiftedSlices` of the padded input elsewhere (GPU,
    ``torch.compile``). Both give the same values and the same gradient sums."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, geometry: tuple[int, ...]) -> Tensor:  # type: ignore[override]
        ctx.shape = tuple(x.shape)
        ctx.geometry = geometry
        lib = _native_kernels(x)
        if lib is not None:
            return _cpu_layout.im2col_t(lib, x, geometry)  # type: ignore[arg-type]
        return _patches_t_torch(x, geometry)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None]:  # type: ignore[override]
        lib = _backward_kernels(grad)
        if lib is not None:
            return _cpu_layout.col2im_t(lib, grad, ctx.shape, ctx.geometry), None
        kh, kw, sh, sw, dh, dw, ph, pw = ctx.geometry
        c, n, h, w = ctx.shape
        ho, wo = grad.shape[2], grad.shape[3]
        taps = grad.reshape(c, kh * kw, n, ho, wo)
        padded = (c, n, h + 2 * ph, w + 2 * pw)
        gpad = _windows_adjoint(taps, padded, (2, 3), 1, (kh, kw), (ho, wo), (sh, sw), (dh, dw))
        return gpad[:, :, ph : ph + h, pw : pw + w], None


def _patches_t_torch(x: Tensor, geometry: tuple[int, ...]) -> Tensor:
    """:class:`_PatchesT` in torch operations (differentiable)."""
    kh, kw, sh, sw, dh, dw, ph, pw = geometry
    c, n, h, w = x.shape
    ho, wo = conv_out_size(h, kh, sh, dh, ph), conv_out_size(w, kw, sw, dw, pw)
    xc = F.pad(x, (pw, pw, ph, ph))
    cols = _ShiftedSlices.apply(xc, (2, 3), 1, (kh, kw), (ho, wo), (sh, sw), (dh, dw))
    return cols.reshape(c * kh * kw, n, ho, wo)


def _native_kernels(x: Tensor) -> Any | None:
    """The compiled CPU kernel library when ``x`` is a plain float32 CPU tensor in eager mode
    (no ``torch.compile``, fake tensors or ``torch.func``), else ``None``."""
    if x.dtype != torch.float32:
        return None
    return _cpu_native.load() if _eager_cpu(x, x) else None


def _backward_kernels(grad: Tensor) -> Any | None:
    """:func:`_native_kernels` for a backward pass; ``None`` when the gradient is itself being
    differentiated (``create_graph=True``): torch's ops keep it connected to the graph, so a
    second derivative reaches the approximate product's refusal instead of silently stopping
    at a kernel call that records nothing."""
    if grad.requires_grad and torch.is_grad_enabled():
        return None
    return _native_kernels(grad)


def _windows(
    ndim: int,
    dims: tuple[int, int],
    kernel: tuple[int, int],
    out_size: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
) -> list[tuple[slice, ...]]:
    """Index tuples of the kh·kw windows (kernel offset (i, j) in row-major order) that
    :class:`_ShiftedSlices` stacks: along ``dims`` the positions ``offset·dilation +
    out·stride`` for every output position."""
    out = []
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            idx = [slice(None)] * ndim
            for d, off, size, st, dl in zip(dims, (i, j), out_size, stride, dilation, strict=True):
                idx[d] = slice(off * dl, off * dl + (size - 1) * st + 1, st)
            out.append(tuple(idx))
    return out


def im2col_conv2d(
    x: Tensor,
    weight: Tensor,
    stride: tuple[int, int],
    pad_zeros: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
    passes: PassMultipliers,
) -> Tensor:
    """Batched 2-D convolution as ONE approximate matmul per batch chunk (no bias).

    The patches of all samples and positions form the rows of operand A, one matrix per
    group: ``A: (G, N·L, K) × B: (G, K, O/G)`` with ``K = C/G·kh·kw`` in ``F.unfold``'s
    (channel, kh, kw) order. Folding the batch into the rows (rather than batching over
    ``(N, G)``) lets the kernel build its per-weight tables once per group. Batches whose
    patch matrix would exceed :data:`UNFOLD_CHUNK_BYTES` are split into chunks.

    Args:
        x: Input ``(N, C, H, W)``, already padded except for ``pad_zeros``.
        weight: Kernel ``(O, C / groups, kh, kw)``; operand B.
        stride: ``(sh, sw)``.
        pad_zeros: Symmetric zero padding ``(ph, pw)`` applied here.
        dilation: ``(dh, dw)``.
        groups: Channel groups (dividing ``C`` and ``O``).
        passes: Multipliers of the forward and the two gradient passes.

    Returns:
        ``(N, O, H_out, W_out)``, as :func:`torch.nn.functional.conv2d` without bias.

    Raises:
        RuntimeError: the padded input is smaller than the dilated kernel.
    """
    n, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    g = groups
    sh, sw = stride
    ph, pw = pad_zeros
    dh, dw = dilation
    ho, wo = conv_out_size(h, kh, sh, dh, ph), conv_out_size(w, kw, sw, dw, pw)
    if ho <= 0 or wo <= 0:
        raise RuntimeError(
            f"approxsim conv: the padded input ({h + 2 * ph}x{w + 2 * pw}) is smaller than the "
            f"dilated kernel ({dh * (kh - 1) + 1}x{dw * (kw - 1) + 1}); pad the input or use "
            "a smaller kernel"
        )
    k = cg * kh * kw
    og = o // g
    length = ho * wo
    if n == 0:
        return x.new_zeros((0, o, ho, wo))
    # Never F.unfold (its output and the transposing copy its channel-major layout needs cost
    # several times more). With the compiled kernel (plain CPU tensors, eager mode), and
    # otherwise with few channels: Aᵀ from the kh·kw windows of the (C, N, H, W) input, whole
    # output rows at a time (_PatchesT). Many channels without it (GPU, torch.compile):
    # windows of a channels-last copy, K in (kh, kw, channel) order, A written row by row
    # (windows a few floats wide are slow to stack that way).
    slices = cg >= _SLICE_MIN_CHANNELS and _native_kernels(x) is None
    geometry = (kh, kw, sh, sw, dh, dw, ph, pw)
    # Operand B: the kernel of each group, (G, K, O/G), rows in A's K order.
    if slices:
        wt = weight.reshape(g, og, cg, kh, kw).permute(0, 3, 4, 2, 1).reshape(g, k, og)
    else:
        wt = weight.reshape(g, og, k).transpose(1, 2)
    # Chunk the batch so the patch matrix stays bounded.
    per_sample = c * kh * kw * length * 4
    chunk = max(1, UNFOLD_CHUNK_BYTES // max(per_sample, 1))
    outs = []
    for xs in _batch_chunks(x, chunk, slices):
        nb = xs.shape[0] if slices else xs.shape[1]
        if slices:
            xh = F.pad(  # (nb, H, W, C), zero-padded
                xs.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1),
                (0, 0, pw, pw, ph, ph),
            )
            patches = _ShiftedSlices.apply(  # (nb, Ho, Wo, kh·kw, C)
                xh, (1, 2), 3, (kh, kw), (ho, wo), (sh, sw), (dh, dw)
            )
            a = patches.reshape(nb * length, kh * kw, g, cg).permute(2, 0, 1, 3)
            a = a.reshape(g, nb * length, k)
        else:
            # Aᵀ (G, K, nb·L) from kh·kw shifted slices of the (C, N, H, W) input, each a copy
            # of whole output rows; A is its transposed view, which the CPU kernel decodes
            # sixteen rows at a time (F.unfold plus the transposing copy cost several times
            # more). The compiled kernel writes them into a recycled block (im2col_t), reused
            # by the next call once nothing (autograd included) refers to it.
            cols_t = _PatchesT.apply(xs, geometry)  # (C·kh·kw, nb, Ho, Wo)
            a = _Transposed.apply(cols_t.reshape(g, k, nb * length))
        y = approx_matmul(a, wt, passes)  # (G, nb·L, O/G)
        outs.append(y.reshape(g, nb, length, og).permute(1, 0, 3, 2).reshape(nb, o, ho, wo))
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def _batch_chunks(x: Tensor, chunk: int, slices: bool) -> list[Tensor]:
    """The batch chunks of ``x`` ``(N, C, H, W)``, at most ``chunk`` samples each: as
    ``(nb, C, H, W)`` slices for the channels-last windows (``slices``), else as the
    ``(C, nb, H, W)`` tensors :class:`_PatchesT` takes.

    With the compiled kernel they come from :class:`_ChannelsFirst`, split along the batch
    (whose backward joins the chunks' gradients in one copy) or, for a single chunk, whole;
    slicing ``x`` would give each chunk's gradient as a zero-filled copy of the whole input.
    Elsewhere (GPU, ``torch.compile``) they are slices of ``x``, as they always were.
    """
    n = x.shape[0]
    if slices or _native_kernels(x) is None:
        parts = [x[n0 : n0 + chunk] for n0 in range(0, n, chunk)]
        return parts if slices else [p.transpose(0, 1) for p in parts]
    xt = _ChannelsFirst.apply(x)
    return [xt] if chunk >= n else list(xt.split(chunk, dim=1))
