"""Running compiled user code (C/C++ models) in a child process with a time limit.

A user's model is code approxsim did not write: it may loop forever, dereference NULL, call
``abort()`` or ``exit()``. None of that may hang or end approxsim's process, so the compiled
library is never loaded here. Each evaluation starts ``python -I -S _cmodel_runner.py`` (a
fresh interpreter with only the standard library: a few milliseconds, and no ``fork`` of a
process with torch's threads running), which loads the library, calls it, and hands the results
back through files in a private temporary folder. The model's own output (``printf``) goes to a
log file there, so it can never corrupt the exchange or approxsim's standard output.

A crash is reported by its signal, a model that runs past the time limit is killed, a model
that ends the process itself is reported with its exit status: each as a one-line
:class:`CModelError` naming the model and what it was evaluating. Ctrl-C in approxsim kills the
child (its whole process group) at once and raises :class:`KeyboardInterrupt` as usual.

The time limit of one evaluation is :data:`BASE_SECONDS` plus :data:`SECONDS_PER_PRODUCT` per
model call, unless the caller passes one or ``$APPROXSIM_C_MODEL_TIMEOUT`` (seconds) is set.
"""

from __future__ import annotations

import contextlib
import dataclasses
import marshal
import math
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from approxsim.multipliers.core import MultiplierError

__all__ = [
    "BASE_SECONDS",
    "SECONDS_PER_PRODUCT",
    "TIME_LIMIT_ENV",
    "CModelError",
    "CModelCrashError",
    "CModelTimeoutError",
    "CModelExitError",
    "CModelLoadError",
    "MapJob",
    "GridJob",
    "GemmJob",
    "Job",
    "JobResult",
    "check_time_limit",
    "time_limit_for",
    "run_jobs",
    "RUN_PREFIX",
    "private_folder",
    "sweep_stale",
]

#: Seconds every evaluation may take regardless of its size (interpreter start, loading).
BASE_SECONDS = 30.0
#: Seconds added per model call: 10 µs, about 100x what a plain C model needs per product.
SECONDS_PER_PRODUCT = 1e-5
#: The environment variable that sets the time limit (seconds) of every C-model evaluation.
TIME_LIMIT_ENV = "APPROXSIM_C_MODEL_TIMEOUT"

#: Temporary folders of one evaluation (operands, results, the model's output) start so.
RUN_PREFIX = "approxsim-cmodel-run-"

_RUNNER = Path(__file__).with_name("_cmodel_runner.py")
_LOG_TAIL_BYTES = 4096


class CModelError(MultiplierError):
    """A compiled model failed while it ran in its child process (crash, time-out, exit)."""


class CModelCrashError(CModelError):
    """The model was killed by a signal (SIGSEGV, SIGABRT, SIGFPE, ...)."""


class CModelTimeoutError(CModelError):
    """The model did not finish within its time limit (and was killed)."""


class CModelExitError(CModelError):
    """The model ended its process itself (``exit()``) before returning its results."""


class CModelLoadError(CModelError):
    """The compiled library could not be loaded or lacks the function approxsim calls."""


@dataclasses.dataclass(frozen=True)
class MapJob:
    """One call ``entry(in_0, ..., in_k, out, n)`` over ``n`` elements.

    Attributes:
        entry: Exported function of the library.
        inputs: Equal-length 1-D contiguous arrays (any dtype the entry expects).
        out_dtype: Element type of the result.
        what: What this is, for messages ("the 8x8 grid").
    """

    entry: str
    inputs: tuple[np.ndarray, ...]
    out_dtype: np.dtype
    what: str

    @property
    def products(self) -> int:
        """Model calls this job makes."""
        return int(self.inputs[0].size) if self.inputs else 0


@dataclasses.dataclass(frozen=True)
class GridJob:
    """One call ``entry(values, out, n)`` filling ``out[i * n + j] = f(values[i], values[j])``.

    The whole operand grid of an integer model from ``n`` operand values: the child builds
    the pairs itself, so a 12-bit grid (2^24 pairs) costs no operand files.

    Attributes:
        entry: Exported function of the library.
        values: 1-D contiguous array of the ``n`` operand values (any dtype the entry expects).
        out_dtype: Element type of the ``n * n`` results.
        what: What this is, for messages ("the 256x256 grid").
    """

    entry: str
    values: np.ndarray
    out_dtype: np.dtype
    what: str

    @property
    def products(self) -> int:
        """Model calls this job makes."""
        return int(self.values.size) ** 2


