"""Exact PER samplers: the sum tree, cumsum and multinomial agree in distribution (chi-square
test of stated power), priorities follow PER's rules, weights follow (N P)^-beta, and bad input
gets a clear :class:`SamplerError`."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from approxsim.errors import ApproxsimError
from approxsim.replay import SAMPLER_NAMES, SamplerError, make_sampler
from approxsim.replay.per import SumTreeSampler

N = 64  # bins of the chi-square test
DRAWS = 64_000  # draws per sampler
LEVEL = 1e-3  # false-alarm rate of the test


def _filled(name: str, p: torch.Tensor, **kw: object) -> object:
    s = make_sampler(name, p.numel(), eps=0.0, **kw)  # type: ignore[arg-type]
    idx = torch.arange(p.numel())
    s.insert(idx)
    s.update(idx, p)
    return s


def _priorities() -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    return torch.randn(N, generator=g, dtype=torch.float64).abs() + 0.05


def _counts(s: object, draws: int, batch: int, seed: int) -> torch.Tensor:
    """Slot counts of ``draws`` draws in batches of ``batch``. Batches larger than the buffer
    (refused by ``sample``) go through the draw step itself, to keep the test fast."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.zeros(N, dtype=torch.float64)
    for _ in range(draws // batch):
        indices, _ = s._draw(batch, g)  # type: ignore[attr-defined]
        counts += torch.bincount(indices, minlength=N).to(torch.float64)
    return counts


def _chi2(counts: torch.Tensor, prob: torch.Tensor) -> float:
    expected = counts.sum() * prob
    return float(((counts - expected) ** 2 / expected).sum())


@functools.lru_cache(maxsize=2)
def _normals(df: int) -> torch.Tensor:
    return torch.randn(60_000, df, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def _chi2_quantiles(df: int, noncentrality: float, crit_level: float) -> tuple[float, float]:
    """(critical value at ``crit_level``, power against a noncentral chi-square), both by a
    fixed-seed simulation of the distributions (no scipy needed)."""
    z = _normals(df)
    rest = (z[:, 1:] ** 2).sum(1)
    crit = float(torch.quantile(z[:, 0] ** 2 + rest, 1 - crit_level))
    shifted = (z[:, 0] + math.sqrt(noncentrality)) ** 2 + rest
    return crit, float((shifted > crit).double().mean())


def _alternative(p: torch.Tensor) -> torch.Tensor:
    """The alternative the test must detect: PER with alpha 0.5 instead of 0.6."""
    v = p**0.5
    return v / v.sum()


def test_chi_square_test_has_stated_power() -> None:
    """At 64k draws the test rejects alpha=0.5 draws when alpha=0.6 is claimed with power
    >= 0.99 (noncentral chi-square with lambda = M sum (P1-P0)^2/P0), at level 1e-3."""
    p = _priorities()
    p0 = p**0.6 / (p**0.6).sum()
    lam = DRAWS * float(((_alternative(p) - p0) ** 2 / p0).sum())
    _, power = _chi2_quantiles(N - 1, lam, LEVEL)
    assert power >= 0.99


@pytest.mark.parametrize(
    ("name", "opts", "batch"),
    [
        ("per-sumtree", {"stratified": False}, 4000),
        # Stratified draws are not i.i.d.; their counts vary less, so the test is conservative.
        ("per-sumtree", {}, 500),
        ("per-cumsum", {}, 4000),
        ("per-multinomial", {}, 4000),
    ],
)
def test_exact_samplers_match_per_distribution(name: str, opts: dict, batch: int) -> None:
    p = _priorities()
    s = _filled(name, p, **opts)
    prob = s.distribution()  # type: ignore[attr-defined]
    expected = p**0.6 / (p**0.6).sum()
    torch.testing.assert_close(prob, expected, rtol=1e-12, atol=0)
    crit, _ = _chi2_quantiles(N - 1, 0.0, LEVEL)
    assert _chi2(_counts(s, DRAWS, batch, seed=1), expected) < crit


def test_chi_square_rejects_wrong_exponent() -> None:
    """The same test, fed draws of the alternative, rejects: it can fail."""
    p = _priorities()
    s = _filled("per-multinomial", p, alpha=0.5)
    expected = p**0.6 / (p**0.6).sum()
    crit, _ = _chi2_quantiles(N - 1, 0.0, LEVEL)
    assert _chi2(_counts(s, DRAWS, 4000, seed=2), expected) > crit


def test_sum_tree_totals_stay_exact_after_many_updates() -> None:
    s = make_sampler("per-sumtree", 1000)
    assert isinstance(s, SumTreeSampler)
    s.insert(torch.arange(1000))
    g = torch.Generator().manual_seed(3)
    for _ in range(200):
        idx = torch.randint(0, 1000, (64,), generator=g)
        s.update(idx, torch.randn(64, generator=g, dtype=torch.float64) * 1e3)
    exact = float(s.priorities().pow(0.6).sum())
    assert s.total == pytest.approx(exact, rel=1e-12)


def test_insert_gives_max_priority_and_update_last_wins() -> None:
    s = make_sampler("per-cumsum", 8, eps=0.5)
    s.insert(torch.arange(4))
    assert s.size == 4
    assert s.priorities().tolist() == [1.0] * 4
    s.update(torch.tensor([0, 1, 1]), torch.tensor([-3.0, 2.0, 5.0]))
    assert s.priorities().tolist() == [3.5, 5.5, 1.0, 1.0]
    s.insert(torch.tensor([6]))  # a later slot: size covers it, gets the max seen (5.5)
    assert s.size == 7
    assert float(s.priorities()[6]) == 5.5


def test_is_weights_follow_per_formula() -> None:
    p = _priorities()
    s = _filled("per-sumtree", p)
    b = s.sample(16, beta=0.7, generator=torch.Generator().manual_seed(0))  # type: ignore[attr-defined]
    prob = s.distribution()[b.indices]  # type: ignore[attr-defined]
    w = (N * prob) ** -0.7
    torch.testing.assert_close(b.weights, (w / w.max()).float())
    none = _filled("per-sumtree", p, is_weights="none")
    assert none.sample(16, beta=0.7).weights.eq(1).all()  # type: ignore[attr-defined]


def test_uniform_sampler() -> None:
    s = make_sampler("uniform", 10)
    s.insert(torch.arange(5))
    b = s.sample(5, beta=1.0)
    assert b.indices.max() < 5 and b.weights.eq(1).all()
    torch.testing.assert_close(s.distribution(), torch.full((5,), 0.2, dtype=torch.float64))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: make_sampler("per-tree", 8), "unknown replay sampler"),
        (lambda: make_sampler("per-sumtree", 8, alpha=-1), "alpha"),
        (lambda: make_sampler("per-sumtree", 0), "capacity"),
        (lambda: make_sampler("per-sumtree", 8, bits=6), "unknown option"),
        (lambda: make_sampler("uniform", 8, is_weights="all"), "is_weights"),
        (lambda: make_sampler("per-sumtree", 8).sample(1, beta=0.4), "empty"),
        (lambda: make_sampler("amper-knn", 8, k=0), "k must"),
        (lambda: make_sampler("amper-fr", 8, radius=-1), "radius"),
        (lambda: make_sampler("amper-knn", 8, bits=9), "bits"),
        (lambda: make_sampler("amper-knn", 8, bits=3), "bits"),
        (lambda: make_sampler("amper-knn", 8, radius=2), "unknown option"),
        (lambda: make_sampler("amper-fr", 8, query="gauss"), "query"),
    ],
)
def test_bad_input_is_a_clear_error(call: object, match: str) -> None:
    with pytest.raises(SamplerError, match=match) as info:
        call()  # type: ignore[operator]
    assert isinstance(info.value, ApproxsimError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_batch_larger_than_buffer_and_bad_updates(name: str) -> None:
    s = make_sampler(name, 16)
    s.insert(torch.arange(4))
    with pytest.raises(SamplerError, match="batch of 5"):
        s.sample(5, beta=0.4)
    with pytest.raises(SamplerError, match="never inserted"):
        s.update(torch.tensor([9]), torch.tensor([1.0]))
    with pytest.raises(SamplerError, match="non-finite"):
        s.update(torch.tensor([1]), torch.tensor([float("nan")]))
    with pytest.raises(SamplerError, match="0..15"):
        s.insert(torch.tensor([16]))
    b = s.sample(4, beta=0.4)
    assert b.indices.dtype == torch.int64 and b.weights.dtype == torch.float32
    assert set(b.cost) == {"searches", "rows_matched", "candidates", "dependent_reads"}
