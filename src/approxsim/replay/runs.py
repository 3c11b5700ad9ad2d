"""The DQN run folder: its files, its checkpoint, its reader.

A DQN run folder holds:

* ``config.json`` — :data:`DQN_SCHEMA`, the settings (``config``), the multipliers of the
  three passes in the layout ``approxsim train`` uses, the environment's spaces and the
  software versions;
* ``metrics.jsonl`` — one record per ``log_every`` steps (``step``, ``episodes``,
  ``return_mean`` of the episodes that ended in the interval, ``return_recent`` of the last
  :data:`RECENT_EPISODES` episodes, ``loss``, ``q_mean``, ``epsilon``, ``beta``, summed
  sampler ``cost``, ``time_s``), appended and fsynced; a truncated last line is ignored;
* ``checkpoint.pt`` — a sealed ``torch.save`` of everything the run needs to continue
  (networks, optimizer, replay memory, priorities, generators, history), read with
  ``torch.load(weights_only=True)``;
* ``summary.json`` — written when the run is complete: final return, area under the return
  curve, steps to reach the solve threshold;
* ``priorities/step<N>.pt`` — snapshots of the replay priorities (1-D float64 tensors) for
  ``approxsim replay fidelity``.

Every write goes through :mod:`approxsim._io`.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from approxsim._io import (
    SealError,
    append_line,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_lines,
    is_temporary_of,
    seal,
    stale_temporaries,
    unseal,
)
from approxsim.replay.dqn_config import DQNConfig, DQNError

__all__ = [
    "DQN_SCHEMA",
    "CONFIG_FILE",
    "METRICS_FILE",
    "CHECKPOINT_FILE",
    "SUMMARY_FILE",
    "PRIORITIES_DIR",
    "DQN_RUN_FILES",
    "RECENT_EPISODES",
    "SOLVED_RETURN",
    "DQNRun",
    "is_dqn_run",
    "check_dqn_folder",
    "prepare_dqn_folder",
    "write_dqn_config",
    "append_dqn_metrics",
    "write_dqn_metrics",
    "read_dqn_metrics",
    "save_dqn_checkpoint",
    "load_dqn_checkpoint",
    "save_priorities",
    "write_summary",
    "read_dqn_run",
]

DQN_SCHEMA = "approxsim.replay.dqn/1"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"
SUMMARY_FILE = "summary.json"
PRIORITIES_DIR = "priorities"
#: Files a DQN run folder holds; ``overwrite`` deletes these (and the priority snapshots).
DQN_RUN_FILES = (CONFIG_FILE, METRICS_FILE, CHECKPOINT_FILE, SUMMARY_FILE)
#: Episodes averaged into ``return_recent`` and the final return.
RECENT_EPISODES = 20
#: CartPole-v1's solve threshold (Gymnasium's ``reward_threshold``), used by ``steps_to_solve``.
SOLVED_RETURN = 475.0

_MAGIC = b"APPROXSIM-DQN-CHECKPOINT/1\n"
_CHECKPOINT_FORMAT = "approxsim.replay.dqn.checkpoint/1"


def is_dqn_run(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder whose ``config.json`` has :data:`DQN_SCHEMA`."""
    try:
        meta = json.loads((Path(path) / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("schema") == DQN_SCHEMA


# ---------------------------------------------------------------------------- writer
def check_dqn_folder(out: Path, *, resume: bool, overwrite: bool) -> bool:
    """Check, touching nothing, that a run may start (or resume) in ``out``.

    Args:
        out: The run folder.
        resume: Continue the run in ``out`` from its checkpoint (a folder without one
            starts fresh, provided it holds nothing but run files).
        overwrite: The old run's files may be deleted (other files stay).

    Returns:
        ``True`` when the run will resume from ``out/checkpoint.pt``.

    Raises:
        DQNError: ``out`` is a file, or a non-empty folder that may not be reused.
    """
    if out.exists() and not out.is_dir():
        raise DQNError(f"--out {out} is a file; name a folder for the run")
    if resume and not overwrite and (out / CHECKPOINT_FILE).exists():
        return True
    entries = sorted(out.iterdir()) if out.is_dir() else []
    others = [p.name for p in entries if not _is_run_entry(p)]
    if entries and not overwrite:
        if not resume:
            raise DQNError(
                f"{out} is not empty; pass --resume to continue the run in it, --overwrite to "
                "start it over, or choose another --out"
            )
        if others:
            raise DQNError(
                f"cannot resume in {out}: it has no {CHECKPOINT_FILE} and holds other files "
                f"({', '.join(others[:5])}); choose another --out"
            )
    return False


def prepare_dqn_folder(out: Path, *, resume: bool, overwrite: bool) -> bool:
    """:func:`check_dqn_folder`, then, for a fresh start, delete the old run's files (the
    checkpoint first, the priority snapshots too; other files stay) and create ``out``.

    Returns:
        ``True`` when the run resumes from ``out/checkpoint.pt``.

    Raises:
        DQNError: as :func:`check_dqn_folder`.
    """
    resuming = check_dqn_folder(out, resume=resume, overwrite=overwrite)
    _remove_temporaries(out)
    if resuming:
        return True
    for name in DQN_RUN_FILES[::-1]:
        (out / name).unlink(missing_ok=True)
    snaps = out / PRIORITIES_DIR
    if snaps.is_dir():
        for p in snaps.glob("step*.pt"):
            p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return False


def _is_run_entry(p: Path) -> bool:
    return p.name in DQN_RUN_FILES or p.name == PRIORITIES_DIR or is_temporary_of(p, DQN_RUN_FILES)


def _remove_temporaries(out: Path) -> None:
    for p in stale_temporaries(out, DQN_RUN_FILES):
        p.unlink(missing_ok=True)


def write_dqn_config(out: Path, cfg: DQNConfig, extra: dict[str, Any]) -> None:
    """Write ``out/config.json``: the schema, ``cfg``, its multipliers per pass and ``extra``."""
    per_pass = {"name": cfg.multiplier}
    meta = {
        "schema": DQN_SCHEMA,
        "config": cfg.to_dict(),
        "multipliers": {r: dict(per_pass) for r in ("forward", "grad_input", "grad_weight")},
        **extra,
    }
    atomic_write_json(out / CONFIG_FILE, meta)


def append_dqn_metrics(out: Path, record: dict[str, Any]) -> None:
    """Append one record to ``out/metrics.jsonl`` (fsynced)."""
    append_line(out / METRICS_FILE, record)


def write_dqn_metrics(out: Path, records: list[dict[str, Any]]) -> None:
    """Replace ``out/metrics.jsonl`` with ``records`` (atomically)."""
    atomic_write_lines(out / METRICS_FILE, records)


def save_dqn_checkpoint(out: Path, state: dict[str, Any]) -> None:
    """Write ``out/checkpoint.pt`` atomically (sealed: magic line, SHA-256, payload)."""
    buf = io.BytesIO()
    torch.save({"format": _CHECKPOINT_FORMAT, **state}, buf)
    atomic_write_bytes(out / CHECKPOINT_FILE, seal(_MAGIC, buf.getvalue()))


def load_dqn_checkpoint(out: Path) -> dict[str, Any]:
    """Read and verify ``out/checkpoint.pt`` (``torch.load(weights_only=True)``).

    Raises:
        DQNError: the file is missing, damaged or not a DQN checkpoint.
    """
    p = out / CHECKPOINT_FILE
    try:
        payload = unseal(p.read_bytes(), _MAGIC, str(p))
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DQNError(f"no checkpoint at {p}") from None
    except SealError as exc:
        raise DQNError(f"{exc}; start the run over with --overwrite") from None
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise DQNError(f"{p} could not be read as a DQN checkpoint: {exc}") from None
    if not isinstance(state, dict) or state.get("format") != _CHECKPOINT_FORMAT:
        raise DQNError(f"{p} is not a DQN checkpoint of approxsim replay dqn")
    return state


def save_priorities(out: Path, step: int, priorities: torch.Tensor) -> Path:
    """Write ``out/priorities/step<step>.pt``: the priorities as a 1-D float64 tensor."""
    folder = out / PRIORITIES_DIR
    folder.mkdir(exist_ok=True)
    buf = io.BytesIO()
    torch.save(priorities.detach().to("cpu", torch.float64).contiguous(), buf)
    return atomic_write_bytes(folder / f"step{step}.pt", buf.getvalue())


def write_summary(
    out: Path, cfg: DQNConfig, history: list[dict[str, Any]], episodes: list[float]
) -> dict[str, Any]:
    """Write ``out/summary.json`` from the run's records and episode returns.

    Returns:
        The summary: ``steps``, ``episodes``, ``final_return`` (mean of the last
        :data:`RECENT_EPISODES` episodes), ``auc`` (mean of ``return_recent`` over the
        records: the area under the return curve divided by the run's length),
        ``steps_to_solve`` (first record step with ``return_recent >= 475``, or ``None``)
        and ``solved_return``.
    """
    recent = [r["return_recent"] for r in history if r.get("return_recent") is not None]
    tail = episodes[-RECENT_EPISODES:]
    summary = {
        "schema": DQN_SCHEMA,
        "steps": cfg.steps,
        "episodes": len(episodes),
        "final_return": sum(tail) / len(tail) if tail else None,
        "auc": sum(recent) / len(history) if history else None,
        "steps_to_solve": next(
            (int(r["step"]) for r in history if (r.get("return_recent") or 0) >= SOLVED_RETURN),
            None,
        ),
        "solved_return": SOLVED_RETURN,
    }
    atomic_write_json(out / SUMMARY_FILE, summary)
    return summary


# ---------------------------------------------------------------------------- reader
def read_dqn_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a DQN ``metrics.jsonl`` in step order (a truncated last line ignored).

    Raises:
        DQNError: a line other than the last one is not a record.
    """
    p = path / METRICS_FILE if path.is_dir() else path
    if not p.exists():
        return []
    lines = p.read_text(encoding="utf-8").splitlines()
    rows: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            int(rec["step"])
        except (ValueError, KeyError, TypeError):
            if i == len(lines) - 1:
                break  # a write cut short by a kill; the checkpoint does not include it
            raise DQNError(f"{p}: line {i + 1} is not a DQN metrics record") from None
        rows.append(rec)
    rows.sort(key=lambda r: int(r["step"]))
    return rows


@dataclass(frozen=True)
class DQNRun:
    """A DQN run folder as read.

    Attributes:
        path: The folder.
        meta: The whole ``config.json``.
        history: ``metrics.jsonl`` records in step order.
        summary: ``summary.json`` (``None`` while the run is not complete).
    """

    path: Path
    meta: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] | None = None

    @property
    def config(self) -> dict[str, Any]:
        """The settings (``config`` section)."""
        return self.meta["config"]

    @property
    def multipliers(self) -> dict[str, str]:
        """Multiplier names per pass."""
        return {
            r: self.meta["multipliers"][r]["name"] for r in ("forward", "grad_input", "grad_weight")
        }

    @property
    def complete(self) -> bool:
        """The run reached its planned steps."""
        return bool(self.history) and int(self.history[-1]["step"]) >= int(self.config["steps"])


def read_dqn_run(path: str | os.PathLike[str]) -> DQNRun:
    """Read a run folder of ``approxsim replay dqn`` (also while it runs).

    Raises:
        DQNError: no such folder, or its ``config.json`` is missing or not a DQN run's.
    """
    p = Path(path)
    try:
        meta = json.loads((p / CONFIG_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DQNError(f"{p} is not a DQN run: it has no {CONFIG_FILE}") from None
    except (OSError, ValueError) as exc:
        raise DQNError(f"{p / CONFIG_FILE} cannot be read ({exc})") from None
    if not isinstance(meta, dict) or meta.get("schema") != DQN_SCHEMA:
        raise DQNError(f"{p / CONFIG_FILE} was not written by approxsim replay dqn")
    try:
        summary = json.loads((p / SUMMARY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        summary = None
    return DQNRun(p, meta, read_dqn_metrics(p), summary)
