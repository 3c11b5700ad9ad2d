"""A real sweep with the local executor: run folders as a hand-started run's, a point killed
midway and resumed to the same result as the uninterrupted sweep, the report checked against
the run folders."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from sweep_helpers import fake_run, metrics, tiny_spec

from approxsim.cli import main
from approxsim.cli.sweep import command_options, point_check
from approxsim.sweep import (
    Outcome,
    PointJob,
    format_report,
    plan_sweep,
    read_state,
    run_point,
    run_sweep,
    sweep_report,
)
from approxsim.training.compare import compare_seed_groups


def _plan(spec, out):
    return plan_sweep(
        spec, out, options=command_options(spec.command), check=point_check(spec.command)
    )


def test_local_sweep_writes_ordinary_run_folders(local_sweep) -> None:
    out, summary = local_sweep
    assert summary["done"] == 2 and summary["failed"] == [] and summary["skipped"] == 0
    state = read_state(out)
    assert [p["status"] for p in state["points"]] == ["done", "done"]
    for name in ("fp32-s0", "mitchell7-s0"):
        assert sorted(f.name for f in (out / name).iterdir()) == [
            "checkpoint.pt",
            "config.json",
            "metrics.jsonl",
        ]
        assert len(metrics(out / name)) == 2
    config = json.loads((out / "mitchell7-s0" / "config.json").read_text())
    assert config["multipliers"]["forward"]["name"] == "mitchell7"
    # Two points at a time on the usable cores: each run got its share of threads.
    threads = max(1, len(os.sched_getaffinity(0)) // 2)
    assert config["config"]["threads"] == threads
    assert "--threads" in (out / "logs" / "fp32-s0.log").read_text()


def _killed_after_first_epoch(job: PointJob) -> Outcome:
    """Runs the point's real command and kills it (SIGKILL) once its first epoch is saved (its
    checkpoint written), in the middle of the second."""
    if not job.name.startswith("mitchell7"):
        raise AssertionError(f"{job.name} should have been skipped as complete")
    Path(job.folder).mkdir(parents=True, exist_ok=True)
    Path(job.log).parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **job.env}
    with open(job.log, "ab") as log:
        proc = subprocess.Popen(job.command(), stdout=log, stderr=log, env=env, cwd=job.cwd)
    saved = Path(job.folder) / "checkpoint.pt"
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if saved.exists():
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    return Outcome(proc.returncode, 1.0, f"killed by signal {-proc.returncode}: test")


def test_killed_point_is_reported_then_resumed_to_the_same_result(
    tmp_path: Path, data_dir: Path, local_sweep
) -> None:
    reference, _ = local_sweep
    out = tmp_path / "sweep"
    # The fp32 point finished in an earlier session (same run): it is skipped, not rerun.
    shutil.copytree(reference / "fp32-s0", out / "fp32-s0")
    spec = tiny_spec(data_dir)
    first = run_sweep(_plan(spec, out), launcher=_killed_after_first_epoch, retries=0)
    assert first["skipped"] == 1 and first["failed"] == ["mitchell7-s0"]
    state = {p["name"]: p for p in read_state(out)["points"]}
    assert state["mitchell7-s0"]["status"] == "failed"
    assert "signal 9" in state["mitchell7-s0"]["error"]
    assert len(metrics(out / "mitchell7-s0")) == 1  # killed midway: one epoch of two

    launched: list[list[str]] = []

    def counting(job: PointJob) -> Outcome:
        launched.append(list(job.argv))
        return run_point(job)

    second = run_sweep(_plan(spec, out), launcher=counting, retries=0)
    assert second["done"] == 2 and second["failed"] == []
    assert len(launched) == 1 and "--resume" in launched[0]
    config = json.loads((out / "mitchell7-s0" / "config.json").read_text())
    assert [r["after_epoch"] for r in config["resumed"]] == [1]  # continued, not restarted
    assert metrics(out / "mitchell7-s0") == metrics(reference / "mitchell7-s0")


def test_a_sweep_killed_while_points_ran_restarts_them(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "sweep"
    spec = tiny_spec(data_dir, seed=[0], multiplier=["fp32", "bf16"])
    plan = _plan(spec, out)

    def slow_failure(job: PointJob) -> Outcome:
        time.sleep(0.2)
        return Outcome(1, 0.2, "exit status 1: never reached")

    def ctrl_c(line: str) -> None:
        if "started" in line:
            raise KeyboardInterrupt  # Ctrl-C in the sweep's process while a point runs

    with pytest.raises(KeyboardInterrupt):
        run_sweep(plan, launcher=slow_failure, report=ctrl_c)
    assert {p["status"] for p in read_state(out)["points"]} == {"pending"}

    def finish(job: PointJob) -> Outcome:
        fake_run(Path(job.folder), [0.5, 0.6])
        return Outcome(0, 0.1)

    summary = run_sweep(_plan(spec, out), launcher=finish)
    assert summary["done"] == 2 and summary["skipped"] == 0


def test_report_matches_the_run_folders(local_sweep, tmp_path: Path) -> None:
    out, _ = local_sweep
    report = sweep_report(out)
    groups = {g["values"]["multiplier"]: g for g in report["groups"]}
    reference = compare_seed_groups([out / "fp32-s0", out / "mitchell7-s0"])["groups"]
    by_label = {g["label"]: g for g in reference}
    for name in ("fp32", "mitchell7"):
        assert groups[name]["mean"] == by_label[name]["final_mean"]
        assert groups[name]["values_per_seed"] == [metrics(out / f"{name}-s0")[-1]["test_acc"]]
    assert report["baseline"] == "multiplier=fp32" and groups["fp32"]["is_baseline"]
    assert groups["mitchell7"]["gap"] == groups["mitchell7"]["mean"] - groups["fp32"]["mean"]
    mitchell = json.loads((out / "mitchell7-s0" / "config.json").read_text())
    stats = mitchell["multipliers"]["forward"]["error_stats"]
    assert groups["mitchell7"]["x"] == 100 * stats["mean_abs_rel_error"]
    assert groups["fp32"]["x"] == 0.0 and groups["fp32"]["pareto"]
    assert "| fp32 | 1/1 |" in format_report(report, "md")
    png, table = tmp_path / "pareto.png", tmp_path / "table.csv"
    args = ["sweep", "report", str(out), "--plot", str(png), "--format", "csv"]
    assert main([*args, "--out", str(table)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert table.read_text().startswith("multiplier,seeds,complete,mean,std,gap")
    assert main([*args, "--out", str(table)]) == 2  # exists: not replaced without --overwrite
