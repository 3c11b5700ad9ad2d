"""Building multipliers from C/C++ functional models (``float mul(float, float)``).

The user's source is compiled together with a small generated harness into a shared library
with the system compiler, evaluated over the mantissa grid and over random operands (the
decomposability check) in a child process with a time limit (see :mod:`.sandbox`: the user's
code never runs in approxsim's process), and the result is cached (see :mod:`.cache`) under a
key of everything that determines it. Nothing is compiled at import time.

The harness supplies what ApproxTrain-style models assume is there: ``<stdint.h>``,
``<stdbool.h>``, ``<string.h>``, ``<math.h>`` (their C++ twins in C++), and empty definitions
of CUDA's ``__device__``/``__host__``/``__forceinline__`` qualifiers. It compiles with
``-O2 -fno-strict-aliasing -ffp-contract=off`` so pointer-cast type punning behaves as the
model's author expects and no fused multiply-add changes a rounding.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from approxsim.multipliers import cache
from approxsim.multipliers.build import (
    check_sample_count,
    lut_and_report,
    multiplier_from_report,
)
from approxsim.multipliers.core import (
    Multiplier,
    MultiplierError,
    check_mantissa_bits,
    check_rounding,
)
from approxsim.multipliers.sandbox import (
    TIME_LIMIT_ENV,
    CModelCrashError,
    CModelError,
    CModelExitError,
    CModelLoadError,
    CModelTimeoutError,
    GemmJob,
    JobResult,
    MapJob,
    check_time_limit,
    private_folder,
    run_jobs,
    sweep_stale,
)

__all__ = [
    "from_c",
    "CompilerError",
    "CompilerNotFoundError",
    "FunctionNotFoundError",
    "WrongSignatureError",
    "HARNESS_VERSION",
    "load_cmodel",
    "CModel",
    "compile_model",
    "CModelError",
    "CModelCrashError",
    "CModelTimeoutError",
    "CModelExitError",
    "CModelLoadError",
    "TIME_LIMIT_ENV",
]

#: Bump when the harness or build flags change: it is part of every cache key.
HARNESS_VERSION = 2
CACHE_SECTION = "c-models"
_CXX_SUFFIXES = {".cc", ".cpp", ".cxx", ".c++", ".inl", ".hpp", ".hh", ".hxx", ".cu", ".cuh"}
_C_SUFFIXES = {".c", ".h"}
# -Wl,-z,defs turns a declared-but-undefined function into a link error instead of a library
# that fails to load.
_BASE_FLAGS = [
    "-O2",
    "-fPIC",
    "-shared",
    "-fno-strict-aliasing",
    "-ffp-contract=off",
    "-Wl,-z,defs",
]
_MARK = "APPROXSIM_FUNCTION_REFERENCE"
#: Temporary folders of :func:`load_cmodel`'s compiled models start so.
LIBRARY_PREFIX = "approxsim-cmodel-lib-"


class CompilerError(MultiplierError):
    """The compiler rejected the model; the message carries its output and the command."""


class CompilerNotFoundError(CompilerError):
    """No C/C++ compiler could be run."""


class FunctionNotFoundError(CompilerError):
    """The named function does not exist in the source."""


class WrongSignatureError(CompilerError):
    """The named function is not ``float (float, float)``."""


# ---------------------------------------------------------------------------- source handling
def _read_source(source: str | Path) -> tuple[str, Path | None]:
    """Return ``(text, path)``; ``path`` is None when ``source`` is the code itself."""
    if isinstance(source, Path):
        if not source.is_file():
            raise FileNotFoundError(f"C/C++ model source not found: {source}")
        return source.read_text(), source
    if not isinstance(source, str):
        raise MultiplierError(
            f"source must be a path or the C/C++ code as a string, got {type(source).__name__}"
        )
    if "\n" not in source and Path(source).is_file():
        return Path(source).read_text(), Path(source)
    looks_like_code = "\n" in source or "(" in source or ";" in source
    if not looks_like_code:
        raise FileNotFoundError(
            f"C/C++ model source not found: {source} (pass a path to an existing file, "
            "or the source text itself)"
        )
    return source, None


def _language(path: Path | None, language: str | None) -> str:
    if language is not None:
        lang = language.lower().replace("cpp", "c++").replace("cxx", "c++")
        if lang not in ("c", "c++"):
            raise MultiplierError(f"language must be 'c' or 'c++', got {language!r}")
        return lang
    if path is not None and path.suffix.lower() in _CXX_SUFFIXES:
        return "c++"
    return "c"


#: Lines that let a model written for CUDA (``__device__ __forceinline__ float f(...)``, as
#: ApproxTrain's are) compile as plain C/C++; every generated harness starts with them.
CUDA_QUALIFIER_SHIM = (
    "#ifndef __device__",
    "#define __device__",
    "#endif",
    "#ifndef __host__",
    "#define __host__",
    "#endif",
    "#ifndef __forceinline__",
    "#define __forceinline__ inline",
    "#endif",
)


def _harness(model_file: str, function: str, language: str) -> tuple[str, int]:
    """Generated wrapper source and the line number of its reference to ``function``."""
    if language == "c++":
        head = [
            "#include <cstdint>",
            "#include <cstddef>",
            "#include <cstring>",
            "#include <cmath>",
            "#include <stdint.h>",
        ]
        ext_open, ext_close = 'extern "C" {', "}"
    else:
        head = [
            "#include <stdint.h>",
            "#include <stddef.h>",
            "#include <stdbool.h>",
            "#include <string.h>",
            "#include <math.h>",
        ]
        ext_open, ext_close = "", ""
    lines = [
        f"/* generated by approxsim (harness version {HARNESS_VERSION}); do not edit */",
        *head,
        *CUDA_QUALIFIER_SHIM,
        f'#include "{model_file}"',
        "typedef float (*approxsim_fn_t)(float, float);",
    ]
    ref_line = len(lines) + 1
    lines += [
        f"static approxsim_fn_t approxsim_model_fn = {function}; /* {_MARK} */",
        ext_open,
        "void approxsim_eval(const float *a, const float *b, float *out, int64_t n) {",
        "    for (int64_t k = 0; k < n; ++k) out[k] = approxsim_model_fn(a[k], b[k]);",
        "}",
        "/* Rows r_lo..r_hi of C = A x B with one model call per product (A: R x K, Bt: N x K, */",
        "/* both row-major): the direct simulation approxsim bench direct measures. */",
        "void approxsim_gemm(const float *a, const float *bt, float *c, int64_t k, int64_t n,",
        "                    int64_t r_lo, int64_t r_hi) {",
        "    for (int64_t r = r_lo; r < r_hi; ++r)",
        "        for (int64_t j = 0; j < n; ++j) {",
        "            const float *x = a + r * k, *y = bt + j * k;",
        "            float s = 0.0f;",
        "            for (int64_t q = 0; q < k; ++q) s += approxsim_model_fn(x[q], y[q]);",
        "            c[r * n + j] = s;",
        "        }",
        "}",
        f"int approxsim_harness_version(void) {{ return {HARNESS_VERSION}; }}",
        ext_close,
        "",
    ]
    return "\n".join(lines), ref_line


# ---------------------------------------------------------------------------- compiler
def find_compiler(language: str, compiler: str | None = None) -> str:
    """The compiler executable: ``compiler``, else ``$CXX``/``c++`` or ``$CC``/``cc``.

    Raises:
        CompilerNotFoundError: it is not on ``PATH``.
    """
    name = compiler or (
        os.environ.get("CXX", "c++") if language == "c++" else os.environ.get("CC", "cc")
    )
    exe = shutil.which(name)
    if exe is None:
        kind = "C++" if language == "c++" else "C"
        raise CompilerNotFoundError(
            f"no {kind} compiler found (looked for {name!r} on PATH). Install one "
            "(Debian/Ubuntu: apt-get install g++), or name it with compiler=... "
            f"or the {'CXX' if language == 'c++' else 'CC'} environment variable."
        )
    return exe


@functools.lru_cache(maxsize=16)
def compiler_identity(exe: str) -> str:
    """The compiler's resolved path and ``--version`` banner (part of the cache key)."""
    try:
        out = subprocess.run(
            [exe, "--version"], capture_output=True, text=True, timeout=60, check=False
        )
    except OSError as exc:
        raise CompilerNotFoundError(f"cannot run the compiler {exe}: {exc}") from None
    return f"{os.path.realpath(exe)}\n{out.stdout.strip()}"


