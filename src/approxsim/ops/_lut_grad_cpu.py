"""The CPU kernel of ``approxsim::lut_grad_bmm``: :file:`_lut_grad_kernel.cc`, built on first use.

The source is compiled like the other kernels (:mod:`._cpu_native`: the same compiler, flags
and cache section, its own cache key) and called through ctypes; its blocks run on torch's
OpenMP threads, else on approxsim's thread pool (:mod:`._threads`). Per reduction index ``k``
it builds the ``(C, N)`` tables ``V[i, n] = G[i, qb[k, n] - qmin]`` of both gradient tables
(DESIGN §4's row idea), so each ``(r, k)`` reads one contiguous row of each; with fewer rows
than codes it reads ``G``'s row ``qa[r, k]`` and gathers along it instead ("direct" mode).

Sums are in float32 (:data:`WIDE` selects float64, measured 1.5x slower on LeNet-5's layers):
an A-side sum runs over the ``N`` columns in vector lanes, then across the lanes; a B-side
sum over the rows of a row tile (two interleaved partial sums), then tile after tile. Either
way each result lies within ``(terms + 1)·2^-24·Σ|terms|`` of the exact sum (the textbook
bound for any summation order; the tests hold the kernel to it around a float64 evaluation).
Work is split over whole reduction indices ``k`` of the flattened ``(group, k)`` range, and
nothing in a sum's order depends on the split, so every output element is summed by one
thread in one fixed order: the same bits on any number of threads.

Where the kernel cannot be built (no C++ compiler, an untrusted cache) the reference
(:func:`~approxsim.ops.lutgrad.lut_grad_reference`) runs instead, with one warning;
``APPROXSIM_CPU_KERNEL=native`` makes that an error.
"""

from __future__ import annotations

import ctypes
import functools
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
from approxsim.ops._scratch import buffer
from approxsim.ops._threads import run_jobs, split_range

__all__ = ["load_lut_grad_kernel", "lut_grad_cpu", "lut_grad_plan"]

SOURCE = Path(__file__).with_name("_lut_grad_kernel.cc")
#: Accumulate in float64 (else float32; see the module docstring).
WIDE = False
#: Target bytes of one block's V tables (both sides): they stay in L2 while the rows stream.
V_BLOCK_BYTES = 1 << 18
#: k block of the direct mode (only the B-side accumulators and column codes depend on it).
DIRECT_K_BLOCK = 64
#: Single-thread costs in nanoseconds, measured on LeNet-sized problems (2-core Zen 3, float32
#: sums), to choose the mode and the thread count: one V entry built, one vector lane of one
#: ``(r, k)`` pair read through V and through a gather, and the fixed work of a pair (all per
#: side). V mode pays once there are about 1.5x more rows than codes.
COST_V = 0.7
COST_ROW = 0.26
COST_GATHER = 0.74
COST_PAIR = 7.0
#: Estimated work (ns on one thread) below which a call stays on the calling thread.
ONE_THREAD_NS = 200_000
_KINDS = {torch.int16: 0, torch.int32: 1}

_HEAD: list[Any] = [
    ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,  # qa
    ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,  # qb
    ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,  # g_a, g_b, Ga, Gb
    ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,  # outs
    ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_int, ctypes.c_int64,  # R K N C qmin
]  # fmt: skip


@functools.cache
def _load_library() -> Any:
    lib = load_kernel_library(SOURCE, "lut gradient CPU kernel")
    uses_openmp(lib)
    i64, i32, p = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
    lib.approxsim_lut_grad_work.argtypes = [i32, i64, i32, i32, i32]
    lib.approxsim_lut_grad_work.restype = i64
    lib.approxsim_lut_grad.argtypes = [*_HEAD, i64, i64, i32, i32, i32, p]
    lib.approxsim_lut_grad.restype = i32
    lib.approxsim_lut_grad_parts.argtypes = [*_HEAD, p, i64, i32, i32, i32, p, i64, p, i32]
    lib.approxsim_lut_grad_parts.restype = None
    return lib


_WARNED: list[bool] = []


