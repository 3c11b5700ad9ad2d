"""Experiments: plain functions over explicit settings that produce result files.

* :mod:`approxsim.experiments.bench` — ``bench_ops``: approximate vs native float32 throughput
  of GEMMs and convolutions (``approxsim bench ops`` on the command line).
"""

from __future__ import annotations

from approxsim.experiments.bench import BenchError, bench_ops, format_table, save_results

__all__ = ["BenchError", "bench_ops", "format_table", "save_results"]
