"""Design-space sweeps: many runs of one approxsim command from a spec file, on this machine
or a Ray cluster, and their report with the Pareto front.

* :func:`load_spec` / :class:`SweepSpec` — the TOML spec: a base command (``train``,
  ``eval``, ``cim mc``, ``cim attack``), fixed options and axes to cross, ``exclude`` and
  ``include`` combinations, a folder-name template.
* :func:`plan_sweep` — every check before anything runs (unknown axis, no points, a point the
  base command rejects, a folder holding another sweep).
* :func:`run_sweep` — runs the points not complete yet (``local`` or ``ray`` executor),
  retrying failed ones; the state is one file rewritten atomically (``sweep-state.json``).
* :func:`sweep_report` / :func:`format_report` — mean ± std over seeds, gap to a baseline,
  a multiplier metric and the Pareto front (the figure:
  :func:`approxsim.plots.sweep.plot_sweep_report`).

``approxsim sweep run`` and ``approxsim sweep report`` are the command line; see
docs/sweeps.md.
"""

from approxsim.sweep.commands import COMMANDS, BaseCommand, base_command
from approxsim.sweep.errors import SweepError, SweepSpecError
from approxsim.sweep.plan import PointCheck, SweepPlan, plan_sweep
from approxsim.sweep.report import X_METRICS, format_report, multiplier_metric, sweep_report
from approxsim.sweep.runner import EXECUTORS, Outcome, PointJob, run_point, run_sweep
from approxsim.sweep.spec import BASE_COMMANDS, Axis, Point, SweepSpec, load_spec, parse_spec
from approxsim.sweep.state import STATE_FILE, read_state

__all__ = [
    "BASE_COMMANDS",
    "COMMANDS",
    "EXECUTORS",
    "STATE_FILE",
    "X_METRICS",
    "Axis",
    "BaseCommand",
    "Outcome",
    "Point",
    "PointCheck",
    "PointJob",
    "SweepError",
    "SweepPlan",
    "SweepSpec",
    "SweepSpecError",
    "base_command",
    "format_report",
    "load_spec",
    "multiplier_metric",
    "parse_spec",
    "plan_sweep",
    "read_state",
    "run_point",
    "run_sweep",
    "sweep_report",
]
