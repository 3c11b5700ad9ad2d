"""Exact prioritized experience replay: three samplers of ``P(i) = p_i^alpha / sum_j p_j^alpha``.

* :class:`SumTreeSampler` — the sum tree of PER (Schaul et al., ICLR 2016): leaves hold
  ``p^alpha``, each node the sum of its children, in float64. A batch descends all its draws
  together, one gather per level; draws are stratified, ``u_j = (j + U_j) S / B``, as in PER.
  Updates rewrite the leaves and recompute every parent on their paths from its two children
  (never by adding a delta), so the sums cannot drift the way float32 trees updated by deltas
  do.
* :class:`CumsumSampler` — a cumulative sum and ``torch.searchsorted`` (i.i.d. draws).
* :class:`MultinomialSampler` — ``torch.multinomial`` with replacement (i.i.d. draws).

All three have the same per-draw distribution (``tests/replay/test_samplers.py`` checks it with a
chi-square test of stated power). They draw with replacement.
"""

from __future__ import annotations

import math

import torch

from approxsim.replay.base import Sampler, zero_cost

__all__ = ["SumTreeSampler", "CumsumSampler", "MultinomialSampler"]


class _ExactSampler(Sampler):
    """Shared by the exact samplers: the distribution is PER's."""

    def distribution(self) -> torch.Tensor:
        """float64 ``[size]``: ``p^alpha / sum p^alpha`` (exact)."""
        return self.per_probabilities()

    def _sampler_prob_of(self, indices: torch.Tensor) -> torch.Tensor:
        # PER's weights and the sampler's own are the same thing here.
        return self._per_prob_of(indices)

    def _search_reads(self, batch_size: int) -> int:
        """Dependent reads of a binary search over the filled slots, for the whole batch."""
        return batch_size * max(1, math.ceil(math.log2(max(self._size, 2))))


class SumTreeSampler(_ExactSampler):
    """PER's sum tree with batched descent (arguments of
    :class:`~approxsim.replay.base.Sampler`, plus ``stratified``).

    Args:
        stratified: Draw ``u_j`` from the j-th of B equal slices of the total (PER's rule);
            ``False``: i.i.d. uniform ``u_j``. Stratified draws are not independent, but a
            draw at a uniformly chosen position of the batch has exactly PER's distribution,
            which :meth:`distribution` returns.
    """

    name = "per-sumtree"

    def __init__(self, capacity: int, *, stratified: bool = True, **kw: object) -> None:
        super().__init__(capacity, **kw)  # type: ignore[arg-type]
        self.stratified = bool(stratified)
        self._depth = max(1, math.ceil(math.log2(capacity)))
        self._leaves = 1 << self._depth
        # Node n has children 2n and 2n+1; the root is node 1; leaves are _leaves.._2*leaves-1.
        self._tree = torch.zeros(2 * self._leaves, dtype=torch.float64, device=self.device)

    @property
    def total(self) -> float:
        """The root: ``sum p^alpha`` over the filled slots."""
        return float(self._tree[1])

    def _changed(self, idx: torch.Tensor) -> None:
        node = idx + self._leaves
        self._tree[node] = self._v[idx]
        for _ in range(self._depth):
            node = torch.unique(node // 2)
            self._tree[node] = self._tree[2 * node] + self._tree[2 * node + 1]

    def _per_prob_of(self, indices: torch.Tensor) -> torch.Tensor:
        return self._tree[indices + self._leaves] / self._tree[1]

    def _draw(
        self, batch_size: int, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, dict[str, int]]:
        total = self._tree[1]
        u = self._rand(batch_size, generator)
        if self.stratified:
            j = torch.arange(batch_size, dtype=torch.float64, device=self.device)
            u = (j + u) / batch_size
        u = u * total
        node = torch.ones(batch_size, dtype=torch.int64, device=self.device)
        for _ in range(self._depth):
            left = self._tree[2 * node]
            right = self._tree[2 * node + 1]
            # Rounding can leave u a hair above a subtree's sum: never step into an empty one.
            go_right = ((u >= left) & (right > 0)) | (left <= 0)
            u = torch.where(go_right, u - left, u)
            node = 2 * node + go_right.to(torch.int64)
        cost = zero_cost()
        cost["dependent_reads"] = batch_size * self._depth
        return node - self._leaves, cost


class CumsumSampler(_ExactSampler):
    """Cumulative sum + ``torch.searchsorted`` (arguments of
    :class:`~approxsim.replay.base.Sampler`)."""

    name = "per-cumsum"

    def _draw(
        self, batch_size: int, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, dict[str, int]]:
        cdf = torch.cumsum(self._v[: self._size], 0)
        u = self._rand(batch_size, generator) * cdf[-1]
        idx = torch.searchsorted(cdf, u, right=True).clamp_max(self._size - 1)
        cost = zero_cost()
        cost["dependent_reads"] = self._search_reads(batch_size)
        return idx, cost


class MultinomialSampler(_ExactSampler):
    """``torch.multinomial`` with replacement (arguments of
    :class:`~approxsim.replay.base.Sampler`)."""

    name = "per-multinomial"

    def _draw(
        self, batch_size: int, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, dict[str, int]]:
        probs = self.per_probabilities()
        idx = torch.multinomial(probs, batch_size, replacement=True, generator=generator)
        cost = zero_cost()
        cost["dependent_reads"] = self._search_reads(batch_size)
        return idx, cost
