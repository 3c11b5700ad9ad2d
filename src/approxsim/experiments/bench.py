"""Speed benchmark of the approximate ops: approximate vs native float32 throughput.

``bench_ops`` (and ``approxsim bench ops``) times, for each problem of a small registry, the
approximate path with one multiplier against native float32 PyTorch, for two passes:

* ``forward`` — the product alone, under ``torch.no_grad()`` (inference);
* ``forward+backward`` — ``out = f(a, b)``, ``out.sum().backward()`` with gradients to both
  operands (the input and the weight of a convolution), as one training step does.

Each problem is a GEMM ``(R, K) × (K, N)``. Problems taken from convolution layers also have a
conv form, timed as ``approxsim.nn.ApproxConv2d`` against ``nn.Conv2d`` when ``approxsim.nn``
is importable (its rows are listed as skipped, with the reason, when it is not). Throughput is
GMAC/s: ``R·K·N`` multiply-accumulates for the forward pass and three times that for
forward+backward (the input- and weight-gradient GEMMs have the same size). A time is the
median of ``reps`` timed calls after ``warmup`` untimed ones (the warm-up also absorbs Numba
and Triton compilation); on CUDA the device is synchronized before and after each call.

The numbers are wall-clock times on a possibly shared machine: compare ratios measured in one
run, and keep the machine record (written with ``--json``) next to any number you quote.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import datetime
import fnmatch
import gc
import importlib
import importlib.metadata
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from approxsim._text import text_table
from approxsim.cli.common import int_at_least
from approxsim.errors import ApproxsimError
from approxsim.multipliers import Multiplier, MultiplierError, get_multiplier
from approxsim.ops import matmul as approx_matmul

__all__ = [
    "BenchError",
    "ConvGeometry",
    "Problem",
    "PROBLEMS",
    "DEFAULT_PROBLEMS",
    "QUICK_PROBLEMS",
    "PASSES",
    "list_problems",
    "bench_ops",
    "machine_record",
    "format_table",
    "save_results",
    "add_bench_parser",
    "run_bench_cli",
]

#: Identifies the layout of the result dictionary (and of the JSON file written from it).
SCHEMA = "approxsim.bench.ops/1"

#: The timed passes, in table order.
PASSES = ("forward", "forward+backward")

#: MACs of a pass in units of the forward GEMM: backward adds two GEMMs of the same size.
_MAC_FACTOR = {"forward": 1, "forward+backward": 3}


class BenchError(ApproxsimError, ValueError):
    """A benchmark setting that cannot run; the message says what to change."""


# ---------------------------------------------------------------------------- problems
@dataclass(frozen=True)
class ConvGeometry:
    """A stride-1 2-D convolution with a square kernel, and the GEMM it lowers to.

    Lowered by im2col, the convolution is ``(R, K) × (K, N)`` with ``R = batch · H_out · W_out``
    output pixels, ``K = in_channels · kernel_size²`` and ``N = out_channels``.

    Attributes:
        batch: Batch size.
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Side of the square kernel.
        height: Input height (before padding).
        width: Input width (before padding).
        padding: Zero padding on each side.
    """

    batch: int
    in_channels: int
    out_channels: int
    kernel_size: int
    height: int
    width: int
    padding: int = 0

    def __post_init__(self) -> None:
        for field in ("batch", "in_channels", "out_channels", "kernel_size", "height", "width"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise BenchError(f"ConvGeometry.{field} must be a positive int, got {value!r}")
        if not isinstance(self.padding, int) or self.padding < 0:
            raise BenchError(f"ConvGeometry.padding must be an int >= 0, got {self.padding!r}")
        if min(self.out_hw) < 1:
            raise BenchError(
                f"a {self.kernel_size}x{self.kernel_size} kernel does not fit a "
                f"{self.height}x{self.width} input with padding {self.padding}"
            )

    @property
    def out_hw(self) -> tuple[int, int]:
        """Output height and width."""
        pad = 2 * self.padding - self.kernel_size + 1
        return self.height + pad, self.width + pad

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """Shape of the input tensor, ``(batch, in_channels, height, width)``."""
        return self.batch, self.in_channels, self.height, self.width

    def gemm_shape(self) -> tuple[int, int, int]:
        """``(R, K, N)`` of the lowered GEMM."""
        ho, wo = self.out_hw
        return (
            self.batch * ho * wo,
            self.in_channels * self.kernel_size**2,
            self.out_channels,
        )


@dataclass(frozen=True)
class Problem:
    """One benchmark problem: a GEMM ``(R, K) × (K, N)``, optionally from a convolution.

    Attributes:
        name: Registry name (used by ``--problems``).
        description: What the shape is, for reports.
        r: Rows of A (output pixels of a convolution).
        k: Reduction length.
        n: Columns of B (output channels of a convolution).
        conv: The convolution this GEMM lowers, or None for a plain GEMM; it must give the
            same ``(r, k, n)``.
    """

    name: str
    description: str
    r: int
    k: int
    n: int
    conv: ConvGeometry | None = None

    def __post_init__(self) -> None:
        for field in ("r", "k", "n"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise BenchError(f"Problem.{field} must be a positive int, got {value!r}")
        if self.conv is not None and self.conv.gemm_shape() != (self.r, self.k, self.n):
            raise BenchError(
                f"problem {self.name!r}: its convolution lowers to R, K, N = "
                f"{self.conv.gemm_shape()}, not the declared {(self.r, self.k, self.n)}"
            )

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the forward GEMM, ``R · K · N``."""
        return self.r * self.k * self.n

    @property
    def shape(self) -> str:
        """``"RxKxN"``."""
        return f"{self.r}x{self.k}x{self.n}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (with the MAC count)."""
        out = dataclasses.asdict(self)
        out["macs"] = self.macs
        return out


