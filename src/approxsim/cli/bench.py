"""``approxsim bench ops | direct | models | epoch``: the parsers, the handlers and what they
print.

The measuring is done by :mod:`approxsim.bench`; this module turns arguments into a call,
prints progress lines (``bench: ...``) to stderr and the table to stdout, and writes
``--json FILE`` (checked before the timing starts; an existing file only with
``--overwrite``). Errors are raised, not printed: :func:`approxsim.cli.main` reports them as
one line and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from approxsim._io import check_output
from approxsim.bench import (
    DEFAULT_MODELS,
    DIRECT_PROBLEMS,
    PROBLEMS,
    BenchError,
    bench_direct,
    bench_epoch,
    bench_models,
    bench_ops,
    format_direct_table,
    format_epoch_table,
    format_models_table,
    format_table,
    save_results,
)
from approxsim.bench.native import resolve_native_settings
from approxsim.cli.common import int_at_least
from approxsim.multipliers import MultiplierError

__all__ = [
    "register",
    "add_bench_parser",
    "add_direct_parser",
    "add_models_parser",
    "add_epoch_parser",
    "run_bench_cli",
    "run_direct_cli",
    "run_models_cli",
    "run_epoch_cli",
]

#: Help of ``--native-settings`` (``ops``, ``models``, ``epoch``).
NATIVE_SETTINGS_HELP = (
    "where native float32 is timed, comma-separated: default (OMP_WAIT_POLICY unset), passive, "
    "active: a child process each, the fastest kept per problem; same-process: in this process, "
    "beside approxsim. Default: default,passive,active, or only your own setting when "
    "OMP_WAIT_POLICY, GOMP_SPINCOUNT or KMP_BLOCKTIME is set. approxsim itself always runs "
    "in this process as its environment is. Each child costs a torch import and a native pass."
)


def register(sub: Any) -> None:
    """Add ``approxsim bench`` (``ops``, ``direct``, ``models``, ``epoch``) to the top-level
    subparsers.

    Args:
        sub: What ``ArgumentParser.add_subparsers`` returned for the top-level commands.
    """
    add_bench_parser(sub)


# ---------------------------------------------------------------------------- parsers
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
    ops.add_argument("--multiplier", metavar="NAME", help="multiplier (default: mitchell7)")
    ops.add_argument(
        "--int-multiplier",
        metavar="NAME",
        help="time the integer GEMM of this integer multiplier (e.g. uint8, drum4_u8) instead, "
        "forward only, on integer operand values",
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
    ops.add_argument("--overwrite", action="store_true", help="replace --json FILE if it exists")
    ops.add_argument(
        "--quick", action="store_true", help="tiny problems only (seconds; a smoke test)"
    )
    ops.add_argument("--native-settings", metavar="LIST", help=NATIVE_SETTINGS_HELP)
    ops.set_defaults(handler=run_bench_cli)
    add_direct_parser(bsub)
    add_models_parser(bsub)
    add_epoch_parser(bsub)
    return ops


def add_direct_parser(bsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``approxsim bench direct`` to ``bench``'s subparsers.

    Args:
        bsub: The subparsers of ``approxsim bench`` (see :func:`add_bench_parser`).
    """
    p = bsub.add_parser(
        "direct",
        help="LUT engine vs direct simulation of a C model (one call per product)",
        description=(
            "Build a multiplier from a C/C++ functional model and time approxsim.matmul "
            "against the model called once per product in a plain compiled GEMM loop (one "
            "thread and all threads): the simulation an engine without LUTs runs. That "
            "baseline runs in a process of its own without torch or OpenMP, so thread-wait "
            "settings do not apply to it; approxsim runs in this process as its environment is."
        ),
    )
    p.add_argument("--c", required=True, metavar="FILE", help="C/C++ source of the model")
    p.add_argument("--function", required=True, metavar="F", help="float F(float, float)")
    p.add_argument(
        "--mantissa-bits", required=True, type=int_at_least(1), metavar="M", help="LUT bits M"
    )
    p.add_argument("--language", choices=("c", "c++"), help="default: from the file suffix")
    p.add_argument("--rounding", choices=("truncate", "nearest"), default="truncate")
    p.add_argument(
        "--problems", metavar="LIST", help=f"comma-separated (default: {','.join(DIRECT_PROBLEMS)})"
    )
    p.add_argument("--reps", type=int_at_least(1), default=3, help="timed calls (3)")
    p.add_argument("--warmup", type=int_at_least(0), default=1, help="untimed calls (1)")
    p.add_argument("--threads", type=int_at_least(1), metavar="T", help="threads (default: all)")
    p.add_argument(
        "--device", default="cpu", help="where approxsim.matmul runs: cpu or cuda[:N] (cpu)"
    )
    p.add_argument("--json", metavar="FILE", help="also write all results to FILE")
    p.add_argument("--overwrite", action="store_true", help="replace --json FILE if it exists")
    p.set_defaults(handler=run_direct_cli)


