"""``approxsim.training``: config, the training loop, run folders, checkpoints and
:func:`~approxsim.training.evaluate`, on a tiny synthetic IDX dataset.

One approximate run (LeNet-5, ``mitchell7``, 2 epochs of 64 images) is shared by the tests
that read its files (``conftest.py``); resuming is checked against it with an interrupted run
of the same settings. Everything else trains exactly (``fp32``), which takes well under a
second.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from training_helpers import (
    N_TEST,
    N_TRAIN,
    approx_settings,
    make_config,
    metrics,
    without_timing,
)

from approxsim import get_multiplier
from approxsim.models import UnknownModelError
from approxsim.multipliers import UnknownMultiplierError
from approxsim.training import (
    CheckpointError,
    ResolvedTrainConfig,
    TrainConfig,
    TrainError,
    evaluate,
    load_checkpoint,
    save_checkpoint,
    train,
)
from approxsim.training import loop as loop_mod

pytest.importorskip("approxsim.convert", reason="convert_model is not available yet")


# ---------------------------------------------------------------------------- config
def test_config_resolves_model_defaults(tmp_path: Path) -> None:
    cfg = TrainConfig(tmp_path, multiplier="mitchell7").resolve()
    assert isinstance(cfg, ResolvedTrainConfig)
    assert cfg.to_dict().keys() == TrainConfig(tmp_path).to_dict().keys()  # same file format
    assert (cfg.optimizer, cfg.lr, cfg.momentum, cfg.batch_size) == ("sgd", 0.05, 0.9, 128)
    assert cfg.grad_input == "mitchell7" and cfg.grad_weight == "mitchell7"
    adam = TrainConfig(tmp_path, optimizer="adam").resolve()
    assert adam.lr == 1e-3 and adam.momentum == 0.0
    assert TrainConfig(tmp_path, lr=0.1, batch_size=7).resolve().lr == 0.1
    d = TrainConfig(tmp_path, include=["features.*"], grad_input="fp32").to_dict()
    assert d["include"] == ["features.*"] and d["grad_input"] == "fp32"
    json.dumps(d)


@pytest.mark.parametrize(
    ("kw", "error", "match"),
    [
        ({"epochs": 0}, TrainError, "epochs"),
        ({"batch_size": -1}, TrainError, "batch_size"),
        ({"lr": float("nan")}, TrainError, "lr"),
        ({"momentum": 1.0}, TrainError, "momentum"),
        ({"optimizer": "lbfgs"}, TrainError, "optimizer"),
        ({"schedule": "step"}, TrainError, "schedule"),
        ({"seed": 2**32}, TrainError, "seed"),
        ({"device": "tpu"}, TrainError, "device"),
        ({"include": [""]}, TrainError, "include"),
        ({"resume": True, "overwrite": True}, TrainError, "exclude each other"),
        ({"model": "resnet1000"}, UnknownModelError, "lenet5"),
        ({"dataset": "cifar-1000"}, ValueError, "fashion-mnist"),
        ({"multiplier": "mitchell99"}, UnknownMultiplierError, "mitchell"),
        ({"multiplier": 3}, TrainError, "multiplier"),
    ],
)
def test_config_validation(tmp_path: Path, kw: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        TrainConfig(tmp_path, **kw)


def test_config_is_frozen(tmp_path: Path) -> None:
    cfg = TrainConfig(tmp_path)
    with pytest.raises(AttributeError):
        cfg.epochs = 3  # type: ignore[misc]
    assert cfg.out_dir == tmp_path


# ---------------------------------------------------------------------------- approximate run
def test_approx_run_writes_its_files(approx_run: tuple[Path, dict]) -> None:
    out, result = approx_run
    records = metrics(out)
    assert [r["epoch"] for r in records] == [1, 2]
    for r in records:
        assert set(r) >= {
            "epoch",
            "train_loss",
            "train_acc",
            "test_loss",
            "test_acc",
            "seconds",
            "lr",
        }
        assert 0 <= r["test_acc"] <= 1 and np.isfinite(r["train_loss"]) and r["seconds"] > 0
    assert records[0]["lr"] == 0.05 and records[1]["lr"] == pytest.approx(0.025)  # cosine
    assert result["history"] == records and result["epochs_completed"] == 2
    assert result["final"] == records[-1] and result["multipliers"]["forward"] == "mitchell7"

    meta = json.loads((out / "config.json").read_text())
    assert meta["config"]["multiplier"] == "mitchell7" and meta["config"]["batch_size"] == 32
    mult = meta["multipliers"]["forward"]
    assert mult["fingerprint"] == get_multiplier("mitchell7").fingerprint
    assert mult["provenance"]["builder"] and mult["mantissa_bits"] == 7
    assert meta["multipliers"]["grad_weight"]["name"] == "mitchell7"
    assert len(meta["model"]["converted_layers"]) == 5
    assert meta["dataset"]["train_samples"] == N_TRAIN
    assert meta["environment"]["torch"] == torch.__version__

    state = load_checkpoint(out / "checkpoint.pt")
    assert state["epoch"] == 2 and state["history"] == records
    assert state["multipliers"]["forward"]["name"] == "mitchell7"
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_resume_after_interrupt_equals_uninterrupted(
    approx_run: tuple[Path, dict],
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    straight_out, _ = approx_run
    out = tmp_path / "resumed"
    real_epoch = loop_mod._train_one_epoch
    calls = []

    def interrupted_in_epoch_2(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C during the second epoch
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(loop_mod, "_train_one_epoch", interrupted_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(make_config(out, data_dir, **approx_settings()))
    assert load_checkpoint(out)["epoch"] == 1  # the last complete epoch, intact
    assert "holds epoch 1 intact: continue with --resume" in capsys.readouterr().err
    assert len(metrics(out)) == 1
    monkeypatch.setattr(loop_mod, "_train_one_epoch", real_epoch)

    resumed = train(make_config(out, data_dir, resume=True, **approx_settings()))
    assert resumed["resumed_from"] == 1
    assert without_timing(metrics(out)) == without_timing(metrics(straight_out))
    a = load_checkpoint(out)
    b = load_checkpoint(straight_out)
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])


def test_evaluate_checkpoint(approx_run: tuple[Path, dict]) -> None:
    out, result = approx_run
    res = evaluate(out / "checkpoint.pt", "mitchell7")
    # Same weights, multiplier, data and batch size as the evaluation after the last epoch.
    assert res["accuracy"] == result["final"]["test_acc"]
    assert res["loss"] == pytest.approx(result["final"]["test_loss"], rel=1e-5)
    assert res["samples"] == N_TEST and res["epoch"] == 2
    assert res["trained_with"]["forward"] == "mitchell7"
    assert res["multiplier"]["name"] == "mitchell7"
    exact = evaluate(out, "fp32", max_samples=8)
    assert exact["samples"] == 8 and 0 <= exact["accuracy"] <= 1
    json.dumps(exact)


# ---------------------------------------------------------------------------- run folders
def test_refuses_non_empty_out_dir(tmp_path: Path, data_dir: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(TrainError, match="not empty.*--resume.*--overwrite"):
        train(make_config(tmp_path, data_dir, multiplier="fp32"))
    with pytest.raises(TrainError, match="no checkpoint.pt"):
        train(make_config(tmp_path, data_dir, multiplier="fp32", resume=True))
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_refuses_finished_run_without_resume(exact_run: tuple[Path, dict], data_dir: Path) -> None:
    out, _ = exact_run
    with pytest.raises(TrainError, match="not empty"):
        train(make_config(out, data_dir, multiplier="fp32", epochs=3))


def test_overwrite_keeps_foreign_files(tmp_path: Path, data_dir: Path) -> None:
    cfg = make_config(tmp_path, data_dir, multiplier="fp32", epochs=1)
    train(cfg)
    (tmp_path / "notes.txt").write_text("mine")
    again = train(make_config(tmp_path, data_dir, multiplier="fp32", epochs=1, overwrite=True))
    assert again["epochs_completed"] == 1 and len(metrics(tmp_path)) == 1
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_resume_complete_run_and_extension(tmp_path: Path, data_dir: Path) -> None:
    train(make_config(tmp_path, data_dir, multiplier="fp32", epochs=1))
    done = train(make_config(tmp_path, data_dir, multiplier="fp32", epochs=1, resume=True))
    assert done["epochs_completed"] == 1 and done["resumed_from"] == 1
    more = train(make_config(tmp_path, data_dir, multiplier="fp32", epochs=2, resume=True))
    assert [r["epoch"] for r in metrics(tmp_path)] == [1, 2] and more["epochs_completed"] == 2
    meta = json.loads((tmp_path / "config.json").read_text())
    assert meta["config"]["epochs"] == 2
    assert [r["after_epoch"] for r in meta["resumed"]] == [1, 1]


def test_resume_with_other_settings_is_refused(
    exact_run: tuple[Path, dict], data_dir: Path
) -> None:
    out, _ = exact_run
    with pytest.raises(TrainError, match="lr=0.05 .now 0.1.*--overwrite"):
        train(make_config(out, data_dir, multiplier="fp32", epochs=3, lr=0.1, resume=True))
    with pytest.raises(TrainError, match=r"forward multiplier fp32 \(now trunc7\)"):
        train(make_config(out, data_dir, multiplier="trunc7", epochs=3, resume=True))


def test_resume_in_empty_folder_starts_fresh(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "new"
    res = train(make_config(out, data_dir, multiplier="fp32", epochs=1, resume=True))
    assert res["resumed_from"] is None and res["epochs_completed"] == 1


def test_damaged_checkpoint_is_detected(tmp_path: Path, data_dir: Path) -> None:
    train(make_config(tmp_path, data_dir, multiplier="fp32", epochs=1))
    ckpt = tmp_path / "checkpoint.pt"
    good = ckpt.read_bytes()
    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0xFF
    ckpt.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(ckpt)
    with pytest.raises(CheckpointError, match="damaged"):
        train(make_config(tmp_path, data_dir, multiplier="fp32", epochs=2, resume=True))
    with pytest.raises(CheckpointError, match="damaged"):
        evaluate(ckpt, "fp32")
    ckpt.write_bytes(good[: len(good) - 100])
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(ckpt)
    torch.save({"model": {}}, ckpt)
    with pytest.raises(CheckpointError, match="not an approxsim training checkpoint"):
        load_checkpoint(ckpt)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_interrupted_save_keeps_old_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exact_run: tuple[Path, dict]
) -> None:
    state = load_checkpoint(exact_run[0])
    path = save_checkpoint(tmp_path / "c.pt", {**state, "x": 1})

    def ctrl_c(*args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {**state, "x": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["x"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_include_selecting_nothing(tmp_path: Path, data_dir: Path) -> None:
    with pytest.raises(TrainError, match="select no layer"):
        train(make_config(tmp_path, data_dir, multiplier="mitchell7", include=["nothing*"]))
