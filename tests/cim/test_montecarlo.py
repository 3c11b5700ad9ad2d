"""Monte Carlo over chips: reproducible by seed, resumable, and summarized with intervals
whose coverage holds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from approxsim.cim import (
    CIMError,
    DeviceConfig,
    Perturbation,
    accuracy,
    chip,
    chip_seed,
    monte_carlo,
    quantile_interval,
    run_monte_carlo,
    sample_perturbation,
    summarize,
)


def test_monte_carlo_is_reproducible_by_seed(trained_mlp: nn.Module, blobs: tuple) -> None:
    _, held = blobs
    cfg = DeviceConfig(sigma=0.15)
    a = monte_carlo(trained_mlp, held, cfg, samples=8, seed=3)
    b = monte_carlo(trained_mlp, held, cfg, samples=8, seed=3)
    c = monte_carlo(trained_mlp, held, cfg, samples=8, seed=4)
    assert a.accuracies == b.accuracies and a.summary == b.summary
    assert a.accuracies != c.accuracies
    assert len(set(a.accuracies)) > 1  # the chips differ
    # Chip i depends on (seed, i) only: a shorter run is a prefix, a resumed run is the same.
    short = monte_carlo(trained_mlp, held, cfg, samples=3, seed=3)
    assert short.accuracies == a.accuracies[:3]
    seen: list[tuple[int, float]] = []
    resumed = monte_carlo(
        trained_mlp, held, cfg, samples=8, seed=3, previous=short.accuracies,
        on_chip=lambda i, acc: seen.append((i, acc)),
    )  # fmt: skip
    assert resumed.accuracies == a.accuracies and [i for i, _ in seen] == list(range(3, 8))
    # A chip is replayable from its seed.
    worst = sample_perturbation(trained_mlp, cfg, seed=chip_seed(3, a.worst_index))
    with chip(trained_mlp, worst):
        assert accuracy(trained_mlp, held) == min(a.accuracies)


def test_monte_carlo_summary_and_clean(trained_mlp: nn.Module, blobs: tuple) -> None:
    _, held = blobs
    res = monte_carlo(trained_mlp, held, DeviceConfig(sigma=0.3), samples=20, seed=0)
    s = res.summary
    accs = np.array(res.accuracies)
    assert s["samples"] == 20 and s["mean"] == pytest.approx(accs.mean())
    assert s["std"] == pytest.approx(accs.std(ddof=1))
    assert s["min"] <= s["p1"] <= s["p5"] <= s["median"] <= s["max"]
    assert s["mean_ci"][0] <= s["mean"] <= s["mean_ci"][1]
    assert s["p1_ci"][0] is None  # 20 chips cannot bound the 1st percentile from below
    with chip(trained_mlp, config=DeviceConfig()):
        assert res.clean_accuracy == accuracy(trained_mlp, held)
    assert res.clean_accuracy > s["mean"]  # a large sigma costs accuracy on average
    d = res.to_dict()
    assert d["chips"] == 20 and d["accuracies"] == res.accuracies


@pytest.mark.parametrize(
    "kw", [{"samples": 0}, {"seed": -1}, {"previous": [0.5] * 3, "samples": 2}]
)
def test_bad_monte_carlo_arguments(trained_mlp: nn.Module, blobs: tuple, kw: dict) -> None:
    with pytest.raises(CIMError):
        monte_carlo(trained_mlp, blobs[1], DeviceConfig(sigma=0.1), **kw)
    with pytest.raises(CIMError, match="ImageDataset"):
        monte_carlo(trained_mlp, [1, 2, 3], DeviceConfig(sigma=0.1), samples=1)


# ---------------------------------------------------------------------------- intervals
def test_quantile_interval_matches_the_binomial_rule() -> None:
    x = list(range(1, 101))  # x_(k) = k
    lo, hi, cov = quantile_interval(x, 0.01, 0.95)
    # (0.99)^100 = 0.366 > 0.025: no lower bound; P(B <= 3) = 0.981 >= 0.975: x_(4).
    assert lo is None and hi == 4 and cov == pytest.approx(0.98158, abs=1e-4)
    lo, hi, cov = quantile_interval(x, 0.5, 0.95)
    assert (lo, hi) == (40, 61) and cov >= 0.95  # the textbook median interval for n = 100
    with pytest.raises(CIMError):
        quantile_interval(x, 1.5)
    with pytest.raises(CIMError):
        quantile_interval([], 0.5)


def test_quantile_interval_coverage_holds_empirically() -> None:
    rng = np.random.default_rng(0)
    q, n, trials = 0.05, 200, 2000
    true = float(-np.log(1 - q))  # exponential(1) quantile
    hits = 0
    for _ in range(trials):
        lo, hi, _ = quantile_interval(rng.exponential(size=n).tolist(), q, 0.95)
        hits += (lo is None or lo <= true) and (hi is None or true <= hi)
    assert hits / trials >= 0.94


def test_summary_bootstrap_is_seeded() -> None:
    vals = torch.rand(50, generator=torch.Generator().manual_seed(0)).tolist()
    assert summarize(vals, seed=1) == summarize(vals, seed=1)
    assert summarize(vals, seed=1)["mean_ci"] != summarize(vals, seed=2)["mean_ci"]
    assert summarize([0.5])["std"] == 0.0


def test_monte_carlo_with_clipping(trained_mlp: nn.Module, blobs: tuple) -> None:
    _, held = blobs
    cfg = DeviceConfig(sigma=0.3, clip=True)
    a = monte_carlo(trained_mlp, held, cfg, samples=4, seed=1)
    assert a.accuracies == monte_carlo(trained_mlp, held, cfg, samples=4, seed=1).accuracies
    assert a.to_dict()["device"]["clip"] is True
    plain = monte_carlo(trained_mlp, held, cfg.replace(clip=False), samples=4, seed=1)
    assert a.accuracies != plain.accuracies and "clip" not in plain.to_dict()["device"]
    # Chip i replays from its seed, clipped.
    one = sample_perturbation(trained_mlp, cfg, seed=chip_seed(1, 2))
    with chip(trained_mlp, one):
        assert accuracy(trained_mlp, held) == a.accuracies[2]


# ---------------------------------------------------------------------------- resumable runs
def test_run_monte_carlo_resumes_after_ctrl_c_and_saves_the_worst_chip(
    trained_mlp: nn.Module, blobs: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import approxsim.cim.montecarlo as mc_mod

    _, held = blobs
    cfg = DeviceConfig(sigma=0.15)
    out = tmp_path / "mc.json"
    real = mc_mod.accuracy
    calls = {"n": 0}

    def flaky(*a: object, **k: object) -> float:
        calls["n"] += 1
        if calls["n"] == 4:  # the clean chip, chips 0 and 1, then Ctrl-C in chip 2
            raise KeyboardInterrupt
        return real(*a, **k)  # type: ignore[arg-type]

    bars: list[tuple[str, int]] = []

    class Bar:
        def update(self, n: int, loss: float | None = None, acc: float | None = None) -> None:
            pass

        def close(self) -> None:
            bars.append(("closed", 0))

    def progress(desc: str, total: int) -> Bar:
        bars.append((desc, total))
        return Bar()

    meta = {"checkpoint": "run", "epoch": 3}
    monkeypatch.setattr(mc_mod, "accuracy", flaky)
    first = run_monte_carlo(
        trained_mlp, held, cfg, samples=5, seed=3, out=out, meta=meta, progress=progress
    )
    assert not first.complete and first.result is None and first.chips_done == 2
    assert json.loads(out.read_text()) == first.document
    assert first.document["complete"] is False and list(first.document)[:3] == [
        "schema", "checkpoint", "epoch",
    ]  # fmt: skip
    assert bars == [("monte carlo", 5 * 400), ("closed", 0)]  # closed on Ctrl-C too
    monkeypatch.setattr(mc_mod, "accuracy", real)
    with pytest.raises(CIMError, match=r"settings differ in \['seed'\]"):
        run_monte_carlo(trained_mlp, held, cfg, samples=5, seed=4, out=out, resume=True, meta=meta)
    # The epoch may differ (a checkpoint rewritten by a resumed training run).
    done = run_monte_carlo(
        trained_mlp, held, cfg, samples=5, seed=3, out=out, resume=True,
        meta={**meta, "epoch": 4}, save_worst=tmp_path / "w.pt", progress=progress,
    )  # fmt: skip
    assert bars[-2] == ("monte carlo", 3 * 400)  # only the chips still to score
    fresh = monte_carlo(trained_mlp, held, cfg, samples=5, seed=3)
    assert done.complete and done.result is not None
    assert done.result.accuracies == fresh.accuracies
    doc = json.loads(out.read_text())
    assert doc == done.document and doc["complete"] is True and doc["epoch"] == 4
    assert doc["worst_chip_file"] == str(tmp_path / "w.pt")
    with chip(trained_mlp, Perturbation.load(tmp_path / "w.pt")):
        assert accuracy(trained_mlp, held) == min(fresh.accuracies)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_run_monte_carlo_arguments(trained_mlp: nn.Module, blobs: tuple, tmp_path: Path) -> None:
    _, held = blobs
    cfg = DeviceConfig(sigma=0.15)
    with pytest.raises(CIMError, match="resume=True needs out="):
        run_monte_carlo(trained_mlp, held, cfg, samples=2, resume=True)
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(CIMError, match="is not a result file"):
        run_monte_carlo(trained_mlp, held, cfg, samples=2, out=tmp_path / "bad.json", resume=True)
    # Without a file to continue, resume starts a new run; types are recorded by name.
    run = run_monte_carlo(
        trained_mlp, held, cfg, samples=2, out=tmp_path / "new.json", resume=True,
        include=nn.Linear,
    )  # fmt: skip
    assert run.complete and run.document["include"] == ["torch.nn.modules.linear.Linear"]
    assert run.document["accuracies"] == monte_carlo(trained_mlp, held, cfg, samples=2).accuracies
