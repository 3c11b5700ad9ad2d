"""Shared fixtures of the sweep tests: a tiny Fashion-MNIST-named IDX dataset and one
uninterrupted two-point ``train`` sweep with the local executor (real child processes), run
once for the whole folder of tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sweep_helpers import N_TEST, N_TRAIN, tiny_spec

from approxsim.cli.sweep import command_options, point_check
from approxsim.data import write_banded_mnist
from approxsim.sweep import plan_sweep, run_sweep


@pytest.fixture(scope="package")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_banded_mnist(tmp_path_factory.mktemp("fashion"), N_TRAIN, N_TEST)


@pytest.fixture(scope="package")
def local_sweep(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[Path, Any]:
    """The uninterrupted sweep: seed 0 × {fp32, mitchell7}, two points at a time."""
    out = tmp_path_factory.mktemp("sweeps") / "uninterrupted"
    spec = tiny_spec(data_dir)
    plan = plan_sweep(
        spec, out, options=command_options(spec.command), check=point_check(spec.command)
    )
    return out, run_sweep(plan, jobs=2, retries=0)
