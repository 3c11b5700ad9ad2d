"""Figures of the replay samplers: total-variation distance to exact PER against bits
(``approxsim replay fidelity``) and sample time against buffer size (``approxsim replay
bench``). Reads result rows only."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from approxsim.plots.common import check_figure_path, save_figure

__all__ = ["plot_fidelity", "plot_sampler_timing"]


def _figure(ncols: int, width: float = 4.2, height: float = 3.6) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def plot_fidelity(
    rows: Sequence[dict[str, Any]],
    path: str | os.PathLike[str],
    *,
    dpi: int = 120,
    overwrite: bool = False,
) -> Path:
    """TV distance to exact PER against bits: one panel per priority vector, one line per AM
    setting (search, query rule, level scale); uniform replay as a dashed line.

    Args:
        rows: What :func:`approxsim.replay.fidelity.fidelity_table` returns.
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
    vectors = list(dict.fromkeys(r["vector"] for r in rows))
    fig, axes = _figure(len(vectors))
    for ax, vector in zip(axes, vectors, strict=True):
        mine = [r for r in rows if r["vector"] == vector]
        lines: dict[str, list[tuple[int, float]]] = {}
        for r in mine:
            if r["sampler"].startswith("amper"):
                label = f"{r['sampler']} {r['query']} {r['levels']}"
                lines.setdefault(label, []).append((int(r["bits"]), float(r["tv"])))
            elif r["sampler"] == "uniform":
                ax.axhline(r["tv"], color="0.4", ls="--", lw=1, label="uniform")
        for label, pts in lines.items():
            pts.sort()
            style = "-" if "size_biased" in label else ":"
            ax.plot([b for b, _ in pts], [t for _, t in pts], style, marker="o", ms=3, label=label)
        ax.set_yscale("log")
        ax.set_xlabel("bits per priority")
        ax.set_ylabel("TV distance to exact PER")
        ax.set_title(f"{vector} (N={mine[0]['n']})")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6)
    return save_figure(fig, path, dpi=dpi, overwrite=overwrite)


def plot_sampler_timing(
    rows: Sequence[dict[str, Any]],
    path: str | os.PathLike[str],
    *,
    dpi: int = 120,
    overwrite: bool = False,
) -> Path:
    """Median sample time against buffer size, one line per sampler, one panel per batch size.

    Args:
        rows: What :func:`approxsim.replay.bench.bench_samplers` returns.
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
    batches = sorted({int(r["batch"]) for r in rows})
    fig, axes = _figure(len(batches), width=3.6)
    for ax, batch in zip(axes, batches, strict=True):
        for name in dict.fromkeys(r["sampler"] for r in rows):
            pts = sorted(
                (r["n"], r["sample_ms"])
                for r in rows
                if r["sampler"] == name and r["batch"] == batch
            )
            ax.plot([n for n, _ in pts], [t for _, t in pts], marker="o", ms=3, label=name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("buffer size N")
        ax.set_ylabel("sample time (ms, median)")
        ax.set_title(f"B = {batch}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return save_figure(fig, path, dpi=dpi, overwrite=overwrite)
