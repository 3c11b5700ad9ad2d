"""The AM sampler (AMPER emulation): its analytic distribution matches its own Monte Carlo
within the noise floor, the size-biased rule approaches PER as bits grow, no entry is
unreachable, ties are broken at random, and the cost counts add up."""

from __future__ import annotations

import itertools

import pytest
import torch

from approxsim.replay import am as am_module
from approxsim.replay import make_sampler
from approxsim.replay.am import AMSampler, quantize
from approxsim.replay.fidelity import (
    fidelity_metrics,
    filled_sampler,
    monte_carlo_tv,
    synthetic_td_errors,
)

N = 200


def _td(kind: str = "log-normal", n: int = N, seed: int = 3) -> torch.Tensor:
    return synthetic_td_errors(kind, n, seed=seed)


CONFIGS = [
    (name, {"query": q, "levels": lv, "bits": b, **extra})
    for (name, extra), q, lv, b in itertools.product(
        [("amper-knn", {"k": 7}), ("amper-fr", {"radius": 1})],
        ["uniform", "size_biased"],
        ["linear", "log"],
        [4, 6],
    )
]


@pytest.mark.parametrize(("name", "opts"), CONFIGS, ids=[f"{n}-{o}" for n, o in CONFIGS])
def test_analytic_distribution_matches_monte_carlo(name: str, opts: dict) -> None:
    s = filled_sampler(name, _td(), **opts)
    prob = s.distribution()
    assert float(prob.sum()) == pytest.approx(1.0, abs=1e-12)
    tv, floor = monte_carlo_tv(s, 40_000, batch=N, seed=5)
    # Both are TVs of 40k draws from the same law: equal up to their own spread (~10%).
    assert tv < 1.3 * floor, (tv, floor)


def test_monte_carlo_check_can_fail() -> None:
    """Draws of the uniform query rule are far outside the floor of the size-biased law."""
    drawn = filled_sampler("amper-knn", _td(), k=7, query="uniform")
    claimed = filled_sampler("amper-knn", _td(), k=7, query="size_biased")
    drawn.distribution = claimed.distribution  # type: ignore[method-assign]
    tv, floor = monte_carlo_tv(drawn, 40_000, batch=N, seed=5)
    assert tv > 3 * floor


@pytest.mark.parametrize("name", ["amper-knn", "amper-fr"])
def test_shared_csp_has_the_same_marginal(name: str) -> None:
    opts = {"k": 7} if name == "amper-knn" else {"radius": 1}
    td = _td(n=40)
    per_query = filled_sampler(name, td, csp="query", **opts)
    shared = filled_sampler(name, td, csp="batch", **opts)
    torch.testing.assert_close(shared.distribution(), per_query.distribution())
    # Pairs of correlated draws: the spread is larger than i.i.d., so the bound is looser.
    tv, floor = monte_carlo_tv(shared, 6_000, batch=2, seed=6)
    assert tv < 2.0 * floor, (tv, floor)
    b = shared.sample(40, beta=0.4)
    assert b.cost["searches"] >= 1 and b.cost["searches"] <= 1 + 64


@pytest.mark.parametrize("kind", ["half-normal", "exponential", "log-normal"])
@pytest.mark.parametrize("levels", ["linear", "log"])
def test_size_biased_tv_to_per_falls_as_bits_grow(kind: str, levels: str) -> None:
    """Searching the query level only (radius 0, or k=1) is PER up to quantisation: the TV
    falls with every bit, about halving."""
    td = _td(kind, n=512, seed=1)
    tvs = []
    for bits in range(4, 9):
        s = filled_sampler("amper-fr", td, bits=bits, levels=levels, query="size_biased", radius=0)
        knn = filled_sampler("amper-knn", td, bits=bits, levels=levels, query="size_biased", k=1)
        torch.testing.assert_close(knn.distribution(), s.distribution())
        tvs.append(fidelity_metrics(s.distribution(), s.priorities(), 0.6, 10)["tv"])
    assert all(a > b for a, b in itertools.pairwise(tvs)), tvs
    assert tvs[-1] < tvs[0] / 8, tvs


@pytest.mark.parametrize("levels", ["linear", "log"])
@pytest.mark.parametrize("query", ["uniform", "size_biased"])
def test_no_entry_is_unreachable(levels: str, query: str) -> None:
    td = torch.logspace(-6, 3, 300, dtype=torch.float64)  # nine decades
    for name, opts in [("amper-knn", {"k": 1}), ("amper-fr", {"radius": 0})]:
        s = filled_sampler(name, td, bits=4, levels=levels, query=query, **opts)
        assert bool((s.distribution() > 0).all())


