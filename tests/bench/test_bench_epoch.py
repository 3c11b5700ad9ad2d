"""``approxsim bench epoch``: whole ``approxsim train`` epochs in child processes, float32 under
a native setting against a multiplier in the caller's environment, on a tiny synthetic dataset
in Fashion-MNIST's layout (timings are reported, never tested)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from approxsim._runtime import thread_environment
from approxsim.bench import BenchError, NativeBaselineError, bench_epoch, format_epoch_table
from approxsim.cli import main
from approxsim.data import write_banded_mnist


def test_epoch_bench_writes_its_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_banded_mnist(tmp_path / "data", 64, 32)
    out = tmp_path / "epoch.json"
    argv = ["bench", "epoch", "--data-dir", str(data), "--batch-size", "32"]
    argv += ["--max-test-samples", "16", "--native-settings", "passive", "--json", str(out)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    result = json.loads(out.read_text())
    assert result["schema"] == "approxsim.bench.epoch/1"
    cfg = result["config"]
    assert (cfg["model"], cfg["dataset"], cfg["multiplier"]) == (
        "lenet5",
        "fashion-mnist",
        "mitchell7",
    )
    assert list(result["native"]) == ["passive"] and result["native_setting"] == "passive"
    fp32, approx = result["native"]["passive"], result["approx"]
    assert fp32["environment"]["OMP_WAIT_POLICY"] == "PASSIVE"
    assert approx["environment"] == thread_environment()  # the command's own, as it is
    for run in (fp32, approx):
        [epoch] = run["epochs"]  # the metrics record of the run's one epoch
        assert epoch["epoch"] == 1 and run["epoch_s"] == epoch["seconds"] > 0
        assert run["train_samples_per_s"] == epoch["samples_per_s"] > 0
    assert result["slowdown"] == pytest.approx(approx["epoch_s"] / fp32["epoch_s"])
    assert result["machine"]["cpu"] and result["machine"]["cpu_features"] is not None
    assert "slowdown mitchell7 / fp32 at its best" in captured.out
    assert "native: OMP_WAIT_POLICY PASSIVE (a child process)" in captured.out
    assert "results written to" in captured.err
    assert format_epoch_table(result) in captured.out


def test_epoch_bench_refuses_bad_input_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(BenchError, match="float32 against itself"):
        bench_epoch(multiplier="fp32")
    with pytest.raises(BenchError, match="unknown model 'alexnet'"):
        bench_epoch(model="alexnet")
    with pytest.raises(BenchError, match="unknown dataset 'svhn'"):
        bench_epoch(dataset="svhn")
    assert main(["bench", "epoch", "--multiplier", "nope9"]) == 2
    assert "approxsim: error:" in capsys.readouterr().err


def test_a_failed_training_run_is_reported(tmp_path: Path) -> None:
    # No dataset files in the folder: train fails in its child, with its own message.
    with pytest.raises(NativeBaselineError, match=r"fp32 .*failed \(exit status 2\)"):
        bench_epoch(data_dir=str(tmp_path), native_settings="passive")
