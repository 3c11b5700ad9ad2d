"""Triton GPU kernels for LUT-based approximate float32 products (DESIGN §2, §4).

Two kernels, each with a launcher:

* :func:`triton_lut_bmm` — batched matmul ``(B, R, K) × (B, K, N) → (B, R, N)`` where every
  product goes through the mantissa LUT and the sum over K is float32;
* :func:`triton_lut_mul` — the elementwise product of two same-shape tensors.

Every product is assembled from integer bit operations exactly as
:func:`approxsim.multipliers.numformat.lut_product` (the specification) does, so products are
bit-identical to it, special values included: a NaN operand or ``inf · 0`` gives NaN, an
infinite operand ±inf, a zero or subnormal operand a signed zero, overflow ±inf and underflow a
signed zero; input rounding ``nearest`` may carry into the exponent, and a carry into exponent
255 makes the operand infinite. Only the order of the float32 sum over K differs from the
reference (it is a tree within a K block, sequential across blocks).

This module imports triton at the top; it is imported only when a GPU kernel is first needed,
so ``import approxsim`` never requires triton. Without triton the import raises a
``RuntimeError`` that says how to install it.

The kernels also run on CPU tensors under ``TRITON_INTERPRET=1`` (slowly), which is how the
test suite checks them on machines without a GPU.

Tuning notes (for a real GPU, not done yet): block sizes and ``num_warps`` are untimed
defaults. The 3-D ``(BLOCK_M, BLOCK_K, BLOCK_N)`` product tile dominates register use: compiled
offline for sm_90 (no GPU at hand), 32×8×32 with 8 warps uses 180 registers and no spills,
while 32×8×32 with 4 warps, 64×8×64 with 8 warps and 32×16×32 with 8 warps spill. Larger tiles
therefore want more warps or a leaner product step (e.g. folding the zero/inf/NaN masks into
out-of-range exponent codes so the 3-D part is one add and two compares). For M ≤ 7 the LUT
(≤ 64 KiB) could be staged in shared memory per program instead of gathered through L1/L2; for
M ≥ 9 it cannot and the gather stays global. An autotune over (BLOCK_M, BLOCK_N, BLOCK_K,
num_warps) keyed on (R, N, K, M) is the natural next step, as is the DESIGN §4 row-gather
reformulation.
"""

from __future__ import annotations

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError as exc:  # pragma: no cover - exercised only where triton is absent
    raise RuntimeError(
        "approxsim's GPU kernels need Triton, which is not installed. Install it with "
        "`pip install triton` (CUDA builds of PyTorch normally bring it along), or run the "
        "approximate ops on CPU tensors instead."
    ) from exc

__all__ = ["triton_lut_bmm", "triton_lut_mul"]

#: Largest M the kernels accept: the gather index ``(ia << M) | ib`` must fit in int32.
_MAX_KERNEL_MANTISSA_BITS = 15

#: CUDA caps grid axes 1 and 2 at 65535 programs; larger launches are split by the launcher.
_MAX_GRID_YZ = 65535

# Bit-pattern constants of IEEE-754 float32 (constexpr so the jitted code may read them).
_ABS_MASK = tl.constexpr(0x7FFFFFFF)  # everything but the sign bit
_EXP_MASK = tl.constexpr(0x7F800000)  # exponent field; also +inf
_FRAC_MASK = tl.constexpr(0x007FFFFF)  # 23 fraction bits
_SIGN_BIT = tl.constexpr(-(2**31))  # 0x80000000 as a signed int32
_QNAN = tl.constexpr(0x7FC00000)  # the NaN every NaN-producing product returns