def load_lut_grad_kernel() -> Any | None:
    """The loaded kernel library, or ``None`` where the reference must run instead (there is
    no Numba kernel of these sums).

    Raises:
        KernelBuildError: the build failed and ``APPROXSIM_CPU_KERNEL=native`` asked for it.
    """

    def describe(exc: KernelBuildError) -> str:
        return (
            f"approxsim: the compiled lut gradient CPU kernel is unavailable ({exc}); the "
            "lut backward runs the much slower torch reference (results agree to float32 "
            "rounding). Install a C++ compiler (Debian/Ubuntu: apt-get install g++) for "
            "full speed."
        )

    return load_or_fall_back(_load_library, _WARNED, describe)


def lut_grad_plan(r: int, k: int, n: int, c: int) -> tuple[bool, int, float]:
    """``(V mode, k block, estimated ns on one thread per group)`` for one problem.

    V mode builds ``2·C·N`` table entries per ``k`` and then reads contiguous rows; the
    direct mode gathers every entry. The cheaper by :data:`COST_V`, :data:`COST_ROW`,
    :data:`COST_GATHER` and :data:`COST_PAIR` is chosen; the k block keeps V within
    :data:`V_BLOCK_BYTES`.
    """
    np_ = -(-n // 8) * 8
    cost_v = k * (2 * c * np_ * COST_V + 2 * r * (COST_PAIR + np_ * COST_ROW))
    cost_direct = k * 2 * r * (COST_PAIR + np_ * COST_GATHER)
    v_mode = cost_v < cost_direct
    size = 8 if WIDE else 4
    kb = max(1, min(k, V_BLOCK_BYTES // (2 * c * np_ * size))) if v_mode else DIRECT_K_BLOCK
    return v_mode, min(kb, max(1, k)), min(cost_v, cost_direct)


def lut_grad_cpu(
    qa: Tensor,
    qb: Tensor,
    g_a: Tensor | None,
    g_b: Tensor | None,
    ga_table: Tensor,
    gb_table: Tensor,
    qmin: int,
) -> tuple[Tensor | None, Tensor | None]:
    """Both gradient-table GEMMs on CPU (:mod:`approxsim.ops.lutgrad` states them).

    Arguments, result and errors as :func:`approxsim.ops.lutgrad.lut_grad_bmm`: codes of any
    integer dtype and strides (int16 and int32 read as they are, others checked and narrowed),
    float32 weights and tables (other float dtypes, and a kernel that cannot be built, take
    the reference); ``grad_a`` is the transpose of a contiguous ``(G, K, R)`` tensor, and
    codes ``qa`` laid out that way are read without a copy.
    """
    groups, r, k = qa.shape
    n = qb.shape[2]
    c = ga_table.shape[0]
    # grad_a is laid out (G, K, R) like the codes the kernel reads (below): each k's rows
    # contiguous, so a row tile streams whole cache lines.
    out_a = None if g_a is None else torch.empty(groups, k, r).transpose(1, 2)
    out_b = None if g_b is None else torch.empty(groups, k, n)
    if out_a is not None and (r == 0 or n == 0):
        out_a.zero_()
    if out_b is not None and r == 0:
        out_b.zero_()
    if (g_a is None and g_b is None) or min(groups, r, k, n) == 0:
        return out_a, out_b
    floats = [t for t in (g_a, g_b, ga_table, gb_table) if t is not None]
    lib = None if any(t.dtype != torch.float32 for t in floats) else load_lut_grad_kernel()
    if lib is None:
        from approxsim.ops.lutgrad import lut_grad_reference

        ref_a, ref_b = lut_grad_reference(qa, qb, g_a, g_b, ga_table, gb_table, qmin)
        if ref_a is not None:  # the kernel's layout, which the op's fake kernel promises
            ref_a = ref_a.transpose(1, 2).contiguous().transpose(1, 2)
        return ref_a, ref_b
    qa, qb = _codes(qa, qmin, c, "qa"), _codes(qb, qmin, c, "qb")
    if qa.stride(1) != 1 and r > 1:
        qa = qa.transpose(1, 2).contiguous().transpose(1, 2)
    ga_t, gb_t = ga_table.contiguous(), gb_table.contiguous()
    g_a = None if g_a is None else g_a.contiguous()
    g_b = None if g_b is None else g_b.contiguous()
    v_mode, kb, cost = lut_grad_plan(r, k, n, c)
    workers = max(1, torch.get_num_threads())
    one_thread_ns = ONE_THREAD_NS
    if uses_openmp(lib):
        one_thread_ns = min(one_thread_ns, ONE_THREAD_NS_OPENMP)
    if groups * cost < one_thread_ns:
        workers = 1
    parts = split_range(groups * k, workers)

    def ptr(t: Tensor | None) -> int | None:
        return None if t is None else t.data_ptr()

    head = (
        qa.data_ptr(), _KINDS[qa.dtype], *qa.stride(),
        qb.data_ptr(), _KINDS[qb.dtype], *qb.stride(),
        ptr(g_a), ptr(g_b), ga_t.data_ptr(), gb_t.data_ptr(),
        ptr(out_a), *(out_a.stride() if out_a is not None else (0, 0, 0)), ptr(out_b),
        r, k, n, c, qmin,
    )  # fmt: skip
    work_len = int(lib.approxsim_lut_grad_work(c, n, kb, int(v_mode), int(WIDE)))
    status = _run_parts(lib, head, parts, (kb, int(v_mode), int(WIDE)), work_len)
    if any(status):
        _raise_range(qa, qb, qmin, c)
    return out_a, out_b


def _codes(q: Tensor, qmin: int, c: int, name: str) -> Tensor:
    """Codes as the kernel reads them: int16 or int32 as given, other integer types checked
    against the tables' range and narrowed to int32."""
    if q.dtype in _KINDS:
        return q
    if q.dtype.is_floating_point or q.dtype.is_complex or q.dtype == torch.bool:
        raise TypeError(f"approxsim::lut_grad_bmm: {name} must hold integer codes, got {q.dtype}")
    if q.numel():
        _raise_range(q, None, qmin, c, name, strict=False)
    return q.to(torch.int32)


def _run_parts(
    lib: Any,
    head: tuple[Any, ...],
    parts: list[tuple[int, int]],
    plan: tuple[int, int, int],
    work_len: int,
) -> list[int]:
    """Run the kernel on each ``(u_lo, u_hi)`` span of ``parts``, on torch's OpenMP threads
    (one call) or on approxsim's thread pool; returns each status."""
    if uses_openmp(lib):
        status_arr = np.zeros(len(parts), dtype=np.int32)
        table = np.array(parts, dtype=np.int64)
        work = buffer("lutgrad", len(parts) * work_len, torch.uint8).data_ptr()
        lib.approxsim_lut_grad_parts(
            *head, table.ctypes.data, len(parts), *plan, work, work_len,
            status_arr.ctypes.data, len(parts),
        )  # fmt: skip
        return [int(v) for v in status_arr]
    status = [0] * len(parts)

    def call(j: int, lo: int, hi: int) -> None:
        work = buffer(f"lutgrad{j}", work_len, torch.uint8).data_ptr()
        status[j] = lib.approxsim_lut_grad(*head, lo, hi, *plan, work)

    run_jobs(call, [(j, lo, hi) for j, (lo, hi) in enumerate(parts)])
    return status


def _raise_range(
    qa: Tensor, qb: Tensor | None, qmin: int, c: int, name: str = "qa", strict: bool = True
) -> None:
    """Raise the error of a code outside ``[qmin, qmin + c)`` (``strict``: one must be)."""
    for what, q in ((name, qa), ("qb", qb)):
        if q is None:
            continue
        lo, hi = (int(v) for v in torch.aminmax(q))
        if lo < qmin or hi >= qmin + c:
            raise ValueError(
                f"approxsim::lut_grad_bmm: {what} holds codes in [{lo}, {hi}], outside the "
                f"gradient tables' range [{qmin}, {qmin + c - 1}]"
            )
    if strict:
        raise RuntimeError("approxsim lut gradient CPU kernel reported an out-of-range code")
