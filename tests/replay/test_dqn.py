"""The DQN of approxsim.replay: runs end to end, repeats itself, resumes exactly, refuses bad
input with clear errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("gymnasium")

from approxsim.errors import ApproxsimError  # noqa: E402
from approxsim.replay import SamplerError  # noqa: E402
from approxsim.replay.dqn import DQNConfig, DQNError, linear_schedule, train_dqn  # noqa: E402
from approxsim.replay.env import EnvError  # noqa: E402
from approxsim.replay.runs import (  # noqa: E402
    DQN_SCHEMA,
    load_dqn_checkpoint,
    read_dqn_run,
)

TINY = dict(
    steps=300,
    learning_starts=100,
    batch_size=32,
    buffer_size=200,
    train_every=5,
    target_every=50,
    log_every=50,
    checkpoint_every=100,
    priorities_every=100,
)


def tiny(**kw: Any) -> DQNConfig:
    return DQNConfig(**{**TINY, **kw})


def _records(path: Path) -> list[dict[str, Any]]:
    rows = read_dqn_run(path).history
    return [{k: v for k, v in r.items() if k != "time_s"} for r in rows]


def test_run_end_to_end(tmp_path: Path) -> None:
    summary = train_dqn(tiny(replay="per-sumtree"), tmp_path / "run")
    run = read_dqn_run(tmp_path / "run")
    assert run.meta["schema"] == DQN_SCHEMA and run.complete
    assert [r["step"] for r in run.history] == [50, 100, 150, 200, 250, 300]
    trained = [r for r in run.history if r["loss"] is not None]
    assert trained and all(r["step"] > 100 for r in trained)
    assert sum(r["cost"]["dependent_reads"] for r in trained) > 0
    assert run.history[-1]["episodes"] == summary["episodes"] > 0
    assert summary["final_return"] > 0 and summary["auc"] > 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == summary
    snap = torch.load(tmp_path / "run" / "priorities" / "step300.pt", weights_only=True)
    assert snap.dtype == torch.float64 and snap.shape == (200,)
    # Trained slots carry |td| + eps, not the insertion priority 1.0 alone.
    assert bool((snap != 1.0).any())


def test_same_seed_same_records_other_seed_differs(tmp_path: Path) -> None:
    train_dqn(tiny(), tmp_path / "a")
    train_dqn(tiny(), tmp_path / "b")
    train_dqn(tiny(seed=1), tmp_path / "c")
    assert _records(tmp_path / "a") == _records(tmp_path / "b")
    assert _records(tmp_path / "a") != _records(tmp_path / "c")


class _StopAt:
    """A progress report that interrupts the run once ``at`` steps are done (a kill)."""

    def __init__(self, at: int) -> None:
        self.at, self.done = at, 0

    def update(self, n: int, loss: float | None = None, acc: float | None = None) -> None:
        self.done += n
        if self.done >= self.at:
            raise KeyboardInterrupt

    def close(self) -> None:
        pass


@pytest.mark.parametrize("replay", ["uniform", "per-sumtree", "amper-knn"])
def test_resume_gives_the_uninterrupted_result(tmp_path: Path, replay: str) -> None:
    cfg = tiny(replay=replay)
    train_dqn(cfg, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        train_dqn(cfg, tmp_path / "cut", progress=lambda desc, total: _StopAt(250))
    state = load_dqn_checkpoint(tmp_path / "cut")
    assert 100 <= state["step"] < 300 and not state["complete"]
    assert len(_records(tmp_path / "cut")) == 5  # records past the checkpoint, dropped on resume
    train_dqn(cfg, tmp_path / "cut", resume=True)
    assert _records(tmp_path / "cut") == _records(tmp_path / "whole")
    whole, cut = load_dqn_checkpoint(tmp_path / "whole"), load_dqn_checkpoint(tmp_path / "cut")
    for name, tensor in whole["q"].items():
        assert torch.equal(tensor, cut["q"][name]), name
    assert torch.equal(whole["memory"]["priorities"], cut["memory"]["priorities"])
    # A complete run resumed again is not run again.
    assert train_dqn(cfg, tmp_path / "cut", resume=True) == json.loads(
        (tmp_path / "whole" / "summary.json").read_text()
    )


def test_folder_rules(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train_dqn(tiny(steps=120), out)
    with pytest.raises(DQNError, match="not empty; pass --resume"):
        train_dqn(tiny(steps=120), out)
    with pytest.raises(DQNError, match="settings differ in steps"):
        train_dqn(tiny(steps=150), out, resume=True)
    (out / "notes.txt").write_text("mine")
    train_dqn(tiny(steps=150), out, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert read_dqn_run(out).history[-1]["step"] == 150
    with pytest.raises(DQNError, match="is a file"):
        train_dqn(tiny(), out / "notes.txt")


@pytest.mark.parametrize(
    ("kw", "error", "match"),
    [
        ({"env": "NoSuchEnv-v9"}, EnvError, "unknown environment 'NoSuchEnv-v9'"),
        ({"env": "Pendulum-v1"}, EnvError, "Discrete action space"),
        ({"replay": "sumtree"}, SamplerError, "sumtree"),
        ({"batch_size": 300}, DQNError, "larger than buffer_size"),
        ({"batch_size": 150}, DQNError, "learning_starts"),
        ({"replay": "per-sumtree", "k": 4}, DQNError, "associative-memory samplers"),
        ({"replay": "amper-knn", "bits": 12}, SamplerError, "12"),
        ({"alpha": -1.0}, DQNError, "alpha"),
        ({"is_weights": "all"}, DQNError, "is_weights"),
        ({"multiplier": "no-such-multiplier"}, ApproxsimError, "no-such-multiplier"),
    ],
)
def test_bad_settings_are_refused(
    tmp_path: Path, kw: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        train_dqn(tiny(**kw), tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before the folder was touched


def test_missing_gymnasium_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gymnasium", None)
    with pytest.raises(EnvError, match=r"pip install approxsim\[replay\]"):
        train_dqn(tiny(), tmp_path / "run")


def test_linear_schedule() -> None:
    assert linear_schedule(1.0, 0.05, 100, 0) == 1.0
    assert linear_schedule(1.0, 0.05, 100, 50) == pytest.approx(0.525)
    assert linear_schedule(1.0, 0.05, 100, 500) == 0.05
    assert linear_schedule(0.4, 1.0, 100, 100) == 1.0
