"""``approxsim.experiments.train`` and ``compare`` on a tiny synthetic IDX dataset.

One approximate run (LeNet-5, ``mitchell7``, 2 epochs of 64 images) is shared by the tests
that read its files; resuming is checked against it with an interrupted run of the same
settings. Everything else trains exactly (``fp32``), which takes well under a second.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from approxsim import get_multiplier
from approxsim.data import write_banded_mnist
from approxsim.experiments import compare as compare_mod
from approxsim.experiments import train as train_mod
from approxsim.experiments.compare import (
    CompareError,
    add_compare_parser,
    compare_runs,
    compare_seed_groups,
    format_comparison,
    format_seed_groups,
    load_run,
    plot_runs,
    run_compare_cli,
)
from approxsim.experiments.train import (
    CheckpointError,
    TrainConfig,
    TrainError,
    add_eval_parser,
    add_train_parser,
    evaluate,
    load_checkpoint,
    run_eval_cli,
    run_train_cli,
    save_checkpoint,
    train,
)
from approxsim.models import UnknownModelError
from approxsim.multipliers import UnknownMultiplierError

pytest.importorskip("approxsim.convert", reason="convert_model is not available yet")

N_TRAIN, N_TEST = 64, 32
_TIMING_KEYS = ("seconds", "samples_per_s")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fashion")
    write_banded_mnist(root, N_TRAIN, N_TEST)
    return root


def _config(out: Path, data_dir: Path, **kw: Any) -> TrainConfig:
    settings: dict[str, Any] = {
        "model": "lenet5",
        "dataset": "fashion-mnist",
        "data_dir": data_dir,
        "epochs": 2,
        "batch_size": 32,
        "progress": False,
        "threads": 2,
    }
    settings.update(kw)
    return TrainConfig(out, **settings)


def _approx_settings() -> dict[str, Any]:
    return {"multiplier": "mitchell7", "schedule": "cosine", "lr": 0.05}


@pytest.fixture(scope="module")
def approx_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("runs") / "mitchell7"
    return out, train(_config(out, data_dir, **_approx_settings()))


@pytest.fixture(scope="module")
def exact_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("runs") / "fp32"
    return out, train(_config(out, data_dir, multiplier="fp32", epochs=3))


def _metrics(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _without_timing(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in _TIMING_KEYS} for r in records]


# ---------------------------------------------------------------------------- config
def test_config_resolves_model_defaults(tmp_path: Path) -> None:
    cfg = TrainConfig(tmp_path, multiplier="mitchell7").resolve()
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
    records = _metrics(out)
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
    real_epoch = train_mod._train_one_epoch
    calls = []

    def interrupted_in_epoch_2(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C during the second epoch
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train_mod, "_train_one_epoch", interrupted_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(_config(out, data_dir, **_approx_settings()))
    assert load_checkpoint(out)["epoch"] == 1  # the last complete epoch, intact
    assert "holds epoch 1 intact: continue with --resume" in capsys.readouterr().err
    assert len(_metrics(out)) == 1
    monkeypatch.setattr(train_mod, "_train_one_epoch", real_epoch)

    resumed = train(_config(out, data_dir, resume=True, **_approx_settings()))
    assert resumed["resumed_from"] == 1
    assert _without_timing(_metrics(out)) == _without_timing(_metrics(straight_out))
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
        train(_config(tmp_path, data_dir, multiplier="fp32"))
    with pytest.raises(TrainError, match="no checkpoint.pt"):
        train(_config(tmp_path, data_dir, multiplier="fp32", resume=True))
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_refuses_finished_run_without_resume(exact_run: tuple[Path, dict], data_dir: Path) -> None:
    out, _ = exact_run
    with pytest.raises(TrainError, match="not empty"):
        train(_config(out, data_dir, multiplier="fp32", epochs=3))


def test_overwrite_keeps_foreign_files(tmp_path: Path, data_dir: Path) -> None:
    cfg = _config(tmp_path, data_dir, multiplier="fp32", epochs=1)
    train(cfg)
    (tmp_path / "notes.txt").write_text("mine")
    again = train(_config(tmp_path, data_dir, multiplier="fp32", epochs=1, overwrite=True))
    assert again["epochs_completed"] == 1 and len(_metrics(tmp_path)) == 1
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_resume_complete_run_and_extension(tmp_path: Path, data_dir: Path) -> None:
    train(_config(tmp_path, data_dir, multiplier="fp32", epochs=1))
    done = train(_config(tmp_path, data_dir, multiplier="fp32", epochs=1, resume=True))
    assert done["epochs_completed"] == 1 and done["resumed_from"] == 1
    more = train(_config(tmp_path, data_dir, multiplier="fp32", epochs=2, resume=True))
    assert [r["epoch"] for r in _metrics(tmp_path)] == [1, 2] and more["epochs_completed"] == 2
    meta = json.loads((tmp_path / "config.json").read_text())
    assert meta["config"]["epochs"] == 2
    assert [r["after_epoch"] for r in meta["resumed"]] == [1, 1]


def test_resume_with_other_settings_is_refused(
    exact_run: tuple[Path, dict], data_dir: Path
) -> None:
    out, _ = exact_run
    with pytest.raises(TrainError, match="lr=0.05 .now 0.1.*--overwrite"):
        train(_config(out, data_dir, multiplier="fp32", epochs=3, lr=0.1, resume=True))
    with pytest.raises(TrainError, match=r"forward multiplier fp32 \(now trunc7\)"):
        train(_config(out, data_dir, multiplier="trunc7", epochs=3, resume=True))


def test_resume_in_empty_folder_starts_fresh(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "new"
    res = train(_config(out, data_dir, multiplier="fp32", epochs=1, resume=True))
    assert res["resumed_from"] is None and res["epochs_completed"] == 1


def test_damaged_checkpoint_is_detected(tmp_path: Path, data_dir: Path) -> None:
    train(_config(tmp_path, data_dir, multiplier="fp32", epochs=1))
    ckpt = tmp_path / "checkpoint.pt"
    good = ckpt.read_bytes()
    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0xFF
    ckpt.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(ckpt)
    with pytest.raises(CheckpointError, match="damaged"):
        train(_config(tmp_path, data_dir, multiplier="fp32", epochs=2, resume=True))
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
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_checkpoint(tmp_path / "c.pt", {"format": train_mod._CHECKPOINT_FORMAT, "x": 1})

    def ctrl_c(*args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod.os, "replace", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"format": train_mod._CHECKPOINT_FORMAT, "x": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["x"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_include_selecting_nothing(tmp_path: Path, data_dir: Path) -> None:
    with pytest.raises(TrainError, match="select no layer"):
        train(_config(tmp_path, data_dir, multiplier="mitchell7", include=["nothing*"]))


# ---------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="approxsim")
    sub = parser.add_subparsers(dest="command")
    add_train_parser(sub)
    add_eval_parser(sub)
    add_compare_parser(sub)
    return parser


def test_train_and_eval_cli(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli-run"
    args = _parser().parse_args(
        ["train", "--model", "lenet300100", "--multiplier", "fp32", "--epochs", "1"]
        + ["--out", str(out), "--data-dir", str(data_dir), "--batch-size", "16"]
        + ["--max-train-samples", "48", "--max-test-samples", "16", "--optimizer", "adam"]
        + ["--threads", "1", "--seed", "3"]
    )
    assert args.command == "train" and args.action is None
    assert run_train_cli(args) == 0
    captured = capsys.readouterr()
    assert "final        test acc" in captured.out
    assert "epoch 1/1" in captured.err  # the per-epoch line (progress is on by default)
    meta = json.loads((out / "config.json").read_text())
    assert meta["config"]["optimizer"] == "adam" and meta["config"]["lr"] == 1e-3
    assert meta["dataset"]["train_samples"] == 48 and meta["config"]["seed"] == 3

    args = _parser().parse_args(
        ["eval", "--checkpoint", str(out / "checkpoint.pt"), "--multiplier", "fp32", "--json"]
        + ["--max-samples", "16"]
    )
    assert args.action is None
    assert run_eval_cli(args) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["samples"] == 16 and res["model"] == "lenet300100"
    assert res["accuracy"] == _metrics(out)[-1]["test_acc"]

    # User errors: one line on stderr, status 2.
    args = _parser().parse_args(["train", "--out", str(out), "--multiplier", "fp32"])
    assert run_train_cli(args) == 2
    assert "not empty" in capsys.readouterr().err
    args = _parser().parse_args(["train", "--out", str(tmp_path / "x")])
    assert run_train_cli(args) == 2
    assert "name exactly one multiplier" in capsys.readouterr().err
    args = _parser().parse_args(["eval", "--checkpoint", str(tmp_path), "--multiplier", "fp32"])
    assert run_eval_cli(args) == 2
    assert "no checkpoint" in capsys.readouterr().err


# ---------------------------------------------------------------------------- compare
def test_compare_table(approx_run: tuple[Path, dict], exact_run: tuple[Path, dict]) -> None:
    approx_out, approx_res = approx_run
    exact_out, exact_res = exact_run
    result = compare_runs([approx_out, exact_out])
    assert result["baseline"] == str(exact_out)  # the fp32 run, found by itself
    rows = {r["label"]: r for r in result["runs"]}
    base_acc = exact_res["final"]["test_acc"]
    assert rows["fp32"]["is_baseline"] and rows["fp32"]["gap_final"] == 0
    m7 = rows["mitchell7"]
    assert m7["final_test_acc"] == approx_res["final"]["test_acc"]
    assert m7["gap_final"] == pytest.approx(m7["final_test_acc"] - base_acc)
    assert m7["best_test_acc"] == max(r["test_acc"] for r in approx_res["history"])
    assert m7["epochs_completed"] == 2 and rows["fp32"]["epochs"] == 3
    table = format_comparison(result)
    assert "mitchell7" in table and "* fp32" in table and "pp" in table

    explicit = compare_runs([approx_out], baseline=exact_out)
    assert [r["label"] for r in explicit["runs"]] == ["fp32", "mitchell7"]
    alone = compare_runs([approx_out])
    assert alone["baseline"] is None and alone["runs"][0]["gap_final"] is None
    assert "no baseline" in format_comparison(alone)


def test_compare_plot_and_cli(
    approx_run: tuple[Path, dict],
    exact_run: tuple[Path, dict],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    png = plot_runs([approx_run[0], exact_run[0]], tmp_path / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    args = _parser().parse_args(
        ["compare", str(approx_run[0]), str(exact_run[0]), "--plot", str(tmp_path / "c2.png")]
        + ["--json"]
    )
    assert args.action is None
    assert run_compare_cli(args) == 0
    res = json.loads(capsys.readouterr().out)
    assert len(res["runs"]) == 2 and Path(res["plot"]).stat().st_size > 0
    args = _parser().parse_args(["compare", str(approx_run[0]), "--baseline", str(exact_run[0])])
    assert run_compare_cli(args) == 0
    assert "mitchell7" in capsys.readouterr().out
    args = _parser().parse_args(["compare", str(tmp_path)])
    assert run_compare_cli(args) == 2
    assert "not a training run" in capsys.readouterr().err


def test_load_run_tolerates_cut_last_line(exact_run: tuple[Path, dict], tmp_path: Path) -> None:
    src, _ = exact_run
    run = tmp_path / "copy"
    run.mkdir()
    (run / "config.json").write_text((src / "config.json").read_text())
    text = (src / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_text(text + '{"epoch": 4, "train_lo')
    assert [r["epoch"] for r in load_run(run).history] == [1, 2, 3]
    (run / "metrics.jsonl").write_text("garbage\n" + text)
    with pytest.raises(CompareError, match="line 1"):
        load_run(run)
    (run / "config.json").write_text("{}")
    with pytest.raises(CompareError, match="malformed"):
        load_run(run)
    assert compare_mod.COMPARE_SCHEMA.startswith("approxsim.compare")
    assert os.path.isdir(run)


def _seed_copy(src: Path, dst: Path, seed: int, accs: list[float]) -> Path:
    """A copy of run ``src`` claiming ``seed`` whose epochs end with test accuracies ``accs``."""
    dst.mkdir(parents=True)
    meta = json.loads((src / "config.json").read_text())
    meta["config"]["seed"] = seed
    meta["config"]["out_dir"] = str(dst)
    (dst / "config.json").write_text(json.dumps(meta))
    records = [{**r, "test_acc": a} for r, a in zip(_metrics(src), accs, strict=False)]
    (dst / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return dst


def test_compare_groups_seeds(
    approx_run: tuple[Path, dict],
    exact_run: tuple[Path, dict],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src = approx_run[0]  # 2 epochs planned
    runs = [
        _seed_copy(src, tmp_path / "a0", 0, [0.5, 0.60]),
        _seed_copy(src, tmp_path / "a1", 1, [0.7, 0.64]),
        _seed_copy(src, tmp_path / "a2", 2, [0.1]),  # interrupted: not in the statistics
        exact_run[0],
    ]
    result = compare_seed_groups(runs)
    groups = {g["label"]: g for g in result["groups"]}
    assert set(groups) == {"mitchell7", "fp32"}
    m7 = groups["mitchell7"]
    assert m7["seeds"] == [0, 1, 2] and m7["seeds_complete"] == 2
    assert m7["final_mean"] == pytest.approx(0.62)
    assert m7["final_std"] == pytest.approx((2 * 0.02**2) ** 0.5)
    assert m7["best_mean"] == pytest.approx((0.60 + 0.70) / 2)
    base = exact_run[1]["final"]["test_acc"]
    assert groups["fp32"]["final_std"] is None and groups["fp32"]["gap_final"] == 0
    assert m7["gap_final"] == pytest.approx(0.62 - base)
    table = format_seed_groups(result)
    assert "| lenet5 | mitchell7 | 2 | 2/3 | 62.00 ± 2.83 |" in table
    args = _parser().parse_args(["compare", "--group-seeds", *map(str, runs)])
    assert run_compare_cli(args) == 0
    assert capsys.readouterr().out.strip() == table
    args = _parser().parse_args(["compare", "--group-seeds", str(src), "--plot", "x.png"])
    assert run_compare_cli(args) == 2
    assert "--group-seeds" in capsys.readouterr().err