@triton.jit
def _decode_operand(
    x,  # float32 block of operands
    MANTISSA_BITS: tl.constexpr,  # M, the fraction bits the multiplier sees
    ROUND_NEAREST: tl.constexpr,  # False: truncate to M bits; True: round half to even
):
    """Decode float32 operands as an M-bit multiplier input port sees them.

    Mirrors ``approxsim.multipliers.numformat.operand_index``. Returns ``(sign, exp_field,
    index, is_zero, is_inf, is_nan)``: the sign bit in place (int32 0 or 0x80000000), the
    biased exponent field after input rounding, the M-bit LUT index, and the masks of operands
    acting as zero (zero or subnormal, flushed), infinity (also a finite operand that rounding
    carried into exponent 255) and NaN.
    """
    SHIFT: tl.constexpr = 23 - MANTISSA_BITS
    bits = x.to(tl.int32, bitcast=True)
    sign = bits & _SIGN_BIT
    mag = bits & _ABS_MASK
    exp_field = mag >> 23  # mag >= 0, so the arithmetic shift is a logical one
    special = exp_field == 255
    frac_zero = (mag & _FRAC_MASK) == 0
    is_nan = special & ~frac_zero
    is_inf = special & frac_zero
    is_zero = exp_field == 0  # zeros and subnormals are flushed
    if ROUND_NEAREST and SHIFT > 0:
        # Round half to even on the magnitude bits; a carry out of the fraction bumps the
        # exponent. inf/NaN are left alone (and zeroed first so the addition cannot wrap).
        finite_mag = tl.where(special, 0, mag)
        lsb = (finite_mag >> SHIFT) & 1
        rounded = ((finite_mag + ((1 << (SHIFT - 1)) - 1) + lsb) >> SHIFT) << SHIFT
        mag = tl.where(special, mag, rounded)
        exp_field = mag >> 23
        # A finite operand carried to exponent 255 is infinite.
        is_inf = is_inf | ((exp_field == 255) & ~special)
    index = (mag & _FRAC_MASK) >> SHIFT
    return sign, exp_field, index, is_zero, is_inf, is_nan


