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

approxsim is timed in this process, as its environment is; native float32 in one child process
per native setting (:mod:`approxsim.bench.native`), which rebuilds each problem's operands from
the same seed, and each row keeps the fastest setting (ratios are against native at its best).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from approxsim._runtime import thread_environment
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
from approxsim.bench.native import (
    SAME_PROCESS,
    best_setting,
    protocol_line,
    resolve_native_settings,
    short_label,
    time_native,
)
from approxsim.bench.problems import Problem, resolve_problems
from approxsim.errors import ApproxsimError
from approxsim.multipliers import Multiplier, MultiplierError, get_multiplier
from approxsim.ops import matmul as approx_matmul
from approxsim.ops.intmatmul import IntMultiplierLike, is_int_multiplier

__all__ = ["SCHEMA", "PASSES", "bench_ops", "format_table", "native_timings"]

#: Identifies the layout of the result dictionary (and of the JSON file written from it).
SCHEMA = "approxsim.bench.ops/2"

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


def _make_path(fn: Callable[[Tensor, Tensor], Tensor], a: Tensor, b: Tensor) -> _Path:
    """``fn(a, b)`` without gradients, and a step with gradients to both operands."""
    a_req = a.clone().requires_grad_()
    b_req = b.clone().requires_grad_()

    def forward() -> Tensor:
        with torch.no_grad():
            return fn(a, b)

    def step() -> None:
        a_req.grad = None
        b_req.grad = None
        fn(a_req, b_req).sum().backward()

    return _Path(forward, step)


def _gemm_operands(
    problem: Problem, gen: torch.Generator, device: torch.device
) -> tuple[Tensor, Tensor]:
    a = random_tensor((problem.r, problem.k), gen, device, 1.0)
    b = random_tensor((problem.k, problem.n), gen, device, problem.k**-0.5)
    return a, b


def _int_operands(
    shape: tuple[int, int], ints: dict[str, Any], gen: torch.Generator, device: torch.device
) -> Tensor:
    """Operand values drawn uniformly over the multiplier's range, in the narrowest dtype.

    ``ints`` is :func:`_int_range` of the multiplier (so a child process needs no table).
    """
    lo, bits = int(ints["min_value"]), int(ints["bits"])
    values = torch.randint(lo, lo + (1 << bits), shape, generator=gen)
    if bits <= 8:
        values = values.to(torch.int8 if ints["signed"] else torch.uint8)
    else:
        values = values.to(torch.int16)
    return values.to(device)


def _int_range(mult: IntMultiplierLike) -> dict[str, Any]:
    return {"min_value": int(mult.min_value), "bits": int(mult.bits), "signed": bool(mult.signed)}


def _no_step() -> None:
    raise AssertionError("integer GEMMs have no backward pass")  # never timed


def _int_values(
    problem: Problem, ints: dict[str, Any], gen: torch.Generator, device: torch.device
) -> tuple[Tensor, Tensor]:
    a = _int_operands((problem.r, problem.k), ints, gen, device)
    b = _int_operands((problem.k, problem.n), ints, gen, device)
    return a, b


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


def _native_conv(
    problem: Problem, gen: torch.Generator, device: torch.device
) -> tuple[nn.Conv2d, Tensor]:
    """The native convolution (weights drawn from ``gen``) and its input."""
    g = problem.conv
    assert g is not None  # callers pass conv problems only
    with torch.random.fork_rng(devices=[]):  # layer init must not move the caller's RNG
        native = nn.Conv2d(
            g.in_channels, g.out_channels, g.kernel_size, padding=g.padding, bias=False
        )
    with torch.no_grad():
        native.weight.copy_(
            random_tensor(native.weight.shape, gen, native.weight.device, 1 / g.kernel_size)
        )
    native.to(device)
    return native, random_tensor(g.input_shape, gen, device, 1.0)


def _approx_conv(problem: Problem, mult: Multiplier, native: nn.Conv2d) -> nn.Module:
    """``ApproxConv2d`` with the native layer's weights, on its device."""
    g = problem.conv
    assert g is not None
    cls = _approx_conv_class()
    with torch.random.fork_rng(devices=[]):
        try:
            approx = cls(
                g.in_channels,
                g.out_channels,
                g.kernel_size,
                padding=g.padding,
                bias=False,
                multiplier=mult,
            )
        except TypeError as exc:
            raise _Skip(
                f"approxsim.nn.ApproxConv2d(in, out, k, padding=, bias=, multiplier=) failed: {exc}"
            ) from exc
    with torch.no_grad():
        approx.weight.copy_(native.weight.detach().cpu())
    return approx.to(native.weight.device)  # type: ignore[no-any-return]


