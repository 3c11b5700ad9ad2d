"""Native PyTorch at its best: the float32 baseline timed in child processes, one per setting.

How torch's OpenMP threads wait between parallel regions changes native float32 speed, and the
best choice depends on the machine: spinning (``OMP_WAIT_POLICY=ACTIVE``, close to libgomp's
default) is fastest on an idle machine, sleeping (``PASSIVE``) when other threads need the
cores. libgomp reads the variable once, when it loads, so one process cannot try several
settings: the baseline is timed in one child process per setting, and each problem keeps the
fastest. approxsim itself is timed in the calling process, in whatever environment the user
started it with (normally none of these variables: the default a user gets). Ratios are
therefore approxsim as users run it against native torch at its best (DESIGN §7).

The settings (``--native-settings``):

* ``default`` — ``OMP_WAIT_POLICY`` unset;
* ``passive`` — ``OMP_WAIT_POLICY=PASSIVE``;
* ``active`` — ``OMP_WAIT_POLICY=ACTIVE``;
* ``same-process`` — native timed in approxsim's own process, beside approxsim's timing,
  under its environment (the protocol of the first benchmarks; no child process).

When the environment already says how OpenMP threads wait (:data:`WAIT_VARIABLES`), that is the
user's choice and is never overridden: native is timed under it, in one child process
(:data:`AS_SET`), and asking for ``default``, ``passive`` or ``active`` is refused. Every
child runs the same thread count as the caller and re-imports torch once (about two seconds),
then times all problems; a child that fails is a one-line :class:`NativeBaselineError` with the
end of its output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import approxsim
from approxsim._io import atomic_write_json
from approxsim._runtime import describe_environment
from approxsim.bench.common import BenchError
from approxsim.errors import ApproxsimError

__all__ = [
    "AS_SET",
    "CHILD_SETTINGS",
    "DEFAULT_NATIVE_SETTINGS",
    "SAME_PROCESS",
    "WAIT_VARIABLES",
    "NativeBaselineError",
    "best_setting",
    "child_environment",
    "describe_protocol",
    "protocol_line",
    "resolve_native_settings",
    "run_child",
    "setting_label",
    "short_label",
    "time_native",
    "user_wait_environment",
]

#: Child-process settings: the value ``OMP_WAIT_POLICY`` gets (``None``: unset).
CHILD_SETTINGS: dict[str, str | None] = {"default": None, "passive": "PASSIVE", "active": "ACTIVE"}
#: Native timed in the caller's process, beside approxsim (no child process).
SAME_PROCESS = "same-process"
#: The one setting when the environment sets how threads wait: the user's own.
AS_SET = "as-set"
#: What the benchmarks use when no settings are named: the set that finds native's best.
DEFAULT_NATIVE_SETTINGS = ("default", "passive", "active")
#: Variables that say how OpenMP threads wait; one of them set means the user chose.
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
#: Lines of a child's output that start so are progress, passed on to the caller.
PROGRESS_MARK = "@progress "


class NativeBaselineError(ApproxsimError, RuntimeError):
    """A child process timing the native baseline failed; the message has its last output."""


# ---------------------------------------------------------------------------- settings
def user_wait_environment() -> dict[str, str]:
    """The variables of :data:`WAIT_VARIABLES` that are set here (empty: none)."""
    return {k: os.environ[k] for k in WAIT_VARIABLES if k in os.environ}


def resolve_native_settings(
    settings: str | Sequence[str] | None, *, same_process: bool = True
) -> tuple[str, ...]:
    """The settings the native baseline is timed under, checked before anything runs.

    Args:
        settings: Names (a list or a comma-separated string) from :data:`CHILD_SETTINGS` and
            :data:`SAME_PROCESS`; ``None``: :data:`DEFAULT_NATIVE_SETTINGS`, or
            ``(AS_SET,)`` when the environment sets how threads wait.
        same_process: Whether :data:`SAME_PROCESS` is possible for this benchmark.

    Returns:
        The settings, in the order given.

    Raises:
        BenchError: an unknown or repeated name, none at all, ``same-process`` where it does
            not apply, or a child setting while the environment sets how threads wait.
    """
    user = user_wait_environment()
    if settings is None:
        return (AS_SET,) if user else DEFAULT_NATIVE_SETTINGS
    items = settings.split(",") if isinstance(settings, str) else list(settings)
    names = [str(s).strip().lower() for s in items if str(s).strip()]
    known = [*CHILD_SETTINGS, SAME_PROCESS] if same_process else list(CHILD_SETTINGS)
    if not names:
        raise BenchError(f"no native settings given; choose from {', '.join(known)}")
    for name in names:
        if name not in known:
            raise BenchError(f"unknown native setting {name!r}; choose from {', '.join(known)}")
    if len(set(names)) != len(names):
        raise BenchError(f"native settings {','.join(names)} name one setting twice")
    chosen = [n for n in names if n in CHILD_SETTINGS]
    if user and chosen:
        where = ", ".join(f"{k}={v}" for k, v in sorted(user.items()))
        raise BenchError(
            f"{where} is set in this environment and approxsim does not override it, so native "
            f"cannot be timed under {','.join(chosen)}: leave --native-settings out (native is "
            "then timed under your setting) or unset the variable to compare settings"
        )
    return tuple(names)


def setting_label(setting: str, environment: Mapping[str, str] | None = None) -> str:
    """How a setting reads in tables: ``"OMP_WAIT_POLICY=PASSIVE"``, ``"OMP_WAIT_POLICY
    unset"``, ``"in approxsim's process"``, ``"OMP_WAIT_POLICY=PASSIVE (as set)"``.

    Args:
        setting: A native setting.
        environment: For :data:`AS_SET`, the environment it was measured in (a machine
            record's ``environment``); default: this process's.
    """
    if setting in CHILD_SETTINGS:
        value = CHILD_SETTINGS[setting]
        return "OMP_WAIT_POLICY unset" if value is None else f"OMP_WAIT_POLICY={value}"
    if setting == AS_SET:
        env = user_wait_environment() if environment is None else environment
        user = {k: v for k, v in env.items() if k in WAIT_VARIABLES}
        return (", ".join(f"{k}={v}" for k, v in sorted(user.items())) or "the user's") + (
            " (as set)"
        )
    return "in approxsim's process"


def describe_protocol(
    settings: Sequence[str], approx_env: str, environment: Mapping[str, str] | None = None
) -> str:
    """The table-header phrase that states both environments.

    Args:
        settings: The native settings of the run.
        approx_env: The environment approxsim ran in (``describe_environment``).
        environment: The thread variables of that environment, for :data:`AS_SET`
            (default: this process's).

    Returns:
        E.g. ``"native: best of OMP_WAIT_POLICY unset/PASSIVE/ACTIVE (one child process
        each); approxsim: default environment"``.
    """
    short = {"default": "unset", "passive": "PASSIVE", "active": "ACTIVE"}
    children = [short[s] for s in settings if s in short]
    if AS_SET in settings:
        parts = [f"{setting_label(AS_SET, environment)}, in a child process"]
    elif children:
        each = "one child process each" if len(children) > 1 else "a child process"
        parts = [f"OMP_WAIT_POLICY {'/'.join(children)} ({each})"]
    else:
        parts = []
    if SAME_PROCESS in settings:
        parts.append("in approxsim's process")
    lead = "best of " if len(settings) > 1 else ""
    native = f"native: {lead}{' and '.join(parts)}"
    return f"{native}; approxsim: {approx_env}"


def short_label(setting: str | None) -> str:
    """A setting as a table cell: ``"unset"``, ``"PASSIVE"``, ``"as set"`` (the title says
    which), ``"–"`` for ``None`` (a result file written before native ran in child processes).
    """
    if setting is None:
        return "–"
    if setting == AS_SET:
        return "as set"
    return setting_label(setting).replace("OMP_WAIT_POLICY ", "").replace("OMP_WAIT_POLICY=", "")


def protocol_line(settings: Sequence[str] | None, machine: Mapping[str, Any]) -> str:
    """Both environments of a result, for its table's title line.

    Args:
        settings: The result's native settings (``None``: a file written before they existed).
        machine: Its machine record (the environment approxsim ran in, which a user's own
            wait setting was also the native children's).
    """
    env = describe_environment(dict(machine))
    if settings is None:
        return f"native and approxsim in one process, {env}"
    return describe_protocol(settings, env, machine.get("environment") or {})


def best_setting(values: Mapping[str, float]) -> str:
    """The setting with the smallest time (the first of equals)."""
    if not values:
        raise BenchError("no native timings to choose from")
    return min(values, key=lambda s: values[s])


# ---------------------------------------------------------------------------- children
def child_environment(setting: str) -> dict[str, str]:
    """The environment of a child process for ``setting``.

    The caller's environment, with ``OMP_WAIT_POLICY`` set or removed for a child setting,
    and this copy of approxsim first on ``PYTHONPATH`` so the child runs the same code.
    """
    env = dict(os.environ)
    if setting in CHILD_SETTINGS:
        value = CHILD_SETTINGS[setting]
        if value is None:
            env.pop("OMP_WAIT_POLICY", None)
        else:
            env["OMP_WAIT_POLICY"] = value
    src = str(Path(approxsim.__file__).resolve().parents[1])
    paths = [src, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != src]]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def run_child(
    argv: Sequence[str],
    env: Mapping[str, str],
    label: str,
    progress: Callable[[str], None],
    *,
    forward_all: bool = False,
) -> None:
    """Run a child process to its end, passing its progress lines on.

    Args:
        argv: The command.
        env: Its environment.
        label: What it is, for progress lines and errors (``"native, OMP_WAIT_POLICY unset"``).
        progress: Called with ``"<label>: <line>"`` for each progress line.
        forward_all: Pass every output line on, not only those marked as progress.

    Raises:
        NativeBaselineError: it could not start or ended with a nonzero status.
    """
    tail: deque[str] = deque(maxlen=12)
    try:
        proc = subprocess.Popen(
            list(argv),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
    except OSError as exc:
        raise NativeBaselineError(f"{label}: could not start {argv[0]}: {exc}") from None
    try:
        assert proc.stdout is not None  # stdout=PIPE
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            if line.startswith(PROGRESS_MARK):
                progress(f"{label}: {line[len(PROGRESS_MARK) :]}")
            elif line.strip():
                tail.append(line)
                if forward_all:
                    progress(f"{label}: {line}")
        status = proc.wait()
    finally:
        if proc.poll() is None:  # interrupted: the child must not outlive us
            proc.kill()
            proc.wait()
    if status != 0:
        last = tail[-1].strip() if tail else "no output"
        raise NativeBaselineError(f"{label} failed (exit status {status}): {last}")


def time_native(
    task: dict[str, Any], settings: Sequence[str], progress: Callable[[str], None]
) -> dict[str, dict[str, Any]]:
    """Time a benchmark's native baseline in one child process per setting.

    Args:
        task: What the child times (JSON-ready): ``{"bench": "ops" | "models", ...}``, read by
            ``native_timings`` of :mod:`approxsim.bench.ops` or :mod:`approxsim.bench.models`.
        settings: Child settings (:data:`CHILD_SETTINGS` names or :data:`AS_SET`);
            :data:`SAME_PROCESS` is skipped (the caller times it).
        progress: Called with progress lines.

    Returns:
        Setting → ``{"environment": the child's thread variables, "torch_threads": ...,
        "results": [...]}`` as the child wrote it.

    Raises:
        NativeBaselineError: a child failed or wrote no result.
    """
    out: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="approxsim-native-") as tmp:
        spec = Path(tmp) / "task.json"
        atomic_write_json(spec, task)
        for setting in settings:
            if setting == SAME_PROCESS:
                continue
            result = Path(tmp) / f"{setting}.json"
            label = f"native ({setting_label(setting)})"
            argv = [sys.executable, "-m", "approxsim.bench._native_child", str(spec), str(result)]
            progress(f"{label}: timing in a child process")
            run_child(argv, child_environment(setting), label, progress)
            try:
                out[setting] = json.loads(result.read_text())
            except (OSError, ValueError) as exc:
                raise NativeBaselineError(f"{label} wrote no result: {exc}") from None
    return out
