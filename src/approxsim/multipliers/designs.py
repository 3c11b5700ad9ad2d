"""Mantissa functions of the built-in multiplier designs.

Each design is a function of two M-bit fraction indices ``i, j`` (operands ``1.i`` and ``1.j``
with exponent 0) returning the product's value in ``[1, 4)``. They are computed with exact
integer arithmetic on the fraction grid, then stored as float32 (exact for every M allowed).

Designs:
    * ``trunc``: the exact product of the M-bit truncated operands.
    * ``mitchell``: Mitchell's logarithmic multiplier (J. N. Mitchell, "Computer multiplication
      and division using binary logarithms", IRE Trans. Electronic Computers, 1962):
      ``log2(1+x) ≈ x``, so ``(1+x)(1+y) ≈ 1+x+y`` when ``x+y < 1`` and ``2(x+y)`` otherwise.
    * ``mbm``: the minimally biased multiplier (S. Saadat, H. Javaid, S. Parameswaran,
      "Minimally biased multipliers for approximate integer and floating-point
      multiplication", IEEE TCAD 2018) in the form ApproxTrain's FP models use: the LSB of each
      truncated fraction forced to 1, the error-correction term ``2^-4 + 2^-6`` added to the
      Mitchell sum (halved when the sum carries; skipped where it would overflow), and the
      result truncated back to M fraction bits.
    * ``round_nearest`` / ``truncate_product``: the exact product rounded (nearest-even) or
      truncated to M fraction bits, i.e. a narrow-float multiplier unit such as bfloat16.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "fraction_grid",
    "trunc_lut",
    "mitchell_lut",
    "mbm_lut",
    "rounded_product_lut",
    "truncated_product_lut",
]


def fraction_grid(mantissa_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer fraction indices ``(i, j)`` of the full grid as broadcastable int64 arrays."""
    n = 1 << mantissa_bits
    idx = np.arange(n, dtype=np.int64)
    return idx[:, None], idx[None, :]


def _from_fixed(value: np.ndarray, frac_bits: int) -> np.ndarray:
    """Fixed-point integers with ``frac_bits`` fraction bits to float32 (exact when < 2^24)."""
    return (value.astype(np.float64) / float(1 << frac_bits)).astype(np.float32)


def _truncate_to(value: np.ndarray, frac_bits: int, keep: int) -> np.ndarray:
    """Truncate fixed-point values in ``[1, 4)`` to ``keep`` fraction bits after normalizing.

    ``value`` has ``frac_bits`` fraction bits. Values ``>= 2`` are normalized as ``2·(1.f)``,
    so their kept precision is one bit coarser on the absolute scale, as in a float format.
    """
    one = 1 << frac_bits
    drop = np.where(value >= 2 * one, frac_bits - keep + 1, frac_bits - keep)
    return (value >> drop) << drop


def _round_to(value: np.ndarray, frac_bits: int, keep: int) -> np.ndarray:
    """Round fixed-point values in ``[1, 4)`` to ``keep`` fraction bits, ties to even."""
    one = 1 << frac_bits
    drop = np.where(value >= 2 * one, frac_bits - keep + 1, frac_bits - keep)
    half = np.where(drop > 0, np.left_shift(1, np.maximum(drop - 1, 0)), 0)
    lsb = (value >> drop) & 1
    rounded = ((value + half - 1 + lsb) >> drop) << drop
    return np.where(drop > 0, rounded, value)


def trunc_lut(mantissa_bits: int) -> np.ndarray:
    """Exact product of M-bit operands: ``(1 + i/2^M)(1 + j/2^M)``."""
    i, j = fraction_grid(mantissa_bits)
    one = 1 << mantissa_bits
    return _from_fixed((one + i) * (one + j), 2 * mantissa_bits)


def mitchell_lut(mantissa_bits: int) -> np.ndarray:
    """Mitchell's logarithmic product of M-bit operands."""
    i, j = fraction_grid(mantissa_bits)
    one = 1 << mantissa_bits
    s = i + j
    # 1 + s when the fraction sum stays below 1, else 2·(1 + (s - 1)) = 2·s.
    value = np.where(s < one, one + s, 2 * s)
    return _from_fixed(value, mantissa_bits)


def mbm_lut(mantissa_bits: int) -> np.ndarray:
    """Minimally biased multiplier (ApproxTrain's FP form) on M-bit operands.

    Worked in 23-bit fixed point like the hardware datapath, so the correction term
    ``2^-4 + 2^-6`` is never rounded before the final truncation to M bits.
    """
    frac = 23
    one = 1 << frac
    shift = frac - mantissa_bits
    i, j = fraction_grid(mantissa_bits)
    fa = (i << shift) | (1 << shift)  # LSB of the truncated fraction forced to 1
    fb = (j << shift) | (1 << shift)
    s = fa + fb
    corr = (1 << (frac - 4)) + (1 << (frac - 6))
    carry = s >= one
    # No carry: 1 + s + c, which may itself reach 2 (then normalized by truncation below).
    no_carry = one + s + corr
    # Carry: 2·(1 + (s - 1) + c/2), unless the corrected fraction overflows: then the
    # correction is skipped and the value is 2·(1 + (s - 1)).
    t = (s - one) + (corr >> 1)
    with_carry = np.where(t >= one, 2 * s, 2 * (one + t))
    value = np.where(carry, with_carry, no_carry)
    return _from_fixed(_truncate_to(value, frac, mantissa_bits), frac)


def rounded_product_lut(mantissa_bits: int) -> np.ndarray:
    """Exact product of M-bit operands rounded to M fraction bits, ties to even."""
    i, j = fraction_grid(mantissa_bits)
    one = 1 << mantissa_bits
    exact = (one + i) * (one + j)
    return _from_fixed(_round_to(exact, 2 * mantissa_bits, mantissa_bits), 2 * mantissa_bits)


def truncated_product_lut(mantissa_bits: int) -> np.ndarray:
    """Exact product of M-bit operands truncated to M fraction bits."""
    i, j = fraction_grid(mantissa_bits)
    one = 1 << mantissa_bits
    exact = (one + i) * (one + j)
    return _from_fixed(_truncate_to(exact, 2 * mantissa_bits, mantissa_bits), 2 * mantissa_bits)
