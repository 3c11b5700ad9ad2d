"""The Numba kernel of ``approxsim::int_lut_bmm``, for machines without a C++ compiler.

The same exact sums as the compiled kernel (:mod:`._int_cpu`, :file:`_int_kernel.cc`), in two
ways chosen per problem by :func:`numba_int_plan`:

* the row gather of DESIGN §4 on integers: per tile of B's columns and k tile a table
  ``V[k, i, n] = table[i, b[k, n] - min]``, then each output row is a sum of the V rows A's
  values pick (contiguous adds, no per-product lookup); building V is repaid over A's rows;
* the direct kernel: one lookup per product in the table row A's value picks, cheaper where
  A has few rows (nothing is built).

Either may run on the transposed problem ``Cᵀ = Bᵀ·Aᵀ`` through the transposed table (the
same products), which suits few rows and many columns. Partial sums over a k tile are int32,
the k tile bounded by ``(2^31 - 1) / max|table|`` so they are exact, and are added into an
int32 or int64 result: the result equals the reference bit for bit.

The kernels are ``nogil`` functions compiled on first use and cached on disk, run on
approxsim's thread pool (:func:`._threads.run_jobs`) as the float Numba kernel
(:mod:`._numba`) is: never ``parallel=True``, whose OpenMP threading layer would map a
second OpenMP runtime beside torch's.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
from torch import Tensor

from approxsim.ops._scratch import buffer
from approxsim.ops._threads import run_jobs, split_range

__all__ = ["int_lut_bmm_numba", "numba_available", "numba_int_plan"]

#: Widest column tile.
N_TILE = 64
#: Target bytes of one V tile (int32 entries).
V_TILE_BYTES = 1 << 19
#: Rough per-thread costs in nanoseconds that rank the ways to run a problem (measured on a
#: 2-core AMD EPYC): one V entry, one column of a row-gather step and one direct product, on
#: tiles of at least :data:`MIN_COST_COLUMNS` columns (narrower tiles cost as much: their
#: loops are too short to vectorize well).
COST_V = 1.1
COST_STEP_COLUMN = 0.2
COST_DIRECT = 1.6
MIN_COST_COLUMNS = 32
#: Estimated work (ns on one thread) below which a call stays on the calling thread.
ONE_THREAD_NS = 200_000
_INT32_MAX = 2**31 - 1


@functools.cache
def numba_available() -> bool:
    """Whether Numba can be imported (it is a dependency, but an install may be broken)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def _gather_kernel():  # -> numba dispatcher, compiled on first use (cached on disk)
    """Compile (once) the row-gather worker."""
    import numba

    @numba.njit(cache=True, nogil=True)
    def gather(a, b, table, out, k_tile, n_tile, b_lo, b_hi, r_lo, r_hi, t_lo, t_hi, v, acc):
        # pragma: no cover - numba
        # a: int32 (B, R, K) table rows (values minus min); b: int32 (B, K, N) table columns;
        # table: int32 (S, S); out: int32 or int64 (B, R, N), written. Batches b_lo..b_hi,
        # rows r_lo..r_hi, column tiles t_lo..t_hi of n_tile columns. v: int32
        # (k_tile·S, n_tile) and acc: int32 (n_tile,), this worker's scratch.
        size = table.shape[0]
        n_k = a.shape[2]
        n_n = b.shape[2]
        for bi in range(b_lo, b_hi):
            for t in range(t_lo, t_hi):
                n0 = t * n_tile
                nt = min(n_tile, n_n - n0)
                for k0 in range(0, n_k, k_tile):
                    kt = min(k_tile, n_k - k0)
                    # V[kk·S + i, c] = table[i, b[k0 + kk, n0 + c]]: each V row is a gather
                    # from one table row (the table stays in cache, V is written in order).
                    for kk in range(kt):
                        ib = b[bi, k0 + kk, n0 : n0 + nt]
                        for i in range(size):
                            row = table[i]
                            vr = v[kk * size + i]
                            for c in range(nt):
                                vr[c] = row[ib[c]]
                    for r in range(r_lo, r_hi):
                        arow = a[bi, r, k0 : k0 + kt]
                        for c in range(nt):
                            acc[c] = 0
                        for kk in range(kt):
                            vr = v[kk * size + arow[kk]]
                            for c in range(nt):
                                acc[c] += vr[c]
                        orow = out[bi, r, n0 : n0 + nt]
                        if k0 == 0:
                            for c in range(nt):
                                orow[c] = acc[c]
                        else:
                            for c in range(nt):
                                orow[c] += acc[c]

    return gather


@functools.cache
def _direct_kernel():  # -> numba dispatcher
    """Compile (once) the direct worker."""
    import numba

    @numba.njit(cache=True, nogil=True)
    def direct(a, b, table, out, k_tile, n_tile, b_lo, b_hi, r_lo, r_hi, t_lo, t_hi, acc):
        # pragma: no cover - numba
        # The arguments of the row gather, without V: per (row, k) the table row A's value
        # picks, looked up at B's columns.
        n_k = a.shape[2]
        n_n = b.shape[2]
        for bi in range(b_lo, b_hi):
            for t in range(t_lo, t_hi):
                n0 = t * n_tile
                nt = min(n_tile, n_n - n0)
                for k0 in range(0, n_k, k_tile):
                    kt = min(k_tile, n_k - k0)
                    for r in range(r_lo, r_hi):
                        for c in range(nt):
                            acc[c] = 0
                        for kk in range(kt):
                            row = table[a[bi, r, k0 + kk]]
                            ib = b[bi, k0 + kk, n0 : n0 + nt]
                            for c in range(nt):
                                acc[c] += row[ib[c]]
                        orow = out[bi, r, n0 : n0 + nt]
                        if k0 == 0:
                            for c in range(nt):
                                orow[c] = acc[c]
                        else:
                            for c in range(nt):
                                orow[c] += acc[c]

    return direct


