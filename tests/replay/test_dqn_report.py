"""Statistics of DQN arms over seeds (approxsim.replay.runs_summary)."""

from __future__ import annotations

import pytest
import torch

from approxsim.replay.dqn_config import DQNError
from approxsim.replay.runs_summary import bootstrap_ci, gradient_steps, iqm


def test_iqm_trims_a_quarter_each_side() -> None:
    assert iqm([100.0, 1.0, 3.0, 2.0, 4.0]) == 3.0  # 5 values: one dropped each side
    assert iqm([float(x) for x in range(8)]) == pytest.approx(3.5)  # 2 each side
    assert iqm([7.0]) == 7.0
    with pytest.raises(DQNError):
        iqm([])


def test_bootstrap_interval() -> None:
    est, lo, hi = bootstrap_ci(torch.full((5, 3), 2.0))
    assert est.tolist() == lo.tolist() == hi.tolist() == [2.0, 2.0, 2.0]
    values = torch.tensor([0.0, 10.0, 20.0, 30.0, 40.0])
    est, lo, hi = bootstrap_ci(values)
    assert float(est) == 20.0 and 0.0 <= float(lo) < 20.0 < float(hi) <= 40.0
    again = bootstrap_ci(values)
    assert float(again[1]) == float(lo)  # seeded: the report repeats
    est, lo, hi = bootstrap_ci(torch.tensor([100.0, 1.0, 3.0, 2.0, 4.0]), "iqm")
    assert float(est) == 3.0 and float(lo) <= 3.0 <= float(hi)
    with pytest.raises(DQNError, match="statistic"):
        bootstrap_ci(values, "median")


@pytest.mark.parametrize(
    ("steps", "start", "every"), [(300, 100, 5), (100_000, 10_000, 10), (50, 60, 10)]
)
def test_gradient_steps_follow_the_dqn_rule(steps: int, start: int, every: int) -> None:
    expected = sum(1 for t in range(steps) if t > start and t % every == 0)
    cfg = {"steps": steps, "learning_starts": start, "train_every": every}
    assert gradient_steps(cfg) == expected