def _registry(*problems: Problem) -> dict[str, Problem]:
    return {p.name: p for p in problems}


#: Every known problem by name. R, K, N are written out by hand and each conv geometry is
#: checked against them when the registry is built (a typo in either fails at import).
PROBLEMS: dict[str, Problem] = _registry(
    Problem("gemm512", "square GEMM 512", 512, 512, 512),
    Problem("gemm1024", "square GEMM 1024", 1024, 1024, 1024),
    Problem(
        "lenet5_conv1",
        "LeNet-5 conv1, batch 32: 1->6 ch, 5x5, 28x28 input, padding 2",
        32 * 28 * 28,
        25,
        6,
        ConvGeometry(32, 1, 6, 5, 28, 28, padding=2),
    ),
    Problem(
        "lenet5_conv2",
        "LeNet-5 conv2, batch 32: 6->16 ch, 5x5, 14x14 input",
        32 * 10 * 10,
        150,
        16,
        ConvGeometry(32, 6, 16, 5, 14, 14),
    ),
    Problem(
        "resnet18_layer1",
        "ResNet-18 (CIFAR stem) layer1 conv, batch 32: 64->64 ch, 3x3, 32x32, padding 1",
        32 * 32 * 32,
        576,
        64,
        ConvGeometry(32, 64, 64, 3, 32, 32, padding=1),
    ),
    Problem(
        "resnet18_layer4",
        "ResNet-18 (CIFAR stem) layer4 conv, batch 32: 512->512 ch, 3x3, 4x4, padding 1",
        32 * 4 * 4,
        4608,
        512,
        ConvGeometry(32, 512, 512, 3, 4, 4, padding=1),
    ),
    Problem(
        "resnet50_layer1_reduce",
        "ResNet-50 (CIFAR stem) layer1 1x1 reduce, batch 32: 256->64 ch, 32x32",
        32 * 32 * 32,
        256,
        64,
        ConvGeometry(32, 256, 64, 1, 32, 32),
    ),
    Problem(
        "resnet50_layer1_expand",
        "ResNet-50 (CIFAR stem) layer1 1x1 expand, batch 32: 64->256 ch, 32x32",
        32 * 32 * 32,
        64,
        256,
        ConvGeometry(32, 64, 256, 1, 32, 32),
    ),
    Problem(
        "resnet50_layer4_reduce",
        "ResNet-50 (CIFAR stem) layer4 1x1 reduce, batch 32: 2048->512 ch, 4x4",
        32 * 4 * 4,
        2048,
        512,
        ConvGeometry(32, 2048, 512, 1, 4, 4),
    ),
    # Larger shapes, named explicitly (minutes on a 2-core CPU).
    Problem("gemm2048", "square GEMM 2048", 2048, 2048, 2048),
    Problem("gemm4096", "square GEMM 4096", 4096, 4096, 4096),
    Problem(
        "lenet5_conv1_b128",
        "LeNet-5 conv1, batch 128: 1->6 ch, 5x5, 28x28 input, padding 2",
        128 * 28 * 28,
        25,
        6,
        ConvGeometry(128, 1, 6, 5, 28, 28, padding=2),
    ),
    Problem(
        "lenet5_conv2_b128",
        "LeNet-5 conv2, batch 128: 6->16 ch, 5x5, 14x14 input",
        128 * 10 * 10,
        150,
        16,
        ConvGeometry(128, 6, 16, 5, 14, 14),
    ),
    Problem(
        "resnet18_layer1_b128",
        "ResNet-18 (CIFAR stem) layer1 conv, batch 128: 64->64 ch, 3x3, 32x32, padding 1",
        128 * 32 * 32,
        576,
        64,
        ConvGeometry(128, 64, 64, 3, 32, 32, padding=1),
    ),
    Problem(
        "resnet18_layer4_b128",
        "ResNet-18 (CIFAR stem) layer4 conv, batch 128: 512->512 ch, 3x3, 4x4, padding 1",
        128 * 4 * 4,
        4608,
        512,
        ConvGeometry(128, 512, 512, 3, 4, 4, padding=1),
    ),
    # Tiny shapes for tests and smoke runs (--quick): milliseconds per call.
    Problem("tiny_gemm", "tiny square GEMM 48 (smoke test)", 48, 48, 48),
    Problem(
        "tiny_conv",
        "tiny conv, batch 2: 3->4 ch, 3x3, 8x8, padding 1 (smoke test)",
        2 * 8 * 8,
        27,
        4,
        ConvGeometry(2, 3, 4, 3, 8, 8, padding=1),
    ),
)

