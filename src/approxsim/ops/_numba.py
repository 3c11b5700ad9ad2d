"""The Numba CPU kernel: the row gather of DESIGN §4, for machines without a C++ compiler.

Write operand A as ``a = sa · 2^ea · (1.ia)`` and fold everything that depends on B into a
table per tile of B's columns:

    V[k, i, n] = sb[k, n] · 2^eb[k, n] · LUT[i, ib[k, n]]        (2^M × K × N_tile floats)
    C[r, n]    = Σ_k  (sa[r, k] · 2^ea[r, k]) · V[k, ia[r, k], n]

Every factor is a power of two times a LUT value, assembled from bits, so each product is the
exact LUT product as long as no intermediate leaves the normal float32 range (batches where one
could are left to the reference, see :mod:`._ranges`). The second line is a row gather and a
contiguous multiply-add, no per-product LUT lookup. Operand A is decoded and V is built by two
small Numba kernels, compiled on first use and cached on disk; operand B is decoded by the
number format's own :func:`~approxsim.multipliers.numformat.operand_index`.

The compiled C++ kernel (:mod:`._cpu_native`) does the same faster and is preferred; this one
runs where it cannot be built, or when ``APPROXSIM_CPU_KERNEL=numba`` asks for it.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
from torch import Tensor

from approxsim.multipliers.numformat import ROUNDINGS, SIGN_BIT, operand_index
from approxsim.ops._ranges import unsafe_batches
from approxsim.ops._scratch import buffer
from approxsim.ops._threads import parallel, run_jobs
from approxsim.ops._tiling import balanced_k_tile
from approxsim.ops.reference import lut_bmm_ref

__all__ = ["lut_bmm_numba", "plan_tiles"]

#: Widest column tile; each gathered V row is this many contiguous floats.
_MAX_N_TILE = 64


def plan_tiles(k: int, n: int, mantissa_bits: int) -> tuple[int, int]:
    """The tiles of the Numba kernel (column tiles of any width up to 64).

    Args:
        k: Length of the reduction.
        n: Columns of the output.
        mantissa_bits: M.

    Returns:
        ``(k_tile, n_tile)``.
    """
    n_tile = max(1, min(n, _MAX_N_TILE))
    return balanced_k_tile(k, n_tile, mantissa_bits), n_tile


def _vbuf(worker: int, k_tile: int, rows: int, n_tile: int) -> Any:
    """Worker ``worker``'s private V buffer (float32, reused across calls)."""
    buf = buffer(f"v{worker}", k_tile * rows * n_tile, torch.float32)
    return buf.view(k_tile * rows, n_tile).numpy()


@functools.cache
def _numba_decode():  # -> numba dispatcher, compiled on first use (cached on disk)
    """Compile (once) the fused decoder of operand A: the rules of
    :func:`approxsim.multipliers.numformat.operand_index`, one operand at a time (kept equal
    to it by tests/ops/test_kernel_parity.py)."""
    import numba

    @numba.njit(cache=True, nogil=True)
    def decode(abits, m, nearest, k_tile, idx_out, w_out, stats, r_lo, r_hi):  # pragma: no cover
        # abits: int32 (R, K) float bits of A; m: mantissa bits; nearest: 1 rounds to nearest.
        # idx_out: int32 (T, R, k_tile), T = ceil(K / k_tile): (k mod k_tile)·2^M + ia.
        # w_out: int32 (T, R, k_tile): bits of sa·2^(ea-127), or a signed zero.
        # stats: int32 (R, 3): min and max exponent field of nonzero operands, special flag.
        n_k = abits.shape[1]
        shift = 23 - m
        rows = 1 << m
        half = (1 << (shift - 1)) - 1 if shift > 0 else 0
        n_tiles = idx_out.shape[0]
        for r in range(r_lo, r_hi):
            lo = 255
            hi = 0
            special = 0
            for t in range(n_tiles):
                k0 = t * k_tile
                for kk in range(min(k_tile, n_k - k0)):
                    x = abits[r, k0 + kk]
                    sign = x & -2147483648
                    mag = x & 0x7FFFFFFF
                    e = mag >> 23
                    # Zeros and subnormals are flushed as given (DESIGN §2): rounding must not
                    # carry one near the top of the subnormal range into exponent 1.
                    if nearest and shift > 0 and e != 255 and e != 0:
                        mag = ((mag + half + ((mag >> shift) & 1)) >> shift) << shift
                        e = mag >> 23
                    ok = (e != 0) & (e != 255)
                    special |= e == 255
                    idx_out[t, r, kk] = kk * rows + (((mag & 0x7FFFFF) >> shift) if ok else 0)
                    w_out[t, r, kk] = sign | ((e << 23) if ok else 0)
                    if ok:
                        lo = min(lo, e)
                        hi = max(hi, e)
            stats[r, 0] = lo
            stats[r, 1] = hi
            stats[r, 2] = special

    return decode