def test_quantize_levels_and_values() -> None:
    v = torch.tensor([0.0, 1e-3, 0.5, 1.0], dtype=torch.float64)
    level, value = quantize(v, 4, "linear")
    assert level.tolist() == [0, 0, 7, 15]
    assert bool((value > 0).all()) and value.numel() == 16
    level, value = quantize(v, 4, "log")
    assert level.tolist() == [0, 0, 14, 15]
    assert float(value[-1]) <= 1.0 and float(value[0]) >= 1e-3


def test_ties_are_broken_at_random() -> None:
    """All entries on one level, k=1: every entry must come up (not always the first)."""
    s = filled_sampler("amper-knn", torch.ones(40, dtype=torch.float64), k=1, csp="batch")
    seen = set()
    g = torch.Generator().manual_seed(0)
    for _ in range(400):
        seen.update(s.sample(1, beta=0.0, generator=g).indices.tolist())
    assert seen == set(range(40))


def test_cost_counts() -> None:
    s = filled_sampler("amper-knn", _td(), k=5, query="size_biased", bits=6)
    c = s.sample(16, beta=0.4).cost
    assert c["searches"] == 16 and c["candidates"] == 16 * 5
    assert c["dependent_reads"] == 16 * 6 and c["rows_matched"] >= 16 * 5
    shared = filled_sampler("amper-knn", _td(), k=5, csp="batch")
    c = shared.sample(16, beta=0.4).cost
    assert c["searches"] == 1 and c["candidates"] == 5 and c["dependent_reads"] == 0
    # Two far-apart clusters, 8 bits, radius 0: most uniform queries hit an empty level.
    td = torch.cat([torch.full((50,), 1e-3), torch.full((50,), 1.0)]).double()
    fr = filled_sampler("amper-fr", td, radius=0, bits=8)
    c = fr.sample(32, beta=0.4).cost
    assert c["searches"] > 32 and c["rows_matched"] == c["candidates"]


@pytest.mark.parametrize("levels", ["linear", "log"])
def test_incremental_levels_equal_a_fresh_quantisation(levels: str) -> None:
    s = filled_sampler("amper-knn", _td(), k=3, bits=5, levels=levels)
    assert isinstance(s, AMSampler)
    g = torch.Generator().manual_seed(4)
    for step in range(30):
        idx = torch.randint(0, N, (16,), generator=g)
        # Mostly inside the current range (only the touched slots are re-quantised); every
        # fifth step a new extreme that moves the scale (everything is).
        scale = 50.0 if step % 5 == 4 else 1.0
        s.update(idx, torch.rand(16, generator=g, dtype=torch.float64) * scale + 0.1)
        s.sample(8, beta=0.4, generator=g)
        fresh, _ = quantize(s.priorities().pow(0.6), 5, levels)
        assert torch.equal(s.level_of(), fresh), step


def test_requery_rounds_that_clear_every_query(monkeypatch: pytest.MonkeyPatch) -> None:
    """One re-query round allowed, one level of 16 empty: the round often clears every empty
    query, and sampling must go on (it once asked torch.multinomial for 0 samples)."""
    monkeypatch.setattr(am_module, "_MAX_REQUERY_ROUNDS", 1)
    levels = torch.tensor([lv for lv in range(16) if lv != 7]).repeat(10)  # level 7 empty
    td = (levels + 1).double() / 16  # alpha 1, eps 0: entry at level lv exactly
    s = filled_sampler("amper-fr", td, radius=0, bits=4, alpha=1.0, eps=0.0)
    g = torch.Generator().manual_seed(0)
    searches = sum(s.sample(64, beta=0.4, generator=g).cost["searches"] for _ in range(20))
    assert searches > 20 * 64


def test_sampler_weights_use_own_distribution() -> None:
    s = filled_sampler("amper-fr", _td(), radius=1, is_weights="sampler")
    b = s.sample(32, beta=1.0, generator=torch.Generator().manual_seed(1))
    w = 1.0 / (N * s.distribution()[b.indices])
    torch.testing.assert_close(b.weights, (w / w.max()).float())


def test_updates_rebuild_the_levels() -> None:
    s = make_sampler("amper-knn", 64, k=1, bits=4)
    assert isinstance(s, AMSampler)
    s.insert(torch.arange(64))
    s.update(torch.arange(64), torch.linspace(0, 1, 64))
    before = s.level_of()
    s.update(torch.tensor([0]), torch.tensor([100.0]))  # a new maximum rescales every level
    after = s.level_of()
    assert int(after[0]) == 15 and int(after[63]) < int(before[63])
