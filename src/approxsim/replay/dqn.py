"""A compact DQN (CleanRL's ``dqn.py`` for CartPole) whose replay memory is drawn by any
sampler of :mod:`approxsim.replay`, and whose Q-network may run on an approximate multiplier.

One run is :func:`train_dqn`: ``cfg.steps`` environment steps, epsilon-greedy, a gradient
step on a batch every ``train_every`` steps after ``learning_starts``, the target network
copied every ``target_every`` steps (Mnih et al., "Human-level control through deep
reinforcement learning", Nature 2015; settings of Huang et al., CleanRL, JMLR 2022). With a
prioritized sampler the squared TD errors are weighted by the batch's importance-sampling
weights and the drawn slots get ``p = |td| + eps`` (Schaul et al., ICLR 2016); beta rises
linearly from ``beta_start`` to ``beta_end`` over the run.

Determinism: one seed fixes the network's initialization (under a forked global generator),
the environment's generator and one ``torch.Generator`` that drives exploration and every
replay draw. With the same ``threads`` two runs give the same records bit for bit, and a
run resumed from its checkpoint gives what the uninterrupted run gives: checkpoints are taken
at episode ends (the first after every ``checkpoint_every`` steps), where the environment's
state is its generator alone.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from approxsim._runtime import ProgressFactory, environment, thread_settings
from approxsim.replay.dqn_config import DQNConfig, DQNError
from approxsim.replay.dqn_memory import ReplayMemory
from approxsim.replay.env import env_rng_state, make_env, set_env_rng_state
from approxsim.replay.runs import (
    RECENT_EPISODES,
    append_dqn_metrics,
    load_dqn_checkpoint,
    prepare_dqn_folder,
    save_dqn_checkpoint,
    save_priorities,
    write_dqn_config,
    write_dqn_metrics,
    write_summary,
)

__all__ = ["DQNConfig", "DQNError", "build_q_network", "linear_schedule", "train_dqn"]

#: Settings that may differ between a run and its resumption (they change no result).
_RESUME_FREE = ("checkpoint_every", "priorities_every")


def linear_schedule(start: float, end: float, duration: float, t: int) -> float:
    """CleanRL's schedule: from ``start`` at ``t = 0`` linearly to ``end`` at ``duration``,
    then ``end``."""
    if duration <= 0:
        return end
    value = start + (end - start) * t / duration
    return max(value, end) if end <= start else min(value, end)


def build_q_network(cfg: DQNConfig, obs_dim: int, n_actions: int) -> nn.Module:
    """The MLP ``obs_dim - hidden... - n_actions`` (ReLU), initialized from ``cfg.seed`` and
    converted to ``cfg.multiplier`` unless it is ``fp32``.

    Raises:
        ApproxsimError: an unknown multiplier name (from :func:`approxsim.convert_model`).
    """
    widths = (obs_dim, *cfg.hidden)
    layers: list[nn.Module] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], n_actions))
    net: nn.Module = nn.Sequential(*layers)
    if cfg.multiplier != "fp32":
        from approxsim.convert import convert_model

        net = convert_model(net, cfg.multiplier)
    return net


def _make_sampler(cfg: DQNConfig) -> Any:
    from approxsim.replay import make_sampler

    return make_sampler(
        cfg.replay,
        cfg.buffer_size,
        alpha=cfg.alpha,
        is_weights=cfg.is_weights,
        **cfg.sampler_options(),
    )


@dataclass
class _Window:
    """What one metrics record summarizes, gathered since the last record."""

    losses: list[float] = field(default_factory=list)
    q_means: list[float] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)
    cost: dict[str, int] = field(default_factory=dict)

    def add_cost(self, cost: dict[str, int]) -> None:
        for k, v in cost.items():
            self.cost[k] = self.cost.get(k, 0) + int(v)


@dataclass
class _State:
    """Everything a run carries from step to step (and saves in its checkpoint)."""

    q: nn.Module
    target: nn.Module
    optimizer: torch.optim.Optimizer
    memory: ReplayMemory
    generator: torch.Generator
    env: Any
    obs: Any
    step: int = 0
    ep_return: float = 0.0
    episodes: list[float] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    window: _Window = field(default_factory=_Window)
    elapsed: float = 0.0
    n_actions: int = 2


def _new_state(cfg: DQNConfig) -> _State:
    env, obs = make_env(cfg.env, cfg.seed)
    obs_dim, n_actions = int(env.observation_space.shape[0]), int(env.action_space.n)
    q = build_q_network(cfg, obs_dim, n_actions)
    target = copy.deepcopy(q)
    optimizer = torch.optim.Adam(q.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    memory = ReplayMemory(cfg.buffer_size, obs_dim, _make_sampler(cfg))
    return _State(q, target, optimizer, memory, gen, env, obs, n_actions=n_actions)


def _checkpoint(st: _State, cfg: DQNConfig, complete: bool) -> dict[str, Any]:
    w = st.window
    return {
        "config": cfg.to_dict(),
        "step": st.step,
        "complete": complete,
        "q": st.q.state_dict(),
        "target": st.target.state_dict(),
        "optimizer": st.optimizer.state_dict(),
        "memory": st.memory.state_dict(),
        "generator": st.generator.get_state(),
        "env_rng": env_rng_state(st.env),
        "episodes": list(st.episodes),
        "history": list(st.history),
        "window": {"losses": w.losses, "q_means": w.q_means, "returns": w.returns, "cost": w.cost},
        "elapsed": st.elapsed,
    }


def _restore(st: _State, state: dict[str, Any], cfg: DQNConfig, out: Path) -> None:
    saved = dict(state["config"])
    now = cfg.to_dict()
    diff = sorted(
        k for k in set(saved) | set(now) if k not in _RESUME_FREE and saved.get(k) != now.get(k)
    )
    if diff:
        raise DQNError(
            f"cannot resume the run in {out}: its settings differ in {', '.join(diff)}; "
            "pass the same settings, or --overwrite to start over"
        )
    st.q.load_state_dict(state["q"])
    st.target.load_state_dict(state["target"])
    st.optimizer.load_state_dict(state["optimizer"])
    st.memory.restore(state["memory"])
    st.generator.set_state(state["generator"])
    set_env_rng_state(st.env, state["env_rng"])
    st.obs, _ = st.env.reset()
    st.step = int(state["step"])
    st.episodes = [float(x) for x in state["episodes"]]
    st.history = list(state["history"])
    w = state["window"]
    st.window = _Window(list(w["losses"]), list(w["q_means"]), list(w["returns"]), dict(w["cost"]))
    st.elapsed = float(state["elapsed"])


def _act(st: _State, epsilon: float) -> int:
    g = st.generator
    if float(torch.rand((), generator=g)) < epsilon:
        return int(torch.randint(st.n_actions, (), generator=g))
    with torch.no_grad():
        return int(st.q(st.memory.observation_array(st.obs)).argmax(dim=1))


def _train_step(st: _State, cfg: DQNConfig, beta: float) -> None:
    st.memory.flush()
    batch = st.memory.sampler.sample(cfg.batch_size, beta=beta, generator=st.generator)
    idx = batch.indices.to("cpu")
    obs, actions, rewards, next_obs, dones = st.memory.batch(idx)
    with torch.no_grad():
        target_max = st.target(next_obs).max(dim=1).values
        y = rewards + cfg.gamma * target_max * (1.0 - dones)
    q_taken = st.q(obs).gather(1, actions[:, None]).squeeze(1)
    td = y - q_taken
    loss = (batch.weights.to(td.device) * td.pow(2)).mean()
    if not torch.isfinite(loss):
        raise DQNError(f"the TD loss became {float(loss)} at step {st.step}; the run diverged")
    st.optimizer.zero_grad()
    loss.backward()
    st.optimizer.step()
    st.memory.update(idx, td.detach())
    st.window.losses.append(float(loss.detach()))
    st.window.q_means.append(float(q_taken.detach().mean()))
    st.window.add_cost(batch.cost)


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _record(st: _State, cfg: DQNConfig, epsilon: float, beta: float) -> dict[str, Any]:
    w = st.window
    recent = st.episodes[-RECENT_EPISODES:]
    rec = {
        "step": st.step,
        "episodes": len(st.episodes),
        "return_mean": _mean(w.returns),
        "return_recent": _mean(recent),
        "returns": list(w.returns),
        "loss": _mean(w.losses),
        "q_mean": _mean(w.q_means),
        "epsilon": epsilon,
        "beta": beta,
        "cost": dict(w.cost),
        "time_s": round(st.elapsed, 3),
    }
    st.window = _Window()
    return rec


def _run_steps(st: _State, cfg: DQNConfig, out: Path, progress: Any) -> None:
    """The step loop from ``st.step`` to ``cfg.steps``, with records, snapshots and
    checkpoints."""
    explore = cfg.explore_fraction * cfg.steps
    next_ckpt = (st.step // cfg.checkpoint_every + 1) * cfg.checkpoint_every
    start = time.perf_counter() - st.elapsed
    while st.step < cfg.steps:
        epsilon = linear_schedule(cfg.eps_start, cfg.eps_end, explore, st.step)
        beta = linear_schedule(cfg.beta_start, cfg.beta_end, cfg.steps, st.step)
        action = _act(st, epsilon)
        next_obs, reward, terminated, truncated, _ = st.env.step(action)
        st.memory.add(st.obs, action, float(reward), next_obs, bool(terminated))
        st.ep_return += float(reward)
        st.obs = next_obs
        if st.step > cfg.learning_starts:
            if st.step % cfg.train_every == 0:
                _train_step(st, cfg, beta)
            if st.step % cfg.target_every == 0:
                st.target.load_state_dict(st.q.state_dict())
        st.step += 1
        st.elapsed = time.perf_counter() - start
        if terminated or truncated:
            st.episodes.append(st.ep_return)
            st.window.returns.append(st.ep_return)
            st.ep_return = 0.0
        if st.step % cfg.log_every == 0 or st.step == cfg.steps:
            rec = _record(st, cfg, epsilon, beta)
            st.history.append(rec)
            append_dqn_metrics(out, rec)
            progress.update(rec["step"] - (st.history[-2]["step"] if len(st.history) > 1 else 0))
        if st.step % cfg.priorities_every == 0:
            st.memory.flush()
            save_priorities(out, st.step, st.memory.sampler.priorities())
        if terminated or truncated:
            if st.step >= next_ckpt and st.step < cfg.steps:
                save_dqn_checkpoint(out, _checkpoint(st, cfg, complete=False))
                next_ckpt = (st.step // cfg.checkpoint_every + 1) * cfg.checkpoint_every
            st.obs, _ = st.env.reset()


class _Silent:
    def update(self, n: int, loss: float | None = None, acc: float | None = None) -> None:
        pass

    def close(self) -> None:
        pass


def train_dqn(
    cfg: DQNConfig,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: ProgressFactory | None = None,
) -> dict[str, Any]:
    """Run one DQN training into the run folder ``out`` (see :mod:`approxsim.replay.runs`).

    Args:
        cfg: The settings.
        out: The run folder (created).
        resume: Continue from ``out/checkpoint.pt`` if there is one (a complete run is
            not run again; its summary is returned).
        overwrite: Delete the old run's files in ``out`` and start over.
        progress: Progress factory, called once with ``(description, cfg.steps)``.

    Returns:
        The run's summary (``summary.json``).

    Raises:
        DQNError: bad settings, a folder that may not be used, a checkpoint of other
            settings, or a diverged run.
        EnvError: gymnasium missing, an unknown environment.
        SamplerError: a bad sampler name or option.
    """
    out = Path(out)
    with thread_settings(cfg.threads):
        st = _new_state(cfg)  # before touching the folder: bad settings cost nothing
        resuming = prepare_dqn_folder(out, resume=resume, overwrite=overwrite)
        if resuming:
            state = load_dqn_checkpoint(out)
            _restore(st, state, cfg, out)
            write_dqn_metrics(out, st.history)
        else:
            extra = {
                "env": {
                    "id": cfg.env,
                    "obs_dim": int(st.env.observation_space.shape[0]),
                    "n_actions": st.n_actions,
                },
                "environment": environment(torch.device("cpu")),
            }
            write_dqn_config(out, cfg, extra)
        bar = progress(f"dqn {cfg.replay} seed {cfg.seed}", cfg.steps) if progress else _Silent()
        bar.update(st.step)
        try:
            _run_steps(st, cfg, out, bar)
        finally:
            bar.close()
            st.env.close()
        if not (resuming and state.get("complete")):
            save_dqn_checkpoint(out, _checkpoint(st, cfg, complete=True))
        return write_summary(out, cfg, st.history, st.episodes)
