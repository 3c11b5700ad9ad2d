"""Robustness training: the run folder of ``approxsim train`` (loadable by ``approxsim
eval``), "standard" identical to ``approxsim train``, resumable noise injection, an
adversarial inner step that raises the loss, and bad settings rejected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from approxsim.cim import (
    CIMError,
    CIMTrainConfig,
    DeviceConfig,
    device_to_weight_delta,
    effective_deviations,
    quantize_weight,
    sample_device_deviations,
    select_layers,
    train_cim,
    weight_sign,
)
from approxsim.cim.training import _adversarial_deltas, _noise_deltas, checkpoint_method
from approxsim.training import TrainConfig, evaluate, load_checkpoint


def _base(out: Path, data_dir: Path, **kw: Any) -> TrainConfig:
    settings: dict[str, Any] = {
        "model": "lenet300100",
        "dataset": "fashion-mnist",
        "data_dir": data_dir,
        "epochs": 2,
        "batch_size": 32,
        "progress": False,
        "threads": 1,
    }
    settings.update(kw)
    return TrainConfig(out, **settings)


def test_standard_method_equals_approxsim_train(
    tmp_path: Path, fashion_dir: Path, std_run: Path
) -> None:
    res = train_cim(CIMTrainConfig(_base(tmp_path / "s", fashion_dir), method="standard"))
    mine = load_checkpoint(tmp_path / "s")
    theirs = load_checkpoint(std_run)
    for k, v in theirs["model"].items():
        assert torch.equal(mine["model"][k], v), k
    assert checkpoint_method(mine) == "standard" and checkpoint_method(theirs) == "standard"
    assert res["final"]["test_acc"] == theirs["history"][-1]["test_acc"]
    assert "test_acc_chip" in res["final"]


def test_noise_training_writes_a_loadable_resumable_run(tmp_path: Path, fashion_dir: Path) -> None:
    dm = DeviceConfig(sigma=0.05, write_verify_tolerance=0.08)
    whole = train_cim(CIMTrainConfig(_base(tmp_path / "a", fashion_dir), device_model=dm))
    assert whole["method"] == "noise" and whole["epochs_completed"] == 2
    state = load_checkpoint(tmp_path / "a")
    assert state["cim"]["method"] == "noise" and state["cim"]["device_model"] == dm.to_dict()
    assert checkpoint_method(state) == "noise"
    assert (tmp_path / "a" / "config.json").read_text().count('"cim"') == 1
    ev = evaluate(tmp_path / "a", "fp32")  # approxsim eval reads it
    assert ev["accuracy"] == whole["final"]["test_acc"]
    # One epoch, then resume to two: the same weights as the uninterrupted run.
    train_cim(CIMTrainConfig(_base(tmp_path / "b", fashion_dir, epochs=1), device_model=dm))
    train_cim(CIMTrainConfig(_base(tmp_path / "b", fashion_dir, resume=True), device_model=dm))
    b = load_checkpoint(tmp_path / "b")
    for k, v in state["model"].items():
        assert torch.equal(b["model"][k], v), k
    with pytest.raises(Exception, match="CIM settings"):
        train_cim(
            CIMTrainConfig(
                _base(tmp_path / "b", fashion_dir, epochs=3, resume=True),
                device_model=dm.replace(sigma=0.1),
            )
        )


def test_adversarial_training_runs(tmp_path: Path, fashion_dir: Path) -> None:
    res = train_cim(
        CIMTrainConfig(
            _base(tmp_path / "adv", fashion_dir, epochs=1),
            method="adversarial",
            eps=0.05,
            adv_steps=2,
        )
    )
    state = load_checkpoint(tmp_path / "adv")
    assert state["cim"]["eps"] == 0.05 and state["cim"]["adv_steps"] == 2
    assert state["cim"]["adv_step_size"] == 1.25
    assert res["final"]["train_loss"] is not None


def test_adversarial_inner_step_raises_the_loss(trained_mlp: nn.Module, blobs: tuple) -> None:
    x, y = blobs[0]
    layers = select_layers(trained_mlp)
    cfg = DeviceConfig()
    torch.manual_seed(0)
    deltas = _adversarial_deltas(trained_mlp, layers, cfg, x, y, 0.2, 3, 2.5 / 3)
    for d in deltas.values():
        assert d is not None and float(d.abs().max()) <= 0.2 + 1e-7
    from approxsim.cim import weight_deltas

    with torch.no_grad():
        with weight_deltas(trained_mlp, dict.fromkeys(layers), cfg, layers=layers):
            clean = float(nn.functional.cross_entropy(trained_mlp(x), y))
        with weight_deltas(trained_mlp, deltas, cfg, layers=layers):
            adv = float(nn.functional.cross_entropy(trained_mlp(x), y))
    assert adv > 2 * clean


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"method": "dropout"}, "method"),
        ({"method": "noise", "device_model": DeviceConfig()}, "sigma > 0"),
        ({"method": "adversarial", "eps": 0}, "eps"),
        ({"method": "adversarial", "adv_steps": 0}, "adv_steps"),
        ({"method": "adversarial", "device_model": DeviceConfig(clip=True)}, "clip"),
        ({"include": [""]}, "include"),
    ],
)
def test_bad_training_configs(tmp_path: Path, kw: dict[str, Any], match: str) -> None:
    with pytest.raises(CIMError, match=match):
        CIMTrainConfig(TrainConfig(tmp_path), **kw)


@pytest.mark.parametrize("clip", [False, True])
def test_noise_injection_draws_clipped_or_additive_chips(
    trained_mlp: nn.Module, clip: bool
) -> None:
    layers = select_layers(trained_mlp)
    cfg = DeviceConfig(sigma=5.0, clip=clip)
    torch.manual_seed(7)
    got = _noise_deltas(layers, cfg)
    torch.manual_seed(7)  # the same draws from torch's global RNG
    for name, m in layers.items():
        w = m.weight.detach()
        dg = sample_device_deviations(w.shape, cfg)
        want = device_to_weight_delta(effective_deviations(dg, w, cfg), weight_sign(w), cfg)
        d = got[name]
        assert d is not None and torch.equal(d, want)
        wq, s = quantize_weight(w, 8)
        top = float((wq + s * d).abs().max() / s)
        assert top <= 1 + 1e-6 if clip else top > 2


def test_noise_training_with_clipping_records_it(tmp_path: Path, fashion_dir: Path) -> None:
    dm = DeviceConfig(sigma=0.05, clip=True)
    res = train_cim(CIMTrainConfig(_base(tmp_path / "c", fashion_dir, epochs=1), device_model=dm))
    state = load_checkpoint(tmp_path / "c")
    assert state["cim"]["device_model"]["clip"] is True and res["epochs_completed"] == 1
