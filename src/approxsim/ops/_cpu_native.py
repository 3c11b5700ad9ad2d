"""The compiled CPU kernel: :file:`_cpu_kernel.cc`, built on first use and called via ctypes.

The source is compiled once per machine with the C++ compiler that ``from_c`` uses
(``$CXX``, else ``c++``) and ``-O3 -march=native``, into approxsim's cache (section
``kernels``, keyed by the source, the compiler, the flags and the CPU, so a cache shared
between different machines never hands one a binary for another's instruction set). Where no
compiler is available the Numba kernel of :mod:`._numba` runs instead, with one warning.

Where torch's OpenMP runtime is GNU's libgomp, the kernel is built with ``-fopenmp`` as well
and runs its parallel loops on torch's own OpenMP threads (see :mod:`._threads`); should that
build fail to compile or load, or bring a second OpenMP runtime into the process, the kernel
is built without it and runs on approxsim's thread pool instead, with one warning.

``APPROXSIM_CPU_KERNEL=numba`` forces the Numba kernel; ``=native`` makes a failing build an
error instead of a fallback.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import subprocess
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from approxsim.errors import ApproxsimError
from approxsim.ops._scratch import buffer, recycled
from approxsim.ops._threads import (
    mapped_openmp_runtimes,
    run_jobs,
    shared_openmp_runtime,
    split_blocks,
    split_range,
    thread_choice,
)
from approxsim.ops._tiling import balanced_k_tile

__all__ = [
    "kernel_choice",
    "load",
    "load_or_fall_back",
    "lut_bmm_native",
    "plan",
    "compile_kernel",
    "kernel_key",
    "load_kernel_library",
    "uses_openmp",
    "HEADERS",
]

SOURCE = Path(__file__).with_name("_cpu_kernel.cc")
#: Headers the compiled kernels include (their text is part of every kernel's cache key).
HEADERS = tuple(
    Path(__file__).with_name(name) for name in ("_simd.h", "_parallel.h", "_cpu_decode.h")
)
FLAGS = ["-O3", "-march=native", "-std=gnu++17", "-fPIC", "-shared", "-fno-strict-aliasing"]
#: Added to :data:`FLAGS` where the kernels can share torch's OpenMP threads.
OPENMP_FLAGS = ["-fopenmp"]
CACHE_SECTION = "kernels"
#: Column tile widths the kernel is compiled for.
N_TILES = (8, 16, 32, 64)
#: k tile of the direct kernel (B's decoded tile stays in L1/L2).
DIRECT_K_TILE = 256


class KernelBuildError(ApproxsimError, RuntimeError):
    """The compiled CPU kernel could not be built or loaded."""


class KernelCacheError(KernelBuildError):
    """The cache the compiled CPU kernel lives in cannot be used (unwritable or untrusted)."""


def kernel_choice() -> str:
    """``"native"``, ``"numba"`` or ``"auto"`` from ``$APPROXSIM_CPU_KERNEL``."""
    choice = os.environ.get("APPROXSIM_CPU_KERNEL", "auto").strip().lower() or "auto"
    if choice not in ("auto", "native", "numba"):
        raise ValueError(
            f"APPROXSIM_CPU_KERNEL must be 'auto', 'native' or 'numba', got {choice!r}"
        )
    return choice


def _cpu_signature() -> str:
    """What identifies this CPU's instruction set (part of the cache key)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return f"{platform.machine()} {platform.processor()}"
    keep = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags", "Features"))]
    return "\n".join(sorted(set(keep)))