def add_models_parser(bsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``approxsim bench models`` to ``bench``'s subparsers.

    Args:
        bsub: The subparsers of ``approxsim bench`` (see :func:`add_bench_parser`).
    """
    p = bsub.add_parser(
        "models",
        help="whole models: inference and training steps, approximate vs float32",
        description=(
            "Time inference (ApproxTrain's protocol: batch 32, first batch discarded, mean of "
            "the rest) and training steps of registered models, native float32 against every "
            "linear and convolution layer converted to the multiplier."
        ),
    )
    p.add_argument("--multiplier", default="mitchell7", metavar="NAME", help="(mitchell7)")
    p.add_argument(
        "--models", metavar="LIST", help=f"comma-separated (default: {','.join(DEFAULT_MODELS)})"
    )
    p.add_argument("--batch-size", type=int_at_least(1), default=32, help="images per batch (32)")
    p.add_argument(
        "--batches", type=int_at_least(1), default=5, help="timed batches after the first (5)"
    )
    p.add_argument("--threads", type=int_at_least(1), metavar="T", help="threads (default: all)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (cpu)")
    p.add_argument("--tf32", action="store_true", help="on CUDA, let the native baseline use TF32")
    p.add_argument("--native-settings", metavar="LIST", help=NATIVE_SETTINGS_HELP)
    p.add_argument("--json", metavar="FILE", help="also write all results to FILE")
    p.add_argument("--overwrite", action="store_true", help="replace --json FILE if it exists")
    p.set_defaults(handler=run_models_cli)


def add_epoch_parser(bsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``approxsim bench epoch`` to ``bench``'s subparsers.

    Args:
        bsub: The subparsers of ``approxsim bench`` (see :func:`add_bench_parser`).
    """
    p = bsub.add_parser(
        "epoch",
        help="whole training epochs (approxsim train), float32 vs a multiplier",
        description=(
            "Run approxsim train for whole epochs, float32 once per native setting (the fastest "
            "kept) and with the multiplier once in this environment, each in a child process, "
            "and print the epoch times from the runs' metrics.jsonl (training and test "
            "evaluation; process start and data loading not counted)."
        ),
    )
    p.add_argument("--model", default="lenet5", help="registered model (lenet5)")
    p.add_argument("--multiplier", default="mitchell7", metavar="NAME", help="(mitchell7)")
    p.add_argument("--dataset", default="fashion-mnist", help="registered dataset (fashion-mnist)")
    p.add_argument(
        "--epochs", type=int_at_least(1), default=1, help="epochs per run, median reported (1)"
    )
    p.add_argument("--batch-size", type=int_at_least(1), help="default: the model's")
    p.add_argument("--data-dir", metavar="DIR", help="folder with the dataset's files")
    p.add_argument("--max-train-samples", type=int_at_least(1), metavar="N", help="first N only")
    p.add_argument("--max-test-samples", type=int_at_least(1), metavar="N", help="first N only")
    p.add_argument("--threads", type=int_at_least(1), metavar="T", help="train --threads T")
    p.add_argument(
        "--native-settings",
        metavar="LIST",
        help="how the fp32 runs' OpenMP threads wait, comma-separated from default "
        "(OMP_WAIT_POLICY unset), passive, active: one run each, the fastest kept. Default: all "
        "three, or only your own setting when OMP_WAIT_POLICY, GOMP_SPINCOUNT or KMP_BLOCKTIME "
        "is set. The multiplier's run has this environment as it is.",
    )
    p.add_argument("--json", metavar="FILE", help="also write all results to FILE")
    p.add_argument("--overwrite", action="store_true", help="replace --json FILE if it exists")
    p.set_defaults(handler=run_epoch_cli)


# ---------------------------------------------------------------------------- handlers
def _stderr(line: str) -> None:
    print(f"bench: {line}", file=sys.stderr, flush=True)


def _prepare_json(args: argparse.Namespace, inputs: tuple[str | None, ...] = ()) -> None:
    """Check ``--json FILE`` and create its folder now, so a bad path fails before minutes
    of timing rather than after them."""
    if args.json:
        check_output(args.json, overwrite=args.overwrite, inputs=inputs)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)


def _finish(
    result: dict[str, Any],
    table: str,
    args: argparse.Namespace,
    inputs: tuple[str | None, ...] = (),
) -> int:
    """Print the table, write ``--json FILE`` if given; the exit status (0)."""
    print(table)
    if args.json:
        path = save_results(result, args.json, overwrite=args.overwrite, inputs=inputs)
        _stderr(f"results written to {path}")
    return 0


