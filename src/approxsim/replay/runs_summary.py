"""Summaries of DQN replay arms over seeds: mean return vs steps with bootstrap confidence
intervals, the final return's interquartile mean, the area under the curve, steps to solve.

An *arm* is a folder of seed runs (``ARM/seed<N>/``, as ``approxsim replay dqn --seeds``
writes). Only complete runs enter the statistics; the summary says how many there are.

Statistics follow Agarwal et al., "Deep Reinforcement Learning at the Edge of the
Statistical Precipice" (NeurIPS 2021): the interquartile mean (the mean of the middle half,
25% trimmed each side) of the final returns, and percentile-bootstrap 95% confidence
intervals resampling seeds. With 5 seeds these intervals are wide and optimistic
(a bootstrap over 5 values cannot see beyond them); the report says so.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from approxsim.replay.dqn_config import DQNError
from approxsim.replay.runs import SOLVED_RETURN, DQNRun, is_dqn_run, read_dqn_run

__all__ = [
    "REPORT_SCHEMA",
    "iqm",
    "bootstrap_ci",
    "load_arm",
    "gradient_steps",
    "summarize_arm",
    "summarize_arms",
    "format_report",
]

REPORT_SCHEMA = "approxsim.replay.report/1"
#: Settings that do not make two arms differ (the seed varies within an arm).
_NOT_ARM_SETTINGS = ("seed", "checkpoint_every", "priorities_every")


def iqm(values: Sequence[float]) -> float:
    """Interquartile mean: the mean after dropping ``floor(n/4)`` values at each end
    (``scipy.stats.trim_mean(x, 0.25)``).

    Raises:
        DQNError: no values.
    """
    if not values:
        raise DQNError("the interquartile mean of no values is undefined")
    xs = sorted(values)
    cut = len(xs) // 4
    mid = xs[cut : len(xs) - cut]
    return sum(mid) / len(mid)


def bootstrap_ci(
    values: torch.Tensor,
    stat: str = "mean",
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A statistic over seeds and its percentile-bootstrap confidence interval.

    Args:
        values: ``[seeds]`` or ``[seeds, points]`` (one interval per point).
        stat: ``"mean"`` or ``"iqm"``.
        n_boot: Bootstrap resamples of the seeds.
        level: Coverage of the interval.
        seed: Seed of the resampling (the report is repeatable).

    Returns:
        ``(estimate, low, high)``, each of shape ``values.shape[1:]``.

    Raises:
        DQNError: no seeds, or an unknown ``stat``.
    """
    v = values.to(torch.float64)
    n = v.shape[0]
    if n == 0:
        raise DQNError("a bootstrap needs at least one seed")
    if stat not in ("mean", "iqm"):
        raise DQNError(f"unknown statistic {stat!r}; use mean or iqm")
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randint(n, (n_boot, n), generator=gen)
    samples = v[pick]  # [n_boot, n, ...]
    fn = _stat_fn(stat)
    boot = fn(samples, 1)
    lo = torch.quantile(boot, (1 - level) / 2, dim=0)
    hi = torch.quantile(boot, 1 - (1 - level) / 2, dim=0)
    return fn(v, 0), lo, hi


def _stat_fn(stat: str) -> Any:
    def mean(x: torch.Tensor, dim: int) -> torch.Tensor:
        return x.mean(dim=dim)

    def trimmed(x: torch.Tensor, dim: int) -> torch.Tensor:
        n = x.shape[dim]
        cut = n // 4
        s = x.sort(dim=dim).values.narrow(dim, cut, n - 2 * cut)
        return s.mean(dim=dim)

    return mean if stat == "mean" else trimmed


def load_arm(arm_dir: str | os.PathLike[str]) -> list[DQNRun]:
    """The seed runs of an arm folder (its ``seed*`` sub-folders, or the folder itself when
    it is one run).

    Raises:
        DQNError: the folder holds no DQN run.
    """
    p = Path(arm_dir)
    if is_dqn_run(p):
        return [read_dqn_run(p)]
    subs = sorted(d for d in p.glob("seed*") if is_dqn_run(d)) if p.is_dir() else []
    if not subs:
        raise DQNError(f"{p} holds no DQN runs (seed<N>/ folders of approxsim replay dqn)")
    return [read_dqn_run(d) for d in subs]