def compile_kernel(
    exe: str, source: Path, out_dir: Path, flags: list[str] | None = None
) -> dict[str, Any]:
    """Compile one kernel source into ``out_dir/kernel.so`` (a cache entry without metadata).

    Args:
        exe: The C++ compiler.
        source: The kernel's ``.cc`` file (it may include :data:`HEADERS`).
        out_dir: The cache entry's build folder.
        flags: The compiler flags (default :data:`FLAGS`).

    Returns:
        The entry's metadata (none).

    Raises:
        KernelBuildError: the compiler could not run or failed.
    """
    so = out_dir / "kernel.so"
    cmd = [exe, *(FLAGS if flags is None else flags), "-o", str(so), str(source)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KernelBuildError(f"cannot run {' '.join(cmd)}: {exc}") from None
    if res.returncode != 0:
        raise KernelBuildError(f"{' '.join(cmd)} failed:\n{res.stderr.strip()[-2000:]}")
    return {}


def kernel_key(source: Path, compiler: str, flags: list[str] | None = None) -> str:
    """The cache key of ``source`` built by ``compiler`` (its identity) with ``flags``
    (default :data:`FLAGS`) on this CPU: the source and the headers it may include, the
    compiler, the flags and the CPU's features (a build with OpenMP never stands in for one
    without, nor the reverse)."""
    texts = [source.read_text(), *(h.read_text() for h in HEADERS)]
    flag_text = " ".join(FLAGS if flags is None else flags)
    key_src = "\n".join([*texts, compiler, flag_text, _cpu_signature()])
    return hashlib.sha256(key_src.encode()).hexdigest()


#: Kernels whose OpenMP build could not be used (a warning said so once).
_OPENMP_REFUSED: set[str] = set()


def _load_built(exe: str, compiler: str, source: Path, flags: list[str], what: str) -> Any:
    """Build ``source`` with ``flags`` (or take it from the cache) and load it."""
    from approxsim.multipliers import cache

    key = kernel_key(source, compiler, flags)
    try:
        entry = cache.get_or_build(
            CACHE_SECTION, key, lambda build_dir: compile_kernel(exe, source, build_dir, flags)
        )
    except cache.CacheError as exc:
        # The cache is unusable or untrusted: never load a kernel from it.
        raise KernelCacheError(str(exc)) from None
    try:
        return ctypes.CDLL(str(entry.path / "kernel.so"))
    except OSError as exc:
        raise KernelBuildError(f"cannot load the compiled {what}: {exc}") from None


def load_kernel_library(source: Path, what: str) -> Any:
    """Build (or take from the cache) and load one compiled kernel, on OpenMP where it can
    share torch's threads (:func:`._threads.shared_openmp_runtime`), else without.

    An OpenMP build that fails to compile or load, or that maps a second OpenMP runtime into
    the process, is given up for the plain build, with one warning; ``APPROXSIM_CPU_THREADS=pool``
    asks for the plain build (:func:`._threads.thread_choice`).

    Args:
        source: The kernel's ``.cc`` file.
        what: What the kernel is, for messages ("CPU kernel").

    Returns:
        The loaded ``ctypes.CDLL``.

    Raises:
        KernelBuildError: no C++ compiler, or the plain build fails to compile or load.
        KernelCacheError: the cache cannot be used.
        ThreadSettingError: ``APPROXSIM_CPU_THREADS`` has an unknown value.
    """
    from approxsim.multipliers.cmodel import CompilerNotFoundError, compiler_identity, find_compiler

    try:
        exe = find_compiler("c++")
    except CompilerNotFoundError as exc:
        raise KernelBuildError(str(exc)) from None
    compiler = compiler_identity(exe)
    if thread_choice() == "auto" and shared_openmp_runtime() and what not in _OPENMP_REFUSED:
        try:
            lib = _load_built(exe, compiler, source, [*FLAGS, *OPENMP_FLAGS], what)
        except KernelCacheError:
            raise
        except KernelBuildError as exc:
            reason = str(exc).splitlines()[0]
        else:
            runtimes = mapped_openmp_runtimes()
            if len(runtimes) == 1:
                return lib
            reason = f"it mapped a second OpenMP runtime ({', '.join(runtimes)})"
        _OPENMP_REFUSED.add(what)
        warnings.warn(
            f"approxsim: the {what} cannot share torch's OpenMP threads ({reason}); it runs on "
            "approxsim's own threads instead (results are the same).",
            RuntimeWarning,
            stacklevel=3,
        )
    return _load_built(exe, compiler, source, FLAGS, what)


def uses_openmp(lib: Any) -> bool:
    """Whether the loaded kernel ``lib`` runs its parallel loops on torch's OpenMP threads."""
    flag = getattr(lib, "_approxsim_openmp", None)
    if flag is None:
        fn = lib.approxsim_openmp
        fn.argtypes, fn.restype = [], ctypes.c_int
        lib.approxsim_last_team.argtypes, lib.approxsim_last_team.restype = [], ctypes.c_int
        flag = bool(fn())
        lib._approxsim_openmp = flag
    return bool(flag)


_ARGTYPES: list[Any] = [
    ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,  # a, strides b/r/k
    ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,  # b, strides b/k/n
    ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,  # c, strides b/r/n
    ctypes.c_int64, ctypes.c_int64,  # K, N
    ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,  # lut, lutᵀ, M, nearest
    ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,  # batches, rows
    ctypes.c_int64, ctypes.c_int64, ctypes.c_int, ctypes.c_int,  # tiles, n_tile, k_tile
    ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,  # direct, work, ranges
]  # fmt: skip


@functools.cache
def _load_library() -> Any:
    lib = load_kernel_library(SOURCE, "CPU kernel")
    uses_openmp(lib)
    lib.approxsim_gemm_gather.argtypes = _ARGTYPES
    lib.approxsim_gemm_gather.restype = ctypes.c_int
    lib.approxsim_gather_work.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.approxsim_gather_work.restype = ctypes.c_int64
    lib.approxsim_direct_work.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.approxsim_direct_work.restype = ctypes.c_int64
    lib.approxsim_transpose.argtypes = [
        ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
        ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
    ]  # fmt: skip
    lib.approxsim_transpose.restype = None
    i64, i32 = ctypes.c_int64, ctypes.c_int
    geometry = [i64, i64, i64, *[i32] * 8, i64, i64]  # N, H, W, kh..pw, Ho, Wo
    lib.approxsim_im2col_t.argtypes = [
        ctypes.c_void_p, i64, i64, i64, i64, *geometry, ctypes.c_void_p, i64, i64,
    ]  # fmt: skip
    lib.approxsim_im2col_t.restype = None
    lib.approxsim_col2im_t.argtypes = [ctypes.c_void_p, *geometry, ctypes.c_void_p, i64, i64]
    lib.approxsim_col2im_t.restype = None
    _declare_parallel(lib, geometry)
    return lib


def _declare_parallel(lib: Any, geometry: list[Any]) -> None:
    """Declare the argument types of the entry points that split work themselves."""
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.approxsim_gemm_parts.argtypes = [
        *_ARGTYPES[:18], p, i64, i32, i32, i32, p, i64, p, i64, p, i32,
    ]  # fmt: skip
    lib.approxsim_gemm_parts.restype = None
    lib.approxsim_gemm_chunks.argtypes = [
        p, i64, i64, i64, p, i64, i64, i64, p, i64, i64, i64, i64, i64,  # a, b, partials, N
        p, p, i32, i32, p, p, i64, i64, i64, i64, i32, i32, i32, p, i64, p, p, i32,
    ]  # fmt: skip
    lib.approxsim_gemm_chunks.restype = None
    lib.approxsim_transpose_jobs.argtypes = [p, i64, i32]
    lib.approxsim_transpose_jobs.restype = None
    lib.approxsim_im2col_par.argtypes = [p, i64, i64, i64, i64, *geometry, p, i64, i32]
    lib.approxsim_im2col_par.restype = None
    lib.approxsim_col2im_par.argtypes = [p, *geometry, p, i64, i32]
    lib.approxsim_col2im_par.restype = None


_WARNED: list[bool] = []


def load_or_fall_back(
    loader: Callable[[], Any], warned: list[bool], describe: Callable[[KernelBuildError], str]
) -> Any | None:
    """``loader()``'s kernel library, or ``None`` where a slower kernel must run instead.

    ``APPROXSIM_CPU_KERNEL=numba`` asks for that; a failed build falls back too, with one
    warning per kernel (``describe(exc)``; ``warned`` remembers it), unless
    ``APPROXSIM_CPU_KERNEL=native`` makes the failure an error.

    Raises:
        KernelBuildError: the build failed and ``APPROXSIM_CPU_KERNEL=native`` asked for it.
    """
    choice = kernel_choice()
    if choice == "numba":
        return None
    try:
        return loader()
    except KernelBuildError as exc:
        if choice == "native":
            raise
        if not warned:
            warned.append(True)
            warnings.warn(describe(exc), RuntimeWarning, stacklevel=4)
        return None


def load() -> Any | None:
    """The loaded kernel library, or ``None`` where the Numba kernel must run instead."""

    def describe(exc: KernelBuildError) -> str:
        advice = (
            "Fix the cache as said for full speed."
            if isinstance(exc, KernelCacheError)
            else "Install a C++ compiler (Debian/Ubuntu: apt-get install g++) for full speed."
        )
        return (
            f"approxsim: the compiled CPU kernel is unavailable ({exc}); using the slower "
            f"Numba kernel (results are the same). {advice}"
        )

    return load_or_fall_back(_load_library, _WARNED, describe)


#: Rough per-thread costs in nanoseconds: one V entry (built with in-register transposes, the
#: same for every tile width), one row-gather step of ``n_tile`` columns, one direct product;
#: measured on two 2-core CPUs, one with AVX-512 and one with AVX2 only (V 0.15–0.20 ns per
#: entry on both, steps 1.5–3 ns up to 32 columns and 5–7 ns for 64, direct products 0.8–0.9
#: ns; ``scripts/bench_strategies.py``). They only rank the four ways to run a problem (row
#: gather or direct, operands as given or swapped).
COST_V = 0.2
COST_STEP = {8: 2.5, 16: 3.0, 32: 4.0, 64: 6.0}
COST_DIRECT = 0.9
#: Estimated work (ns on one thread) below which a call stays on the calling thread: handing
#: work to approxsim's thread pool and waiting for it costs tens of microseconds.
ONE_THREAD_NS = 200_000
#: ... and on torch's OpenMP team (the lower of the two applies), where a parallel region
#: costs a few microseconds (two blocks of a tiny transpose on two threads of a shared 2-core
#: AMD EPYC, 2000 calls: 2.4 us best, 3.5 us median; 13 us and 27 us on the pool).
ONE_THREAD_NS_OPENMP = 25_000
#: Reductions at least this long copy a column-major A to rows in some cases (see
#: :func:`lut_bmm_native`; shorter ones measured no gain: 25×800×6 0.19 ms in place, 0.21
#: copied).
COPY_MIN_K = 2048
#: Long reductions with few output pieces are cut into k chunks of about this length,
#: summed into separate partial outputs that are added in chunk order at the end: the
#: threads then share the k range instead of each building the same V tables (or decoding
#: the same B) for its own rows. The chunks do not depend on the thread count, so neither
#: do the sums.
K_CHUNK = 4096
#: Fewer (batch, column tile) pieces than this, and k of at least two chunks: k chunks.
K_CHUNK_MAX_PIECES = 4
#: ... as long as the partial outputs (one per chunk) take at most this many bytes.
K_CHUNK_PARTIAL_BYTES = 64 << 20


def _tiles(swap: bool, direct: bool, r: int, k: int, n: int, m: int) -> tuple[int, int]:
    """``(k_tile, n_tile)`` of one way to run an ``r × k × n`` problem: the narrowest compiled
    column tile holding the kernel's columns (at most 64); k tiles sized for V
    (:func:`._tiling.balanced_k_tile`), or :data:`DIRECT_K_TILE` for the direct kernel."""
    cols = r if swap else n
    n_tile = next((t for t in N_TILES if t >= cols), N_TILES[-1])
    if direct:
        return max(1, min(k, DIRECT_K_TILE)), n_tile
    return balanced_k_tile(k, n_tile, m), n_tile


def _best(r: int, k: int, n: int, mantissa_bits: int) -> tuple[float, bool, bool]:
    """``(estimated ns on one thread, swap, direct)`` of the cheapest way (see :func:`plan`)."""
    best: tuple[float, bool, bool] | None = None
    for swap, (rr, nn) in ((False, (r, n)), (True, (n, r))):
        _, nt = _tiles(swap, False, r, k, n, mantissa_bits)
        tiles = -(-nn // nt)
        gather = k * tiles * ((1 << mantissa_bits) * nt * COST_V + rr * COST_STEP[nt])
        for direct, cost in ((False, gather), (True, rr * k * nn * COST_DIRECT)):
            if best is None or cost < best[0]:
                best = (cost, swap, direct)
    assert best is not None
    return best


def plan(r: int, k: int, n: int, mantissa_bits: int) -> tuple[bool, bool, int, int]:
    """``(swap, direct, k_tile, n_tile)`` for an ``r × k × n`` problem.

    The row gather builds V tables over B (``2^M · K · N`` entries) and pays when A has many
    rows; the direct kernel looks every product up and pays for small problems. With ``swap``
    the kernel computes ``Cᵀ = Bᵀ·Aᵀ`` through the transposed LUT (same products), which
    suits few rows and many columns. The cheapest of the four by :data:`COST_V`,
    :data:`COST_STEP` and :data:`COST_DIRECT` is chosen.
    """
    _, swap, direct = _best(r, k, n, mantissa_bits)
    return (swap, direct, *_tiles(swap, direct, r, k, n, mantissa_bits))


#: A fresh per-batch exponent record (A's lo, hi, special, B's lo, hi, special), and which of
#: its fields merge by minimum.
_RANGES_INIT = np.array([255, 0, 0, 255, 0, 0], dtype=np.int32)
_RANGES_MIN = np.array([True, False, False, True, False, False])

_LUT_T: dict[int, tuple[Tensor, Tensor]] = {}


def _transposed(lut_bits: Tensor) -> Tensor:
    """``lut_bits`` as a float32 (2^M, 2^M) matrix, transposed and contiguous (cached)."""
    hit = _LUT_T.get(lut_bits.data_ptr())
    if hit is not None and hit[0] is lut_bits:
        return hit[1]
    rows = int(round(lut_bits.numel() ** 0.5))
    lut_t = lut_bits.view(torch.float32).view(rows, rows).t().contiguous()
    if len(_LUT_T) >= 8:
        _LUT_T.clear()
    _LUT_T[lut_bits.data_ptr()] = (lut_bits, lut_t)
    return lut_t


def lut_bmm_native(
    lib: Any,
    a: Tensor,
    b: Tensor,
    lut_bits: Tensor,
    mantissa_bits: int,
    rounding: int,
    *,
    k_tile: int | None = None,
    force: tuple[bool, bool] | None = None,
    column_major: bool = False,
) -> tuple[Tensor, Tensor]:
    """Run the compiled kernel on ``(B, R, K) × (B, K, N)`` float32 (any strides).

    Returns ``(out, ranges)``: the (B, R, N) result and, per batch, the biased exponent range
    of A's and B's nonzero operands and whether an inf/NaN met, as int32 (B, 6); the caller
    decides from them which batches must be recomputed exactly. ``force = (swap, direct)``
    overrides :func:`plan` (tests); ``k_tile`` its k tile. With ``column_major`` the result is
    the transposed view of a contiguous (B, N, R) tensor (the kernel writes any strides).
    """
    nb, r, k = a.shape
    n = b.shape[-1]
    if column_major:
        # The gradient of a column-major operand (a convolution's patches, which col2im
        # consumes at once): a recycled block, not fresh pages on every backward pass.
        out = recycled((nb, n, r)).transpose(1, 2)
    else:
        out = torch.empty(nb, r, n, dtype=torch.float32)
    workers = max(1, torch.get_num_threads())
    one_thread_ns = ONE_THREAD_NS
    if uses_openmp(lib):
        one_thread_ns = min(one_thread_ns, ONE_THREAD_NS_OPENMP)
    swap, direct, kt, nt, chunks, parts, work_len = _schedule(
        nb, r, k, n, mantissa_bits, workers, force, k_tile, one_thread_ns, K_CHUNK
    )
    lut = lut_bits.contiguous()
    lut_t = _transposed(lut)
    c = out
    if swap:  # Cᵀ = Bᵀ·Aᵀ with LUTᵀ: the same products, written through out's transpose
        a, b, c = b.transpose(1, 2), a.transpose(1, 2), out.transpose(1, 2)
        lut, lut_t = lut_t, lut
        r, n = n, r
    n_tiles = -(-n // nt)
    column_major = a.stride(2) != 1 and a.stride(1) == 1
    if column_major and k >= COPY_MIN_K and (direct or a.stride(2) % 16 or a.data_ptr() % 64):
        # A column-major A (a weight gradient's Aᵀ) over a long reduction is copied to rows
        # by the blocked transpose when the direct kernel reads it (one strided operand at a
        # time) or when its columns do not start on cache lines, so that the row gather's
        # sixteen-row vector reads would each straddle two. Measured on 2-core Zen 3, one
        # thread, copy included: LeNet-5's conv1 weight gradient (25×100352×6, direct) 19.6 ->
        # 14.2 ms, conv2's (150×12800×16) 11.8 -> 9.4 ms; aligned columns (144 or 160 rows
        # instead of 150) read in place run 7.9-8.2 ms.
        from approxsim.ops._cpu_layout import transposed_copy

        a = transposed_copy(a.transpose(1, 2))
    elif a.stride(2) != 1 and not (column_major and not direct) and not (direct and n_tiles <= 2):
        # Otherwise the row gather decodes A fastest from contiguous rows (vector decode,
        # prefetch) or from contiguous columns (sixteen rows per vector); the direct kernel
        # reading A once or twice is faster strided than after a copy.
        a = a.contiguous()
    if chunks:
        return _chunked(lib, a, b, c, out, lut, lut_t, mantissa_bits, rounding, direct, kt, nt,
                        chunks, parts, work_len, swap)  # fmt: skip
    ranges = np.empty((len(parts), nb, 6), dtype=np.int32)
    ranges[...] = _RANGES_INIT
    head = (
        a.data_ptr(), *a.stride(), b.data_ptr(), *b.stride(), c.data_ptr(), *c.stride(),
        k, n, lut.data_ptr(), lut_t.data_ptr(), mantissa_bits, rounding,
    )  # fmt: skip
    if uses_openmp(lib):
        # One call: the kernel runs the parts on torch's OpenMP threads.
        status_arr = np.zeros(len(parts), dtype=np.int32)
        work = buffer("native", len(parts) * work_len, torch.float32).data_ptr()
        lib.approxsim_gemm_parts(
            *head, _int64_array(parts).ctypes.data, len(parts), nt, kt, int(direct), work,
            work_len, ranges.ctypes.data, nb, status_arr.ctypes.data, len(parts),
        )  # fmt: skip
        return out, _merged_ranges(status_arr.tolist(), ranges, swap)
    jobs = [
        (
            *head,
            *part,
            nt,
            kt,
            int(direct),
            buffer(f"native{j}", work_len, torch.float32).data_ptr(),
            ranges[j].ctypes.data,
        )  # fmt: skip
        for j, part in enumerate(parts)
    ]
    if len(jobs) == 1:
        status = [lib.approxsim_gemm_gather(*jobs[0])]
    else:
        status = [0] * len(jobs)

        def call(j: int, *args: Any) -> None:
            status[j] = lib.approxsim_gemm_gather(*args)

        run_jobs(call, [(j, *job) for j, job in enumerate(jobs)])
    return out, _merged_ranges(status, ranges, swap)


@functools.lru_cache(maxsize=512)
def _int64_array(rows: tuple[tuple[int, ...], ...]) -> np.ndarray:
    """``rows`` as a C-contiguous int64 array (cached: plans repeat every step)."""
    arr = np.ascontiguousarray(np.array(rows, dtype=np.int64))
    arr.setflags(write=False)
    return arr


def _merged_ranges(status: list[int], ranges: np.ndarray, swap: bool) -> Tensor:
    """Check the kernel calls' ``status`` and merge their per-call exponent records
    ``ranges`` (calls, B, 6) into one (B, 6) tensor, in A/B order of the caller's operands."""
    if any(status):
        raise RuntimeError(f"approxsim CPU kernel failed with status {status}")
    if len(ranges) == 1:
        merged = ranges[0]
    else:
        merged = np.where(_RANGES_MIN, ranges.min(axis=0), ranges.max(axis=0))
    if swap:
        merged = merged[:, [3, 4, 5, 0, 1, 2]]
    return torch.from_numpy(np.ascontiguousarray(merged))


def _chunked(
    lib: Any,
    a: Tensor,
    b: Tensor,
    c: Tensor,
    out: Tensor,
    lut: Tensor,
    lut_t: Tensor,
    mantissa_bits: int,
    rounding: int,
    direct: bool,
    kt: int,
    nt: int,
    chunks: tuple[tuple[int, int], ...],
    parts: tuple[tuple[int, ...], ...],
    work_len: int,
    swap: bool,
) -> tuple[Tensor, Tensor]:
    """:func:`lut_bmm_native` over k chunks (see :data:`K_CHUNK`): each chunk's product into
    its own partial output, the partials added in chunk order into ``c`` (the kernel's view of
    ``out``). ``parts`` are the ``(first, last + 1)`` chunks of each thread."""
    nb, r, _ = a.shape
    n = b.shape[-1]
    partial = torch.empty(len(chunks), nb, r, n, dtype=torch.float32)
    ranges = np.empty((len(chunks), nb, 6), dtype=np.int32)
    ranges[...] = _RANGES_INIT
    n_tiles = -(-n // nt)
    if uses_openmp(lib):
        status_arr = np.zeros(len(chunks), dtype=np.int32)
        work = buffer("native", len(parts) * work_len, torch.float32).data_ptr()
        lib.approxsim_gemm_chunks(
            a.data_ptr(), *a.stride(), b.data_ptr(), *b.stride(),
            partial.data_ptr(), *partial.stride(), n, lut.data_ptr(), lut_t.data_ptr(),
            mantissa_bits, rounding, _int64_array(chunks).ctypes.data,
            _int64_array(parts).ctypes.data, len(parts), nb, r, n_tiles, nt, kt, int(direct),
            work, work_len, ranges.ctypes.data, status_arr.ctypes.data, len(parts),
        )  # fmt: skip
        status = status_arr.tolist()
    else:
        status = _chunks_on_pool(lib, a, b, partial, lut, lut_t, mantissa_bits, rounding,
                                 direct, kt, nt, chunks, parts, work_len, ranges)  # fmt: skip
    merged = _merged_ranges(status, ranges, swap)
    total = partial[0]
    for ci in range(1, len(chunks)):
        total += partial[ci]
    c.copy_(total)
    return out, merged


def _chunks_on_pool(
    lib: Any,
    a: Tensor,
    b: Tensor,
    partial: Tensor,
    lut: Tensor,
    lut_t: Tensor,
    mantissa_bits: int,
    rounding: int,
    direct: bool,
    kt: int,
    nt: int,
    chunks: tuple[tuple[int, int], ...],
    parts: tuple[tuple[int, ...], ...],
    work_len: int,
    ranges: np.ndarray,
) -> list[int]:
    """The k chunks of :func:`_chunked` on approxsim's thread pool (a kernel without OpenMP);
    returns each chunk's status."""
    nb, r, _ = a.shape
    n = b.shape[-1]
    n_tiles = -(-n // nt)
    jobs = [
        (
            a.data_ptr() + 4 * k0 * a.stride(2), *a.stride(),
            b.data_ptr() + 4 * k0 * b.stride(1), *b.stride(),
            partial[ci].data_ptr(), *partial[ci].stride(),
            k1 - k0, n, lut.data_ptr(), lut_t.data_ptr(), mantissa_bits, rounding,
            0, nb, 0, r, 0, n_tiles, nt, min(kt, k1 - k0), int(direct),
        )
        for ci, (k0, k1) in enumerate(chunks)
    ]  # fmt: skip
    status = [0] * len(chunks)

    def call(j: int, lo: int, hi: int) -> None:
        work = buffer(f"native{j}", work_len, torch.float32).data_ptr()
        for ci in range(lo, hi):
            status[ci] = lib.approxsim_gemm_gather(*jobs[ci], work, ranges[ci].ctypes.data)

    run_jobs(call, [(j, lo, hi) for j, (lo, hi) in enumerate(parts)])
    return status


@functools.lru_cache(maxsize=512)
def _schedule(
    nb: int,
    r: int,
    k: int,
    n: int,
    mantissa_bits: int,
    workers: int,
    force: tuple[bool, bool] | None,
    k_tile: int | None,
    one_thread_ns: float,
    k_chunk: int,
) -> tuple[
    bool, bool, int, int, tuple[tuple[int, int], ...], tuple[tuple[int, ...], ...], int
]:  # fmt: skip
    """``(swap, direct, k_tile, n_tile, chunks, parts, work floats)`` of one call (cached:
    layers call with the same shapes every step). Without k chunks (``chunks`` empty),
    ``parts`` are the ``(b_lo, b_hi, r_lo, r_hi, t_lo, t_hi)`` blocks of the threads, in the
    kernel's (possibly swapped) orientation; with them, each thread's range of chunks."""
    cost, swap, direct = _best(r, k, n, mantissa_bits)
    if force is not None:
        swap, direct = force
    kt, nt = _tiles(swap, direct, r, k, n, mantissa_bits)
    if k_tile is not None:
        kt = max(1, min(k, k_tile))
    if swap:
        r, n = n, r
    n_tiles = -(-n // nt)
    if nb * cost < one_thread_ns:
        workers = 1
    lib = _load_library()
    if direct:
        work_len = int(lib.approxsim_direct_work(kt, nt))
    else:
        work_len = int(lib.approxsim_gather_work(kt, nt, mantissa_bits))
    n_chunks = -(-k // k_chunk)
    if (
        k >= 2 * k_chunk
        and nb * n_tiles < K_CHUNK_MAX_PIECES
        and 4 * n_chunks * nb * r * n <= K_CHUNK_PARTIAL_BYTES
    ):
        chunks = tuple(split_range(k, n_chunks))
        return swap, direct, kt, nt, chunks, tuple(split_range(len(chunks), workers)), work_len
    # Rows first where column tiles split unevenly: LeNet-5's conv2 input gradient
    # (12800×16×150, three 64-column tiles) split by tiles ran 1.4x faster on two threads than
    # on one, by rows 2.0x.
    tile_v = 0.0 if direct else k * (1 << mantissa_bits) * nt * COST_V
    tile_rows = r * k * (COST_DIRECT * nt if direct else COST_STEP[nt])
    parts = split_blocks(nb, r, n_tiles, workers, tile_v, tile_rows)
    return swap, direct, kt, nt, (), tuple(parts), work_len
