"""Reliability of the training engine (issue 14): a run folder is never destroyed unless the
user asked, a killed run's temporaries are cleaned, a checkpoint's contents are checked, a
diverged run stops, and an empty split is refused.

Every run here trains exactly (``fp32``) on the package's tiny synthetic dataset, in well
under a second.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest
import torch
from training_helpers import make_config, metrics, without_timing

from approxsim.cli import main
from approxsim.data import DatasetError, write_banded_mnist
from approxsim.training import (
    CheckpointError,
    DivergedError,
    TrainError,
    evaluate,
    load_checkpoint,
    save_checkpoint,
    train,
)
from approxsim.training import loop as loop_mod

pytest.importorskip("approxsim.convert", reason="convert_model is not available yet")

RUN_FILES = ("checkpoint.pt", "config.json", "metrics.jsonl")


def _fp32(out: Path, data_dir: Path, **kw: Any) -> Any:
    return make_config(out, data_dir, **{"multiplier": "fp32", "epochs": 1, **kw})


def _snapshot(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


# ---------------------------------------------------------------------------- resume, overwrite
def test_resume_without_checkpoint_keeps_a_finished_run(tmp_path: Path, data_dir: Path) -> None:
    train(_fp32(tmp_path, data_dir))
    (tmp_path / "checkpoint.pt").unlink()
    before = _snapshot(tmp_path)
    with pytest.raises(TrainError, match=r"holds 1 finished epoch.*no checkpoint.pt.*--overwrite"):
        train(_fp32(tmp_path, data_dir, lr=0.2, resume=True))
    with pytest.raises(TrainError, match="holds 1 finished epoch"):
        train(_fp32(tmp_path, data_dir, resume=True))  # same settings: still nothing to continue
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("killed_in", ["save_checkpoint", "append_metrics"])
def test_kill_between_the_epoch_writes_leaves_a_resumable_run(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, killed_in: str
) -> None:
    # A kill inside either write at the end of epoch 1 (simulated by an exception there) must
    # leave a folder --resume continues; the metrics line used to come first, leaving a finished
    # epoch without a checkpoint, which resume refuses.
    reference = tmp_path / "reference"
    train(_fp32(reference, data_dir, epochs=2))
    out = tmp_path / "run"
    target = loop_mod if killed_in == "save_checkpoint" else loop_mod.rundir
    real = getattr(target, killed_in)

    def killed(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(target, killed_in, killed)
    with pytest.raises(KeyboardInterrupt):
        train(_fp32(out, data_dir, epochs=2))
    monkeypatch.setattr(target, killed_in, real)
    train(_fp32(out, data_dir, epochs=2, resume=True))
    assert without_timing(metrics(out)) == without_timing(metrics(reference))


def test_resume_without_checkpoint_compares_the_settings(tmp_path: Path, data_dir: Path) -> None:
    # A run killed in its first epoch: config.json and an empty metrics.jsonl, no checkpoint.
    train(_fp32(tmp_path, data_dir))
    (tmp_path / "checkpoint.pt").unlink()
    (tmp_path / "metrics.jsonl").write_text("")
    before = _snapshot(tmp_path)
    with pytest.raises(TrainError, match=r"started with lr=0.05 \(now 0.2\).*--overwrite"):
        train(_fp32(tmp_path, data_dir, lr=0.2, resume=True))
    with pytest.raises(TrainError, match=r"forward multiplier fp32 \(now trunc7\)"):
        train(_fp32(tmp_path, data_dir, multiplier="trunc7", resume=True))
    assert _snapshot(tmp_path) == before
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(TrainError, match="config.json is unreadable"):
        train(_fp32(tmp_path, data_dir, resume=True))
    (tmp_path / "config.json").write_bytes(before["config.json"])
    done = train(_fp32(tmp_path, data_dir, resume=True))  # the same run: starts afresh
    assert done["resumed_from"] is None and len(metrics(tmp_path)) == 1


def test_resume_without_checkpoint_cli(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train(_fp32(tmp_path, data_dir))
    (tmp_path / "checkpoint.pt").unlink()
    before = _snapshot(tmp_path)
    argv = ["train", "--multiplier", "fp32", "--epochs", "1", "--out", str(tmp_path)]
    argv += ["--data-dir", str(data_dir), "--lr", "0.3", "--resume", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("approxsim: error: cannot resume") and err.count("\n") == 1
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "bad",
    [
        {"data_dir": "no-such-folder"},  # a mistyped --data-dir
        {"multiplier": "mitchell7", "include": ["nothing*"]},  # found when the model is built
    ],
    ids=["data_dir", "include"],
)
def test_overwrite_checks_everything_before_replacing(
    tmp_path: Path, data_dir: Path, bad: dict[str, Any]
) -> None:
    train(_fp32(tmp_path, data_dir))
    before = _snapshot(tmp_path)
    kw = {**bad, "data_dir": tmp_path / bad["data_dir"]} if "data_dir" in bad else bad
    with pytest.raises((TrainError, DatasetError)):
        train(_fp32(tmp_path, kw.pop("data_dir", data_dir), overwrite=True, **kw))
    assert _snapshot(tmp_path) == before


def test_new_run_folder_is_not_created_for_a_run_that_cannot_start(
    tmp_path: Path, data_dir: Path
) -> None:
    with pytest.raises(DatasetError):
        train(_fp32(tmp_path / "run", tmp_path / "missing"))
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------- temporaries
def test_stale_temporaries_are_cleaned_on_resume(tmp_path: Path, data_dir: Path) -> None:
    train(_fp32(tmp_path, data_dir))
    stale = [".checkpoint.pt.k9x2a.tmp", ".config.json.q1.tmp", ".metrics.jsonl.zz.tmp"]
    for name in stale:
        (tmp_path / name).write_bytes(b"\0" * 1000)  # what kill -9 during a write leaves
    foreign = tmp_path / ".notes.txt.abc.tmp"  # not the run's: stays
    foreign.write_text("mine")
    train(_fp32(tmp_path, data_dir, epochs=2, resume=True))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([*RUN_FILES, foreign.name])


def test_stale_temporaries_are_cleaned_on_a_fresh_start(tmp_path: Path, data_dir: Path) -> None:
    # Killed while writing the first checkpoint: resume starts the run afresh.
    train(_fp32(tmp_path, data_dir))
    (tmp_path / "checkpoint.pt").rename(tmp_path / ".checkpoint.pt.k9x2a.tmp")
    (tmp_path / "metrics.jsonl").write_text("")
    train(_fp32(tmp_path, data_dir, resume=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(RUN_FILES)


# ---------------------------------------------------------------------------- checkpoint contents
def _edits() -> dict[str, Any]:
    def drop(key: str) -> Any:
        return lambda s: {k: v for k, v in s.items() if k != key}

    def set_(key: str, value: Any) -> Any:
        return lambda s: {**s, key: value}

    return {
        "no optimizer": (drop("optimizer"), "no optimizer"),
        "no model": (drop("model"), "no model"),
        "epoch -3": (set_("epoch", -3), "epoch -3"),
        "epoch str": (set_("epoch", "2"), "epoch '2'"),
        "model str": (set_("model", "weights"), "model is not a state dict"),
        "model non tensor": (set_("model", {"w": [1.0]}), "not named tensors"),
        "rng": (set_("rng", {}), "rng"),
        "config": (lambda s: {**s, "config": {"model": "lenet5"}}, "config lacks"),
        "epochs below epoch": (
            lambda s: {**s, "config": {**s["config"], "epochs": 0}},
            "epochs 0 is below epoch 1",
        ),
        "include": (
            lambda s: {**s, "config": {**s["config"], "include": 5}},
            "include 5 is not a list",
        ),
        "multipliers": (set_("multipliers", {"forward": "fp32"}), "multipliers"),
        "history": (set_("history", []), "history"),
    }


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("one_epoch")
    train(_fp32(out, data_dir, epochs=1))
    return out


@pytest.mark.parametrize("edit", list(_edits()))
def test_checkpoint_with_wrong_contents(
    one_epoch: Path, tmp_path: Path, data_dir: Path, edit: str
) -> None:
    change, match = _edits()[edit]
    for name in ("config.json", "metrics.jsonl"):
        (tmp_path / name).write_bytes((one_epoch / name).read_bytes())
    save_checkpoint(tmp_path / "checkpoint.pt", change(load_checkpoint(one_epoch)))
    with pytest.raises(CheckpointError, match=f"valid checksum but wrong contents.*{match}"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="wrong contents"):
        train(_fp32(tmp_path, data_dir, epochs=3, resume=True))
    with pytest.raises(CheckpointError, match="wrong contents"):
        evaluate(tmp_path, "fp32")
    assert len(metrics(tmp_path)) == 1  # nothing trained


def _resize_first(tensors: dict[str, Any]) -> dict[str, Any]:
    name = next(iter(tensors))
    return {**tensors, name: torch.zeros(3, 3)}


@pytest.mark.parametrize("part", ["model", "optimizer"])
def test_checkpoint_tensors_that_do_not_fit(
    one_epoch: Path, tmp_path: Path, data_dir: Path, part: str
) -> None:
    state = load_checkpoint(one_epoch)
    if part == "model":
        state["model"] = _resize_first(state["model"])
        what = "weights"
    else:  # a momentum buffer of another shape: would fail in the first step
        opt = state["optimizer"]
        first = next(iter(opt["state"]))
        opt["state"][first] = {"momentum_buffer": torch.zeros(3, 3)}
        what = "optimizer state"
    for name in ("config.json", "metrics.jsonl"):
        (tmp_path / name).write_bytes((one_epoch / name).read_bytes())
    save_checkpoint(tmp_path / "checkpoint.pt", state)
    with pytest.raises(CheckpointError, match=f"its {what} do not fit the run.*--overwrite"):
        train(_fp32(tmp_path, data_dir, epochs=2, resume=True))
    assert len(metrics(tmp_path)) == 1


# ---------------------------------------------------------------------------- divergence
@pytest.fixture
def nan_loss_from_epoch_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """The training loss turns NaN in the second epoch's second batch."""
    calls = {"n": 0}
    batches_per_epoch = 2  # 64 samples, batch 32

    def cross_entropy(logits: torch.Tensor, y: torch.Tensor, **kw: Any) -> torch.Tensor:
        loss = torch.nn.functional.cross_entropy(logits, y, **kw)
        if kw:  # evaluation (reduction="sum")
            return loss
        calls["n"] += 1
        return loss * float("nan") if calls["n"] >= batches_per_epoch + 2 else loss

    monkeypatch.setattr(loop_mod, "F", types.SimpleNamespace(cross_entropy=cross_entropy))


