"""``approxsim train --grad lut --lut-step H``: the stencil of the gradient tables is a run
setting (recorded, checked on resume, refused without ``--grad lut``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from training_helpers import make_config

from approxsim.cli import main
from approxsim.training import TrainError, load_checkpoint
from approxsim.training.compare import load_run

pytest.importorskip("approxsim.convert", reason="convert_model is not available yet")


def test_lut_step_is_recorded_and_checked_on_resume(
    exact_run: tuple[Path, dict],
    data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    float_run, _ = exact_run
    out = tmp_path / "lut8"
    argv = [
        "train", "--int-multiplier", "drum4_u8", "--grad", "lut", "--init-from", str(float_run),
        "--out", str(out), "--data-dir", str(data_dir), "--batch-size", "16",
        "--max-train-samples", "32", "--max-test-samples", "16", "--threads", "1",
        "--no-progress",
    ]  # fmt: skip
    assert main([*argv, "--epochs", "1", "--lut-step", "8"]) == 0
    meta = json.loads((out / "config.json").read_text())
    assert meta["config"]["lut_step"] == 8 and load_checkpoint(out)["config"]["lut_step"] == 8
    assert main([*argv, "--epochs", "2", "--lut-step", "4", "--resume"]) == 2
    assert "lut_step=8 (now 4)" in capsys.readouterr().err
    assert main([*argv, "--epochs", "2", "--lut-step", "8", "--resume"]) == 0
    assert load_run(out).label.endswith("(quantized, grad=lut, lut_step=8)")  # told apart


def test_lut_step_needs_grad_lut(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainError, match=r"lut_step=4 shapes the gradient tables.*'ste'"):
        make_config(tmp_path / "a", data_dir, multiplier="drum4_u8", lut_step=4)
    with pytest.raises(TrainError, match="lut_step must be an integer >= 1, got 0"):
        make_config(tmp_path / "b", data_dir, multiplier="drum4_u8", grad="lut", lut_step=0)
    with pytest.raises(TrainError, match="needs an integer multiplier"):
        make_config(tmp_path / "c", data_dir, multiplier="fp32", lut_step=2)
