"""The default (auto) search, the search in device space (with and without conductance
clipping), budgets and costs, and the sweep's monotonicity check in ε."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import approxsim.cim.search as search_mod
import approxsim.cim.sweep as sweep_mod
from approxsim.cim import (
    AUTO_SCHEDULE,
    CIMError,
    DeviceConfig,
    Perturbation,
    SearchConfig,
    accuracy,
    chip,
    device_conductances,
    monotonicity_breaks,
    run_sweep,
    select_layers,
    worst_case_search,
)
from approxsim.cim.search_steps import SearchBox, margin_loss, objective_loss

MAPPINGS = ["sign-magnitude", "differential"]


def _layers(model: nn.Module) -> dict[str, nn.Module]:
    return select_layers(model)


@pytest.mark.parametrize("mapping", MAPPINGS)
def test_device_box_reaches_exactly_the_per_weight_box(
    trained_mlp: nn.Module, mapping: str
) -> None:
    """Without clipping, the device box maps onto the per-weight box: inside it, its faces
    attained, and every per-weight point lifted back into the device box."""
    cfg = DeviceConfig(mapping=mapping)
    eps_d = 0.05
    eps_w = eps_d * cfg.sets  # Σ c_i = 1
    layers = _layers(trained_mlp)
    box = SearchBox.build(layers, cfg, device_space=True, eps_weight=eps_w, eps_device=eps_d)
    g = torch.Generator().manual_seed(0)
    for n in layers:
        shape = box.shape(n)
        corners = (torch.randint(0, 2, shape, generator=g) * 2 - 1).to(torch.float32) * eps_d
        delta = box.to_delta(n, corners)
        assert float(delta.abs().max()) <= eps_w * (1 + 1e-6)
        # All devices of a weight at the same face (the lift of ±ε_w) reach ±ε_w exactly.
        sign = torch.where(torch.rand(delta.shape, generator=g) < 0.5, -1.0, 1.0) * eps_w
        lifted = box.lift(n, sign)
        assert float(lifted.abs().max()) <= eps_d * (1 + 1e-6)
        torch.testing.assert_close(box.to_delta(n, lifted), sign)
        inner = (torch.rand(delta.shape, generator=g) * 2 - 1) * eps_w
        torch.testing.assert_close(box.to_delta(n, box.lift(n, inner)), inner)


@pytest.mark.parametrize("mapping", MAPPINGS)
def test_device_space_search_follows_the_per_weight_search_without_clipping(
    trained_mlp: nn.Module, blobs: tuple, mapping: str
) -> None:
    """Same start, same steps: the device-space PGD path is the per-weight one."""
    attack, held = blobs
    cfg = DeviceConfig(mapping=mapping)
    kw = {"eps": 0.15, "method": "pgd", "steps": 15, "restarts": 1, "batch_size": 128}
    res_w = worst_case_search(
        trained_mlp, attack, cfg, SearchConfig(space="weight", **kw), heldout_data=held
    )
    res_d = worst_case_search(
        trained_mlp, attack, cfg, SearchConfig(space="device", **kw), heldout_data=held
    )
    assert (res_w.space, res_d.space) == ("weight", "device")
    assert res_d.attack_accuracy == res_w.attack_accuracy
    assert res_d.heldout_accuracy == res_w.heldout_accuracy
    layers = _layers(trained_mlp)
    dw, dd = res_w.perturbation.weight_deltas(layers), res_d.perturbation.weight_deltas(layers)
    for n in dw:
        assert float((dw[n] - dd[n]).abs().max()) <= 1e-5


@pytest.mark.parametrize("mapping", MAPPINGS)
@pytest.mark.parametrize("method", ["pgd", "cw"])
def test_clipped_search_stays_in_the_devices_range_and_replays(
    trained_mlp: nn.Module, blobs: tuple, mapping: str, method: str
) -> None:
    attack, held = blobs
    cfg = DeviceConfig(mapping=mapping, clip=True)
    eps = 0.3
    res = worst_case_search(
        trained_mlp,
        attack,
        cfg,
        SearchConfig(eps=eps, unit="device", method=method, steps=20, restarts=1),
        heldout_data=held,
    )
    assert res.space == "device" and res.perturbation.config.clip
    layers = _layers(trained_mlp)
    eps32 = float(torch.tensor(eps, dtype=torch.float32))
    for n, dg in res.perturbation.deviations.items():
        w = layers[n]._parameters["weight"]
        assert w is not None
        g = device_conductances(w.detach(), cfg)
        assert float(dg.abs().max()) <= eps32
        assert bool((g + dg >= 0).all()) and bool((g + dg <= 1).all())
    with chip(trained_mlp, res.perturbation):
        assert accuracy(trained_mlp, attack) == res.attack_accuracy
        assert accuracy(trained_mlp, held) == res.heldout_accuracy
    assert res.attack_accuracy < res.attack_clean_accuracy


def test_auto_runs_its_schedule_in_the_budget_and_keeps_the_worst(
    trained_mlp: nn.Module, blobs: tuple
) -> None:
    attack, held = blobs
    res = worst_case_search(
        trained_mlp, attack, DeviceConfig(), SearchConfig(eps=0.1, budget=21), heldout_data=held
    )
    steps = 21 // len(AUTO_SCHEDULE)
    assert [r["steps"] for r in res.runs] == [steps] * len(AUTO_SCHEDULE)
    assert res.cost["budget"] == 21 and res.cost["gradient_steps"] == steps * len(AUTO_SCHEDULE)
    assert res.cost["gradient_samples"] == res.cost["gradient_steps"] * 256
    n = attack[0].shape[0]
    assert res.cost["scoring_samples"] == (len(AUTO_SCHEDULE) + 2) * n
    best = min(res.runs, key=lambda r: r["attack_accuracy"])
    assert res.found_by == best["run"] and res.perturbation.meta["found_by"] == res.found_by
    assert abs(res.attack_accuracy - best["attack_accuracy"]) <= 1 / n
    assert res.to_dict()["cost"] == res.cost


def test_ctrl_c_in_auto_keeps_the_worst_run_so_far(
    trained_mlp: nn.Module, blobs: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = search_mod.run_component
    calls = {"n": 0}

    def flaky(*a: object, **k: object) -> object:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(search_mod, "run_component", flaky)
    res = worst_case_search(trained_mlp, blobs[0], DeviceConfig(), SearchConfig(eps=0.1, budget=8))
    assert res.interrupted and len(res.runs) == 1 and res.cost["gradient_steps"] == 4


def test_objectives() -> None:
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 5.0]])
    labels = torch.tensor([0, 1])
    torch.testing.assert_close(margin_loss(logits, labels, math.inf), torch.tensor([2.0, -3.0]))
    assert float(objective_loss(logits, labels, "margin-unclipped", 0.0)) == pytest.approx(-0.5)
    assert float(objective_loss(logits, labels, "margin", 1.0)) == pytest.approx(0.5)
    ce = torch.nn.functional.cross_entropy(logits, labels)
    assert float(objective_loss(logits, labels, "ce", 0.0)) == pytest.approx(-float(ce))


def test_sweep_repairs_a_search_that_broke_monotonicity(
    trained_mlp: nn.Module, blobs: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A (deliberately) weak search at the larger bound: the smaller bound's chip, feasible
    there, replaces it, and the break is reported."""
    real = sweep_mod.worst_case_search

    def weak_at_large(model, attack, config, search, **kw):  # type: ignore[no-untyped-def]
        if search.eps > 0.2:
            search = SearchConfig(eps=1e-4, method="pgd", steps=1, restarts=1)
        return real(model, attack, config, search, **kw)

    monkeypatch.setattr(sweep_mod, "worst_case_search", weak_at_large)
    with pytest.raises(CIMError, match="budget 1"):  # checked before any work
        run_sweep([("m", trained_mlp)], *blobs, [0.1], search=SearchConfig(eps=1.0, budget=1))
    attack, held = blobs
    doc = run_sweep(
        [("m", trained_mlp)],
        attack,
        held,
        [0.3, 0.2],  # any order: checked smallest first
        mc_samples=1,
        search=SearchConfig(eps=1.0, method="pgd", steps=10, restarts=1),
    )
    small, large = doc["models"][0]["points"][1], doc["models"][0]["points"][0]
    assert (small["eps"], large["eps"]) == (0.2, 0.3)
    mono = large["monotonicity"]
    assert mono["broken"] and mono["checked_against_eps"] == 0.2
    assert large["worst_attack"] == small["worst_attack"] < mono["searched_attack"]
    breaks = monotonicity_breaks(doc)
    assert len(breaks) == 1 and breaks[0]["repaired"] and breaks[0]["eps_large"] == 0.3
    # A document that still rises (e.g. pieces from before a resume) is reported as such.
    del large["monotonicity"]
    large["worst_attack"] = mono["searched_attack"]
    assert monotonicity_breaks(doc)[0]["repaired"] is False


