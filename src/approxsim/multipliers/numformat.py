"""The float32 number format of LUT multipliers (DESIGN §2): operand decoding and the product.

This module is the specification every kernel follows and every kernel's tests compare
against: the torch reference ops are built on :func:`lut_product`, and the CPU (C++, Numba)
and Triton kernels must give the same bits for every product. Everything works on raw IEEE-754
bits (``Tensor.view(torch.int32)``) with integer arithmetic, so the power-of-two scaling of a
product is exact by construction; it favours clarity over speed.

The rules, in the order an input port applies them:

1. **Decode.** A float32 operand is a sign bit, an 8-bit biased exponent field and a 23-bit
   fraction. An M-bit multiplier sees the top M fraction bits: its LUT index.
2. **Flush.** Zeros and subnormals (exponent field 0) act as zero. This is decided on the
   operand as given, *before* input rounding, so rounding never turns a subnormal into a
   normal number.
3. **Round.** ``truncate`` keeps the top M fraction bits; ``nearest`` rounds the magnitude to
   M fraction bits, ties to even, and a carry out of the fraction increments the exponent
   (a finite operand carried to exponent 255 becomes infinite).
4. **Multiply.** ``a ⊗ b = (-1)^(sa xor sb) · 2^(ea + eb) · LUT[ia, ib]``; a product above the
   float32 range is ±inf, one below the normal range a signed zero; a NaN operand or
   ``inf · 0`` gives the quiet NaN :data:`QNAN_BITS`, an infinite operand ±inf, a zero or
   flushed operand a signed zero.

:data:`SPECIAL_OPERANDS` names the operands at every edge of these rules; kernel tests run
them through each kernel.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "ROUNDINGS",
    "SIGN_BIT",
    "EXP_MASK",
    "FRAC_MASK",
    "ABS_MASK",
    "QNAN_BITS",
    "SPECIAL_OPERANDS",
    "float_bits",
    "bits_float",
    "as_int32",
    "special_operands",
    "operand_index",
    "lut_product",
]

#: Input rounding modes: ``truncate`` keeps the top M fraction bits (an M-bit input port);
#: ``nearest`` rounds the operand to M fraction bits, ties to even, carrying into the exponent.
#: Kernels take the mode as its position in this tuple (0 truncate, 1 nearest).
ROUNDINGS = ("truncate", "nearest")

#: The sign bit, 0x80000000 as a signed int32.
SIGN_BIT = -(2**31)
#: The exponent field's bits; also the bits of +inf.
EXP_MASK = 0x7F800000
#: The 23 fraction bits.
FRAC_MASK = 0x007FFFFF
#: Everything but the sign bit.
ABS_MASK = 0x7FFFFFFF
#: The NaN every NaN-producing product returns (the default quiet NaN).
QNAN_BITS = 0x7FC00000

#: Operands at every edge of the rules above, by name, as unsigned 32-bit patterns.
SPECIAL_OPERANDS: dict[str, int] = {
    "+0": 0x00000000,
    "-0": 0x80000000,
    "smallest subnormal": 0x00000001,
    "-smallest subnormal": 0x80000001,
    "subnormal": 0x00011D44,
    "-subnormal": 0x80011D44,
    # Just below the normal range: `nearest` would carry these into exponent 1 if the flush
    # came after rounding (it must not).
    "subnormal near normal": 0x007FFFF0,
    "-subnormal near normal": 0x807FFFF0,
    "largest subnormal": 0x007FFFFF,
    "-largest subnormal": 0x807FFFFF,
    "smallest normal": 0x00800000,
    "-smallest normal": 0x80800000,
    "smallest normal, nearest carries": 0x00FFFFFF,
    "2^-100": 0x0D800000,
    "1e-30": 0x0DA24260,
    "-1e-30": 0x8DA24260,
    "1.0": 0x3F800000,
    "-1.5": 0xBFC00000,
    "tie at M=7, rounds down": 0x3F808000,
    "tie at M=7, rounds up": 0x3F818000,
    "tie at M=3": 0x3F900000,
    "just below 2, nearest carries": 0x3FFFFFFF,
    "-just below 2, nearest carries": 0xBFFFFFFF,
    "2^100": 0x71800000,
    "3e38": 0x7F61B1E6,
    "-3e38": 0xFF61B1E6,
    "largest normal, nearest carries to inf": 0x7F7FFFFF,
    "-largest normal": 0xFF7FFFFF,
    "+inf": 0x7F800000,
    "-inf": 0xFF800000,
    "NaN": 0x7FC00000,
    "-NaN with payload": 0xFFC00001,
    "signalling NaN": 0x7F800001,
}


def as_int32(u: int) -> int:
    """An unsigned 32-bit pattern as the signed int32 with the same bits.

    Args:
        u: A bit pattern in ``[0, 2^32)``.

    Returns:
        The int32 value with the same two's-complement bits.
    """
    return u - (1 << 32) if u >= 1 << 31 else u


def special_operands() -> Tensor:
    """The :data:`SPECIAL_OPERANDS` as a float32 tensor, in the dictionary's order.

    Returns:
        1-D float32 tensor (NaN payloads and signs kept bit for bit).
    """
    bits = torch.tensor([as_int32(u) for u in SPECIAL_OPERANDS.values()], dtype=torch.int32)
    return bits.view(torch.float32)


def float_bits(x: Tensor) -> Tensor:
    """Reinterpret a float32 tensor as int32 bits (no copy for contiguous input).

    Args:
        x: float32 tensor.

    Returns:
        int32 tensor of the same shape holding ``x``'s bit patterns.
    """
    return x.contiguous().view(torch.int32)


def bits_float(x: Tensor) -> Tensor:
    """Reinterpret an int32 tensor as float32 (the inverse of :func:`float_bits`).

    Args:
        x: int32 tensor of bit patterns.

    Returns:
        float32 tensor of the same shape.
    """
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
        (zero or subnormal as given: flushed before rounding), infinity (including a finite
        operand that rounding carried to exponent 255) and NaN.

    Raises:
        ValueError: an unknown rounding mode.
    """
    shift = 23 - mantissa_bits
    mag = bits & ABS_MASK
    exp_field = mag >> 23
    is_nan = (exp_field == 255) & ((mag & FRAC_MASK) != 0)
    is_inf = (exp_field == 255) & ((mag & FRAC_MASK) == 0)
    is_zero = exp_field == 0  # zeros and subnormals are flushed, whatever rounding does
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

    Raises:
        ValueError: an unknown rounding mode.
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
