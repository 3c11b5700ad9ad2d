"""Quantization-aware training with an integer multiplier: ``approxsim train --int-multiplier
... --grad ste|lut --init-from RUN`` (issue 15 §3): run folder, resume, compare, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from training_helpers import make_config, metrics, without_timing

from approxsim import QuantConfig
from approxsim.cli import main
from approxsim.multipliers.registry import get_int_multiplier
from approxsim.training import (
    TrainConfig,
    TrainError,
    compare_runs,
    evaluate,
    load_checkpoint,
    load_run,
    train,
)

pytest.importorskip("approxsim.convert", reason="convert_model is not available yet")

_SMALL = {"max_train_samples": 48, "max_test_samples": 16, "batch_size": 16, "threads": 1}


def _qat(out: Path, data_dir: Path, init: Path, **kw: Any) -> TrainConfig:
    settings: dict[str, Any] = {
        "multiplier": get_int_multiplier("drum4_u8"),
        "init_from": init,
        "grad": "lut",
        "epochs": 2,
        "lr": 0.01,
        **_SMALL,
    }
    settings.update(kw)
    return make_config(out, data_dir, **settings)


def test_cli_fine_tunes_a_float_run(
    exact_run: tuple[Path, dict],
    data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    float_run, _ = exact_run
    out = tmp_path / "qat"
    argv = [
        "train", "--int-multiplier", "drum4_u8", "--grad", "lut", "--init-from", str(float_run),
        "--out", str(out), "--data-dir", str(data_dir), "--epochs", "1", "--batch-size", "16",
        "--max-train-samples", "32", "--max-test-samples", "16", "--threads", "1",
        "--no-progress", "--quant-mapping", "sign-magnitude",
    ]  # fmt: skip
    assert main(argv) == 0
    drum = get_int_multiplier("drum4_u8")
    text = capsys.readouterr().out
    assert f"drum4_u8 (fingerprint {drum.fingerprint[:16]}), quantized, grad lut" in text
    meta = json.loads((out / "config.json").read_text())
    assert meta["multipliers"]["forward"]["fingerprint"] == drum.fingerprint
    assert meta["multipliers"]["forward"]["kind"] == "integer"
    assert meta["multipliers"]["grad_input"] == {"name": "lut", "fingerprint": drum.fingerprint}
    assert meta["config"]["grad"] == "lut" and meta["config"]["quant_mapping"] == "sign-magnitude"
    assert meta["config"]["init_from"] == str(float_run)
    layers = meta["model"]["converted_layers"]
    assert layers and all("sign-magnitude" in layer["multiplier"] for layer in layers)
    state = load_checkpoint(out)
    assert any("_observer." in k for k in state["model"])  # the ranges travel with the run
    assert state["multipliers"]["forward"]["fingerprint"] == drum.fingerprint

    run = load_run(out)
    assert run.label == f"drum4_u8@{drum.fingerprint[:12]} (quantized, grad=lut)"
    assert compare_runs([float_run, out])["runs"][1]["label"] == run.label

    # The weights of a quantized run load into a float model; evaluated quantized, it uses
    # its own activation ranges unless calibration is asked for.
    assert 0 <= evaluate(out, "fp32")["accuracy"] <= 1
    own = evaluate(out, drum, quant=QuantConfig(mapping="sign-magnitude"), max_samples=16)
    assert own["calibration"] == {"from": "checkpoint"}
    assert own["accuracy"] == metrics(out)[-1]["test_acc"]  # what training measured
    again = evaluate(out, drum, calibration_samples=16)
    assert again["calibration"]["from"] == "calibration" and again["calibration"]["samples"] == 16
    assert main(["eval", "--checkpoint", str(out), "--int-multiplier", "drum4_u8"]) == 0
    assert "the run's ranges" in capsys.readouterr().out


def test_resume_is_bit_identical(
    exact_run: tuple[Path, dict], data_dir: Path, tmp_path: Path
) -> None:
    float_run, _ = exact_run
    whole = train(_qat(tmp_path / "whole", data_dir, float_run))
    train(_qat(tmp_path / "parts", data_dir, float_run, epochs=1))
    resumed = train(_qat(tmp_path / "parts", data_dir, float_run, resume=True))
    assert resumed["resumed_from"] == 1 and whole["multipliers"]["forward"] == "drum4_u8"
    assert without_timing(metrics(tmp_path / "parts")) == without_timing(
        metrics(tmp_path / "whole")
    )
    a, b = (
        load_checkpoint(tmp_path / "whole")["model"],
        load_checkpoint(tmp_path / "parts")["model"],
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(TrainError, match="grad_input multiplier lut"):
        train(_qat(tmp_path / "parts", data_dir, float_run, epochs=3, resume=True, grad="ste"))
    with pytest.raises(TrainError, match="quant_bits"):
        train(_qat(tmp_path / "parts", data_dir, float_run, epochs=3, resume=True, quant_bits=6))


def test_errors(
    exact_run: tuple[Path, dict],
    data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    float_run, _ = exact_run
    with pytest.raises(TrainError, match="trained model 'lenet5'"):
        train(_qat(tmp_path / "a", data_dir, float_run, model="lenet300100"))
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())
    with pytest.raises(TrainError, match="need an integer multiplier|needs an integer"):
        make_config(tmp_path / "b", data_dir, multiplier="mitchell7", grad="lut")
    with pytest.raises(TrainError, match="grad='ste' or grad='lut'"):
        _qat(tmp_path / "c", data_dir, float_run, grad_input="mitchell7")
    with pytest.raises(TrainError, match="quant_bits"):
        _qat(tmp_path / "c", data_dir, float_run, quant_bits=1)

    base = ["train", "--out", str(tmp_path / "d"), "--data-dir", str(data_dir)]
    assert main([*base, "--int-multiplier", "uint8", "--quant-bits", "9"]) == 2
    assert "bits" in capsys.readouterr().err
    cim = ["cim", "train", "--method", "noise", "--sigma", "0.1", *base[1:]]
    assert main([*cim, "--int-multiplier", "uint8"]) == 2
    assert "takes no integer multiplier" in capsys.readouterr().err
