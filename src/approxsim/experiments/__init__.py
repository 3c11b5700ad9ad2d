"""Old import paths only; nothing new is added here.

approxsim's code used to live under ``approxsim.experiments``; each concern now has a package
of its own, and the modules of this package re-export their old public names from there:

* :mod:`approxsim.experiments.bench`, ``.bench_direct``, ``.bench_models`` →
  :mod:`approxsim.bench` (the command line: :mod:`approxsim.cli.bench`);
* :mod:`approxsim.experiments.train`, ``.compare`` → the training engine
  (:mod:`approxsim.training`).

Importing this package loads none of them; import the submodule you need (or, in new code,
its new home). ``BenchError``, ``bench_ops``, ``format_table`` and ``save_results`` are still
reachable here, as they always were, and are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["BenchError", "bench_ops", "format_table", "save_results"]


def __getattr__(name: str) -> Any:
    """The benchmark names this package always exported, loaded on first use; submodules."""
    if name in __all__:
        return getattr(importlib.import_module("approxsim.bench"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
