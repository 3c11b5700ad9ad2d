"""Triton GPU kernel of ``approxsim::int_lut_bmm``: integer operands through a product table.

:func:`triton_int_lut_bmm` computes ``(B, R, K) × (B, K, N) → (B, R, N)`` with
``out[r, n] = Σ_k table[a[r, k] - min, b[k, n] - min]``: each program owns a
``BLOCK_M × BLOCK_N`` output tile and, per block of K, gathers the ``BLOCK_M × BLOCK_K ×
BLOCK_N`` products from the table (global memory; a 256×256 int32 table is 256 KiB and stays
in L2) and sums them in int32 or int64. Integer sums are exact, so the result equals the
reference bit for bit whatever the summation order.

Operand values outside the table's range raise ``ValueError`` before the launch (one
``aminmax`` per operand, which synchronizes with the device).

This module imports triton at the top and is imported only when the CUDA kernel is first
needed (or by the tests, which run it on CPU tensors under ``TRITON_INTERPRET=1``).

Tuning notes: the block sizes are untimed defaults. The row-gather reformulation of the CPU
kernel (V tables over B in shared memory) is the natural next step on a GPU.
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
        "integer ops on CPU tensors instead."
    ) from exc

__all__ = ["triton_int_lut_bmm"]

#: CUDA caps grid axis 1 at 65535 programs; larger batches are split by the launcher.
_MAX_GRID_Y = 65535


@triton.jit
def _int_lut_bmm_kernel(
    a_ptr,
    b_ptr,
    t_ptr,
    c_ptr,
    R,
    K,
    N,
    sab,
    sar,
    sak,
    sbb,
    sbk,
    sbn,
    scb,
    scr,
    scn,
    min_value,
    SIZE: tl.constexpr,  # table side: 2^bits
    ACC64: tl.constexpr,  # accumulate in int64 (else int32)
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """One ``BLOCK_M × BLOCK_N`` tile of one batch: sums of gathered table products."""
    tiles_n = tl.cdiv(N, BLOCK_N)
    pid = tl.program_id(0)
    bi = tl.program_id(1).to(tl.int64)
    rm = (pid // tiles_n) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = (pid % tiles_n) * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = rm < R
    n_ok = rn < N
    if ACC64:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int64)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        k_ok = rk < K
        a = tl.load(
            a_ptr + bi * sab + rm[:, None] * sar + rk[None, :] * sak,
            mask=m_ok[:, None] & k_ok[None, :],
            other=min_value,
        )
        b = tl.load(
            b_ptr + bi * sbb + rk[:, None] * sbk + rn[None, :] * sbn,
            mask=k_ok[:, None] & n_ok[None, :],
            other=min_value,
        )
        ia = a.to(tl.int32) - min_value
        ib = b.to(tl.int32) - min_value
        idx = ia[:, :, None] * SIZE + ib[None, :, :]
        # Masked (padding) k contribute nothing; padding rows/columns are never stored.
        p = tl.load(t_ptr + idx, mask=k_ok[None, :, None], other=0)
        if ACC64:
            acc += tl.sum(p.to(tl.int64), axis=1)
        else:
            acc += tl.sum(p, axis=1)
    tl.store(
        c_ptr + bi * scb + rm[:, None] * scr + rn[None, :] * scn,
        acc,
        mask=m_ok[:, None] & n_ok[None, :],
    )


def _check_range(a: Tensor, b: Tensor, min_value: int, size: int) -> None:
    for name, x in (("a", a), ("b", b)):
        lo, hi = (int(v) for v in torch.aminmax(x))
        if lo < min_value or hi >= min_value + size:
            raise ValueError(
                f"approxsim: operand {name} holds values in [{lo}, {hi}], outside the "
                f"multiplier's operand range [{min_value}, {min_value + size - 1}]; "
                "quantize the operands to the multiplier's bits first"
            )


def triton_int_lut_bmm(
    a: Tensor,
    b: Tensor,
    table: Tensor,
    min_value: int,
    acc_int64: bool,
    block_m: int = 32,
    block_n: int = 32,
    block_k: int = 8,
) -> Tensor:
    """Batched integer table matmul on the device of ``a`` (CUDA, or CPU when interpreted).

    Args:
        a: Integer operand values, (B, R, K).
        b: Integer operand values, (B, K, N).
        table: int32 (S, S) products, row = A's value minus ``min_value``.
        min_value: The smallest operand value.
        acc_int64: Accumulate and return int64 (else int32).
        block_m: Rows per program.
        block_n: Columns per program.
        block_k: K per step (the product tile is ``block_m × block_k × block_n``).

    Returns:
        (B, R, N) int32 or int64.

    Raises:
        ValueError: an operand value outside the table's range.
    """
    nb, r, k = a.shape
    n = b.shape[2]
    dtype = torch.int64 if acc_int64 else torch.int32
    out = torch.zeros(nb, r, n, dtype=dtype, device=a.device)
    if out.numel() == 0 or k == 0:
        return out
    size = table.shape[0]
    _check_range(a, b, min_value, size)
    table = table.to(torch.int32).contiguous()
    tiles = triton.cdiv(r, block_m) * triton.cdiv(n, block_n)
    for b0 in range(0, nb, _MAX_GRID_Y):
        b1 = min(nb, b0 + _MAX_GRID_Y)
        sa, sb, sc = a[b0:b1], b[b0:b1], out[b0:b1]
        _int_lut_bmm_kernel[(tiles, b1 - b0)](
            sa, sb, table, sc, r, k, n,
            *sa.stride(), *sb.stride(), *sc.stride(),
            min_value,
            SIZE=size, ACC64=acc_int64,
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
        )  # fmt: skip
    return out
