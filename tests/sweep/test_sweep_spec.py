"""Sweep specs: expansion into points and every refusal before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from sweep_helpers import fake_run, tiny_spec

from approxsim.cli import main
from approxsim.cli.sweep import command_options, point_check
from approxsim.sweep import (
    Outcome,
    PointJob,
    SweepSpecError,
    load_spec,
    parse_spec,
    plan_sweep,
    read_state,
    run_sweep,
)

REPO = Path(__file__).resolve().parents[2]


def _plan(spec, out):
    return plan_sweep(
        spec, out, options=command_options(spec.command), check=point_check(spec.command)
    )


def _doc(**over):
    doc = {
        "command": "train",
        "args": {"dataset": "fashion-mnist", "epochs": 1},
        "axes": {"model": ["lenet300100", "lenet5"], "seed": [0, 1]},
    }
    doc.update(over)
    return doc


def test_cross_product_order_names_and_options() -> None:
    spec = parse_spec(_doc(name="{model}-s{seed}"))
    points = spec.points()
    assert [p.name for p in points] == [
        "lenet300100-s0",
        "lenet300100-s1",
        "lenet5-s0",
        "lenet5-s1",
    ]
    assert points[1].argv == (
        "--dataset",
        "fashion-mnist",
        "--epochs",
        "1",
        "--model",
        "lenet300100",
        "--seed",
        "1",
    )


def test_exclude_include_tables_flags_and_default_name() -> None:
    spec = parse_spec(
        {
            "command": "cim mc",
            "args": {"checkpoint": "run", "clip": True, "include": ["fc1", "fc2"]},
            "axes": {
                "sigma": [0.01, 0.02],
                "multiplier": ["fp32", {"label": "my7", "c": "m.c", "mantissa_bits": 7}],
            },
            "exclude": [{"sigma": 0.02, "multiplier": "fp32"}],
            "include": [{"sigma": 0.05, "multiplier": "fp32"}],
        }
    )
    points = spec.points()
    assert [p.name for p in points] == ["0.01-fp32", "0.01-my7", "0.02-my7", "0.05-fp32"]
    assert points[1].argv == (
        "--checkpoint",
        "run",
        "--clip",
        "--include",
        "fc1",
        "--include",
        "fc2",
        "--sigma",
        "0.01",
        "--c",
        "m.c",
        "--mantissa-bits",
        "7",
    )


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (_doc(command="bench ops"), "not a base command"),
        (_doc(colour="red"), "unknown key"),
        (_doc(axes={"seed": []}), "empty: the cross product has no points"),
        (_doc(axes={}), "at least one axis"),
        (_doc(name="{model}-{lr}"), "'lr', which is not an axis"),
        (_doc(exclude=[{"lr": 0.1}]), "'lr', which is not an axis"),
        (_doc(include=[{"seed": 3}]), "leaves out model"),
        (_doc(args={"seed": 1}), "both a fixed option and an axis"),
        (_doc(axes={"multiplier": [{"c": "m.c"}]}), "needs a label"),
    ],
)
def test_malformed_specs_are_refused(doc, message) -> None:
    with pytest.raises(SweepSpecError, match=message):
        parse_spec(doc)


def test_no_points_left_and_name_clashes_are_refused() -> None:
    every = _doc(exclude=[{"model": "lenet300100"}, {"model": "lenet5"}])
    with pytest.raises(SweepSpecError, match="no points"):
        parse_spec(every).points()
    with pytest.raises(SweepSpecError, match="two points get the folder name"):
        parse_spec(_doc(name="{model}")).points()
    with pytest.raises(SweepSpecError, match="not a plain folder name"):
        parse_spec(_doc(name="x/{model}-{seed}")).points()


def test_unknown_axis_and_reserved_options_refused_before_anything(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    with pytest.raises(SweepSpecError, match="unknown axis 'colour'.*no option --colour"):
        _plan(parse_spec(_doc(axes={"colour": ["red"]})), out)
    with pytest.raises(SweepSpecError, match="option 'out' .*set by the sweep itself"):
        _plan(parse_spec(_doc(args={"out": "x"})), out)
    assert not out.exists()


@pytest.mark.parametrize(
    ("axes", "message"),
    [
        ({"multiplier": ["fp32", "nosuch7"]}, r"point nosuch7 \(multiplier=nosuch7\).*nosuch7"),
        ({"lr": [0.1, "fast"]}, r"point fast \(lr=fast\).*--lr: invalid float value: 'fast'"),
        ({"model": ["lenet5", "vgg99"]}, r"point vgg99 \(model=vgg99\)"),
    ],
)
def test_a_value_the_base_command_rejects_is_refused_naming_the_point(
    tmp_path: Path, axes, message
) -> None:
    out = tmp_path / "sweep"
    args = {"dataset": "fashion-mnist"} if "multiplier" in axes else {"multiplier": "fp32"}
    with pytest.raises(SweepSpecError, match=message):
        _plan(parse_spec(_doc(axes=axes, args=args)), out)
    assert not out.exists()


def test_a_folder_holding_another_sweep_is_refused(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "sweep"
    first = tiny_spec(data_dir, seed=[0], multiplier=["fp32"])
    for name in ("fp32-s0",):
        fake_run(out / name, [0.5, 0.6])
    summary = run_sweep(_plan(first, out), launcher=_no_launch)
    assert summary["skipped"] == 1 and read_state(out)["points"][0]["status"] == "done"
    other = tiny_spec(data_dir, seed=[0, 1], multiplier=["fp32"])
    with pytest.raises(SweepSpecError, match="holds another sweep.*differs in axes"):
        _plan(other, out)
    (tmp_path / "file").write_text("x")
    with pytest.raises(SweepSpecError, match="is a file"):
        _plan(first, tmp_path / "file")


def _no_launch(job: PointJob) -> Outcome:
    raise AssertionError(f"{job.name} is complete and must not run")


def test_retries_then_reports_a_failed_point_without_stopping(
    tmp_path: Path, data_dir: Path
) -> None:
    out = tmp_path / "sweep"
    spec = tiny_spec(data_dir, seed=[0, 1], multiplier=["fp32"])
    attempts: dict[str, int] = {}

    def flaky(job: PointJob) -> Outcome:
        attempts[job.name] = attempts.get(job.name, 0) + 1
        if job.name == "fp32-s0" and attempts[job.name] == 1:
            return Outcome(1, 0.1, "exit status 1: approxsim: error: flaky")
        if job.name == "fp32-s1":
            return Outcome(-9, 0.1, "killed by signal 9: lost")
        fake_run(Path(job.folder), [0.5, 0.7])
        return Outcome(0, 0.1)

    lines: list[str] = []
    summary = run_sweep(_plan(spec, out), launcher=flaky, retries=1, report=lines.append)
    assert attempts == {"fp32-s0": 2, "fp32-s1": 2}
    assert summary["failed"] == ["fp32-s1"] and summary["done"] == 1
    state = {p["name"]: p for p in read_state(out)["points"]}
    assert state["fp32-s0"]["status"] == "done" and state["fp32-s0"]["attempts"] == 2
    assert state["fp32-s1"]["status"] == "failed"
    assert "signal 9" in state["fp32-s1"]["error"]
    assert any(ln.startswith("[1/2 done, 0 running, 0 failed, ETA ") for ln in lines)
    assert lines[-1].startswith("[1/2 done, 0 running, 1 failed] fp32-s1 FAILED after 2")


def test_results_spec_keeps_the_folder_names_of_results_sh(tmp_path: Path) -> None:
    spec = load_spec(REPO / "scripts" / "results.toml")
    names = [p.name for p in spec.points()]
    assert len(names) == 30 and names[:6] == [
        "lenet300100-fp32-s0",
        "lenet300100-bf16-s0",
        "lenet300100-bf16_trunc-s0",
        "lenet300100-mitchell7-s0",
        "lenet300100-mbm7-s0",
        "lenet300100-fp32-s1",
    ]
    assert "lenet5-mbm7-s2" in names
    # A run folder that results.sh trained counts as complete: nothing of it runs again.
    fake_run(tmp_path / "lenet300100-fp32-s0", [0.8] * 10)
    plan = _plan(spec, tmp_path)
    assert plan.command.complete(tmp_path / "lenet300100-fp32-s0")
    assert not plan.command.complete(tmp_path / "lenet300100-bf16-s0")


def test_cli_dry_run_and_refusal(tmp_path: Path, data_dir: Path, capsys) -> None:
    spec = tmp_path / "s.toml"
    spec.write_text(
        f'command = "train"\n[args]\ndata_dir = "{data_dir}"\n'
        '[axes]\nmultiplier = ["fp32", "bf16"]\n'
    )
    assert main(["sweep", "run", str(spec), "--out", str(tmp_path / "o"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "fp32: approxsim train --data-dir" in out and "2 points, checked" in out
    spec.write_text('command = "train"\n[axes]\nmultiplier = ["fp32", "bad"]\n')
    assert main(["sweep", "run", str(spec), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("approxsim: error: point bad (multiplier=bad)")
    assert not (tmp_path / "o").exists()


def test_replay_dqn_points_are_checked_by_its_settings(tmp_path: Path) -> None:
    doc = {
        "command": "replay dqn",
        "args": {"steps": 1000},
        "axes": {"replay": ["uniform", "per-sumtree"], "first_seed": [0, 1]},
    }
    plan = _plan(parse_spec(doc), tmp_path / "ok")
    assert [p.name for p in plan.points][:2] == ["uniform-0", "uniform-1"]
    assert plan.command.output_argv(tmp_path / "x")[:2] == ["--out", str(tmp_path / "x")]
    doc["axes"]["lr"] = [0.001, -1.0]
    with pytest.raises(SweepSpecError, match=r"point uniform-0--1.0 \(replay=uniform"):
        _plan(parse_spec(doc), tmp_path / "bad")
