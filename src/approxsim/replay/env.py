"""Gymnasium environments for the DQN experiments: creation with clear errors, and the one
piece of an environment's state a checkpoint needs.

``gymnasium`` is an optional dependency (``pip install approxsim[replay]``), imported only when
an environment is made. Only environments with a flat ``Box`` observation and a ``Discrete``
action space fit the DQN's MLP.

A run is checkpointed only at an episode boundary (after an episode ended, before the next
reset), where an environment's whole future is its random generator: :func:`env_rng_state` and
:func:`set_env_rng_state` save and restore it, so a resumed run resets into the same episodes
as the run that was never stopped.
"""

from __future__ import annotations

from typing import Any

from approxsim.errors import ApproxsimError

__all__ = ["EnvError", "import_gymnasium", "make_env", "env_rng_state", "set_env_rng_state"]


class EnvError(ApproxsimError, ValueError):
    """An environment cannot be made or does not fit the DQN; the message says why."""


def import_gymnasium() -> Any:
    """The ``gymnasium`` module.

    Raises:
        EnvError: gymnasium is not installed (the message names the extra that installs it).
    """
    try:
        import gymnasium
    except ImportError:
        raise EnvError(
            "the DQN experiments need gymnasium, which is not installed; "
            "install it with: pip install approxsim[replay]"
        ) from None
    return gymnasium


def make_env(env_id: str, seed: int) -> Any:
    """Make and seed a gymnasium environment with a flat observation and discrete actions.

    The first ``reset(seed=seed)`` seeds the environment's generator; every later episode
    starts from ``reset()`` without a seed (the generator continues), as in CleanRL.

    Args:
        env_id: A registered id such as ``"CartPole-v1"``.
        seed: Seed of the environment's generator.

    Returns:
        ``(env, observation)``: the environment and its first observation.

    Raises:
        EnvError: gymnasium is missing, the id is unknown, or the spaces do not fit.
    """
    gym = import_gymnasium()
    try:
        env = gym.make(env_id)
    except gym.error.Error as exc:
        known = sorted(k for k in gym.envs.registry if "/" not in k)
        hint = ", ".join(k for k in known if k.split("-")[0] in _CLASSIC) or ", ".join(known[:8])
        raise EnvError(f"unknown environment {env_id!r} ({exc}); try one of: {hint}") from None
    obs_space, act_space = env.observation_space, env.action_space
    if not isinstance(act_space, gym.spaces.Discrete):
        env.close()
        raise EnvError(
            f"environment {env_id!r} has {type(act_space).__name__} actions; "
            "the DQN needs a Discrete action space (CartPole-v1, Acrobot-v1, ...)"
        )
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        env.close()
        raise EnvError(
            f"environment {env_id!r} has observations {obs_space}; "
            "the DQN's MLP needs a flat Box observation"
        )
    obs, _ = env.reset(seed=seed)
    return env, obs


_CLASSIC = ("CartPole", "Acrobot", "MountainCar", "LunarLander")


def env_rng_state(env: Any) -> dict[str, Any]:
    """The state of the environment's random generator (plain values, checkpoint-safe)."""
    return _plain(env.unwrapped.np_random.bit_generator.state)


def set_env_rng_state(env: Any, state: dict[str, Any]) -> None:
    """Restore the environment's random generator from :func:`env_rng_state`'s value."""
    env.unwrapped.np_random.bit_generator.state = _unplain(state)


def _plain(x: Any) -> Any:
    # NumPy's PCG64 state holds Python ints beyond 64 bits; keep them as decimal strings so
    # torch.load(weights_only=True) reads them back.
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, int) and not -(2**63) <= x < 2**63:
        return {"bigint": str(x)}
    return x


def _unplain(x: Any) -> Any:
    if isinstance(x, dict):
        if set(x) == {"bigint"}:
            return int(x["bigint"])
        return {k: _unplain(v) for k, v in x.items()}
    return x