#: Problems run when none are named.
DEFAULT_PROBLEMS: tuple[str, ...] = (
    "gemm512",
    "gemm1024",
    "lenet5_conv1",
    "lenet5_conv2",
    "resnet18_layer1",
    "resnet18_layer4",
    "resnet50_layer1_reduce",
    "resnet50_layer1_expand",
    "resnet50_layer4_reduce",
)

#: Problems run by ``quick=True`` / ``--quick``.
QUICK_PROBLEMS: tuple[str, ...] = ("tiny_gemm", "tiny_conv")


def list_problems(pattern: str = "*") -> list[str]:
    """Names of the registered problems matching a shell pattern, in registry order.

    Args:
        pattern: A :mod:`fnmatch` pattern, e.g. ``"resnet18*"``.

    Returns:
        The matching names.
    """
    return [name for name in PROBLEMS if fnmatch.fnmatchcase(name, pattern)]


def _resolve_problems(problems: str | Sequence[str | Problem] | None, quick: bool) -> list[Problem]:
    if problems is None:
        items: list[str | Problem] = list(QUICK_PROBLEMS if quick else DEFAULT_PROBLEMS)
    elif isinstance(problems, str):
        items = [p.strip() for p in problems.split(",") if p.strip()]
    else:
        items = list(problems)
    if not items:
        raise BenchError("no problems to run; name at least one (see list_problems())")
    out: list[Problem] = []
    for item in items:
        if isinstance(item, Problem):
            out.append(item)
        elif isinstance(item, str) and item in PROBLEMS:
            out.append(PROBLEMS[item])
        else:
            raise BenchError(f"unknown problem {item!r}; known problems: {', '.join(PROBLEMS)}")
    return out


