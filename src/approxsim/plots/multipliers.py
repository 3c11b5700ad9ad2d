"""Heat maps of multipliers: the relative error of a float multiplier over its mantissa grid,
the error distance of an integer multiplier over all its operand pairs."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from approxsim.plots.common import pyplot, save_figure

if TYPE_CHECKING:
    from approxsim.multipliers import Multiplier
    from approxsim.multipliers.integer import IntMultiplier

__all__ = ["plot_error_heatmap", "plot_int_error_heatmap"]


def plot_error_heatmap(
    multiplier: Multiplier,
    path: str | Path,
    *,
    dpi: int = 150,
    overwrite: bool = True,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
) -> Path:
    """Draw ``LUT/exact - 1`` over the M-bit mantissa grid as a heat map with a colour bar.

    Rows are operand A's mantissa ``1 + i/2^M``, columns operand B's. The colour scale is
    diverging and centred on zero, so over- and under-estimates read apart.

    Args:
        multiplier: A LUT multiplier.
        path: Output image file (format from the suffix, e.g. ``.png``, ``.pdf``).
        dpi: Resolution for raster formats.
        overwrite: Replace an existing file (``False``: refuse it).
        inputs: Files never to write over, whatever ``overwrite`` says.

    Returns:
        The path written.

    Raises:
        MultiplierError: for the exact multiplier (nothing to draw).
    """
    from matplotlib.colors import TwoSlopeNorm

    plt = pyplot()

    rel = 100.0 * multiplier.relative_error_grid()
    stats = multiplier.error_stats()
    lo, hi = float(rel.min()), float(rel.max())
    span = max(abs(lo), abs(hi), 1e-12)
    norm = TwoSlopeNorm(
        vcenter=0.0,
        vmin=min(lo, -1e-12 * span) if lo < 0 else -span,
        vmax=max(hi, 1e-12 * span) if hi > 0 else span,
    )
    fig, ax = plt.subplots(figsize=(6.4, 5.4), constrained_layout=True)
    im = ax.imshow(
        rel,
        origin="lower",
        extent=(1.0, 2.0, 1.0, 2.0),
        cmap="RdBu_r",
        norm=norm,
        interpolation="nearest",
        aspect="equal",
    )
    cbar = fig.colorbar(im, ax=ax)
    cbar.set_label("relative error (%)")
    ax.set_xlabel("operand B mantissa  1.j")
    ax.set_ylabel("operand A mantissa  1.i")
    ax.set_title(
        f"{multiplier.name} (M={multiplier.mantissa_bits})\n"
        f"mean {100 * stats['mean_rel_error']:+.3f}%   "
        f"mean|.| {100 * stats['mean_abs_rel_error']:.3f}%   "
        f"max|.| {100 * stats['max_abs_rel_error']:.3f}%",
        fontsize=10,
    )
    return save_figure(fig, path, dpi=dpi, overwrite=overwrite, inputs=inputs)


def plot_int_error_heatmap(
    multiplier: IntMultiplier,
    path: str | Path,
    *,
    dpi: int = 150,
    overwrite: bool = True,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
) -> Path:
    """Draw the error distance ``approx - exact`` of every operand pair as a heat map.

    Rows are the first operand's values (the C function's first parameter), columns the
    second's, both ascending from ``min_value``. The colour scale is diverging and centred on
    zero, so over- and under-estimates read apart; an exact multiplier draws a uniform map.

    Args:
        multiplier: An integer multiplier.
        path: Output image file (format from the suffix, e.g. ``.png``, ``.pdf``).
        dpi: Resolution for raster formats.
        overwrite: Replace an existing file (``False``: refuse it).
        inputs: Files never to write over, whatever ``overwrite`` says.

    Returns:
        The path written.
    """
    from matplotlib.colors import TwoSlopeNorm

    plt = pyplot()
    d = multiplier.error_grid()
    stats = multiplier.error_stats()
    span = float(max(abs(int(d.min())), abs(int(d.max())), 1))
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-span, vmax=span)
    lo, hi = multiplier.min_value - 0.5, multiplier.max_value + 0.5
    fig, ax = plt.subplots(figsize=(6.4, 5.4), constrained_layout=True)
    im = ax.imshow(
        d,
        origin="lower",
        extent=(lo, hi, lo, hi),
        cmap="RdBu_r",
        norm=norm,
        interpolation="nearest",
        aspect="equal",
    )
    cbar = fig.colorbar(im, ax=ax)
    cbar.set_label("error distance  approx - exact")
    ax.set_xlabel("second operand b")
    ax.set_ylabel("first operand a")
    kind = "signed" if multiplier.signed else "unsigned"
    ax.set_title(
        f"{multiplier.name} ({multiplier.bits}-bit {kind}, {multiplier.fingerprint[:12]})\n"
        f"MAE% {stats['mae_percent']:.4f}   WCE% {stats['wce_percent']:.4f}   "
        f"EP% {stats['ep_percent']:.2f}   MRE% {stats['mre_percent']:.3f}",
        fontsize=10,
    )
    return save_figure(fig, path, dpi=dpi, overwrite=overwrite, inputs=inputs)
