""":func:`approxsim.training.load_trained`: a checkpoint to a ready model, on the shared runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from training_helpers import N_TEST, N_TRAIN

from approxsim import get_multiplier
from approxsim.convert import conversion_report
from approxsim.ops import PassMultipliers
from approxsim.training import (
    CheckpointError,
    TrainedModel,
    TrainError,
    load_checkpoint,
    load_trained,
    save_checkpoint,
)
from approxsim.training.loop import _evaluate_sums


def _accuracy(trained: TrainedModel, batch_size: int = 256) -> float:
    _, correct, n = _evaluate_sums(
        trained.model, trained.test, batch_size=batch_size, device=torch.device("cpu")
    )
    return correct / n


def test_loads_with_the_training_multiplier(approx_run: tuple[Path, dict]) -> None:
    out, result = approx_run
    trained = load_trained(out, get_multiplier("mitchell7"))
    assert trained.path == out / "checkpoint.pt" and trained.epoch == 2
    assert (trained.model_name, trained.dataset) == ("lenet5", "fashion-mnist")
    assert trained.data_dir == trained.config["data_dir"] is not None
    assert trained.config["multiplier"] == "mitchell7"
    assert not trained.model.training and len(trained.test) == N_TEST
    assert len(trained.split("train")) == N_TRAIN and trained.split("test") is trained.test
    assert len(conversion_report(trained.model).converted) == 5
    # Same weights, multiplier, data and batch size as the evaluation after the last epoch.
    assert _accuracy(trained) == result["final"]["test_acc"]
    with pytest.raises(TrainError, match="split"):
        trained.split("validation")


def test_none_is_exact_float32(approx_run: tuple[Path, dict]) -> None:
    out, _ = approx_run
    trained = load_trained(out / "checkpoint.pt")
    assert trained.passes.all_exact and not conversion_report(trained.model).converted
    per_pass = load_trained(out, PassMultipliers("mitchell7", "fp32", "fp32"))
    assert per_pass.passes.grad_input.name == "fp32"
    only_first = load_trained(out, get_multiplier("trunc7"), include=["features.0"])
    assert [e.name for e in conversion_report(only_first.model).converted] == ["features.0"]


def test_weights_that_do_not_fit(approx_run: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = approx_run
    state = load_checkpoint(out)
    state["model"].pop(next(iter(state["model"])))
    save_checkpoint(tmp_path / "checkpoint.pt", state)
    with pytest.raises(CheckpointError, match="do not fit model 'lenet5' with 10 classes"):
        load_trained(tmp_path)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_trained(tmp_path / "missing")
