"""Training curves: train loss and test accuracy per epoch of several runs
(``approxsim compare --plot``). Reads run folders only."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from approxsim.plots.common import check_figure_path, save_figure
from approxsim.training.compare import CompareError, Run, load_run, number_or_none
from approxsim.training.rundir import RUN_FILES

__all__ = ["plot_runs"]


def plot_runs(
    runs: Sequence[Run | str | os.PathLike[str]],
    path: str | os.PathLike[str],
    *,
    dpi: int = 120,
    overwrite: bool = True,
) -> Path:
    """Draw train loss and test accuracy per epoch of several runs on one figure.

    Two panels side by side (train loss, test accuracy); one line per run, labelled by its
    multiplier (and the folder name where two runs share a multiplier).

    Args:
        runs: :class:`Run` objects or run folders.
        path: Output image (format from the suffix: ``.png``, ``.pdf``, ``.svg`` ...).
        dpi: Resolution of raster formats.
        overwrite: Replace an existing file; ``False``: refuse it. A run's own files are
            never replaced.

    Returns:
        The path written.

    Raises:
        CompareError: no runs, or an unreadable run folder.
        PlotError: an unsupported image format.
        OutputExistsError: ``path`` exists (without ``overwrite``), is a folder, or is one of
            the runs' files.
    """
    loaded = [r if isinstance(r, Run) else load_run(r) for r in runs]
    if not loaded:
        raise CompareError("name at least one run to plot")
    inputs = [r.path / name for r in loaded for name in RUN_FILES]
    check_figure_path(path, overwrite=overwrite, inputs=inputs)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), constrained_layout=True)
    FigureCanvasAgg(fig)
    ax_loss, ax_acc = fig.subplots(1, 2)
    labels = [r.label for r in loaded]
    for run in loaded:
        label = run.label if labels.count(run.label) == 1 else f"{run.label} [{run.path.name}]"
        epochs = [int(r["epoch"]) for r in run.history]
        loss = [r.get("train_loss") for r in run.history]
        acc = [
            a * 100 if (a := number_or_none(r.get("test_acc"))) is not None else None
            for r in run.history
        ]
        style = {"marker": "o", "markersize": 3, "linewidth": 1.5}
        (line,) = ax_loss.plot(
            epochs, [float("nan") if v is None else v for v in loss], label=label, **style
        )
        ax_acc.plot(
            epochs,
            [float("nan") if v is None else v for v in acc],
            label=label,
            color=line.get_color(),
            **style,
        )
    ax_loss.set_title("train loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy")
    ax_acc.set_title("test accuracy")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.grid(True, alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax_acc.legend(title="multiplier", fontsize="small")
    models = {(r.config.get("model"), r.config.get("dataset")) for r in loaded}
    if len(models) == 1:
        model, dataset = models.pop()
        fig.suptitle(f"{model} on {dataset}")
    return save_figure(fig, path, dpi=dpi, overwrite=overwrite, inputs=inputs)
