"""Benchmarks: how fast approximate arithmetic runs, measured as users run it.

* :func:`bench_ops` (:mod:`approxsim.bench.ops`) — approximate vs native float32 GEMMs and
  convolutions, forward and forward+backward (``approxsim bench ops``).
* :func:`bench_direct` (:mod:`approxsim.bench.direct`) — the LUT engine against direct
  simulation of a C functional model, one call per product (``approxsim bench direct``).
* :func:`bench_models` (:mod:`approxsim.bench.models`) — whole models, inference and
  training steps (``approxsim bench models``).
* :func:`bench_epoch` (:mod:`approxsim.bench.epoch`) — whole training epochs of
  ``approxsim train``, float32 against a multiplier (``approxsim bench epoch``).
* :mod:`approxsim.bench.native` — native PyTorch at its best: the float32 baseline timed in
  one child process per thread-wait setting, the fastest kept, while approxsim runs in the
  caller's process as its environment is.
* :mod:`approxsim.bench.problems` — the registry of GEMM and convolution shapes;
  :mod:`approxsim.bench.common` — timing, peak memory, run settings, the machine record and
  result files, shared by all three.

Every benchmark returns a JSON-ready dictionary with a machine record; the ``format_*``
functions make the tables the command line prints, and :func:`save_results` writes the file.
"""

from __future__ import annotations

from approxsim.bench.common import BenchError, machine_record, save_results
from approxsim.bench.direct import DIRECT_PROBLEMS, bench_direct, format_direct_table
from approxsim.bench.epoch import bench_epoch, format_epoch_table
from approxsim.bench.models import DEFAULT_MODELS, bench_models, format_models_table
from approxsim.bench.native import (
    DEFAULT_NATIVE_SETTINGS,
    NativeBaselineError,
    resolve_native_settings,
)
from approxsim.bench.ops import PASSES, bench_ops, format_table
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
    "NativeBaselineError",
    "DEFAULT_NATIVE_SETTINGS",
    "resolve_native_settings",
    "bench_epoch",
    "format_epoch_table",
    "ConvGeometry",
    "Problem",
    "PROBLEMS",
    "DEFAULT_PROBLEMS",
    "QUICK_PROBLEMS",
    "DIRECT_PROBLEMS",
    "DEFAULT_MODELS",
    "PASSES",
    "list_problems",
    "bench_ops",
    "bench_direct",
    "bench_models",
    "format_table",
    "format_direct_table",
    "format_models_table",
    "machine_record",
    "save_results",
]
