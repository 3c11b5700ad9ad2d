"""Comparing run folders (:mod:`approxsim.training.compare`), their curves
(:mod:`approxsim.plots.curves`) and ``approxsim compare``, on the shared tiny runs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from training_helpers import metrics

from approxsim.cli import build_parser, main
from approxsim.plots.curves import plot_runs
from approxsim.training.compare import (
    COMPARE_SCHEMA,
    CompareError,
    compare_runs,
    compare_seed_groups,
    format_comparison,
    format_seed_groups,
    load_run,
)


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
    argv = ["compare", str(approx_run[0]), str(exact_run[0]), "--plot", str(tmp_path / "c2.png")]
    assert build_parser().parse_args(argv).action is None
    assert main([*argv, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert len(res["runs"]) == 2 and Path(res["plot"]).stat().st_size > 0
    assert main(["compare", str(approx_run[0]), "--baseline", str(exact_run[0])]) == 0
    assert "mitchell7" in capsys.readouterr().out
    assert main(["compare", str(tmp_path)]) == 2
    assert "approxsim: error: " in (err := capsys.readouterr().err) and "not a training run" in err


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
    assert COMPARE_SCHEMA.startswith("approxsim.compare")
    assert os.path.isdir(run)


def _seed_copy(src: Path, dst: Path, seed: int, accs: list[float]) -> Path:
    """A copy of run ``src`` claiming ``seed`` whose epochs end with test accuracies ``accs``."""
    dst.mkdir(parents=True)
    meta = json.loads((src / "config.json").read_text())
    meta["config"]["seed"] = seed
    meta["config"]["out_dir"] = str(dst)
    (dst / "config.json").write_text(json.dumps(meta))
    records = [{**r, "test_acc": a} for r, a in zip(metrics(src), accs, strict=False)]
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
    assert main(["compare", "--group-seeds", *map(str, runs)]) == 0
    assert capsys.readouterr().out.strip() == table
    assert main(["compare", "--group-seeds", str(src), "--plot", "x.png"]) == 2
    assert "--group-seeds" in capsys.readouterr().err


def test_compare_plot_path_is_checked_first(
    exact_run: tuple[Path, dict],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = str(exact_run[0])
    old = tmp_path / "curves.png"
    old.write_bytes(b"an earlier figure")

    def never(*args: object, **kw: object) -> None:
        raise AssertionError("the plot path is checked before any run is read")

    with monkeypatch.context() as m:
        m.setattr("approxsim.training.compare.compare_runs", never)
        for target, message in [
            (tmp_path / "curves.xyz", "'.xyz' is not an image format"),
            (tmp_path, "is a folder"),
            (old, "exists; pass --overwrite"),
        ]:
            assert main(["compare", run, "--plot", str(target)]) == 2
            err = capsys.readouterr().err
            assert err.startswith("approxsim: error:") and message in err, err
            assert err.count("\n") == 1 and "Traceback" not in err
    assert old.read_bytes() == b"an earlier figure"
    assert not (tmp_path / "curves.xyz").exists() and not (tmp_path.with_suffix(".png")).exists()
    assert main(["compare", run, "--plot", str(old), "--overwrite"]) == 0
    assert old.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"plot written to {old}" in capsys.readouterr().out


def test_plot_runs_never_writes_over_a_run_file(exact_run: tuple[Path, dict]) -> None:
    from approxsim._io import OutputExistsError
    from approxsim.plots.common import PlotError

    metrics_file = exact_run[0] / "metrics.jsonl"
    before = metrics_file.read_bytes()
    with pytest.raises((OutputExistsError, PlotError)):
        plot_runs([exact_run[0]], metrics_file, overwrite=True)
    with pytest.raises(PlotError, match="not an image format"):
        plot_runs([exact_run[0]], exact_run[0].parent / "c.xyz")
    assert metrics_file.read_bytes() == before


def test_fine_tunings_of_each_seed_group_together(
    approx_run: tuple[Path, dict], exact_run: tuple[Path, dict], tmp_path: Path
) -> None:
    # Seed s of a fine-tuning starts from seed s of a float run: the runs differ in seed and in
    # init_from, yet they are one setup. Fine-tunings of different float setups stay apart.
    def tuned(src: Path, parent: Path, seed: int, name: str) -> Path:
        run = _seed_copy(src, tmp_path / name, seed, [0.5, 0.6])
        meta = json.loads((run / "config.json").read_text())
        meta["config"]["init_from"] = str(parent)
        (run / "config.json").write_text(json.dumps(meta))
        return run

    exact = [_seed_copy(exact_run[0], tmp_path / f"e{s}", s, [0.5, 0.6, 0.7]) for s in (0, 1)]
    approx = [_seed_copy(approx_run[0], tmp_path / f"x{s}", s, [0.5, 0.6]) for s in (0, 1)]
    src = approx_run[0]
    runs = [tuned(src, exact[s], s, f"te{s}") for s in (0, 1)]
    runs += [tuned(src, approx[s], s, f"tx{s}") for s in (0, 1)]
    groups = compare_seed_groups(runs)["groups"]
    assert [sorted(g["seeds"]) for g in groups] == [[0, 1], [0, 1]]
    assert [Path(r).name for r in groups[0]["runs"]] == ["te0", "te1"]


# ---------------------------------------------------------------------------- DQN runs
@pytest.fixture(scope="module")
def dqn_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny DQN runs: uniform replay seeds 0 and 1, per-sumtree seed 0."""
    pytest.importorskip("gymnasium")
    from approxsim.replay.dqn import DQNConfig, train_dqn

    root = tmp_path_factory.mktemp("dqn")
    tiny: dict[str, Any] = dict(
        steps=120, learning_starts=40, batch_size=16, buffer_size=100, log_every=40
    )
    runs = {}
    for name, replay, seed in (
        ("u0", "uniform", 0),
        ("u1", "uniform", 1),
        ("p0", "per-sumtree", 0),
    ):
        train_dqn(DQNConfig(replay=replay, seed=seed, **tiny), root / name)
        runs[name] = root / name
    return runs


