"""The sweep report on run folders written by hand: statistics over seeds, the baseline gap,
the multiplier metric, the Pareto front and the formats."""

from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path

import pytest
from sweep_helpers import fake_run

from approxsim.cli.sweep import command_options, multiplier_info, point_check
from approxsim.multipliers import get_multiplier
from approxsim.multipliers.registry import get_int_multiplier
from approxsim.sweep import (
    Outcome,
    PointJob,
    SweepError,
    format_report,
    multiplier_metric,
    parse_spec,
    plan_sweep,
    run_sweep,
    sweep_report,
)

#: Final accuracies of the hand-made runs: (model, multiplier) → per seed.
FINAL = {
    ("lenet300100", "fp32"): [0.80, 0.82],
    ("lenet300100", "mitchell7"): [0.81, 0.85],
    ("lenet300100", "mbm2"): [0.70, 0.74],
    ("lenet5", "fp32"): [0.90, 0.90],
    ("lenet5", "mitchell7"): [0.89, 0.87],
    ("lenet5", "mbm2"): [0.91, 0.93],
}


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "sweep"
    spec = parse_spec(
        {
            "command": "train",
            "name": "{model}-{multiplier}-s{seed}",
            "axes": {
                "model": ["lenet300100", "lenet5"],
                "seed": [0, 1],
                "multiplier": ["fp32", "mitchell7", "mbm2"],
            },
        }
    )
    plan = plan_sweep(
        spec, out, options=command_options(spec.command), check=point_check(spec.command)
    )

    def write(job: PointJob) -> Outcome:
        model, mult, seed = job.name.rsplit("-", 2)
        final = FINAL[(model, mult)][int(seed[1:])]
        fake_run(Path(job.folder), [final - 0.05, final], multiplier=mult)
        return Outcome(0, 0.1)

    run_sweep(plan, launcher=write)
    return out


def test_groups_statistics_and_gap(sweep_dir: Path) -> None:
    report = sweep_report(sweep_dir)
    assert report["metric"] == "final_test_acc" and report["baseline"] == "multiplier=fp32"
    assert report["axes"] == ["model", "multiplier"]
    rows = {(g["values"]["model"], g["values"]["multiplier"]): g for g in report["groups"]}
    for key, finals in FINAL.items():
        g = rows[key]
        assert g["complete"] == 2 and g["points"] == [f"{key[0]}-{key[1]}-s{s}" for s in (0, 1)]
        assert g["mean"] == pytest.approx(statistics.mean(finals), abs=1e-12)
        assert g["std"] == pytest.approx(statistics.stdev(finals), abs=1e-12)
        base = statistics.mean(FINAL[(key[0], "fp32")])
        assert g["gap"] == pytest.approx(statistics.mean(finals) - base, abs=1e-12)
    best = sweep_report(sweep_dir, metric="best_test_acc")
    assert [g["mean"] for g in best["groups"]] == [g["mean"] for g in report["groups"]]


def test_multiplier_metric_and_pareto_front_per_model(sweep_dir: Path) -> None:
    report = sweep_report(sweep_dir)
    assert report["x"] == "mean_abs_rel_error"
    rows = {(g["values"]["model"], g["values"]["multiplier"]): g for g in report["groups"]}
    mbm2 = get_multiplier("mbm2").error_stats()["mean_abs_rel_error"]
    assert rows[("lenet5", "mbm2")]["x"] == pytest.approx(100 * mbm2)
    assert rows[("lenet5", "fp32")]["x"] == 0.0
    # lenet300100: mitchell7 beats fp32's accuracy at a higher error, mbm2 is beaten by both.
    front = {k for k, g in rows.items() if g["pareto"]}
    assert front == {
        ("lenet300100", "fp32"),
        ("lenet300100", "mitchell7"),
        ("lenet5", "fp32"),
        ("lenet5", "mbm2"),
    }


def test_formats_and_baseline_choices(sweep_dir: Path) -> None:
    report = sweep_report(sweep_dir, baseline="mitchell7")
    assert report["baseline"] == "multiplier=mitchell7"
    md = format_report(report, "md")
    assert "| mean \\|rel. error\\| (%) |" in md.splitlines()[0]  # a '|' in a cell is escaped
    assert "| lenet5 | mitchell7 | 2/2 | 88.00 ± 1.41 | baseline |" in md
    rows = list(csv.DictReader(io.StringIO(format_report(report, "csv"))))
    assert len(rows) == 6 and float(rows[0]["mean"]) == pytest.approx(0.81)
    assert json.loads(format_report(report, "json"))["schema"] == "approxsim.sweep.report/1"
    with pytest.raises(SweepError, match="no axis 'multiplier' with value 'bf16'"):
        sweep_report(sweep_dir, baseline="multiplier=bf16")
    with pytest.raises(SweepError, match="unknown metric 'accuracy'.*final_test_acc"):
        sweep_report(sweep_dir, metric="accuracy")
    with pytest.raises(SweepError, match="holds no sweep"):
        sweep_report(sweep_dir / "lenet5-fp32-s0")


def test_integer_multiplier_metrics() -> None:
    info = multiplier_info(get_int_multiplier("drum4_u8"))
    stats = get_int_multiplier("drum4_u8").error_stats()
    assert info["kind"] == "integer" and info["power_mw"] is None
    assert multiplier_metric(info, "mae_percent") == stats["mae_percent"]
    assert multiplier_metric(info, "mean_abs_rel_error") is None
    fp32 = multiplier_info("fp32")
    assert multiplier_metric(fp32, "mean_abs_rel_error") == 0.0
    assert multiplier_metric(fp32, "mae_percent") is None
    assert multiplier_metric({**info, "power_mw": 0.391}, "power") == 0.391
