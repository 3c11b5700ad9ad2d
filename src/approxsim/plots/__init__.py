"""Figures drawn from multipliers and result files (matplotlib, Agg backend)."""

from approxsim.plots.multipliers import plot_error_heatmap

__all__ = ["plot_error_heatmap"]
