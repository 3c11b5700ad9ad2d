"""Old import path of ``approxsim bench direct``; the code now lives in
:mod:`approxsim.bench.direct` (the command line in :mod:`approxsim.cli.bench`).
"""

from __future__ import annotations

from typing import Any

from approxsim.bench.direct import DIRECT_PROBLEMS, SCHEMA, bench_direct, format_direct_table

__all__ = ["DIRECT_PROBLEMS", "SCHEMA", "bench_direct", "format_direct_table"]

_CLI_NAMES = frozenset({"add_direct_parser", "run_direct_cli"})


def __getattr__(name: str) -> Any:
    """The command-line names, loaded from :mod:`approxsim.cli.bench` on first use."""
    if name in _CLI_NAMES:
        from approxsim.cli import bench as cli_bench

        return getattr(cli_bench, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
