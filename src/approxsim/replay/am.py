"""An emulation of associative-memory prioritized replay (AMPER).

AMPER (Li, Kazemi, Laguna, Hu, "Associative Memory Based Experience Replay for Deep
Reinforcement Learning", ICCAD 2022, arXiv 2207.07791) stores priorities in TCAM arrays, lets
a uniform random number generator issue queries, builds a *candidate set of priorities* (CSP)
by a nearest-neighbour search (k nearest: AMPER-k; all within a fixed radius: AMPER-fr) and
draws the batch uniformly from the CSP. The paper's exact query rule, encoding, k and radius
are not public beyond that description, so :class:`AMSampler` makes every reading an option:

* **Encoding.** ``v = p^alpha`` is quantised to ``L = 2^bits`` levels (``bits`` 4..8) relative
  to the current largest ``v``. ``levels="linear"``: level ``l = ceil(L v / v_max) - 1``, value
  ``(l + 1/2) v_max / L``; ``levels="log"``: ``L`` equal steps of ``log v`` between the smallest
  and largest ``v``, value at the geometric middle of the step. Every level's value is
  positive, so no non-zero priority lands on a level that can never be drawn. The distance of
  two entries is ``|Δ level|`` (the Hamming distance of their thermometer codes).
* **Query rule** (``query``). ``"uniform"``: the literal reading — the URNG's value is uniform
  over the level range, each of the ``L`` levels with probability ``1/L``. ``"size_biased"``: a
  level is drawn with probability ∝ ``count(l) · value(l)`` from a small per-level counter (a
  descent over ``L`` counters: ``bits`` dependent reads), then searched; with ``k`` no larger
  than a level's population, or radius 0, this is exact PER up to quantisation.
* **Search** (``search``). ``"knn"``: the ``k`` entries nearest to the query level; entries tied
  at the boundary distance are chosen at random (as array sensing resolves ties).
  ``"radius"``: every entry within ``radius`` levels; an empty answer re-queries.
* **CSP** (``csp``). ``"query"``: each draw of the batch issues its own query and picks one
  entry uniformly from its CSP. ``"batch"``: one query per batch; its CSP is shared and the B
  draws are uniform picks (with replacement) from it. The per-draw (marginal) distribution is the
  same under both; ``"batch"`` makes the draws of a batch correlated and issues one search
  instead of B.

The per-draw distribution depends on an entry's level only, so :meth:`AMSampler.distribution`
computes it exactly by enumerating the ``L`` query levels (``O(L^2 + N)``). Sampling is
vectorised over the batch (a loop runs over re-query rounds only, never over samples). The
quantisation is rebuilt from the current priorities when a batch is drawn after an update — an
emulation cost a TCAM, which stores the code on write, does not pay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from approxsim.replay.base import Sampler, SamplerError, zero_cost

__all__ = [
    "AMSampler",
    "QUERY_RULES",
    "SEARCH_MODES",
    "CSP_MODES",
    "LEVEL_SCALES",
    "quantize",
    "quantize_with",
    "level_scale",
    "level_values",
]

QUERY_RULES = ("uniform", "size_biased")
SEARCH_MODES = ("knn", "radius")
CSP_MODES = ("query", "batch")
LEVEL_SCALES = ("linear", "log")
#: Re-query rounds drawn one by one before the remaining empty queries are redrawn from the
#: distribution conditioned on a non-empty answer (the same distribution, fewer rounds).
_MAX_REQUERY_ROUNDS = 64


def level_scale(v: torch.Tensor, levels: str) -> tuple[float, float]:
    """The range the levels span: ``(smallest positive v, largest v)`` (0.0 for an empty or
    all-zero ``v``); linear levels use only the largest."""
    vmax = float(v.max()) if v.numel() else 0.0
    if levels == "linear" or vmax <= 0:
        return 0.0, vmax
    return float(torch.where(v > 0, v, vmax).min()), vmax


def quantize_with(
    v: torch.Tensor, bits: int, levels: str, scale: tuple[float, float]
) -> torch.Tensor:
    """int64 level of each value under a fixed ``scale`` (:func:`level_scale`)."""
    n_levels = 1 << bits
    vmin, vmax = scale
    if vmax <= 0:
        return torch.zeros_like(v, dtype=torch.int64)
    if levels == "linear":
        level = torch.ceil(v * (n_levels / vmax)).to(torch.int64) - 1
        return level.clamp_(0, n_levels - 1)
    if vmax / vmin <= 1.0 + 1e-12:
        return torch.full_like(v, n_levels - 1, dtype=torch.int64)
    rel = torch.log(v.clamp_min(vmin) * (1.0 / vmin)) * (n_levels / math.log(vmax / vmin))
    return torch.floor(rel).to(torch.int64).clamp_(0, n_levels - 1)


def level_values(
    bits: int, levels: str, scale: tuple[float, float], device: torch.device
) -> torch.Tensor:
    """float64 ``[2^bits]``: the positive value each level stands for (its step's middle:
    arithmetic for linear levels, geometric for log levels)."""
    n_levels = 1 << bits
    vmin, vmax = scale
    grid = torch.arange(n_levels, dtype=torch.float64, device=device) + 0.5
    if vmax <= 0:
        return torch.ones_like(grid)
    if levels == "linear":
        return grid * (vmax / n_levels)
    if vmax / vmin <= 1.0 + 1e-12:
        return torch.full_like(grid, vmax)
    return vmin * torch.exp(grid * (math.log(vmax / vmin) / n_levels))


def quantize(v: torch.Tensor, bits: int, levels: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantise non-negative values to ``2^bits`` levels spanning their own range.

    Args:
        v: float64 ``[N]`` values ``p^alpha`` (>= 0).
        bits: Bits per stored priority.
        levels: ``"linear"`` or ``"log"`` (see the module docstring).

    Returns:
        ``(level, value)``: int64 ``[N]`` level of each entry and float64 ``[2^bits]`` the
        positive value each level stands for.
    """
    scale = level_scale(v, levels)
    return quantize_with(v, bits, levels, scale), level_values(bits, levels, scale, v.device)