@functools.cache
def _numba_tiles():  # -> numba dispatcher
    """Compile (once) the worker that builds V tiles and runs the row gathers over them."""
    import numba

    @numba.njit(cache=True, nogil=True)
    def tiles(idx, w, lut_t, scale, ib, out, k_tile, n_tile, t_lo, t_hi, r_lo, r_hi, v):
        # pragma: no cover - numba
        # idx: int32 (T, R, k_tile) rows of V; w: float32 (T, R, k_tile) weights sa·2^(ea-127)
        # (0 for zero operands and padding). lut_t: float32 (2^M, 2^M) transposed LUT
        # (lut_t[j, i] = LUT[i, j]). scale: float32
        # (K, N) sb·2^(eb-127) of operand B (a signed zero for zero operands); ib: int32 (K, N)
        # its LUT index. out: float32 (R, N), accumulated in place. Column tiles t_lo..t_hi,
        # rows r_lo..r_hi. v: float32 (k_tile·2^M, n_tile) private V buffer of this worker.
        rows = lut_t.shape[0]
        n_k, n_n = scale.shape
        n_kt = idx.shape[0]
        acc = np.empty(n_tile, dtype=np.float32)
        for nti in range(t_lo, t_hi):
            n0 = nti * n_tile
            nt = min(n_tile, n_n - n0)
            for t in range(n_kt):
                k0 = t * k_tile
                kt = min(k_tile, n_k - k0)
                # V[kk·2^M + i, c] = (sb·2^(eb-127)) · LUT[i, ib] for k = k0 + kk, n = n0 + c:
                # a float multiply by a power of two (or a signed zero), exact here because
                # the caller checked that every V entry is a normal float.
                for kk in range(kt):
                    k = k0 + kk
                    for c in range(nt):
                        # Column c of V's block kk: LUT column ib (a row of lutT), scaled.
                        sc = scale[k, n0 + c]
                        col = lut_t[ib[k, n0 + c]]
                        for i in range(rows):
                            v[kk * rows + i, c] = col[i] * sc
                # C[r, n0:n0+nt] += Σ_kk w[r, kk] · V[idx[r, kk], :], four k at a time so the
                # accumulator's add chain is a quarter as long (the sum order is the kernel's
                # choice; every product is still exact). Padding has weight +0 and a V row of
                # finite values, so it adds exactly zero.
                k4 = kt - kt % 4
                for r in range(r_lo, r_hi):
                    for c in range(nt):
                        acc[c] = 0.0
                    for kk in range(0, k4, 4):
                        w0 = w[t, r, kk]
                        w1 = w[t, r, kk + 1]
                        w2 = w[t, r, kk + 2]
                        w3 = w[t, r, kk + 3]
                        v0 = v[np.uint64(idx[t, r, kk])]
                        v1 = v[np.uint64(idx[t, r, kk + 1])]
                        v2 = v[np.uint64(idx[t, r, kk + 2])]
                        v3 = v[np.uint64(idx[t, r, kk + 3])]
                        for c in range(nt):
                            acc[c] += (w0 * v0[c] + w1 * v1[c]) + (w2 * v2[c] + w3 * v3[c])
                    for kk in range(k4, kt):
                        wv = w[t, r, kk]
                        vr = v[np.uint64(idx[t, r, kk])]
                        for c in range(nt):
                            acc[c] += wv * vr[c]
                    o = out[r]
                    for c in range(nt):
                        o[n0 + c] += acc[c]

    return tiles


