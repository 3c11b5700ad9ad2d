"""The old home of run comparison, kept so existing imports work.

The tables live in :mod:`approxsim.training.compare`, the figure in
:mod:`approxsim.plots.curves` and ``approxsim compare`` in :mod:`approxsim.cli.compare`; new
code should import from there. ``plot_runs`` and the command-line names are loaded on first
use, so importing this module imports neither matplotlib nor the command line.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from approxsim.training.compare import (
    COMPARE_SCHEMA,
    CompareError,
    Run,
    compare_runs,
    compare_seed_groups,
    format_comparison,
    format_seed_groups,
    load_run,
)

if TYPE_CHECKING:  # loaded by __getattr__ at run time
    from approxsim.cli.compare import add_compare_parser, run_compare_cli
    from approxsim.plots.curves import plot_runs

__all__ = [
    "CompareError",
    "Run",
    "load_run",
    "compare_runs",
    "format_comparison",
    "compare_seed_groups",
    "format_seed_groups",
    "plot_runs",
    "add_compare_parser",
    "run_compare_cli",
]

_ALSO = (COMPARE_SCHEMA,)

#: Names imported from their module on first access.
_LAZY = {
    "plot_runs": "approxsim.plots.curves",
    "add_compare_parser": "approxsim.cli.compare",
    "run_compare_cli": "approxsim.cli.compare",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