@dataclass
class _Index:
    """The level index of the current priorities (rebuilt after updates)."""

    level: torch.Tensor  # int64 [N] level of each entry
    order: torch.Tensor  # int64 [N] entries sorted by level
    starts: torch.Tensor  # int64 [L+1] order[starts[l]:starts[l+1]] are the entries at level l
    query_prob: torch.Tensor  # float64 [L] probability of each query level (before re-query)
    row_prob: torch.Tensor  # float64 [L] per-draw probability of one entry at each level
    # knn: boundary distance D, entries strictly inside m, tied at D t, per query level.
    dist: torch.Tensor
    inner: torch.Tensor
    tied: torch.Tensor
    matched: torch.Tensor  # int64 [L] rows matched by a search at each query level
    k_eff: int


class AMSampler(Sampler):
    """Emulated TCAM sampling (AMPER readings; see the module docstring).

    Args:
        capacity: Slots of the ring buffer.
        search: ``"knn"`` (``amper-knn``) or ``"radius"`` (``amper-fr``).
        bits: Bits per stored priority, 4..8 (``2^bits`` levels).
        levels: ``"linear"`` or ``"log"`` level spacing.
        k: Entries a knn search returns (``>= 1``; all entries when fewer are stored).
        radius: Levels a radius search reaches on either side (``>= 0``).
        query: ``"uniform"`` or ``"size_biased"``.
        csp: ``"query"`` (a CSP per draw) or ``"batch"`` (one CSP shared by the batch).
        **kw: ``alpha``, ``eps``, ``device``, ``is_weights`` of
            :class:`~approxsim.replay.base.Sampler`.

    Raises:
        SamplerError: a value out of range or an unknown mode.
    """

    name = "amper"

    def __init__(
        self,
        capacity: int,
        *,
        search: str = "knn",
        bits: int = 6,
        levels: str = "linear",
        k: int = 32,
        radius: int = 1,
        query: str = "uniform",
        csp: str = "query",
        **kw: object,
    ) -> None:
        super().__init__(capacity, **kw)  # type: ignore[arg-type]
        _check_choice("search", search, SEARCH_MODES)
        _check_choice("levels", levels, LEVEL_SCALES)
        _check_choice("query", query, QUERY_RULES)
        _check_choice("csp", csp, CSP_MODES)
        if isinstance(bits, bool) or not isinstance(bits, int) or not 4 <= bits <= 8:
            raise SamplerError(f"bits must be an integer in 4..8, got {bits!r}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise SamplerError(f"k must be a positive integer (k nearest entries), got {k!r}")
        if isinstance(radius, bool) or not isinstance(radius, int) or radius < 0:
            raise SamplerError(f"radius must be an integer >= 0 (levels), got {radius!r}")
        self.search, self.bits, self.levels = search, bits, levels
        self.k, self.radius, self.query, self.csp = k, radius, query, csp
        self.name = "amper-knn" if search == "knn" else "amper-fr"
        self._index: _Index | None = None
        # Levels of the filled slots, the scale they were computed at, and the slots changed
        # since: an update that leaves the scale alone re-quantises only those slots.
        self._level: torch.Tensor | None = None
        self._scale = (0.0, 0.0)
        self._dirty: list[torch.Tensor] = []

    @property
    def n_levels(self) -> int:
        """``2^bits``."""
        return 1 << self.bits

    def _changed(self, idx: torch.Tensor) -> None:
        self._index = None
        self._dirty.append(idx)

    def _levels(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Levels of the filled slots and the level values, re-quantising only the slots
        changed since the last call when the scale and size are unchanged."""
        scale = level_scale(v, self.levels)
        cached = self._level
        if cached is not None and cached.numel() == v.numel() and scale == self._scale:
            if self._dirty:
                idx = torch.cat(self._dirty)
                cached[idx] = quantize_with(v[idx], self.bits, self.levels, scale)
        else:
            cached = quantize_with(v, self.bits, self.levels, scale)
        self._level, self._scale, self._dirty = cached, scale, []
        return cached, level_values(self.bits, self.levels, scale, self.device)

    # ------------------------------------------------------------------ the level index
    def _build(self) -> _Index:
        if self._index is not None:
            return self._index
        n_levels = self.n_levels
        level, value = self._levels(self._v[: self._size])
        # Levels fit in a byte (bits <= 8): a byte key sorts several times faster (radix sort).
        order = torch.sort(level.to(torch.uint8), stable=True).indices
        counts = torch.bincount(level, minlength=n_levels)
        starts = torch.zeros(n_levels + 1, dtype=torch.int64, device=self.device)
        starts[1:] = torch.cumsum(counts, 0)
        if self.query == "uniform":
            query_prob = torch.full((n_levels,), 1.0 / n_levels, dtype=torch.float64)
            query_prob = query_prob.to(self.device)
        else:
            mass = counts.to(torch.float64) * value
            query_prob = mass / mass.sum()
        q = torch.arange(n_levels, device=self.device)
        d = torch.arange(n_levels, device=self.device)
        # within[q, d]: entries at most d levels from query level q.
        hi = (q[:, None] + d[None, :]).clamp_max(n_levels - 1) + 1
        lo = (q[:, None] - d[None, :]).clamp_min(0)
        within = starts[hi] - starts[lo]
        delta = (q[:, None] - q[None, :]).abs()  # [query level, entry level]
        if self.search == "knn":
            self._index = self._knn_index(within, delta, query_prob, (level, order, starts))
        else:
            self._index = self._radius_index(within, delta, query_prob, (level, order, starts))
        return self._index

    def _knn_index(
        self,
        within: torch.Tensor,
        delta: torch.Tensor,
        query_prob: torch.Tensor,
        entries: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    ) -> _Index:
        k_eff = min(self.k, self._size)
        reached = within >= k_eff
        dist = torch.argmax(reached.to(torch.int8), dim=1)  # first d reaching k entries
        rows = torch.arange(self.n_levels, device=self.device)
        at_d = within[rows, dist]
        inner = torch.where(dist > 0, within[rows, (dist - 1).clamp_min(0)], 0)
        tied = at_d - inner
        p_in = torch.full_like(delta, 1.0 / k_eff, dtype=torch.float64)
        p_tie = ((k_eff - inner).to(torch.float64) / (tied.clamp_min(1) * k_eff))[:, None]
        cond = torch.where(delta < dist[:, None], p_in, 0.0)
        cond = torch.where(delta == dist[:, None], p_tie.expand_as(cond), cond)
        row_prob = query_prob @ cond
        return _Index(*entries, query_prob, row_prob, dist, inner, tied, at_d, k_eff)

    def _radius_index(
        self,
        within: torch.Tensor,
        delta: torch.Tensor,
        query_prob: torch.Tensor,
        entries: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    ) -> _Index:
        r = min(self.radius, self.n_levels - 1)
        matched = within[:, r]
        live = matched > 0
        # An empty answer re-queries: the query that counts is conditioned on a non-empty one.
        cond_q = torch.where(live, query_prob, 0.0)
        cond_q = cond_q / cond_q.sum()
        cond = torch.where(delta <= r, 1.0, 0.0) / matched.clamp_min(1).to(torch.float64)[:, None]
        row_prob = cond_q @ cond
        zero = torch.zeros_like(matched)
        return _Index(*entries, query_prob, row_prob, zero, zero, zero, matched, 0)

    def distribution(self) -> torch.Tensor:
        """float64 ``[size]``: the exact per-draw probability of each entry (enumerating the
        query levels; the same for ``csp="query"`` and ``"batch"``)."""
        index = self._build()
        return index.row_prob[index.level]

    def level_of(self) -> torch.Tensor:
        """int64 ``[size]``: the level each entry is stored at."""
        return self._build().level.clone()

    def _sampler_prob_of(self, indices: torch.Tensor) -> torch.Tensor:
        index = self._build()
        return index.row_prob[index.level[indices]]

    # ------------------------------------------------------------------ sampling
    def _queries(
        self, n: int, index: _Index, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, int]:
        """``n`` query levels that get a non-empty answer, and the searches issued."""
        if self.query == "uniform":
            q = self._randint(self.n_levels, n, generator)
        else:
            q = torch.multinomial(index.query_prob, n, replacement=True, generator=generator)
        searches = n
        if self.search == "knn":
            return q, searches
        live = index.matched > 0
        for _ in range(_MAX_REQUERY_ROUNDS):
            empty = ~live[q]
            n_empty = int(empty.sum())
            if n_empty == 0:
                return q, searches
            searches += n_empty
            q[empty] = self._randint(self.n_levels, n_empty, generator)
        empty = ~live[q]
        n_empty = int(empty.sum())
        if n_empty == 0:
            return q, searches
        cond = torch.where(live, index.query_prob, 0.0)
        q[empty] = torch.multinomial(cond, n_empty, replacement=True, generator=generator)
        # Each of them would have taken a geometric number of further queries: count the mean.
        searches += round(n_empty / float(cond.sum()))
        return q, searches

    def _pick_knn(
        self, q: torch.Tensor, index: _Index, generator: torch.Generator | None
    ) -> torch.Tensor:
        """One uniform pick from the knn CSP of each query level ``q`` (positions in
        ``index.order``); the tied entries a CSP takes are a uniform subset, so a pick among
        them is uniform over all tied entries."""
        n_levels, starts = self.n_levels, index.starts
        dist, inner, tied = index.dist[q], index.inner[q], index.tied[q]
        slot = self._randint(index.k_eff, q.numel(), generator)
        lo = (q - dist + 1).clamp_min(0)
        in_pos = starts[lo] + self._randint(inner.clamp_min(1), q.numel(), generator)
        left = q - dist
        right = q + dist
        count = starts[1:] - starts[:-1]
        # With dist 0 both sides are the query level itself: every tie lands on the left.
        n_left = torch.where(left >= 0, count[left.clamp_min(0)], 0)
        r = self._randint(tied.clamp_min(1), q.numel(), generator)
        tie_pos = torch.where(
            r < n_left,
            starts[left.clamp_min(0)] + r,
            starts[right.clamp_max(n_levels - 1)] + (r - n_left),
        )
        return torch.where(slot < inner, in_pos, tie_pos)

    def _knn_csp(self, q: int, index: _Index, generator: torch.Generator | None) -> torch.Tensor:
        """The knn CSP of one query level, as positions in ``index.order``."""
        starts, n_levels = index.starts, self.n_levels
        dist = int(index.dist[q])
        need = index.k_eff - int(index.inner[q])
        parts = []
        if dist > 0:
            lo, hi = max(q - dist + 1, 0), min(q + dist - 1, n_levels - 1)
            parts.append(torch.arange(int(starts[lo]), int(starts[hi + 1]), device=self.device))
        tie_levels = {q - dist, q + dist} & set(range(n_levels))
        tied = torch.cat(
            [
                torch.arange(int(starts[lv]), int(starts[lv + 1]), device=self.device)
                for lv in sorted(tie_levels)
            ]
        )
        perm = torch.randperm(tied.numel(), generator=generator, device=self.device)[:need]
        parts.append(tied[perm])
        return torch.cat(parts)

    def _draw(
        self, batch_size: int, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, dict[str, int]]:
        index = self._build()
        n_queries = batch_size if self.csp == "query" else 1
        q, searches = self._queries(n_queries, index, generator)
        cost = zero_cost()
        cost["searches"] = searches
        cost["rows_matched"] = int(index.matched[q].sum())
        if self.query == "size_biased":
            cost["dependent_reads"] = searches * self.bits
        if self.search == "knn":
            cost["candidates"] = index.k_eff * n_queries
            if self.csp == "query":
                pos = self._pick_knn(q, index, generator)
            else:
                csp = self._knn_csp(int(q[0]), index, generator)
                pos = csp[self._randint(csp.numel(), batch_size, generator)]
        else:
            r = self.radius
            lo = (q - r).clamp_min(0)
            size = index.matched[q]
            cost["candidates"] = int(size.sum())
            if self.csp == "query":
                pos = index.starts[lo] + self._randint(size, batch_size, generator)
            else:
                pos = int(index.starts[lo[0]]) + self._randint(int(size[0]), batch_size, generator)
        return index.order[pos], cost


def _check_choice(what: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise SamplerError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")
