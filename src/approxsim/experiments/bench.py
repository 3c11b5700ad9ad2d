"""Old import path of ``approxsim bench ops``; the code now lives in :mod:`approxsim.bench`.

Every name this module exported still works: the benchmark and its problems from
:mod:`approxsim.bench`, and the command-line pieces (``add_bench_parser``, ``run_bench_cli``)
from :mod:`approxsim.cli.bench`, imported only when asked for so that the library does not
load the command line. New code imports from :mod:`approxsim.bench`.
"""

from __future__ import annotations

from typing import Any

from approxsim.bench.common import BenchError, machine_record, save_results
from approxsim.bench.ops import PASSES, SCHEMA, bench_ops, format_table
from approxsim.bench.problems import (
    DEFAULT_PROBLEMS,
    PROBLEMS,
    QUICK_PROBLEMS,
    ConvGeometry,
    Problem,
    list_problems,
)

__all__ = [
    "BenchError",
    "ConvGeometry",
    "Problem",
    "PROBLEMS",
    "DEFAULT_PROBLEMS",
    "QUICK_PROBLEMS",
    "PASSES",
    "SCHEMA",
    "list_problems",
    "bench_ops",
    "machine_record",
    "format_table",
    "save_results",
    "add_bench_parser",  # noqa: F822 - loaded by __getattr__
    "run_bench_cli",  # noqa: F822 - loaded by __getattr__
]

_CLI_NAMES = frozenset({"add_bench_parser", "run_bench_cli"})


def __getattr__(name: str) -> Any:
    """The command-line names, loaded from :mod:`approxsim.cli.bench` on first use."""
    if name in _CLI_NAMES:
        from approxsim.cli import bench as cli_bench

        return getattr(cli_bench, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