def run_bench_cli(args: argparse.Namespace) -> int:
    """Run ``approxsim bench ops`` from parsed arguments.

    Prints progress to stderr and the table to stdout; writes ``--json FILE`` if given.

    Args:
        args: The namespace parsed by the parser :func:`add_bench_parser` added.

    Returns:
        0.

    Raises:
        BenchError: unknown problems, no CUDA, ``--tf32`` off CUDA.
        MultiplierError: an unknown multiplier, or both ``--multiplier`` and
            ``--int-multiplier``.
        OutputExistsError: ``--json FILE`` exists (without ``--overwrite``), is a folder or
            an input.
        OSError: the ``--json`` folder cannot be created or written.
    """
    resolve_native_settings(args.native_settings)
    _prepare_json(args)
    multiplier: Any = args.multiplier or "mitchell7"
    if args.int_multiplier:
        if args.multiplier:
            raise MultiplierError(
                "name one multiplier: --multiplier NAME (float) or --int-multiplier NAME"
            )
        from approxsim.multipliers.registry import get_int_multiplier

        multiplier = get_int_multiplier(args.int_multiplier)
    result = bench_ops(
        multiplier,
        args.problems,
        reps=args.reps,
        warmup=args.warmup,
        device=args.device,
        tf32=args.tf32,
        threads=args.threads,
        quick=args.quick,
        native_settings=args.native_settings,
        progress=_stderr,
    )
    return _finish(result, format_table(result), args)


def run_direct_cli(args: argparse.Namespace) -> int:
    """Run ``approxsim bench direct`` from parsed arguments.

    Args:
        args: The namespace parsed by the parser :func:`add_direct_parser` added.

    Returns:
        0.

    Raises:
        BenchError: a missing ``--c`` file, unknown problems, no CUDA.
        MultiplierError: the model does not compile, lacks the function or fails the
            decomposability check (``CompilerError`` is one).
        OutputExistsError: ``--json FILE`` exists (without ``--overwrite``), is a folder or
            an input.
        OSError: the ``--json`` folder cannot be created or written.
    """
    _prepare_json(args, (args.c,))
    if not Path(args.c).is_file():
        raise BenchError(f"{args.c}: no such file")
    result = bench_direct(
        Path(args.c),
        args.function,
        args.mantissa_bits,
        args.problems.split(",") if args.problems else None,
        language=args.language,
        rounding=args.rounding,
        reps=args.reps,
        warmup=args.warmup,
        threads=args.threads,
        device=args.device,
        progress=_stderr,
    )
    return _finish(result, format_direct_table(result), args, (args.c,))


def run_models_cli(args: argparse.Namespace) -> int:
    """Run ``approxsim bench models`` from parsed arguments.

    Args:
        args: The namespace parsed by the parser :func:`add_models_parser` added.

    Returns:
        0.

    Raises:
        BenchError: an unknown model, no CUDA, ``--tf32`` off CUDA.
        MultiplierError: an unknown multiplier.
        OutputExistsError: ``--json FILE`` exists (without ``--overwrite``) or is a folder.
        OSError: ``--json FILE`` cannot be written.
    """
    resolve_native_settings(args.native_settings)
    _prepare_json(args)
    result = bench_models(
        args.multiplier,
        args.models.split(",") if args.models else None,
        batch_size=args.batch_size,
        batches=args.batches,
        threads=args.threads,
        device=args.device,
        tf32=args.tf32,
        native_settings=args.native_settings,
        progress=_stderr,
    )
    return _finish(result, format_models_table(result), args)


def run_epoch_cli(args: argparse.Namespace) -> int:
    """Run ``approxsim bench epoch`` from parsed arguments.

    Args:
        args: The namespace parsed by the parser :func:`add_epoch_parser` added.

    Returns:
        0.

    Raises:
        BenchError: an unknown model, dataset or native setting, a run without epochs.
        MultiplierError: an unknown multiplier.
        NativeBaselineError: a training run failed.
        OutputExistsError: ``--json FILE`` exists (without ``--overwrite``) or is a folder.
        OSError: ``--json FILE`` cannot be written.
    """
    resolve_native_settings(args.native_settings, same_process=False)
    _prepare_json(args)
    result = bench_epoch(
        args.model,
        args.multiplier,
        args.dataset,
        epochs=args.epochs,
        batch_size=args.batch_size,
        data_dir=args.data_dir,
        max_train_samples=args.max_train_samples,
        max_test_samples=args.max_test_samples,
        threads=args.threads,
        native_settings=args.native_settings,
        progress=_stderr,
    )
    return _finish(result, format_epoch_table(result), args)