# ---------------------------------------------------------------------------- settings
def _resolve_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise BenchError(f"bad device {device!r}: {exc}; use 'cpu' or 'cuda'") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BenchError("CUDA is not available on this machine; use device 'cpu'")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    elif dev.type != "cpu":
        raise BenchError(f"device {dev.type!r} is not supported; use 'cpu' or 'cuda'")
    return dev


@contextlib.contextmanager
def _run_settings(device: torch.device, tf32: bool, threads: int | None) -> Iterator[None]:
    """Apply thread count and TF32 flags for the run; restore the caller's afterwards."""
    import numba

    saved_torch = torch.get_num_threads()
    saved_numba = numba.get_num_threads()
    saved_tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        if threads is not None:
            torch.set_num_threads(threads)
            # The CPU kernel's decode step runs on Numba's pool, which cannot grow past
            # NUMBA_NUM_THREADS (fixed at import).
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
        if device.type == "cuda":
            # Native float32 must be IEEE float32 for a like-for-like baseline unless asked.
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        yield
    finally:
        torch.set_num_threads(saved_torch)
        numba.set_num_threads(saved_numba)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved_tf32


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


def machine_record(
    device: str | torch.device = "cpu", argv: Sequence[str] | None = None
) -> dict[str, Any]:
    """What ran the benchmark: CPU, cores, threads, library versions, GPU, date, command.

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
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "torch_threads": torch.get_num_threads(),
        "numba_threads": numba.get_num_threads(),
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
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(argv),
    }


# ---------------------------------------------------------------------------- timing
@dataclass
class _Path:
    """One implementation of a problem: an inference call and a training step."""

    forward: Callable[[], Tensor]
    step: Callable[[], None]


def _synchronizer(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def _time_calls(
    fn: Callable[[], object], reps: int, warmup: int, sync: Callable[[], None]
) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def _rss_kib(field: str) -> int | None:
    """``VmRSS`` or ``VmHWM`` of this process in KiB (Linux), else ``None``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _peak_bytes(fn: Callable[[], object], device: torch.device) -> int | None:
    """Memory one call of ``fn`` needs beyond what is already allocated: on CUDA the peak of
    torch's allocator; on CPU (Linux) the rise of the process's peak resident set over its
    resident set just before the call, after returning free heap to the system and resetting
    the peak (``/proc/self/clear_refs``). ``None`` where neither can be measured. Memory
    approxsim keeps between calls (kernel scratch space, recycled patch matrices) is released
    first, so the call's whole workspace counts, as it would on its first call."""
    from approxsim.ops._cpu import release_kept_memory

    release_kept_memory()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        allocated = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - allocated)
    try:
        ctypes.CDLL(None).malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
    except (OSError, AttributeError):
        return None
    resident = _rss_kib("VmRSS")
    fn()
    peak = _rss_kib("VmHWM")
    if resident is None or peak is None:
        return None
    return max(0, peak - resident) * 1024


def _timing(times: list[float], macs: int) -> dict[str, Any]:
    median = statistics.median(times)
    return {
        "median_s": median,
        "min_s": min(times),
        "times_s": times,
        "gmac_per_s": macs / median / 1e9,
    }


def _randn(
    shape: Sequence[int], gen: torch.Generator, device: torch.device, scale: float
) -> Tensor:
    # Drawn on the CPU from a private generator: the same operands on every device, and the
    # caller's global RNG is left alone.
    return (torch.randn(*shape, generator=gen) * scale).to(device)