def _layer_path(layer: nn.Module, x: Tensor) -> _Path:
    x_req = x.clone().requires_grad_()

    def forward() -> Tensor:
        with torch.no_grad():
            return layer(x)  # type: ignore[no-any-return]

    def step() -> None:
        x_req.grad = None
        layer.zero_grad(set_to_none=True)
        layer(x_req).sum().backward()

    return _Path(forward, step)


def _form_paths(
    problem: Problem,
    op: str,
    mult: Any,
    ints: dict[str, Any] | None,
    device: torch.device,
    seed: int,
) -> tuple[_Path | None, _Path]:
    """The approximate path (``None`` when ``mult`` is ``None``) and the native one of a form.

    The operands come from a generator seeded with ``seed``, so a child process that builds
    only the native path gets the same values.
    """
    gen = torch.Generator().manual_seed(seed)
    if ints is not None:
        a, b = _int_values(problem, ints, gen, device)
        af, bf = a.float(), b.float()
        native = _Path(lambda: torch.matmul(af, bf), _no_step)
        approx = None if mult is None else _Path(lambda: approx_matmul(a, b, mult), _no_step)
        return approx, native
    if op == "gemm":
        a, b = _gemm_operands(problem, gen, device)
        native = _make_path(torch.matmul, a, b)
        if mult is None:
            return None, native
        return _make_path(lambda x, y: approx_matmul(x, y, mult), a, b), native
    layer, x = _native_conv(problem, gen, device)
    if mult is None:
        return None, _layer_path(layer, x)
    return _layer_path(_approx_conv(problem, mult, layer), x), _layer_path(layer, x)


def _rel_error(approx: Tensor, native: Tensor) -> float:
    diff = (approx.double() - native.double()).norm()
    ref = native.double().norm()
    return float(diff / ref) if ref > 0 else float(diff)


def _time_pass(
    path: _Path,
    pass_name: str,
    macs: int,
    reps: int,
    warmup: int,
    sync: Callable[[], None],
    device: torch.device,
) -> dict[str, Any]:
    """The timing record of one pass of one path, with its peak memory."""
    fn = path.forward if pass_name == "forward" else path.step
    record = timing(time_calls(fn, reps, warmup, sync), macs)
    record["peak_bytes"] = peak_bytes(fn, device)
    return record


def _bench_form(
    problem: Problem,
    op: str,
    paths: tuple[_Path, _Path],
    counts: tuple[int, int],
    sync: Callable[[], None],
    report: Callable[[str, str], None],
    device: torch.device,
    passes: Sequence[str],
    native_runs: dict[str, dict[str, dict[str, Any]]],
) -> list[dict[str, Any]]:
    """Time approxsim on every pass of a form and combine it with the native timings.

    ``native_runs`` maps a setting to the native timing per pass, from the child processes;
    :data:`~approxsim.bench.native.SAME_PROCESS` in it (with an empty mapping) asks for the
    native path to be timed here, right after approxsim's.
    """
    approx, native = paths
    reps, warmup = counts
    # One untimed forward of each path: a sanity check that the approximate path really is
    # approximate (a nonzero error for a non-exact multiplier), recorded with the rows.
    rel = _rel_error(approx.forward(), native.forward())
    rows = []
    for pass_name in passes:
        report(op, pass_name)
        macs = problem.macs * _MAC_FACTOR[pass_name]
        a = _time_pass(approx, pass_name, macs, reps, warmup, sync, device)
        by_setting = {}
        for setting, per_pass in native_runs.items():
            if setting == SAME_PROCESS:
                by_setting[setting] = _time_pass(
                    native, pass_name, macs, reps, warmup, sync, device
                )
            else:
                by_setting[setting] = per_pass[pass_name]
        best = best_setting({s: t["median_s"] for s, t in by_setting.items()})
        n = by_setting[best]
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
                "native_setting": best,
                "native_by_setting": by_setting,
                # Throughput ratio (< 1: the simulation is slower) and its inverse in time,
                # both against native at its best.
                "ratio": a["gmac_per_s"] / n["gmac_per_s"],
                "slowdown": a["median_s"] / n["median_s"],
                "forward_rel_error": rel,
            }
        )
    return rows


