"""The CPU kernel of ``approxsim::int_lut_bmm``: :file:`_int_kernel.cc`, built on first use.

The source is compiled like the float kernel (:mod:`._cpu_native`: the same compiler, flags
and cache section, its own cache key) and called through ctypes; its blocks run on torch's
OpenMP threads, else on approxsim's thread pool (:mod:`._threads`). It runs DESIGN §4's row
gather on integers: per tile of B's columns a table
``V[k, i, n] = table[i, b[k, n] - min]``, then each output row is a sum of V rows picked by
A's values — contiguous int32 vector adds, no per-product lookup. The sums are exact (int32
partial sums over k tiles bounded by ``(2^31 - 1) / max|table|``, added into an int32 or int64
result), so the result equals the reference bit for bit.

Where the kernel cannot be built (no C++ compiler, an untrusted cache) the chunked reference
runs instead, with one warning; ``APPROXSIM_CPU_KERNEL=native`` makes that an error.
"""

from __future__ import annotations

import ctypes
import functools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from approxsim.ops._cpu_native import (
    ONE_THREAD_NS_OPENMP,
    KernelBuildError,
    kernel_choice,
    load_kernel_library,
    uses_openmp,
)
from approxsim.ops._scratch import buffer
from approxsim.ops._threads import run_jobs, split_range
from approxsim.ops.reference import int_lut_bmm_ref

__all__ = ["int_lut_bmm_cpu", "int_plan", "load_int_kernel"]

SOURCE = Path(__file__).with_name("_int_kernel.cc")
#: Column tile widths the kernel is compiled for.
N_TILES = (8, 16, 32, 64)
#: The kernel's element-type codes.
_KINDS = {torch.int8: 0, torch.uint8: 1, torch.int16: 2, torch.int32: 3, torch.int64: 4}
#: Rough per-thread costs in nanoseconds (they only rank the two orientations of a problem):
#: one V entry, and one row step of ``n_tile`` int32 columns.
COST_V = 0.15
COST_STEP = {8: 1.0, 16: 1.5, 32: 2.5, 64: 4.5}
#: Target bytes of one V tile. Larger than the float kernel's (:mod:`._tiling`): each output
#: row is read and written once per k tile, and measured on Zen 3 fewer, larger tiles win
#: although they spill from L2.
V_TILE_BYTES = 1 << 20
#: Estimated work (ns on one thread) below which a call stays on the calling thread (on
#: approxsim's thread pool; the float kernel's ``ONE_THREAD_NS_OPENMP`` where the kernel runs
#: on torch's OpenMP team, if lower).
ONE_THREAD_NS = 200_000
_INT32_MAX = 2**31 - 1

_ARGTYPES: list[Any] = [
    ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,  # a
    ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,  # b
    ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,  # c
    ctypes.c_int64, ctypes.c_int64,  # K, N
    ctypes.c_void_p, ctypes.c_int, ctypes.c_int64,  # tableᵀ, rows, min
    ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,  # batches, rows
    ctypes.c_int64, ctypes.c_int64, ctypes.c_int, ctypes.c_int,  # tiles, n_tile, k_tile
    ctypes.c_int, ctypes.c_void_p,  # V's entry type, work
]  # fmt: skip


@functools.cache
def _load_library() -> Any:
    lib = load_kernel_library(SOURCE, "integer CPU kernel")
    uses_openmp(lib)
    lib.approxsim_int_gemm.argtypes = _ARGTYPES
    lib.approxsim_int_gemm.restype = ctypes.c_int
    lib.approxsim_int_work.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.approxsim_int_work.restype = ctypes.c_int64
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.approxsim_int_gemm_parts.argtypes = [*_ARGTYPES[:20], p, i64, i32, i32, i32, p, i64, p, i32]
    lib.approxsim_int_gemm_parts.restype = None
    return lib


_WARNED: list[bool] = []