@dataclasses.dataclass(frozen=True)
class GemmJob:
    """``C = A × Bᵗ`` in row blocks on ``threads`` threads, ``warmup`` + ``reps`` times.

    Attributes:
        entry: Exported ``entry(a, bt, c, k, n, r_lo, r_hi)`` of the library.
        a: float32 ``(R, K)``, C-contiguous.
        bt: float32 ``(N, K)``, C-contiguous.
        threads: Threads to split the rows over.
        reps: Timed calls (0: one untimed call, for the result only).
        warmup: Untimed calls first.
        what: What this is, for messages.
    """

    entry: str
    a: np.ndarray
    bt: np.ndarray
    threads: int
    reps: int
    warmup: int
    what: str

    @property
    def products(self) -> int:
        """Model calls this job makes (every call of the GEMM, warm-up included)."""
        r, k = self.a.shape
        return int(r * k * self.bt.shape[0]) * max(1, self.reps + self.warmup)


#: What :func:`run_jobs` runs.
Job = MapJob | GridJob | GemmJob


@dataclasses.dataclass(frozen=True)
class JobResult:
    """What one job produced.

    Attributes:
        output: The job's result (a :class:`MapJob`'s or :class:`GridJob`'s flat array, a
            :class:`GemmJob`'s ``(R, N)`` matrix).
        times: A GEMM's seconds per timed call; empty for a map.
    """

    output: np.ndarray
    times: list[float]


def check_time_limit(value: Any, what: str = "time_limit") -> float:
    """Validate a time limit in seconds (a positive finite number).

    Args:
        value: The limit to check.
        what: How the message names it.

    Returns:
        The limit as a float.

    Raises:
        MultiplierError: anything else.
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value <= 0:
        raise MultiplierError(f"{what} must be a positive number of seconds, got {value!r}")
    return float(value)


def time_limit_for(products: int, time_limit: float | None = None) -> float:
    """The time limit in seconds of an evaluation that makes ``products`` model calls.

    Args:
        products: Model calls of the evaluation.
        time_limit: The caller's limit; wins over ``$APPROXSIM_C_MODEL_TIMEOUT`` and the default.

    Returns:
        ``time_limit``, else the environment variable, else
        ``BASE_SECONDS + SECONDS_PER_PRODUCT * products``.

    Raises:
        MultiplierError: a limit (argument or environment variable) that is not a positive
            number of seconds.
    """
    if time_limit is not None:
        return check_time_limit(time_limit)
    env = os.environ.get(TIME_LIMIT_ENV, "").strip()
    if env:
        try:
            value = float(env)
        except ValueError:
            value = math.nan
        return check_time_limit(value, f"{TIME_LIMIT_ENV}={env!r}")
    return BASE_SECONDS + SECONDS_PER_PRODUCT * products


def private_folder(prefix: str) -> Path:
    """A new private temporary folder named ``<prefix><pid>-...`` (see :func:`sweep_stale`).

    Args:
        prefix: Start of the folder's name.

    Returns:
        The folder (mode 0700), in the system's temporary folder.
    """
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-"))


def sweep_stale(prefix: str) -> None:
    """Remove this user's temporary folders ``<prefix><pid>-...`` whose process is gone.

    Such a folder is normally removed by the process that made it; one killed with ``kill -9``
    cannot, and its folder (operands of a large grid, a compiled model) would stay for good.
    A folder whose process still exists, or may (another user's), is left alone.

    Args:
        prefix: The prefix the folders were made with (:func:`private_folder`).
    """
    root = Path(tempfile.gettempdir())
    try:
        candidates = list(root.glob(f"{prefix}*"))
    except OSError:
        return
    for path in candidates:
        pid = path.name[len(prefix) :].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            info = path.lstat()
            if info.st_uid != os.getuid() or not stat.S_ISDIR(info.st_mode):
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError:  # alive but not ours (PermissionError), or vanished meanwhile
            continue


def _last_output_line(log: Path) -> str:
    """The model's last line of output (stdout and stderr), shortened, or ''."""
    try:
        with open(log, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - _LOG_TAIL_BYTES))
            tail = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    if not lines:
        return ""
    line = lines[-1]
    return line if len(line) <= 160 else line[:157] + "..."


