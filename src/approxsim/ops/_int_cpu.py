"""The CPU kernel of ``approxsim::int_lut_bmm``: :file:`_int_kernel.cc`, built on first use.

The source is compiled like the float kernel (:mod:`._cpu_native`: the same compiler, flags
and cache section, its own cache key) and called through ctypes; its blocks run on torch's
OpenMP threads, else on approxsim's thread pool (:mod:`._threads`). It runs DESIGN §4's row
gather on integers: per tile of B's columns a table
``V[k, i, n] = table[i, b[k, n] - min]``, then each output row is a sum of V rows picked by
A's values — contiguous int32 vector adds, no per-product lookup. The sums are exact (int32
partial sums over k tiles bounded by ``(2^31 - 1) / max|table|``, added into an int32 or int64
result), so the result equals the reference bit for bit.

For few rows (fewer than the table has) a direct kernel looks every product up in the table
row A's value picks instead, building nothing; :func:`int_plan` picks the cheaper of the two
ways, on the problem as given or transposed.

Where the kernel cannot be built (no C++ compiler, an untrusted cache) the Numba kernel of
:mod:`._int_numba` runs instead, with one warning (the chunked reference only where Numba
cannot be imported either); ``APPROXSIM_CPU_KERNEL=numba`` asks for the Numba kernel,
``=native`` makes a failing build an error.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from approxsim.ops._cpu_native import (
    ONE_THREAD_NS_OPENMP,
    KernelBuildError,
    load_kernel_library,
    load_or_fall_back,
    uses_openmp,
)
from approxsim.ops._int_numba import int_lut_bmm_numba, numba_available
from approxsim.ops._scratch import buffer
from approxsim.ops._threads import run_jobs, split_blocks
from approxsim.ops.reference import int_lut_bmm_ref

__all__ = ["int_lut_bmm_cpu", "int_plan", "load_int_kernel"]

SOURCE = Path(__file__).with_name("_int_kernel.cc")
#: Column tile widths the kernel is compiled for.
N_TILES = (8, 16, 32, 64)
#: The kernel's element-type codes.
_KINDS = {torch.int8: 0, torch.uint8: 1, torch.int16: 2, torch.int32: 3, torch.int64: 4}
#: Rough per-thread costs in nanoseconds (they only rank the ways to run a problem, see
#: :func:`int_plan`): one V entry, and one row step of ``n_tile`` int32 columns.
COST_V = 0.15
COST_STEP = {8: 1.0, 16: 1.5, 32: 2.5, 64: 4.5}
#: Target bytes of one V tile. Larger than the float kernel's (:mod:`._tiling`): each output
#: row is read and written once per k tile, and measured on Zen 3 fewer, larger tiles win
#: although they spill from L2.
V_TILE_BYTES = 1 << 20
#: ... but for column tiles narrower than 64, whose steps read half a cache line or less at
#: random from V, tiles that stay in L2 (measured 1.3-1.6x faster on Zen 3 for LeNet-5's conv2
#: GEMM, 3200×150×16, and a 1024×400×32 GEMM).
V_TILE_BYTES_NARROW = 1 << 17
#: Estimated work (ns on one thread) below which a call stays on the calling thread (on
#: approxsim's thread pool; the float kernel's ``ONE_THREAD_NS_OPENMP`` where the kernel runs
#: on torch's OpenMP team, if lower).
ONE_THREAD_NS = 200_000
#: Per product (ns on one thread) of the direct kernel, and the largest table it serves (its
#: rows are looked up at random: a 256 × 256 table of 16-bit entries stays in L2).
COST_DIRECT = 0.6
DIRECT_MAX_ROWS = 256
#: k tile of the direct kernel (B's column indices of a tile stay in L1).
DIRECT_K_TILE = 256
_INT32_MAX = 2**31 - 1

_ARGTYPES: list[Any] = [
    ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,  # a
    ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,  # b
    ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,  # c
    ctypes.c_int64, ctypes.c_int64,  # K, N
    ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int64,  # tableᵀ, table, rows, min
    ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,  # batches, rows
    ctypes.c_int64, ctypes.c_int64, ctypes.c_int, ctypes.c_int,  # tiles, n_tile, k_tile
    ctypes.c_int, ctypes.c_int, ctypes.c_void_p,  # V's entry type, direct, work
]  # fmt: skip


@functools.cache
def _load_library() -> Any:
    lib = load_kernel_library(SOURCE, "integer CPU kernel")
    uses_openmp(lib)
    lib.approxsim_int_gemm.argtypes = _ARGTYPES
    lib.approxsim_int_gemm.restype = ctypes.c_int
    lib.approxsim_int_work.argtypes = [ctypes.c_int] * 5
    lib.approxsim_int_work.restype = ctypes.c_int64
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.approxsim_int_gemm_parts.argtypes = [
        *_ARGTYPES[:21], p, i64, i32, i32, i32, i32, p, i64, p, i32,
    ]  # fmt: skip
    lib.approxsim_int_gemm_parts.restype = None
    return lib


_WARNED: list[bool] = []


def load_int_kernel() -> Any | None:
    """The loaded integer kernel library, or ``None`` where the Numba kernel (or, without
    Numba, the reference) must run instead.

    Raises:
        KernelBuildError: the build failed and ``APPROXSIM_CPU_KERNEL=native`` asked for it.
    """

    def describe(exc: KernelBuildError) -> str:
        instead = (
            "the slower Numba integer kernel runs instead"
            if numba_available()
            else "integer multipliers run the much slower reference"
        )
        return (
            f"approxsim: the compiled integer CPU kernel is unavailable ({exc}); {instead} "
            "(results are the same). Install a C++ compiler (Debian/Ubuntu: apt-get "
            "install g++) for full speed."
        )

    return load_or_fall_back(_load_library, _WARNED, describe)


@dataclass(frozen=True)
class _TableInfo:
    """What the kernel needs of one table (cached per tensor: a multiplier's table is
    immutable)."""

    #: The table itself (the cache key's referent).
    table: Tensor
    #: Transposed and contiguous, int32.
    table_t: Tensor
    #: The largest entry magnitude.
    maxabs: int
    #: V's entry type: the narrowest that holds every entry exactly, 1 = uint16, 2 = int16,
    #: else 0 = int32 (16-bit entries halve the memory the row gather streams).
    v_kind: int
    #: The table followed by its transpose, flat, in V's entry type, and the transpose
    #: followed by the table (the kernel's ``table_d`` for the problem as given and swapped:
    #: the direct kernel reads the first half, the row gather builds 16-bit V tiles from the
    #: second). Kept for tables of 16-bit entries or of at most :data:`DIRECT_MAX_ROWS` rows.
    narrow: tuple[Tensor, Tensor] | None


_TABLE_INFO: dict[int, _TableInfo] = {}
_V_DTYPES = {0: torch.int32, 1: torch.uint16, 2: torch.int16}


def _table_info(table: Tensor) -> _TableInfo:
    """The cached :class:`_TableInfo` of an int32 table."""
    hit = _TABLE_INFO.get(id(table))
    if hit is not None and hit.table is table:
        return hit
    lo, hi = (int(v) for v in torch.aminmax(table))
    v_kind = 1 if lo >= 0 and hi < 1 << 16 else 2 if lo >= -(1 << 15) and hi < 1 << 15 else 0
    table_t = table.t().contiguous()
    narrow = None
    if table.shape[0] <= DIRECT_MAX_ROWS or v_kind:
        flat = table.reshape(-1).to(_V_DTYPES[v_kind])
        flat_t = table_t.reshape(-1).to(_V_DTYPES[v_kind])
        narrow = (torch.cat([flat, flat_t]), torch.cat([flat_t, flat]))
    info = _TableInfo(table, table_t, max(abs(lo), abs(hi)), v_kind, narrow)
    if len(_TABLE_INFO) >= 16:
        _TABLE_INFO.clear()
    _TABLE_INFO[id(table)] = info
    return info


def _n_tile(cols: int) -> int:
    return next((t for t in N_TILES if t >= cols), N_TILES[-1])


def _k_tile(k: int, n_tile: int, rows: int, v_bytes: int) -> int:
    """The k tile that keeps one V tile near :data:`V_TILE_BYTES` (or for tiles narrower than
    64 columns :data:`V_TILE_BYTES_NARROW`, as long as that leaves eight k per tile),
    balanced so the last tile of the reduction is (almost) full."""
    per_k = v_bytes * rows * n_tile
    budget = V_TILE_BYTES
    if n_tile < N_TILES[-1]:
        budget = min(budget, max(V_TILE_BYTES_NARROW, 8 * per_k))
    k_max = max(1, min(k, budget // per_k))
    n_kt = -(-k // k_max)
    return -(-k // n_kt)


def int_plan(r: int, k: int, n: int, rows: int) -> tuple[bool, int, int, float]:
    """``(swap, direct, n_tile, estimated ns on one thread)`` for an ``r × k × n`` problem
    with a table of ``rows`` rows.

    The row gather builds V over B (``rows · K · N`` entries), repaid over A's rows; the
    direct kernel (``direct`` 1; tables of at most :data:`DIRECT_MAX_ROWS` rows) looks every
    product up and pays where A has fewer rows than the table. With ``swap`` the kernel
    computes ``Cᵀ = Bᵀ·Aᵀ`` through the transposed table (the same products), which suits
    few rows and many columns. The cheapest of the four by :data:`COST_V`,
    :data:`COST_STEP` and :data:`COST_DIRECT` is chosen (``direct`` 0 = row gather).
    """
    best: tuple[float, bool, int, int] | None = None
    for swap, (rr, nn) in ((False, (r, n)), (True, (n, r))):
        nt = _n_tile(nn)
        tiles = -(-nn // nt)
        options = [(k * tiles * (rows * nt * COST_V + rr * COST_STEP[nt]), 0)]
        if rows <= DIRECT_MAX_ROWS:
            groups = tiles * -(-min(nn, nt) // 8)  # eight columns per group, padded
            options.append((rr * k * groups * 8 * COST_DIRECT, 1))
        for cost, direct in options:
            if best is None or cost < best[0]:
                best = (cost, swap, direct, nt)
    assert best is not None
    return best[1], best[2], best[3], best[0]


def int_lut_bmm_cpu(
    a: Tensor,
    b: Tensor,
    table: Tensor,
    min_value: int,
    acc_int64: bool,
    *,
    force: tuple[bool, int] | None = None,
) -> Tensor:
    """Batched integer table matmul on CPU: ``(B, R, K) × (B, K, N) → (B, R, N)``.

    Runs the compiled kernel, else the Numba kernel (:mod:`._int_numba`), else the reference.

    Args:
        a: Integer operand values, (B, R, K), any strides.
        b: Integer operand values, (B, K, N), any strides.
        table: int32 (S, S) products (S a power of two), row = A's value minus ``min_value``.
        min_value: The smallest operand value.
        acc_int64: Return int64 (else int32, which the caller guarantees cannot overflow).
        force: ``(swap, direct)`` overriding :func:`int_plan` in the compiled kernel (tests;
            ``direct`` 0 = row gather, 1 = direct).

    Returns:
        (B, R, N) int64 or int32, equal to :func:`~approxsim.ops.reference.int_lut_bmm_ref`.

    Raises:
        ValueError: an operand value outside the table's range.
        KernelBuildError: the kernel cannot be built and ``APPROXSIM_CPU_KERNEL=native``.
    """
    nb, r, k = a.shape
    n = b.shape[-1]
    rows = table.shape[0]
    if min(nb, r, k, n) == 0 or rows & (rows - 1):
        return int_lut_bmm_ref(a, b, table, min_value, acc_int64)
    lib = load_int_kernel()
    if lib is None:
        return _int_lut_bmm_fallback(a, b, table, min_value, acc_int64)
    info = _table_info(table.contiguous())
    if info.maxabs > _INT32_MAX:
        return int_lut_bmm_ref(a, b, table, min_value, acc_int64)  # an entry of -2^31
    return _int_lut_bmm_native(lib, a, b, info, min_value, acc_int64, force)


def _int_lut_bmm_native(
    lib: Any,
    a: Tensor,
    b: Tensor,
    info: _TableInfo,
    min_value: int,
    acc_int64: bool,
    force: tuple[bool, int] | None,
) -> Tensor:
    """The compiled kernel's part of :func:`int_lut_bmm_cpu` (non-empty operands)."""
    nb, r, k = a.shape
    n = b.shape[-1]
    rows = info.table.shape[0]
    maxabs, v_kind = info.maxabs, info.v_kind
    if a.dtype not in _KINDS:
        a = a.long()
    if b.dtype not in _KINDS:
        b = b.long()
    out = torch.empty(nb, r, n, dtype=torch.int64 if acc_int64 else torch.int32)
    swap, direct, nt, cost = int_plan(r, k, n, rows)
    if force is not None:
        swap, direct = force
        nt = _n_tile(n if not swap else r)
        if direct and rows > DIRECT_MAX_ROWS:
            raise ValueError(f"no direct integer kernel for tables of {rows} rows")
    tab_t = info.table_t
    c = out
    if swap:  # Cᵀ = Bᵀ·Aᵀ with tableᵀ, written through out's transpose
        a, b, c = b.transpose(1, 2), a.transpose(1, 2), out.transpose(1, 2)
        tab_t = info.table
        r, n = n, r
    tab_d = 0 if info.narrow is None else info.narrow[int(swap)].data_ptr()
    v_bytes = 4 if v_kind == 0 else 2
    kt = max(1, min(k, DIRECT_K_TILE)) if direct else _k_tile(k, nt, rows, v_bytes)
    if maxabs:
        kt = max(1, min(kt, _INT32_MAX // maxabs))
    n_tiles = -(-n // nt)
    workers = max(1, torch.get_num_threads())
    one_thread_ns = ONE_THREAD_NS
    if uses_openmp(lib):
        one_thread_ns = min(one_thread_ns, ONE_THREAD_NS_OPENMP)
    if nb * cost < one_thread_ns:
        workers = 1
    tile_v = 0.0 if direct else k * rows * nt * COST_V
    tile_rows = r * k * (8 * -(-min(n, nt) // 8) * COST_DIRECT if direct else COST_STEP[nt])
    parts = split_blocks(nb, r, n_tiles, workers, tile_v, tile_rows)
    work_len = int(lib.approxsim_int_work(kt, nt, rows, v_bytes, direct))
    head = (
        a.data_ptr(), _KINDS[a.dtype], *a.stride(),
        b.data_ptr(), _KINDS[b.dtype], *b.stride(),
        c.data_ptr(), int(acc_int64), *c.stride(),
        k, n, tab_t.data_ptr(), tab_d, rows, min_value,
    )  # fmt: skip
    status = _run_parts(lib, head, parts, (nt, kt, v_kind, direct), work_len)
    if any(s < 0 for s in status):
        raise RuntimeError(f"approxsim integer CPU kernel failed with status {status}")
    if any(status):
        # Out-of-range values: the reference names the operand and its range.
        a0, b0 = (b.transpose(1, 2), a.transpose(1, 2)) if swap else (a, b)
        _raise_range(a0, b0, min_value, rows)
    return out


def _int_lut_bmm_fallback(
    a: Tensor, b: Tensor, table: Tensor, min_value: int, acc_int64: bool
) -> Tensor:
    """Without the compiled kernel: the Numba kernel, else (no Numba) the reference."""
    if not numba_available():
        return int_lut_bmm_ref(a, b, table, min_value, acc_int64)
    rows = table.shape[0]
    info = _table_info(table.contiguous())
    if info.maxabs > _INT32_MAX:
        return int_lut_bmm_ref(a, b, table, min_value, acc_int64)  # an entry of -2^31
    _check_range(a, b, min_value, rows)
    return int_lut_bmm_numba(
        a, b, info.table, min_value, acc_int64, table_t=info.table_t, maxabs=info.maxabs
    )


def _run_parts(
    lib: Any,
    head: tuple[int, ...],
    parts: list[tuple[int, int, int, int, int, int]],
    tiles: tuple[int, int, int, int],
    work_len: int,
) -> list[int]:
    """Run the kernel on each ``(b_lo, b_hi, r_lo, r_hi, t_lo, t_hi)`` block of ``parts``
    with ``tiles = (n_tile, k_tile, v_kind, direct)``, on torch's OpenMP threads (one call)
    or on approxsim's thread pool; returns each status."""
    if uses_openmp(lib):
        status_arr = np.zeros(len(parts), dtype=np.int32)
        table = np.array(parts, dtype=np.int64)
        work = buffer("int", len(parts) * work_len, torch.uint8).data_ptr()
        lib.approxsim_int_gemm_parts(
            *head, table.ctypes.data, len(parts), *tiles, work, work_len,
            status_arr.ctypes.data, len(parts),
        )  # fmt: skip
        return [int(v) for v in status_arr]
    status = [0] * len(parts)

    def call(j: int, *part: int) -> None:
        work = buffer(f"int{j}", work_len, torch.uint8).data_ptr()
        status[j] = lib.approxsim_int_gemm(*head, *part, *tiles, work)

    run_jobs(call, [(j, *part) for j, part in enumerate(parts)])
    return status


def _check_range(a: Tensor, b: Tensor, min_value: int, rows: int) -> None:
    """Raise the error of an operand value outside ``[min_value, min_value + rows)``."""
    for name, x in (("a", a), ("b", b)):
        lo, hi = (int(v) for v in torch.aminmax(x))
        if lo < min_value or hi >= min_value + rows:
            raise ValueError(
                f"approxsim: operand {name} holds values in [{lo}, {hi}], outside the "
                f"multiplier's operand range [{min_value}, {min_value + rows - 1}]; "
                "quantize the operands to the multiplier's bits first"
            )


def _raise_range(a: Tensor, b: Tensor, min_value: int, rows: int) -> None:
    """Raise the error of the operand value the compiled kernel found out of range."""
    _check_range(a, b, min_value, rows)
    raise RuntimeError("approxsim integer CPU kernel reported an out-of-range operand")
