"""Shared run folders of the training tests: a tiny synthetic IDX dataset, one approximate run
(LeNet-5, ``mitchell7``, 2 epochs of 64 images) and one exact run (3 epochs), trained once for
the whole folder of tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from training_helpers import N_TEST, N_TRAIN, approx_settings, make_config

from approxsim.data import write_banded_mnist
from approxsim.training import train


@pytest.fixture(scope="package")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fashion")
    write_banded_mnist(root, N_TRAIN, N_TEST)
    return root


@pytest.fixture(scope="package")
def approx_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[Path, dict]:
    pytest.importorskip("approxsim.convert", reason="convert_model is not available yet")
    out = tmp_path_factory.mktemp("runs") / "mitchell7"
    return out, train(make_config(out, data_dir, **approx_settings()))


@pytest.fixture(scope="package")
def exact_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("runs") / "fp32"
    return out, train(make_config(out, data_dir, multiplier="fp32", epochs=3))