def _signal_text(signum: int) -> str:
    try:
        name = signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
    desc = signal.strsignal(signum) or ""
    return f"{name} ({desc[:1].lower() + desc[1:]})" if desc else name


def _stage(progress: Path, jobs: Sequence[Job]) -> str:
    """What the child was doing when it stopped (from its progress file)."""
    try:
        marks = progress.read_text().split()
    except OSError:
        marks = []
    if not marks:
        return "while starting"
    if marks[-1] == "load":
        return "while loading its library (a constructor function?)"
    return f"while evaluating {jobs[int(marks[-1])].what}"


def _failure(
    returncode: int, folder: Path, model: str, jobs: Sequence[Job], limit: float
) -> CModelError:
    """The error for a child that ended without a result."""
    stage = _stage(folder / "progress", jobs)
    said = _last_output_line(folder / "output.log")
    said = f"; its last output: {said!r}" if said else ""
    if returncode == -signal.SIGXCPU:
        return CModelTimeoutError(
            f"{model} used more than its CPU-time limit ({limit:g} s) {stage}; an infinite "
            f"loop? Raise the limit with time_limit=SECONDS or {TIME_LIMIT_ENV}=SECONDS{said}"
        )
    if returncode < 0:
        return CModelCrashError(
            f"{model} crashed with {_signal_text(-returncode)} {stage}{said}; call it from "
            "a small C program under a debugger to find the fault"
        )
    err = folder / "error.txt"
    if err.exists():
        text = " ".join(err.read_text(errors="replace").split())
        return CModelLoadError(f"{model} could not be run: {text}")
    return CModelExitError(
        f"{model} called exit({returncode}) {stage}, ending its process before it returned a "
        f"result{said}; a model must return its product, never exit"
    )


def _request(
    folder: Path, library: Path, jobs: Sequence[Job], cpu_seconds: int
) -> list[dict[str, Any]]:
    """Write the operands and the request file; return the job records."""
    records: list[dict[str, Any]] = []
    for i, job in enumerate(jobs):
        if isinstance(job, MapJob):
            inputs = []
            for j, arr in enumerate(job.inputs):
                path = folder / f"in-{i}-{j}.bin"
                np.ascontiguousarray(arr).tofile(path)
                inputs.append([str(path), int(arr.nbytes)])
            out_bytes = job.products * np.dtype(job.out_dtype).itemsize
            (folder / f"out-{i}.bin").touch(mode=0o600)
            records.append(
                {
                    "op": "map",
                    "entry": job.entry,
                    "inputs": inputs,
                    "output": [str(folder / f"out-{i}.bin"), out_bytes],
                    "n": job.products,
                }
            )
        elif isinstance(job, GridJob):
            path = folder / f"in-{i}-0.bin"
            np.ascontiguousarray(job.values).tofile(path)
            out_bytes = job.products * np.dtype(job.out_dtype).itemsize
            (folder / f"out-{i}.bin").touch(mode=0o600)
            records.append(
                {
                    "op": "grid",
                    "entry": job.entry,
                    "values": [str(path), int(job.values.nbytes)],
                    "output": [str(folder / f"out-{i}.bin"), out_bytes],
                    "n": int(job.values.size),
                }
            )
        else:
            job.a.tofile(folder / f"a-{i}.bin")
            job.bt.tofile(folder / f"bt-{i}.bin")
            (folder / f"out-{i}.bin").touch(mode=0o600)
            r, k = job.a.shape
            records.append(
                {
                    "op": "gemm",
                    "entry": job.entry,
                    "a": str(folder / f"a-{i}.bin"),
                    "bt": str(folder / f"bt-{i}.bin"),
                    "r": int(r),
                    "k": int(k),
                    "n": int(job.bt.shape[0]),
                    "threads": int(job.threads),
                    "reps": int(job.reps),
                    "warmup": int(job.warmup),
                    "output": str(folder / f"out-{i}.bin"),
                }
            )
    request = {
        "library": str(library),
        "parent": os.getpid(),
        "cpu_seconds": cpu_seconds,
        "progress": str(folder / "progress"),
        "result": str(folder / "result.txt"),
        "error": str(folder / "error.txt"),
        "jobs": records,
    }
    (folder / "request").write_bytes(marshal.dumps(request))
    return records


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the child and anything it started (its own process group), then reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    proc.wait()