def load_int_kernel() -> Any | None:
    """The loaded integer kernel library, or ``None`` where the reference must run instead.

    Raises:
        KernelBuildError: the build failed and ``APPROXSIM_CPU_KERNEL=native`` asked for it.
    """
    choice = kernel_choice()
    if choice == "numba":
        return None  # no Numba integer kernel: the reference stands in
    try:
        return _load_library()
    except KernelBuildError as exc:
        if choice == "native":
            raise
        if not _WARNED:
            _WARNED.append(True)
            warnings.warn(
                f"approxsim: the compiled integer CPU kernel is unavailable ({exc}); integer "
                "multipliers run the much slower reference (results are the same). Install a "
                "C++ compiler (Debian/Ubuntu: apt-get install g++) for full speed.",
                RuntimeWarning,
                stacklevel=3,
            )
        return None


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


_TABLE_INFO: dict[int, _TableInfo] = {}


def _table_info(table: Tensor) -> _TableInfo:
    """The cached :class:`_TableInfo` of an int32 table."""
    hit = _TABLE_INFO.get(id(table))
    if hit is not None and hit.table is table:
        return hit
    lo, hi = (int(v) for v in torch.aminmax(table))
    v_kind = 1 if lo >= 0 and hi < 1 << 16 else 2 if lo >= -(1 << 15) and hi < 1 << 15 else 0
    info = _TableInfo(table, table.t().contiguous(), max(abs(lo), abs(hi)), v_kind)
    if len(_TABLE_INFO) >= 16:
        _TABLE_INFO.clear()
    _TABLE_INFO[id(table)] = info
    return info


def _n_tile(cols: int) -> int:
    return next((t for t in N_TILES if t >= cols), N_TILES[-1])


