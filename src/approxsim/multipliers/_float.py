"""Bit-level float32 helpers: operand decoding and the LUT product of DESIGN §2.

Everything here works on the raw IEEE-754 bits (``Tensor.view(torch.int32)``) with integer
arithmetic, so the power-of-two scaling of a LUT product is exact by construction and no
intermediate float rounding can creep in. This module is the specification the fast kernels
(``approxsim.ops``) are tested against; it favours clarity over speed.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "ROUNDINGS",
    "SIGN_BIT",
    "EXP_MASK",
    "FRAC_MASK",
    "QNAN_BITS",
    "float_bits",
    "bits_float",
    "operand_index",
    "lut_product",
]

#: Input rounding modes: ``truncate`` keeps the top M fraction bits (an M-bit input port);
#: ``nearest`` rounds the operand to M fraction bits, ties to even, carrying into the exponent.
ROUNDINGS = ("truncate", "nearest")

SIGN_BIT = -(2**31)  # 0x80000000 as a signed int32
EXP_MASK = 0x7F800000
FRAC_MASK = 0x007FFFFF
ABS_MASK = 0x7FFFFFFF
#: The NaN every NaN-producing product returns (the default quiet NaN).
QNAN_BITS = 0x7FC00000


def float_bits(x: Tensor) -> Tensor:
    """Reinterpret a float32 tensor as int32 bits (no copy for contiguous input)."""
    return x.contiguous().view(torch.int32)


def bits_float(x: Tensor) -> Tensor:
    """Reinterpret an int32 tensor as float32 (the inverse of :func:`float_bits`)."""
    return x.contiguous().view(torch.float32)


def operand_index(
    bits: Tensor, mantissa_bits: int, rounding: str
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Decode float32 operands the way an M-bit multiplier input port sees them.

    Args:
        bits: int32 tensor of float32 bit patterns.
        mantissa_bits: M, the number of fraction bits the multiplier sees (1..23).
        rounding: ``"truncate"`` or ``"nearest"`` (see :data:`ROUNDINGS`).

    Returns:
        ``(exp_field, index, is_zero, is_inf, is_nan)``: the biased exponent field (int32,
        after input rounding), the M-bit LUT index, and masks for operands that act as zero
        (zero or subnormal: flushed), infinity (including a finite operand that rounding
        carried to exponent 255) and NaN.
    """
    shift = 23 - mantissa_bits
    mag = bits & ABS_MASK
    exp_field = mag >> 23
    is_nan = (exp_field == 255) & ((mag & FRAC_MASK) != 0)
    is_inf = (exp_field == 255) & ((mag & FRAC_MASK) == 0)
    is_zero = exp_field == 0  # zeros and subnormals are flushed
    if rounding == "nearest" and shift > 0:
        # Round half to even on the magnitude bits; a carry out of the fraction bumps the
        # exponent, and a carry into exponent 255 makes the operand infinite.
        lsb = (mag >> shift) & 1
        finite = exp_field != 255
        rounded = (mag + ((1 << (shift - 1)) - 1) + lsb) >> shift << shift
        mag = torch.where(finite, rounded, mag)
        exp_field = mag >> 23
        is_inf = is_inf | (finite & ~is_zero & (exp_field == 255))
    elif rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    index = (mag & FRAC_MASK) >> shift
    return exp_field, index, is_zero, is_inf, is_nan


def lut_product(
    a: Tensor, b: Tensor, lut_bits: Tensor, mantissa_bits: int, rounding: str
) -> Tensor:
    """Elementwise simulated product ``a ⊗ b`` through a mantissa LUT (DESIGN §2).

    ``a ⊗ b = (-1)^(sa xor sb) · 2^(ea+eb) · LUT[ia, ib]``, assembled from bits: the exponent
    of the LUT value is added to ``ea + eb``, its fraction copied. Rules at the edges:
    a NaN operand or ``inf · 0`` gives NaN; an infinite operand gives ±inf; a zero or
    subnormal operand gives a signed zero; a product above the float32 range gives ±inf and one
    below the normal range gives a signed zero (no subnormal results).

    Args:
        a: float32 tensor.
        b: float32 tensor, broadcastable with ``a``.
        lut_bits: int32 tensor of ``2^(2M)`` LUT values' bits, row-major ``[ia, ib]``, each a
            positive normal float32.
        mantissa_bits: M.
        rounding: input rounding mode.

    Returns:
        float32 tensor of the broadcast shape.
    """
    a, b = torch.broadcast_tensors(a, b)
    ab = float_bits(a)
    bb = float_bits(b)
    ea, ia, za, inf_a, nan_a = operand_index(ab, mantissa_bits, rounding)
    eb, ib, zb, inf_b, nan_b = operand_index(bb, mantissa_bits, rounding)
    sign = (ab ^ bb) & SIGN_BIT

    # Gather indices of zero/inf/NaN operands are still in range (index is masked to M bits),
    # and their results are overwritten below.
    lut_val = lut_bits.to(ab.device)[(ia << mantissa_bits) | ib]
    exp = ea + eb + (lut_val >> 23) - 254
    out = sign | (exp.clamp(0, 255) << 23) | (lut_val & FRAC_MASK)
    zero = torch.full_like(out, 0) | sign
    inf = torch.full_like(out, EXP_MASK) | sign
    out = torch.where(exp >= 255, inf, out)
    out = torch.where(exp <= 0, zero, out)

    any_zero = za | zb
    any_inf = inf_a | inf_b
    out = torch.where(any_zero, zero, out)
    out = torch.where(any_inf, inf, out)
    nan = nan_a | nan_b | (any_inf & any_zero)
    out = torch.where(nan, torch.full_like(out, QNAN_BITS), out)
    return bits_float(out)