def native_timings(task: dict[str, Any], say: Callable[[str], None]) -> list[dict[str, Any]]:
    """Time the native path of every form of a task, in this process (the child's side).

    Args:
        task: Written by :func:`bench_ops`: ``device``, ``tf32``, ``threads``, ``reps``,
            ``warmup``, ``ints`` (the integer operand range or ``None``) and ``forms``, each
            ``{"problem": Problem.to_dict(), "op", "seed", "passes"}``.
        say: Called with a progress line per pass.

    Returns:
        One ``{"problem", "op", "pass", "native": timing}`` per form and pass, in order.
    """
    dev = bench_device(task["device"])
    sync = synchronizer(dev)
    total = sum(len(f["passes"]) for f in task["forms"])
    out: list[dict[str, Any]] = []
    with run_settings(dev, bool(task["tf32"]), task["threads"]):
        for form in task["forms"]:
            problem = Problem.from_dict(form["problem"])
            _, native = _form_paths(problem, form["op"], None, task["ints"], dev, form["seed"])
            for pass_name in form["passes"]:
                say(f"[{len(out) + 1}/{total}] {problem.name} {form['op']} {pass_name}")
                macs = problem.macs * _MAC_FACTOR[pass_name]
                record = _time_pass(
                    native, pass_name, macs, task["reps"], task["warmup"], sync, dev
                )
                out.append(
                    {"problem": problem.name, "op": form["op"], "pass": pass_name, "native": record}
                )
            del native
    return out


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
def _plan_forms(
    probs: Sequence[Problem], integer: bool
) -> tuple[list[tuple[Problem, str, int]], list[dict[str, str]]]:
    """The forms to time, each with the seed of its operands, and those skipped up front."""
    forms: list[tuple[Problem, str, int]] = []
    skipped: list[dict[str, str]] = []
    seed = 0
    for p in probs:
        for op in ("gemm", "conv") if p.conv else ("gemm",):
            seed += 1
            try:
                if integer and op == "conv":
                    raise _Skip(
                        "integer multipliers are timed as GEMMs; quantized layers are timed "
                        "by scripts/bench_quant.py"
                    )
                if op == "conv":
                    _approx_conv_class()
            except _Skip as exc:
                skipped.append({"problem": p.name, "op": op, "reason": str(exc)})
                continue
            forms.append((p, op, seed))
    return forms, skipped