def _k_tile(k: int, n_tile: int, rows: int, v_bytes: int) -> int:
    """The k tile that keeps one V tile near :data:`V_TILE_BYTES`, balanced so the last tile
    of the reduction is (almost) full."""
    k_max = max(1, min(k, V_TILE_BYTES // (v_bytes * rows * n_tile)))
    n_kt = -(-k // k_max)
    return -(-k // n_kt)


def int_plan(r: int, k: int, n: int, rows: int) -> tuple[bool, int, float]:
    """``(swap, n_tile, estimated ns on one thread)`` for an ``r × k × n`` problem.

    Building V costs ``rows · K · N`` entries and is repaid over A's rows; with ``swap`` the
    kernel computes ``Cᵀ = Bᵀ·Aᵀ`` through the transposed table (the same products), which
    suits few rows and many columns. The cheaper orientation by :data:`COST_V` and
    :data:`COST_STEP` is chosen.
    """
    best: tuple[float, bool, int] | None = None
    for swap, (rr, nn) in ((False, (r, n)), (True, (n, r))):
        nt = _n_tile(nn)
        tiles = -(-nn // nt)
        cost = k * tiles * (rows * nt * COST_V + rr * COST_STEP[nt])
        if best is None or cost < best[0]:
            best = (cost, swap, nt)
    assert best is not None
    return best[1], best[2], best[0]


def int_lut_bmm_cpu(a: Tensor, b: Tensor, table: Tensor, min_value: int, acc_int64: bool) -> Tensor:
    """Batched integer table matmul on CPU: ``(B, R, K) × (B, K, N) → (B, R, N)``.

    Args:
        a: Integer operand values, (B, R, K), any strides.
        b: Integer operand values, (B, K, N), any strides.
        table: int32 (S, S) products (S a power of two), row = A's value minus ``min_value``.
        min_value: The smallest operand value.
        acc_int64: Return int64 (else int32, which the caller guarantees cannot overflow).

    Returns:
        (B, R, N) int64 or int32, equal to :func:`~approxsim.ops.reference.int_lut_bmm_ref`.

    Raises:
        ValueError: an operand value outside the table's range.
        KernelBuildError: the kernel cannot be built and ``APPROXSIM_CPU_KERNEL=native``.
    """
    nb, r, k = a.shape
    n = b.shape[-1]
    out_dtype = torch.int64 if acc_int64 else torch.int32
    lib = load_int_kernel() if min(nb, r, k, n) > 0 else None
    rows = table.shape[0]
    if lib is None or rows & (rows - 1):
        return int_lut_bmm_ref(a, b, table, min_value, acc_int64)
    info = _table_info(table.contiguous())
    maxabs, v_kind = info.maxabs, info.v_kind
    if maxabs > _INT32_MAX:
        return int_lut_bmm_ref(a, b, table, min_value, acc_int64)  # an entry of -2^31
    if a.dtype not in _KINDS:
        a = a.long()
    if b.dtype not in _KINDS:
        b = b.long()
    out = torch.empty(nb, r, n, dtype=out_dtype)
    swap, nt, cost = int_plan(r, k, n, rows)
    tab_t = info.table_t
    c = out
    if swap:  # Cᵀ = Bᵀ·Aᵀ with tableᵀ, written through out's transpose
        a, b, c = b.transpose(1, 2), a.transpose(1, 2), out.transpose(1, 2)
        tab_t = info.table
        r, n = n, r
    kt = _k_tile(k, nt, rows, 4 if v_kind == 0 else 2)
    if maxabs:
        kt = max(1, min(kt, _INT32_MAX // maxabs))
    n_tiles = -(-n // nt)
    workers = max(1, torch.get_num_threads())
    one_thread_ns = ONE_THREAD_NS
    if uses_openmp(lib):
        one_thread_ns = min(one_thread_ns, ONE_THREAD_NS_OPENMP)
    if nb * cost < one_thread_ns:
        workers = 1
    if n_tiles >= workers or workers == 1:
        parts = [(0, nb, 0, r, lo, hi) for lo, hi in split_range(n_tiles, workers)]
    elif nb >= workers:
        parts = [(lo, hi, 0, r, 0, n_tiles) for lo, hi in split_range(nb, workers)]
    else:
        parts = [(0, nb, lo, hi, 0, n_tiles) for lo, hi in split_range(r, workers)]
    work_len = int(lib.approxsim_int_work(kt, nt, rows, 4 if v_kind == 0 else 2))
    head = (
        a.data_ptr(), _KINDS[a.dtype], *a.stride(),
        b.data_ptr(), _KINDS[b.dtype], *b.stride(),
        c.data_ptr(), int(acc_int64), *c.stride(),
        k, n, tab_t.data_ptr(), rows, min_value,
    )  # fmt: skip
    status = _run_parts(lib, head, parts, nt, kt, v_kind, work_len)
    if any(s < 0 for s in status):
        raise RuntimeError(f"approxsim integer CPU kernel failed with status {status}")
    if any(status):
        # Out-of-range values: the reference names the operand and its range.
        a0, b0 = (b.transpose(1, 2), a.transpose(1, 2)) if swap else (a, b)
        _raise_range(a0, b0, min_value, rows)
    return out


def _run_parts(
    lib: Any,
    head: tuple[int, ...],
    parts: list[tuple[int, int, int, int, int, int]],
    nt: int,
    kt: int,
    v_kind: int,
    work_len: int,
) -> list[int]:
    """Run the kernel on each ``(b_lo, b_hi, r_lo, r_hi, t_lo, t_hi)`` block of ``parts``, on
    torch's OpenMP threads (one call) or on approxsim's thread pool; returns each status."""
    if uses_openmp(lib):
        status_arr = np.zeros(len(parts), dtype=np.int32)
        table = np.array(parts, dtype=np.int64)
        work = buffer("int", len(parts) * work_len, torch.uint8).data_ptr()
        lib.approxsim_int_gemm_parts(
            *head, table.ctypes.data, len(parts), nt, kt, v_kind, work, work_len,
            status_arr.ctypes.data, len(parts),
        )  # fmt: skip
        return [int(v) for v in status_arr]
    status = [0] * len(parts)

    def call(j: int, *part: int) -> None:
        work = buffer(f"int{j}", work_len, torch.uint8).data_ptr()
        status[j] = lib.approxsim_int_gemm(*head, *part, nt, kt, v_kind, work)

    run_jobs(call, [(j, *part) for j, part in enumerate(parts)])
    return status


def _raise_range(a: Tensor, b: Tensor, min_value: int, rows: int) -> None:
    """Raise the error of an operand value outside ``[min_value, min_value + rows)``."""
    for name, x in (("a", a), ("b", b)):
        lo, hi = (int(v) for v in torch.aminmax(x))
        if lo < min_value or hi >= min_value + rows:
            raise ValueError(
                f"approxsim: operand {name} holds values in [{lo}, {hi}], outside the "
                f"multiplier's operand range [{min_value}, {min_value + rows - 1}]; "
                "quantize the operands to the multiplier's bits first"
            )
    raise RuntimeError("approxsim integer CPU kernel reported an out-of-range operand")
