"""The sweep's own state: one JSON file in the sweep's folder, rewritten atomically.

``DIR/sweep-state.json`` records the spec (so a folder holding another sweep is refused and
``approxsim sweep report`` needs nothing but the folder) and, per point, its axis values, its
options, what the multiplier it names measures (error statistics, power), and its status:
``pending``, ``running``, ``done`` or ``failed``, with the attempts made, the seconds taken
and the last error. Only the process that runs the sweep writes it, through
:func:`approxsim._io.atomic_write_json`: a reader, or a sweep killed at any moment, sees the
old file or the new one whole.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from approxsim._io import atomic_write_json, stale_temporaries
from approxsim._runtime import utc_now
from approxsim.sweep.errors import SweepError, SweepSpecError
from approxsim.sweep.spec import Point, SweepSpec

__all__ = [
    "STATE_FILE",
    "STATE_SCHEMA",
    "STATUSES",
    "new_state",
    "read_state",
    "check_sweep_folder",
    "write_state",
    "remove_stale_state_temporaries",
]

STATE_FILE = "sweep-state.json"
STATE_SCHEMA = "approxsim.sweep.state/1"
STATUSES = ("pending", "running", "done", "failed")


def new_state(
    spec: SweepSpec, points: Sequence[Point], info: Mapping[str, dict[str, Any]]
) -> dict[str, Any]:
    """A fresh state document: every point pending.

    Args:
        spec: The sweep's spec.
        points: Its points.
        info: Point name → what validating it found (the multiplier's statistics).

    Returns:
        The document.
    """
    return {
        "schema": STATE_SCHEMA,
        "spec": spec.document(),
        "spec_sha256": spec.digest(),
        "created": utc_now(),
        "updated": utc_now(),
        "points": [
            {
                "name": p.name,
                "values": p.values,
                "argv": list(p.argv),
                "multiplier": info.get(p.name, {}).get("multiplier"),
                "status": "pending",
                "attempts": 0,
                "seconds": None,
                "error": None,
            }
            for p in points
        ],
    }


def read_state(out: str | Path) -> dict[str, Any]:
    """The state document of the sweep in ``out``.

    Raises:
        SweepError: ``out`` holds no sweep, or its state file is not one.
    """
    path = Path(out) / STATE_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SweepError(
            f"{out} holds no sweep (no {STATE_FILE}); name the --out folder of approxsim sweep run"
        ) from None
    except (OSError, ValueError) as exc:
        raise SweepError(f"cannot read {path}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("schema") != STATE_SCHEMA:
        raise SweepError(f"{path} is not the state file of an approxsim sweep")
    points = doc.get("points")
    if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
        raise SweepError(f"{path} is damaged: its points are not a list of objects")
    return doc


def check_sweep_folder(out: Path, spec: SweepSpec) -> dict[str, Any] | None:
    """Check that the sweep of ``spec`` may run in ``out``, touching nothing.

    Args:
        out: The sweep's folder (new, empty, or holding this sweep or run folders of it).
        spec: The spec.

    Returns:
        The state of the same sweep run there before, or ``None``.

    Raises:
        SweepSpecError: ``out`` is a file, or holds another sweep (another spec).
    """
    if out.exists() and not out.is_dir():
        raise SweepSpecError(f"--out {out} is a file; name a folder for the sweep")
    if not (out / STATE_FILE).exists():
        return None
    try:
        old = read_state(out)
    except SweepError as exc:
        raise SweepSpecError(f"{exc}; choose another --out") from None
    if old.get("spec_sha256") != spec.digest():
        changed = _spec_differences(old.get("spec", {}), spec.document())
        raise SweepSpecError(
            f"{out} holds another sweep (its spec differs in {', '.join(changed) or 'content'});"
            " choose another --out, or run that sweep's own spec"
        )
    return old


def _spec_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))

    def text(x: Any) -> str:
        return json.dumps(x, sort_keys=True, default=str)

    return [k for k in keys if text(old.get(k)) != text(new.get(k))]


def write_state(out: Path, state: dict[str, Any]) -> None:
    """Rewrite ``out/sweep-state.json`` atomically (``updated`` set to now)."""
    state["updated"] = utc_now()
    atomic_write_json(out / STATE_FILE, state)


def remove_stale_state_temporaries(out: Path) -> None:
    """Delete temporary state files a killed sweep left behind."""
    for tmp in stale_temporaries(out, [STATE_FILE]):
        tmp.unlink(missing_ok=True)
