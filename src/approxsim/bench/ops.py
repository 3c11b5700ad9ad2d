"""``approxsim bench ops``: approximate vs native float32 throughput of GEMMs and convolutions.

:func:`bench_ops` times, for each problem of the registry (:mod:`approxsim.bench.problems`),
the approximate path with one multiplier against native float32 PyTorch, for two passes:

* ``forward`` — the product alone, under ``torch.no_grad()`` (inference);
* ``forward+backward`` — ``out = f(a, b)``, ``out.sum().backward()`` with gradients to both
  operands (the input and the weight of a convolution), as one training step does.

With an integer multiplier (``approxsim.IntMultiplier``) the approximate path is the integer
GEMM ``approxsim.matmul(a, b, int_multiplier)`` on random integer operand values (uniform over
the multiplier's range, int8/uint8 up to 8 bits), timed forward only (integer operands have no
gradient; quantized layers are timed by ``scripts/bench_quant.py``), against native float32
``torch.matmul`` of the same values; convolution forms are listed as skipped.

Each problem is a GEMM ``(R, K) × (K, N)``. Problems taken from convolution layers also have a
conv form, timed as ``approxsim.nn.ApproxConv2d`` against ``nn.Conv2d`` when ``approxsim.nn``
is importable (its rows are listed as skipped, with the reason, when it is not). Throughput is
GMAC/s: ``R·K·N`` multiply-accumulates for the forward pass and three times that for
forward+backward (the input- and weight-gradient GEMMs have the same size). A time is the
median of ``reps`` timed calls after ``warmup`` untimed ones (the warm-up also absorbs Numba
and Triton compilation); on CUDA the device is synchronized before and after each call.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from approxsim._runtime import describe_environment
from approxsim._text import text_table
from approxsim.bench.common import (
    BenchError,
    bench_device,
    machine_record,
    peak_bytes,
    random_tensor,
    run_settings,
    synchronizer,
    time_calls,
    timing,
)
from approxsim.bench.problems import Problem, resolve_problems
from approxsim.errors import ApproxsimError
from approxsim.multipliers import Multiplier, MultiplierError, get_multiplier
from approxsim.ops import matmul as approx_matmul
from approxsim.ops.intmatmul import IntMultiplierLike, is_int_multiplier

__all__ = ["SCHEMA", "PASSES", "bench_ops", "format_table"]

#: Identifies the layout of the result dictionary (and of the JSON file written from it).
SCHEMA = "approxsim.bench.ops/1"

#: The timed passes, in table order.
PASSES = ("forward", "forward+backward")

#: MACs of a pass in units of the forward GEMM: backward adds two GEMMs of the same size.
_MAC_FACTOR = {"forward": 1, "forward+backward": 3}


# ---------------------------------------------------------------------------- the two paths
@dataclass
class _Path:
    """One implementation of a problem: an inference call and a training step."""

    forward: Callable[[], Tensor]
    step: Callable[[], None]


def _gemm_paths(
    problem: Problem, mult: Multiplier, device: torch.device, gen: torch.Generator
) -> tuple[_Path, _Path]:
    a = random_tensor((problem.r, problem.k), gen, device, 1.0)
    b = random_tensor((problem.k, problem.n), gen, device, problem.k**-0.5)
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


def _int_operands(
    shape: tuple[int, int], mult: IntMultiplierLike, gen: torch.Generator, device: torch.device
) -> Tensor:
    """Operand values drawn uniformly over the multiplier's range, in the narrowest dtype."""
    lo = int(mult.min_value)
    values = torch.randint(lo, lo + (1 << int(mult.bits)), shape, generator=gen)
    if mult.bits <= 8:
        values = values.to(torch.int8 if mult.signed else torch.uint8)
    else:
        values = values.to(torch.int16)
    return values.to(device)


def _int_gemm_paths(
    problem: Problem, mult: IntMultiplierLike, device: torch.device, gen: torch.Generator
) -> tuple[_Path, _Path]:
    """The integer GEMM and native float32 on the same values (forward only)."""
    a = _int_operands((problem.r, problem.k), mult, gen, device)
    b = _int_operands((problem.k, problem.n), mult, gen, device)
    af, bf = a.float(), b.float()

    def no_step() -> None:
        raise AssertionError("integer GEMMs have no backward pass")  # never timed

    return (
        _Path(lambda: approx_matmul(a, b, mult), no_step),  # type: ignore[arg-type]
        _Path(lambda: torch.matmul(af, bf), no_step),
    )


