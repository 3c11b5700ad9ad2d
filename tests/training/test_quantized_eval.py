"""Post-training quantized evaluation of a float checkpoint: ``evaluate(..., IntMultiplier)``
and ``approxsim eval --int-multiplier / --evoapprox / --c --bits`` (issue 15 §3)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from approxsim import IntMultiplier, QuantConfig, QuantError, calibrate, convert_model
from approxsim.cli import main
from approxsim.data import DatasetError, load_dataset
from approxsim.multipliers import UnknownMultiplierError, get_multiplier
from approxsim.multipliers.registry import get_int_multiplier
from approxsim.training import TrainError, evaluate, load_trained

pytest.importorskip("approxsim.convert", reason="convert_model is not available yet")


def _eval_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert main(["eval", *argv, "--json"]) == 0
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    return result


def _by_hand(run: Path, data_dir: Path, mult: IntMultiplier, n_cal: int) -> tuple[float, float]:
    """Accuracy and mean loss of the library-level flow: load, convert, calibrate, run."""
    trained = load_trained(run)
    model = convert_model(trained.model, mult, quant=QuantConfig())
    cal = load_dataset("fashion-mnist", root=data_dir, split="train").subset(n_cal)
    calibrate(model, cal.batches(256))
    model.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for x, y in trained.test.batches(256):
            logits = model(x)
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(dim=1) == y).sum())
    n = len(trained.test)
    return correct / n, loss / n


def test_exact_uint8_matches_float_and_library(
    exact_run: tuple[Path, dict], data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, _ = exact_run
    float_res = _eval_json(capsys, "--checkpoint", str(run), "--multiplier", "fp32")
    res = _eval_json(
        capsys, "--checkpoint", str(run), "--int-multiplier", "uint8", "--calibration-samples", "40"
    )
    uint8 = get_int_multiplier("uint8")
    assert res["multiplier"]["name"] == "uint8" and res["multiplier"]["kind"] == "integer"
    assert res["multiplier"]["fingerprint"] == uint8.fingerprint
    assert res["quant"]["scheme"] == "affine" and res["quant"]["bits"] == 8
    assert res["quant"]["weight_granularity"] == "per-channel"
    assert res["calibration"] == {
        "from": "calibration",
        "split": "train",
        "samples": 40,
        "batches": 1,
    }
    assert res["converted"] and res["trained_with"]["forward"] == "fp32"
    # 8-bit affine codes with the exact table: the float accuracy up to a sample or two.
    assert abs(res["accuracy"] - float_res["accuracy"]) <= 2 / res["samples"]
    accuracy, loss = _by_hand(run, data_dir, uint8, 40)
    assert res["accuracy"] == accuracy and res["loss"] == loss
    lib = evaluate(run, uint8, calibration_samples=40)
    assert lib["accuracy"] == accuracy and lib["loss"] == loss
    by_name = evaluate(run, "uint8", calibration_samples=40)  # no float multiplier has the name
    assert by_name["loss"] == loss and by_name["multiplier"]["fingerprint"] == uint8.fingerprint


def test_approximate_design_records_fingerprint(
    exact_run: tuple[Path, dict], capsys: pytest.CaptureFixture[str]
) -> None:
    run, _ = exact_run
    drum = get_int_multiplier("drum4_s8")
    argv = ["eval", "--checkpoint", str(run), "--int-multiplier", "drum4_s8"]
    assert main([*argv, "--weight-granularity", "per-tensor", "--calibration-samples", "16"]) == 0
    text = capsys.readouterr().out
    assert f"drum4_s8 (fingerprint {drum.fingerprint[:16]})" in text
    assert "quantized    symmetric 8-bit, weights per-tensor, minmax ranges from 16" in text
    res = evaluate(
        run,
        drum,
        quant=QuantConfig(bits=6, calibration="percentile", percentile=99.0),
        calibration_samples=16,
        max_samples=8,
    )
    assert res["multiplier"]["fingerprint"] == drum.fingerprint
    assert res["multiplier"]["error_stats"]["mae"] > 0
    assert res["quant"]["bits"] == 6 and res["quant"]["calibration"] == "percentile"
    assert res["quant"]["qmax"] == 31 and res["samples"] == 8
    assert 0.0 <= res["accuracy"] <= 1.0


def test_integer_c_model(
    exact_run: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, _ = exact_run
    src = tmp_path / "mul.c"
    src.write_text(
        "#include <stdint.h>\n"
        "uint16_t mul_trunc(uint8_t a, uint8_t b) { return (uint16_t)((a * b) & ~7u); }\n"
    )
    res = _eval_json(
        capsys,
        "--checkpoint", str(run), "--c", str(src), "--function", "mul_trunc", "--bits", "8",
        "--calibration-samples", "8", "--max-samples", "8", "--mapping", "sign-magnitude",
    )  # fmt: skip
    assert res["multiplier"]["bits"] == 8 and not res["multiplier"]["signed"]
    assert res["quant"]["scheme"] == "sign-magnitude" and res["samples"] == 8


def test_errors(
    exact_run: tuple[Path, dict],
    data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run, _ = exact_run
    base = ["eval", "--checkpoint", str(run)]

    # Quantization options with a float multiplier.
    assert main([*base, "--multiplier", "mitchell7", "--quant-bits", "8"]) == 2
    err = capsys.readouterr().err
    assert "--quant-bits" in err and "--int-multiplier" in err
    assert main([*base, "--multiplier", "fp32", "--calibration-samples", "8"]) == 2
    assert "--calibration-samples" in capsys.readouterr().err
    with pytest.raises(QuantError, match="IntMultiplier"):
        evaluate(run, get_multiplier("mitchell7"), quant=QuantConfig())
    with pytest.raises(UnknownMultiplierError, match="is a float multiplier"):
        evaluate(run, "mitchell7", quant=QuantConfig())
    with pytest.raises(TrainError, match="integer multiplier"):
        evaluate(run, "fp32", calibration_samples=8)

    # More code bits than the multiplier has; a mapping for the other signedness.
    assert main([*base, "--int-multiplier", "uint8", "--quant-bits", "10"]) == 2
    assert "bits" in capsys.readouterr().err
    with pytest.raises(QuantError, match="bits"):
        evaluate(run, get_int_multiplier("uint8"), quant=QuantConfig(bits=9))
    with pytest.raises(QuantError):
        evaluate(run, "int8", quant=QuantConfig(mapping="affine"))

    # No training split to calibrate on.
    test_only = tmp_path / "test-only"
    test_only.mkdir()
    for f in data_dir.glob("t10k-*"):
        shutil.copy(f, test_only / f.name)
    with pytest.raises(DatasetError, match="calibrating the quantized layers"):
        evaluate(run, "uint8", quant=QuantConfig(), data_dir=test_only)
    assert main([*base, "--int-multiplier", "uint8", "--data-dir", str(test_only)]) == 2
    assert "training split" in capsys.readouterr().err


def test_approximate_run_and_layer_patterns(approx_run: tuple[Path, dict]) -> None:
    run, _ = approx_run
    res = evaluate(run, get_int_multiplier("trunc4_u8"), calibration_samples=8, split="train")
    assert res["trained_with"]["forward"] == "mitchell7" and res["split"] == "train"
    assert res["samples"] == 64
    only_fc = evaluate(
        run, "uint8", quant=QuantConfig(), include="classifier.*", calibration_samples=8
    )
    assert only_fc["converted"] and all(n.startswith("classifier.") for n in only_fc["converted"])
    assert len(only_fc["converted"]) < len(res["converted"])
    with pytest.raises(TrainError, match="select no layer"):
        evaluate(run, "uint8", quant=QuantConfig(), include="nothing*", calibration_samples=8)
