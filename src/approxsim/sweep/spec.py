"""The sweep spec: a TOML file naming a base command, fixed options and axes to cross.

A spec looks like this (``scripts/results.toml`` is a real one)::

    command = "train"                        # train | eval | cim mc | cim attack | replay dqn
    name = "{model}-{multiplier}-s{seed}"    # run folder of a point (optional)
    exclude = [{model = "lenet5", multiplier = "mbm7"}]   # optional
    include = []                             # optional: extra points, every axis given

    [args]                                   # options every point gets
    dataset = "fashion-mnist"
    epochs = 2

    [axes]                                   # crossed in this order: the first varies slowest
    model = ["lenet300100"]
    seed = [0, 1]
    multiplier = ["fp32", "mitchell7"]

Every key of ``[args]`` and ``[axes]`` is an option of the base command: ``key`` becomes
``--key`` (underscores become dashes: ``grad_input`` is ``--grad-input``). A value becomes the
option's argument; ``true`` gives the bare flag and ``false`` leaves it out; a list in
``[args]`` repeats the option (``include = ["fc*", "conv*"]``). An axis value may also be a
table of several options that go together, with a ``label`` for the folder name::

    multiplier = ["fp32", {label = "mymul7", c = "mymul.c", function = "mymul",
                           mantissa_bits = 7}]

This module parses and expands a spec; it does not know the base command's options (the
command line checks every point against them, :mod:`approxsim.cli.sweep`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import string
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from approxsim.sweep.errors import SweepSpecError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "BASE_COMMANDS",
    "Axis",
    "Point",
    "SweepSpec",
    "load_spec",
    "parse_spec",
    "option_flag",
    "option_argv",
]

#: Base commands a sweep can run, as the words after ``approxsim`` (each has a
#: :class:`~approxsim.sweep.commands.BaseCommand` saying where its output goes).
BASE_COMMANDS = ("train", "eval", "cim mc", "cim attack", "replay dqn")

_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_SPEC_KEYS = ("command", "name", "args", "axes", "exclude", "include")
#: Names the sweep keeps for itself in its folder (a point may not be called so).
RESERVED_NAMES = ("logs", "sweep-state.json")


@dataclass(frozen=True)
class Axis:
    """One axis of a sweep.

    Attributes:
        name: The spec key (``multiplier``, ``seed``, ``grad_input``).
        values: The values in spec order: scalars, or tables of options with a ``label``.
    """

    name: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Point:
    """One combination of axis values: one run of the base command.

    Attributes:
        name: Its run folder's name under the sweep's folder.
        values: Axis name → value (as in the spec).
        argv: The base command's options for this point (fixed ``args`` first, then the
            axes), without the output options the sweep adds.
    """

    name: str
    values: dict[str, Any]
    argv: tuple[str, ...]

    def label(self, axis: str) -> str:
        """How the value of ``axis`` is shown (a table value by its ``label``)."""
        return value_label(self.values[axis])


@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep spec (see the module docstring).

    Attributes:
        command: The base command's words (``("train",)``, ``("cim", "mc")``).
        args: Options every point gets.
        axes: The axes, in crossing order.
        exclude: Partial combinations left out (a point matching every key of one is dropped).
        include: Extra combinations (every axis given), added after the cross product.
        name: The folder-name template (``str.format`` fields: axis names).
    """

    command: tuple[str, ...]
    args: dict[str, Any]
    axes: tuple[Axis, ...]
    exclude: tuple[dict[str, Any], ...] = ()
    include: tuple[dict[str, Any], ...] = ()
    name: str = ""

    def document(self) -> dict[str, Any]:
        """The spec as a JSON object (what the sweep's state file records)."""
        return {
            "command": " ".join(self.command),
            "name": self.name,
            "args": self.args,
            "axes": {a.name: list(a.values) for a in self.axes},
            "exclude": list(self.exclude),
            "include": list(self.include),
        }

    def digest(self) -> str:
        """SHA-256 of :meth:`document` (two specs that run the same points agree)."""
        text = json.dumps(self.document(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def points(self) -> list[Point]:
        """The points: the cross product in axis order, less ``exclude``, plus ``include``.

        Raises:
            SweepSpecError: no point is left, or two points get the same folder name.
        """
        names = [a.name for a in self.axes]
        combos = [dict(zip(names, vs, strict=True)) for vs in _product(self.axes)]
        combos = [c for c in combos if not any(_matches(c, e) for e in self.exclude)]
        for extra in self.include:
            if extra not in combos:
                combos.append(dict(extra))
        if not combos:
            raise SweepSpecError(
                "the spec has no points: an axis is empty or exclude removes every "
                "combination; give every axis at least one value"
            )
        points = [self._point(c) for c in combos]
        _check_unique(points)
        return points

    def _point(self, values: dict[str, Any]) -> Point:
        argv: list[str] = []
        for key, value in self.args.items():
            argv += option_argv(key, value)
        for key, value in values.items():
            argv += option_argv(key, value)
        return Point(_folder_name(self.name, values), values, tuple(argv))


def _product(axes: Sequence[Axis]) -> list[tuple[Any, ...]]:
    return list(itertools.product(*(a.values for a in axes)))


def _matches(combo: Mapping[str, Any], entry: Mapping[str, Any]) -> bool:
    return all(combo.get(k) == v for k, v in entry.items())


def _check_unique(points: Sequence[Point]) -> None:
    seen: dict[str, Point] = {}
    for p in points:
        if p.name in seen:
            raise SweepSpecError(
                f"two points get the folder name {p.name!r} ({seen[p.name].values} and "
                f"{p.values}); put every axis in the name template"
            )
        seen[p.name] = p


def value_label(value: Any) -> str:
    """How an axis value appears in folder names and tables."""
    if isinstance(value, dict):
        return str(value["label"])
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _folder_name(template: str, values: Mapping[str, Any]) -> str:
    labels = {k: value_label(v) for k, v in values.items()}
    name = template.format_map(labels) if template else "-".join(labels.values())
    if (
        not name
        or name in (".", "..")
        or name.startswith(".")
        or "/" in name
        or os.sep in name
        or name in RESERVED_NAMES
    ):
        raise SweepSpecError(
            f"the point {labels} gets the folder name {name!r}, which is not a plain folder "
            f"name (no '/', no leading '.', not one of {', '.join(RESERVED_NAMES)}); change "
            "the name template or the values"
        )
    return name


# ---------------------------------------------------------------------------- options
def option_flag(key: str) -> str:
    """The option of a spec key: ``grad_input`` → ``--grad-input``."""
    return "--" + key.replace("_", "-")


def option_argv(key: str, value: Any) -> list[str]:
    """Command-line words for one spec key and value.

    Args:
        key: A key of ``[args]`` or ``[axes]``.
        value: A scalar (the option's argument), ``true`` / ``false`` (the bare flag or
            nothing), a list (the option repeated) or a table of options (its ``label`` left
            out).

    Returns:
        The words.
    """
    if isinstance(value, dict):
        words: list[str] = []
        for k, v in value.items():
            if k != "label":
                words += option_argv(k, v)
        return words
    if isinstance(value, bool):
        return [option_flag(key)] if value else []
    if isinstance(value, list):
        return [w for v in value for w in option_argv(key, v)]
    return [option_flag(key), _scalar(value)]


def _scalar(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


# ---------------------------------------------------------------------------- parsing
def load_spec(path: str | os.PathLike[str]) -> SweepSpec:
    """Read and parse a sweep spec file (TOML).

    Args:
        path: The ``.toml`` file.

    Returns:
        The spec.

    Raises:
        SweepSpecError: the file cannot be read, is not TOML, or is not a valid spec.
    """
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SweepSpecError(f"cannot read the sweep spec {p}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SweepSpecError(f"{p} is not valid TOML: {exc}") from None
    try:
        return parse_spec(doc)
    except SweepSpecError as exc:
        raise SweepSpecError(f"{p}: {exc}") from None


def parse_spec(doc: Mapping[str, Any]) -> SweepSpec:
    """Check a spec document (a parsed TOML file) and make a :class:`SweepSpec`.

    Args:
        doc: The document.

    Returns:
        The spec.

    Raises:
        SweepSpecError: an unknown key, an unknown base command, a malformed value.
    """
    unknown = [k for k in doc if k not in _SPEC_KEYS]
    if unknown:
        raise SweepSpecError(
            f"unknown key(s) {', '.join(map(repr, unknown))}; a spec has {', '.join(_SPEC_KEYS)}"
        )
    command = doc.get("command")
    if not isinstance(command, str) or " ".join(command.split()) not in BASE_COMMANDS:
        raise SweepSpecError(
            f"command = {command!r} is not a base command; use one of "
            + ", ".join(repr(c) for c in BASE_COMMANDS)
        )
    args = _options_table(doc.get("args", {}), "args")
    axes = _axes(doc.get("axes"))
    names = [a.name for a in axes]
    clash = [k for k in args if k in names]
    if clash:
        raise SweepSpecError(f"{', '.join(clash)} is both a fixed option and an axis; keep one")
    template = doc.get("name", "")
    if not isinstance(template, str):
        raise SweepSpecError(f"name = {template!r} must be a string template")
    _check_template(template, names)
    return SweepSpec(
        command=tuple(command.split()),
        args=args,
        axes=axes,
        exclude=_combinations(doc.get("exclude", []), names, "exclude", complete=False),
        include=_combinations(doc.get("include", []), names, "include", complete=True),
        name=template,
    )


def _options_table(table: Any, where: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise SweepSpecError(f"[{where}] must be a table of options")
    for key, value in table.items():
        _check_key(key, where)
        _check_value(value, f"{where}.{key}", lists=True)
    return dict(table)


def _check_key(key: str, where: str) -> None:
    if not _KEY.match(key):
        raise SweepSpecError(f"{where}: {key!r} is not an option name (letters, digits, _ or -)")


def _check_value(value: Any, where: str, *, lists: bool) -> None:
    if isinstance(value, (str, int, float, bool)):
        return
    if lists and isinstance(value, list):
        for v in value:
            if not isinstance(v, (str, int, float)) or isinstance(v, bool):
                raise SweepSpecError(f"{where}: a repeated option takes strings or numbers")
        return
    raise SweepSpecError(f"{where} = {value!r}: expected a string, a number or true/false")


def _axes(table: Any) -> tuple[Axis, ...]:
    if not isinstance(table, dict) or not table:
        raise SweepSpecError("the spec needs an [axes] table with at least one axis")
    axes = []
    for key, values in table.items():
        _check_key(key, "axes")
        if not isinstance(values, list):
            raise SweepSpecError(f"axes.{key} must be a list of values, got {values!r}")
        if not values:
            raise SweepSpecError(f"axes.{key} is empty: the cross product has no points")
        for v in values:
            _check_axis_value(v, f"axes.{key}")
        labels = [value_label(v) for v in values]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise SweepSpecError(f"axes.{key} repeats {', '.join(dupes)}")
        axes.append(Axis(key, tuple(values)))
    return tuple(axes)


def _check_axis_value(value: Any, where: str) -> None:
    if not isinstance(value, dict):
        _check_value(value, where, lists=False)
        return
    label = value.get("label")
    if not isinstance(label, str) or not label:
        raise SweepSpecError(f'{where}: a table value needs a label = "..." (its folder name)')
    for k, v in value.items():
        if k != "label":
            _check_key(k, where)
            _check_value(v, f"{where}.{k}", lists=True)


def _check_template(template: str, names: Sequence[str]) -> None:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise SweepSpecError(f"name = {template!r} is not a template: {exc}") from None
    bad = [f for f in fields if f not in names]
    if bad:
        raise SweepSpecError(
            f"name = {template!r} uses {', '.join(map(repr, bad))}, which is not an axis; "
            f"axes: {', '.join(names)}"
        )


def _combinations(
    entries: Any, names: Sequence[str], where: str, *, complete: bool
) -> tuple[dict[str, Any], ...]:
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise SweepSpecError(f"{where} must be a list of tables (axis = value)")
    for entry in entries:
        bad = [k for k in entry if k not in names]
        if bad:
            raise SweepSpecError(
                f"{where} entry {entry} names {', '.join(map(repr, bad))}, which is not an "
                f"axis; axes: {', '.join(names)}"
            )
        missing = [n for n in names if n not in entry]
        if complete and missing:
            raise SweepSpecError(
                f"{where} entry {entry} leaves out {', '.join(missing)}; an extra point "
                "gives every axis"
            )
        if not complete and not entry:
            raise SweepSpecError(f"an empty {where} entry would match every point")
        for k, v in entry.items():
            _check_axis_value(v, f"{where}.{k}")
    return tuple(dict(e) for e in entries)