def gradient_steps(config: dict[str, Any]) -> int:
    """Gradient steps of a complete run: steps ``t`` with ``learning_starts < t < steps`` and
    ``t % train_every == 0`` (the DQN's rule)."""
    every, start, steps = config["train_every"], config["learning_starts"], config["steps"]
    first = (start // every + 1) * every
    return max(0, (steps - 1 - first) // every + 1) if first < steps else 0


def _arm_settings(run: DQNRun) -> dict[str, Any]:
    return {k: v for k, v in run.config.items() if k not in _NOT_ARM_SETTINGS}


def summarize_arm(runs: Sequence[DQNRun], label: str) -> dict[str, Any]:
    """One arm's statistics over its complete seed runs.

    Returns:
        ``label``, ``settings`` (shared by the seeds), ``seeds``, ``seeds_complete``,
        ``steps`` (the record grid), ``curve_mean`` / ``curve_low`` / ``curve_high`` (mean
        ``return_recent`` per record step and its 95% bootstrap interval), ``final`` (per
        seed), ``final_iqm`` with ``final_iqm_ci``, ``final_mean``, ``auc`` (per seed),
        ``auc_mean`` with ``auc_ci``, ``steps_to_solve`` (per seed, ``None`` = not reached),
        ``solved`` (seeds that reached it), ``cost_per_batch`` (mean counts per gradient
        step).

    Raises:
        DQNError: the runs' settings differ in more than the seed.
    """
    first = _arm_settings(runs[0])
    for r in runs[1:]:
        if _arm_settings(r) != first:
            diff = sorted(k for k in first if _arm_settings(r).get(k) != first[k])
            raise DQNError(
                f"{r.path} differs from {runs[0].path} in {', '.join(diff)}; "
                "an arm's runs may differ only in their seed"
            )
    done = [r for r in runs if r.complete and r.summary is not None]
    row: dict[str, Any] = {
        "label": label,
        "settings": first,
        "seeds": [r.config["seed"] for r in runs],
        "seeds_complete": len(done),
    }
    if not done:
        return row
    steps = [int(h["step"]) for h in done[0].history]
    curves = torch.tensor(
        [[h.get("return_recent") or 0.0 for h in r.history[: len(steps)]] for r in done],
        dtype=torch.float64,
    )
    mean, lo, hi = bootstrap_ci(curves)
    finals = [float(r.summary["final_return"]) for r in done]  # type: ignore[index]
    aucs = [float(r.summary["auc"]) for r in done]  # type: ignore[index]
    _, f_lo, f_hi = bootstrap_ci(torch.tensor(finals), "iqm")
    a_est, a_lo, a_hi = bootstrap_ci(torch.tensor(aucs))
    solve = [r.summary.get("steps_to_solve") for r in done]  # type: ignore[union-attr]
    cost: dict[str, float] = {}
    for r in done:
        for h in r.history:
            for k, v in (h.get("cost") or {}).items():
                cost[k] = cost.get(k, 0.0) + v
    grad_steps = sum(gradient_steps(r.config) for r in done)
    row.update(
        steps=steps,
        curve_mean=mean.tolist(),
        curve_low=lo.tolist(),
        curve_high=hi.tolist(),
        final=finals,
        final_iqm=iqm(finals),
        final_iqm_ci=[float(f_lo), float(f_hi)],
        final_mean=sum(finals) / len(finals),
        auc=aucs,
        auc_mean=float(a_est),
        auc_ci=[float(a_lo), float(a_hi)],
        steps_to_solve=solve,
        solved=sum(s is not None for s in solve),
        cost_per_batch={k: v / grad_steps for k, v in cost.items()} if grad_steps else {},
    )
    return row


def summarize_arms(arm_dirs: Sequence[str | os.PathLike[str]]) -> dict[str, Any]:
    """:func:`summarize_arm` of each arm folder (labelled by the folder's name).

    Raises:
        DQNError: no arms, or an arm folder without DQN runs.
    """
    if not arm_dirs:
        raise DQNError("name at least one arm folder")
    arms = [summarize_arm(load_arm(d), Path(d).name) for d in arm_dirs]
    return {"schema": REPORT_SCHEMA, "solved_return": SOLVED_RETURN, "arms": arms}


def _num(x: float | None, digits: int = 1) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _ci(pair: list[float]) -> str:
    return f"[{_num(pair[0])}, {_num(pair[1])}]"


def format_report(result: dict[str, Any]) -> str:
    """A Markdown table of :func:`summarize_arms`' result."""
    lines = [
        "| arm | seeds | final return IQM [95% CI] | final mean | AUC mean [95% CI] "
        f"| seeds reaching {result['solved_return']:g} (median steps) "
        "| searches / batch | rows matched / batch | dependent reads / batch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for a in result["arms"]:
        seeds = f"{a['seeds_complete']}/{len(a['seeds'])}"
        if not a["seeds_complete"]:
            lines.append(f"| {a['label']} | {seeds} | - | - | - | - | - | - | - |")
            continue
        reached = sorted(s for s in a["steps_to_solve"] if s is not None)
        median = reached[len(reached) // 2] if reached else None
        c = a["cost_per_batch"]
        lines.append(
            f"| {a['label']} | {seeds} "
            f"| {_num(a['final_iqm'])} {_ci(a['final_iqm_ci'])} "
            f"| {_num(a['final_mean'])} "
            f"| {_num(a['auc_mean'])} {_ci(a['auc_ci'])} "
            f"| {a['solved']}/{a['seeds_complete']}"
            + (f" ({median})" if median is not None else "")
            + f" | {_num(c.get('searches'), 0)} | {_num(c.get('rows_matched'), 0)} "
            f"| {_num(c.get('dependent_reads'), 0)} |"
        )
    return "\n".join(lines)
