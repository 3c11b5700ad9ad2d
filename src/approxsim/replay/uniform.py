"""The uniform sampler: every filled slot equally likely (the replay of DQN, Mnih et al. 2015).

It keeps priorities (so a learner can switch samplers and snapshot TD errors) but ignores them
when drawing. Its importance weights are ones under every ``is_weights`` mode: its nominal and
its actual distribution are both uniform, so there is no bias to correct.
"""

from __future__ import annotations

import torch

from approxsim.replay.base import Sampler, zero_cost

__all__ = ["UniformSampler"]


class UniformSampler(Sampler):
    """Uniform draws with replacement (see :class:`~approxsim.replay.base.Sampler` for the
    arguments)."""

    name = "uniform"

    def distribution(self) -> torch.Tensor:
        """float64 ``[size]``: ``1/size`` for every filled slot."""
        return torch.full((self._size,), 1.0 / self._size, dtype=torch.float64, device=self.device)

    def _weights(self, indices: torch.Tensor, beta: float) -> torch.Tensor:
        return torch.ones(indices.numel(), dtype=torch.float32, device=self.device)

    def _draw(
        self, batch_size: int, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, dict[str, int]]:
        return self._randint(self._size, batch_size, generator), zero_cost()
