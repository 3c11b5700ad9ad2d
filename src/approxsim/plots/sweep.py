"""The sweep figure: a metric (accuracy, worst case, return) against a multiplier metric (mean
|relative error|, MAE%, power), one colour per series, the Pareto front marked."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from approxsim.plots.common import PlotError, pyplot, save_figure

__all__ = ["plot_sweep_report"]


def plot_sweep_report(
    report: dict[str, Any],
    path: str | os.PathLike[str],
    *,
    dpi: int = 120,
    overwrite: bool = True,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
) -> Path:
    """Each group's mean (± std over seeds) against its multiplier metric; the Pareto-optimal
    groups ringed and joined by a step line per series.

    Args:
        report: What :func:`approxsim.sweep.sweep_report` returned (groups without a result
            or without the multiplier metric are left out).
        path: Output image (format from the suffix).
        dpi: Resolution.
        overwrite: Replace an existing file (``False``: refuse it).
        inputs: Files the caller read; ``path`` may never be one of them.

    Returns:
        The path written.

    Raises:
        PlotError: the report has no multiplier metric or no group with a result.
        OutputExistsError: ``path`` exists (without ``overwrite``), is a folder or an input.
    """
    groups = [g for g in report["groups"] if g["x"] is not None and g["mean"] is not None]
    if report["x"] is None or not groups:
        raise PlotError(
            "nothing to plot: no complete point has a multiplier metric (name one with --x, "
            "e.g. mean_abs_rel_error for float multipliers, mae_percent for integer ones)"
        )
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 4.6), constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    series = list(dict.fromkeys(g["series"] for g in groups))
    scale = 100.0 if report.get("percent", True) else 1.0
    for i, name in enumerate(series):
        members = [g for g in groups if g["series"] == name]
        _plot_series(ax, members, name, colors[i % len(colors)], scale)
    positive = [g["x"] for g in groups if g["x"] > 0]
    if positive and max(positive) > 30 * min(positive):
        # Errors spanning decades (bf16's 0.1% to a 2-bit design's 18%): a symmetric log
        # axis keeps the small ones apart and zero (exact) on the axis.
        ax.set_xscale("symlog", linthresh=min(positive))
    ax.set_xlabel(report.get("x_label") or report["x"])
    ax.set_ylabel(report["metric"] + (" (%)" if scale == 100.0 else ""))
    ax.grid(True, alpha=0.3)
    ax.set_title(
        f"approxsim sweep: {report['command']} ({len(groups)} settings, mean ± std over seeds; "
        "ringed: Pareto front, lower x and higher y)",
        fontsize=9,
    )
    if any(name for name in series):
        ax.legend(fontsize=7)
    return save_figure(fig, path, dpi=dpi, overwrite=overwrite, inputs=inputs)


def _plot_series(
    ax: Any, groups: list[dict[str, Any]], name: str, color: str, scale: float
) -> None:
    xs = [g["x"] for g in groups]
    ys = [scale * g["mean"] for g in groups]
    errs = [0.0 if g["std"] is None else scale * g["std"] for g in groups]
    ax.errorbar(xs, ys, yerr=errs, fmt="o", color=color, capsize=3, ms=4, label=name or None)
    for g, x, y in zip(groups, xs, ys, strict=True):
        ax.annotate(
            g.get("short") or g["label"],
            (x, y),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=7,
        )
    front = sorted((g["x"], scale * g["mean"]) for g in groups if g["pareto"])
    if front:
        fx, fy = zip(*front, strict=True)
        ax.plot(fx, fy, "o", ms=11, mfc="none", mec=color, mew=1.4)
        ax.step(fx, fy, where="post", color=color, alpha=0.6, lw=1)
