"""Analog compute-in-memory (CIM): device variation, Monte Carlo and worst-case search.

A CIM chip stores each weight of a linear or convolution layer on non-volatile devices
whose conductances deviate from their targets. This package simulates that on any PyTorch
model (plain, or converted to approxsim's approximate layers) and asks two questions: how
accurate is a typical chip (Monte Carlo over chips), and how bad can a chip get when every
device deviates by at most ``ε`` (worst-case search, after Yan, Hu and Shi, ICCAD 2022)?

* :class:`DeviceConfig` — the device model: ``weight_bits`` quantization of ``w / max|w|``,
  bit-slicing over devices of ``device_bits``, variation ``sigma``, write-verify, optional
  clipping of conductances to the device range, read noise.
* :func:`chip` — context manager: the model computes with a chip's weights inside it.
* :func:`sample_perturbation` / :class:`Perturbation` — chip instances, saved and replayed.
* :func:`monte_carlo` — accuracy over sampled chips with percentiles and intervals;
  :func:`run_monte_carlo` — the same as a resumable run with a result file (Ctrl-C keeps the
  chips done, ``resume=True`` continues them) that can save the worst chip.
* :func:`worst_case_search` — search of the worst deviations in a bound (``"auto"``: several
  objectives and starts in one budget; PGD; CW-style), per weight or per device (clipping).
* :func:`train_cim` — noise-injection and adversarial weight-perturbation training.
* :func:`run_sweep` / :func:`sweep_table` — accuracy versus variation magnitude (the figure:
  :func:`approxsim.plots.cim.plot_sweep`, also importable from here).

See docs/cim.md for the math, the command line and a reproduction of the paper's headline.
"""

from approxsim.cim.chip import (
    ChipHandle,
    Perturbation,
    chip,
    sample_perturbation,
    select_layers,
    weight_deltas,
    weights_digest,
)
from approxsim.cim.device import (
    MAPPINGS,
    CIMError,
    DeviceConfig,
    device_conductances,
    device_to_weight_delta,
    effective_deviations,
    per_device_bound,
    per_weight_bound,
    quantize_weight,
    sample_device_deviations,
    slice_coefficients,
    weight_delta_to_device,
    weight_sign,
)
from approxsim.cim.evaluation import accuracy
from approxsim.cim.montecarlo import (
    MC_SCHEMA,
    MonteCarloResult,
    MonteCarloRun,
    chip_seed,
    monte_carlo,
    read_result,
    run_monte_carlo,
)
from approxsim.cim.search import (
    AUTO_SCHEDULE,
    OBJECTIVES,
    SEARCH_METHODS,
    SEARCH_SPACES,
    SearchConfig,
    SearchResult,
    margin_loss,
    worst_case_search,
)
from approxsim.cim.stats import quantile_interval, summarize
from approxsim.cim.sweep import monotonicity_breaks, plot_sweep, run_sweep, sweep_table
from approxsim.cim.training import TRAIN_METHODS, CIMTrainConfig, train_cim

__all__ = [
    "CIMError",
    "DeviceConfig",
    "MAPPINGS",
    "slice_coefficients",
    "per_weight_bound",
    "per_device_bound",
    "quantize_weight",
    "device_conductances",
    "sample_device_deviations",
    "device_to_weight_delta",
    "weight_delta_to_device",
    "effective_deviations",
    "weight_sign",
    "select_layers",
    "weights_digest",
    "Perturbation",
    "ChipHandle",
    "sample_perturbation",
    "chip",
    "weight_deltas",
    "accuracy",
    "monte_carlo",
    "MonteCarloResult",
    "MC_SCHEMA",
    "run_monte_carlo",
    "MonteCarloRun",
    "read_result",
    "chip_seed",
    "summarize",
    "quantile_interval",
    "SEARCH_METHODS",
    "SEARCH_SPACES",
    "OBJECTIVES",
    "AUTO_SCHEDULE",
    "SearchConfig",
    "SearchResult",
    "worst_case_search",
    "margin_loss",
    "TRAIN_METHODS",
    "CIMTrainConfig",
    "train_cim",
    "run_sweep",
    "plot_sweep",
    "sweep_table",
    "monotonicity_breaks",
]