def _wait_for_exit(proc: subprocess.Popen[bytes], limit: float) -> int:
    """The child's exit status, waiting at most ``limit`` seconds.

    ``Popen.wait(timeout=...)`` polls with sleeps of up to 50 ms, which would be most of the
    cost of a small evaluation; a Linux pidfd wakes us the moment the child ends.

    Raises:
        subprocess.TimeoutExpired: still running after ``limit`` seconds.
    """
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # not Linux, or a kernel older than 5.3
        return proc.wait(timeout=limit)
    deadline = time.monotonic() + limit
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(proc.args, limit)
            if select.select([pidfd], [], [], left)[0]:
                return proc.wait()
    finally:
        os.close(pidfd)


def _wait(
    proc: subprocess.Popen[bytes], limit: float, folder: Path, model: str, jobs: Sequence[Any]
) -> int:
    """The child's exit status; kill it on time-out or Ctrl-C (re-raised)."""
    try:
        return _wait_for_exit(proc, limit)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        stage = _stage(folder / "progress", jobs)
        raise CModelTimeoutError(
            f"{model} did not finish within {limit:g} s {stage}; an infinite loop? It was "
            f"stopped. A slow model may take longer with time_limit=SECONDS or "
            f"{TIME_LIMIT_ENV}=SECONDS"
        ) from None
    except BaseException:  # Ctrl-C (KeyboardInterrupt) or anything else: stop the model now
        _kill_group(proc)
        raise


def run_jobs(
    library: Path,
    model: str,
    jobs: Sequence[Job],
    *,
    time_limit: float | None = None,
) -> list[JobResult]:
    """Run ``jobs`` against the compiled ``library`` in one child process.

    Args:
        library: The model's shared library (never loaded into this process).
        model: How messages name the model ("the C model mymul in mul.c").
        jobs: What to evaluate, in order.
        time_limit: Seconds for all jobs together; default :func:`time_limit_for` of their
            total model calls.

    Returns:
        One :class:`JobResult` per job, in order.

    Raises:
        CModelCrashError: the model was killed by a signal.
        CModelTimeoutError: it ran past the limit (it is killed first).
        CModelExitError: it ended the process itself.
        CModelLoadError: the library could not be loaded or lacks an entry.
        MultiplierError: a bad time limit, or no Python interpreter to start.
        KeyboardInterrupt: Ctrl-C while the model ran (the child is killed first).
    """
    limit = time_limit_for(sum(job.products for job in jobs), time_limit)
    threads = max([j.threads for j in jobs if isinstance(j, GemmJob)] + [1])
    if not sys.executable:
        raise MultiplierError(
            "cannot evaluate a C model: no Python interpreter to start its child process "
            "(sys.executable is empty in this embedded Python)"
        )
    sweep_stale(RUN_PREFIX)
    folder = private_folder(RUN_PREFIX)
    try:
        records = _request(folder, library, jobs, math.ceil(limit * threads) + 5)
        with open(folder / "output.log", "wb") as log:
            # A session of its own: a terminal's Ctrl-C reaches approxsim only, which then
            # kills the whole group, rather than the child dying first and looking like a crash.
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-I", "-S", str(_RUNNER), str(folder / "request")],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
            except OSError as exc:
                raise MultiplierError(
                    f"cannot start a child process to evaluate {model}: {exc}"
                ) from None
            returncode = _wait(proc, limit, folder, model, jobs)
        # The model may have started processes of its own; none may outlive the evaluation.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        result = folder / "result.txt"
        if returncode != 0 or not result.exists():
            raise _failure(returncode, folder, model, jobs, limit)
        times = [[float(x) for x in line.split()] for line in result.read_text().splitlines()]
        out = []
        for job, record, job_times in zip(jobs, records, times, strict=True):
            if isinstance(job, (MapJob, GridJob)):
                data = np.fromfile(record["output"][0], dtype=job.out_dtype)
            else:
                r, n = job.a.shape[0], job.bt.shape[0]
                data = np.fromfile(record["output"], dtype=np.float32).reshape(r, n)
            out.append(JobResult(data, job_times))
        return out
    finally:
        shutil.rmtree(folder, ignore_errors=True)
