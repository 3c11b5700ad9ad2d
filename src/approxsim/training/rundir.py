"""The run folder: its file names, its writer and its reader.

A run folder holds three files, and nothing else belongs to approxsim:

* ``config.json`` — the resolved settings, the multipliers of the three passes, the model,
  the dataset, the process layout and the software versions (:data:`CONFIG_SCHEMA`);
* ``metrics.jsonl`` — one JSON object per finished epoch, appended and fsynced as the epoch
  ends. A run killed while appending can leave a truncated last line: readers ignore a last
  line that does not parse (the checkpoint does not include that epoch either);
* ``checkpoint.pt`` — written by :mod:`approxsim.training.checkpoint`.

Every write goes through :mod:`approxsim._io` (temporary file, fsync, rename), so a reader
sees the old file or the new one whole.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from approxsim._io import append_line, atomic_write_json, atomic_write_lines, is_temporary_of
from approxsim.training.errors import TrainError

__all__ = [
    "CONFIG_FILE",
    "METRICS_FILE",
    "CHECKPOINT_FILE",
    "RUN_FILES",
    "CONFIG_SCHEMA",
    "RunFolderError",
    "RunFiles",
    "is_run_file",
    "prepare_run_folder",
    "write_config",
    "read_config",
    "write_metrics",
    "append_metrics",
    "read_metrics",
    "read_run",
]

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"
#: Files a run folder holds; ``overwrite`` deletes these and nothing else.
RUN_FILES = (CONFIG_FILE, METRICS_FILE, CHECKPOINT_FILE)
CONFIG_SCHEMA = "approxsim.train.config/1"


class RunFolderError(TrainError):
    """A run folder cannot be read; the message says which file and why."""


def is_run_file(path: Path) -> bool:
    """Whether ``path`` is one of a run folder's files, or a temporary file of one of them."""
    return path.name in RUN_FILES or is_temporary_of(path, RUN_FILES)


# ---------------------------------------------------------------------------- writer
def prepare_run_folder(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Create ``out``, or check that it may be (re)used; clear old run files when allowed.

    Args:
        out: The run folder.
        resume: The run continues (called only when there is no checkpoint to resume from,
            so the folder may hold leftover run files and nothing else).
        overwrite: Old run files may be deleted (other files stay).

    Raises:
        TrainError: ``out`` is a file, or a non-empty folder that may not be reused.
    """
    if out.exists() and not out.is_dir():
        raise TrainError(f"--out {out} is a file; name a folder for the run")
    entries = sorted(out.iterdir()) if out.is_dir() else []
    if entries:
        others = [p.name for p in entries if not is_run_file(p)]
        if overwrite or (resume and not others):
            for p in entries:
                if is_run_file(p):
                    p.unlink()
        elif resume:
            raise TrainError(
                f"cannot resume in {out}: it has no {CHECKPOINT_FILE} and holds other files "
                f"({', '.join(others[:5])}); choose another --out"
            )
        else:
            raise TrainError(
                f"{out} is not empty; pass --resume (resume=True) to continue the run in it, "
                "--overwrite (overwrite=True) to start it over, or choose another --out"
            )
    out.mkdir(parents=True, exist_ok=True)


def write_config(out: Path, meta: dict[str, Any]) -> None:
    """Replace ``out/config.json`` with ``meta`` (atomically)."""
    atomic_write_json(out / CONFIG_FILE, meta)


def write_metrics(out: Path, records: Iterable[dict[str, Any]]) -> None:
    """Replace ``out/metrics.jsonl`` with ``records``, one per line (atomically)."""
    atomic_write_lines(out / METRICS_FILE, records)


def append_metrics(out: Path, record: dict[str, Any]) -> None:
    """Append one epoch's record to ``out/metrics.jsonl`` (fsynced before returning)."""
    append_line(out / METRICS_FILE, record)


# ---------------------------------------------------------------------------- reader
def read_config(out: Path) -> dict[str, Any] | None:
    """The object in ``out/config.json``, or ``None`` when it is missing or unreadable."""
    try:
        obj = json.loads((out / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The epoch records of a ``metrics.jsonl`` file, in epoch order.

    Blank lines are skipped; a last line cut short (the run was killed while writing it) is
    ignored.

    Args:
        path: The ``metrics.jsonl`` file, or the run folder holding it. A missing file has
            no records.

    Returns:
        The records.

    Raises:
        RunFolderError: a line other than the last one is not a metrics record.
    """
    p = Path(path)
    if p.is_dir():
        p = p / METRICS_FILE
    if not p.exists():
        return []
    history: list[dict[str, Any]] = []
    lines = p.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            int(record["epoch"])
        except (ValueError, KeyError, TypeError):
            if i == len(lines) - 1:
                break  # an interrupted write; the checkpoint does not include it either
            raise RunFolderError(f"{p}: line {i + 1} is not a metrics record") from None
        history.append(record)
    history.sort(key=lambda r: int(r["epoch"]))
    return history


@dataclass(frozen=True)
class RunFiles:
    """What a run folder's files say.

    Attributes:
        path: The run folder.
        meta: The whole ``config.json``.
        history: The records of ``metrics.jsonl``, in epoch order.
    """

    path: Path
    meta: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def config(self) -> dict[str, Any]:
        """The resolved settings (the ``config`` section of ``config.json``)."""
        return self.meta["config"]

    @property
    def multipliers(self) -> dict[str, str]:
        """Multiplier names per pass (``forward``, ``grad_input``, ``grad_weight``)."""
        return {role: self.meta["multipliers"][role]["name"] for role in _ROLES}


_ROLES = ("forward", "grad_input", "grad_weight")


def read_run(run_dir: str | os.PathLike[str]) -> RunFiles:
    """Read a run folder written by ``approxsim train`` (also while the run is going).

    Args:
        run_dir: The folder holding ``config.json`` and ``metrics.jsonl``.

    Returns:
        The :class:`RunFiles`; its ``config`` and ``multipliers`` are checked to be there.

    Raises:
        RunFolderError: the folder or its files are missing or malformed.
    """
    path = Path(run_dir)
    cfg_path = path / CONFIG_FILE
    if not path.is_dir():
        raise RunFolderError(f"{path} is not a folder; name run folders written by approxsim train")
    try:
        run = RunFiles(path, json.loads(cfg_path.read_text(encoding="utf-8")))
        run.config  # noqa: B018 - both sections must be readable
        run.multipliers  # noqa: B018
    except FileNotFoundError:
        raise RunFolderError(
            f"{path} is not a training run: it has no {CONFIG_FILE} (written by approxsim train)"
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise RunFolderError(
            f"{cfg_path} is malformed ({exc!r}); it was not written by "
            "approxsim train or it is damaged"
        ) from None
    return RunFiles(path, run.meta, read_metrics(path / METRICS_FILE))
