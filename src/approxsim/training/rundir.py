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

from approxsim._io import (
    append_line,
    atomic_write_json,
    atomic_write_lines,
    is_temporary_of,
    stale_temporaries,
)
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
    "check_run_folder",
    "clear_run_files",
    "prepare_run_folder",
    "remove_stale_temporaries",
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
def check_run_folder(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Check, touching nothing, that a fresh run may start in ``out``.

    Called before anything of the run is built, so a refusal costs nothing; the old run's
    files are deleted only later, by :func:`clear_run_files`, once the new run is ready.

    Args:
        out: The run folder.
        resume: The run continues (called only when there is no checkpoint to resume from,
            so the folder may hold leftover run files and nothing else; the caller compares
            them with the new run's settings).
        overwrite: Old run files may be replaced (other files stay).

    Raises:
        TrainError: ``out`` is a file, or a non-empty folder that may not be reused.
    """
    if out.exists() and not out.is_dir():
        raise TrainError(f"--out {out} is a file; name a folder for the run")
    entries = sorted(out.iterdir()) if out.is_dir() else []
    if not entries or overwrite:
        return
    others = [p.name for p in entries if not is_run_file(p)]
    if resume and others:
        raise TrainError(
            f"cannot resume in {out}: it has no {CHECKPOINT_FILE} and holds other files "
            f"({', '.join(others[:5])}); choose another --out"
        )
    if not resume:
        raise TrainError(
            f"{out} is not empty; pass --resume (resume=True) to continue the run in it, "
            "--overwrite (overwrite=True) to start it over, or choose another --out"
        )


def clear_run_files(out: Path) -> None:
    """Create ``out``, or delete the run files (and their temporaries) it holds; other files
    stay.

    The checkpoint goes first: a run killed in the middle leaves no checkpoint beside the
    old records, which ``resume`` refuses to continue rather than mixing two runs.

    Args:
        out: The run folder, checked by :func:`check_run_folder`.
    """
    for name in RUN_FILES[::-1]:
        (out / name).unlink(missing_ok=True)
    remove_stale_temporaries(out)
    out.mkdir(parents=True, exist_ok=True)


def prepare_run_folder(out: Path, *, resume: bool, overwrite: bool) -> None:
    """:func:`check_run_folder`, then :func:`clear_run_files` at once.

    Args:
        out: The run folder.
        resume: As :func:`check_run_folder`.
        overwrite: As :func:`check_run_folder`.

    Raises:
        TrainError: as :func:`check_run_folder`.
    """
    check_run_folder(out, resume=resume, overwrite=overwrite)
    clear_run_files(out)


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Delete the temporary files of the run's own files (``.checkpoint.pt.*.tmp`` ...) that
    an interrupted write left behind (a ``kill -9`` in the middle of a checkpoint leaves a
    checkpoint-sized one); other files stay.

    Args:
        out: The run folder (missing: nothing to do).

    Returns:
        The files deleted.
    """
    stale = stale_temporaries(out, RUN_FILES)
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


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
        # Both sections must be there and of the right kinds: readers use them as is.
        if not isinstance(run.config, dict):
            raise TypeError(f"its config section is a {type(run.config).__name__}, not a dict")
        if not all(isinstance(n, str) for n in run.multipliers.values()):
            raise TypeError("its multiplier names are not strings")
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