def lut_bmm_numba(
    a: Tensor, b: Tensor, lut_bits: Tensor, mantissa_bits: int, rounding: int
) -> Tensor:
    """Batched approximate matmul by the Numba kernel: ``(B, R, K) × (B, K, N) → (B, R, N)``.

    Batches the row gather cannot compute exactly (see :func:`._ranges.unsafe_batches`) run
    the reference instead.

    Args:
        a: float32 (B, R, K), any strides, no empty dimension.
        b: float32 (B, K, N), any strides.
        lut_bits: int32 flat LUT bits (``2^(2M)``), row = operand A's index.
        mantissa_bits: M.
        rounding: 0 = truncate, 1 = nearest.

    Returns:
        float32 (B, R, N).
    """
    nb, r, k = a.shape
    n = b.shape[-1]
    out = torch.zeros(nb, r, n, dtype=torch.float32)
    m = mantissa_bits
    rows = 1 << m
    k_tile, n_tile = plan_tiles(k, n, m)
    n_kt = -(-k // k_tile)
    lut2 = lut_bits.view(rows, rows)
    decode = _numba_decode()
    tiles = _numba_tiles()
    lut_t = lut2.view(torch.float32).t().contiguous().numpy()
    bb_all = b.contiguous().view(torch.int32)
    eb_all, ib_all, zb_all, inf_b, nan_b = operand_index(bb_all, m, ROUNDINGS[rounding])
    # Scratch for the decoded A, reused across the batch and across calls.
    scratch = buffer("decoded_a", 2 * n_kt * r * k_tile, torch.int32)
    idx = scratch[: n_kt * r * k_tile].view(n_kt, r, k_tile)
    wbits = scratch[n_kt * r * k_tile :].view(n_kt, r, k_tile)
    stats = torch.empty(r, 3, dtype=torch.int32)
    if n_kt * k_tile != k:  # tail of the last tile: index 0 with weight +0 contributes 0
        idx[-1].zero_()
        wbits[-1].zero_()
    for bi in range(nb):
        ab = a[bi].contiguous().view(torch.int32)
        parallel(
            decode, r, ab.numpy(), m, rounding, k_tile, idx.numpy(), wbits.numpy(), stats.numpy()
        )
        eb = torch.where(zb_all[bi], 255, eb_all[bi])  # zero operands leave the range alone
        ranges = torch.stack(
            [
                stats[:, 0].min(), stats[:, 1].max(), stats[:, 2].max(),
                eb.min(), eb_all[bi].masked_fill(zb_all[bi], 0).max(),
                (inf_b[bi] | nan_b[bi]).any().to(torch.int32),
            ]
        ).to(torch.int32)  # fmt: skip
        if len(unsafe_batches(ranges[None], lut_bits, v_over_a=False)):
            out[bi] = lut_bmm_ref(a[bi : bi + 1], b[bi : bi + 1], lut_bits, m, rounding)[0]
            continue
        if ranges[0] > ranges[1] or ranges[3] > ranges[4]:
            continue  # an all-zero operand: every product is a signed zero
        w = wbits.view(torch.float32)
        outn = out[bi].numpy()
        sign_b = bb_all[bi] & SIGN_BIT
        scale_bits = torch.where(zb_all[bi], sign_b, sign_b | (eb_all[bi] << 23))
        scale = scale_bits.view(torch.float32).numpy()
        ibn = ib_all[bi].numpy()
        n_nt = -(-n // n_tile)
        workers = max(1, torch.get_num_threads())
        args = (idx.numpy(), w.numpy(), lut_t, scale, ibn, outn, k_tile, n_tile)
        if n_nt >= workers or workers == 1 or r < 2 * workers:
            # Split the column tiles: each worker owns its output columns and its V buffers.
            per = -(-n_nt // workers)
            jobs = [
                (*args, lo, min(n_nt, lo + per), 0, r, _vbuf(j, k_tile, rows, n_tile))
                for j, lo in enumerate(range(0, n_nt, per))
            ]
        else:
            # Few column tiles, many rows: split the rows; each worker builds its own V.
            step = -(-r // workers)
            jobs = [
                (*args, 0, n_nt, lo, min(r, lo + step), _vbuf(j, k_tile, rows, n_tile))
                for j, lo in enumerate(range(0, r, step))
            ]
        run_jobs(tiles, jobs)
    return out
