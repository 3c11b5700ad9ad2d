"""Old import paths keep working: ``approxsim.experiments.train`` and ``.compare`` re-export
the training engine's names (the command-line ones on first use, so importing them does not
import the command line)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from approxsim import training
from approxsim.cli import compare as cli_compare
from approxsim.cli import train as cli_train
from approxsim.experiments import compare as old_compare
from approxsim.experiments import train as old_train
from approxsim.plots.curves import plot_runs
from approxsim.training import compare as new_compare


def test_every_old_name_is_there() -> None:
    for name in old_train.__all__:
        assert getattr(old_train, name) is not None, name
    for name in ("TrainError", "CheckpointError", "TrainConfig", "train", "evaluate"):
        assert getattr(old_train, name) is getattr(training, name)
    assert old_train.run_train_cli is cli_train.run_train_cli
    assert old_train.add_eval_parser is cli_train.add_eval_parser
    assert old_train.TrainExtension is training.TrainExtension
    assert old_train.load_trained is training.load_trained
    for name in old_compare.__all__:
        assert getattr(old_compare, name) is not None, name
    assert old_compare.load_run is new_compare.load_run and old_compare.plot_runs is plot_runs
    assert old_compare.run_compare_cli is cli_compare.run_compare_cli
    assert old_compare.COMPARE_SCHEMA == new_compare.COMPARE_SCHEMA
    with pytest.raises(AttributeError):
        old_train.no_such_name  # noqa: B018


def test_old_resolve_device_raises_train_error() -> None:
    assert str(old_train.resolve_device("cpu")) == "cpu"
    with pytest.raises(training.TrainError, match="not supported"):
        old_train.resolve_device("meta")


def test_importing_the_engine_does_not_import_the_command_line() -> None:
    # (argparse itself is imported by torch, so the test looks for approxsim's command line.)
    code = (
        "import sys, approxsim.experiments.train, approxsim.experiments.compare, "
        "approxsim.training; print(sorted(m for m in ('approxsim.cli', 'matplotlib') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]"
