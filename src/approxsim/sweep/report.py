"""The report of a sweep: one row per point less its seed (mean ± std over the seeds), the gap
to a baseline, a multiplier metric and the Pareto front.

Reads the sweep's folder only (its state file and the points' result files), so a report can
be made while the sweep is still going: only complete points enter the statistics, and each
row says on how many seeds it rests.

* **Groups.** Points that differ only in the ``seed`` axis (``first_seed`` for ``replay
  dqn``) form a group; its ``mean`` and
  ``std`` (sample standard deviation, ``None`` below two seeds) are over the complete points.
* **Baseline.** ``multiplier=fp32`` (the default when the ``multiplier`` axis has ``fp32``)
  compares each group with the group that has the same values except ``multiplier = fp32``;
  ``gap`` is the group's mean minus that group's mean.
* **Multiplier metric** (the x of the plot): ``mean_abs_rel_error`` (mean |relative error|
  of a float multiplier over its mantissa grid, %), ``mae_percent`` and ``mre_percent``
  (EvoApproxLib's MAE% and MRE% of an integer multiplier), ``power`` (the circuit's power in
  mW, when the multiplier's file gives one: an EvoApproxLib ``PDK45_PWR`` line).
* **Pareto front.** Within each series (the groups that share every axis but the seed and the
  multiplier axes), the groups no other group beats on both counts: a metric at least as
  high and a multiplier metric at least as low, one of them strictly.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from approxsim.sweep.commands import BaseCommand, base_command
from approxsim.sweep.errors import SweepError
from approxsim.sweep.spec import value_label
from approxsim.sweep.state import read_state

__all__ = [
    "REPORT_SCHEMA",
    "X_METRICS",
    "MULTIPLIER_AXES",
    "sweep_report",
    "format_report",
    "multiplier_metric",
]

REPORT_SCHEMA = "approxsim.sweep.report/1"
#: Multiplier metrics a report can put on the x axis.
X_METRICS = ("mean_abs_rel_error", "mae_percent", "mre_percent", "power")
#: Axes that change the multiplier (left out of a series: the plot's x varies along them).
MULTIPLIER_AXES = frozenset(
    {
        "multiplier",
        "int_multiplier",
        "grad_input",
        "grad_weight",
        "c",
        "lut",
        "evoapprox",
        "approxtrain_lut",
        "function",
        "mantissa_bits",
        "bits",
    }
)
#: Axes that name the seed: the points that differ only in them form a group.
SEED_AXES = frozenset({"seed", "first_seed"})


def multiplier_metric(info: dict[str, Any] | None, name: str) -> float | None:
    """One multiplier metric from what a sweep recorded about a point's multiplier.

    Args:
        info: The point's ``multiplier`` record (``kind``, ``exact``, ``error_stats``,
            ``power_mw``), or ``None``.
        name: One of :data:`X_METRICS`.

    Returns:
        The value (percent for the error metrics, mW for ``power``), or ``None`` when the
        multiplier does not have it.
    """
    if not info:
        return None
    stats = info.get("error_stats") or {}
    if name == "power":
        return _float(info.get("power_mw"))
    if name == "mean_abs_rel_error":
        if info.get("kind") != "float":
            return None
        if info.get("exact"):
            return 0.0
        value = _float(stats.get("mean_abs_rel_error"))
        return None if value is None else 100 * value
    if info.get("kind") != "integer":
        return None
    return _float(stats.get(name))


def _float(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def sweep_report(
    out: str | os.PathLike[str],
    *,
    metric: str | None = None,
    baseline: str | None = None,
    x: str | None = None,
) -> dict[str, Any]:
    """Summarize the sweep in ``out``.

    Args:
        out: The sweep's folder.
        metric: The number to summarize (default: the base command's first, e.g.
            ``final_test_acc`` for ``train``).
        baseline: ``AXIS=VALUE`` or a value of one axis; default ``multiplier=fp32`` when
            that axis has ``fp32``, else none.
        x: The multiplier metric (:data:`X_METRICS`); default the first any group has.

    Returns:
        ``{"schema", "out", "command", "metric", "x", "baseline", "axes", "groups"}``; each
        group has ``values`` (axis → label, seed left out), ``label``, ``series``,
        ``points``, ``seeds``, ``complete``, ``mean``, ``std``, ``values_per_seed``,
        ``gap``, ``multiplier``, ``x`` and ``pareto``.

    Raises:
        SweepError: no sweep in ``out``, an unknown metric, x metric or baseline.
    """
    folder = Path(out)
    state = read_state(folder)
    spec = state.get("spec") or {}
    command = base_command(str(spec.get("command", "")))
    metric = metric or command.metrics[0]
    if metric not in command.metrics:
        raise SweepError(
            f"unknown metric {metric!r} for a {command.name} sweep; use one of "
            + ", ".join(command.metrics)
        )
    axes = list((spec.get("axes") or {}).keys())
    groups = _groups(folder, state, command, metric, axes)
    base = _baseline(baseline, spec.get("axes") or {})
    _gaps(groups, base)
    x = _x_metric(groups, x)
    for g in groups:
        g["x"] = multiplier_metric(g["multiplier"], x) if x else None
    _pareto(groups)
    return {
        "schema": REPORT_SCHEMA,
        "out": str(folder),
        "command": command.name,
        "metric": metric,
        "percent": command.percent,
        "x": x,
        "x_label": x_label(x),
        "baseline": None if base is None else f"{base[0]}={base[1]}",
        "axes": [a for a in axes if a not in SEED_AXES],
        "groups": groups,
    }


def _groups(
    folder: Path, state: dict[str, Any], command: BaseCommand, metric: str, axes: list[str]
) -> list[dict[str, Any]]:
    grouped: dict[tuple[str, ...], dict[str, Any]] = {}
    for entry in state["points"]:
        values = {a: value_label(entry["values"][a]) for a in axes if a not in SEED_AXES}
        key = tuple(values.values())
        g = grouped.setdefault(key, _new_group(values, entry))
        g["points"].append(entry["name"])
        g["seeds"].append(next((v for k, v in entry["values"].items() if k in SEED_AXES), None))
        point = folder / entry["name"]
        if command.complete(point):
            value = command.read(point).get(metric)
            if value is not None:
                g["values_per_seed"].append(value)
    for g in grouped.values():
        g["complete"] = len(g["values_per_seed"])
        g["mean"], g["std"] = _mean_std(g["values_per_seed"])
    return list(grouped.values())


def _new_group(values: dict[str, str], entry: dict[str, Any]) -> dict[str, Any]:
    series = {k: v for k, v in values.items() if k not in MULTIPLIER_AXES}
    label = " ".join(values.values()) or "all"
    return {
        "values": values,
        "label": label,
        "short": " ".join(v for k, v in values.items() if k in MULTIPLIER_AXES) or label,
        "series": " ".join(series.values()),
        "points": [],
        "seeds": [],
        "values_per_seed": [],
        "multiplier": entry.get("multiplier"),
    }


def _baseline(baseline: str | None, axes: dict[str, list[Any]]) -> tuple[str, str] | None:
    labels = {a: [value_label(v) for v in vs] for a, vs in axes.items() if a not in SEED_AXES}
    if baseline is None:
        return ("multiplier", "fp32") if "fp32" in labels.get("multiplier", []) else None
    if "=" in baseline:
        axis, _, value = baseline.partition("=")
        if value not in labels.get(axis, []):
            raise SweepError(
                f"--baseline {baseline}: the sweep has no axis {axis!r} with value {value!r}; "
                + _choices(labels)
            )
        return axis, value
    owners = [a for a, vs in labels.items() if baseline in vs]
    if len(owners) != 1:
        why = "no axis has" if not owners else f"axes {', '.join(owners)} have"
        raise SweepError(
            f"--baseline {baseline}: {why} that value; name AXIS=VALUE; " + _choices(labels)
        )
    return owners[0], baseline


def _choices(labels: dict[str, list[str]]) -> str:
    return "values: " + "; ".join(f"{a} = {', '.join(vs)}" for a, vs in labels.items())


def _gaps(groups: list[dict[str, Any]], base: tuple[str, str] | None) -> None:
    for g in groups:
        g["gap"] = None
        g["is_baseline"] = False
        if base is None:
            continue
        axis, value = base
        want = {**g["values"], axis: value}
        ref = next((h for h in groups if h["values"] == want), None)
        g["is_baseline"] = ref is g
        if ref is not None and ref["mean"] is not None and g["mean"] is not None:
            g["gap"] = g["mean"] - ref["mean"]


def _x_metric(groups: list[dict[str, Any]], x: str | None) -> str | None:
    if x is not None:
        if x not in X_METRICS:
            raise SweepError(f"unknown multiplier metric {x!r}; use one of {', '.join(X_METRICS)}")
        return x
    for name in X_METRICS:
        if any(multiplier_metric(g["multiplier"], name) is not None for g in groups):
            return name
    return None


def _pareto(groups: list[dict[str, Any]]) -> None:
    for g in groups:
        g["pareto"] = False
    scored = [g for g in groups if g["x"] is not None and g["mean"] is not None]
    for g in scored:
        rivals = [h for h in scored if h is not g and h["series"] == g["series"]]
        g["pareto"] = not any(
            h["x"] <= g["x"]
            and h["mean"] >= g["mean"]
            and (h["x"], h["mean"]) != (g["x"], g["mean"])
            for h in rivals
        )


# ---------------------------------------------------------------------------- formats
_X_UNITS = {
    "mean_abs_rel_error": "mean |rel. error| (%)",
    "mae_percent": "MAE (%)",
    "mre_percent": "MRE (%)",
    "power": "power (mW)",
}


def x_label(x: str | None) -> str:
    """How a multiplier metric is named in tables and plots."""
    return _X_UNITS.get(x or "", x or "")


def _pm(mean: float | None, std: float | None, scale: float) -> str:
    if mean is None:
        return "-"
    return f"{scale * mean:.2f}" + ("" if std is None else f" ± {scale * std:.2f}")


def _num(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def format_report(report: dict[str, Any], fmt: str = "md") -> str:
    """The report as a Markdown table (``md``), CSV (``csv``) or JSON (``json``).

    Args:
        report: What :func:`sweep_report` returned.
        fmt: The format.

    Returns:
        The text (ending in a newline).

    Raises:
        SweepError: an unknown format.
    """
    import json

    if fmt == "json":
        return json.dumps(report, indent=1) + "\n"
    if fmt == "csv":
        return _csv(report)
    if fmt != "md":
        raise SweepError(f"unknown report format {fmt!r}; use md, csv or json")
    axes, metric = report["axes"], report["metric"]
    scale = 100.0 if report["percent"] else 1.0
    unit, gap_unit = (" (%)", " (pp)") if report["percent"] else ("", "")
    head = [*axes, "seeds", f"{metric}{unit}", f"gap to {report['baseline'] or '-'}{gap_unit}"]
    head += [x_label(report["x"]), "Pareto"] if report["x"] else []
    lines = [_md_row(head), "|" + "---|" * len(head)]
    for g in report["groups"]:
        gap = (
            "baseline"
            if g["is_baseline"]
            else _num(None if g["gap"] is None else scale * g["gap"], "+.2f")
        )
        cells = [*(g["values"][a] for a in axes), f"{g['complete']}/{len(g['points'])}"]
        cells += [_pm(g["mean"], g["std"], scale), gap]
        if report["x"]:
            cells += [_num(g["x"], ".4g"), "*" if g["pareto"] else ""]
        lines.append(_md_row(cells))
    return "\n".join(lines) + "\n"


def _md_row(cells: Sequence[str]) -> str:
    # A "|" inside a cell (mean |rel. error|) would end it: escaped as Markdown wants.
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _csv(report: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    axes = report["axes"]
    w.writerow([*axes, "seeds", "complete", "mean", "std", "gap", "x", "pareto", "points"])
    for g in report["groups"]:
        w.writerow(
            [
                *(g["values"][a] for a in axes),
                len(g["points"]),
                g["complete"],
                "" if g["mean"] is None else repr(g["mean"]),
                "" if g["std"] is None else repr(g["std"]),
                "" if g["gap"] is None else repr(g["gap"]),
                "" if g["x"] is None else repr(g["x"]),
                int(g["pareto"]),
                " ".join(g["points"]),
            ]
        )
    return buf.getvalue()
