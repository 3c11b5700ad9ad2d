"""Run-time settings shared by every command: threads, device, seeding, the environment
record and the progress protocol.

One copy of each rule, so ``train``, ``eval``, ``cim`` and ``bench`` agree: a device name
resolves the same way everywhere (``cuda`` becomes the current CUDA device's index), thread
counts are set for torch and Numba together and restored afterwards, and long work reports
through one :class:`Progress` bar (tqdm when installed, a one-line fallback otherwise).
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import os
import platform
import random
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from approxsim.errors import ApproxsimError, DeviceError

__all__ = [
    "Progress",
    "ProgressLike",
    "ProgressFactory",
    "say",
    "thread_settings",
    "resolve_device",
    "seed_everything",
    "rng_state",
    "set_rng_state",
    "environment",
    "machine_record",
    "thread_environment",
    "describe_environment",
    "utc_now",
]


# ---------------------------------------------------------------------------- threads
@contextlib.contextmanager
def thread_settings(threads: int | None) -> Iterator[None]:
    """Set torch's thread count for a block; restore it afterwards.

    approxsim's kernels take their thread count from torch (the compiled ones run on torch's
    OpenMP team, the Numba ones on a pool sized by ``torch.get_num_threads()``), so this one
    setting governs them all. Numba's own threading layer is left alone: asking it for its
    thread count starts it, and its OpenMP layer loads a second libgomp into the process.

    Args:
        threads: Threads for torch's intra-op pool; ``None``: leave it as it is.

    Yields:
        Nothing; the previous thread count is back when the block ends (also on errors).
    """
    if threads is None:
        yield
        return
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        yield
    finally:
        torch.set_num_threads(saved)


# ---------------------------------------------------------------------------- device
def resolve_device(
    name: str | torch.device, error: type[ApproxsimError] = DeviceError
) -> torch.device:
    """The torch device named ``name``, checked to be usable on this machine.

    ``"cuda"`` without an index becomes the current CUDA device (``cuda:0`` unless the
    caller chose another), so records and messages always name one device.

    Args:
        name: ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (or a ``torch.device``).
        error: The exception class raised for a bad name (a command's own error type).

    Returns:
        The ``torch.device``.

    Raises:
        DeviceError: (or ``error``) the name is not a device, not a CPU or CUDA device, or
            CUDA was asked for and is not available.
    """
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise error(f"bad device {name!r}: {exc}; use 'cpu' or 'cuda'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise error(f"device {str(name)!r} was asked for but CUDA is not available; use 'cpu'")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    elif dev.type != "cpu":
        raise error(f"device {dev.type!r} is not supported; use 'cpu' or 'cuda'")
    return dev


# ---------------------------------------------------------------------------- seeding
def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (every CUDA device included)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every generator's state, as tensors and plain values (``torch.load(weights_only)``-safe)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()  # type: ignore[misc]
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators from a :func:`rng_state` dictionary."""
    random.setstate(_as_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(x: Any) -> Any:
    # Python's generator state comes back from a checkpoint as lists; setstate wants tuples.
    return tuple(_as_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


# ---------------------------------------------------------------------------- environment
def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def environment(device: torch.device) -> dict[str, Any]:
    """The software a run used (versions, platform, device, threads), for its config file."""
    from approxsim import __version__

    return {
        "approxsim": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
    }


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware", "cpu model") and value:
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


#: Environment variables that change how torch, its BLAS and approxsim's kernels use threads.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "OMP_PROC_BIND",
    "OMP_PLACES",
    "GOMP_SPINCOUNT",
    "KMP_BLOCKTIME",
    "KMP_AFFINITY",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMBA_NUM_THREADS",
    "APPROXSIM_CPU_KERNEL",
    "APPROXSIM_CPU_THREADS",
)

#: CPU features that decide which kernel code runs (recorded, not all of /proc/cpuinfo).
_CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "amx_tile")


def thread_environment() -> dict[str, str]:
    """The thread-related environment variables that are set, by name (empty: the default
    environment a user gets)."""
    return {k: os.environ[k] for k in THREAD_VARIABLES if k in os.environ}


def describe_environment(record: dict[str, Any]) -> str:
    """``"default environment"``, or the thread variables a :func:`machine_record` ran under."""
    env = record.get("environment") or {}
    if not env:
        return "default environment"
    return ", ".join(f"{k}={v}" for k, v in sorted(env.items()))


def _cpu_features() -> list[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    have = set(line.partition(":")[2].split())
                    return [x for x in _CPU_FEATURES if x in have]
    except OSError:
        pass
    return []


def _parallel_backend() -> str | None:
    for line in torch.__config__.parallel_info().splitlines():
        if line.startswith("ATen parallel backend:"):
            return line.partition(":")[2].strip()
    return None


def machine_record(
    device: str | torch.device = "cpu", argv: Sequence[str] | None = None
) -> dict[str, Any]:
    """What ran a benchmark: CPU and its vector features, cores, threads, the thread-related
    environment variables that were set, torch's parallel backend, library versions, GPU, date
    and command.

    Args:
        device: The benchmark's device; its GPU is named when it is a CUDA device.
        argv: The command line to record; default ``sys.argv``.

    Returns:
        A JSON-ready dictionary.
    """
    import numba

    from approxsim import __version__

    dev = torch.device(device)
    gpu = None
    if dev.type == "cuda" and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(dev)
    elif torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(0)
    try:
        usable: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = None
    argv = list(sys.argv if argv is None else argv)
    return {
        "cpu": _cpu_model(),
        "cpu_features": _cpu_features(),
        "environment": thread_environment(),
        "torch_parallel_backend": _parallel_backend(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "torch_threads": torch.get_num_threads(),
        # NUMBA_NUM_THREADS, not numba.get_num_threads(): that call starts Numba's threading
        # layer, whose OpenMP flavour maps a second libgomp beside torch's.
        "numba_threads": int(getattr(numba.config, "NUMBA_NUM_THREADS", 0)),
        "gpu": gpu,
        "cuda": torch.version.cuda,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            "approxsim": __version__,
            "torch": torch.__version__,
            "numba": _version("numba"),
            "triton": _version("triton"),
        },
        "date": utc_now(),
        "command": shlex.join(argv),
    }


# ---------------------------------------------------------------------------- progress
class ProgressLike(Protocol):
    """What long-running library functions report to: ``update(n)`` items done, ``close()``."""

    def update(self, n: int, loss: float | None = None, acc: float | None = None) -> None:
        """Count ``n`` more items."""

    def close(self) -> None:
        """Finish the report."""


#: Makes a progress report for a labelled piece of work of ``total`` items.
ProgressFactory = Callable[[str, int], ProgressLike]


class Progress:
    """A progress bar on stderr: tqdm when installed, else a one-line fallback.

    The one progress convention of approxsim: library functions take a
    :data:`ProgressFactory` (or a :class:`ProgressLike`) and never print; commands pass
    ``lambda desc, total: Progress(total, desc, enabled)``.

    Args:
        total: Number of items (images, chips) the bar counts to.
        desc: Label shown before the bar.
        enabled: Draw anything at all; ``False`` counts silently.
        unit: What is counted (``"img"``, ``"chip"``).
    """

    def __init__(self, total: int, desc: str, enabled: bool, unit: str = "img") -> None:
        self._enabled = enabled
        self._total = total
        self._desc = desc
        self._unit = unit
        self._done = 0
        self._start = time.perf_counter()
        self._last_draw = 0.0
        self._tqdm: Any = None
        self._tty = enabled and sys.stderr.isatty()
        if not enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self._tqdm = tqdm(
            total=total,
            desc=desc,
            unit=unit,
            unit_scale=False,
            file=sys.stderr,
            leave=False,
            dynamic_ncols=True,
            # A terminal redraws in place; a log file keeps every update, so fewer there.
            mininterval=0.5 if self._tty else 15.0,
        )

    @property
    def done(self) -> int:
        """Items counted so far."""
        return self._done

    def update(self, n: int, loss: float | None = None, acc: float | None = None) -> None:
        """Count ``n`` more items; show the running ``loss`` and ``acc`` when both are given."""
        self._done += n
        if not self._enabled:
            return
        if self._tqdm is not None:
            if loss is not None and acc is not None:
                self._tqdm.set_postfix(loss=f"{loss:.4f}", acc=f"{100 * acc:.2f}%", refresh=False)
            self._tqdm.update(n)
            return
        now = time.perf_counter()
        if self._tty and (now - self._last_draw > 0.2 or self._done >= self._total):
            self._last_draw = now
            rate = self._done / max(now - self._start, 1e-9)
            width = 24
            filled = int(width * self._done / max(self._total, 1))
            bar = "#" * filled + "." * (width - filled)
            stats = "" if loss is None or acc is None else f" loss {loss:.4f} acc {100 * acc:.2f}%"
            sys.stderr.write(
                f"\r{self._desc} [{bar}] {self._done}/{self._total}{stats} "
                f"{rate:.0f} {self._unit}/s"
            )
            sys.stderr.flush()

    def close(self) -> None:
        """Remove the bar from the terminal."""
        if self._tqdm is not None:
            self._tqdm.close()
        elif self._tty:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def say(enabled: bool, line: str) -> None:
    """Print a status line on stderr (the stream progress uses) when ``enabled``."""
    if enabled:
        print(line, file=sys.stderr, flush=True)
