"""CPU kernel of the approximate batched matmul: exact products through ``embedding_bag``.

Write operand A as ``a = sa · 2^ea · (1.ia)`` and fold everything that depends on B into a
table per tile of B's columns (DESIGN §4):

    V[k, i, n] = sb[k, n] · 2^(eb[k, n] - s) · LUT[i, ib[k, n]]        (2^M × K × N_tile floats)
    C[r, n]    = Σ_k  (sa[r, k] · 2^(ea[r, k] + s)) · V[k, ia[r, k], n]

Every factor is a power of two times a LUT value, assembled from bits, so each product is the
exact LUT product as long as no intermediate leaves the normal float32 range (the shift ``s``
is kept at 0, so the weights are plain ``sa · 2^ea``). The second line is exactly
``F.embedding_bag(mode="sum", per_sample_weights=...)`` over bags ``k·2^M + ia[r, k]``: a row
gather and a contiguous multiply-add, no per-product LUT lookup. Operand A is decoded and V is
built by small Numba kernels (compiled on first use, cached on disk).

When the exponents of a call could push a product (or V) out of the normal range, or an operand
is inf/NaN, the exact chunked reference runs instead — correct, slower, and rare in practice
(it needs values beyond about 2^±60 meeting in one product).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from approxsim.multipliers._float import ROUNDINGS, SIGN_BIT, operand_index
from approxsim.ops.reference import lut_bmm_ref

__all__ = ["lut_bmm_cpu", "plan_tiles"]

#: Target size of one V tile in bytes (a share of the per-core L2 cache).
V_TILE_BYTES = 1 << 20
#: Widest column tile; each gathered V row is this many contiguous floats.
_MAX_N_TILE = 64


def balanced_k_tile(k: int, n_tile: int, mantissa_bits: int) -> int:
    """The k tile that keeps one V tile (``k_tile · 2^M · n_tile`` floats) near
    :data:`V_TILE_BYTES`, balanced so the last tile is (almost) full."""
    k_max = max(1, min(k, V_TILE_BYTES // (4 * (1 << mantissa_bits) * n_tile)))
    n_kt = -(-k // k_max)
    return -(-k // n_kt)


def plan_tiles(k: int, n: int, mantissa_bits: int) -> tuple[int, int]:
    """``(k_tile, n_tile)`` of the Numba kernel (column tiles of any width up to 64)."""
    n_tile = max(1, min(n, _MAX_N_TILE))
    return balanced_k_tile(k, n_tile, mantissa_bits), n_tile


_BUFFERS: dict[tuple[int, str], Tensor] = {}
#: Buffers larger than this are not kept between calls.
_KEEP_BUFFER_BYTES = 1 << 28


def _buffer(name: str, numel: int, dtype: torch.dtype) -> Tensor:
    """A reusable flat buffer of ``numel`` elements, one per calling thread and ``name``.

    Fresh pages are expensive (first-touch page faults can cost more than the work done in
    them), so scratch space is kept between calls unless it is very large.
    """
    key = (threading.get_ident(), name)
    buf = _BUFFERS.get(key)
    if buf is None or buf.numel() < numel or buf.dtype != dtype:
        buf = torch.empty(numel, dtype=dtype)
        if buf.element_size() * numel <= _KEEP_BUFFER_BYTES:
            _BUFFERS[key] = buf
    return buf[:numel]


#: Tensors from :func:`recycled` at least this large are kept for reuse...
RECYCLE_MIN_BYTES = 4 << 20
#: ... up to this many bytes in all (idle ones are dropped, oldest first, to make room).
RECYCLE_MAX_BYTES = 2 << 30
#: ``(base, storage references when idle)`` of every kept tensor, oldest first.
_RECYCLED: list[tuple[Tensor, int]] = []
_RECYCLE_LOCK = threading.Lock()
#: Whether this torch can count a storage's references (a private API): without it nothing
#: is recycled.
_CAN_RECYCLE = hasattr(torch._C, "_storage_Use_Count")


def _storage_refs(t: Tensor) -> int:
    """References to ``t``'s storage: one per tensor or view over it, plus the temporary
    storage object this call makes (which is why an idle count is recorded, not assumed)."""
    return int(torch._C._storage_Use_Count(t.untyped_storage()._cdata))


def recycled(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> Tensor:
    """An uninitialised contiguous tensor like ``torch.empty(shape)``, whose memory may be
    that of an earlier one nothing refers to any more.

    For large temporaries allocated again and again, such as a convolution's patch matrix
    in training (kept by autograd until the backward pass, then dropped) and its gradient:
    the allocator returns such blocks to the system, and touching fresh pages costs more
    than writing them (about 23 ms of page faults for ResNet-18 layer1's 75 MB at batch 32).
    A kept block is handed out again only when no tensor or view (an autograd graph's saved
    tensors included) refers to its storage any more, so reuse is invisible to callers.
    """
    numel = 1
    for d in shape:
        numel *= d
    nbytes = numel * dtype.itemsize
    if not _CAN_RECYCLE or nbytes < RECYCLE_MIN_BYTES or nbytes > RECYCLE_MAX_BYTES:
        return torch.empty(shape, dtype=dtype)
    with _RECYCLE_LOCK:
        for base, idle in _RECYCLED:
            if base.numel() == numel and base.dtype == dtype and _storage_refs(base) == idle:
                return base.view(shape)
        held = sum(b.numel() * b.element_size() for b, _ in _RECYCLED)
        i = 0
        while held + nbytes > RECYCLE_MAX_BYTES and i < len(_RECYCLED):
            base, idle = _RECYCLED[i]
            if _storage_refs(base) == idle:
                del _RECYCLED[i]
                held -= base.numel() * base.element_size()
            else:
                i += 1
        base = torch.empty(numel, dtype=dtype)
        if held + nbytes <= RECYCLE_MAX_BYTES:
            _RECYCLED.append((base, _storage_refs(base)))
        return base.view(shape)


def release_kept_memory() -> None:
    """Drop the scratch buffers and recycled blocks kept between calls (what is in use stays
    alive with its users), e.g. before measuring how much memory one call needs."""
    with _RECYCLE_LOCK:
        _RECYCLED.clear()
    _BUFFERS.clear()


def _vbuf(worker: int, k_tile: int, rows: int, n_tile: int) -> Any:
    """Worker ``worker``'s private V buffer (float32, reused across calls)."""
    buf = _buffer(f"v{worker}", k_tile * rows * n_tile, torch.float32)
    return buf.view(k_tile * rows, n_tile).numpy()


_POOL: list[Any] = []


def _run(fn: Callable[..., None], jobs: list[tuple[Any, ...]]) -> None:
    """Run ``fn(*job)`` for each job: the first on this thread, the rest on the pool.

    The Numba kernels release the GIL and run on plain Python threads rather than Numba's own
    OpenMP pool: two OpenMP runtimes (Numba's and PyTorch's) spinning on two cores cost tens of
    milliseconds per hand-over.
    """
    if len(jobs) == 1:
        fn(*jobs[0])
        return
    if not _POOL:
        from concurrent.futures import ThreadPoolExecutor

        _POOL.append(ThreadPoolExecutor(max_workers=max(2, torch.get_num_threads())))
    futures = [_POOL[0].submit(fn, *job) for job in jobs[1:]]
    fn(*jobs[0])
    for f in futures:
        f.result()


def split_range(n: int, parts: int) -> list[tuple[int, int]]:
    """``[0, n)`` as at most ``parts`` contiguous ``(lo, hi)`` spans of (almost) equal size."""
    step = -(-n // max(1, min(parts, n)))
    return [(lo, min(n, lo + step)) for lo in range(0, n, step)]


def _parallel(fn: Callable[..., None], n: int, *args: Any) -> None:
    """Run ``fn(*args, lo, hi)`` over ``[0, n)`` split across torch's thread count."""
    workers = max(1, min(torch.get_num_threads(), n // 256 or 1))
    _run(fn, [(*args, lo, hi) for lo, hi in split_range(n, workers)])


@functools.cache
def _numba_decode():  # -> numba dispatcher, compiled on first use (cached on disk)
    """Compile (once) the fused decoder of operand A."""
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
                    if nearest and shift > 0 and e != 255:
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


def lut_bmm_cpu(
    a: Tensor,
    b: Tensor,
    lut_bits: Tensor,
    mantissa_bits: int,
    rounding: int,
    column_major: bool = False,
) -> Tensor:
    """Batched approximate matmul on CPU: ``(B, R, K) × (B, K, N) → (B, R, N)``, float32.

    Args:
        a: float32 (B, R, K).
        b: float32 (B, K, N).
        lut_bits: int32 flat LUT bits (``2^(2M)``), row = operand A's index.
        mantissa_bits: M.
        rounding: 0 = truncate, 1 = nearest.
        column_major: with the compiled kernel, return the transposed view of a contiguous
            (B, N, R) tensor (a layout request, not a promise: other paths return (B, R, N)).
    """
    nb, r, k = a.shape
    n = b.shape[-1]
    if r == 0 or n == 0 or k == 0 or nb == 0:
        return torch.zeros(nb, r, n, dtype=torch.float32)
    from approxsim.ops import _cpu_native

    lib = _cpu_native.load()
    if lib is not None:
        out, ranges = _cpu_native.lut_bmm_native(
            lib, a, b, lut_bits, mantissa_bits, rounding, column_major=column_major
        )
        for bi in unsafe_batches(ranges, lut_bits, v_over_a=True):
            sl = slice(bi, bi + 1)
            out[sl] = lut_bmm_ref(a[sl], b[sl], lut_bits, mantissa_bits, rounding)
        return out
    return _lut_bmm_numba(a, b, lut_bits, mantissa_bits, rounding)


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

    ``ranges`` is int32 (B, 6): per batch the biased exponent range of A's nonzero operands,
    whether A holds an inf/NaN, and the same for B. A batch is unsafe when it holds an inf/NaN
    or when some V entry ``2^eb · LUT`` (with ``v_over_a``, where the kernel may have swapped
    the operands, also ``2^ea · LUT``) or some product could leave the normal float range.
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


def _lut_bmm_numba(
    a: Tensor, b: Tensor, lut_bits: Tensor, mantissa_bits: int, rounding: int
) -> Tensor:
    """The Numba kernel (used where the compiled kernel cannot be built)."""
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
    scratch = _buffer("decoded_a", 2 * n_kt * r * k_tile, torch.int32)
    idx = scratch[: n_kt * r * k_tile].view(n_kt, r, k_tile)
    wbits = scratch[n_kt * r * k_tile :].view(n_kt, r, k_tile)
    stats = torch.empty(r, 3, dtype=torch.int32)
    if n_kt * k_tile != k:  # tail of the last tile: index 0 with weight +0 contributes 0
        idx[-1].zero_()
        wbits[-1].zero_()
    for bi in range(nb):
        ab = a[bi].contiguous().view(torch.int32)
        _parallel(
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
        _run(tiles, jobs)
    return out