def _classify_failure(
    stderr: str, function: str, cmd: list[str], source_label: str, ref_line: int
) -> CompilerError:
    ref = re.compile(rf"harness\.(c|cc):{ref_line}:")
    ref_errors = [ln for ln in stderr.splitlines() if ref.search(ln) and "error" in ln]
    cmd_text = " ".join(cmd)
    undefined = re.search(rf"undefined reference to [`'\"]?{re.escape(function)}\b", stderr)
    if undefined:
        return FunctionNotFoundError(
            f"function {function!r} is declared in {source_label} but never defined; "
            f"give it a body (`float {function}(float a, float b) {{ ... }}`)"
        )
    if ref_errors:
        text = " ".join(ref_errors)
        if any(p in text for p in _NOT_FOUND_PATTERNS):
            return FunctionNotFoundError(
                f"function {function!r} was not found in {source_label}: define "
                f"`float {function}(float a, float b)` there (compiler said: "
                f"{ref_errors[0].split('error:', 1)[-1].strip()})"
            )
        return WrongSignatureError(
            f"function {function!r} in {source_label} is not `float {function}(float, float)` "
            f"(compiler said: {ref_errors[0].split('error:', 1)[-1].strip()}). approxsim needs "
            "a function taking two floats and returning a float; wrap yours in one."
        )
    return CompilerError(
        f"compiling {source_label} failed.\ncommand: {cmd_text}\ncompiler output:\n{stderr.strip()}"
    )


