"""Old import path of ``approxsim bench models``; the code now lives in
:mod:`approxsim.bench.models` (the command line in :mod:`approxsim.cli.bench`).
"""

from __future__ import annotations

from typing import Any

from approxsim.bench.models import (
    DEFAULT_MODELS,
    MODES,
    SCHEMA,
    bench_models,
    format_models_table,
)

__all__ = ["DEFAULT_MODELS", "MODES", "SCHEMA", "bench_models", "format_models_table"]

_CLI_NAMES = frozenset({"add_models_parser", "run_models_cli"})


def __getattr__(name: str) -> Any:
    """The command-line names, loaded from :mod:`approxsim.cli.bench` on first use."""
    if name in _CLI_NAMES:
        from approxsim.cli import bench as cli_bench

        return getattr(cli_bench, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