def test_diverged_run_stops(tmp_path: Path, data_dir: Path, nan_loss_from_epoch_2: None) -> None:
    with pytest.raises(
        DivergedError, match=r"nan in batch 2 of epoch 2; .*holds epoch 1.*--lr, now 0.05"
    ):
        train(_fp32(tmp_path, data_dir, epochs=3))
    assert [r["epoch"] for r in metrics(tmp_path)] == [1]
    assert load_checkpoint(tmp_path)["epoch"] == 1


def test_allow_nonfinite_trains_on(
    tmp_path: Path, data_dir: Path, nan_loss_from_epoch_2: None
) -> None:
    res = train(_fp32(tmp_path, data_dir, epochs=3, allow_nonfinite=True))
    assert [r["train_loss"] for r in res["history"]][1:] == [None, None]


def test_large_lr_diverges_cli(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--multiplier", "fp32", "--epochs", "3", "--out", str(tmp_path / "r")]
    argv += ["--data-dir", str(data_dir), "--lr", "1e30", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "training diverged" in err and "--allow-nonfinite" in err and err.count("\n") == 1
    assert main([*argv, "--allow-nonfinite", "--overwrite"]) == 0


def test_allow_nonfinite_is_a_setting() -> None:
    with pytest.raises(TrainError, match="allow_nonfinite must be True or False"):
        make_config(Path("x"), Path("d"), allow_nonfinite="yes")


# ---------------------------------------------------------------------------- empty splits
@pytest.mark.parametrize("sizes", [(0, 8), (8, 0)], ids=["train", "test"])
def test_empty_split_is_refused(tmp_path: Path, sizes: tuple[int, int]) -> None:
    data = write_banded_mnist(tmp_path / "data", *sizes)
    split = "train" if sizes[0] == 0 else "test"
    with pytest.raises(DatasetError, match=f"the {split} split in .* holds no images"):
        train(_fp32(tmp_path / "run", data))
    assert not (tmp_path / "run").exists()


def test_zero_samples_are_refused(tmp_path: Path, data_dir: Path) -> None:
    with pytest.raises(TrainError, match="max_train_samples must be an integer >= 1"):
        _fp32(tmp_path, data_dir, max_train_samples=0)
    with pytest.raises(TrainError, match="max_samples must be an integer >= 1"):
        evaluate(tmp_path, "fp32", max_samples=0)


def test_checkpoint_of_an_earlier_version_still_loads(
    one_epoch: Path, tmp_path: Path, data_dir: Path
) -> None:
    # A run made before the quantization and --allow-nonfinite settings existed has none of
    # them in its config: it is an older checkpoint, not a damaged one, and must still evaluate,
    # resume and serve as --init-from.
    later = ("allow_nonfinite", "grad", "quant_bits", "weight_granularity", "calibration")
    later += ("quant_mapping", "init_from", "lut_step")
    for name in ("config.json", "metrics.jsonl"):
        (tmp_path / name).write_bytes((one_epoch / name).read_bytes())
    state = load_checkpoint(one_epoch)
    state["config"] = {k: v for k, v in state["config"].items() if k not in later}
    save_checkpoint(tmp_path / "checkpoint.pt", state)
    loaded = load_checkpoint(tmp_path)
    assert loaded["config"]["quant_bits"] is None and loaded["config"]["allow_nonfinite"] is False
    assert evaluate(tmp_path, "fp32")["epoch"] == 1
    train(_fp32(tmp_path, data_dir, epochs=2, resume=True))
    assert len(metrics(tmp_path)) == 2
