"""``init_from`` for every run (``approxsim train --init-from RUN``): a float fine-tuning
starts from the run's weights with a fresh optimizer, like a quantization-aware one, so that
a float control can follow the same schedule as the integer fine-tunings (issue 15)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from training_helpers import make_config, metrics, without_timing

from approxsim.cli import main
from approxsim.training import CheckpointError, TrainError, load_checkpoint, train

_SMALL = {"max_train_samples": 32, "max_test_samples": 16, "batch_size": 16, "threads": 1}


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_checkpoint(run)["model"].items() if "_observer." not in k}


def test_float_run_starts_from_the_weights(
    exact_run: tuple[Path, dict], data_dir: Path, tmp_path: Path
) -> None:
    float_run, _ = exact_run
    # A learning rate too small to move any weight: the run ends where it started.
    out = tmp_path / "still"
    train(make_config(out, data_dir, multiplier="fp32", init_from=float_run, epochs=1,
                      lr=1e-12, momentum=0.0, **_SMALL))  # fmt: skip
    start, end = _weights(float_run), _weights(out)
    assert start.keys() == end.keys()
    assert all(torch.allclose(start[k], end[k], rtol=0, atol=1e-6) for k in start)
    seeded = tmp_path / "seeded"  # the same run without init_from starts elsewhere
    train(make_config(seeded, data_dir, multiplier="fp32", epochs=1, lr=1e-12, momentum=0.0,
                      **_SMALL))  # fmt: skip
    assert not all(torch.allclose(start[k], _weights(seeded)[k], atol=1e-3) for k in start)


def test_cli_float_control_and_resume(
    exact_run: tuple[Path, dict], data_dir: Path, tmp_path: Path
) -> None:
    float_run, _ = exact_run
    argv = [
        "train", "--multiplier", "fp32", "--init-from", str(float_run), "--data-dir",
        str(data_dir), "--batch-size", "16", "--max-train-samples", "32",
        "--max-test-samples", "16", "--threads", "1", "--no-progress", "--lr", "0.01",
    ]  # fmt: skip
    assert main([*argv, "--epochs", "2", "--out", str(tmp_path / "whole")]) == 0
    meta = (tmp_path / "whole" / "config.json").read_text()
    assert str(float_run) in meta
    # A resumed run continues from its own checkpoint, not from init_from again.
    assert main([*argv, "--epochs", "1", "--out", str(tmp_path / "parts")]) == 0
    assert main([*argv, "--epochs", "2", "--out", str(tmp_path / "parts"), "--resume"]) == 0
    assert without_timing(metrics(tmp_path / "parts")) == without_timing(
        metrics(tmp_path / "whole")
    )


def test_float_run_from_a_quantized_run(
    exact_run: tuple[Path, dict], data_dir: Path, tmp_path: Path
) -> None:
    pytest.importorskip("approxsim.convert", reason="convert_model is not available yet")
    float_run, _ = exact_run
    qat = tmp_path / "qat"
    train(make_config(qat, data_dir, multiplier="uint8", init_from=float_run, epochs=1,
                      grad="ste", **_SMALL))  # fmt: skip
    # Its range observers are left out; the float approximate layers take its weights.
    out = tmp_path / "back"
    train(make_config(out, data_dir, multiplier="mitchell7", init_from=qat, epochs=1,
                      lr=1e-12, momentum=0.0, **_SMALL))  # fmt: skip
    start, end = _weights(qat), _weights(out)
    assert all(torch.allclose(start[k], end[k], rtol=0, atol=1e-6) for k in start)


def test_errors_name_the_checkpoint(
    exact_run: tuple[Path, dict],
    data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    float_run, _ = exact_run
    with pytest.raises(TrainError, match="trained model 'lenet5'.*--model lenet5"):
        train(make_config(tmp_path / "a", data_dir, multiplier="fp32", model="lenet300100",
                          init_from=float_run, **_SMALL))  # fmt: skip
    with pytest.raises(CheckpointError):
        train(make_config(tmp_path / "b", data_dir, multiplier="fp32",
                          init_from=tmp_path / "missing", **_SMALL))  # fmt: skip
    with pytest.raises(TrainError, match="init_from must be a checkpoint or run folder, got 3"):
        make_config(tmp_path / "c", data_dir, multiplier="fp32", init_from=3)
    base = ["train", "--out", str(tmp_path / "d"), "--data-dir", str(data_dir), "--no-progress"]
    argv = [*base, "--multiplier", "fp32", "--model", "lenet300100", "--init-from"]
    assert main([*argv, str(float_run)]) == 2
    assert "trained model 'lenet5'" in capsys.readouterr().err
