"""The CPU kernel of ``approxsim::lut_bmm``: chooses the compiled or the Numba kernel.

The parts live in modules of their own:

* :mod:`._cpu_native` — the compiled C++ kernel (built on first use, called through ctypes);
* :mod:`._numba` — the Numba kernel, where no C++ compiler exists (or on request);
* :mod:`._ranges` — which batches a fast kernel must leave to the exact reference;
* :mod:`._nonfinite` — inf/NaN operands at the kernels' speed (only their rows and columns
  are corrected);
* :mod:`._threads` — the worker threads; :mod:`._scratch` — memory kept between calls;
  :mod:`._tiling` — the V tile sizes both kernels share.

``APPROXSIM_CPU_KERNEL=numba`` forces the Numba kernel; ``=native`` makes a failing build an
error instead of a fallback (see :func:`._cpu_native.load`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from approxsim.ops import _cpu_native
from approxsim.ops._nonfinite import patch_specials, zero_specials
from approxsim.ops._numba import lut_bmm_numba, plan_tiles
from approxsim.ops._ranges import unsafe_batches
from approxsim.ops._scratch import recycled, release_kept_memory
from approxsim.ops.reference import lut_bmm_ref

# Names imported from here before the kernels were split into modules of their own.
__all__ = [
    "lut_bmm_cpu",
    "plan_tiles",
    "recycled",
    "release_kept_memory",
    "unsafe_batches",
]


def lut_bmm_cpu(
    a: Tensor,
    b: Tensor,
    lut_bits: Tensor,
    mantissa_bits: int,
    rounding: int,
    column_major: bool = False,
) -> Tensor:
    """Batched approximate matmul on CPU: ``(B, R, K) × (B, K, N) → (B, R, N)``, float32.

    Runs the compiled kernel where it is available, else the Numba kernel; batches either
    cannot compute exactly run the reference.

    Args:
        a: float32 (B, R, K).
        b: float32 (B, K, N).
        lut_bits: int32 flat LUT bits (``2^(2M)``), row = operand A's index.
        mantissa_bits: M.
        rounding: 0 = truncate, 1 = nearest.
        column_major: with the compiled kernel, return the transposed view of a contiguous
            (B, N, R) tensor (a layout request, not a promise: other paths return (B, R, N)).

    Returns:
        float32 (B, R, N).

    Raises:
        KernelBuildError: the compiled kernel cannot be built and
            ``APPROXSIM_CPU_KERNEL=native`` asked for it.
        ValueError: ``APPROXSIM_CPU_KERNEL`` has an unknown value.
    """
    nb, r, k = a.shape
    n = b.shape[-1]
    if r == 0 or n == 0 or k == 0 or nb == 0:
        return torch.zeros(nb, r, n, dtype=torch.float32)
    lib = _cpu_native.load()
    if lib is None:
        # The Numba kernel reports no inf/NaN: look for them first (it is the slow path).
        split = zero_specials(a, b, mantissa_bits, rounding)
        if split is None:
            return lut_bmm_numba(a, b, lut_bits, mantissa_bits, rounding)
        a0, b0, specials = split
        out = lut_bmm_numba(a0, b0, lut_bits, mantissa_bits, rounding)
        patch_specials(out, a, b, lut_bits, mantissa_bits, rounding, specials)
        return out
    out, ranges = _cpu_native.lut_bmm_native(
        lib, a, b, lut_bits, mantissa_bits, rounding, column_major=column_major
    )
    if len(ranges) <= 4:  # the usual case: one list beats two tensor reductions (~10 us)
        special = any(row[2] or row[5] for row in ranges.tolist())
    else:
        special = bool(ranges[:, 2].any() or ranges[:, 5].any())
    if special:
        # An inf or NaN operand: once more with those operands zeroed (the same shapes, so
        # the same plan), then only their rows and columns corrected (see ._nonfinite).
        split = zero_specials(a, b, mantissa_bits, rounding)
        if split is not None:
            a0, b0, specials = split
            if not specials.all_nan:
                out = _native_checked(lib, a0, b0, lut_bits, mantissa_bits, rounding, column_major)
            patch_specials(out, a, b, lut_bits, mantissa_bits, rounding, specials)
            return out
    _reference_for_unsafe(out, ranges, a, b, lut_bits, mantissa_bits, rounding)
    return out


def _native_checked(
    lib: Any,
    a: Tensor,
    b: Tensor,
    lut_bits: Tensor,
    mantissa_bits: int,
    rounding: int,
    column_major: bool,
) -> Tensor:
    """The compiled kernel's result, with the batches it cannot compute exactly recomputed by
    the reference."""
    out, ranges = _cpu_native.lut_bmm_native(
        lib, a, b, lut_bits, mantissa_bits, rounding, column_major=column_major
    )
    _reference_for_unsafe(out, ranges, a, b, lut_bits, mantissa_bits, rounding)
    return out


def _reference_for_unsafe(
    out: Tensor,
    ranges: Tensor,
    a: Tensor,
    b: Tensor,
    lut_bits: Tensor,
    mantissa_bits: int,
    rounding: int,
) -> None:
    """Recompute with the reference the batches whose ranges the kernel cannot handle."""
    for bi in unsafe_batches(ranges, lut_bits, v_over_a=True):
        sl = slice(bi, bi + 1)
        out[sl] = lut_bmm_ref(a[sl], b[sl], lut_bits, mantissa_bits, rounding)
