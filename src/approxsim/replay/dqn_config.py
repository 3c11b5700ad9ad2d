"""The settings of one DQN run (:class:`DQNConfig`), validated when built.

Defaults are CleanRL's ``dqn.py`` for CartPole (Huang et al., "CleanRL: High-quality
Single-file Implementations of Deep Reinforcement Learning Algorithms", JMLR 2022):
an MLP 4-120-84-2, Adam at 2.5e-4, gamma 0.99, a buffer of 10,000 transitions, a batch of
128 every 10 steps once 10,000 steps have passed, the target network copied every 500
steps, epsilon from 1 to 0.05 over half the run, and a squared TD loss. Prioritized replay
adds PER's alpha 0.6 and beta annealed 0.4 → 1 over the run (Schaul et al., "Prioritized
Experience Replay", ICLR 2016).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from approxsim.errors import ApproxsimError

__all__ = ["DQNError", "DQNConfig", "AM_OPTIONS", "IS_WEIGHTS"]

#: Options only the associative-memory samplers (``amper-*``) take.
AM_OPTIONS = ("query", "bits", "levels", "k", "radius", "csp")
#: Importance-sampling weight modes (see :mod:`approxsim.replay`).
IS_WEIGHTS = ("none", "per", "sampler")


class DQNError(ApproxsimError, ValueError):
    """A DQN run was asked for with bad settings, or its run folder cannot be used."""


@dataclass(frozen=True)
class DQNConfig:
    """Everything that decides what a DQN run computes (plus how it reports).

    Raises:
        DQNError: a setting out of range (the message names it).
    """

    env: str = "CartPole-v1"
    """Gymnasium environment id (flat observations, discrete actions)."""
    replay: str = "uniform"
    """Replay sampler, a name of :data:`approxsim.replay.SAMPLER_NAMES`."""
    seed: int = 0
    """Seed of the network's initialization, the environment and every random draw."""
    steps: int = 100_000
    """Environment steps of the run."""
    buffer_size: int = 10_000
    """Replay memory capacity (transitions; a ring buffer)."""
    batch_size: int = 128
    """Transitions per gradient step."""
    lr: float = 2.5e-4
    """Adam learning rate."""
    gamma: float = 0.99
    """Discount factor."""
    train_every: int = 10
    """Steps between gradient steps."""
    target_every: int = 500
    """Steps between copies of the Q-network into the target network."""
    learning_starts: int = 10_000
    """Steps of pure collection before the first gradient step."""
    eps_start: float = 1.0
    """Exploration epsilon at step 0."""
    eps_end: float = 0.05
    """Exploration epsilon after the decay."""
    explore_fraction: float = 0.5
    """Fraction of the run over which epsilon falls linearly."""
    alpha: float = 0.6
    """Priority exponent of prioritized samplers."""
    beta_start: float = 0.4
    """Importance-sampling exponent at step 0 (annealed linearly to ``beta_end``)."""
    beta_end: float = 1.0
    """Importance-sampling exponent at the last step."""
    is_weights: str = "per"
    """Importance-sampling weights: ``none``, ``per`` (PER's formula) or ``sampler`` (the
    sampler's own per-draw probability)."""
    query: str | None = None
    """AM samplers: query rule (``uniform`` or ``size_biased``); ``None``: the sampler's."""
    bits: int | None = None
    """AM samplers: bits per stored priority level; ``None``: the sampler's default."""
    levels: str | None = None
    """AM samplers: ``linear`` or ``log`` levels; ``None``: the sampler's default."""
    k: int | None = None
    """AMPER-k: neighbours per search; ``None``: the sampler's default."""
    radius: int | None = None
    """AMPER-fr: search radius in levels; ``None``: the sampler's default."""
    csp: str | None = None
    """AM samplers: candidate set per ``query`` or per ``batch``; ``None``: the default."""
    multiplier: str = "fp32"
    """Multiplier of the Q-network's linear layers (``fp32``: exact, not converted)."""
    hidden: tuple[int, ...] = (120, 84)
    """Hidden layer widths of the MLP."""
    log_every: int = 1_000
    """Steps per metrics record."""
    checkpoint_every: int = 10_000
    """Steps between checkpoints (taken at the first episode end after each mark)."""
    priorities_every: int = 10_000
    """Steps between snapshots of the replay priorities (``priorities/step<N>.pt``)."""
    threads: int | None = 1
    """CPU threads (``None``: torch's default); results are repeatable for a fixed value."""

    def __post_init__(self) -> None:
        for name in (
            "steps",
            "buffer_size",
            "batch_size",
            "train_every",
            "target_every",
            "log_every",
            "checkpoint_every",
            "priorities_every",
        ):
            _positive_int(name, getattr(self, name))
        if not isinstance(self.seed, int) or self.seed < 0:
            raise DQNError(f"seed must be an integer >= 0, got {self.seed!r}")
        if not isinstance(self.learning_starts, int) or self.learning_starts < 0:
            raise DQNError(f"learning_starts must be an integer >= 0, got {self.learning_starts}")
        if self.batch_size > self.buffer_size:
            raise DQNError(
                f"batch_size {self.batch_size} is larger than buffer_size {self.buffer_size}; "
                "a batch must fit in the replay memory"
            )
        if self.batch_size > self.learning_starts + 1:
            raise DQNError(
                f"batch_size {self.batch_size} is larger than the buffer holds when learning "
                f"starts (learning_starts {self.learning_starts}); raise learning_starts"
            )
        for name in ("lr", "gamma", "eps_start", "eps_end", "explore_fraction"):
            _in_range(name, getattr(self, name), 0.0, 1.0 if name != "lr" else 1e3)
        for name in ("beta_start", "beta_end", "alpha"):
            _in_range(name, getattr(self, name), 0.0, 1e3)
        if self.is_weights not in IS_WEIGHTS:
            raise DQNError(
                f"is_weights must be one of {', '.join(IS_WEIGHTS)}, got {self.is_weights!r}"
            )
        if not self.hidden or any(not isinstance(h, int) or h < 1 for h in self.hidden):
            raise DQNError(f"hidden must be positive layer widths, got {self.hidden!r}")
        if self.threads is not None:
            _positive_int("threads", self.threads)
        if not self.replay.startswith("amper"):
            given = [n for n in AM_OPTIONS if getattr(self, n) is not None]
            if given:
                raise DQNError(
                    f"{', '.join(given)} apply to the associative-memory samplers "
                    f"(amper-knn, amper-fr) only, not to replay {self.replay!r}"
                )

    def sampler_options(self) -> dict[str, Any]:
        """The AM options that were set (passed to ``make_sampler`` as keywords)."""
        return {n: getattr(self, n) for n in AM_OPTIONS if getattr(self, n) is not None}

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict."""
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DQNConfig:
        """The inverse of :meth:`to_dict` (unknown keys are an error).

        Raises:
            DQNError: an unknown key or a bad value.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise DQNError(f"unknown DQN settings: {', '.join(unknown)}")
        d = dict(d)
        if "hidden" in d:
            d["hidden"] = tuple(d["hidden"])
        return cls(**d)


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DQNError(f"{name} must be a positive integer, got {value!r}")


def _in_range(name: str, value: Any, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise DQNError(f"{name} must be a number in [{lo:g}, {hi:g}], got {value!r}")
