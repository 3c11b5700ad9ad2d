"""The DQN's replay memory: a ring buffer of transition tensors in front of a replay sampler.

The memory owns the transitions; the sampler (:func:`approxsim.replay.make_sampler`) owns
their priorities and decides which slots a batch takes. Insertions are handed to the sampler
in one call just before they matter (before a draw, a snapshot or a checkpoint): nothing
changes the largest priority between two draws, so this is the same as inserting every
step, at a tenth of the calls.

The memory also remembers where each slot's priority came from (the TD error that set it, or
"the initial 1.0"), so a checkpoint can rebuild the sampler's priorities bit for bit with
nothing but the sampler's public ``insert`` and ``update`` (see :meth:`ReplayMemory.restore`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from approxsim.replay.dqn_config import DQNError

__all__ = ["ReplayMemory"]


class ReplayMemory:
    """A ring buffer of ``(obs, action, reward, next_obs, terminated)`` and its sampler.

    Args:
        capacity: Slots.
        obs_dim: Length of an observation.
        sampler: A sampler from :func:`approxsim.replay.make_sampler` with the same capacity.
    """

    def __init__(self, capacity: int, obs_dim: int, sampler: Any) -> None:
        self.capacity = capacity
        self.sampler = sampler
        self.obs = torch.zeros(capacity, obs_dim, dtype=torch.float32)
        self.next_obs = torch.zeros(capacity, obs_dim, dtype=torch.float32)
        self.actions = torch.zeros(capacity, dtype=torch.int64)
        self.rewards = torch.zeros(capacity, dtype=torch.float32)
        self.dones = torch.zeros(capacity, dtype=torch.float32)
        # NumPy views: one step's write is a few array stores, not torch calls.
        self._np = [
            t.numpy() for t in (self.obs, self.next_obs, self.actions, self.rewards, self.dones)
        ]
        self.pos = 0
        self.size = 0
        self._pending: list[int] = []
        self._src_td = torch.full((capacity,), math.nan, dtype=torch.float64)
        self._max_p = 1.0
        self._max_td = math.nan

    def add(self, obs: Any, action: int, reward: float, next_obs: Any, terminated: bool) -> int:
        """Store one transition in the next slot; returns the slot."""
        slot = self.pos
        o, no, a, r, d = self._np
        o[slot] = obs
        no[slot] = next_obs
        a[slot] = action
        r[slot] = reward
        d[slot] = float(terminated)
        self._pending.append(slot)
        self.pos = (slot + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        return slot

    def flush(self) -> None:
        """Hand the slots written since the last call to the sampler's ``insert``."""
        if not self._pending:
            return
        idx = torch.tensor(self._pending, dtype=torch.int64)
        self._pending.clear()
        self.sampler.insert(idx)
        # A fresh slot takes the largest priority so far: 1.0, or that of the largest update.
        self._src_td[idx] = self._max_td if self._max_p > 1.0 else math.nan

    def update(self, idx: torch.Tensor, td: torch.Tensor) -> None:
        """Set the priorities of ``idx`` from TD errors ``td`` (``p = |td| + eps``)."""
        td64 = td.detach().to(torch.float64)
        self.sampler.update(idx, td64)
        self._src_td[idx] = td64
        p = td64.abs() + self.sampler.eps
        j = int(torch.argmax(p))
        if float(p[j]) > self._max_p:
            self._max_p, self._max_td = float(p[j]), float(td64[j])

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The transitions of slots ``idx``: obs, actions, rewards, next_obs, dones."""
        return (
            self.obs[idx],
            self.actions[idx],
            self.rewards[idx],
            self.next_obs[idx],
            self.dones[idx],
        )

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        """Tensors and numbers that :meth:`restore` rebuilds the memory and sampler from."""
        self.flush()
        return {
            "obs": self.obs.clone(),
            "next_obs": self.next_obs.clone(),
            "actions": self.actions.clone(),
            "rewards": self.rewards.clone(),
            "dones": self.dones.clone(),
            "pos": self.pos,
            "size": self.size,
            "src_td": self._src_td.clone(),
            "max_p": self._max_p,
            "max_td": self._max_td,
            "priorities": self.sampler.priorities().to("cpu"),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Load :meth:`state_dict`'s value into this memory and its fresh sampler.

        The sampler's priorities are rebuilt through its public interface: every filled slot
        is inserted (priority 1.0), the largest update so far is replayed on a slot that an
        update will overwrite (so the sampler's "largest priority seen" is restored), then
        every slot whose priority came from a TD error gets that error again.

        Raises:
            DQNError: the rebuilt priorities differ from the saved ones (a sampler whose
                state is more than its priorities).
        """
        for name in ("obs", "next_obs", "actions", "rewards", "dones"):
            getattr(self, name).copy_(state[name])
        self.pos, self.size = int(state["pos"]), int(state["size"])
        self._src_td.copy_(state["src_td"])
        self._max_p, self._max_td = float(state["max_p"]), float(state["max_td"])
        if self.size == 0:
            return
        self.sampler.insert(torch.arange(self.size, dtype=torch.int64))
        src = self._src_td[: self.size]
        set_idx = torch.nonzero(~torch.isnan(src)).reshape(-1)
        if not math.isnan(self._max_td) and set_idx.numel():
            carrier = set_idx[:1]
            self.sampler.update(carrier, torch.tensor([self._max_td], dtype=torch.float64))
        if set_idx.numel():
            self.sampler.update(set_idx, src[set_idx])
        got = self.sampler.priorities().to("cpu")
        if not torch.equal(got, state["priorities"]):
            raise DQNError(
                "the replay priorities could not be rebuilt exactly from the checkpoint; "
                "start the run over with --overwrite"
            )

    def observation_array(self, obs: Any) -> torch.Tensor:
        """One observation as a float32 ``[1, obs_dim]`` tensor."""
        return torch.from_numpy(np.asarray(obs, dtype=np.float32)).reshape(1, -1)