def _native_runs(
    task: dict[str, Any], settings: Sequence[str], say: Callable[[str], None]
) -> tuple[dict[tuple[str, str], dict[str, dict[str, dict[str, Any]]]], dict[str, Any]]:
    """Native timings per form: ``(problem, op)`` → setting → pass → timing, from the
    child processes (and an empty entry for :data:`SAME_PROCESS`, timed by the caller);
    also each child's environment and thread count."""
    children = time_native(task, settings, say)
    per_form: dict[tuple[str, str], dict[str, dict[str, dict[str, Any]]]] = {}
    for form in task["forms"]:
        key = (form["problem"]["name"], form["op"])
        per_form[key] = {s: {} for s in settings}
    for setting, child in children.items():
        for rec in child["results"]:
            per_form[(rec["problem"], rec["op"])][setting][rec["pass"]] = rec["native"]
    envs = {
        s: {"environment": c["environment"], "torch_threads": c["torch_threads"]}
        for s, c in children.items()
    }
    if SAME_PROCESS in settings:
        envs[SAME_PROCESS] = {
            "environment": thread_environment(),
            "torch_threads": torch.get_num_threads(),
        }
    return per_form, envs


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
    native_settings: str | Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
    argv: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Time approximate vs native float32 GEMMs (and convolutions), forward and backward.

    Every problem is timed as a GEMM, ``approxsim.matmul(a, b, multiplier)`` against
    ``torch.matmul(a, b)``; problems from convolution layers are also timed as
    ``approxsim.nn.ApproxConv2d`` against ``nn.Conv2d`` (bias-free, same weights) when
    ``approxsim.nn`` can be imported, and listed under ``"skipped"`` with the reason when not.
    approxsim is timed in this process, as its environment is; native float32 in one child
    process per native setting (:mod:`approxsim.bench.native`), each problem keeping the
    fastest, so ratios are against native at its best.

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
            them. The caller's settings are restored afterwards; native children run the
            same count.
        quick: Default to the tiny :data:`QUICK_PROBLEMS` (seconds; for tests).
        native_settings: Where native is timed (``"default,passive,active"``, ``"same-process"``,
            ...; see :func:`~approxsim.bench.native.resolve_native_settings`); default: the
            three wait policies, or the environment's own when it sets one.
        progress: Called with one line of text as the run advances (the CLI prints to stderr).
        argv: Command line for the machine record; default ``sys.argv``.

    Returns:
        A JSON-ready dictionary: ``schema``, ``config`` (the settings, ``native_settings`` and
        each child's ``native_environments``), ``machine`` (see :func:`machine_record`; the
        environment approxsim ran in), ``problems`` (name → shape), ``rows`` (one per problem,
        op and pass: ``approx`` and ``native`` timings with ``median_s``, ``min_s``,
        ``times_s``, ``gmac_per_s``, ``peak_bytes``; ``native`` is the fastest setting's,
        named by ``native_setting``, every setting's in ``native_by_setting``; ``ratio`` =
        approx/native throughput; ``slowdown`` = approx/native time; ``forward_rel_error`` =
        ‖approx − native‖/‖native‖ of the forward output), ``skipped`` (rows that could not
        run, with a reason) and ``elapsed_s``.

    Raises:
        BenchError: unknown problems or native settings, bad counts, an unavailable device,
            ``tf32`` off CUDA.
        MultiplierError: an unknown multiplier name.
        NativeBaselineError: a child process timing native failed.
    """
    settings = resolve_native_settings(native_settings)
    mult = _multiplier(multiplier)
    integer = is_int_multiplier(mult)
    passes = ("forward",) if integer else PASSES
    _check_counts(reps, warmup, threads)
    probs = resolve_problems(problems, quick)
    dev = bench_device(device)
    if tf32 and dev.type != "cuda":
        raise BenchError("tf32 applies to CUDA devices only; drop it or use device 'cuda'")
    say = progress if progress is not None else (lambda line: None)
    forms, skipped = _plan_forms(probs, integer)
    for skip in skipped:
        say(f"skipping {skip['problem']} {skip['op']}: {skip['reason']}")
    ints = _int_range(mult) if integer else None
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
            "native_settings": list(settings),
        }
        machine = machine_record(dev, argv)
        task = {
            "bench": "ops",
            **{k: config[k] for k in ("device", "tf32", "threads", "reps", "warmup")},
            "ints": ints,
            "forms": [
                {"problem": p.to_dict(), "op": op, "seed": seed, "passes": list(passes)}
                for p, op, seed in forms
            ],
        }
        native, config["native_environments"] = _native_runs(task, settings, say)
        rows = _time_forms(forms, mult, ints, native, (reps, warmup), dev, passes, say, skipped)
    return {
        "schema": SCHEMA,
        "config": config,
        "machine": machine,
        "problems": {p.name: p.to_dict() for p in probs},
        "rows": rows,
        "skipped": skipped,
        "elapsed_s": time.perf_counter() - started,
    }


def _time_forms(
    forms: Sequence[tuple[Problem, str, int]],
    mult: Any,
    ints: dict[str, Any] | None,
    native: dict[tuple[str, str], dict[str, dict[str, dict[str, Any]]]],
    counts: tuple[int, int],
    dev: torch.device,
    passes: Sequence[str],
    say: Callable[[str], None],
    skipped: list[dict[str, str]],
) -> list[dict[str, Any]]:
    """Time approxsim on every form, in this process; the rows (``skipped`` grows in place)."""
    sync = synchronizer(dev)
    total = len(forms) * len(passes)
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    done = 0
    for problem, op, seed in forms:

        def report(op_: str, pass_name: str, problem: Problem = problem) -> None:
            nonlocal done
            done += 1
            elapsed = time.perf_counter() - started
            say(
                f"[{done}/{total}] {problem.name} {op_} {pass_name} "
                f"({problem.shape}, {elapsed:.0f} s elapsed)"
            )

        try:
            approx, nat = _form_paths(problem, op, mult, ints, dev, seed)
        except _Skip as exc:
            skipped.append({"problem": problem.name, "op": op, "reason": str(exc)})
            done += len(passes)
            say(f"skipping {problem.name} {op}: {exc}")
            continue
        assert approx is not None  # a multiplier was given
        rows.extend(
            _bench_form(
                problem,
                op,
                (approx, nat),
                counts,
                sync,
                report,
                dev,
                passes,
                native[(problem.name, op)],
            )
        )
        del approx, nat
    return rows


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
        + f"; {protocol_line(result['config'].get('native_settings'), result['machine'])}"
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
        "native best under",
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
            short_label(row.get("native_setting")),
        )
        for row in result["rows"]
    ]
    # Four text columns; numbers are right-aligned.
    lines = [title, *text_table(header, body, left=4)]
    lines.append(
        "ratio = approx/native-best throughput; slowdown = approx/native-best time; "
        "forward+backward counts 3x the forward MACs; peak MiB = memory one call needs "
        "beyond what is already allocated (CPU: rise of the peak resident set)"
    )
    for skip in result["skipped"]:
        lines.append(f"skipped {skip['problem']} {skip['op']}: {skip['reason']}")
    return "\n".join(lines)
