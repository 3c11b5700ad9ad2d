"""Planning a sweep: every check that can refuse it, done before anything runs.

:func:`plan_sweep` expands the spec into points, refuses an axis or option the base command
does not have (or one the sweep sets itself), runs the caller's check of every point's
options (the command line builds the base command's arguments and settings for each point:
a value it would reject is refused here, naming the point) and refuses a folder that holds
another sweep.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from approxsim.errors import ApproxsimError
from approxsim.sweep.commands import BaseCommand, base_command
from approxsim.sweep.errors import SweepSpecError
from approxsim.sweep.spec import Point, SweepSpec, option_flag
from approxsim.sweep.state import check_sweep_folder

__all__ = ["SweepPlan", "PointCheck", "plan_sweep"]

#: Checks one point's full option list (the base command's words first, its output options
#: last, as the point will run); returns what it found out (``{"multiplier": {...}}``) or
#: raises an :class:`~approxsim.ApproxsimError`.
PointCheck = Callable[[list[str]], "dict[str, Any] | None"]


@dataclass(frozen=True)
class SweepPlan:
    """A checked sweep, ready to run.

    Attributes:
        spec: The spec.
        command: The base command.
        out: The sweep's folder.
        points: The points, in run order.
        info: Point name → what its check found (the multiplier's statistics).
        previous: The state of this sweep from an earlier run in ``out``, if any.
    """

    spec: SweepSpec
    command: BaseCommand
    out: Path
    points: list[Point]
    info: dict[str, dict[str, Any]] = field(default_factory=dict)
    previous: dict[str, Any] | None = None

    def folder(self, point: Point) -> Path:
        """The run folder of ``point``."""
        return self.out / point.name


def plan_sweep(
    spec: SweepSpec,
    out: str | os.PathLike[str],
    *,
    options: Collection[str] | None = None,
    check: PointCheck | None = None,
) -> SweepPlan:
    """Check a sweep before it runs.

    Args:
        spec: The parsed spec.
        out: The sweep's folder.
        options: The base command's option strings (``--model``, ``--seed`` ...); ``None``
            skips the check of axis and option names.
        check: Checks one point's options (see :data:`PointCheck`); ``None``: no check.

    Returns:
        The plan.

    Raises:
        SweepSpecError: an unknown axis or option, an option the sweep sets itself, no
            points, a point the base command rejects, or ``out`` holding another sweep.
    """
    command = base_command(spec.command)
    _check_names(spec, command, options)
    points = spec.points()
    out_path = Path(out)
    info: dict[str, dict[str, Any]] = {}
    if check is not None:
        for point in points:
            info[point.name] = _check_point(command, point, check, out_path / point.name)
    previous = check_sweep_folder(out_path, spec)
    return SweepPlan(spec, command, out_path, points, info, previous)


def _check_names(spec: SweepSpec, command: BaseCommand, options: Collection[str] | None) -> None:
    keys = [("axis", a.name) for a in spec.axes] + [("option", k) for k in spec.args]
    for axis in spec.axes:
        for value in axis.values:
            if isinstance(value, dict):
                keys += [("option", k) for k in value if k != "label"]
    for kind, key in keys:
        flag = option_flag(key)
        if flag in command.reserved:
            raise SweepSpecError(
                f"{kind} {key!r} ({flag}) is set by the sweep itself (each point's output "
                f"goes to its own folder); leave it out of the spec"
            )
        if options is not None and flag not in options:
            raise SweepSpecError(
                f"unknown {kind} {key!r}: approxsim {command.name} has no option {flag} "
                f"(see approxsim {command.name} --help)"
            )


def _check_point(
    command: BaseCommand, point: Point, check: PointCheck, folder: Path
) -> dict[str, Any]:
    try:
        found = check([*command.words, *point.argv, *command.output_argv(folder)])
    except ApproxsimError as exc:
        raise SweepSpecError(
            f"point {point.name} ({_describe(point)}) is refused by approxsim {command.name}: {exc}"
        ) from None
    return found or {}


def _describe(point: Point) -> str:
    return ", ".join(f"{k}={point.label(k)}" for k in point.values)