_NOT_FOUND_PATTERNS = (
    "undeclared",
    "not declared",
    "is not a member of",
    "has not been declared",
    "no member named",
    "use of undeclared identifier",
)


class CModel:
    """A compiled functional model, run in a child process on numpy arrays.

    The shared library is never loaded into approxsim's process: every evaluation runs in a
    fresh child process with a time limit (see :mod:`.sandbox`), so a model that crashes,
    loops or exits raises a one-line :class:`CModelError` instead of taking approxsim down.

    Args:
        library: The shared library :func:`compile_model` built.
        function: The model's function name (for messages).
        source: Where the model came from, for messages (a file name, or None for source text).
        time_limit: Seconds each evaluation may take; default scales with the number of model
            calls (see :func:`.sandbox.time_limit_for`; ``$APPROXSIM_C_MODEL_TIMEOUT`` sets it
            for every evaluation).

    Raises:
        MultiplierError: a time limit that is not a positive number of seconds.
    """

    def __init__(
        self,
        library: Path,
        function: str,
        *,
        source: str | None = None,
        time_limit: float | None = None,
    ) -> None:
        self.library = Path(library)
        self.function = function
        self.time_limit = None if time_limit is None else check_time_limit(time_limit)
        where = f" in {source}" if source else ""
        self.description = f"the C model {function}{where}"

    def _run(self, jobs: list[MapJob | GemmJob]) -> list[JobResult]:
        return run_jobs(self.library, self.description, jobs, time_limit=self.time_limit)

    def evaluate_many(self, jobs: Sequence[tuple[np.ndarray, np.ndarray, str]]) -> list[np.ndarray]:
        """Evaluate several operand sets in one child process.

        Args:
            jobs: ``(a, b, what)`` per set: float32 arrays of equal shape and the words that
                name the set in error messages ("the 8x8 grid").

        Returns:
            The products of each set, shaped like its operands.

        Raises:
            ValueError: the operands of a set differ in shape.
            CModelError: the model crashed, ran past its time limit or exited.
        """
        tasks: list[MapJob | GemmJob] = []
        for a, b, what in jobs:
            a = np.ascontiguousarray(a, dtype=np.float32)
            b = np.ascontiguousarray(b, dtype=np.float32)
            if a.shape != b.shape:
                raise ValueError(f"operand shapes differ: {a.shape} and {b.shape}")
            tasks.append(
                MapJob("approxsim_eval", (a.reshape(-1), b.reshape(-1)), np.dtype(np.float32), what)
            )
        results = self._run(tasks)
        return [r.output.reshape(np.shape(a)) for r, (a, _, _) in zip(results, jobs, strict=True)]

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Evaluate the model elementwise on two float32 arrays of equal shape.

        Args:
            a: First operands.
            b: Second operands.

        Returns:
            The products, shaped like ``a``.

        Raises:
            ValueError: the shapes differ.
            CModelError: the model crashed, ran past its time limit or exited.
        """
        size = int(np.size(a))
        return self.evaluate_many([(a, b, f"{size} operand pair{'s' * (size != 1)}")])[0]

    def time_gemm(
        self, a: np.ndarray, b: np.ndarray, threads: int = 1, *, reps: int = 1, warmup: int = 0
    ) -> tuple[np.ndarray, list[float]]:
        """Time the direct simulation ``C = A × B`` in the child process.

        The model is called once per product and the products summed in float32, in plain
        compiled loops split over ``threads`` threads (by rows): what an engine without LUTs
        runs. Each call is timed inside the child, so starting it costs the timings nothing.

        Args:
            a: float32 ``(R, K)``.
            b: float32 ``(K, N)``.
            threads: Threads of the loop.
            reps: Timed calls (0: one untimed call, for the result only).
            warmup: Untimed calls before them.

        Returns:
            ``(C, seconds of each timed call)``.

        Raises:
            ValueError: shapes that do not multiply.
            CModelError: the model crashed, ran past its time limit or exited.
        """
        a = np.ascontiguousarray(a, dtype=np.float32)
        bt = np.ascontiguousarray(np.asarray(b, dtype=np.float32).T)
        if a.ndim != 2 or bt.ndim != 2 or a.shape[1] != bt.shape[1]:
            raise ValueError(f"cannot multiply shapes {a.shape} and {np.shape(b)}")
        r, k = a.shape
        what = f"the direct GEMM {r}x{k}x{bt.shape[0]} on {threads} thread{'s' * (threads != 1)}"
        job = GemmJob("approxsim_gemm", a, bt, max(1, int(threads)), reps, warmup, what)
        (result,) = self._run([job])
        return result.output, result.times

    def gemm(self, a: np.ndarray, b: np.ndarray, threads: int = 1) -> np.ndarray:
        """``C = A × B`` (float32 ``(R, K) × (K, N)``) calling the model once per product and
        summing in float32 (see :meth:`time_gemm`), in the child process.

        Args:
            a: float32 ``(R, K)``.
            b: float32 ``(K, N)``.
            threads: Threads of the loop (the sums do not depend on it).

        Returns:
            ``C``, float32 ``(R, N)``.

        Raises:
            ValueError: shapes that do not multiply.
            CModelError: the model crashed, ran past its time limit or exited.
        """
        return self.time_gemm(a, b, threads, reps=0)[0]


def compile_model(
    text: str,
    function: str,
    language: str,
    exe: str,
    out_dir: Path,
    *,
    flags: list[str] | None = None,
    include_dir: Path | None = None,
    source_label: str = "<source>",
) -> Path:
    """Compile ``text`` plus the harness into ``out_dir/model.so``; return its path.

    Raises:
        CompilerError (or a subclass): the compile failed or timed out.
    """
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_:]*", function):
        raise MultiplierError(f"{function!r} is not a valid C/C++ function name")
    suffix = "cc" if language == "c++" else "c"
    model_file = f"model.{suffix}"
    # The #line directive makes compiler messages name the user's file, not our copy.
    label = source_label.replace("\\", "/").replace('"', "'")
    (out_dir / model_file).write_text(f'#line 1 "{label}"\n{text}')
    harness, ref_line = _harness(model_file, function, language)
    (out_dir / f"harness.{suffix}").write_text(harness)
    std = ["-std=gnu++17"] if language == "c++" else ["-std=gnu11"]
    # gnu89 inline semantics make a C `inline` (e.g. CUDA's __forceinline__) emit a definition.
    werror = [] if language == "c++" else ["-Werror=incompatible-pointer-types", "-fgnu89-inline"]
    inc = [f"-I{include_dir}"] if include_dir is not None else []
    cmd = [
        exe,
        *_BASE_FLAGS,
        *std,
        *werror,
        *inc,
        *(flags or []),
        "-o",
        "model.so",
        f"harness.{suffix}",
        "-lm",
    ]
    try:
        res = subprocess.run(
            cmd, cwd=out_dir, capture_output=True, text=True, timeout=300, check=False
        )
    except subprocess.TimeoutExpired:
        raise CompilerError(
            f"compiling {source_label} timed out after 300 s: {' '.join(cmd)}"
        ) from None
    except OSError as exc:
        raise CompilerNotFoundError(f"cannot run the compiler {exe}: {exc}") from None
    if res.returncode != 0:
        raise _classify_failure(res.stderr, function, cmd, source_label, ref_line)
    return out_dir / "model.so"


# ---------------------------------------------------------------------------- public builder
def load_cmodel(
    source: str | Path,
    function: str,
    *,
    language: str | None = None,
    compiler: str | None = None,
    flags: list[str] | None = None,
    time_limit: float | None = None,
) -> CModel:
    """Compile a functional model without building a LUT (for the direct simulation baseline
    of ``approxsim bench direct``).

    The library lives in a private temporary folder removed when the process exits (at once
    if compiling fails); it is only ever loaded by the child processes that evaluate it.

    Args:
        source: As :func:`from_c`.
        function: As :func:`from_c`.
        language: As :func:`from_c`.
        compiler: As :func:`from_c`.
        flags: As :func:`from_c`.
        time_limit: As :func:`from_c`, for each evaluation.

    Returns:
        The compiled model.

    Raises:
        CompilerNotFoundError, CompilerError: as :func:`from_c`.
    """
    import atexit

    text, path = _read_source(source)
    lang = _language(path, language)
    exe = find_compiler(lang, compiler)
    if time_limit is not None:
        check_time_limit(time_limit)
    sweep_stale(LIBRARY_PREFIX)
    out_dir = private_folder(LIBRARY_PREFIX)
    try:
        so = compile_model(
            text,
            function,
            lang,
            exe,
            out_dir,
            flags=flags,
            include_dir=path.parent.resolve() if path is not None else None,
            source_label=str(path) if path is not None else "<source text>",
        )
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
    atexit.register(shutil.rmtree, out_dir, True)
    return CModel(
        so, function, source=path.name if path is not None else None, time_limit=time_limit
    )


def from_c(
    source: str | Path,
    function: str,
    mantissa_bits: int,
    *,
    language: str | None = None,
    compiler: str | None = None,
    flags: list[str] | None = None,
    rounding: str = "truncate",
    accept_mismatch: bool = False,
    check_samples: int = 65536,
    seed: int = 0,
    name: str | None = None,
    cache_results: bool = True,
    time_limit: float | None = None,
) -> Multiplier:
    """Build a multiplier from a C/C++ functional model.

    Args:
        source: Path to a ``.c``/``.cc``/``.cpp``/``.inl`` file, or the source text.
        function: Name of a ``float function(float, float)`` in it.
        mantissa_bits: M, the fraction bits the multiplier sees (1..11).
        language: ``"c"`` or ``"c++"``; default from the suffix (C++ for ``.cc``, ``.cpp``,
            ``.inl``...; C for ``.c`` and for source text).
        compiler: Compiler executable; default ``$CC``/``cc`` or ``$CXX``/``c++``.
        flags: Extra compiler flags (``["-DWIDTH=7"]``); part of the cache key.
        rounding: How operands are reduced to M bits (``"truncate"`` or ``"nearest"``).
        accept_mismatch: Accept a model that fails the decomposability check, recording the
            mismatch rate in ``provenance``.
        check_samples: Random operand pairs for the decomposability check.
        seed: Seed of those pairs.
        name: Report name (default ``function@file`` or ``function``).
        cache_results: Reuse and store results in the cache (see :func:`cache.cache_dir`).
            The key covers the source text, function, M, options, flags, compiler identity
            and harness version, but not headers the source includes: pass False after
            editing such a header.
        time_limit: Seconds the evaluation of the model (grid and check, in a child process)
            may take before it is stopped as a hang; default 30 s plus 10 µs per model call
            (about 72 s at M=11), or ``$APPROXSIM_C_MODEL_TIMEOUT``. Not part of the cache key.

    Returns:
        The LUT multiplier; ``provenance`` has ``builder="c"``, ``source_sha256``, the
        compiler identity and the decomposability report.

    Raises:
        FileNotFoundError: ``source`` names a file that does not exist.
        CompilerNotFoundError, CompilerError, FunctionNotFoundError, WrongSignatureError:
            compiling failed (the message has the compiler's output and command).
        NotDecomposableError: the model fails the check and ``accept_mismatch`` is False.
        CModelCrashError, CModelTimeoutError, CModelExitError: the model crashed (a signal),
            ran past the time limit, or ended its process itself while it was evaluated (in
            a child process: approxsim carries on, and nothing is left in the cache).
        MultiplierError: M, rounding, the time limit or LUT values out of range.
    """
    text, path = _read_source(source)
    if time_limit is not None:
        time_limit = check_time_limit(time_limit)
    mantissa_bits = check_mantissa_bits(mantissa_bits)
    rounding = check_rounding(rounding)
    check_samples = check_sample_count(check_samples)
    lang = _language(path, language)
    exe = find_compiler(lang, compiler)
    ident = compiler_identity(exe)
    source_label = str(path) if path is not None else "<source text>"
    label = f"{function}@{path.name}" if path is not None else function
    src_hash = hashlib.sha256(text.encode()).hexdigest()
    key = _cache_key(
        src_hash, function, mantissa_bits, rounding, lang, flags, ident, check_samples, seed
    )
    provenance: dict[str, Any] = {
        "builder": "c",
        "source_file": path.name if path is not None else None,
        "source_sha256": src_hash,
        "function": function,
        "language": lang,
        "flags": list(flags or []),
        "compiler": ident.splitlines()[1] if "\n" in ident else ident,
        "harness_version": HARNESS_VERSION,
        "cache_key": key,
    }
    report_name = name or label

    def finish(lut: np.ndarray, report: dict[str, Any]) -> Multiplier:
        return multiplier_from_report(
            report_name,
            mantissa_bits,
            lut,
            rounding,
            report,
            provenance,
            accept_mismatch=accept_mismatch,
            label=label,
        )

    job = _BuildJob(
        text,
        function,
        lang,
        exe,
        flags,
        path,
        source_label,
        mantissa_bits,
        rounding,
        check_samples,
        seed,
        report_name,
        time_limit,
    )
    if not cache_results:
        build_dir = cache.new_build_dir(CACHE_SECTION, key)
        try:
            lut, report = job.run(build_dir)
        finally:
            shutil.rmtree(build_dir, ignore_errors=True)
        return finish(lut, report)

    entry = cache.get_or_build(CACHE_SECTION, key, job.store)
    lut = np.load(entry.path / "lut.npy", allow_pickle=False)
    return finish(lut, entry.meta["decomposability"])


def _cache_key(
    src_hash: str,
    function: str,
    mantissa_bits: int,
    rounding: str,
    lang: str,
    flags: list[str] | None,
    ident: str,
    check_samples: int,
    seed: int,
) -> str:
    """The cache key of a C model's LUT: everything that determines it (not the time limit)."""
    key_fields = {
        "harness_version": HARNESS_VERSION,
        "source_sha256": src_hash,
        "function": function,
        "mantissa_bits": mantissa_bits,
        "rounding": rounding,
        "language": lang,
        "flags": list(flags or []),
        "compiler": ident,
        "check_samples": check_samples,
        "seed": seed,
    }
    return hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()


class _BuildJob:
    """Compile a model, evaluate its grid and run the check, in a private directory."""

    def __init__(
        self,
        text: str,
        function: str,
        lang: str,
        exe: str,
        flags: list[str] | None,
        path: Path | None,
        source_label: str,
        mantissa_bits: int,
        rounding: str,
        check_samples: int,
        seed: int,
        label: str,
        time_limit: float | None,
    ) -> None:
        self.text, self.function, self.lang, self.exe = text, function, lang, exe
        self.flags, self.path, self.source_label = flags, path, source_label
        self.mantissa_bits, self.rounding = mantissa_bits, rounding
        self.check_samples, self.seed, self.label = check_samples, seed, label
        self.time_limit = time_limit

    def run(self, build_dir: Path) -> tuple[np.ndarray, dict[str, Any]]:
        """Return the validated LUT and the decomposability report."""
        so = compile_model(
            self.text,
            self.function,
            self.lang,
            self.exe,
            build_dir,
            flags=self.flags,
            include_dir=self.path.parent.resolve() if self.path is not None else None,
            source_label=self.source_label,
        )
        model = CModel(
            so,
            self.function,
            source=self.path.name if self.path is not None else None,
            time_limit=self.time_limit,
        )
        return lut_and_report(
            model,
            self.mantissa_bits,
            self.rounding,
            check_samples=self.check_samples,
            seed=self.seed,
            label=self.label,
        )

    def store(self, build_dir: Path) -> dict[str, Any]:
        """Build into ``build_dir`` and save the LUT there; return the entry's ``meta``."""
        lut, report = self.run(build_dir)
        np.save(build_dir / "lut.npy", lut, allow_pickle=False)
        return {"decomposability": report}