def test_compare_reads_dqn_runs_by_their_return(dqn_runs: dict[str, Path]) -> None:
    from approxsim.replay.runs import read_dqn_run

    result = compare_runs([dqn_runs["u0"], dqn_runs["p0"]])
    rows = {r["label"]: r for r in result["runs"]}
    assert set(rows) == {"uniform", "per-sumtree"}
    per = rows["per-sumtree"]
    run = read_dqn_run(dqn_runs["p0"])
    assert per["kind"] == "dqn" and per["model"] == "CartPole-v1"
    assert per["epochs"] == 120 and per["epochs_completed"] == 120
    assert run.summary is not None
    assert per["final_test_acc"] == pytest.approx(run.summary["final_return"])
    returns = [(h["return_recent"], h["step"]) for h in run.history]
    assert (per["best_test_acc"], per["best_epoch"]) == max(returns, key=lambda t: t[0])
    assert per["final_train_loss"] == run.history[-1]["loss"]
    assert rows["uniform"]["is_baseline"]  # the first run when none is named
    assert per["gap_final"] == pytest.approx(
        per["final_test_acc"] - rows["uniform"]["final_test_acc"]
    )
    table = format_comparison(result)
    assert "final return" in table and "%" not in table


def test_compare_refuses_mixed_kinds(
    dqn_runs: dict[str, Path], exact_run: tuple[Path, dict]
) -> None:
    with pytest.raises(CompareError, match="training runs with DQN runs"):
        compare_runs([dqn_runs["u0"], exact_run[0]])
    with pytest.raises(CompareError, match="training runs with DQN runs"):
        compare_seed_groups([exact_run[0], dqn_runs["u0"]])


def test_compare_groups_dqn_seeds(
    dqn_runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from approxsim.replay.runs import read_dqn_run

    grouped = compare_seed_groups([dqn_runs["u0"], dqn_runs["u1"], dqn_runs["p0"]])
    uni, per = grouped["groups"]
    assert uni["label"] == "uniform" and uni["seeds"] == [0, 1] and uni["seeds_complete"] == 2
    finals = [(read_dqn_run(dqn_runs[n]).summary or {})["final_return"] for n in ("u0", "u1")]
    assert uni["final_mean"] == pytest.approx(sum(finals) / 2)
    assert per["seeds"] == [0] and per["final_std"] is None
    assert per["gap_final"] == pytest.approx(per["final_mean"] - uni["final_mean"])
    assert "| CartPole-v1 | uniform | 120 | 2/2 |" in format_seed_groups(grouped)
    assert main(["compare", str(dqn_runs["u0"]), str(dqn_runs["p0"])]) == 0
    assert "per-sumtree" in capsys.readouterr().out


def test_plot_dqn_runs(dqn_runs: dict[str, Path], tmp_path: Path) -> None:
    from approxsim._io import OutputExistsError
    from approxsim.plots.replay import plot_dqn_runs

    png = plot_dqn_runs([dqn_runs["u0"], dqn_runs["p0"]], tmp_path / "returns.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(OutputExistsError):
        plot_dqn_runs([dqn_runs["u0"]], dqn_runs["u0"] / "summary.json")