def test_sweep_with_clipping_searches_in_device_space(trained_mlp: nn.Module, blobs: tuple) -> None:
    attack, held = ((x[:64], y[:64]) for x, y in blobs)
    doc = run_sweep(
        [("m", trained_mlp)],
        attack,
        held,
        [0.1, 0.3],
        config=DeviceConfig(clip=True),
        mc_samples=2,
        search=SearchConfig(eps=1.0, budget=4),
    )
    assert doc["device"]["clip"] is True
    for p in doc["models"][0]["points"]:
        assert p["worst"]["auto"]["space"] == "device"
        assert p["worst"]["auto"]["cost"]["gradient_steps"] == 4
    assert "monotonicity" in doc["models"][0]["points"][1]


def test_a_saved_clipped_worst_case_loads(
    tmp_path: object, trained_mlp: nn.Module, blobs: tuple
) -> None:
    from pathlib import Path

    res = worst_case_search(
        trained_mlp, blobs[0], DeviceConfig(clip=True), SearchConfig(eps=0.2, budget=4)
    )
    path = res.perturbation.save(Path(str(tmp_path)) / "w.pt")
    back = Perturbation.load(path)
    assert back.config.clip and back.meta["found_by"] == res.found_by
    with chip(trained_mlp, back):
        assert accuracy(trained_mlp, blobs[0]) == res.attack_accuracy


def test_a_sweep_interrupted_early_continues(trained_mlp: nn.Module, blobs: tuple) -> None:
    """Points not reached yet are saved with their ε, so the saved document continues."""
    attack, held = ((x[:32], y[:32]) for x, y in blobs)
    saved: list[dict] = []

    def stop_after_first(doc: dict) -> None:
        saved.append(copy.deepcopy(doc))
        if len(saved) == 2:  # the clean scores and the first Monte Carlo piece
            raise KeyboardInterrupt

    kw = {
        "mc_samples": 1,
        "methods": ("pgd",),
        "search": SearchConfig(eps=1.0, method="pgd", steps=1, restarts=1),
    }
    with pytest.raises(KeyboardInterrupt):
        run_sweep([("m", trained_mlp)], attack, held, [0.1, 0.2], on_update=stop_after_first, **kw)  # type: ignore[arg-type]
    assert [p["eps"] for p in saved[-1]["models"][0]["points"]] == [0.1, 0.2]
    doc = run_sweep([("m", trained_mlp)], attack, held, [0.1, 0.2], previous=saved[-1], **kw)  # type: ignore[arg-type]
    assert all("worst_attack" in p for p in doc["models"][0]["points"])