@triton.jit
def _lut_product(
    sign_a,
    exp_a,
    idx_a,
    zero_a,
    inf_a,
    nan_a,  # decoded operand A (broadcastable with B)
    sign_b,
    exp_b,
    idx_b,
    zero_b,
    inf_b,
    nan_b,  # decoded operand B
    lut_ptr,  # *int32: 2^(2M) LUT float32 bit patterns, row-major [ia, ib]
    mask,  # which products are real (masked-off lanes gather nothing)
    MANTISSA_BITS: tl.constexpr,  # M
):
    """``a ⊗ b`` from decoded operands; mirrors ``approxsim.multipliers.numformat.lut_product``.

    The LUT value's exponent is added to ``ea + eb`` and its fraction copied, so the
    power-of-two scaling is exact. Returns the float32 products (broadcast shape).
    """
    lut = tl.load(lut_ptr + ((idx_a << MANTISSA_BITS) | idx_b), mask=mask, other=0)
    exp = exp_a + exp_b + (lut >> 23) - 254  # LUT values are positive: >> 23 is the exponent
    sign = sign_a ^ sign_b
    inf = sign | _EXP_MASK
    bits = sign | (exp << 23) | (lut & _FRAC_MASK)
    bits = tl.where(exp >= 255, inf, bits)  # overflow
    any_zero = zero_a | zero_b
    any_inf = inf_a | inf_b
    bits = tl.where(any_zero | (exp <= 0), sign, bits)  # zero operand or underflow
    bits = tl.where(any_inf, inf, bits)
    bits = tl.where(nan_a | nan_b | (any_inf & any_zero), _QNAN, bits)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _lut_bmm_kernel(
    a_ptr,  # *float32 A, shape (B, R, K)
    b_ptr,  # *float32 B, shape (B, K, N)
    c_ptr,  # *float32 output C, shape (B, R, N)
    lut_ptr,  # *int32 LUT bit patterns, 2^(2M) entries, row-major [ia, ib]
    R,  # rows of A and C
    N,  # columns of B and C
    K,  # reduction length
    stride_ab,
    stride_ar,
    stride_ak,  # strides of A (elements): batch, row, k
    stride_bb,
    stride_bk,
    stride_bn,  # strides of B: batch, k, column
    stride_cb,
    stride_cr,
    stride_cn,  # strides of C: batch, row, column
    MANTISSA_BITS: tl.constexpr,  # M, fraction bits the multiplier sees
    ROUND_NEAREST: tl.constexpr,  # input rounding: False truncate, True nearest-even
    BLOCK_M: tl.constexpr,  # output rows per program
    BLOCK_N: tl.constexpr,  # output columns per program
    BLOCK_K: tl.constexpr,  # K step; the product tile is (BLOCK_M, BLOCK_K, BLOCK_N)
):
    """One (BLOCK_M, BLOCK_N) output tile of one batch entry: C = Σ_k A[:, k] ⊗ B[k, :]."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_b = tl.program_id(2)

    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    mask_m = rm < R
    mask_n = rn < N
    # 64-bit offsets: a single large operand may exceed 2^31 elements.
    a_ptrs = (
        a_ptr
        + pid_b.to(tl.int64) * stride_ab
        + rm.to(tl.int64)[:, None] * stride_ar
        + rk.to(tl.int64)[None, :] * stride_ak
    )
    b_ptrs = (
        b_ptr
        + pid_b.to(tl.int64) * stride_bb
        + rk.to(tl.int64)[:, None] * stride_bk
        + rn.to(tl.int64)[None, :] * stride_bn
    )

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        mask_k = (k0 + rk) < K
        mask_a = mask_m[:, None] & mask_k[None, :]
        mask_b = mask_k[:, None] & mask_n[None, :]
        # Masked-off operands load as +0, so padding K lanes contribute ±0 to the sum.
        a = tl.load(a_ptrs, mask=mask_a, other=0.0)
        b = tl.load(b_ptrs, mask=mask_b, other=0.0)
        # Decode once per operand tile (2-D), then broadcast to the 3-D product tile.
        sa, ea, ia, za, fa, na = _decode_operand(a, MANTISSA_BITS, ROUND_NEAREST)
        sb, eb, ib, zb, fb, nb = _decode_operand(b, MANTISSA_BITS, ROUND_NEAREST)
        prod = _lut_product(
            sa[:, :, None],
            ea[:, :, None],
            ia[:, :, None],
            za[:, :, None],
            fa[:, :, None],
            na[:, :, None],
            sb[None, :, :],
            eb[None, :, :],
            ib[None, :, :],
            zb[None, :, :],
            fb[None, :, :],
            nb[None, :, :],
            lut_ptr,
            mask_a[:, :, None] & mask_b[None, :, :],
            MANTISSA_BITS,
        )  # (BLOCK_M, BLOCK_K, BLOCK_N)
        acc += tl.sum(prod, axis=1)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk

    c_ptrs = (
        c_ptr
        + pid_b.to(tl.int64) * stride_cb
        + rm.to(tl.int64)[:, None] * stride_cr
        + rn.to(tl.int64)[None, :] * stride_cn
    )
    tl.store(c_ptrs, acc, mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def _lut_mul_kernel(
    a_ptr,  # *float32 operand A, flat
    b_ptr,  # *float32 operand B, flat, same length
    out_ptr,  # *float32 output, flat, same length
    lut_ptr,  # *int32 LUT bit patterns, 2^(2M) entries, row-major [ia, ib]
    n_elements,  # length of the three flat tensors
    MANTISSA_BITS: tl.constexpr,  # M, fraction bits the multiplier sees
    ROUND_NEAREST: tl.constexpr,  # input rounding: False truncate, True nearest-even
    BLOCK_SIZE: tl.constexpr,  # elements per program
):
    """``out[i] = a[i] ⊗ b[i]`` for one block of BLOCK_SIZE elements."""
    offsets = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    a = tl.load(a_ptr + offsets, mask=mask, other=0.0)
    b = tl.load(b_ptr + offsets, mask=mask, other=0.0)
    sa, ea, ia, za, fa, na = _decode_operand(a, MANTISSA_BITS, ROUND_NEAREST)
    sb, eb, ib, zb, fb, nb = _decode_operand(b, MANTISSA_BITS, ROUND_NEAREST)
    out = _lut_product(sa, ea, ia, za, fa, na, sb, eb, ib, zb, fb, nb, lut_ptr, mask, MANTISSA_BITS)
    tl.store(out_ptr + offsets, out, mask=mask)


def _check_lut(lut_bits: Tensor, mantissa_bits: int, rounding: int, device: torch.device) -> None:
    """Validate the LUT and format arguments shared by both launchers."""
    if isinstance(mantissa_bits, bool) or not isinstance(mantissa_bits, int):
        raise TypeError(f"mantissa_bits must be an int, got {type(mantissa_bits).__name__}")
    if not 1 <= mantissa_bits <= _MAX_KERNEL_MANTISSA_BITS:
        raise ValueError(
            f"mantissa_bits={mantissa_bits} is out of range for the Triton kernels "
            f"(1..{_MAX_KERNEL_MANTISSA_BITS})"
        )
    if rounding not in (0, 1) or isinstance(rounding, bool):
        raise ValueError(f"rounding must be 0 (truncate) or 1 (nearest), got {rounding!r}")
    if lut_bits.dtype != torch.int32 or lut_bits.dim() != 1:
        raise ValueError(
            "lut_bits must be a flat int32 tensor of float32 bit patterns "
            f"(Multiplier.lut_bits(device)), got {lut_bits.dtype} with shape "
            f"{tuple(lut_bits.shape)}"
        )
    if lut_bits.numel() != 1 << (2 * mantissa_bits):
        raise ValueError(
            f"lut_bits has {lut_bits.numel()} entries; a {mantissa_bits}-bit multiplier needs "
            f"2^{2 * mantissa_bits} = {1 << (2 * mantissa_bits)}"
        )
    if lut_bits.device != device:
        raise ValueError(
            f"lut_bits is on {lut_bits.device} but the operands are on {device}; "
            "pass Multiplier.lut_bits(operand.device)"
        )
    if not lut_bits.is_contiguous():
        raise ValueError("lut_bits must be contiguous")


def triton_lut_bmm(
    a: Tensor,
    b: Tensor,
    lut_bits: Tensor,
    mantissa_bits: int,
    rounding: int,
    *,
    block_m: int = 32,
    block_n: int = 32,
    block_k: int = 8,
    num_warps: int = 8,
) -> Tensor:
    """Batched approximate matmul through a mantissa LUT, on the operands' device.

    ``out[b, r, n] = Σ_k a[b, r, k] ⊗ b[b, k, n]``: each product bit-identical to
    :func:`approxsim.multipliers.numformat.lut_product`, the sum accumulated in float32.
    Any strides are accepted (they are passed to the kernel); the output is contiguous.

    Args:
        a: float32 tensor, operand A.
        b: float32 tensor, operand B.
        lut_bits: flat int32 tensor of the ``2^(2M)`` LUT float32 bit patterns, row-major
            ``[ia, ib]``, on the operands' device (``Multiplier.lut_bits(device)``).
        mantissa_bits: M, the fraction bits the multiplier sees (1..15).
        rounding: input rounding, 0 = truncate, 1 = nearest (ties to even).
        block_m: output rows per program (power of two).
        block_n: output columns per program (power of two).
        block_k: K step per loop iteration (power of two); the product tile held at once is
            ``block_m × block_k × block_n``.
        num_warps: warps per program (ignored by the interpreter).

    Returns:
        float32 tensor of shape ``(B, R, N)``; zeros where ``K == 0``.

    Raises:
        ValueError: wrong dtypes, ranks, shapes, devices or LUT size.

    Shape:
        a: ``(B, R, K)``, b: ``(B, K, N)``, out: ``(B, R, N)``.
    """
    if a.dtype != torch.float32 or b.dtype != torch.float32:
        raise ValueError(f"a and b must be float32, got {a.dtype} and {b.dtype}")
    if a.dim() != 3 or b.dim() != 3:
        raise ValueError(
            f"a and b must be 3-D (B, R, K) and (B, K, N), got shapes {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )
    nb, r, k = a.shape
    if b.shape[0] != nb or b.shape[1] != k:
        raise ValueError(
            f"shapes {tuple(a.shape)} and {tuple(b.shape)} do not match as (B, R, K) × (B, K, N)"
        )
    if a.device != b.device:
        raise ValueError(f"a and b are on different devices ({a.device} and {b.device})")
    _check_lut(lut_bits, mantissa_bits, rounding, a.device)
    for name, blk in (("block_m", block_m), ("block_n", block_n), ("block_k", block_k)):
        if blk < 1 or blk & (blk - 1):
            raise ValueError(f"{name} must be a positive power of two, got {blk}")
    n = b.shape[2]

    out = torch.empty((nb, r, n), dtype=torch.float32, device=a.device)
    if out.numel() == 0:
        return out
    if k == 0:
        return out.zero_()

    # Grid axes 1 (N tiles) and 2 (batch) are capped at 65535 on CUDA: launch in slices,
    # which are views, so the kernel's stride arguments address them correctly.
    n_step = _MAX_GRID_YZ * block_n
    for b0 in range(0, nb, _MAX_GRID_YZ):
        b1 = min(nb, b0 + _MAX_GRID_YZ)
        for n0 in range(0, n, n_step):
            n1 = min(n, n0 + n_step)
            a_s = a[b0:b1]
            b_s = b[b0:b1, :, n0:n1]
            c_s = out[b0:b1, :, n0:n1]
            grid = (triton.cdiv(r, block_m), triton.cdiv(n1 - n0, block_n), b1 - b0)
            _lut_bmm_kernel[grid](
                a_s, b_s, c_s, lut_bits,
                r, n1 - n0, k,
                a_s.stride(0), a_s.stride(1), a_s.stride(2),
                b_s.stride(0), b_s.stride(1), b_s.stride(2),
                c_s.stride(0), c_s.stride(1), c_s.stride(2),
                MANTISSA_BITS=mantissa_bits,
                ROUND_NEAREST=bool(rounding),
                BLOCK_M=block_m,
                BLOCK_N=block_n,
                BLOCK_K=block_k,
                num_warps=num_warps,
            )  # fmt: skip
    return out


def triton_lut_mul(
    a: Tensor,
    b: Tensor,
    lut_bits: Tensor,
    mantissa_bits: int,
    rounding: int,
    *,
    block_size: int = 1024,
    num_warps: int = 4,
) -> Tensor:
    """Elementwise approximate product through a mantissa LUT, on the operands' device.

    ``out[i] = a[i] ⊗ b[i]``, bit-identical to :func:`approxsim.multipliers.numformat.lut_product`.
    No broadcasting: the caller expands operands to one shape first.

    Args:
        a: float32 contiguous tensor, operand A.
        b: float32 contiguous tensor of the same shape, operand B.
        lut_bits: flat int32 tensor of the ``2^(2M)`` LUT float32 bit patterns, row-major
            ``[ia, ib]``, on the operands' device.
        mantissa_bits: M, the fraction bits the multiplier sees (1..15).
        rounding: input rounding, 0 = truncate, 1 = nearest (ties to even).
        block_size: elements per program (power of two).
        num_warps: warps per program (ignored by the interpreter).

    Returns:
        float32 contiguous tensor of the operands' shape.

    Raises:
        ValueError: wrong dtypes, shapes, layouts, devices or LUT size.
    """
    if a.dtype != torch.float32 or b.dtype != torch.float32:
        raise ValueError(f"a and b must be float32, got {a.dtype} and {b.dtype}")
    if a.shape != b.shape:
        raise ValueError(
            f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}; "
            "broadcast them first"
        )
    if not (a.is_contiguous() and b.is_contiguous()):
        raise ValueError("a and b must be contiguous (call .contiguous() first)")
    if a.device != b.device:
        raise ValueError(f"a and b are on different devices ({a.device} and {b.device})")
    _check_lut(lut_bits, mantissa_bits, rounding, a.device)
    if block_size < 1 or block_size & (block_size - 1):
        raise ValueError(f"block_size must be a positive power of two, got {block_size}")

    out = torch.empty_like(a)
    n = a.numel()
    if n == 0:
        return out
    grid = (triton.cdiv(n, block_size),)
    _lut_mul_kernel[grid](
        a, b, out, lut_bits,
        n,
        MANTISSA_BITS=mantissa_bits,
        ROUND_NEAREST=bool(rounding),
        BLOCK_SIZE=block_size,
        num_warps=num_warps,
    )  # fmt: skip
    return out
