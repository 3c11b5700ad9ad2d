"""What every figure of approxsim shares: a headless matplotlib and an atomic save."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from approxsim._io import atomic_write_bytes

__all__ = ["pyplot", "save_figure"]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike[str], *, dpi: int = 150) -> Path:
    """Write ``fig`` to ``path`` whole or not at all, then close it.

    Args:
        fig: A matplotlib figure.
        path: Output image; the format comes from the suffix (``.png``, ``.pdf``, ``.svg``).
        dpi: Resolution for raster formats.

    Returns:
        The path written.
    """
    out = Path(path)
    fmt = out.suffix.lstrip(".").lower() or "png"
    buf = io.BytesIO()
    try:
        fig.savefig(buf, dpi=dpi, format=fmt)
    finally:
        pyplot().close(fig)
    return atomic_write_bytes(out, buf.getvalue())
