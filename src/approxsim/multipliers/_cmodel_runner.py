"""Runs a compiled C/C++ model for approxsim in a process of its own.

approxsim never calls a user's compiled code in its own process: a model that loops forever,
dereferences NULL or calls ``exit()`` must not take approxsim with it. :mod:`.sandbox` starts
this file as a script in a fresh interpreter (``python -I -S _cmodel_runner.py REQUEST``), so
only the standard library is loaded here: no approxsim, numpy or torch, and it starts in a few
milliseconds.

``REQUEST`` is a :mod:`marshal` file (built in: importing :mod:`json` would cost more than
starting the interpreter) naming the shared library and a list of jobs; operands and results
travel as raw arrays in files beside it. Before each step the runner appends the step's index
to the progress file (``load`` before loading the library), so the parent can tell which job a
crash interrupted. On success it writes the result file (one line per job: the timed seconds)
and leaves with ``os._exit(0)``; a problem of its own (a missing symbol, a library that cannot
be loaded) goes to the error file as text. Anything else (no result and no error file) means
the model ended the process itself.

Jobs:

* ``map``: ``entry(const T0 *in0, ..., Tout *out, int64_t n)`` once over ``n`` elements (the
  element types are the caller's business: the runner only moves bytes).
* ``grid``: ``entry(const T *values, Tout *out, int64_t n)`` once, the entry filling all
  ``n * n`` results of the operand grid ``values x values`` (an integer model's table).
* ``gemm``: ``entry(a, bt, c, k, n, r_lo, r_hi)`` over row blocks on ``threads`` threads,
  ``warmup`` untimed and ``reps`` timed calls; the result file records the times.
"""

from __future__ import annotations

import ctypes
import marshal
import mmap
import os
import sys
import time
from typing import Any


def _limit_cpu(seconds: int) -> None:
    """A CPU-time limit, in case the parent dies and nobody kills a model that loops."""
    try:
        import resource
    except ImportError:  # pragma: no cover - non-POSIX
        return
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = seconds if hard == resource.RLIM_INFINITY else min(seconds, hard)
    new_hard = hard if hard != resource.RLIM_INFINITY else soft + 5
    try:
        resource.setrlimit(resource.RLIMIT_CPU, (soft, new_hard))
    except (ValueError, OSError):
        pass


def _die_with_parent(parent: int) -> None:
    """On Linux, ask to be killed when the parent dies (a kill -9 of approxsim)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None)
        libc.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent is already gone
        os._exit(0)


def _mapped(path: str, nbytes: int, *, writable: bool = False) -> Any:
    """The file's bytes as a ctypes buffer, mapped rather than copied (large grids)."""
    if nbytes == 0:
        return (ctypes.c_char * 0)()
    with open(path, "r+b" if writable else "rb") as fh:
        if writable:
            fh.truncate(nbytes)
        access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_COPY
        view = mmap.mmap(fh.fileno(), nbytes, access=access)
    if len(view) != nbytes:
        raise OSError(f"{path}: expected {nbytes} bytes, found {len(view)}")
    return (ctypes.c_char * nbytes).from_buffer(view)


def _entry(lib: Any, name: str, nargs: int, ints: int) -> Any:
    fn = getattr(lib, name)
    fn.restype = None
    fn.argtypes = [ctypes.c_void_p] * nargs + [ctypes.c_int64] * ints
    return fn


def _map(lib: Any, job: dict[str, Any]) -> list[float]:
    bufs = [_mapped(path, nbytes) for path, nbytes in job["inputs"]]
    out = _mapped(*job["output"], writable=True)
    fn = _entry(lib, job["entry"], len(bufs) + 1, 1)
    fn(*[ctypes.addressof(b) for b in bufs], ctypes.addressof(out), job["n"])
    return []


def _grid(lib: Any, job: dict[str, Any]) -> list[float]:
    values = _mapped(*job["values"])
    out = _mapped(*job["output"], writable=True)
    fn = _entry(lib, job["entry"], 2, 1)
    fn(ctypes.addressof(values), ctypes.addressof(out), job["n"])
    return []


def _gemm(lib: Any, job: dict[str, Any]) -> list[float]:
    r, k, n, threads = job["r"], job["k"], job["n"], job["threads"]
    a = _mapped(job["a"], 4 * r * k)
    bt = _mapped(job["bt"], 4 * n * k)
    c = _mapped(job["output"], 4 * r * n, writable=True)
    fn = _entry(lib, job["entry"], 3, 4)
    pa, pb, pc = ctypes.addressof(a), ctypes.addressof(bt), ctypes.addressof(c)
    import threading  # here: the grid and the check need no threads, and imports cost start-up

    step = -(-r // max(1, min(threads, r))) if r else 1
    spans = [(lo, min(r, lo + step)) for lo in range(0, r, step)]

    def once() -> None:
        if len(spans) <= 1:
            for lo, hi in spans:
                fn(pa, pb, pc, k, n, lo, hi)
            return
        # ctypes releases the GIL during the call, so the row blocks run in parallel.
        workers = [threading.Thread(target=fn, args=(pa, pb, pc, k, n, lo, hi)) for lo, hi in spans]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    for _ in range(job["warmup"]):
        once()
    times = []
    for _ in range(max(job["reps"], 1)):
        start = time.perf_counter()
        once()
        times.append(time.perf_counter() - start)
    return times[: job["reps"]]


_OPS = {"map": _map, "grid": _grid, "gemm": _gemm}


def _publish(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def main(request_path: str) -> None:
    """Load the library, run the request's jobs, and write the result (or the error) file."""
    with open(request_path, "rb") as fh:
        req = marshal.load(fh)
    _limit_cpu(int(req["cpu_seconds"]))
    _die_with_parent(int(req["parent"]))
    progress = os.open(req["progress"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(progress, b"load\n")
        lib = ctypes.CDLL(req["library"])
        results = []
        for i, job in enumerate(req["jobs"]):
            os.write(progress, f"{i}\n".encode())
            results.append(_OPS[job["op"]](lib, job))
    except Exception as exc:  # the runner's own trouble, reported to the parent in words
        _publish(req["error"], f"{type(exc).__name__}: {exc}")
        os._exit(0)
    _publish(req["result"], "".join(" ".join(map(repr, t)) + "\n" for t in results))
    # _exit: skip any exit handlers the model registered; the parent reads the result file.
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1])