def numba_int_plan(r: int, k: int, n: int, rows: int) -> tuple[bool, bool, int, float]:
    """``(swap, direct, n_tile, estimated ns on one thread)`` for an ``r × k × n`` problem
    with a table of ``rows`` rows: the cheapest of the row gather and the direct kernel, on
    the problem as given or transposed, by :data:`COST_V`, :data:`COST_STEP_COLUMN` and
    :data:`COST_DIRECT`."""
    best: tuple[float, bool, bool, int] | None = None
    for swap, (rr, nn) in ((False, (r, n)), (True, (n, r))):
        nt = min(nn, N_TILE)
        cols = -(-nn // nt) * max(nt, MIN_COST_COLUMNS)
        gather = k * cols * (rows * COST_V + rr * COST_STEP_COLUMN)
        for direct, cost in ((False, gather), (True, rr * k * cols * COST_DIRECT)):
            if best is None or cost < best[0]:
                best = (cost, swap, direct, nt)
    assert best is not None
    return best[1], best[2], best[3], best[0]


def _indices(x: Tensor, min_value: int, rows: int) -> np.ndarray:
    """``x - min_value`` as a contiguous int32 array (any strides and integer dtype in),
    wrapped into the table: values outside it are the caller's to refuse first."""
    idx = torch.empty(x.shape, dtype=torch.int32)
    idx.copy_(x)
    idx.sub_(min_value).bitwise_and_(rows - 1)
    return idx.numpy()


def int_lut_bmm_numba(
    a: Tensor,
    b: Tensor,
    table: Tensor,
    min_value: int,
    acc_int64: bool,
    *,
    table_t: Tensor | None = None,
    maxabs: int | None = None,
    force: tuple[bool, bool] | None = None,
) -> Tensor:
    """Batched integer table matmul by the Numba kernels: ``(B, R, K) × (B, K, N)``.

    Args:
        a: Integer operand values, (B, R, K), any strides, no empty dimension, every value in
            ``[min_value, min_value + S)`` (the caller checks).
        b: Integer operand values, (B, K, N), likewise.
        table: int32 (S, S) products, S a power of two, row = A's value minus ``min_value``,
            no entry of ``-2^31``.
        min_value: The smallest operand value.
        acc_int64: Return int64 (else int32, which the caller guarantees cannot overflow).
        table_t: ``table`` transposed and contiguous, if the caller keeps one.
        maxabs: The largest entry magnitude, if the caller knows it.
        force: ``(swap, direct)`` overriding :func:`numba_int_plan` (tests).

    Returns:
        (B, R, N) int64 or int32, equal to :func:`~approxsim.ops.reference.int_lut_bmm_ref`.
    """
    nb, r, k = a.shape
    n = b.shape[-1]
    rows = table.shape[0]
    swap, direct, nt, cost = numba_int_plan(r, k, n, rows)
    if force is not None:
        swap, direct = force
        nt = min(r if swap else n, N_TILE)
    tab = table
    if swap:  # Cᵀ = Bᵀ·Aᵀ through the transposed table
        a, b = b.transpose(1, 2), a.transpose(1, 2)
        tab = table.t() if table_t is None else table_t
        r, n = n, r
    ai = _indices(a, min_value, rows)
    bi = _indices(b, min_value, rows)
    tab_np = tab.contiguous().numpy()
    out = torch.empty(nb, r, n, dtype=torch.int64 if acc_int64 else torch.int32)
    if maxabs is None:
        maxabs = max(abs(int(v)) for v in torch.aminmax(table))
    kt = k
    if not direct:
        kt = max(1, min(k, V_TILE_BYTES // (4 * rows * nt)))
        kt = -(-k // -(-k // kt))  # balanced: the last tile (almost) full
    if maxabs:
        kt = max(1, min(kt, _INT32_MAX // maxabs))
    n_tiles = -(-n // nt)
    workers = max(1, torch.get_num_threads())
    if nb * cost < ONE_THREAD_NS:
        workers = 1
    if n_tiles >= workers or workers == 1:
        parts = [(0, nb, 0, r, lo, hi) for lo, hi in split_range(n_tiles, workers)]
    elif nb >= workers:
        parts = [(lo, hi, 0, r, 0, n_tiles) for lo, hi in split_range(nb, workers)]
    else:
        parts = [(0, nb, lo, hi, 0, n_tiles) for lo, hi in split_range(r, workers)]
    head = (ai, bi, tab_np, out.numpy(), kt, nt)
    jobs: list[tuple[Any, ...]] = []
    for j, part in enumerate(parts):
        acc = buffer(f"int_numba_acc{j}", nt, torch.int32).numpy()
        if direct:
            jobs.append((*head, *part, acc))
        else:
            v = buffer(f"int_numba_v{j}", kt * rows * nt, torch.int32)
            jobs.append((*head, *part, v.view(kt * rows, nt).numpy(), acc))
    run_jobs(_direct_kernel() if direct else _gather_kernel(), jobs)
    return out.transpose(1, 2).contiguous() if swap else out
