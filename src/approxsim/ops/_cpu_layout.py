"""Layout copies of the compiled CPU kernel library (:mod:`._cpu_native`): the blocked
transposing copy, and a convolution's transposed patch matrix and its adjoint.

Each runs on torch's OpenMP team when the library uses it, else on approxsim's thread pool,
and stays on the calling thread below a size where handing out work costs more than it saves.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from approxsim.ops._cpu_native import load, uses_openmp
from approxsim.ops._scratch import recycled
from approxsim.ops._threads import run_jobs, split_range

__all__ = ["ConvGeometry2d", "col2im_t", "conv_out_size", "im2col_t", "transposed_copy"]

#: Patch matrices, their adjoints and transposed copies of fewer elements than this stay on
#: the calling thread (pool, OpenMP team).
PARALLEL_MIN_ELEMENTS = 1 << 16
PARALLEL_MIN_ELEMENTS_OPENMP = 1 << 14


def _copy_workers(lib: Any, numel: int) -> int:
    """Threads for a copy-like pass over ``numel`` elements (see :data:`PARALLEL_MIN_ELEMENTS`)."""
    least = PARALLEL_MIN_ELEMENTS
    if uses_openmp(lib):
        least = min(least, PARALLEL_MIN_ELEMENTS_OPENMP)
    return max(1, torch.get_num_threads()) if numel >= least else 1


def transposed_copy(x: Tensor) -> Tensor:
    """``x.transpose(-2, -1).contiguous()`` for a contiguous float32 CPU tensor, by the
    compiled kernel's blocked transpose (torch's copy of a transposed view is several times
    slower); torch's copy where the kernel is unavailable or ``x`` does not qualify."""
    t = x.transpose(-2, -1)
    lib = load() if x.dtype == torch.float32 and x.device.type == "cpu" else None
    if lib is None or not x.is_contiguous() or x.dim() < 2 or x.numel() == 0:
        return t.contiguous()
    rows, cols = x.shape[-2], x.shape[-1]
    out = torch.empty(t.shape, dtype=x.dtype)
    src = x.reshape(-1, rows, cols)
    dst = out.view(-1, cols, rows)
    workers = _copy_workers(lib, x.numel())
    jobs = []
    for bi in range(src.shape[0]):
        sp, dp = src[bi].data_ptr(), dst[bi].data_ptr()
        if src.shape[0] >= workers:
            jobs.append((sp, cols, dp, rows, 0, rows, cols))
        else:
            jobs.extend((sp, cols, dp, rows, lo, hi, cols) for lo, hi in split_range(rows, workers))
    if uses_openmp(lib):
        table = np.array(jobs, dtype=np.int64)
        lib.approxsim_transpose_jobs(table.ctypes.data, len(jobs), workers)
        return out
    per = -(-len(jobs) // workers)
    groups = [jobs[i : i + per] for i in range(0, len(jobs), per)]

    def call(group: list[tuple[int, ...]]) -> None:
        for job in group:
            lib.approxsim_transpose(*job)

    run_jobs(call, [(grp,) for grp in groups])
    return out


#: ``(kh, kw, sh, sw, dh, dw, ph, pw)`` of a 2-D convolution: kernel, stride, dilation, padding.
ConvGeometry2d = tuple[int, int, int, int, int, int, int, int]


def conv_out_size(size: int, k: int, s: int, d: int, p: int) -> int:
    """Output length of a convolution along one dimension (as torch computes it).

    Args:
        size: Input length.
        k: Kernel length.
        s: Stride.
        d: Dilation.
        p: Zero padding on each side.

    Returns:
        The output length (zero or negative when the dilated kernel does not fit).
    """
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def im2col_t(lib: Any, x: Tensor, geometry: ConvGeometry2d, out: Tensor | None = None) -> Tensor:
    """The transposed patch matrix ``(C·kh·kw, N, Ho, Wo)`` of ``x`` ``(C, N, H, W)`` (float32,
    CPU, any strides; zero padding), rows in ``F.unfold``'s (channel, kh, kw) order; written
    into ``out`` (contiguous float32 of that many elements, any shape) when given, else into a
    recycled block (:func:`._scratch.recycled`: in training autograd keeps the patches until the
    backward pass, and fresh pages for them cost more than writing them)."""
    kh, kw, sh, sw, dh, dw, ph, pw = geometry
    c, n, h, w = x.shape
    ho, wo = conv_out_size(h, kh, sh, dh, ph), conv_out_size(w, kw, sw, dw, pw)
    shape = (c * kh * kw, n, ho, wo)
    if out is None:
        out = recycled(shape)
    else:
        out = out.view(shape)
    planes = c * kh * kw
    workers = _copy_workers(lib, out.numel())
    head = (x.data_ptr(), *x.stride(), n, h, w, *geometry, ho, wo, out.data_ptr())
    if uses_openmp(lib):
        lib.approxsim_im2col_par(*head, planes, workers)
        return out
    run_jobs(lib.approxsim_im2col_t, [(*head, lo, hi) for lo, hi in split_range(planes, workers)])
    return out


def col2im_t(
    lib: Any, g: Tensor, shape: tuple[int, int, int, int], geometry: ConvGeometry2d
) -> Tensor:
    """The adjoint of :func:`im2col_t`: ``g`` ``(C·kh·kw, N, Ho, Wo)`` summed back into a
    contiguous ``(C, N, H, W)`` tensor, each element's taps added in (kh, kw) order."""
    kh, kw, sh, sw, dh, dw, ph, pw = geometry
    c, n, h, w = shape
    ho, wo = conv_out_size(h, kh, sh, dh, ph), conv_out_size(w, kw, sw, dw, pw)
    g = g.contiguous()
    gx = torch.zeros(shape, dtype=torch.float32)
    workers = _copy_workers(lib, g.numel())
    head = (g.data_ptr(), n, h, w, *geometry, ho, wo, gx.data_ptr())
    if uses_openmp(lib):
        lib.approxsim_col2im_par(*head, c, workers)
        return gx
    run_jobs(lib.approxsim_col2im_t, [(*head, lo, hi) for lo, hi in split_range(c, workers)])
    return gx
