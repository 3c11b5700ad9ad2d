"""What a sweep knows about each base command: where a point's output goes, when a point is
complete, and which numbers its result holds.

A point of a ``train`` sweep is an ordinary run folder (``--out DIR/<point> --resume``: the
same ``config.json``, ``metrics.jsonl`` and ``checkpoint.pt`` as a run started by hand, and a
killed run continues from its last epoch). The other commands write one result file into the
point's folder: ``cim mc`` its ``--out`` file (``--resume`` continues the chips), ``cim
attack`` its ``--out`` file, ``eval`` what ``--json`` prints. ``replay dqn`` writes its seed
folders (``seed<N>/``, each with ``summary.json`` once complete) into the point's folder.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from approxsim.training.rundir import RunFolderError, read_run

__all__ = ["BaseCommand", "base_command", "COMMANDS"]

Metrics = dict[str, "float | None"]


def _number(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


@dataclass(frozen=True)
class BaseCommand:
    """How a sweep runs one base command.

    Attributes:
        words: The command after ``approxsim`` (``("cim", "mc")``).
        output: The options that send a point's output to its folder (``{folder}`` and
            ``{file}`` are filled in).
        result_file: The point's result file in its folder; ``None``: the folder is a run
            folder (``train``).
        stdout_result: The result is what the command prints (``eval --json``), saved by the
            sweep as ``result_file``.
        reserved: Options the sweep sets itself, refused in a spec.
        metrics: Numbers a report can show (the first is the default), higher is better.
        percent: The metrics are fractions shown in percent (accuracies); ``False``: shown
            as they are (returns).
        threads_flag: The option that sets the command's CPU threads (given by the sweep
            unless the spec sets it).
        complete: Whether a point's folder holds a complete result.
        read: The metrics of a point's folder (``None`` values where missing).
    """

    words: tuple[str, ...]
    output: tuple[str, ...]
    result_file: str | None
    stdout_result: bool
    reserved: frozenset[str]
    metrics: tuple[str, ...]
    percent: bool
    threads_flag: str | None
    complete: Callable[[Path], bool]
    read: Callable[[Path], Metrics]

    @property
    def name(self) -> str:
        """The command as one string (``"cim mc"``)."""
        return " ".join(self.words)

    def output_argv(self, folder: Path) -> list[str]:
        """The output options of the point whose folder is ``folder``."""
        file = folder / self.result_file if self.result_file else folder
        return [w.format(folder=folder, file=file) for w in self.output]


# ---------------------------------------------------------------------------- train
def _train_complete(folder: Path) -> bool:
    try:
        run = read_run(folder)
    except RunFolderError:
        return False
    planned = run.config.get("epochs")
    return bool(run.history) and isinstance(planned, int) and len(run.history) >= planned


def _train_read(folder: Path) -> Metrics:
    try:
        history = read_run(folder).history
    except RunFolderError:
        return {"final_test_acc": None, "best_test_acc": None}
    accs = [a for r in history if (a := _number(r.get("test_acc"))) is not None]
    final = _number(history[-1].get("test_acc")) if history else None
    return {"final_test_acc": final, "best_test_acc": max(accs) if accs else None}


# ---------------------------------------------------------------------------- result files
def _file_complete(name: str, check: Callable[[dict[str, Any]], bool]) -> Callable[[Path], bool]:
    def complete(folder: Path) -> bool:
        doc = _read_json(folder / name)
        return doc is not None and check(doc)

    return complete


def _file_read(name: str, fields: dict[str, tuple[str, ...]]) -> Callable[[Path], Metrics]:
    def read(folder: Path) -> Metrics:
        doc = _read_json(folder / name) or {}
        out: Metrics = {}
        for metric, path in fields.items():
            value: Any = doc
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            out[metric] = _number(value)
        return out

    return read


_COMMON_RESERVED = frozenset({"--out", "--resume", "--overwrite", "--json", "--no-progress"})

COMMANDS: dict[str, BaseCommand] = {
    "train": BaseCommand(
        words=("train",),
        output=("--out", "{folder}", "--resume", "--no-progress"),
        result_file=None,
        stdout_result=False,
        reserved=_COMMON_RESERVED,
        metrics=("final_test_acc", "best_test_acc"),
        percent=True,
        threads_flag="--threads",
        complete=_train_complete,
        read=_train_read,
    ),
    "eval": BaseCommand(
        words=("eval",),
        output=("--json",),
        result_file="eval.json",
        stdout_result=True,
        reserved=_COMMON_RESERVED,
        metrics=("accuracy",),
        percent=True,
        threads_flag="--threads",
        complete=_file_complete("eval.json", lambda d: _number(d.get("accuracy")) is not None),
        read=_file_read("eval.json", {"accuracy": ("accuracy",)}),
    ),
    "cim mc": BaseCommand(
        words=("cim", "mc"),
        output=("--out", "{file}", "--resume", "--no-progress"),
        result_file="mc.json",
        stdout_result=False,
        reserved=_COMMON_RESERVED | {"--save-worst"},
        metrics=("mean", "p1", "min", "clean_accuracy"),
        percent=True,
        threads_flag="--threads",
        complete=_file_complete("mc.json", lambda d: d.get("complete") is True),
        read=_file_read(
            "mc.json",
            {
                "mean": ("summary", "mean"),
                "p1": ("summary", "p1"),
                "min": ("summary", "min"),
                "clean_accuracy": ("clean_accuracy",),
            },
        ),
    ),
    "cim attack": BaseCommand(
        words=("cim", "attack"),
        output=("--out", "{file}", "--overwrite", "--no-progress"),
        result_file="attack.json",
        stdout_result=False,
        reserved=_COMMON_RESERVED | {"--save"},
        metrics=("heldout_accuracy", "attack_accuracy", "heldout_clean_accuracy"),
        percent=True,
        threads_flag="--threads",
        complete=_file_complete("attack.json", lambda d: d.get("interrupted") is False),
        read=_file_read(
            "attack.json",
            {
                "heldout_accuracy": ("heldout_accuracy",),
                "attack_accuracy": ("attack_accuracy",),
                "heldout_clean_accuracy": ("heldout_clean_accuracy",),
            },
        ),
    ),
}


# ---------------------------------------------------------------------------- replay dqn
def _seed_runs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("seed*") if p.is_dir()) if folder.is_dir() else []


def _dqn_complete(folder: Path) -> bool:
    runs = _seed_runs(folder)
    return bool(runs) and all((p / "summary.json").exists() for p in runs)


def _dqn_read(folder: Path) -> Metrics:
    out: Metrics = {}
    docs = [_read_json(p / "summary.json") or {} for p in _seed_runs(folder)]
    for metric in ("final_return", "auc"):
        values = [v for d in docs if (v := _number(d.get(metric))) is not None]
        out[metric] = sum(values) / len(values) if values else None
    return out


COMMANDS["replay dqn"] = BaseCommand(
    words=("replay", "dqn"),
    output=("--out", "{folder}", "--resume", "--no-progress"),
    result_file=None,
    stdout_result=False,
    reserved=_COMMON_RESERVED,
    metrics=("final_return", "auc"),
    percent=False,
    threads_flag="--threads",
    complete=_dqn_complete,
    read=_dqn_read,
)


def base_command(words: tuple[str, ...] | str) -> BaseCommand:
    """The :class:`BaseCommand` of ``words``.

    Raises:
        KeyError: a command sweeps do not run (the spec parser refuses those first).
    """
    name = words if isinstance(words, str) else " ".join(words)
    return COMMANDS[name]