def _gemm_paths(
    problem: Problem, mult: Multiplier, device: torch.device, gen: torch.Generator
) -> tuple[_Path, _Path]:
    a = _randn((problem.r, problem.k), gen, device, 1.0)
    b = _randn((problem.k, problem.n), gen, device, problem.k**-0.5)
    a_req = a.clone().requires_grad_()
    b_req = b.clone().requires_grad_()

    def make(fn: Callable[[Tensor, Tensor], Tensor]) -> _Path:
        def forward() -> Tensor:
            with torch.no_grad():
                return fn(a, b)

        def step() -> None:
            a_req.grad = None
            b_req.grad = None
            fn(a_req, b_req).sum().backward()

        return _Path(forward, step)

    return make(lambda x, y: approx_matmul(x, y, mult)), make(torch.matmul)


class _Skip(Exception):
    """This form of a problem cannot run here; the message says why."""


def _approx_conv_class() -> Any:
    try:
        # import_module (not ``import approxsim.nn``) so a stand-in in sys.modules is honoured.
        approx_nn = importlib.import_module("approxsim.nn")
    except Exception as exc:  # noqa: BLE001 - any import failure only skips the conv rows
        raise _Skip(f"approxsim.nn is not importable ({type(exc).__name__}: {exc})") from exc
    cls = getattr(approx_nn, "ApproxConv2d", None)
    if cls is None:
        raise _Skip("approxsim.nn has no ApproxConv2d")
    return cls


def _conv_paths(
    problem: Problem, mult: Multiplier, device: torch.device, gen: torch.Generator
) -> tuple[_Path, _Path]:
    g = problem.conv
    assert g is not None  # callers pass conv problems only
    cls = _approx_conv_class()
    args = (g.in_channels, g.out_channels, g.kernel_size)
    with torch.random.fork_rng(devices=[]):  # layer init must not move the caller's RNG
        native = nn.Conv2d(*args, padding=g.padding, bias=False)
        try:
            approx = cls(*args, padding=g.padding, bias=False, multiplier=mult)
        except TypeError as exc:
            raise _Skip(
                f"approxsim.nn.ApproxConv2d(in, out, k, padding=, bias=, multiplier=) failed: {exc}"
            ) from exc
    with torch.no_grad():
        native.weight.copy_(
            _randn(native.weight.shape, gen, native.weight.device, 1 / g.kernel_size)
        )
        approx.weight.copy_(native.weight)
    native.to(device)
    approx.to(device)
    x = _randn(g.input_shape, gen, device, 1.0)
    x_req = x.clone().requires_grad_()

    def make(layer: nn.Module) -> _Path:
        def forward() -> Tensor:
            with torch.no_grad():
                return layer(x)  # type: ignore[no-any-return]

        def step() -> None:
            x_req.grad = None
            layer.zero_grad(set_to_none=True)
            layer(x_req).sum().backward()

        return _Path(forward, step)

    return make(approx), make(native)


def _rel_error(approx: Tensor, native: Tensor) -> float:
    diff = (approx.double() - native.double()).norm()
    ref = native.double().norm()
    return float(diff / ref) if ref > 0 else float(diff)


def _bench_form(
    problem: Problem,
    op: str,
    paths: tuple[_Path, _Path],
    reps: int,
    warmup: int,
    sync: Callable[[], None],
    report: Callable[[str, str], None],
    device: torch.device,
) -> list[dict[str, Any]]:
    approx, native = paths
    # One untimed forward of each path: a sanity check that the approximate path really is
    # approximate (a nonzero error for a non-exact multiplier), recorded with the rows.
    rel = _rel_error(approx.forward(), native.forward())
    rows = []
    for pass_name in PASSES:
        report(op, pass_name)
        macs = problem.macs * _MAC_FACTOR[pass_name]
        timings = {}
        for label, path in (("approx", approx), ("native", native)):
            fn = path.forward if pass_name == "forward" else path.step
            timings[label] = _timing(_time_calls(fn, reps, warmup, sync), macs)
            timings[label]["peak_bytes"] = _peak_bytes(fn, device)
        a, n = timings["approx"], timings["native"]
        rows.append(
            {
                "problem": problem.name,
                "op": op,
                "pass": pass_name,
                "shape": problem.shape,
                "r": problem.r,
                "k": problem.k,
                "n": problem.n,
                "macs": macs,
                "approx": a,
                "native": n,
                # Throughput ratio (< 1: the simulation is slower) and its inverse in time.
                "ratio": a["gmac_per_s"] / n["gmac_per_s"],
                "slowdown": a["median_s"] / n["median_s"],
                "forward_rel_error": rel,
            }
        )
    return rows


