"""``approxsim bench models``: structure of the results and the CLI (timings are not tested)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from approxsim.bench import bench_models, format_models_table
from approxsim.cli import main


def test_bench_models_rows() -> None:
    lines: list[str] = []
    res = bench_models(
        "mbm7",
        ["lenet300100"],
        batch_size=4,
        batches=2,
        native_settings="same-process",
        progress=lines.append,
    )
    assert [(r["model"], r["mode"]) for r in res["results"]] == [
        ("lenet300100", "inference"),
        ("lenet300100", "training"),
    ]
    for r in res["results"]:
        assert len(r["times_s"]["native"]) == 2 and len(r["times_s"]["approx"]) == 2
        assert r["approx"]["samples_per_s"] > 0
        assert r["slowdown"] == pytest.approx(r["approx"]["mean_s"] / r["native"]["mean_s"])
    assert res["multiplier"] == "mbm7" and any("training, approx" in ln for ln in lines)
    assert res["device"] == "cpu" and res["tf32"] is False
    assert "lenet300100" in format_models_table(res)
    json.dumps(res)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.json"
    argv = ["bench", "models", "--models", "lenet5", "--batch-size", "2", "--batches", "1"]
    # Native float32 in a child process under OMP_WAIT_POLICY=PASSIVE.
    assert main([*argv, "--native-settings", "passive", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert "lenet5" in printed and data["batch_size"] == 2
    assert "native: OMP_WAIT_POLICY PASSIVE (a child process)" in printed
    assert data["native_environments"]["passive"]["environment"]["OMP_WAIT_POLICY"] == "PASSIVE"
    for row in data["results"]:
        assert row["native_setting"] == "passive" and list(row["native_by_setting"]) == ["passive"]
        assert row["native"]["mean_s"] == row["native_by_setting"]["passive"]["mean_s"]
    assert main(["bench", "models", "--models", "alexnet"]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert main(["bench", "models", "--multiplier", "nope9"]) == 2
    assert main(["bench", "models", "--tf32"]) == 2
    assert "tf32 applies to CUDA" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["bench", "models", "--device", "cuda"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
    assert main(["bench", "models", "--device", "mps"]) == 2
