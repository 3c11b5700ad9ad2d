"""Figures of prioritized replay: DQN return curves per replay arm (from the summaries of
:mod:`approxsim.replay.runs_summary`). Reads result files and summaries only."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from approxsim.plots.common import check_figure_path, save_figure

__all__ = ["plot_return_curves", "plot_dqn_runs"]


def plot_return_curves(
    report: dict[str, Any],
    path: str | os.PathLike[str],
    *,
    dpi: int = 120,
    overwrite: bool = False,
) -> Path:
    """Mean return vs steps per arm with its 95% bootstrap band, one line per arm.

    Args:
        report: What :func:`approxsim.replay.runs_summary.summarize_arms` returns (arms
            without a complete seed are left out).
        path: Output image (format from the suffix).
        dpi: Resolution of raster formats.
        overwrite: Replace an existing file.

    Returns:
        The path written.

    Raises:
        PlotError: an unsupported image format, or no matplotlib.
        OutputExistsError: ``path`` exists (without ``overwrite``) or is a folder.
    """
    check_figure_path(path, overwrite=overwrite)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.5, 5), constrained_layout=True)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for arm in report["arms"]:
        if not arm.get("seeds_complete"):
            continue
        steps = arm["steps"]
        line = ax.plot(
            steps, arm["curve_mean"], label=f"{arm['label']} (n={arm['seeds_complete']})"
        )
        ax.fill_between(
            steps, arm["curve_low"], arm["curve_high"], alpha=0.15, color=line[0].get_color()
        )
    solved = report.get("solved_return")
    if solved is not None:
        ax.axhline(solved, color="0.5", lw=0.8, ls="--")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("return (mean of the last 20 episodes)")
    ax.set_title("DQN return per replay arm: mean over seeds, 95% bootstrap band")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    return save_figure(fig, path, dpi=dpi, overwrite=overwrite)


def plot_dqn_runs(
    runs: Sequence[str | os.PathLike[str]],
    path: str | os.PathLike[str],
    *,
    dpi: int = 120,
    overwrite: bool = True,
) -> Path:
    """The return curve (``return_recent`` per record) and TD loss of each DQN run folder.

    Args:
        runs: Run folders of ``approxsim replay dqn``.
        path: Output image (format from the suffix).
        dpi: Resolution of raster formats.
        overwrite: Replace an existing file; a run's own files are never replaced.

    Returns:
        The path written.

    Raises:
        DQNError: no runs, or a folder that is not a DQN run.
        PlotError: an unsupported image format, or no matplotlib.
        OutputExistsError: ``path`` exists (without ``overwrite``), is a folder or a run file.
    """
    from approxsim.replay.dqn_config import DQNError
    from approxsim.replay.runs import DQN_RUN_FILES, read_dqn_run

    loaded = [read_dqn_run(r) for r in runs]
    if not loaded:
        raise DQNError("name at least one DQN run to plot")
    inputs = [r.path / name for r in loaded for name in DQN_RUN_FILES]
    check_figure_path(path, overwrite=overwrite, inputs=inputs)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), constrained_layout=True)
    FigureCanvasAgg(fig)
    ax_ret, ax_loss = fig.subplots(1, 2)
    for run in loaded:
        label = f"{run.config.get('replay')} seed {run.config.get('seed')} [{run.path.name}]"
        steps = [int(h["step"]) for h in run.history]
        ax_ret.plot(steps, [h.get("return_recent") for h in run.history], label=label)
        ax_loss.plot(steps, [h.get("loss") for h in run.history], label=label)
    ax_ret.set_xlabel("environment steps")
    ax_ret.set_ylabel("return (mean of the last 20 episodes)")
    ax_loss.set_xlabel("environment steps")
    ax_loss.set_ylabel("TD loss")
    ax_loss.set_yscale("log")
    ax_ret.legend(fontsize=7)
    for ax in (ax_ret, ax_loss):
        ax.grid(alpha=0.3)
    return save_figure(fig, path, dpi=dpi, overwrite=overwrite, inputs=inputs)