# ---------------------------------------------------------------------------- public API
def bench_ops(
    multiplier: str | Multiplier = "mitchell7",
    problems: str | Sequence[str | Problem] | None = None,
    reps: int = 5,
    warmup: int = 2,
    device: str | torch.device = "cpu",
    tf32: bool = False,
    *,
    threads: int | None = None,
    quick: bool = False,
    progress: Callable[[str], None] | None = None,
    argv: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Time approximate vs native float32 GEMMs (and convolutions), forward and backward.

    Every problem is timed as a GEMM, ``approxsim.matmul(a, b, multiplier)`` against
    ``torch.matmul(a, b)``; problems from convolution layers are also timed as
    ``approxsim.nn.ApproxConv2d`` against ``nn.Conv2d`` (bias-free, same weights) when
    ``approxsim.nn`` can be imported, and listed under ``"skipped"`` with the reason when not.

    Args:
        multiplier: A :class:`~approxsim.Multiplier` or a multiplier name.
        problems: Problem names (a list or a comma-separated string) or :class:`Problem`
            objects; default :data:`DEFAULT_PROBLEMS` (:data:`QUICK_PROBLEMS` with ``quick``).
        reps: Timed calls per measurement; the median is reported.
        warmup: Untimed calls before the timed ones.
        device: ``"cpu"`` or a CUDA device.
        tf32: On CUDA, let the native baseline use TF32 (default: IEEE float32, like for like).
        threads: Set ``torch.set_num_threads`` (and Numba's pool) for the run; default: leave
            them. The caller's settings are restored afterwards.
        quick: Default to the tiny :data:`QUICK_PROBLEMS` (seconds; for tests).
        progress: Called with one line of text as the run advances (the CLI prints to stderr).
        argv: Command line for the machine record; default ``sys.argv``.

    Returns:
        A JSON-ready dictionary: ``schema``, ``config`` (the settings), ``machine`` (see
        :func:`machine_record`), ``problems`` (name → shape), ``rows`` (one per problem, op and
        pass: ``approx`` and ``native`` timings with ``median_s``, ``min_s``, ``times_s``,
        ``gmac_per_s``; ``ratio`` = approx/native throughput; ``slowdown`` = approx/native
        time; ``forward_rel_error`` = ‖approx − native‖/‖native‖ of the forward output),
        ``skipped`` (rows that could not run, with a reason) and ``elapsed_s``.

    Raises:
        BenchError: unknown problems, bad counts, an unavailable device, ``tf32`` off CUDA.
        MultiplierError: an unknown multiplier name.
    """
    if isinstance(multiplier, str):
        mult = get_multiplier(multiplier)
    elif isinstance(multiplier, Multiplier):
        mult = multiplier
    else:
        raise MultiplierError(
            f"multiplier must be an approxsim.Multiplier or a name, got {type(multiplier).__name__}"
        )
    if not isinstance(reps, int) or reps < 1:
        raise BenchError(f"reps must be an int >= 1, got {reps!r}")
    if not isinstance(warmup, int) or warmup < 0:
        raise BenchError(f"warmup must be an int >= 0, got {warmup!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise BenchError(f"threads must be an int >= 1, got {threads!r}")
    probs = _resolve_problems(problems, quick)
    dev = _resolve_device(device)
    if tf32 and dev.type != "cuda":
        raise BenchError("tf32 applies to CUDA devices only; drop it or use device 'cuda'")
    say = progress if progress is not None else (lambda line: None)
    sync = _synchronizer(dev)
    forms = [(p, op) for p in probs for op in (("gemm", "conv") if p.conv else ("gemm",))]
    total = len(forms) * len(PASSES)
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    started = time.perf_counter()
    with _run_settings(dev, tf32, threads):
        config = {
            "multiplier": mult.name,
            "problems": [p.name for p in probs],
            "reps": reps,
            "warmup": warmup,
            "device": str(dev),
            "tf32": tf32,
            "threads": torch.get_num_threads(),
        }
        machine = machine_record(dev, argv)
        gen = torch.Generator().manual_seed(0)
        done = 0
        for problem, op in forms:

            def report(op_: str, pass_name: str, problem: Problem = problem) -> None:
                nonlocal done
                done += 1
                elapsed = time.perf_counter() - started
                say(
                    f"[{done}/{total}] {problem.name} {op_} {pass_name} "
                    f"({problem.shape}, {elapsed:.0f} s elapsed)"
                )

            try:
                build = _gemm_paths if op == "gemm" else _conv_paths
                paths = build(problem, mult, dev, gen)
            except _Skip as exc:
                skipped.append({"problem": problem.name, "op": op, "reason": str(exc)})
                done += len(PASSES)
                say(f"skipping {problem.name} {op}: {exc}")
                continue
            rows.extend(_bench_form(problem, op, paths, reps, warmup, sync, report, dev))
            del paths
    return {
        "schema": SCHEMA,
        "config": config,
        "machine": machine,
        "problems": {p.name: p.to_dict() for p in probs},
        "rows": rows,
        "skipped": skipped,
        "elapsed_s": time.perf_counter() - started,
    }


def _fmt_num(x: float) -> str:
    # Two decimals for ordinary rates, three significant digits for tiny ones (smoke tests).
    return f"{x:.2f}" if x >= 1 else f"{x:.3g}"


def _mib(nbytes: int | None) -> str:
    return "–" if nbytes is None else f"{nbytes / 2**20:.1f}"


def format_table(result: dict[str, Any]) -> str:
    """A readable, aligned table of a :func:`bench_ops` result.

    Args:
        result: What :func:`bench_ops` returned (or its JSON file, loaded).

    Returns:
        A header line, the table and notes (ratio definition, skipped rows), as one string.
    """
    cfg, mach = result["config"], result["machine"]
    where = mach["gpu"] if str(cfg["device"]).startswith("cuda") else mach["cpu"]
    title = (
        f"approxsim bench ops: multiplier {cfg['multiplier']}, device {cfg['device']} ({where}), "
        f"{cfg['threads']} threads, median of {cfg['reps']} after {cfg['warmup']} warm-up"
        + (", native TF32 on" if cfg.get("tf32") else "")
    )
    header = (
        "problem",
        "op",
        "shape RxKxN",
        "pass",
        "approx GMAC/s",
        "native GMAC/s",
        "ratio",
        "slowdown",
        "peak MiB approx/native",
    )
    body = [
        (
            row["problem"],
            row["op"],
            row["shape"],
            row["pass"],
            _fmt_num(row["approx"]["gmac_per_s"]),
            _fmt_num(row["native"]["gmac_per_s"]),
            _fmt_num(row["ratio"]),
            f"{row['slowdown']:.1f}x",
            f"{_mib(row['approx'].get('peak_bytes'))} / {_mib(row['native'].get('peak_bytes'))}",
        )
        for row in result["rows"]
    ]
    # Four text columns; numbers are right-aligned.
    lines = [title, *text_table(header, body, left=4)]
    lines.append(
        "ratio = approx/native throughput; slowdown = approx/native time; "
        "forward+backward counts 3x the forward MACs; peak MiB = memory one call needs "
        "beyond what is already allocated (CPU: rise of the peak resident set)"
    )
    for skip in result["skipped"]:
        lines.append(f"skipped {skip['problem']} {skip['op']}: {skip['reason']}")
    return "\n".join(lines)


def save_results(result: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a :func:`bench_ops` result as JSON (creating parent folders).

    Args:
        result: What :func:`bench_ops` returned.
        path: Destination file.

    Returns:
        The path written.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return out


# ---------------------------------------------------------------------------- CLI
def add_bench_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add ``bench`` (with its ``ops``, ``direct`` and ``models`` actions) to the ``approxsim``
    command's subparsers.

    Args:
        subparsers: What ``ArgumentParser.add_subparsers`` returned for the top-level
            commands (its ``dest`` should be ``"command"``).

    Returns:
        The parser of ``approxsim bench ops``.
    """
    bench = subparsers.add_parser(
        "bench",
        help="measure the speed of approximate ops",
        description="Measure the speed of approximate ops against native float32.",
    )
    bsub = bench.add_subparsers(dest="action", metavar="ACTION")
    bsub.required = True
    epilog = "problems:\n" + "\n".join(
        f"  {p.name:<16} {p.shape:<16} {p.description}" for p in PROBLEMS.values()
    )
    ops = bsub.add_parser(
        "ops",
        help="approximate vs native GEMM/conv throughput, forward and backward",
        description=(
            "Time approxsim.matmul against torch.matmul (and ApproxConv2d against nn.Conv2d "
            "where approxsim.nn is available), forward and forward+backward, and print GMAC/s "
            "and their ratio. Progress goes to stderr, the table to stdout."
        ),
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ops.add_argument(
        "--multiplier", default="mitchell7", metavar="NAME", help="multiplier (default: mitchell7)"
    )
    ops.add_argument(
        "--problems",
        metavar="LIST",
        help="comma-separated problem names (default: all but the tiny ones; see below)",
    )
    ops.add_argument(
        "--reps", type=int_at_least(1), default=5, help="timed calls, median reported (5)"
    )
    ops.add_argument(
        "--warmup", type=int_at_least(0), default=2, help="untimed calls before timing (2)"
    )
    ops.add_argument(
        "--threads", type=int_at_least(1), metavar="T", help="torch.set_num_threads(T) for the run"
    )
    ops.add_argument("--device", default="cpu", help="cpu (default) or cuda[:INDEX]")
    ops.add_argument(
        "--tf32", action="store_true", help="CUDA: let the native baseline use TF32 (default off)"
    )
    ops.add_argument(
        "--json", metavar="FILE", help="also write all results and a machine record to FILE"
    )
    ops.add_argument(
        "--quick", action="store_true", help="tiny problems only (seconds; a smoke test)"
    )
    ops.set_defaults(handler=run_bench_cli)
    from approxsim.experiments.bench_direct import add_direct_parser
    from approxsim.experiments.bench_models import add_models_parser

    add_direct_parser(bsub)
    add_models_parser(bsub)
    return ops


def _stderr(line: str) -> None:
    print(f"bench: {line}", file=sys.stderr, flush=True)


def run_bench_cli(args: argparse.Namespace) -> int:
    """Run ``approxsim bench ops`` from parsed arguments; returns the exit status.

    Prints progress to stderr and the table to stdout; writes ``--json FILE`` if given. User
    errors (unknown problem or multiplier, no CUDA, an unwritable JSON folder) print one line
    to stderr and return 2.

    Args:
        args: The namespace parsed by the parser :func:`add_bench_parser` added.

    Returns:
        0 on success, 2 on a user error.
    """
    try:
        if args.json:
            # Fail before minutes of timing, not after.
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        result = bench_ops(
            args.multiplier,
            args.problems,
            reps=args.reps,
            warmup=args.warmup,
            device=args.device,
            tf32=args.tf32,
            threads=args.threads,
            quick=args.quick,
            progress=_stderr,
        )
        print(format_table(result))
        if args.json:
            _stderr(f"results written to {save_results(result, args.json)}")
    except (BenchError, MultiplierError, OSError) as exc:
        print(f"approxsim: error: {exc}", file=sys.stderr)
        return 2
    return 0
