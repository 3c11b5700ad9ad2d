"""What every replay sampler shares: the priority store, the error type, the batch record and
importance-sampling weights.

A sampler keeps one priority ``p_i`` per slot of a ring buffer of ``capacity`` slots. Slots
fill ``0..capacity-1`` and then wrap; ``size`` is the number of slots filled so far. A newly
(over)written slot gets the largest priority seen so far (1.0 before any update), as in PER
(Schaul et al., "Prioritized Experience Replay", ICLR 2016); an update sets
``p = |td| + eps``. Subclasses decide how a slot is drawn.

Every sampler here draws **with replacement** (each draw of a batch is independent, or
stratified for the sum tree); a batch larger than the filled buffer is still refused, since a
learner that asks for it has almost surely made a mistake.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from approxsim._runtime import resolve_device
from approxsim.errors import ApproxsimError

__all__ = [
    "SamplerError",
    "SampleBatch",
    "Sampler",
    "IS_WEIGHT_MODES",
    "COST_KEYS",
    "importance_weights",
]

#: How a sampler weights its draws: none (ones), PER's ``(N P_PER(i))^-beta`` with the PER
#: probability ``p^alpha / sum p^alpha``, or the same formula with the sampler's own per-draw
#: probability.
IS_WEIGHT_MODES = ("none", "per", "sampler")

#: The hardware-independent cost counts of a batch (see :class:`SampleBatch`).
COST_KEYS = ("searches", "rows_matched", "candidates", "dependent_reads")


class SamplerError(ApproxsimError, ValueError):
    """A replay sampler was built or used with bad input (the message names the value)."""


@dataclass(frozen=True)
class SampleBatch:
    """One sampled batch.

    Attributes:
        indices: int64 ``[B]`` slots drawn (on the sampler's device).
        weights: float32 ``[B]`` importance-sampling weights normalised by their maximum
            (ones when the sampler's ``is_weights`` is ``"none"``).
        cost: Hardware-independent cost of the batch: ``searches`` (associative searches
            issued, re-queries included), ``rows_matched`` (rows that answered them),
            ``candidates`` (entries placed in candidate buffers), ``dependent_reads``
            (memory reads that depend on the previous read, e.g. a sum-tree descent).
    """

    indices: torch.Tensor
    weights: torch.Tensor
    cost: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COST_KEYS, 0))


def importance_weights(prob: torch.Tensor, size: int, beta: float) -> torch.Tensor:
    """PER's importance-sampling weights ``(N P(i))^-beta / max``.

    Args:
        prob: float64 per-draw probabilities of the drawn slots, ``[B]``.
        size: N, the number of filled slots.
        beta: The exponent (0 = no correction, 1 = full correction).

    Returns:
        float32 ``[B]`` weights, the largest equal to 1.
    """
    w = (prob * size).clamp_min(torch.finfo(torch.float64).tiny).pow(-beta)
    return (w / w.max()).to(torch.float32)


class Sampler:
    """Base class: the priority store of a ring buffer and the checks every sampler shares.

    Args:
        capacity: Number of slots.
        alpha: Priority exponent, ``>= 0`` (P(i) ∝ p_i^alpha for exact PER).
        eps: Added to ``|td|`` so that no slot has priority 0, ``>= 0``.
        device: Where the priorities and the drawn indices live (``"cpu"``, ``"cuda"``).
        is_weights: One of :data:`IS_WEIGHT_MODES`.

    Raises:
        SamplerError: a bad capacity, alpha, eps or weight mode.
    """

    #: The name :func:`approxsim.replay.make_sampler` knows the sampler by.
    name = "base"

    def __init__(
        self,
        capacity: int,
        *,
        alpha: float = 0.6,
        eps: float = 1e-6,
        device: str | torch.device = "cpu",
        is_weights: str = "per",
    ) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise SamplerError(f"capacity must be a positive integer, got {capacity!r}")
        if not alpha >= 0 or alpha == float("inf"):
            raise SamplerError(f"alpha must be a finite number >= 0, got {alpha!r}")
        if not eps >= 0 or eps == float("inf"):
            raise SamplerError(f"eps must be a finite number >= 0, got {eps!r}")
        if is_weights not in IS_WEIGHT_MODES:
            raise SamplerError(
                f"unknown is_weights {is_weights!r}; choose one of {', '.join(IS_WEIGHT_MODES)}"
            )
        self.capacity = capacity
        self.alpha = float(alpha)
        self.eps = float(eps)
        self.is_weights = is_weights
        self.device = resolve_device(device, SamplerError)
        self._p = torch.zeros(capacity, dtype=torch.float64, device=self.device)
        # p^alpha, kept up to date slot by slot so that no draw recomputes it for the buffer.
        self._v = torch.zeros(capacity, dtype=torch.float64, device=self.device)
        self._size = 0
        self._max_p = 1.0

    # ------------------------------------------------------------------ state
    @property
    def size(self) -> int:
        """Slots filled so far (at most ``capacity``)."""
        return self._size

    def priorities(self) -> torch.Tensor:
        """float64 ``[size]``: the current priorities ``p`` (before ``alpha``)."""
        return self._p[: self._size].clone()

    def per_probabilities(self) -> torch.Tensor:
        """float64 ``[size]``: exact PER's per-draw probability ``p^alpha / sum p^alpha``."""
        v = self._v[: self._size]
        total = v.sum()
        if not total > 0:
            return torch.full_like(v, 1.0 / max(self._size, 1))
        return v / total

    def distribution(self) -> torch.Tensor:
        """float64 ``[size]``: the exact per-draw probability of each filled slot."""
        raise NotImplementedError

    # ------------------------------------------------------------------ writes
    def _check_indices(self, indices: torch.Tensor, what: str) -> torch.Tensor:
        if not isinstance(indices, torch.Tensor):
            indices = torch.as_tensor(indices)
        if indices.dtype.is_floating_point or indices.dtype == torch.bool:
            raise SamplerError(f"{what} indices must be integers, got dtype {indices.dtype}")
        idx = indices.reshape(-1).to(device=self.device, dtype=torch.int64)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.capacity):
            raise SamplerError(
                f"{what} indices must lie in 0..{self.capacity - 1}, got "
                f"{int(idx.min())}..{int(idx.max())}"
            )
        return idx

    def insert(self, indices: torch.Tensor) -> None:
        """Give the slots just (over)written the largest priority seen so far.

        Args:
            indices: int64 slots; ``size`` grows to cover the largest.

        Raises:
            SamplerError: a slot outside ``0..capacity-1`` or non-integer indices.
        """
        idx = self._check_indices(indices, "insert")
        if not idx.numel():
            return
        self._size = max(self._size, int(idx.max()) + 1)
        self._p[idx] = self._max_p
        self._v[idx] = torch.tensor(self._max_p, dtype=torch.float64).pow(self.alpha).item()
        self._changed(idx)

    def update(self, indices: torch.Tensor, td_errors: torch.Tensor) -> None:
        """Set ``p = |td| + eps`` for the given slots (a repeated slot keeps its last value).

        Args:
            indices: int64 slots, ``[n]``.
            td_errors: TD errors, ``[n]`` (any float dtype, any device).

        Raises:
            SamplerError: mismatched lengths, a slot not filled yet, or a non-finite error.
        """
        idx = self._check_indices(indices, "update")
        td = torch.as_tensor(td_errors).detach().reshape(-1).to(self.device, torch.float64)
        if td.numel() != idx.numel():
            raise SamplerError(
                f"update got {idx.numel()} indices but {td.numel()} TD errors; pass one each"
            )
        if not idx.numel():
            return
        if int(idx.max()) >= self._size:
            raise SamplerError(
                f"update of slot {int(idx.max())}, which was never inserted (size {self._size})"
            )
        if not bool(torch.isfinite(td).all()):
            raise SamplerError("update got a non-finite TD error (NaN or inf); the run diverged")
        idx, td = _last_wins(idx, td)
        p = td.abs() + self.eps
        self._p[idx] = p
        self._v[idx] = p.pow(self.alpha)
        self._max_p = max(self._max_p, float(p.max()))
        self._changed(idx)

    def _changed(self, idx: torch.Tensor) -> None:
        """Hook: the priorities of ``idx`` changed (subclasses refresh their structures)."""

    # ------------------------------------------------------------------ sampling
    def _check_batch(self, batch_size: int, beta: float) -> None:
        if self._size == 0:
            raise SamplerError("cannot sample an empty replay buffer; insert transitions first")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise SamplerError(f"batch_size must be a positive integer, got {batch_size!r}")
        if batch_size > self._size:
            raise SamplerError(
                f"batch of {batch_size} from a buffer holding {self._size} transitions; "
                "wait until the buffer holds at least a batch"
            )
        if not beta >= 0 or beta == float("inf"):
            raise SamplerError(f"beta must be a finite number >= 0, got {beta!r}")

    def _rand(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        return torch.rand(n, dtype=torch.float64, device=self.device, generator=generator)

    def _randint(
        self, high: torch.Tensor | int, n: int, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Uniform integers in ``[0, high)`` (``high`` may be a per-draw tensor, all >= 1)."""
        u = self._rand(n, generator)
        h = torch.as_tensor(high, device=self.device, dtype=torch.float64)
        out = (u * h).to(torch.int64)
        return torch.minimum(out, (h - 1).to(torch.int64))

    def _weights(self, indices: torch.Tensor, beta: float) -> torch.Tensor:
        """The batch's importance weights under ``self.is_weights``."""
        if self.is_weights == "none" or beta == 0:
            return torch.ones(indices.numel(), dtype=torch.float32, device=self.device)
        if self.is_weights == "per":
            prob = self._per_prob_of(indices)
        else:
            prob = self._sampler_prob_of(indices)
        return importance_weights(prob, self._size, beta)

    def _sampler_prob_of(self, indices: torch.Tensor) -> torch.Tensor:
        """This sampler's own per-draw probability of the given slots."""
        return self.distribution()[indices]

    def _per_prob_of(self, indices: torch.Tensor) -> torch.Tensor:
        """PER probability of the given slots (subclasses with a cached sum override it)."""
        return self.per_probabilities()[indices]

    def sample(
        self, batch_size: int, *, beta: float, generator: torch.Generator | None = None
    ) -> SampleBatch:
        """Draw a batch of slots.

        Args:
            batch_size: B, ``1 <= B <= size``.
            beta: Importance-sampling exponent.
            generator: Optional random generator on the sampler's device (for repeatable
                draws).

        Returns:
            The :class:`SampleBatch`.

        Raises:
            SamplerError: an empty buffer, ``B`` out of range or a bad ``beta``.
        """
        self._check_batch(batch_size, beta)
        indices, cost = self._draw(batch_size, generator)
        return SampleBatch(indices, self._weights(indices, beta), cost)

    def _draw(
        self, batch_size: int, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, dict[str, int]]:
        raise NotImplementedError


def zero_cost() -> dict[str, int]:
    """A cost record with every count 0."""
    return dict.fromkeys(COST_KEYS, 0)


def _last_wins(idx: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep, for every repeated index, only its last value (indexed writes do not promise
    which duplicate wins, on CUDA least of all)."""
    uniq, inverse = torch.unique(idx, return_inverse=True)
    if uniq.numel() == idx.numel():
        return idx, values
    pos = torch.arange(idx.numel(), device=idx.device)
    last = torch.full((uniq.numel(),), -1, dtype=torch.int64, device=idx.device)
    last = last.scatter_reduce(0, inverse, pos, reduce="amax")
    return uniq, values[last]
