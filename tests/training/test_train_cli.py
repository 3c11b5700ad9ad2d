"""``approxsim train`` and ``approxsim eval`` (:mod:`approxsim.cli.train`): the options
generated from :class:`~approxsim.training.TrainConfig`, the summaries, and errors going
through the command line's one handler."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from training_helpers import metrics

from approxsim import training
from approxsim.cli import build_parser, main
from approxsim.cli.train import add_training_arguments, training_config_from_args
from approxsim.training import PeerError, TrainConfig, TrainError

pytest.importorskip("approxsim.convert", reason="convert_model is not available yet")


def _train_argv(out: Path, data_dir: Path, *extra: str) -> list[str]:
    return [
        "train", "--model", "lenet300100", "--multiplier", "fp32", "--epochs", "1",
        "--out", str(out), "--data-dir", str(data_dir), "--batch-size", "16",
        "--max-train-samples", "48", "--max-test-samples", "16", "--optimizer", "adam",
        "--threads", "1", "--seed", "3", *extra,
    ]  # fmt: skip


def test_train_and_eval_cli(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli-run"
    args = build_parser().parse_args(_train_argv(out, data_dir))
    assert args.command == "train" and args.action is None
    assert main(_train_argv(out, data_dir)) == 0
    captured = capsys.readouterr()
    assert "final        test acc" in captured.out
    assert "epoch 1/1" in captured.err  # the per-epoch line (progress is on by default)
    meta = json.loads((out / "config.json").read_text())
    assert meta["config"]["optimizer"] == "adam" and meta["config"]["lr"] == 1e-3
    assert meta["dataset"]["train_samples"] == 48 and meta["config"]["seed"] == 3

    argv = ["eval", "--checkpoint", str(out / "checkpoint.pt"), "--multiplier", "fp32"]
    assert build_parser().parse_args(argv).action is None
    assert main([*argv, "--json", "--max-samples", "16"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["samples"] == 16 and res["model"] == "lenet300100"
    assert res["accuracy"] == metrics(out)[-1]["test_acc"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "model        lenet300100, trained with fp32" in text and "accuracy     " in text

    # User errors: one line on stderr, status 2.
    assert main(["train", "--out", str(out), "--multiplier", "fp32"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("approxsim: error: ") and "not empty" in err
    assert err.count("\n") == 1
    assert main(["train", "--out", str(tmp_path / "x")]) == 2
    assert "name exactly one multiplier" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(tmp_path), "--multiplier", "fp32"]) == 2
    assert "approxsim: error: no checkpoint" in capsys.readouterr().err


def test_cli_errors_of_other_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def failing(error: Exception) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            raise error

        return run

    argv = ["train", "--out", str(tmp_path / "run"), "--multiplier", "fp32"]
    monkeypatch.setattr(training, "train", failing(PeerError("process 0 of 2 failed: x")))
    assert main(argv) == 2
    assert capsys.readouterr().err == ""  # the failed process reports it, once
    monkeypatch.setattr(training, "train", failing(TrainError("bad")))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert main(argv) == 2
    assert capsys.readouterr().err == "approxsim: error (process 1): bad\n"
    monkeypatch.setattr(training, "train", failing(KeyboardInterrupt()))
    assert main(argv) == 130
    assert capsys.readouterr().err == ""  # only rank 0 says "interrupted"
    monkeypatch.setenv("RANK", "0")
    assert main(argv) == 130
    assert capsys.readouterr().err == "approxsim: interrupted\n"


# ---------------------------------------------------------------------------- shared options
def _parser_with_training_arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="other")
    add_training_arguments(parser)
    return parser


def test_every_config_field_is_an_option_of_train(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    help_text = capsys.readouterr().out
    for f in dataclasses.fields(TrainConfig):
        flag = f.metadata["cli"].flag
        assert flag in help_text, flag
    other = _parser_with_training_arguments().format_help()
    assert other.split("options:", 1)[1] == help_text.split("options:", 1)[1]


def test_training_config_from_args(tmp_path: Path) -> None:
    parser = _parser_with_training_arguments()
    args = parser.parse_args(
        ["--out", str(tmp_path), "--multiplier", "mitchell7", "--grad-weight", "fp32"]
        + ["--include", "features.*", "--include", "classifier.0", "--no-progress"]
        + ["--lr", "0.1", "--schedule", "cosine"]
    )
    cfg = training_config_from_args(args)
    assert cfg == TrainConfig(
        tmp_path,
        multiplier=cfg.multiplier,
        grad_weight=cfg.grad_weight,
        include=["features.*", "classifier.0"],
        progress=False,
        lr=0.1,
        schedule="cosine",
    )
    assert cfg.multiplier.name == "mitchell7" and cfg.grad_weight.name == "fp32"
    assert cfg.grad_input is None and cfg.epochs == 5 and cfg.model == "lenet5"
    # Overrides replace options, and are not read from them.
    plain = parser.parse_args(["--out", str(tmp_path)])
    with pytest.raises(ValueError, match="name exactly one multiplier"):
        training_config_from_args(plain)
    cfg = training_config_from_args(plain, multiplier="fp32", epochs=2, resume=True)
    assert (cfg.multiplier, cfg.epochs, cfg.resume, cfg.progress) == ("fp32", 2, True, True)
    with pytest.raises(TrainError, match="lr"):
        training_config_from_args(
            parser.parse_args(["--out", "x", "--lr", "-1"]), multiplier="fp32"
        )
