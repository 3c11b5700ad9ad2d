"""Every figure approxsim draws (matplotlib, Agg backend), each from result data only.

* :func:`plot_error_heatmap` — a multiplier's relative error over its mantissa grid
  (``approxsim multipliers show --plot``);
* :func:`plot_runs` — test accuracy and training loss per epoch of run folders
  (``approxsim compare --plot``);
* :func:`plot_sweep` — accuracy against the variation bound of a CIM sweep
  (``approxsim cim sweep``).

:mod:`approxsim.plots.common` holds what they share (a headless pyplot, atomic saving).
"""

from approxsim.plots.cim import plot_sweep
from approxsim.plots.common import PlotError, check_figure_path
from approxsim.plots.curves import plot_runs
from approxsim.plots.multipliers import plot_error_heatmap

__all__ = ["PlotError", "check_figure_path", "plot_error_heatmap", "plot_runs", "plot_sweep"]