class _Skip(ApproxsimError, RuntimeError):
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
            random_tensor(native.weight.shape, gen, native.weight.device, 1 / g.kernel_size)
        )
        approx.weight.copy_(native.weight)
    native.to(device)
    approx.to(device)
    x = random_tensor(g.input_shape, gen, device, 1.0)
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
    passes: Sequence[str] = PASSES,
) -> list[dict[str, Any]]:
    approx, native = paths
    # One untimed forward of each path: a sanity check that the approximate path really is
    # approximate (a nonzero error for a non-exact multiplier), recorded with the rows.
    rel = _rel_error(approx.forward(), native.forward())
    rows = []
    for pass_name in passes:
        report(op, pass_name)
        macs = problem.macs * _MAC_FACTOR[pass_name]
        timings = {}
        for label, path in (("approx", approx), ("native", native)):
            fn = path.forward if pass_name == "forward" else path.step
            timings[label] = timing(time_calls(fn, reps, warmup, sync), macs)
            timings[label]["peak_bytes"] = peak_bytes(fn, device)
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


def _multiplier(multiplier: str | Multiplier | IntMultiplierLike) -> Any:
    """The multiplier a name or object stands for (float, or integer as given)."""
    if isinstance(multiplier, str):
        return get_multiplier(multiplier)
    if isinstance(multiplier, Multiplier) or is_int_multiplier(multiplier):
        return multiplier
    raise MultiplierError(
        f"multiplier must be an approxsim.Multiplier or a name, got {type(multiplier).__name__}"
    )


def _check_counts(reps: int, warmup: int, threads: int | None) -> None:
    """Refuse repetition, warm-up and thread counts that cannot run."""
    if not isinstance(reps, int) or reps < 1:
        raise BenchError(f"reps must be an int >= 1, got {reps!r}")
    if not isinstance(warmup, int) or warmup < 0:
        raise BenchError(f"warmup must be an int >= 0, got {warmup!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise BenchError(f"threads must be an int >= 1, got {threads!r}")


# ---------------------------------------------------------------------------- public API
def bench_ops(
    multiplier: str | Multiplier | IntMultiplierLike = "mitchell7",
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

    With an integer multiplier the approximate path is the integer GEMM on integer operand
    values, forward only (see the module docstring); convolution forms are skipped.

    Args:
        multiplier: A :class:`~approxsim.Multiplier`, a multiplier name, or an
            ``approxsim.IntMultiplier``.
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
    mult = _multiplier(multiplier)
    integer = is_int_multiplier(mult)
    passes = ("forward",) if integer else PASSES
    _check_counts(reps, warmup, threads)
    probs = resolve_problems(problems, quick)
    dev = bench_device(device)
    if tf32 and dev.type != "cuda":
        raise BenchError("tf32 applies to CUDA devices only; drop it or use device 'cuda'")
    say = progress if progress is not None else (lambda line: None)
    sync = synchronizer(dev)
    forms = [(p, op) for p in probs for op in (("gemm", "conv") if p.conv else ("gemm",))]
    total = len(forms) * len(passes)
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    started = time.perf_counter()
    with run_settings(dev, tf32, threads):
        config = {
            "multiplier": mult.name,
            "multiplier_kind": "int" if integer else "float",
            # Names are reused for different circuits (EvoApproxLib releases): the table's
            # fingerprint says which one was timed.
            "multiplier_fingerprint": getattr(mult, "fingerprint", None) if integer else None,
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
                if integer and op == "conv":
                    raise _Skip(
                        "integer multipliers are timed as GEMMs; quantized layers are timed "
                        "by scripts/bench_quant.py"
                    )
                if integer:
                    paths = _int_gemm_paths(problem, mult, dev, gen)
                else:
                    build = _gemm_paths if op == "gemm" else _conv_paths
                    paths = build(problem, mult, dev, gen)
            except _Skip as exc:
                skipped.append({"problem": problem.name, "op": op, "reason": str(exc)})
                done += len(passes)
                say(f"skipping {problem.name} {op}: {exc}")
                continue
            rows.extend(_bench_form(problem, op, paths, reps, warmup, sync, report, dev, passes))
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
    name = cfg["multiplier"]
    if cfg.get("multiplier_kind") == "int":
        name += f" (integer, table {str(cfg.get('multiplier_fingerprint'))[:12]})"
    title = (
        f"approxsim bench ops: multiplier {name}, device {cfg['device']} ({where}), "
        f"{cfg['threads']} threads, median of {cfg['reps']} after {cfg['warmup']} warm-up"
        + (", native TF32 on" if cfg.get("tf32") else "")
        + f"; {describe_environment(mach)}"
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
