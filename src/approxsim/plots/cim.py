"""The CIM sweep figure: accuracy versus the variation bound, from a sweep's result document."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from approxsim.plots.common import pyplot, save_figure

__all__ = ["plot_sweep"]


def plot_sweep(
    doc: dict[str, Any],
    path: str | os.PathLike[str],
    *,
    dpi: int = 120,
    overwrite: bool = True,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
) -> Path:
    """Accuracy versus ``ε``: Monte Carlo mean (solid), its 1st percentile (dashed) and the
    worst case found (dotted: held-out split; faint crosses: attack split), one colour per
    model, starting from the clean chip at ``ε = 0``.

    Args:
        doc: A :func:`approxsim.cim.run_sweep` result, or the ``sweep.json`` file's contents
            (a partial one too: points without a Monte Carlo result are left out).
        path: Output image (format from the suffix).
        dpi: Resolution.
        overwrite: Replace an existing file (``False``: refuse it).
        inputs: Files the caller read; ``path`` may never be one of them.

    Returns:
        The path written.

    Raises:
        OutputExistsError: ``path`` exists (without ``overwrite``), is a folder or an input.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9.6, 4.8), constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, m in enumerate(doc.get("models", [])):
        _plot_model(ax, m, colors[i % len(colors)])
    unit = doc.get("unit", "weight")
    ax.set_xlabel(
        "bound ε (% of the layer's max |w| per weight)"
        if unit == "weight"
        else "bound ε = σ (% of a device's range)"
    )
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(True, alpha=0.3)
    clipped = ", conductances clipped to [0, 1]" if (doc.get("device") or {}).get("clip") else ""
    ax.set_title(
        f"CIM device variation: Monte Carlo (σ = ε) vs worst case (|Δ| ≤ ε){clipped}\n"
        "× = worst case scored on the attack split",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save_figure(fig, path, dpi=dpi, overwrite=overwrite, inputs=inputs)


def _plot_model(ax: Any, m: dict[str, Any], c: Any) -> None:
    """One model's curves, in colour ``c``."""
    clean = (m.get("clean") or {}).get("chip_heldout")
    pts = [p for p in m.get("points", []) if "monte_carlo" in p]
    if not pts or clean is None:
        return
    xs = [0.0] + [100 * p["eps"] for p in pts]
    mean = [clean] + [p["monte_carlo"]["mean"] for p in pts]
    p1 = [clean] + [p["monte_carlo"]["p1"] for p in pts]
    ax.plot(xs, [100 * v for v in mean], "-o", color=c, ms=4, label=f"{m['label']}: MC mean")
    ax.plot(xs, [100 * v for v in p1], "--v", color=c, ms=4, label=f"{m['label']}: MC 1st pct")
    wp = [p for p in pts if "worst_heldout" in p]
    if not wp:
        return
    ax.plot(
        [0.0] + [100 * p["eps"] for p in wp],
        [100 * clean] + [100 * p["worst_heldout"] for p in wp],
        ":s",
        color=c,
        ms=4,
        label=f"{m['label']}: worst case (held-out)",
    )
    ax.plot(
        [100 * p["eps"] for p in wp],
        [100 * p["worst_attack"] for p in wp],
        "x",
        color=c,
        alpha=0.5,
        ms=6,
    )
