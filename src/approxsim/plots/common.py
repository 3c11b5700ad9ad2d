"""What every figure of approxsim shares: a headless matplotlib, a check of the output path
that runs before any work, and an atomic save."""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from approxsim._io import atomic_write_bytes, check_output
from approxsim.errors import ApproxsimError

__all__ = ["PlotError", "pyplot", "figure_formats", "check_figure_path", "save_figure"]


class PlotError(ApproxsimError, ValueError):
    """A figure cannot be written where or how it was asked; the message says what to change."""


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_formats() -> list[str]:
    """The image formats figures can be saved in (file suffixes without the dot), sorted.

    Raises:
        PlotError: matplotlib is not installed.
    """
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        raise PlotError(
            "figures need matplotlib; install it (pip install 'approxsim[plots]')"
        ) from None
    return sorted(FigureCanvasBase.get_supported_filetypes())


def _format(path: Path) -> str:
    # No suffix: PNG, as matplotlib itself does.
    return path.suffix.lstrip(".").lower() or "png"


def check_figure_path(
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    flag: str = "--overwrite",
) -> Path:
    """Check, before any work, that a figure can be written to ``path``.

    Commands call it up front, so that a typo in the output costs nothing: the format must be
    one matplotlib writes (from the suffix; none means PNG), and the file must be one the
    command may write (:func:`approxsim._io.check_output`: not an existing file unless
    ``overwrite``, never a folder or one of the command's inputs).

    Args:
        path: The image file the user named.
        overwrite: The user asked to replace an existing file.
        inputs: Files the command reads; the figure may never replace one of them.
        flag: The option that allows replacing, named in the message.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        PlotError: an unsupported format, or no matplotlib.
        OutputExistsError: the file exists (without ``overwrite``), is a folder or an input.
    """
    out = check_output(path, overwrite=overwrite, inputs=inputs, flag=flag)
    formats = figure_formats()
    if _format(out) not in formats:
        raise PlotError(
            f"cannot write a figure as {out.name}: {out.suffix!r} is not an image format; "
            f"name a file ending in one of {', '.join('.' + f for f in formats)} (e.g. .png)"
        )
    return out


def save_figure(
    fig: Any,
    path: str | os.PathLike[str],
    *,
    dpi: int = 150,
    overwrite: bool = True,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
) -> Path:
    """Write ``fig`` to ``path`` whole or not at all, then close it.

    Args:
        fig: A matplotlib figure.
        path: Output image; the format comes from the suffix (``.png``, ``.pdf``, ``.svg``).
        dpi: Resolution for raster formats.
        overwrite: Replace an existing file; ``False``: refuse it (also if it appears while
            the figure is drawn).
        inputs: Files the caller read; ``path`` may never be one of them.

    Returns:
        The path written.

    Raises:
        PlotError: an unsupported format.
        OutputExistsError: as :func:`check_figure_path`.
    """
    try:
        out = check_figure_path(path, overwrite=overwrite, inputs=inputs)
        buf = io.BytesIO()
        fig.savefig(buf, dpi=dpi, format=_format(out))
    finally:
        pyplot().close(fig)
    return atomic_write_bytes(out, buf.getvalue(), overwrite=overwrite, inputs=inputs)
