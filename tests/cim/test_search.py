"""Worst-case search: at least as bad as Monte Carlo within the same bound, bounds respected,
reproducible, replayable; bad settings rejected."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from approxsim.cim import (
    CIMError,
    DeviceConfig,
    Perturbation,
    SearchConfig,
    accuracy,
    chip,
    margin_loss,
    monte_carlo,
    select_layers,
    worst_case_search,
)

EPS = 0.2


@pytest.fixture(scope="module")
def pgd_result(trained_mlp: nn.Module, blobs: tuple):  # type: ignore[no-untyped-def]
    attack, held = blobs
    return worst_case_search(
        trained_mlp,
        attack,
        DeviceConfig(),
        SearchConfig(eps=EPS, method="pgd", steps=40, restarts=2, batch_size=128, seed=0),
        heldout_data=held,
    )


@pytest.mark.parametrize("method", ["pgd", "cw"])
def test_search_is_at_least_as_bad_as_100_monte_carlo_chips(
    trained_mlp: nn.Module,
    blobs: tuple,
    pgd_result,
    method: str,  # type: ignore[no-untyped-def]
) -> None:
    attack, held = blobs
    res = pgd_result
    if method == "cw":
        res = worst_case_search(
            trained_mlp,
            attack,
            DeviceConfig(),
            SearchConfig(eps=EPS, method="cw", steps=40, restarts=1, batch_size=128, lr=0.1),
            heldout_data=held,
        )
    # 100 chips inside the same box: sigma = eps, write-verified to |dg| <= eps.
    mc = monte_carlo(
        trained_mlp,
        attack,
        DeviceConfig(sigma=EPS, write_verify_tolerance=EPS),
        samples=100,
        seed=0,
    )
    assert res.attack_clean_accuracy > 0.85
    assert res.attack_accuracy <= min(mc.accuracies)
    assert res.attack_accuracy < res.attack_clean_accuracy - 0.1
    assert res.heldout_accuracy is not None and res.heldout_clean_accuracy is not None
    assert res.heldout_accuracy < res.heldout_clean_accuracy


def test_found_perturbation_respects_the_bound(pgd_result, trained_mlp: nn.Module) -> None:  # type: ignore[no-untyped-def]
    pert = pgd_result.perturbation
    eps32 = float(torch.tensor(EPS, dtype=torch.float32))
    for dg in pert.deviations.values():
        assert float(dg.abs().max()) <= eps32
    layers = select_layers(trained_mlp)
    for d in pert.weight_deltas(layers).values():
        assert float(d.abs().max()) <= EPS * (1 + 1e-6)
    st = pgd_result.stats
    assert st["max_abs_weight_delta"] <= EPS * (1 + 1e-6)
    assert st["fraction_at_max"] > 0.1  # a sign-gradient search sits at the box's faces


@pytest.mark.parametrize("mapping", ["sign-magnitude", "differential"])
def test_device_unit_bound_and_mappings(trained_mlp: nn.Module, blobs: tuple, mapping: str) -> None:
    attack, _ = blobs
    cfg = DeviceConfig(mapping=mapping)
    res = worst_case_search(
        trained_mlp, attack, cfg, SearchConfig(eps=0.05, unit="device", steps=10, restarts=1)
    )
    assert res.eps_device == 0.05 and res.eps_weight == pytest.approx(0.05 * cfg.sets)
    for dg in res.perturbation.deviations.values():
        assert dg.shape[0] == cfg.devices_per_weight
        assert float(dg.abs().max()) <= float(torch.tensor(0.05, dtype=torch.float32))


def test_search_is_reproducible_and_replays(
    tmp_path: Path,
    trained_mlp: nn.Module,
    blobs: tuple,
    pgd_result,  # type: ignore[no-untyped-def]
) -> None:
    attack, held = blobs
    again = worst_case_search(
        trained_mlp,
        attack,
        DeviceConfig(),
        SearchConfig(eps=EPS, method="pgd", steps=40, restarts=2, batch_size=128, seed=0),
        heldout_data=held,
    )
    assert again.restart_accuracies == pgd_result.restart_accuracies
    for k, v in pgd_result.perturbation.deviations.items():
        assert torch.equal(again.perturbation.deviations[k], v)
    other = worst_case_search(
        trained_mlp, attack, DeviceConfig(),
        SearchConfig(eps=EPS, method="pgd", steps=40, restarts=2, batch_size=128, seed=1),
    )  # fmt: skip
    assert not torch.equal(other.perturbation.deviations["0"], again.perturbation.deviations["0"])
    path = pgd_result.perturbation.save(tmp_path / "worst.pt")
    with chip(trained_mlp, Perturbation.load(path)):
        assert accuracy(trained_mlp, attack) == pgd_result.attack_accuracy
        assert accuracy(trained_mlp, held) == pgd_result.heldout_accuracy
    # The search leaves the model as it found it.
    assert trained_mlp.training is False
    assert all(p.requires_grad for p in trained_mlp.parameters())


def test_margin_loss() -> None:
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 5.0]])
    labels = torch.tensor([0, 1])
    torch.testing.assert_close(margin_loss(logits, labels), torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(margin_loss(logits, labels, kappa=1.0), torch.tensor([2.0, -1.0]))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"eps": 0}, "eps"),
        ({"eps": -0.1}, "eps"),
        ({"eps": 0.1, "unit": "volt"}, "unit"),
        ({"eps": 0.1, "method": "bfgs"}, "method"),
        ({"eps": 0.1, "steps": 0}, "steps"),
        ({"eps": 0.1, "restarts": 1.5}, "restarts"),
        ({"eps": 0.1, "step_size": 0}, "step_size"),
        ({"eps": 0.1, "kappa": -1}, "kappa"),
        ({"eps": 0.1, "seed": -3}, "seed"),
        ({"eps": 0.1, "objective": "hinge"}, "objective"),
        ({"eps": 0.1, "space": "chip"}, "space"),
        ({"eps": 0.1, "budget": 0}, "budget"),
    ],
)
def test_bad_search_configs_are_rejected(kw: dict, match: str) -> None:
    with pytest.raises(CIMError, match=match):
        SearchConfig(**kw)


def test_per_weight_space_refuses_clipping(trained_mlp: nn.Module, blobs: tuple) -> None:
    """The per-weight box does not model clipped devices: asked for, a clear error."""
    attack, _ = blobs
    cfg = DeviceConfig(clip=True)
    with pytest.raises(CIMError, match="clip"):
        worst_case_search(
            trained_mlp, attack, cfg, SearchConfig(eps=0.1, space="weight", steps=1, restarts=1)
        )


def test_a_budget_below_the_number_of_runs_is_refused(trained_mlp: nn.Module, blobs: tuple) -> None:
    with pytest.raises(CIMError, match="budget 1 is smaller than the 2 runs"):
        worst_case_search(trained_mlp, blobs[0], DeviceConfig(), SearchConfig(eps=0.1, budget=1))
