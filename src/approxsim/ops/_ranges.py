"""When a fast CPU kernel must hand a batch to the exact reference.

The CPU kernels compute each product as ``w_a · (w_b · LUT[ia, ib])`` in float arithmetic,
which is exact only while every factor and intermediate stays a normal float32. Both kernels
record, per batch, the exponent range of each operand's nonzero values and whether an inf/NaN
occurs; :func:`unsafe_batches` turns that record into the list of batches the reference must
recompute (correct, slower, and rare: it takes values beyond about 2^±60 meeting in one
product, or inf/NaN operands).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import Tensor

__all__ = ["unsafe_batches"]

_LUT_EXPONENTS: dict[int, tuple[Tensor, int, int]] = {}


def _lut_exponents(lut_bits: Tensor) -> tuple[int, int]:
    """The smallest and largest unbiased exponent among the LUT's entries (cached)."""
    hit = _LUT_EXPONENTS.get(lut_bits.data_ptr())
    if hit is not None and hit[0] is lut_bits:
        return hit[1], hit[2]
    le = lut_bits >> 23
    lo, hi = int(le.min()) - 127, int(le.max()) - 127
    if len(_LUT_EXPONENTS) >= 8:
        _LUT_EXPONENTS.clear()
    _LUT_EXPONENTS[lut_bits.data_ptr()] = (lut_bits, lo, hi)
    return lo, hi


def unsafe_batches(ranges: Tensor, lut_bits: Tensor, *, v_over_a: bool) -> list[int]:
    """Indices of the batches the fast kernels must leave to the exact reference.

    A batch is unsafe when it holds an inf/NaN or when some V entry ``2^eb · LUT`` (with
    ``v_over_a``, where the kernel may have swapped the operands, also ``2^ea · LUT``) or some
    product could leave the normal float range.

    Args:
        ranges: int32 (B, 6): per batch the biased exponent range of A's nonzero operands
            (lowest, highest), whether A holds an inf/NaN, and the same three for B.
        lut_bits: The LUT's int32 bits (its exponents bound V's).
        v_over_a: Also check V built over A (the compiled kernel may swap the operands).

    Returns:
        The unsafe batch indices, ascending.
    """
    le_lo, le_hi = _lut_exponents(lut_bits)
    if len(ranges) <= 4:  # the usual case: plain Python beats a dozen tiny numpy calls
        rows = ranges.tolist()
        return [i for i, row in enumerate(rows) if _unsafe(row, le_lo, le_hi, v_over_a)]
    columns = list(ranges.numpy().astype(np.int64).T)
    return [int(i) for i in np.flatnonzero(_unsafe(columns, le_lo, le_hi, v_over_a))]


def _unsafe(fields: list[Any], le_lo: int, le_hi: int, v_over_a: bool) -> Any:
    """:func:`unsafe_batches`' rule for one batch (``fields``: six Python ints; a bool) or for
    many at once (six numpy int64 columns; a bool array); the LUT's unbiased exponents span
    ``le_lo..le_hi``."""
    a_lo, a_hi, a_sp, b_lo, b_hi, b_sp = fields
    a_nz = a_lo <= a_hi
    b_nz = b_lo <= b_hi
    v_lo = b_lo - 127 + le_lo
    v_hi = b_hi - 127 + le_hi
    bad = (a_sp != 0) | (b_sp != 0)
    bad |= b_nz & ((v_lo < -126) | (v_hi > 127))
    if v_over_a:
        bad |= a_nz & ((a_lo - 127 + le_lo < -126) | (a_hi - 127 + le_hi > 127))
    bad |= a_nz & b_nz & ((a_lo - 127 + v_lo < -126) | (a_hi - 127 + v_hi > 127))
    return bad
