"""Pure-PyTorch reference implementations of the approximate ops (the specification).

Every product goes through :func:`approxsim.multipliers.numformat.lut_product`, so results are
bit-identical per product to the multiplier; sums are float32 over K in order. Work is chunked
so memory stays bounded (about ``_CHUNK`` products at a time) whatever the problem size. Slow
by design: the fast kernels are tested against these. The integer table matmul
(:func:`int_lut_bmm_ref`) sums exactly in int32 or int64.
"""

from __future__ import annotations

import torch
from torch import Tensor

from approxsim.multipliers.numformat import ROUNDINGS, lut_product

__all__ = ["int_lut_bmm_ref", "lut_bmm_ref", "lut_mul_ref", "lut_products_ref"]

#: Products materialized at once by the reference matmul (4M floats = 16 MiB).
_CHUNK = 1 << 22


def lut_mul_ref(
    a: Tensor, b: Tensor, lut_bits: Tensor, mantissa_bits: int, rounding: int
) -> Tensor:
    """Elementwise approximate product (broadcasting), float32."""
    return lut_product(a.float(), b.float(), lut_bits, mantissa_bits, ROUNDINGS[rounding])


def lut_products_ref(
    a: Tensor, b: Tensor, lut_bits: Tensor, mantissa_bits: int, rounding: int
) -> Tensor:
    """All products ``P[b, r, k, n] = a[b, r, k] ⊗ b[b, k, n]`` (for tests; unbounded memory)."""
    return lut_product(
        a.float()[..., :, :, None],
        b.float()[..., None, :, :],
        lut_bits,
        mantissa_bits,
        ROUNDINGS[rounding],
    )


def lut_bmm_ref(
    a: Tensor, b: Tensor, lut_bits: Tensor, mantissa_bits: int, rounding: int
) -> Tensor:
    """Batched approximate matmul: ``(B, R, K) × (B, K, N) → (B, R, N)``, float32.

    ``out[b, r, n] = Σ_k a[b, r, k] ⊗ b[b, k, n]`` with float32 accumulation, chunked over
    rows and K so at most about ``_CHUNK`` products exist at a time.
    """
    a = a.float()
    b = b.float()
    nb, r, k = a.shape
    n = b.shape[-1]
    out = torch.zeros(nb, r, n, dtype=torch.float32, device=a.device)
    if r == 0 or n == 0 or k == 0:
        return out
    k_step = max(1, min(k, _CHUNK // max(n, 1)))
    r_step = max(1, _CHUNK // (k_step * n))
    rnd = ROUNDINGS[rounding]
    for bi in range(nb):
        for r0 in range(0, r, r_step):
            acc = out[bi, r0 : r0 + r_step]
            for k0 in range(0, k, k_step):
                pa = a[bi, r0 : r0 + r_step, k0 : k0 + k_step, None]
                pb = b[bi, None, k0 : k0 + k_step, :]
                acc += lut_product(pa, pb, lut_bits, mantissa_bits, rnd).sum(dim=1)
    return out


def int_lut_bmm_ref(a: Tensor, b: Tensor, table: Tensor, min_value: int, acc_int64: bool) -> Tensor:
    """Batched integer table matmul: ``(B, R, K) × (B, K, N) → (B, R, N)``, exact.

    ``out[b, r, n] = Σ_k table[a[b, r, k] - min_value, b[b, k, n] - min_value]``, summed in
    int64 when ``acc_int64`` else int32 (the caller guarantees int32 cannot overflow), chunked
    over rows and K so at most about ``_CHUNK`` products exist at a time. Integer sums are
    exact, so every kernel must equal this bit for bit.

    Args:
        a: Integer operand values, (B, R, K).
        b: Integer operand values, (B, K, N).
        table: int32 (S, S) products, row = operand A's value minus ``min_value``.
        min_value: The smallest operand value (row and column 0 of the table).
        acc_int64: Accumulate (and return) int64 instead of int32.

    Returns:
        (B, R, N) int64 or int32.

    Raises:
        ValueError: an operand value outside ``[min_value, min_value + S)``.
    """
    acc = torch.int64 if acc_int64 else torch.int32
    nb, r, k = a.shape
    n = b.shape[-1]
    size = table.shape[0]
    out = torch.zeros(nb, r, n, dtype=acc, device=a.device)
    if r == 0 or n == 0 or k == 0 or nb == 0:
        return out
    for name, x in (("a", a), ("b", b)):
        lo, hi = (int(v) for v in torch.aminmax(x))
        if lo < min_value or hi >= min_value + size:
            raise ValueError(
                f"approxsim: operand {name} holds values in [{lo}, {hi}], outside the "
                f"multiplier's operand range [{min_value}, {min_value + size - 1}]"
            )
    flat = table.reshape(-1).to(acc)
    k_step = max(1, min(k, _CHUNK // max(n, 1)))
    r_step = max(1, _CHUNK // (k_step * n))
    for bi in range(nb):
        ib = b[bi].long() - min_value  # (K, N)
        for r0 in range(0, r, r_step):
            acc_rows = out[bi, r0 : r0 + r_step]
            for k0 in range(0, k, k_step):
                ia = a[bi, r0 : r0 + r_step, k0 : k0 + k_step].long() - min_value
                idx = ia[:, :, None] * size + ib[None, k0 : k0 + k_step, :]
                acc_rows += flat[idx].sum(dim=1, dtype=acc)
    return out
