"""Non-finite operands at the fast kernels' speed.

The CPU kernels compute products in float arithmetic that cannot follow the number format's
rules for inf and NaN operands (``inf · 0`` is NaN, an operand that input rounding carries past
the largest float is infinite), so a batch holding one used to run the exact reference: about a
hundred times slower, for every GEMM of a diverged training run. But a non-finite operand only
reaches the outputs of its row of A or its column of B; every other output is a sum over finite
operands only, which the kernel computes exactly as it would without the non-finite ones. So:

1. :func:`zero_specials` replaces the non-finite operands (as the number format decodes them)
   by zeros and records the rows and columns that held them;
2. the kernel runs on those operands (the same shapes, so the same plan: the unaffected outputs
   are bit for bit what the kernel gives for finite operands);
3. :func:`patch_specials` writes NaN over the outputs of rows or columns that held a NaN (a NaN
   product makes any sum NaN) and recomputes the outputs of rows or columns that held an
   infinity with the reference (where ``inf · 0`` and opposite infinities decide).

A diverged run, whose operands are all NaN, then costs about one finite GEMM and a few
elementwise passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from approxsim.multipliers.numformat import ROUNDINGS, operand_index
from approxsim.ops.reference import lut_bmm_ref

__all__ = ["Specials", "zero_specials", "patch_specials"]


@dataclass
class Specials:
    """Where the non-finite operands of a batched GEMM were (``S`` batches).

    Attributes:
        nan_rows: bool (S, R): the row of A holds a NaN.
        nan_cols: bool (S, N): the column of B holds a NaN.
        inf_rows: bool (S, R): the row of A holds an infinity (and no NaN).
        inf_cols: bool (S, N): the column of B holds an infinity (and no NaN).
    """

    nan_rows: Tensor
    nan_cols: Tensor
    inf_rows: Tensor
    inf_cols: Tensor

    @property
    def all_nan(self) -> bool:
        """Whether every output is NaN (every batch has all rows or all columns NaN)."""
        return bool((self.nan_rows.all(dim=1) | self.nan_cols.all(dim=1)).all())


def _special(x: Tensor, mantissa_bits: int, rounding: int) -> tuple[Tensor, Tensor]:
    """Masks of the operands the multiplier sees as NaN and as infinite."""
    bits = x.contiguous().view(torch.int32)
    _, _, _, is_inf, is_nan = operand_index(bits, mantissa_bits, ROUNDINGS[rounding])
    return is_nan, is_inf


def zero_specials(
    a: Tensor, b: Tensor, mantissa_bits: int, rounding: int
) -> tuple[Tensor, Tensor, Specials] | None:
    """``a`` and ``b`` with their non-finite operands replaced by zeros, and where they were.

    Args:
        a: float32 (S, R, K).
        b: float32 (S, K, N).
        mantissa_bits: M.
        rounding: 0 = truncate, 1 = nearest (nearest can make a finite operand infinite).

    Returns:
        ``(a0, b0, specials)``, or ``None`` when every operand is finite.
    """
    nan_a, inf_a = _special(a, mantissa_bits, rounding)
    nan_b, inf_b = _special(b, mantissa_bits, rounding)
    bad_a, bad_b = nan_a | inf_a, nan_b | inf_b
    if not (bool(bad_a.any()) or bool(bad_b.any())):
        return None
    nan_rows, nan_cols = nan_a.any(dim=2), nan_b.any(dim=1)
    specials = Specials(
        nan_rows=nan_rows,
        nan_cols=nan_cols,
        inf_rows=inf_a.any(dim=2) & ~nan_rows,
        inf_cols=inf_b.any(dim=1) & ~nan_cols,
    )
    return _zeroed(a, bad_a), _zeroed(b, bad_b), specials


def _zeroed(x: Tensor, mask: Tensor) -> Tensor:
    """``x`` with ``mask`` zeroed, in ``x``'s layout (the kernel's plan reads the strides, and
    the unaffected outputs must come out as they would for finite operands)."""
    out = torch.empty_like(x)  # keeps the strides of a dense tensor, e.g. a transposed view
    out.copy_(x)
    return out.masked_fill_(mask, 0.0)


def patch_specials(
    out: Tensor,
    a: Tensor,
    b: Tensor,
    lut_bits: Tensor,
    mantissa_bits: int,
    rounding: int,
    specials: Specials,
) -> None:
    """Correct, in place, the outputs that the non-finite operands of ``a`` and ``b`` reach.

    Args:
        out: float32 (S, R, N): the kernel's result on :func:`zero_specials`' operands.
        a: float32 (S, R, K): the original operand A.
        b: float32 (S, K, N): the original operand B.
        lut_bits: int32 flat LUT bits.
        mantissa_bits: M.
        rounding: 0 = truncate, 1 = nearest.
        specials: What :func:`zero_specials` recorded.
    """
    inf_batches = (specials.inf_rows.any(dim=1) | specials.inf_cols.any(dim=1)).nonzero()
    for s in inf_batches.flatten().tolist():
        rows = specials.inf_rows[s].nonzero().flatten()
        cols = specials.inf_cols[s].nonzero().flatten()
        if rows.numel():
            out[s, rows, :] = lut_bmm_ref(
                a[s, rows][None], b[s : s + 1], lut_bits, mantissa_bits, rounding
            )[0]
        if cols.numel():
            out[s, :, cols] = lut_bmm_ref(
                a[s : s + 1], b[s][:, cols][None], lut_bits, mantissa_bits, rounding
            )[0]
    nan = specials.nan_rows[:, :, None] | specials.nan_cols[:, None, :]
    out.masked_fill_(nan, float("nan"))
