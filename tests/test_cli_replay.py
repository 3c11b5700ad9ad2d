"""``approxsim replay dqn`` and ``approxsim replay report``: run folders per seed, the folder
rules, resume, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("gymnasium")

from approxsim.cli import main  # noqa: E402
from approxsim.replay.runs import read_dqn_run  # noqa: E402

TINY = [
    "--steps", "150", "--learning-starts", "50", "--batch-size", "16", "--buffer-size", "100",
    "--log-every", "50", "--checkpoint-every", "50", "--no-progress",
]  # fmt: skip


def test_dqn_seeds_resume_and_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "arm"
    argv = ["replay", "dqn", "--replay", "per-sumtree", "--seeds", "2", "--out", str(out), *TINY]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "seed 0: final return" in printed and "seed 1: final return" in printed
    runs = [read_dqn_run(out / f"seed{s}") for s in (0, 1)]
    assert [r.config["seed"] for r in runs] == [0, 1] and all(r.complete for r in runs)
    assert runs[0].config["replay"] == "per-sumtree" and runs[0].config["steps"] == 150

    assert main(argv) == 2  # the folders hold runs: neither --resume nor --overwrite
    assert "not empty; pass --resume" in capsys.readouterr().err
    assert main([*argv, "--resume", "--json"]) == 0  # complete runs are not run again
    summaries = json.loads(capsys.readouterr().out)
    assert [s["seed"] for s in summaries] == [0, 1]
    assert summaries[0]["final_return"] == (runs[0].summary or {})["final_return"]

    report = tmp_path / "report"
    assert main(["replay", "report", str(out), "--out", str(report)]) == 0
    assert "| arm | seeds |" in capsys.readouterr().out
    data = json.loads(report.with_name("report.json").read_text())
    arm = data["arms"][0]
    assert arm["label"] == "arm" and arm["seeds_complete"] == 2 and arm["steps"] == [50, 100, 150]
    assert report.with_name("report.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["replay", "report", str(out), "--out", str(report)]) == 2  # exists
    assert "--overwrite" in capsys.readouterr().err

    # compare reads the DQN runs and plots their returns (it crashed in the training plot).
    plot = tmp_path / "compare.png"
    assert main(["compare", str(out / "seed0"), str(out / "seed1"), "--plot", str(plot)]) == 0
    assert plot.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--env", "NoSuchEnv-v0"], "unknown environment 'NoSuchEnv-v0'"),
        (["--replay", "sum-tree"], "sum-tree"),
        (["--batch-size", "500"], "larger than buffer_size"),
        (["--replay", "amper-knn", "--k", "0"], "k must be a positive integer"),
        (["--query", "uniform"], "associative-memory samplers"),
        (["--resume", "--overwrite"], "not both"),
    ],
)
def test_dqn_bad_input_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert main(["replay", "dqn", "--out", str(tmp_path / "x"), *TINY, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("approxsim: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "x" / "seed0" / "config.json").exists()
